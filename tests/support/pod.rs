//! A pod with `shareProcessNamespace: true`, emulated without a container runtime (see
//! shared/kubelet-volumes.md, "Emulating a pod"): a PID namespace whose PID 1 only waits (the
//! pause process), and "containers" entered into it with nsenter, each in its own cgroup v2
//! group. Inside, every container's first process has PPID 0, as in a real pod.
//! Needs root; `Pod::new` returns `None` (and the test skips) where that is impossible, except
//! in CI (`CI=true`), where it fails instead.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{eventually, Running};

static PODS: AtomicU32 = AtomicU32::new(0);

/// An emulated pod: its pause process and its cgroup directory.
pub struct Pod {
    /// The pause process as seen from the host (the `unshare` that forks PID 1).
    pause: Running,
    /// Host PID of the namespace's PID 1.
    pid1: i32,
    /// The pod's cgroup v2 directory; one subdirectory per container.
    cgroup: PathBuf,
}

/// The cgroup v2 hierarchy: `/sys/fs/cgroup/unified` on hybrid hosts, else `/sys/fs/cgroup`.
fn cgroup_v2_root() -> Option<PathBuf> {
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.procs").exists())
}

impl Pod {
    /// Starts the pod's pause process. `None` when this machine cannot emulate pods.
    pub fn new() -> Option<Pod> {
        let reason = if !nix::unistd::geteuid().is_root() {
            Some("not root")
        } else if cgroup_v2_root().is_none() {
            Some("no cgroup v2 hierarchy")
        } else {
            None
        };
        if let Some(reason) = reason {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "pod emulation impossible in CI: {reason}"
            );
            eprintln!("skipping: cannot emulate a pod here ({reason})");
            return None;
        }
        let root = cgroup_v2_root()?;
        let n = PODS.fetch_add(1, Ordering::Relaxed);
        let cgroup = root.join(format!("nudge-test-pod-{}-{n}", std::process::id()));
        fs::create_dir_all(cgroup.join("pause")).expect("create pod cgroup");
        let mut command = Command::new("sh");
        command.arg("-c").arg(format!(
            "echo $$ > {}/pause/cgroup.procs && exec unshare --pid --fork --mount-proc sleep infinity",
            cgroup.display()
        ));
        let pause = Running::spawn(command);
        let unshare = pause.pid();
        let mut pid1 = 0;
        eventually("the pod's PID 1 to start", || {
            pid1 = child_of(unshare).unwrap_or(0);
            pid1 != 0
        });
        Some(Pod {
            pause,
            pid1,
            cgroup,
        })
    }

    /// Starts a container's main process: `argv` entered into the pod's PID and mount
    /// namespaces, in the cgroup `<pod>/<container>`.
    pub fn exec(&self, container: &str, argv: &[&str], env: &[(&str, &str)]) -> Running {
        let group = self.cgroup.join(container);
        fs::create_dir_all(&group).expect("create container cgroup");
        let quoted: Vec<String> = argv.iter().map(|a| shell_quote(a)).collect();
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--target={}", self.pid1))
            .args(["--pid", "--mount", "--", "sh", "-c"])
            .arg(format!(
                "echo $$ > {}/cgroup.procs && exec {}",
                group.display(),
                quoted.join(" ")
            ))
            .envs(env.iter().copied());
        let mut running = Running::spawn(command);
        let launcher = running.pid();
        eventually("the container process to start", || {
            running.inner = child_of(launcher);
            running.inner.is_some()
        });
        running
    }

    /// The PIDs of `container`'s processes, as seen inside the pod.
    pub fn pids_in(&self, container: &str) -> Vec<i32> {
        fs::read_to_string(self.cgroup.join(container).join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        // PID 1 of a PID namespace ignores signals it has no handler for; SIGKILL from outside
        // ends it, and the kernel then kills every process of the namespace.
        let _ = kill(Pid::from_raw(self.pid1), Signal::SIGKILL);
        let _ = self.pause.wait_exit();
        for entry in fs::read_dir(&self.cgroup).into_iter().flatten().flatten() {
            if entry.path().is_dir() {
                let procs = entry.path().join("cgroup.procs");
                eventually("container cgroup to empty", || {
                    fs::read_to_string(&procs)
                        .map(|s| s.trim().is_empty())
                        .unwrap_or(true)
                });
                let _ = fs::remove_dir(entry.path());
            }
        }
        let _ = fs::remove_dir(&self.cgroup);
    }
}

fn child_of(parent: i32) -> Option<i32> {
    let children = fs::read_to_string(format!("/proc/{parent}/task/{parent}/children")).ok()?;
    children.split_whitespace().next()?.parse().ok()
}

fn shell_quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// Host path of a file for the pod (the pod shares the host's filesystem).
pub fn in_pod(path: &Path) -> String {
    path.display().to_string()
}

/// A pod with one kubelet-style ConfigMap volume (`app.conf=v1`), into which tests start the
/// app container and nudge's container.
pub struct PodWithVolume {
    pub dir: tempfile::TempDir,
    pub pod: Pod,
    pub volume: super::kubelet::KubeletVolume,
}

impl PodWithVolume {
    /// The pod, or `None` where pods cannot be emulated (see `Pod::new`).
    pub fn new() -> Option<PodWithVolume> {
        let dir = tempfile::tempdir().expect("tempdir");
        let pod = Pod::new()?;
        let volume =
            super::kubelet::KubeletVolume::create(dir.path().join("config"), &[("app.conf", "v1")]);
        Some(PodWithVolume { dir, pod, volume })
    }

    /// Starts the app container, the reload app as its main process (as the kubelet starts
    /// it), and waits for its SIGHUP handler. `log` is where it records its reloads.
    pub fn start_app(&self) -> super::ReloadApp {
        let log = self.dir.path().join("app.log");
        let _ = fs::remove_file(&log);
        let bin = super::reload_app_bin().display().to_string();
        let config = in_pod(&self.volume.dir);
        let process = self.exec(
            "app",
            &[&bin, "--config", &config, "--log", &in_pod(&log)],
            &[],
        );
        eventually("the app to install its SIGHUP handler", || {
            fs::read_to_string(&log)
                .unwrap_or_default()
                .starts_with("ready ")
        });
        super::ReloadApp { process, log }
    }

    /// Starts nudge's container watching the volume, with `env` added, and waits until it
    /// watches. Emulated pods share the host network, so each nudge takes a free admin port.
    pub fn start_nudge(&self, env: &[(&str, &str)]) -> Running {
        let watch = self.volume.dir.display().to_string();
        let mut vars = vec![
            ("RELOAD_WATCH", watch.as_str()),
            ("RUST_LOG", "nudge=debug"),
            ("RELOAD_LISTEN", "127.0.0.1:0"),
        ];
        vars.extend_from_slice(env);
        let nudge = self.exec("nudge", &[&super::nudge_bin().display().to_string()], &vars);
        nudge.wait_for("watching");
        nudge
    }

    fn exec(&self, container: &str, argv: &[&str], env: &[(&str, &str)]) -> Running {
        self.pod.exec(container, argv, env)
    }
}
