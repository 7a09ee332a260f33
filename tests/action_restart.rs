//! The restart action in an emulated pod (shared PID namespace, one cgroup per container): the
//! container's main process is ended, gracefully or after the grace period, and the
//! restarted container is reported with its new PID.

mod support;

use std::time::{Duration, Instant};

use support::pod::{in_pod, PodWithVolume};
use support::*;

#[test]
fn restart_ends_the_app_container_and_reports_the_new_pid_and_the_downtime() {
    let Some(f) = PodWithVolume::new() else {
        return;
    };
    let mut app = f.start_app();
    let nudge = f.start_nudge(&[("RELOAD_ACTION", "restart")]);
    f.volume.write(&[("app.conf", "v2")]);
    app.process.wait_exit();
    nudge.wait_for("reloaded");
    let reloaded = nudge
        .output()
        .into_iter()
        .find(|l| l.contains("reloaded"))
        .unwrap_or_default();
    assert!(
        reloaded.contains("sent SIGTERM to pid")
            && reloaded.contains("(reload_app)")
            && reloaded.contains("it exited after"),
        "{reloaded}"
    );
    // The kubelet starts the container again.
    let _restarted = f.start_app();
    nudge.wait_for("app restarted");
    let line = nudge
        .output()
        .into_iter()
        .find(|l| l.contains("app restarted"))
        .unwrap_or_default();
    assert!(
        line.contains("old_pid=") && line.contains("new_pid=") && line.contains("downtime="),
        "{line}"
    );
    assert_eq!(
        nudge.count("CrashLoopBackOff"),
        0,
        "the first restart warns of nothing"
    );
}

#[test]
fn a_second_restart_within_ten_minutes_warns_of_crash_loop_backoff() {
    let Some(f) = PodWithVolume::new() else {
        return;
    };
    let mut app = f.start_app();
    let nudge = f.start_nudge(&[("RELOAD_ACTION", "restart")]);
    f.volume.write(&[("app.conf", "v2")]);
    app.process.wait_exit();
    let mut again = f.start_app();
    nudge.wait_for("app restarted");
    f.volume.write(&[("app.conf", "v3")]);
    again.process.wait_exit();
    nudge.wait_for("CrashLoopBackOff");
    let warning = nudge
        .output()
        .into_iter()
        .find(|l| l.contains("CrashLoopBackOff"))
        .unwrap_or_default();
    assert!(
        warning.contains("WARN") && warning.contains("restartCount"),
        "{warning}"
    );
}

#[test]
fn an_app_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let Some(f) = PodWithVolume::new() else {
        return;
    };
    let mut app = f.pod.exec(
        "app",
        &["sh", "-c", "trap '' TERM; while :; do sleep 0.05; done"],
        &[],
    );
    let nudge = f.start_nudge(&[("RELOAD_ACTION", "restart"), ("RELOAD_GRACE", "700ms")]);
    let started = Instant::now();
    f.volume.write(&[("app.conf", "v2")]);
    app.wait_exit();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(700),
        "ended after {took:?}, before the grace"
    );
    nudge.wait_for("reloaded");
    let reloaded = nudge
        .output()
        .into_iter()
        .find(|l| l.contains("reloaded"))
        .unwrap_or_default();
    assert!(
        reloaded.contains("(sh)") && reloaded.contains("sent SIGKILL"),
        "{reloaded}"
    );
}

#[test]
fn when_the_matched_process_is_a_worker_its_container_main_process_is_ended() {
    let Some(f) = PodWithVolume::new() else {
        return;
    };
    let log = f.dir.path().join("app.log");
    let bin = reload_app_bin().display().to_string();
    let config = in_pod(&f.volume.dir);
    // The container's main process is a shell; the app runs under it.
    let script = format!(
        "'{bin}' --config '{config}' --log '{}' & wait",
        in_pod(&log)
    );
    let mut container = f.pod.exec("app", &["sh", "-c", &script], &[]);
    eventually("the app to start", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .starts_with("ready ")
    });
    let nudge = f.start_nudge(&[
        ("RELOAD_ACTION", "restart"),
        ("RELOAD_PROCESS", "reload_app"),
    ]);
    f.volume.write(&[("app.conf", "v2")]);
    container.wait_exit();
    nudge.wait_for("reloaded");
    let reloaded = nudge
        .output()
        .into_iter()
        .find(|l| l.contains("reloaded"))
        .unwrap_or_default();
    assert!(
        reloaded.contains("(sh), the container's main process"),
        "the shell, not the matched reload_app, was ended: {reloaded}"
    );
}
