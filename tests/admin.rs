//! The admin server of a real nudge on a real port (`--listen 127.0.0.1:0`; the bound address
//! is read from nudge's log), asked with a real HTTP client: health, readiness that follows the
//! target process both ways, metrics after real reloads checked by `promtool check metrics`,
//! and JSON log lines carrying the fields of every reload.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use support::kubelet::KubeletVolume;
use support::*;

/// One HTTP/1.1 GET; returns the status code and body.
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the admin server");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .expect("a header/body split");
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    (code, body.to_owned())
}

/// The admin address nudge logged (text or JSON log format).
fn admin_addr(nudge: &Running) -> String {
    nudge.wait_for("admin server listening");
    let line = nudge
        .output()
        .into_iter()
        .find(|l| l.contains("admin server listening"))
        .expect("the listening line");
    let start = line.find("127.0.0.1:").expect("an address in the line");
    line[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
        .collect()
}

fn start(args: &[&str]) -> (Running, String) {
    let nudge = start_nudge(args);
    let addr = admin_addr(&nudge);
    (nudge, addr)
}

#[test]
fn healthz_is_ok_and_unknown_paths_are_404() {
    let dir = tempfile::tempdir().expect("tempdir");
    let volume = KubeletVolume::create(dir.path().join("config"), &[("app.conf", "v1")]);
    let watch = volume.dir.display().to_string();
    let (_nudge, addr) = start(&["--watch", &watch, "--process", "no-such-app"]);
    assert_eq!(get(&addr, "/healthz"), (200, "ok\n".to_owned()));
    assert_eq!(get(&addr, "/nope").0, 404);
}

#[test]
fn readyz_follows_the_target_process_both_ways_and_says_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let volume = KubeletVolume::create(dir.path().join("config"), &[("app.conf", "v1")]);
    let watch = volume.dir.display().to_string();
    let regex = cmdline_regex(dir.path());
    let (_nudge, addr) = start(&["--watch", &watch, "--process-regex", &regex]);

    let (code, body) = get(&addr, "/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("FAIL target:"), "{body}");
    assert!(body.contains("ok   watching:"), "{body}");

    let mut app = ReloadApp::start(&volume.dir.join("app.conf"), &dir.path().join("app.log"));
    eventually("/readyz to turn 200 once the app runs", || {
        get(&addr, "/readyz").0 == 200
    });

    app.process.signal(nix::sys::signal::Signal::SIGKILL);
    app.process.wait_exit();
    eventually("/readyz to drop back to 503 once the app is gone", || {
        let (code, body) = get(&addr, "/readyz");
        code == 503 && body.contains("FAIL target:")
    });
}

#[test]
fn readyz_is_unready_while_a_watched_path_is_missing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("not-yet");
    let watch = missing.display().to_string();
    let (_nudge, addr) = start(&["--watch", &watch, "--process-regex", "."]);
    let (code, body) = get(&addr, "/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("FAIL volumes:") && body.contains("not-yet"),
        "{body}"
    );
    KubeletVolume::create(&missing, &[("k", "v")]);
    eventually("/readyz to turn 200 once the path exists", || {
        get(&addr, "/readyz").0 == 200
    });
}

#[test]
fn metrics_after_real_reloads_count_them_and_pass_promtool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let volume = KubeletVolume::create(dir.path().join("config"), &[("app.conf", "v1")]);
    let app = ReloadApp::start(&volume.dir.join("app.conf"), &dir.path().join("app.log"));
    let watch = volume.dir.display().to_string();
    let regex = cmdline_regex(dir.path());
    let (_nudge, addr) = start(&["--watch", &watch, "--process-regex", &regex]);

    volume.write(&[("app.conf", "v2")]);
    app.wait_reloads(1);
    volume.write(&[("app.conf", "v3")]);
    app.wait_reloads(2);

    let reloads = r#"nudge_reloads_total{action="signal",outcome="success"} 2"#;
    eventually("two successful reloads in /metrics", || {
        get(&addr, "/metrics").1.contains(reloads)
    });
    let (code, metrics) = get(&addr, "/metrics");
    assert_eq!(code, 200);
    for needle in [
        format!(r#"nudge_changes_total{{volume="{watch}"}} 2"#),
        format!(r#"nudge_config_info{{volume="{watch}",hash="#),
        "nudge_reload_duration_seconds_count 2".to_owned(),
        "nudge_target_found 1".to_owned(),
        "nudge_watching 1".to_owned(),
        "nudge_build_info{version=".to_owned(),
    ] {
        assert!(
            metrics.contains(&needle),
            "{needle} missing from:\n{metrics}"
        );
    }
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.starts_with("nudge_"), "not under nudge_: {line}");
    }
    promtool_check(&metrics);
}

/// `promtool check metrics` on the text; fails in CI without promtool, skips elsewhere.
fn promtool_check(metrics: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "promtool is needed in CI (apt-get install prometheus): {e}"
            );
            eprintln!("skipping promtool check: promtool not found ({e})");
            return;
        }
    };
    child
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(metrics.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn json_logs_are_json_lines_and_reload_lines_carry_the_reload_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let volume = KubeletVolume::create(
        dir.path().join("config"),
        &[("app.conf", "v1"), ("password", "hunter2")],
    );
    let app = ReloadApp::start(&volume.dir.join("app.conf"), &dir.path().join("app.log"));
    let watch = volume.dir.display().to_string();
    let regex = cmdline_regex(dir.path());
    let (nudge, _addr) = start(&[
        "--watch",
        &watch,
        "--process-regex",
        &regex,
        "--log-format",
        "json",
    ]);
    volume.write(&[("app.conf", "v2"), ("password", "s3cret-value")]);
    app.wait_reloads(1);
    nudge.wait_for("\"reloaded\"");

    let lines: Vec<serde_json::Value> = nudge
        .output()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let reloaded = lines
        .iter()
        .find(|l| l["message"] == "reloaded")
        .expect("a reloaded line");
    // Fields of the event itself, plus those of the reload span it was logged in.
    let mut fields = reloaded.as_object().expect("an object").clone();
    if let Some(span) = reloaded.get("span").and_then(|s| s.as_object()) {
        fields.extend(span.clone());
    }
    for name in [
        "volume",
        "keys",
        "target_pid",
        "target_name",
        "action",
        "outcome",
        "elapsed_ms",
    ] {
        assert!(fields.contains_key(name), "{name} missing from {reloaded}");
    }
    assert_eq!(fields["outcome"], "success");
    assert_eq!(fields["target_pid"], app.process.pid());
    let all = nudge.output().join("\n");
    assert!(all.contains("password"), "key names are logged");
    assert!(
        !all.contains("hunter2") && !all.contains("s3cret-value"),
        "secret contents are never logged"
    );
}

#[test]
fn sigterm_stops_nudge_and_its_admin_server_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let volume = KubeletVolume::create(dir.path().join("config"), &[("app.conf", "v1")]);
    let watch = volume.dir.display().to_string();
    let (mut nudge, addr) = start(&["--watch", &watch, "--process", "no-such-app"]);
    assert_eq!(get(&addr, "/healthz").0, 200);
    nudge.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(nudge.wait_exit().code(), Some(0));
    assert!(TcpStream::connect(&addr).is_err(), "the port is closed");
}

#[test]
fn a_port_already_taken_is_a_runtime_failure_naming_the_flag() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = Command::new(nudge_bin())
        .args(["--watch", "/tmp", "--listen", &addr])
        .output()
        .expect("run nudge");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--listen") && stderr.contains(&addr),
        "{stderr}"
    );
}
