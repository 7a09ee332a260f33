//! A real control plane for tests: `scripts/test-cluster.sh start DIR` once per test binary
//! (etcd + kube-apiserver + kube-controller-manager on loopback), stopped by a watchdog when
//! the test process exits. Missing binaries skip the tests, except under `CI=true`.
#![allow(dead_code)] // each test binary uses part of it

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A started control plane.
pub struct Cluster {
    /// The admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// The state directory (`DIR` of `test-cluster.sh`).
    pub dir: PathBuf,
}

impl Cluster {
    /// A value of `DIR/env` (e.g. `NUDGE_TEST_CONTROLLER_TOKEN`).
    pub fn env_var(&self, key: &str) -> String {
        let env = std::fs::read_to_string(self.dir.join("env")).expect("cluster env file");
        env.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("{key} missing from the cluster env file"))
            .trim_matches('\'')
            .to_owned()
    }

    /// `test-cluster.sh stop-component DIR NAME` (`etcd` or `kube-apiserver`).
    pub fn stop_component(&self, name: &str) {
        self.script(&["stop-component", name]);
    }

    /// `test-cluster.sh start-component DIR NAME ARGS...`: same flags (+ ARGS), same port,
    /// certificates and etcd data; returns once the API server is ready.
    pub fn start_component(&self, name: &str, args: &[&str]) {
        let mut all = vec!["start-component", name];
        all.extend_from_slice(args);
        self.script(&all);
    }

    fn script(&self, args: &[&str]) {
        let (verb, rest) = args.split_first().expect("a subcommand");
        let status = Command::new(script())
            .arg(verb)
            .arg(&self.dir)
            .args(rest)
            .stdout(Stdio::null())
            .status()
            .expect("run test-cluster.sh");
        assert!(status.success(), "test-cluster.sh {args:?} failed");
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/test-cluster.sh")
}

fn binaries_present() -> bool {
    let Ok(out) = Command::new(script()).arg("bin-dir").output() else {
        return false;
    };
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    out.status.success() && Path::new(&dir).join("kube-apiserver").exists()
}

fn start() -> Option<Cluster> {
    start_with(false)
}

/// A control plane of the calling test binary's own (for tests that stop its components);
/// `audit` enables the API server's audit log at `dir/audit.log`. `None` means skip.
pub fn own_cluster(audit: bool) -> Option<Cluster> {
    start_with(audit)
}

fn start_with(audit: bool) -> Option<Cluster> {
    if !binaries_present() {
        let why = "test control plane binaries missing: run `scripts/test-cluster.sh install-deps && scripts/test-cluster.sh build`";
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{why} (CI=true: failing instead of skipping)"
        );
        eprintln!("SKIP: {why}");
        return None;
    }
    let dir = tempfile::Builder::new()
        .prefix("nudge-cluster-")
        .tempdir()
        .expect("temp dir")
        .keep();
    // One retry: on a loaded CI machine a component can lose a port race at start-up.
    let started = (0..2).any(|_| {
        Command::new(script())
            .arg("start")
            .arg(&dir)
            .env("NUDGE_TEST_AUDIT", if audit { "1" } else { "0" })
            .stdout(Stdio::null())
            .status()
            .expect("run test-cluster.sh start")
            .success()
    });
    assert!(
        started,
        "test-cluster.sh start {} failed twice",
        dir.display()
    );
    // Stops exactly this cluster when this test process is gone (statics have no Drop).
    let watchdog = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {script} stop {dir} >/dev/null 2>&1; rm -rf {dir}",
        pid = std::process::id(),
        script = script().display(),
        dir = dir.display()
    );
    // Never waited for on purpose: it must outlive this process to stop the cluster.
    #[allow(clippy::zombie_processes)]
    Command::new("setsid")
        .args(["sh", "-c", &watchdog])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the cluster watchdog");
    Some(Cluster {
        kubeconfig: dir.join("kubeconfig"),
        dir,
    })
}

/// The shared cluster, started on first use; `None` means skip.
pub fn cluster() -> Option<&'static Cluster> {
    static CLUSTER: OnceLock<Option<Cluster>> = OnceLock::new();
    CLUSTER.get_or_init(start).as_ref()
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A client of the API server as the kubeconfig at `path` says (the cluster's admin one, or one
/// made for a ServiceAccount's token).
pub async fn kube_client(path: &Path) -> Result<kube::Client, String> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let options = kube::config::KubeConfigOptions::default();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    kube::Client::try_from(config).map_err(|e| e.to_string())
}

/// A `nudge rollout` started by a test, its stderr in a log file; killed (SIGKILL) on drop.
pub struct RolloutProcess {
    pub child: std::process::Child,
    pub log: PathBuf,
}

impl RolloutProcess {
    /// `nudge rollout --debounce 300ms ARGS... --kubeconfig KUBECONFIG` with
    /// `NUDGE_LOG=log_filter`, its stderr written to `log`.
    pub fn spawn(kubeconfig: &Path, args: &[&str], log_filter: &str, log: PathBuf) -> Self {
        let stderr = std::fs::File::create(&log).expect("create the controller's log");
        let child = Command::new(env!("CARGO_BIN_EXE_nudge"))
            .args(["rollout", "--debounce", "300ms"])
            .args(args)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .env("NUDGE_LOG", log_filter)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start nudge rollout");
        RolloutProcess { child, log }
    }

    /// Everything it has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for RolloutProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
