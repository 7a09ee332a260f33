//! `nudge check` against real things: a subPath-like bind mount of a single file inside an
//! unshare'd mount namespace, a real app to signal, a missing target, and a UID that may not
//! signal the app. Bind mounts need root: those tests skip elsewhere (and fail in CI).

mod support;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::kubelet::KubeletVolume;
use support::*;

fn can_mount() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "nudge check's mount tests need root in CI"
        );
        eprintln!("skipping: bind mounts need root");
    }
    root
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `nudge check ARGS` in a new mount namespace after `mount --bind source target`.
fn check_with_bind_mount(source: &Path, target: &Path, args: &[&str]) -> Output {
    let script = r#"mount --bind "$1" "$2" && shift 2 && exec "$@""#;
    Command::new("unshare")
        .args(["--mount", "sh", "-c", script, "sh"])
        .arg(source)
        .arg(target)
        .arg(nudge_bin())
        .arg("check")
        .args(args)
        .env_clear()
        .output()
        .expect("run unshare")
}

/// A kubelet-like ConfigMap volume under `.../volumes/kubernetes.io~configmap/NAME`; returns
/// the path of `key` inside its current generation, as a subPath mount would see it.
fn kubelet_configmap(root: &Path, key: &str) -> PathBuf {
    let volume = root.join("pods/uid-1/volumes/kubernetes.io~configmap/app-config");
    let generation = volume.join("..2026_11_28_10_00_00.000000001");
    fs::create_dir_all(&generation).expect("create generation");
    fs::write(generation.join(key), "v1").expect("write key");
    symlink("..2026_11_28_10_00_00.000000001", volume.join("..data")).expect("..data");
    symlink(format!("..data/{key}"), volume.join(key)).expect("key link");
    generation.join(key)
}

#[test]
fn a_watched_subpath_mount_of_a_configmap_never_updates_and_fails_the_check() {
    if !can_mount() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let source = kubelet_configmap(dir.path(), "app.conf");
    let app_dir = dir.path().join("etc/app");
    fs::create_dir_all(&app_dir).expect("mkdir");
    let target = app_dir.join("app.conf");
    fs::write(&target, "").expect("mount point");
    let watch = target.display().to_string();

    let out = check_with_bind_mount(&source, &target, &["--watch", &watch, "--process", "x"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("{watch}: subPath mount of a ConfigMap volume")),
        "{text}"
    );
    assert!(
        text.contains("kubernetes.io~configmap/app-config/..2026"),
        "{text}"
    );
    assert!(
        text.contains(&format!("PROBLEM: {watch} is watched but can never change")),
        "{text}"
    );
}

#[test]
fn a_watched_file_bind_mounted_without_data_beside_it_fails_the_check() {
    if !can_mount() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("elsewhere.conf");
    fs::write(&source, "v1").expect("source");
    let target = dir.path().join("app.conf");
    fs::write(&target, "").expect("mount point");
    let watch = target.display().to_string();
    let out = check_with_bind_mount(&source, &target, &["--watch", &watch, "--process", "x"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("{watch}: single file bind-mounted on its own")),
        "{text}"
    );
}

#[test]
fn a_whole_volume_and_a_signallable_app_pass_the_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let volume = KubeletVolume::create(dir.path().join("config"), &[("app.conf", "v1")]);
    let app = ReloadApp::start(&volume.dir.join("app.conf"), &dir.path().join("app.log"));
    let watch = volume.dir.display().to_string();
    let out = Command::new(nudge_bin())
        .args(["check", "--watch", &watch, "--process-regex"])
        .arg(cmdline_regex(dir.path()))
        .env_clear()
        .output()
        .expect("run nudge check");
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains(&format!("{watch}: kubelet volume")), "{text}");
    assert!(
        text.contains(&format!("pid {}", app.process.pid())),
        "{text}"
    );
    assert!(text.contains("may signal it"), "{text}");
    assert!(text.contains("OK: the sidecar would work"), "{text}");
}

#[test]
fn no_running_target_fails_the_check_and_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(nudge_bin())
        .args(["check", "--watch"])
        .arg(dir.path())
        .args(["--process", "no-such-app-z"])
        .env_clear()
        .output()
        .expect("run nudge check");
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("PROBLEM: no process named \"no-such-app-z\""),
        "{text}"
    );
}

#[test]
fn another_uid_without_cap_kill_is_told_how_to_fix_it() {
    if !can_mount() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let volume = KubeletVolume::create(dir.path().join("config"), &[("app.conf", "v1")]);
    let app = ReloadApp::start(&volume.dir.join("app.conf"), &dir.path().join("app.log"));
    // nobody, with no capabilities left, checks an app that runs as root.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(nudge_bin())
        .args(["check", "--watch", "/", "--process-regex"])
        .arg(cmdline_regex(dir.path()))
        .env_clear()
        .output()
        .expect("run setpriv");
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!("may not signal pid {}", app.process.pid())),
        "{text}"
    );
    assert!(
        text.contains("runAsUser: 0") && text.contains("KILL"),
        "{text}"
    );
}

#[test]
fn help_groups_flags_names_env_vars_and_shows_examples() {
    for args in [&["--help"][..], &["help", "check"]] {
        let out = Command::new(nudge_bin())
            .args(args)
            .env_clear()
            .output()
            .expect("run nudge");
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(0), "{text}");
        for needle in [
            "Watching:",
            "Target:",
            "Admin server:",
            "[env: RELOAD_LISTEN=]",
            "[default: :9533]",
            "Examples:",
        ] {
            assert!(
                text.contains(needle),
                "{needle} missing from {args:?}:\n{text}"
            );
        }
    }
}
