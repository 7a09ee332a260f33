//! The image's promise without a container engine: the static binary (`make static`) runs as
//! UID 65532 in an empty root that holds only `/nudge`, the watched volume and `/proc`, exactly
//! what `FROM scratch` + `USER 65532:65532` gives it, and still watches a kubelet volume and
//! signals an app of the same UID in its PID namespace.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

use support::kubelet::KubeletVolume;
use support::*;

const UID: u32 = 65532;

fn static_binary() -> Option<PathBuf> {
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/x86_64-unknown-linux-gnu/release/nudge");
    if bin.exists() && nix::unistd::geteuid().is_root() {
        return Some(bin);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "the static binary is missing or not root in CI: run `make static` (make test does)"
    );
    eprintln!("skipping: run `make static` first, as root");
    None
}

fn open_permissions(path: &std::path::Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn static_binary_reloads_the_app_from_an_empty_root_as_uid_65532() {
    let Some(binary) = static_binary() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    open_permissions(dir.path(), 0o755);
    let volume = KubeletVolume::create(dir.path().join("config"), &[("app.yaml", "v: 1")]);

    // The image: nothing but the binary and the mount points.
    let root = dir.path().join("root");
    for mount_point in ["config", "proc"] {
        fs::create_dir_all(root.join(mount_point)).expect("mount point");
    }
    fs::copy(&binary, root.join("nudge")).expect("copy binary");
    let mut entries: Vec<String> = fs::read_dir(&root)
        .expect("read root")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(
        entries,
        ["config", "nudge", "proc"],
        "the root holds only what FROM scratch would"
    );

    let logs = dir.path().join("logs");
    fs::create_dir(&logs).expect("log dir");
    open_permissions(&logs, 0o777);
    let app_log = logs.join("app.log");
    let script = format!(
        "set -e
         mount -t proc proc {root}/proc
         mount --bind -o ro {volume} {root}/config
         setpriv --reuid {UID} --regid {UID} --clear-groups {app} --config {volume} --log {log} &
         while ! grep -q ready {log} 2>/dev/null; do sleep 0.01; done
         exec chroot --userspec={UID}:{UID} {root} /nudge --watch /config --process reload_app",
        root = root.display(),
        volume = volume.dir.display(),
        app = reload_app_bin().display(),
        log = app_log.display(),
    );
    let mut command = Command::new("unshare");
    command.args([
        "--pid",
        "--fork",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
    ]);
    command.env("RUST_LOG", "nudge=debug");
    let pod = Running::spawn(command);
    pod.wait_for("watching");

    let app = ReloadApp {
        process: Running::spawn(Command::new("true")),
        log: app_log,
    };
    volume.write(&[("app.yaml", "v: 2")]);
    app.wait_reloads(1);
    assert_eq!(app.reloads()[0].1, "app.yaml=v: 2");

    let nudge_uid = nudge_uid_in(&pod);
    assert_eq!(nudge_uid, Some(UID), "nudge ran as {UID}");
    // The namespace's PID 1 is the unshare'd shell turned nudge: SIGKILL ends the whole pod.
    kill_namespace(&pod);
}

/// The real UID of the nudge process inside the namespace (the child of `unshare`).
fn nudge_uid_in(pod: &Running) -> Option<u32> {
    let unshare = pod.pid();
    let children = fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children")).ok()?;
    let pid: i32 = children.split_whitespace().next()?.parse().ok()?;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn kill_namespace(pod: &Running) {
    let unshare = pod.pid();
    if let Ok(children) = fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children")) {
        for child in children
            .split_whitespace()
            .filter_map(|c| c.parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[test]
fn the_image_binary_refuses_an_https_webhook_and_names_the_tls_image() {
    let Some(binary) = static_binary() else {
        return;
    };
    let volume = tempfile::tempdir().expect("tempdir");
    let out = Command::new(binary)
        .args(["--watch", &volume.path().display().to_string()])
        .args([
            "--action",
            "webhook",
            "--webhook-url",
            "https://localhost:9090/-/reload",
        ])
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .expect("run the static binary");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("--webhook-url") && stderr.contains("-tls image"),
        "{stderr}"
    );
}
