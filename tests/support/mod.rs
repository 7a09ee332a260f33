//! Shared fixtures for nudge's integration tests: the kubelet-style volume writer, the real
//! nudge binary and the real reload app as child processes, and polling helpers (tests wait
//! for conditions with a deadline; they never sleep and hope).
#![allow(dead_code)]

pub mod http;
pub mod kubelet;
pub mod pod;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long any expected condition may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// Polls `condition` until it holds or `PATIENCE` runs out; panics with `what` on timeout.
pub fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// The nudge binary built by cargo for these tests.
pub fn nudge_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nudge"))
}

/// The reload app example (built by `cargo test` with the other targets).
pub fn reload_app_bin() -> PathBuf {
    let bin = nudge_bin()
        .parent()
        .expect("target dir")
        .join("examples/reload_app");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --examples` (make test does)",
        bin.display()
    );
    bin
}

/// A child process whose stderr (and stdout) lines are collected for assertions.
pub struct Running {
    pub child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    /// Host PID of the real process when `child` is only a launcher (nsenter): killed on drop.
    pub inner: Option<i32>,
}

impl Running {
    pub fn spawn(mut command: Command) -> Running {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn child");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("stdout piped");
        let stderr = child.stderr.take().expect("stderr piped");
        for stream in [
            Box::new(stdout) as Box<dyn std::io::Read + Send>,
            Box::new(stderr),
        ] {
            let lines = lines.clone();
            thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    eprintln!("  | {line}");
                    lines.lock().expect("lines lock").push(line);
                }
            });
        }
        Running {
            child,
            lines,
            inner: None,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Every output line so far.
    pub fn output(&self) -> Vec<String> {
        self.lines.lock().expect("lines lock").clone()
    }

    /// How many output lines contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.output().iter().filter(|l| l.contains(needle)).count()
    }

    /// Waits until some output line contains `needle`.
    pub fn wait_for(&self, needle: &str) {
        eventually(&format!("output line containing {needle:?}"), || {
            self.count(needle) > 0
        });
    }

    /// Waits until `needle` has appeared `n` times.
    pub fn wait_for_n(&self, needle: &str, n: usize) {
        eventually(&format!("{n} output lines containing {needle:?}"), || {
            self.count(needle) >= n
        });
    }

    pub fn signal(&self, signal: Signal) {
        let _ = kill(Pid::from_raw(self.pid()), signal);
    }

    /// Whether the process is still running (not exited).
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the process to exit, failing after `PATIENCE`.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "process {} did not exit",
                self.pid()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(inner) = self.inner {
            let _ = kill(Pid::from_raw(inner), Signal::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nudge started with `args`, waited on until it is watching.
pub fn start_nudge(args: &[&str]) -> Running {
    let mut command = Command::new(nudge_bin());
    command
        .args(args)
        .env("RUST_LOG", "nudge=debug")
        // Port 0: tests run in parallel, and each nudge still serves its admin endpoints.
        .env("RELOAD_LISTEN", "127.0.0.1:0")
        .env_remove("RELOAD_WATCH");
    let nudge = Running::spawn(command);
    nudge.wait_for("watching");
    nudge
}

/// The reload app: a real process that reloads on SIGHUP and records each reload in a file.
pub struct ReloadApp {
    pub process: Running,
    pub log: PathBuf,
}

impl ReloadApp {
    /// Starts the app reading `config`, recording into `log`; waits until its handler is set.
    pub fn start(config: &Path, log: &Path) -> ReloadApp {
        Self::start_with(config, log, &[])
    }

    pub fn start_with(config: &Path, log: &Path, extra: &[&str]) -> ReloadApp {
        let mut command = Command::new(reload_app_bin());
        command
            .arg("--config")
            .arg(config)
            .arg("--log")
            .arg(log)
            .args(extra);
        let app = ReloadApp {
            process: Running::spawn(command),
            log: log.to_path_buf(),
        };
        if extra.is_empty() {
            app.wait_ready();
        }
        app
    }

    pub fn wait_ready(&self) {
        let pid = self.process.pid();
        eventually("the app to install its SIGHUP handler", || {
            self.lines().iter().any(|l| *l == format!("ready {pid}"))
        });
    }

    fn lines(&self) -> Vec<String> {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The reloads recorded so far: (receive time in unix ns, config content) per reload.
    pub fn reloads(&self) -> Vec<(u128, String)> {
        self.lines()
            .iter()
            .filter_map(|l| {
                let mut parts = l.splitn(4, ' ');
                (parts.next()? == "reload").then_some(())?;
                parts.next()?;
                Some((
                    parts.next()?.parse().ok()?,
                    parts.next().unwrap_or("").to_owned(),
                ))
            })
            .collect()
    }

    pub fn wait_reloads(&self, n: usize) {
        eventually(&format!("{n} reloads of the app"), || {
            self.reloads().len() >= n
        });
    }
}

/// A regex that matches only this test's processes: its temp dir appears in their command line.
pub fn cmdline_regex(dir: &Path) -> String {
    regex_lite::escape(&dir.display().to_string())
}

/// Asserts that nothing more happens for a while: used after the last expected event to catch
/// duplicates. (A bounded wait for the absence of an event; the presence checks never sleep.)
pub fn settle_quietly() {
    thread::sleep(Duration::from_millis(700));
}
