//! nudge in an emulated pod with `shareProcessNamespace: true`: PID 1 is the pause process,
//! the app and nudge are separate containers (own cgroups, PPID 0), and nudge finds the app
//! with no selector at all, as it would in Kubernetes.

mod support;

use support::pod::PodWithVolume;
use support::*;

#[test]
fn finds_the_app_container_with_no_selector() {
    let Some(f) = PodWithVolume::new() else {
        return;
    };
    let app = f.start_app();
    let nudge = f.start_nudge(&[]);
    f.volume.write(&[("app.conf", "v2")]);
    app.wait_reloads(1);
    assert_eq!(app.reloads()[0].1, "app.conf=v2");
    assert!(nudge
        .output()
        .iter()
        .any(|l| l.contains("sent SIGHUP to pid") && l.contains("(reload_app)")));
}

#[test]
fn a_kubectl_exec_shell_in_the_app_container_does_not_confuse_it() {
    let Some(f) = PodWithVolume::new() else {
        return;
    };
    let app = f.start_app();
    // `kubectl exec` leaves a second PPID-0 process in the app's cgroup; it is younger.
    let mut shell = f.pod.exec("app", &["sleep", "1000"], &[]);
    eventually("the exec'd shell to join the app container", || {
        f.pod.pids_in("app").len() == 2
    });
    let _nudge = f.start_nudge(&[]);
    f.volume.write(&[("app.conf", "v2")]);
    app.wait_reloads(1);
    settle_quietly();
    assert_eq!(app.reloads().len(), 1);
    assert!(
        shell.alive(),
        "the exec'd process was not signalled (SIGHUP would have killed it)"
    );
}

#[test]
fn two_other_containers_are_an_error_that_lists_both() {
    let Some(f) = PodWithVolume::new() else {
        return;
    };
    let app = f.start_app();
    let _redis = f.pod.exec("redis", &["sleep", "1000"], &[]);
    eventually("the second container to start", || {
        f.pod.pids_in("redis").len() == 1
    });
    let nudge = f.start_nudge(&[]);
    f.volume.write(&[("app.conf", "v2")]);
    nudge.wait_for("several containers' main processes found");
    let line = nudge
        .output()
        .into_iter()
        .find(|l| l.contains("several containers"))
        .unwrap_or_default();
    assert!(
        line.contains("(reload_app)")
            && line.contains("(sleep)")
            && line.contains("RELOAD_PROCESS"),
        "{line}"
    );
    assert_eq!(app.reloads().len(), 0);
    // Naming the process resolves it.
    drop(nudge);
    let _named = f.start_nudge(&[("RELOAD_PROCESS", "reload_app")]);
    f.volume.write(&[("app.conf", "v3")]);
    app.wait_reloads(1);
}
