//! Webhook-mode latency: from just before the kubelet's `..data` rename to the request arriving
//! at a local HTTP server, p50/p99 over `NUDGE_BENCH_UPDATES` updates (default 100), against
//! the C inotify+kill floor (benches/floor.c, swap to the app receiving SIGHUP) and nudge's
//! own signal action, interleaved update by update in the same run so all see the same load.
//! Host PID namespace (no pod emulation): /proc holds the host's processes, which only the
//! signal action scans. Runs the static binary the image ships; results go to stdout and to
//! the "## Sidecar: swap-to-webhook latency" section of BENCHMARKS.md.
//!
//! `cargo bench --bench webhook` (part of `make bench`, which builds the binaries it needs).

#[path = "../tests/support/kubelet.rs"]
#[allow(dead_code)]
mod kubelet;

#[path = "../tests/support/http.rs"]
#[allow(dead_code)]
mod http;
#[path = "support/report.rs"]
#[allow(dead_code)]
mod report;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::Duration;

use http::{HttpServer, Reply};
use kubelet::KubeletVolume;

use report::{now_ns, reloads, Error};

/// A bare HTTP client on one kept-alive connection to the test server, as nudge's webhook
/// client keeps its connection: the floor of an HTTP request.
struct BareClient {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl BareClient {
    fn connect(server: &HttpServer) -> Result<BareClient, Error> {
        let url = server.url("/");
        let address = url.trim_start_matches("http://").trim_end_matches('/');
        let stream = TcpStream::connect(address)?;
        stream.set_nodelay(true)?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(BareClient { stream, reader })
    }

    /// Sends one POST; returns the time just before sending.
    fn send(&mut self) -> Result<u128, Error> {
        let at = now_ns();
        self.stream
            .write_all(b"POST /-/reload HTTP/1.1\r\nHost: bench\r\nContent-Length: 0\r\n\r\n")?;
        Ok(at)
    }

    /// Reads the test server's reply (headers, then its 3-byte body `ok\n`).
    fn read_reply(&mut self) -> Result<(), Error> {
        let mut line = String::new();
        while self.reader.read_line(&mut line)? > 0 && line != "ok\n" {
            line.clear();
        }
        Ok(())
    }
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
    if !report::benchmarking() {
        println!("webhook benchmark: skipped (run `cargo bench --bench webhook`)");
        return Ok(());
    }
    let updates: usize = std::env::var("NUDGE_BENCH_UPDATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let (nudge_bin, app_bin) = report::binaries()?;
    let floor_bin = report::floor_binary()?;
    let dir = tempfile::tempdir()?;

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

    let mut bare = BareClient::connect(&server)?;
    let mut lat: [Vec<f64>; 4] = Default::default();
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
        let before = server.count();
        let at = bare.send()?;
        wait("the bare request", || server.count() > before);
        bare.read_reply()?;
        lat[3].push(server.seen()[before].unix_ns.saturating_sub(at) as f64 / 1000.0);
        sleep(Duration::from_millis(5));
    }
    let names = [
        "floor (C: inotify + kill, benches/floor.c)",
        "nudge --action signal (pid file)",
        "nudge --action webhook (http, 200 reply)",
        "bare HTTP request (kept-alive connection, from this bench)",
    ];
    let rows: Vec<(&str, (f64, f64))> = names
        .into_iter()
        .zip(lat.iter_mut())
        .map(|(name, latencies)| (name, summary(name, latencies)))
        .collect();
    let floor_p50 = rows[0].1 .0;
    let request_floor_p50 = floor_p50 + rows[3].1 .0;
    let mut table = String::new();
    for (name, (p50, p99)) in &rows[..3] {
        table += &format!(
            "| {name} | {p50:.0} | {p99:.0} | {:.2}x |\n",
            p50 / floor_p50
        );
    }
    let (request_p50, request_p99) = rows[3].1;
    let webhook_p50 = rows[2].1 .0;
    table += &format!(
        "| {} | {request_p50:.0} | {request_p99:.0} | |\n\n\
         Webhook against the floor plus a bare HTTP request ({floor_p50:.0} + {request_p50:.0} = \
         {request_floor_p50:.0} µs): **{:.2}x**.\n",
        rows[3].0,
        webhook_p50 / request_floor_p50,
    );
    let section = format!(
        "## Sidecar: swap-to-webhook latency\n\n\
         {run} `cargo bench --bench webhook` on the static binary: {updates} kubelet-style updates \
         each, interleaved; swap to the app receiving SIGHUP (floor, signal) or to the request \
         reaching a local HTTP server (webhook, whose client keeps its connection alive; the bare request: a POST from the bench \
         on one kept-alive connection to the same server, the floor of an HTTP request). Host PID \
         namespace, the signal action's target given by a pid file.\n\n\
         | subject | p50 (µs) | p99 (µs) | p50 / floor p50 |\n\
         |---|---|---|---|\n\
         {table}",
        run = report::run_line(),
    );
    report::write_section(&section)
}
