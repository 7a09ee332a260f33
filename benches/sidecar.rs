//! Whole-process benchmarks of the sidecar (`make bench`), run on the static binary the image
//! ships. Each reloader runs with the app in its own PID namespace, as in a pod with
//! `shareProcessNamespace: true`, and volumes are written exactly as the kubelet writes them.
//!
//! 1. Latency from just before the kubelet's `..data` rename to the app receiving SIGHUP, for
//!    nudge and for a minimal C inotify+kill program (benches/floor.c, the floor), interleaved
//!    update by update; then that nudge's CPU time and context switches while idle.
//! 2. Peak RSS (and where it goes: anonymous vs file-backed pages) and CPU time under a run of
//!    updates, for 3 volumes, 100 volumes and 10 volumes of 1 MiB (the ConfigMap maximum).
//! 3. Start-up time: spawn to `/readyz` answering 200.
//!
//! Results go to stdout and to the "## Sidecar: ..." section of BENCHMARKS.md.
//!
//! Environment: `NUDGE_BENCH_UPDATES` (latency updates, default 200), `NUDGE_BENCH_IDLE_SECS`
//! (default 30), `NUDGE_BENCH_ROUNDS` (updates per volume in the load runs, default 20),
//! `NUDGE_BENCH_STARTS` (default 20).

#[path = "../tests/support/kubelet.rs"]
#[allow(dead_code)]
mod kubelet;
#[path = "support/report.rs"]
#[allow(dead_code)]
mod report;

use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use kubelet::KubeletVolume;
use report::{cpu_ticks, now_ns, percentile, reloads, status_field, Error};

/// The ConfigMap size limit: the payload of each volume in the large-payload run.
const MIB: usize = 1 << 20;

/// The content of a volume at update `n`: key -> content.
type Payload = fn(usize) -> Vec<(&'static str, String)>;

/// Two small keys, as most ConfigMaps.
fn small_payload(n: usize) -> Vec<(&'static str, String)> {
    vec![("app.yaml", format!("v: {n}")), ("extra.txt", "x".into())]
}

/// One key of exactly 1 MiB whose first line changes with `n`. A `.txt` key, so nudge's
/// default validation (YAML/JSON/TOML by extension) leaves it alone: this measures hashing.
fn mib_payload(n: usize) -> Vec<(&'static str, String)> {
    let mut content = format!("update {n}\n");
    let filler = "abcdefghijklmnopqrstuvwxyz0123456789 config line of a large map\n";
    while content.len() < MIB {
        content.push_str(filler);
    }
    content.truncate(MIB);
    vec![("large.txt", content)]
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

/// A free loopback port for nudge's admin server, so runs never collide on the default one.
fn free_port() -> Result<u16, Error> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Children of `pid` (its main thread's, which is where `fork` from a shell lands).
fn children(pid: u32) -> Vec<u32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|c| c.parse().ok())
        .collect()
}

fn kill(pid: u32, signal: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
}

/// A pod: the app and one reloader in a fresh PID namespace, with kubelet-style volumes.
struct Pod {
    name: &'static str,
    volumes: Vec<KubeletVolume>,
    /// `unshare`, whose child is the namespace's PID 1.
    namespace: Child,
    app_log: PathBuf,
    reloader_log: PathBuf,
    latencies_us: Vec<f64>,
    _dir: tempfile::TempDir,
}

impl Pod {
    /// Starts the app, waits for it, then starts `reloader` (a shell command; `$VOL0` is the
    /// first volume, `$WATCH` all of them comma-separated, `$APP_PID` the app's PID in the
    /// namespace). The app reads a small config of its own, so its log stays small whatever
    /// the volumes hold.
    fn start(
        name: &'static str,
        app_bin: &Path,
        reloader: &str,
        volumes: usize,
        payload: Payload,
    ) -> Result<Pod, Error> {
        let dir = tempfile::tempdir()?;
        let volumes = create_volumes(dir.path(), volumes, payload);
        let app_config = KubeletVolume::create(dir.path().join("app-config"), &[("c", "0")]);
        let app_log = dir.path().join("app.log");
        let reloader_log = dir.path().join("reloader.log");
        let script = format!(
            "{app} --config {config} --log {log} >/dev/null & APP_PID=$!; \
             while ! grep -q ready {log} 2>/dev/null; do sleep 0.01; done; {reloader} 2>{rlog} & wait",
            app = app_bin.display(),
            config = app_config.dir.display(),
            log = app_log.display(),
            rlog = reloader_log.display(),
        );
        let watch: Vec<String> = volumes
            .iter()
            .map(|v| v.dir.display().to_string())
            .collect();
        let namespace = Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "sh", "-c", &script])
            .env("VOL0", &volumes[0].dir)
            .env("WATCH", watch.join(","))
            .stdout(Stdio::null())
            .spawn()?;
        let pod = Pod {
            name,
            volumes,
            namespace,
            app_log,
            reloader_log,
            latencies_us: Vec::new(),
            _dir: dir,
        };
        wait_until(&format!("{name} to watch"), || {
            fs::read_to_string(&pod.reloader_log).is_ok_and(|s| s.contains("watching"))
        })?;
        Ok(pod)
    }

    /// Host PID of the namespace's PID 1.
    fn pid1(&self) -> u32 {
        children(self.namespace.id()).first().copied().unwrap_or(0)
    }

    /// Host PID of the reloader: the child of the namespace's PID 1 that is not the app.
    fn reloader_pid(&self) -> u32 {
        children(self.pid1())
            .into_iter()
            .find(|pid| {
                let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                !String::from_utf8_lossy(&cmdline).contains("reload_app")
            })
            .unwrap_or(0)
    }

    /// One kubelet-style update of volume `volume` to `payload(n)`; records swap-to-signal
    /// latency.
    fn update(&mut self, volume: usize, n: usize, payload: Payload) -> Result<(), Error> {
        let before = reloads(&self.app_log).len();
        let content = payload(n);
        let files: Vec<(&str, &str)> = content.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut swapped_at = 0;
        self.volumes[volume].write_with(&files, |_| swapped_at = now_ns());
        let waited = wait_until(&format!("{} to signal the app", self.name), || {
            reloads(&self.app_log).len() > before
        });
        if waited.is_err() {
            let log = fs::read_to_string(&self.reloader_log).unwrap_or_default();
            eprintln!("{} log:\n{log}", self.name);
        }
        waited?;
        let received = reloads(&self.app_log)[before];
        let latency_ns = received.saturating_sub(swapped_at);
        self.latencies_us.push(latency_ns as f64 / 1000.0);
        Ok(())
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        // SIGKILL to a PID namespace's PID 1 ends every process in it.
        match self.pid1() {
            0 => {}
            pid1 => kill(pid1, nix::sys::signal::Signal::SIGKILL),
        }
        let _ = self.namespace.kill();
        let _ = self.namespace.wait();
    }
}

fn create_volumes(dir: &Path, count: usize, payload: Payload) -> Vec<KubeletVolume> {
    (0..count)
        .map(|i| {
            let content = payload(0);
            let files: Vec<(&str, &str)> = content.iter().map(|(k, v)| (*k, v.as_str())).collect();
            KubeletVolume::create(dir.join(format!("vol{i}")), &files)
        })
        .collect()
}

/// The shell command that starts nudge in a pod, watching every volume.
fn nudge_command(nudge_bin: &Path) -> Result<String, Error> {
    Ok(format!(
        "env RELOAD_WATCH=\"$WATCH\" RELOAD_PROCESS=reload_app RELOAD_LOG_LEVEL=info \
         RELOAD_LISTEN=127.0.0.1:{port} {bin}",
        port = free_port()?,
        bin = nudge_bin.display()
    ))
}

/// Benchmark settings, from the environment.
struct Settings {
    updates: usize,
    idle_secs: u64,
    rounds: usize,
    starts: usize,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

impl Settings {
    fn from_env() -> Settings {
        Settings {
            updates: env_or("NUDGE_BENCH_UPDATES", 200),
            idle_secs: env_or("NUDGE_BENCH_IDLE_SECS", 30),
            rounds: env_or("NUDGE_BENCH_ROUNDS", 20),
            starts: env_or("NUDGE_BENCH_STARTS", 20),
        }
    }
}

fn main() -> Result<(), Error> {
    // `cargo test --all-targets` runs this file too, without `--bench`: measure only for real.
    if !report::benchmarking() {
        println!("sidecar benchmark: skipped (run `make bench`)");
        return Ok(());
    }
    let settings = Settings::from_env();
    let (nudge_bin, app_bin) = report::binaries()?;
    let floor_bin = report::floor_binary()?;

    let latency = latency_and_idle(&settings, &nudge_bin, &app_bin, &floor_bin)?;
    println!("{latency}");
    let load = load_runs(&settings, &nudge_bin, &app_bin)?;
    println!("{load}");
    let startup = startup(&settings, &nudge_bin, &app_bin)?;
    println!("{startup}");

    let size = report::file_size(&nudge_bin);
    let section = format!(
        "## Sidecar: swap-to-signal latency, memory, CPU, start-up\n\n\
         {run} `make bench` (benches/sidecar.rs) on the static binary the image ships \
         (target/x86_64-unknown-linux-gnu/release/nudge, {size} bytes = {mib:.2} MiB). Each \
         reloader runs with the app (examples/reload_app.rs) in its own PID namespace, as in a \
         pod with shareProcessNamespace; volumes are written as the kubelet's AtomicWriter writes \
         them (tests/support/kubelet.rs); nudge runs with RELOAD_PROCESS=reload_app, info logs and \
         its admin server on.\n\n{latency}\n{load}\n{startup}",
        run = report::run_line(),
        mib = size as f64 / MIB as f64,
    );
    report::write_section(&section)?;
    Ok(())
}

/// Swap-to-signal latency of the floor and nudge (3 volumes), interleaved; then nudge idle.
fn latency_and_idle(
    settings: &Settings,
    nudge_bin: &Path,
    app_bin: &Path,
    floor_bin: &Path,
) -> Result<String, Error> {
    let floor_cmd = format!("exec {} \"$VOL0\" $APP_PID", floor_bin.display());
    let mut floor = Pod::start("floor", app_bin, &floor_cmd, 3, small_payload)?;
    let nudge_cmd = nudge_command(nudge_bin)?;
    let mut nudge = Pod::start("nudge", app_bin, &nudge_cmd, 3, small_payload)?;
    // Interleaved, so both see the same machine load.
    for n in 1..=settings.updates {
        floor.update(0, n, small_payload)?;
        nudge.update(0, n, small_payload)?;
        sleep(Duration::from_millis(5));
    }
    let nudge_pid = nudge.reloader_pid();
    let nudge_hwm = status_field(nudge_pid, "VmHWM:");
    let floor_hwm = status_field(floor.reloader_pid(), "VmHWM:");
    let idle = Idle::measure(nudge_pid, settings.idle_secs);

    let row = |name: &str, l: &[f64], hwm: u64| {
        format!(
            "| {name} | {:.0} | {:.0} | {:.0} | {hwm} |\n",
            percentile(l, 50.0),
            percentile(l, 99.0),
            percentile(l, 100.0)
        )
    };
    let ratio = percentile(&nudge.latencies_us, 50.0) / percentile(&floor.latencies_us, 50.0);
    Ok(format!(
        "### Swap-to-signal latency\n\n\
         {updates} updates of one volume each, interleaved (5 ms apart).\n\n\
         | subject | p50 (µs) | p99 (µs) | max (µs) | peak RSS (KiB) |\n\
         |---|---|---|---|---|\n\
         {floor_row}{nudge_row}\n\
         nudge p50 / floor p50 = **{ratio:.2}x**.\n\n\
         ### Idle\n\n\
         The same nudge, idle for {secs} s after the updates: **{ticks} CPU ticks** \
         (utime+stime, all threads), **{switches} voluntary context switches** (summed over its \
         {threads} threads). Targets: 0 and 0.\n",
        updates = settings.updates,
        floor_row = row(
            "floor (C: inotify + kill, benches/floor.c)",
            &floor.latencies_us,
            floor_hwm
        ),
        nudge_row = row(
            "nudge (3 volumes, SHA-256, /proc lookup, pidfd, handler check)",
            &nudge.latencies_us,
            nudge_hwm
        ),
        secs = settings.idle_secs,
        ticks = idle.ticks,
        switches = idle.switches,
        threads = idle.threads,
    ))
}

/// CPU use of an idle process over a period.
struct Idle {
    ticks: u64,
    switches: u64,
    threads: u64,
}

impl Idle {
    fn measure(pid: u32, secs: u64) -> Idle {
        let (ticks0, switches0) = (cpu_ticks(pid), report::voluntary_switches(pid));
        sleep(Duration::from_secs(secs));
        Idle {
            ticks: cpu_ticks(pid).saturating_sub(ticks0),
            switches: report::voluntary_switches(pid).saturating_sub(switches0),
            threads: status_field(pid, "Threads:"),
        }
    }
}

/// What one load run measured.
struct Load {
    label: &'static str,
    volumes: usize,
    updates: usize,
    latencies_us: Vec<f64>,
    hwm_kib: u64,
    /// Largest RssAnon / RssFile seen, sampled after every round of updates.
    anon_kib: u64,
    file_kib: u64,
    startup_ticks: u64,
    update_ticks: u64,
}

/// Peak memory and CPU of nudge for a few volume shapes, each under `rounds` updates per volume.
fn load_runs(settings: &Settings, nudge_bin: &Path, app_bin: &Path) -> Result<String, Error> {
    let shapes: [(&'static str, usize, Payload); 3] = [
        ("3 volumes, 2 small keys", 3, small_payload),
        ("100 volumes, 2 small keys", 100, small_payload),
        ("10 volumes of 1 MiB (1 key)", 10, mib_payload),
    ];
    let mut rows = String::new();
    let hz = report::ticks_per_second();
    let ms = |ticks: u64| ticks * 1000 / hz;
    for (label, volumes, payload) in shapes {
        let run = load_run(settings, nudge_bin, app_bin, label, volumes, payload)?;
        let per_update_ms = ms(run.update_ticks) as f64 / run.updates as f64;
        let _ = writeln!(
            rows,
            "| {} | {} | {} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {:.2} |",
            run.label,
            run.volumes,
            run.updates,
            percentile(&run.latencies_us, 50.0),
            percentile(&run.latencies_us, 99.0),
            run.hwm_kib,
            run.anon_kib,
            run.file_kib,
            ms(run.startup_ticks),
            ms(run.update_ticks),
            per_update_ms,
        );
    }
    Ok(format!(
        "### Memory and CPU under updates\n\n\
         Each shape in its own pod; {rounds} kubelet-style updates per volume, round-robin over \
         the volumes, each waited for (the app's SIGHUP) before the next. Peak RSS is the \
         kernel's VmHWM at the end (start-up included). RssAnon (heap, stacks: what nudge \
         itself allocates) and RssFile (pages of the mapped static binary, shared with every \
         other process running it) are the largest values sampled after each round. CPU is \
         utime+stime of all threads, in ms ({hz} ticks/s, so 10 ms steps).\n\n\
         | shape | volumes | updates | latency p50 (µs) | p99 (µs) | peak RSS VmHWM (KiB) | RssAnon (KiB) | RssFile (KiB) | CPU start-up (ms) | CPU updates (ms) | CPU per update (ms) |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n\
         {rows}",
        rounds = settings.rounds,
    ))
}

fn load_run(
    settings: &Settings,
    nudge_bin: &Path,
    app_bin: &Path,
    label: &'static str,
    volumes: usize,
    payload: Payload,
) -> Result<Load, Error> {
    let command = nudge_command(nudge_bin)?;
    let mut pod = Pod::start("nudge", app_bin, &command, volumes, payload)?;
    let pid = pod.reloader_pid();
    let startup_ticks = cpu_ticks(pid);
    let (mut anon_kib, mut file_kib) = (0, 0);
    for round in 1..=settings.rounds {
        for volume in 0..volumes {
            pod.update(volume, round, payload)?;
        }
        anon_kib = anon_kib.max(status_field(pid, "RssAnon:"));
        file_kib = file_kib.max(status_field(pid, "RssFile:"));
    }
    Ok(Load {
        label,
        volumes,
        updates: settings.rounds * volumes,
        hwm_kib: status_field(pid, "VmHWM:"),
        anon_kib,
        file_kib,
        startup_ticks,
        update_ticks: cpu_ticks(pid).saturating_sub(startup_ticks),
        latencies_us: std::mem::take(&mut pod.latencies_us),
    })
}

/// Start-up time: from spawning nudge (3 volumes, in a pod with the app) to `/readyz`
/// answering 200, which needs the volumes read and the app found in /proc.
fn startup(settings: &Settings, nudge_bin: &Path, app_bin: &Path) -> Result<String, Error> {
    // A pod holding the app alone (its "reloader" only says it is there); nudge is started into its
    // namespaces with nsenter, once per measurement.
    let pod = Pod::start("app", app_bin, "{ echo watching >&2; }", 3, small_payload)?;
    let watch: Vec<String> = pod
        .volumes
        .iter()
        .map(|v| v.dir.display().to_string())
        .collect();
    let pid1 = pod.pid1().to_string();
    let nsenter = |program: &Path| {
        let mut command = Command::new("nsenter");
        command
            .args(["-t", &pid1, "-p", "-m", "--"])
            .arg(program)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    };
    let mut ready_ms = Vec::new();
    let mut reference_ms = Vec::new();
    for _ in 0..settings.starts {
        let port = free_port()?;
        let mut command = nsenter(nudge_bin);
        command
            .env("RELOAD_WATCH", watch.join(","))
            .env("RELOAD_PROCESS", "reload_app")
            .env("RELOAD_LISTEN", format!("127.0.0.1:{port}"));
        ready_ms.push(time_to_ready(command, port)?);
        let started = Instant::now();
        nsenter(Path::new("/bin/true")).status()?;
        reference_ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(format!(
        "### Start-up\n\n\
         Spawn to `/readyz` answering 200 (volumes read and hashed, the app found in /proc), \
         3 volumes, over {starts} starts, nudge entering the pod's namespaces with nsenter \
         (polling every 0.5 ms). Reference: nsenter running /bin/true, spawn to exit.\n\n\
         | | p50 (ms) | p90 (ms) | max (ms) |\n\
         |---|---|---|---|\n\
         | nudge, spawn to ready | {n50:.1} | {n90:.1} | {nmax:.1} |\n\
         | reference: nsenter + /bin/true | {r50:.1} | {r90:.1} | {rmax:.1} |\n",
        starts = settings.starts,
        n50 = percentile(&ready_ms, 50.0),
        n90 = percentile(&ready_ms, 90.0),
        nmax = percentile(&ready_ms, 100.0),
        r50 = percentile(&reference_ms, 50.0),
        r90 = percentile(&reference_ms, 90.0),
        rmax = percentile(&reference_ms, 100.0),
    ))
}

/// Spawns `command` (nsenter running nudge), polls `/readyz` on `port` until 200, stops nudge;
/// returns milliseconds from spawn to the 200.
fn time_to_ready(mut command: Command, port: u16) -> Result<f64, Error> {
    let started = Instant::now();
    let mut nsenter = command.spawn()?;
    let waited = wait_ready(port, started);
    // nsenter forks nudge into the namespace and waits for it: end nudge, then reap nsenter.
    for nudge in children(nsenter.id()) {
        kill(nudge, nix::sys::signal::Signal::SIGKILL);
    }
    nsenter.wait()?;
    waited
}

fn wait_ready(port: u16, started: Instant) -> Result<f64, Error> {
    loop {
        if readyz_ok(port) {
            return Ok(started.elapsed().as_secs_f64() * 1000.0);
        }
        if started.elapsed() > Duration::from_secs(10) {
            return Err("nudge was not ready within 10 s".into());
        }
        sleep(Duration::from_micros(500));
    }
}

/// Whether `GET /readyz` on the admin server answers 200.
fn readyz_ok(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let request = "GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let mut response = String::new();
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_to_string(&mut response).is_ok()
        && response.starts_with("HTTP/1.1 200")
}
