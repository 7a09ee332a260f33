//! What every `make bench` benchmark shares: where the binaries are, the machine and date lines,
//! /proc readings of a process, and writing one section of BENCHMARKS.md.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

pub type Error = Box<dyn std::error::Error>;

/// Now, in nanoseconds since the Unix epoch: the clock the reload app stamps its reloads with.
pub fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Receive times (unix ns) of the app's reloads, from its log (`reload N NS CONTENT` lines).
pub fn reloads(log: &Path) -> Vec<u128> {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("reload ")?.split(' ').nth(1)?.parse().ok())
        .collect()
}

/// Whether this run is a real measurement: `cargo bench` passes `--bench`, while
/// `cargo test --all-targets` runs harness-less benches without it (they must then do nothing).
pub fn benchmarking() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Cargo's target directory, found from this bench's own path (`TARGET/release/deps/NAME`), so
/// `CARGO_TARGET_DIR` is honoured without being passed along.
pub fn target_dir() -> Result<PathBuf, Error> {
    let exe = std::env::current_exe()?;
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .ok_or_else(|| format!("unexpected bench path {}", exe.display()).into())
}

/// The fully static nudge that the image ships (`make static`), and the example app
/// (`make release`); an error naming the missing one otherwise.
pub fn binaries() -> Result<(PathBuf, PathBuf), Error> {
    let target = target_dir()?;
    let nudge = target.join("x86_64-unknown-linux-gnu/release/nudge");
    let app = target.join("release/examples/reload_app");
    for bin in [&nudge, &app] {
        if !bin.exists() {
            return Err(format!(
                "{} is missing: run `make bench` (it builds the static binary and the example app)",
                bin.display()
            )
            .into());
        }
    }
    Ok((nudge, app))
}

/// Compiles benches/floor.c (the C inotify+kill floor) into the target directory.
pub fn floor_binary() -> Result<PathBuf, Error> {
    let out = target_dir()?.join("bench-floor");
    let status = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&out)
        .arg(repo_root().join("benches/floor.c"))
        .status()?;
    if !status.success() {
        return Err("cannot compile benches/floor.c with cc".into());
    }
    Ok(out)
}

/// "2 x CPU model, 24 GiB RAM, Linux RELEASE".
pub fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let ram_gib = status_field_of("/proc/meminfo", "MemTotal:") as f64 / 1048576.0;
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores} x {cpu}, {ram_gib:.0} GiB RAM, Linux {}",
        kernel.trim()
    )
}

/// "YYYY-MM-DD HH:MM UTC".
pub fn date_utc() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// The "Run: DATE, MACHINE." line that opens each section.
pub fn run_line() -> String {
    format!("Run: {}, {}.", date_utc(), machine())
}

/// Value at percentile `p` (0-100) of `values`, nearest rank.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// A `Key:   N kB` field of /proc/PID/status (0 when the process or field is missing).
pub fn status_field(pid: u32, key: &str) -> u64 {
    status_field_of(&format!("/proc/{pid}/status"), key)
}

fn status_field_of(path: &str, key: &str) -> u64 {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of the whole process (all its threads, live or ended), in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `)` that closes comm, numbered from 3 (state) as in proc(5).
    let after_comm = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let field = |n: usize| {
        fields
            .get(n - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(14) + field(15)
}

/// Clock ticks per second (USER_HZ), for turning ticks into milliseconds.
pub fn ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

/// Voluntary context switches summed over the process's live threads: /proc/PID/status counts
/// the main thread only, and a tokio blocking-pool thread may be the one that wakes.
pub fn voluntary_switches(pid: u32) -> u64 {
    let tasks = fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten();
    tasks
        .flatten()
        .map(|task| {
            let status = task.path().join("status");
            status_field_of(&status.to_string_lossy(), "voluntary_ctxt_switches:")
        })
        .sum()
}

/// Size of a file in bytes (0 if missing).
pub fn file_size(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Writes `section` (starting with its `## ` heading) into BENCHMARKS.md: in place of the
/// section with the same heading, else after the last section of its kind (the heading's text
/// before `:`, e.g. "## Sidecar"), else at the end. Other sections are kept as they are.
pub fn write_section(section: &str) -> Result<(), Error> {
    let path = repo_root().join("BENCHMARKS.md");
    let existing = fs::read_to_string(&path).unwrap_or_else(|_| "# nudge benchmarks\n".into());
    let (preamble, mut sections) = split_sections(&existing);
    let heading = section.lines().next().unwrap_or_default();
    let new = section.trim_end().to_owned();
    match sections
        .iter()
        .position(|s| s.lines().next() == Some(heading))
    {
        Some(same) => sections[same] = new,
        None => {
            let kind = heading.split(':').next().unwrap_or(heading);
            let after_kin = sections.iter().rposition(|s| s.starts_with(kind));
            sections.insert(after_kin.map_or(sections.len(), |i| i + 1), new);
        }
    }
    let parts: Vec<&str> = std::iter::once(preamble.as_str())
        .chain(sections.iter().map(String::as_str))
        .map(str::trim_end)
        .filter(|part| !part.is_empty())
        .collect();
    fs::write(path, parts.join("\n\n") + "\n")?;
    Ok(())
}

/// The text before the first `## ` heading, and each `## ` section.
fn split_sections(text: &str) -> (String, Vec<String>) {
    let mut preamble = String::new();
    let mut sections: Vec<String> = Vec::new();
    for line in text.lines() {
        if line.starts_with("## ") {
            sections.push(String::new());
        }
        let current = sections.last_mut().unwrap_or(&mut preamble);
        current.push_str(line);
        current.push('\n');
    }
    (preamble, sections)
}

/// Criterion's results directory, set explicitly so the summaries below find it whatever
/// `CARGO_TARGET_DIR` or `CRITERION_HOME` say.
pub fn criterion_dir() -> Result<PathBuf, Error> {
    Ok(target_dir()?.join("criterion"))
}

/// Median time (ns) criterion estimated for benchmark `group/id`, if it ran since `since`
/// (a filtered run leaves older results behind, which must not be reported as new).
pub fn criterion_median_ns(group: &str, id: &str, since: std::time::SystemTime) -> Option<f64> {
    let path = criterion_dir()
        .ok()?
        .join(group)
        .join(id)
        .join("new/estimates.json");
    let modified = fs::metadata(&path).and_then(|m| m.modified()).ok()?;
    if modified < since {
        return None;
    }
    let json: serde_json::Value = serde_json::from_str(&fs::read_to_string(&path).ok()?).ok()?;
    json["median"]["point_estimate"].as_f64()
}
