//! Whole-process benchmark of the sidecar (`make bench`): latency from just before the kubelet's
//! `..data` rename to the app receiving SIGHUP, for nudge and for a minimal C inotify+kill
//! program (benches/floor.c, the floor) measured in the same run, interleaved update by update;
//! then nudge's peak RSS while watching 3 volumes and its CPU time and context switches while
//! idle. Results go to stdout and to BENCHMARKS.md.
//!
//! Environment: `NUDGE_BENCH_UPDATES` (default 200), `NUDGE_BENCH_IDLE_SECS` (default 10).

#[path = "../tests/support/kubelet.rs"]
#[allow(dead_code)]
mod kubelet;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kubelet::KubeletVolume;

type Error = Box<dyn std::error::Error>;

/// One reloader under test, with its own volumes and its own app.
struct Subject {
    name: &'static str,
    volumes: Vec<KubeletVolume>,
    /// `unshare`, whose child is the namespace's PID 1.
    namespace: Child,
    app_log: PathBuf,
    latencies_us: Vec<f64>,
    _dir: tempfile::TempDir,
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn reloads(log: &Path) -> Vec<u128> {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("reload ")?.split(' ').nth(1)?.parse().ok())
        .collect()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) -> Result<(), Error> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}").into());
        }
        sleep(Duration::from_micros(200));
    }
    Ok(())
}

impl Subject {
    /// Starts the app and the reloader together in a fresh PID namespace, as in a pod with
    /// `shareProcessNamespace: true`: /proc then holds a pod's few processes, not the host's.
    /// `reloader` is a shell command; `$VOL0`..`$VOL2` and `$APP_PID` (the app's PID in the
    /// namespace) are set for it.
    fn start(name: &'static str, app_bin: &Path, reloader: &str) -> Result<Subject, Error> {
        let dir = tempfile::tempdir()?;
        let volumes: Vec<KubeletVolume> = (0..3)
            .map(|i| {
                KubeletVolume::create(
                    dir.path().join(format!("vol{i}")),
                    &[("app.yaml", "v: 0"), ("extra.txt", "x")],
                )
            })
            .collect();
        let app_log = dir.path().join("app.log");
        let reloader_log = dir.path().join("reloader.log");
        let script = format!(
            "{app} --config \"$VOL0\" --log {log} >/dev/null & APP_PID=$!; \
             while ! grep -q ready {log} 2>/dev/null; do sleep 0.01; done; {reloader} 2>{rlog} & wait",
            app = app_bin.display(),
            log = app_log.display(),
            rlog = reloader_log.display(),
        );
        let mut command = Command::new("unshare");
        command.args(["--pid", "--fork", "--mount-proc", "sh", "-c", &script]);
        for (i, v) in volumes.iter().enumerate() {
            command.env(format!("VOL{i}"), &v.dir);
        }
        let namespace = command.stdout(Stdio::null()).spawn()?;
        wait_until(&format!("{name} to watch"), || {
            fs::read_to_string(&reloader_log).is_ok_and(|s| s.contains("watching"))
        })?;
        Ok(Subject {
            name,
            volumes,
            namespace,
            app_log,
            latencies_us: Vec::new(),
            _dir: dir,
        })
    }

    /// Host PID of the reloader: the child of the namespace's PID 1 that is not the app.
    fn reloader_pid(&self) -> u32 {
        let children = |pid: u32| -> Vec<u32> {
            fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|c| c.parse().ok())
                .collect()
        };
        let pid1 = children(self.namespace.id()).first().copied().unwrap_or(0);
        children(pid1)
            .into_iter()
            .find(|pid| {
                let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                !String::from_utf8_lossy(&cmdline).contains("reload_app")
            })
            .unwrap_or(0)
    }

    /// Host PID of the namespace's PID 1.
    fn pid1(&self) -> u32 {
        let unshare = self.namespace.id();
        fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children"))
            .ok()
            .and_then(|c| c.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// One kubelet-style update of volume 0; records swap-to-signal latency.
    fn update(&mut self, n: usize) -> Result<(), Error> {
        let before = reloads(&self.app_log).len();
        let mut swapped_at = 0;
        let content = format!("v: {n}");
        self.volumes[0].write_with(&[("app.yaml", &content), ("extra.txt", "x")], |_| {
            swapped_at = now_ns()
        });
        let waited = wait_until(&format!("{} to signal the app", self.name), || {
            reloads(&self.app_log).len() > before
        });
        if waited.is_err() {
            let log = self.app_log.with_file_name("reloader.log");
            eprintln!(
                "{} log:\n{}",
                self.name,
                fs::read_to_string(log).unwrap_or_default()
            );
        }
        waited?;
        let received = reloads(&self.app_log)[before];
        self.latencies_us
            .push((received.saturating_sub(swapped_at)) as f64 / 1000.0);
        Ok(())
    }
}

impl Drop for Subject {
    fn drop(&mut self) {
        // SIGKILL to a PID namespace's PID 1 ends every process in it.
        let target = match self.pid1() {
            0 => self.namespace.id(),
            pid1 => pid1,
        };
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(target as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.namespace.kill();
        let _ = self.namespace.wait();
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn summary(latencies: &[f64]) -> (f64, f64, f64) {
    let mut sorted = latencies.to_vec();
    sorted.sort_by(f64::total_cmp);
    (
        percentile(&sorted, 50.0),
        percentile(&sorted, 99.0),
        *sorted.last().unwrap_or(&0.0),
    )
}

fn status_field(pid: u32, key: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// utime + stime in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    fields
        .get(11)
        .and_then(|u| u.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
}

fn machine() -> String {
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
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} x {cpu}, Linux {}", kernel.trim())
}

fn main() -> Result<(), Error> {
    // `cargo test --all-targets` runs this file too, without `--bench`: measure only for real.
    if !std::env::args().any(|a| a == "--bench") {
        println!("sidecar benchmark: skipped (run `make bench`)");
        return Ok(());
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let updates: usize = std::env::var("NUDGE_BENCH_UPDATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let idle_secs: u64 = std::env::var("NUDGE_BENCH_IDLE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    // The static binary is what the image ships (`make static`).
    let nudge_bin = root.join("target/x86_64-unknown-linux-gnu/release/nudge");
    let app_bin = root.join("target/release/examples/reload_app");
    for bin in [&nudge_bin, &app_bin] {
        if !bin.exists() {
            return Err(format!(
                "{} is missing: run `make bench` (it builds the release binaries)",
                bin.display()
            )
            .into());
        }
    }
    let floor_bin = root.join("target/bench-floor");
    let cc = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&floor_bin)
        .arg(root.join("benches/floor.c"))
        .status()?;
    if !cc.success() {
        return Err("cannot compile benches/floor.c with cc".into());
    }

    let mut floor = Subject::start(
        "floor",
        &app_bin,
        &format!("exec {} \"$VOL0\" $APP_PID", floor_bin.display()),
    )?;
    let mut nudge = Subject::start(
        "nudge",
        &app_bin,
        &format!("env RELOAD_WATCH=\"$VOL0,$VOL1,$VOL2\" RELOAD_PROCESS=reload_app RELOAD_LOG_LEVEL=info {}", nudge_bin.display()),
    )?;

    // Interleaved, so both see the same machine load.
    for n in 1..=updates {
        floor.update(n)?;
        nudge.update(n)?;
        sleep(Duration::from_millis(5));
    }
    let nudge_pid = nudge.reloader_pid();
    let peak_rss_kib = status_field(nudge_pid, "VmHWM:");
    let rss_kib = status_field(nudge_pid, "VmRSS:");
    let floor_rss_kib = status_field(floor.reloader_pid(), "VmHWM:");

    let (ticks0, switches0) = (
        cpu_ticks(nudge_pid),
        status_field(nudge_pid, "voluntary_ctxt_switches:"),
    );
    sleep(Duration::from_secs(idle_secs));
    let (ticks1, switches1) = (
        cpu_ticks(nudge_pid),
        status_field(nudge_pid, "voluntary_ctxt_switches:"),
    );

    let (f50, f99, fmax) = summary(&floor.latencies_us);
    let (n50, n99, nmax) = summary(&nudge.latencies_us);
    let report = format!(
        "## Sidecar: swap-to-signal latency, memory, idle CPU\n\n\
         Run: {date}, {machine}. `make bench` ({updates} kubelet-style updates each, interleaved; each reloader runs with the app in its own PID namespace, as in a pod with shareProcessNamespace; nudge with RELOAD_PROCESS=reload_app).\n\n\
         | subject | p50 (µs) | p99 (µs) | max (µs) | peak RSS (KiB) |\n\
         |---|---|---|---|---|\n\
         | floor (C: inotify + kill, benches/floor.c) | {f50:.0} | {f99:.0} | {fmax:.0} | {floor_rss_kib} |\n\
         | nudge (3 volumes, SHA-256, /proc lookup, pidfd, handler check) | {n50:.0} | {n99:.0} | {nmax:.0} | {peak_rss_kib} |\n\n\
         nudge p50 / floor p50 = **{ratio:.2}x**. nudge RSS now {rss_kib} KiB.\n\n\
         Idle for {idle_secs} s after the updates: **{idle_ticks} CPU ticks**, **{idle_switches} voluntary context switches**.\n",
        date = humantime_now(),
        machine = machine(),
        ratio = n50 / f50,
        idle_ticks = ticks1 - ticks0,
        idle_switches = switches1 - switches0,
    );
    println!("{report}");
    write_report(&root.join("BENCHMARKS.md"), &report)?;
    Ok(())
}

fn humantime_now() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Replaces this benchmark's section of BENCHMARKS.md, keeping the others.
fn write_report(path: &Path, section: &str) -> Result<(), Error> {
    let heading = section.lines().next().unwrap_or_default();
    let existing = fs::read_to_string(path).unwrap_or_else(|_| "# nudge benchmarks\n\n".into());
    let mut out = String::new();
    let mut skipping = false;
    for line in existing.lines() {
        if line.starts_with("## ") {
            skipping = line == heading;
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str(section);
    fs::write(path, out)?;
    Ok(())
}
