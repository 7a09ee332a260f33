//! Webhook-mode latency: from just before the kubelet's `..data` rename to the request arriving
//! at a local HTTP server, p50/p99 over `NUDGE_BENCH_UPDATES` updates (default 100), against
//! the C inotify+kill floor (benches/floor.c, swap to the app receiving SIGHUP) and nudge's
//! own signal action, interleaved update by update in the same run so all see the same load.
//! Host PID namespace (no pod emulation): /proc holds the host's processes, which only the
//! signal action scans.
//!
//! `cargo build --release --example reload_app && cargo bench --bench webhook`

#[path = "../tests/support/kubelet.rs"]
#[allow(dead_code)]
mod kubelet;

#[path = "../tests/support/http.rs"]
#[allow(dead_code)]
mod http;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HttpServer, Reply};
use kubelet::KubeletVolume;

type Error = Box<dyn std::error::Error>;

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

/// Kills the child on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes update `n` into `volume`; returns the time just before the `..data` rename.
fn update(volume: &KubeletVolume, n: usize) -> u128 {
    let mut swapped_at = 0;
    let content = format!("v: {n}");
    volume.write_with(&[("app.yaml", &content)], |_| swapped_at = now_ns());
    swapped_at
}

fn summary(name: &str, latencies: &mut [f64]) -> (f64, f64) {
    latencies.sort_by(f64::total_cmp);
    let at = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    let (p50, p99) = (at(0.5), at(0.99));
    println!(
        "{name:<28} n={:<4} p50 {p50:>7.0} µs   p99 {p99:>7.0} µs   max {:>7.0} µs",
        latencies.len(),
        latencies[latencies.len() - 1]
    );
    (p50, p99)
}

fn spawn(command: &mut Command) -> Result<Guard, Error> {
    Ok(Guard(
        command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    ))
}

/// Polls `condition` until it holds (10 s at most); `http.rs` uses it as `super::eventually`.
fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        sleep(Duration::from_micros(200));
    }
}

fn wait(what: &str, done: impl FnMut() -> bool) {
    eventually(what, done);
}

fn main() -> Result<(), Error> {
    // `cargo test --all-targets` runs this file too, without `--bench`: measure only for real.
    if !std::env::args().any(|a| a == "--bench") {
        println!("webhook benchmark: skipped (run `cargo bench --bench webhook`)");
        return Ok(());
    }
    let updates: usize = std::env::var("NUDGE_BENCH_UPDATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let nudge_bin = PathBuf::from(env!("CARGO_BIN_EXE_nudge"));
    let app_bin = nudge_bin.with_file_name("examples").join("reload_app");
    if !app_bin.exists() {
        return Err(format!(
            "{} is missing: cargo build --release --example reload_app",
            app_bin.display()
        )
        .into());
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir()?;
    let floor_bin = dir.path().join("floor-bin");
    let cc = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&floor_bin)
        .arg(root.join("benches/floor.c"))
        .status()?;
    if !cc.success() {
        return Err("cannot compile benches/floor.c with cc".into());
    }

    // Three volumes, three watchers: floor -> app A, nudge signal -> app B, nudge webhook -> server.
    let vols: Vec<KubeletVolume> = ["floor", "signal", "webhook"]
        .iter()
        .map(|n| KubeletVolume::create(dir.path().join(n), &[("app.yaml", "v: 0")]))
        .collect();
    let logs: Vec<PathBuf> = ["floor", "signal"]
        .iter()
        .map(|n| dir.path().join(format!("{n}-app.log")))
        .collect();
    let mut apps = Vec::new();
    for (i, log) in logs.iter().enumerate() {
        apps.push(spawn(
            Command::new(&app_bin)
                .arg("--config")
                .arg(&vols[i].dir)
                .arg("--log")
                .arg(log),
        )?);
        wait("the app to be ready", || {
            fs::read_to_string(log)
                .unwrap_or_default()
                .starts_with("ready ")
        });
    }
    let server = HttpServer::start(&[], Reply::Status(200));
    let _floor = spawn(
        Command::new(&floor_bin)
            .arg(&vols[0].dir)
            .arg(apps[0].0.id().to_string()),
    )?;
    let quiet = [("RELOAD_LOG_LEVEL", "warn"), ("RELOAD_LISTEN", "off")];
    let _signal = spawn(
        Command::new(&nudge_bin)
            .args(["--watch"])
            .arg(&vols[1].dir)
            .args(["--pid-file"])
            .arg(dir.path().join("signal.pid"))
            .envs(quiet),
    )?;
    fs::write(dir.path().join("signal.pid"), apps[1].0.id().to_string())?;
    let _webhook = spawn(
        Command::new(&nudge_bin)
            .args(["--watch"])
            .arg(&vols[2].dir)
            .args([
                "--action",
                "webhook",
                "--webhook-url",
                &server.url("/-/reload"),
            ])
            .envs(quiet),
    )?;
    // Let the watchers set up their inotify watches.
    sleep(Duration::from_millis(500));

    let mut lat: [Vec<f64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for n in 1..=updates {
        for (i, log) in logs.iter().enumerate() {
            let before = reloads(log).len();
            let at = update(&vols[i], n);
            wait("a reload", || reloads(log).len() > before);
            lat[i].push(reloads(log)[before].saturating_sub(at) as f64 / 1000.0);
        }
        let before = server.count();
        let at = update(&vols[2], n);
        wait("a webhook request", || server.count() > before);
        lat[2].push(server.seen()[before].unix_ns.saturating_sub(at) as f64 / 1000.0);
        sleep(Duration::from_millis(5));
    }
    let (floor_p50, _) = summary("floor (C inotify + kill)", &mut lat[0]);
    let (signal_p50, _) = summary("nudge --action signal", &mut lat[1]);
    let (webhook_p50, _) = summary("nudge --action webhook", &mut lat[2]);
    println!(
        "webhook p50 / floor p50 = {:.2}x; signal p50 / floor p50 = {:.2}x",
        webhook_p50 / floor_p50,
        signal_p50 / floor_p50
    );
    Ok(())
}
