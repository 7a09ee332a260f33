//! The `--config` YAML file under environment and flags: file < env < flag, for any setting,
//! and clear usage errors (exit 2) for unknown keys, bad values and unreadable files. The
//! effective settings are observed through `nudge check`, which prints them and acts on none.

mod support;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

fn check(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(support::nudge_bin())
        .arg("check")
        .args(args)
        .env_clear()
        .env("RELOAD_CONFIG", config)
        .envs(env.iter().copied())
        .output()
        .expect("run nudge check")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("nudge.yaml");
    fs::write(&path, text).expect("write config");
    path
}

#[test]
fn file_settings_apply_and_env_and_flags_override_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    let text = format!(
        "watch:\n  - {}\n  - {}\nsignal: USR1\nprocess: no-such-app-x\n",
        a.display(),
        b.display()
    );
    let config = write_config(dir.path(), &text);

    let from_file = stdout(&check(&config, &[], &[]));
    assert!(from_file.contains("signal SIGUSR1"), "{from_file}");
    assert!(
        from_file.contains(&format!("{}: missing", a.display())),
        "{from_file}"
    );
    assert!(
        from_file.contains(&format!("{}: missing", b.display())),
        "{from_file}"
    );
    assert!(from_file.contains("no-such-app-x"), "{from_file}");

    let from_env = stdout(&check(&config, &[], &[("RELOAD_SIGNAL", "USR2")]));
    assert!(
        from_env.contains("signal SIGUSR2"),
        "env beats file: {from_env}"
    );

    let from_flag = stdout(&check(
        &config,
        &["--signal", "HUP"],
        &[("RELOAD_SIGNAL", "USR2")],
    ));
    assert!(
        from_flag.contains("signal SIGHUP"),
        "flag beats env: {from_flag}"
    );
}

#[test]
fn the_config_flag_works_like_the_env_var() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "watch: /nonexistent-x\nsignal: '12'\n");
    let out = Command::new(support::nudge_bin())
        .args(["check", "--config"])
        .arg(&config)
        .env_clear()
        .output()
        .expect("run");
    assert!(stdout(&out).contains("signal SIGUSR2"), "{}", stdout(&out));
}

#[test]
fn an_unknown_key_is_a_usage_error_naming_key_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "watch: /x\n\nsginal: HUP\n");
    let out = check(&config, &[], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    for needle in [
        "\"sginal\"",
        "line 3",
        &config.display().to_string(),
        "signal",
    ] {
        assert!(err.contains(needle), "{needle} missing from {err}");
    }
}

#[test]
fn a_bad_value_from_the_file_names_the_flag_and_env_var() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "watch: /x\nresync: often\n");
    let out = check(&config, &[], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("--resync") && err.contains("RELOAD_RESYNC") && err.contains("often"),
        "{err}"
    );
}

#[test]
fn invalid_yaml_and_a_missing_file_are_usage_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "watch: [/x\n");
    let out = check(&config, &[], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("invalid YAML"), "{}", stderr(&out));

    let out = check(&dir.path().join("absent.yaml"), &[], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot read config file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_sidecar_reads_the_file_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        &format!(
            "watch: {}\nlisten: 127.0.0.1:0\nlog-format: json\n",
            dir.path().display()
        ),
    );
    let mut command = Command::new(support::nudge_bin());
    command.env_clear().env("RELOAD_CONFIG", &config);
    let nudge = support::Running::spawn(command);
    nudge.wait_for("\"admin server listening\"");
}
