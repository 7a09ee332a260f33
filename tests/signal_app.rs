//! The sidecar's main job, end to end: the real nudge binary watching real kubelet-style
//! volumes (written in the kubelet's exact sequence) and signalling a real app process.

mod support;

use std::fs;
use std::process::Command;

use nix::sys::signal::Signal;
use support::kubelet::{KubeletVolume, LinkOrder};
use support::*;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }
    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
    fn volume(&self, name: &str, payload: &[(&str, &str)]) -> KubeletVolume {
        KubeletVolume::create(self.path(name), payload)
    }
    fn app(&self, config: &str) -> ReloadApp {
        ReloadApp::start(&self.path(config), &self.path("app.log"))
    }
    fn nudge(&self, watch: &[&str], extra: &[&str]) -> Running {
        let regex = cmdline_regex(self.dir.path());
        let watch: Vec<String> = watch
            .iter()
            .map(|w| self.path(w).display().to_string())
            .collect();
        let mut args = vec![
            "--watch".to_owned(),
            watch.join(","),
            "--process-regex".into(),
            format!("reload_app.*{regex}"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        start_nudge(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }
}

#[test]
fn signals_app_once_per_configmap_change() {
    let f = Fixture::new();
    let volume = f.volume("config", &[("app.yaml", "v: 0")]);
    let app = f.app("config");
    let _nudge = f.nudge(&["config"], &[]);
    for n in 1..=5 {
        let content = format!("v: {n}");
        assert!(volume.write(&[("app.yaml", &content)]));
        app.wait_reloads(n);
        assert_eq!(
            app.reloads()[n - 1].1,
            format!("app.yaml={content}"),
            "the app saw the new content"
        );
    }
    settle_quietly();
    assert_eq!(app.reloads().len(), 5);
}

#[test]
fn startup_and_identical_rewrites_give_no_signal() {
    let f = Fixture::new();
    let volume = f.volume("config", &[("app.yaml", "same")]);
    let app = f.app("config");
    let nudge = f.nudge(&["config"], &[]);
    assert!(
        !volume.write(&[("app.yaml", "same")]),
        "the kubelet writes nothing when unchanged"
    );
    volume.rewrite_identical(&[("app.yaml", "same")]);
    nudge.wait_for("content unchanged");
    settle_quietly();
    assert_eq!(app.reloads().len(), 0);
}

#[test]
fn reload_on_start_signals_once_at_startup() {
    let f = Fixture::new();
    f.volume("config", &[("app.yaml", "x")]);
    let app = f.app("config");
    let _nudge = f.nudge(&["config"], &["--reload-on-start"]);
    app.wait_reloads(1);
    settle_quietly();
    assert_eq!(app.reloads().len(), 1);
}

#[test]
fn added_and_removed_keys_are_changes() {
    let f = Fixture::new();
    let volume = f.volume("config", &[("a", "1")]);
    let app = f.app("config");
    let nudge = f.nudge(&["config"], &[]);
    volume.write(&[("a", "1"), ("b", "2")]);
    app.wait_reloads(1);
    assert!(nudge
        .output()
        .iter()
        .any(|l| l.contains("content changed") && l.contains("added=[\"b\"]")));
    volume.write(&[("b", "2")]);
    app.wait_reloads(2);
    assert!(nudge.output().iter().any(|l| l.contains("removed=[\"a\"]")));
    assert_eq!(app.reloads()[1].1, "b=2");
    assert!(
        !f.path("config/a").exists(),
        "the writer removed the old top-level link"
    );
}

#[test]
fn each_of_two_volumes_counts() {
    let f = Fixture::new();
    let config = f.volume("config", &[("app.yaml", "1")]);
    let secret = f.volume("secret", &[("token", "s1")]);
    let app = f.app("config");
    let _nudge = f.nudge(&["config", "secret"], &[]);
    config.write(&[("app.yaml", "2")]);
    app.wait_reloads(1);
    secret.write(&[("token", "s2")]);
    app.wait_reloads(2);
    settle_quietly();
    assert_eq!(app.reloads().len(), 2);
}

#[test]
fn older_kubelet_link_order_works_too() {
    let f = Fixture::new();
    let mut volume = f.volume("config", &[("a", "1")]);
    volume.order = LinkOrder::BeforeSwap;
    let app = f.app("config");
    let _nudge = f.nudge(&["config"], &[]);
    volume.write(&[("a", "1"), ("new", "2")]);
    app.wait_reloads(1);
    settle_quietly();
    assert_eq!(app.reloads().len(), 1);
}

#[test]
fn target_restarted_under_a_new_pid_is_still_signalled() {
    let f = Fixture::new();
    let volume = f.volume("config", &[("a", "1")]);
    let first = f.app("config");
    let _nudge = f.nudge(&["config"], &[]);
    volume.write(&[("a", "2")]);
    first.wait_reloads(1);
    let old_pid = first.process.pid();
    drop(first);
    fs::remove_file(f.path("app.log")).expect("reset log");
    let second = f.app("config");
    assert_ne!(second.process.pid(), old_pid);
    volume.write(&[("a", "3")]);
    second.wait_reloads(1);
    assert_eq!(second.reloads()[0].1, "a=3");
}

#[test]
fn target_that_appears_late_is_signalled_once() {
    let f = Fixture::new();
    let volume = f.volume("config", &[("a", "1")]);
    let nudge = f.nudge(&["config"], &[]);
    volume.write(&[("a", "2")]);
    nudge.wait_for("reload failed; will retry");
    volume.write(&[("a", "3")]);
    let app = f.app("config");
    app.wait_reloads(1);
    settle_quietly();
    assert_eq!(
        app.reloads().len(),
        1,
        "two changes while the app was away: one reload"
    );
    assert_eq!(app.reloads()[0].1, "a=3");
}

#[test]
fn target_without_a_handler_is_not_signalled_and_stays_alive() {
    let f = Fixture::new();
    let volume = f.volume("config", &[("a", "1")]);
    // `sleep` has no SIGHUP handler: SIGHUP would kill it.
    std::os::unix::fs::symlink("/bin/sleep", f.path("sleeper")).expect("symlink");
    let mut sleeper = Running::spawn({
        let mut c = Command::new(f.path("sleeper"));
        c.arg("1000");
        c
    });
    let regex = format!("{}/sleeper", cmdline_regex(f.dir.path()));
    let watch = f.path("config").display().to_string();
    let nudge = start_nudge(&["--watch", &watch, "--process-regex", &regex]);
    volume.write(&[("a", "2")]);
    nudge.wait_for("neither catches nor ignores SIGHUP");
    settle_quietly();
    assert!(sleeper.alive(), "the app was not killed");
}

#[test]
fn app_that_installs_its_handler_late_is_signalled_once_it_has() {
    let f = Fixture::new();
    let volume = f.volume("config", &[("a", "1")]);
    let app = ReloadApp::start_with(
        &f.path("config"),
        &f.path("app.log"),
        &["--handler-after", "1500"],
    );
    let nudge = f.nudge(&["config"], &[]);
    volume.write(&[("a", "2")]);
    nudge.wait_for("neither catches nor ignores SIGHUP");
    app.wait_reloads(1);
    settle_quietly();
    assert_eq!(app.reloads().len(), 1);
}

#[test]
fn deleting_and_recreating_a_watched_volume_keeps_working() {
    let f = Fixture::new();
    let volume = f.volume("config", &[("a", "1")]);
    let app = f.app("config");
    let _nudge = f.nudge(&["config"], &[]);
    fs::remove_dir_all(&volume.dir).expect("delete volume");
    let volume = f.volume("config", &[("a", "2")]);
    app.wait_reloads(1);
    volume.write(&[("a", "3")]);
    app.wait_reloads(2);
    settle_quietly();
    assert_eq!(
        app.reloads().len(),
        2,
        "the deletion itself is not a reload"
    );
}

#[test]
fn a_path_that_does_not_exist_yet_is_waited_for() {
    let f = Fixture::new();
    fs::create_dir(f.path("config")).expect("app dir");
    let app = f.app("config");
    let nudge = f.nudge(&["later/deeper/config"], &[]);
    nudge.wait_for("does not exist yet");
    let volume = KubeletVolume::create(f.path("later/deeper/config"), &[("a", "1")]);
    app.wait_reloads(1);
    volume.write(&[("a", "2")]);
    app.wait_reloads(2);
}

#[test]
fn plain_directory_writes_renames_creates_and_deletes_are_changes() {
    let f = Fixture::new();
    let dir = f.path("plain");
    fs::create_dir(&dir).expect("mkdir");
    fs::write(dir.join("a.conf"), "1").expect("write");
    let app = f.app("plain");
    let _nudge = f.nudge(&["plain"], &["--settle", "50ms"]);
    fs::write(dir.join("a.conf"), "2").expect("in-place write");
    app.wait_reloads(1);
    fs::write(dir.join(".tmp"), "3").expect("temp");
    fs::rename(dir.join(".tmp"), dir.join("a.conf")).expect("rename over");
    app.wait_reloads(2);
    fs::write(dir.join("b.conf"), "new").expect("create");
    app.wait_reloads(3);
    fs::remove_file(dir.join("b.conf")).expect("delete");
    app.wait_reloads(4);
    fs::create_dir(dir.join("nested")).expect("nested dir");
    fs::write(dir.join("nested/c.conf"), "deep").expect("nested write");
    app.wait_reloads(5);
    settle_quietly();
    assert_eq!(app.reloads().len(), 5);
}

#[test]
fn a_single_file_is_watched_through_rename_over() {
    let f = Fixture::new();
    fs::create_dir(f.path("etc")).expect("mkdir");
    let file = f.path("etc/app.conf");
    fs::write(&file, "1").expect("write");
    let app = f.app("etc");
    let _nudge = f.nudge(&["etc/app.conf"], &["--settle", "50ms"]);
    fs::write(f.path("etc/other"), "not watched").expect("sibling");
    fs::write(f.path("etc/.app.conf.tmp"), "2").expect("temp");
    fs::rename(f.path("etc/.app.conf.tmp"), &file).expect("rename over");
    app.wait_reloads(1);
    fs::write(&file, "3").expect("in place");
    app.wait_reloads(2);
    settle_quietly();
    assert_eq!(app.reloads().len(), 2);
}

#[test]
fn sigterm_stops_nudge_cleanly_within_a_second() {
    let f = Fixture::new();
    f.volume("config", &[("a", "1")]);
    let mut nudge = f.nudge(&["config"], &[]);
    let started = std::time::Instant::now();
    nudge.signal(Signal::SIGTERM);
    let status = nudge.wait_exit();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_directory_replaced_by_rename_keeps_working() {
    let f = Fixture::new();
    let dir = f.path("plain");
    fs::create_dir(&dir).expect("mkdir");
    fs::write(dir.join("a.conf"), "1").expect("write");
    let app = f.app("plain");
    let _nudge = f.nudge(&["plain"], &["--settle", "50ms"]);
    let staged = f.path("staged");
    fs::create_dir(&staged).expect("mkdir staged");
    fs::write(staged.join("a.conf"), "2").expect("write staged");
    fs::rename(&dir, f.path("old")).expect("move away");
    fs::rename(&staged, &dir).expect("move in");
    app.wait_reloads(1);
    fs::write(dir.join("a.conf"), "3").expect("write into the new directory");
    app.wait_reloads(2);
    settle_quietly();
    assert_eq!(app.reloads().len(), 2);
}
