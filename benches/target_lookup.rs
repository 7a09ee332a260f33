//! Criterion: the cost of finding the app's process, `nudge::target::find`, which scans /proc
//! afresh for every reload:
//!
//! - over a synthetic /proc-like tree of 10,000 processes in a temporary directory (a pod whose
//!   app has 9,997 workers), holding the files `find` reads: `stat`, `cmdline` and `cgroup`
//!   (plus `self`);
//! - over the real /proc with 2,000 sleeping processes spawned for the run (killed after).
//!
//! For each: a process name, a command-line regex and the other-container rule. Medians go to
//! BENCHMARKS.md. `cargo bench --bench target_lookup` (part of `make bench`).

#[path = "support/report.rs"]
#[allow(dead_code)]
mod report;

use std::fmt::Write as _;
use std::fs;
use std::hint::black_box;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use criterion::{Criterion, SamplingMode};
use nudge::target::{find, Selector};
use report::Error;

const SYNTHETIC: &str = "target_synthetic";
const REAL: &str = "target_real_proc";
const SYNTHETIC_PROCESSES: usize = 10_000;
const SLEEPERS: usize = 2_000;
/// The name the real run's target runs under (15 bytes: all of it fits in `comm`).
const REAL_TARGET: &str = "nudge-bench-app";

/// One selector to measure: its id (criterion's directory name) and what it is.
struct Case {
    id: &'static str,
    selector: Selector,
}

fn main() -> Result<(), Error> {
    // `cargo test --all-targets` runs this file too, without `--bench`: measure only for real.
    if !report::benchmarking() {
        println!("target lookup benchmark: skipped (run `make bench`)");
        return Ok(());
    }
    let started = SystemTime::now();
    let mut criterion = Criterion::default()
        .output_directory(&report::criterion_dir()?)
        .configure_from_args();

    let tree = tempfile::tempdir()?;
    synthetic_proc(tree.path(), SYNTHETIC_PROCESSES)?;
    let synthetic = cases("app", "^app --config ")?;
    bench_group(&mut criterion, SYNTHETIC, tree.path(), &synthetic);
    drop(tree);

    let sleepers = Sleepers::spawn(SLEEPERS)?;
    let real = cases(REAL_TARGET, &format!("{REAL_TARGET} 300$"))?;
    let host_processes = count_processes(Path::new("/proc"));
    bench_group(&mut criterion, REAL, Path::new("/proc"), &real);
    drop(sleepers);

    criterion.final_summary();
    let tables = [
        table(
            SYNTHETIC,
            "synthetic tree",
            SYNTHETIC_PROCESSES,
            &synthetic,
            started,
        ),
        table(REAL, "real /proc", host_processes, &real, started),
    ];
    // A filtered or `--profile-time` run measures nothing new: leave BENCHMARKS.md alone.
    if tables.iter().all(Option::is_none) {
        return Ok(());
    }
    let section = header() + &tables.map(Option::unwrap_or_default).concat();
    report::write_section(&section)
}

fn cases(name: &str, regex: &str) -> Result<Vec<Case>, Error> {
    Ok(vec![
        Case {
            id: "name",
            selector: Selector::Name(name.into()),
        },
        Case {
            id: "cmdline_regex",
            // `parse`, not a named regex type: whichever regex crate nudge uses builds it.
            selector: Selector::CommandLine(regex.parse()?),
        },
        Case {
            id: "other_container",
            selector: Selector::OtherContainer,
        },
    ])
}

/// Scans take tens of milliseconds: flat sampling with few samples keeps the run short.
fn bench_group(criterion: &mut Criterion, group: &str, root: &Path, cases: &[Case]) {
    let mut group = criterion.benchmark_group(group);
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for case in cases {
        println!("{}: {}", case.id, outcome(&case.selector, root));
        group.bench_function(case.id, |b| {
            b.iter(|| find(black_box(&case.selector), black_box(root)))
        });
    }
    group.finish();
}

/// What `find` answers, in a few words, for the report.
fn outcome(selector: &Selector, root: &Path) -> String {
    match find(selector, root) {
        Ok(found) => {
            let pids: Vec<String> = found.iter().map(|p| p.pid.to_string()).collect();
            format!("found pid {}", pids.join(", "))
        }
        Err(nudge::target::TargetError::NotFound { .. }) => "none found".into(),
        Err(nudge::target::TargetError::Ambiguous { .. }) => "ambiguous".into(),
        Err(e) => format!("error: {e}"),
    }
}

fn count_processes(proc_root: &Path) -> usize {
    fs::read_dir(proc_root)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                })
                .count()
        })
        .unwrap_or(0)
}

/// A pod's /proc with `count` processes: PID 1 the pause process, PID 2 the app's main
/// process, PID 3 nudge (`self`), and every other PID a worker of the app, in the app's cgroup.
fn synthetic_proc(root: &Path, count: usize) -> Result<(), Error> {
    let pod = "/kubepods/burstable/pod6f1c1a2e-3b4d-4c5e-9f60-7a8b9c0d1e2f";
    let container = |name: &str| format!("0::{pod}/cri-containerd-{name}{:0>48}\n", 0);
    for pid in 1..=count {
        let (comm, ppid, cmdline, cgroup) = match pid {
            1 => ("pause", 0, "/pause".to_owned(), format!("0::{pod}\n")),
            2 => (
                "app",
                0,
                "app --config /etc/app/app.yaml".into(),
                container("app"),
            ),
            3 => ("nudge", 0, "/nudge".into(), container("nudge")),
            _ => ("worker", 2, format!("worker --id {pid}"), container("app")),
        };
        let dir = root.join(pid.to_string());
        fs::create_dir(&dir)?;
        fs::write(dir.join("stat"), stat_line(pid, comm, ppid))?;
        fs::write(
            dir.join("cmdline"),
            format!("{}\0", cmdline.replace(' ', "\0")),
        )?;
        fs::write(dir.join("cgroup"), cgroup)?;
    }
    symlink("3", root.join("self"))?;
    Ok(())
}

/// A /proc/PID/stat line as the kernel writes it (all 52 fields; `find` reads state, ppid,
/// flags and start time).
fn stat_line(pid: usize, comm: &str, ppid: usize) -> String {
    let start_time = 1000 + pid;
    format!(
        "{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 4194560 1234 0 0 0 12 3 0 0 20 0 1 0 \
         {start_time} 12345678 456 18446744073709551615 94805861711872 94805861731753 \
         140724029424464 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 94805861747760 94805861749376 \
         94806394920960 140724029426401 140724029426421 140724029426421 140724029427691 0\n"
    )
}

/// Sleeping processes for the real /proc run, plus the target (`sleep` run under
/// [`REAL_TARGET`]'s name); all killed on drop. Each sleeps 300 s at most, so even a crashed
/// run leaves nothing behind for long.
struct Sleepers {
    children: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl Sleepers {
    fn spawn(count: usize) -> Result<Sleepers, Error> {
        let dir = tempfile::tempdir()?;
        let target: PathBuf = dir.path().join(REAL_TARGET);
        symlink(which_sleep()?, &target)?;
        let mut sleepers = Sleepers {
            children: Vec::with_capacity(count + 1),
            _dir: dir,
        };
        let sleep = |program: &Path| {
            Command::new(program)
                .arg("300")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
        };
        sleepers.children.push(sleep(&target)?);
        for _ in 0..count {
            sleepers.children.push(sleep(Path::new("sleep"))?);
        }
        Ok(sleepers)
    }
}

impl Drop for Sleepers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
    }
}

fn which_sleep() -> Result<PathBuf, Error> {
    ["/usr/bin/sleep", "/bin/sleep"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| "no sleep binary in /usr/bin or /bin".into())
}

fn header() -> String {
    format!(
        "## Sidecar: target lookup (criterion)\n\n\
         {run} `cargo bench --bench target_lookup`: `nudge::target::find(selector, proc_root)`, \
         run for every reload. Synthetic: a tree of {SYNTHETIC_PROCESSES} process directories \
         in a temporary directory (pause, the app's main process, nudge, and the app's workers), \
         with the files `find` reads (`stat`, `cmdline`, `cgroup`) in the page cache. Real: the \
         host's /proc with {SLEEPERS} sleeping processes spawned for the run, plus whatever else \
         runs on the machine; procfs generates each file on read, so it costs more per process. \
         Median of criterion's samples.\n\n",
        run = report::run_line(),
    )
}

/// One group's table; `None` when none of its benchmarks ran.
fn table(
    group: &str,
    label: &str,
    processes: usize,
    cases: &[Case],
    since: SystemTime,
) -> Option<String> {
    let medians: Vec<Option<f64>> = cases
        .iter()
        .map(|case| report::criterion_median_ns(group, case.id, since))
        .collect();
    medians.iter().any(Option::is_some).then_some(())?;
    let mut out = format!(
        "| {label} ({processes} processes) | median (ms) | per process (µs) |\n|---|---|---|\n"
    );
    for (case, median) in cases.iter().zip(medians) {
        let row = match median {
            Some(ns) => format!(
                "| {} | {:.2} | {:.2} |",
                case.selector,
                ns / 1e6,
                ns / 1e3 / processes as f64
            ),
            None => format!("| {} | not run | |", case.selector),
        };
        let _ = writeln!(out, "{row}");
    }
    out.push('\n');
    Some(out)
}
