//! Bad input on the command line or in the environment: one clear line naming the flag and
//! its environment variable, and exit code 2, before anything starts.

mod support;

use std::process::{Command, Output};

fn nudge(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(support::nudge_bin());
    command.args(args).env_clear().envs(env.iter().copied());
    command.output().expect("run nudge")
}

fn assert_usage_error(output: &Output, mentions: &[&str]) {
    assert_eq!(output.status.code(), Some(2), "exit code");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line, got: {stderr}");
    for needle in mentions {
        assert!(
            lines[0].contains(needle),
            "{needle:?} missing from {:?}",
            lines[0]
        );
    }
}

#[test]
fn unknown_signal_names_the_flag_and_env_var() {
    let out = nudge(&["--watch", "/tmp"], &[("RELOAD_SIGNAL", "SIGFOO")]);
    assert_usage_error(&out, &["--signal", "RELOAD_SIGNAL", "SIGFOO"]);
}

#[test]
fn bad_regex_names_the_flag_and_env_var() {
    let out = nudge(&["--watch", "/tmp", "--process-regex", "nginx("], &[]);
    assert_usage_error(&out, &["--process-regex", "RELOAD_PROCESS_REGEX", "nginx("]);
}

#[test]
fn empty_watch_list_is_a_usage_error() {
    let out = nudge(&[], &[("RELOAD_WATCH", ",")]);
    assert_usage_error(&out, &["--watch", "RELOAD_WATCH"]);
}

#[test]
fn conflicting_selectors_are_a_usage_error() {
    let out = nudge(
        &["--watch", "/tmp"],
        &[
            ("RELOAD_PROCESS", "nginx"),
            ("RELOAD_PID_FILE", "/run/nginx.pid"),
        ],
    );
    assert_usage_error(&out, &["RELOAD_PROCESS", "RELOAD_PID_FILE", "at most one"]);
}

#[test]
fn bad_duration_names_the_flag_and_env_var() {
    let out = nudge(&["--watch", "/tmp"], &[("RELOAD_RESYNC", "often")]);
    assert_usage_error(&out, &["--resync", "RELOAD_RESYNC", "often"]);
}

#[test]
fn a_missing_pid_file_or_watch_path_is_not_invalid_input() {
    let mut child = Command::new(support::nudge_bin())
        .args([
            "--watch",
            "/nonexistent/for/now",
            "--pid-file",
            "/nonexistent/app.pid",
        ])
        .env("RELOAD_LISTEN", "127.0.0.1:0")
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "nudge keeps running and waits"
    );
    let _ = child.kill();
    let _ = child.wait();
}
