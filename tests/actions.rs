//! The webhook and exec actions, the validation gate and coalescing, end to end: the real
//! nudge binary, kubelet-style volumes, a real local HTTP server and real commands.

mod support;

use std::fs;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::http::{HttpServer, Reply};
use support::kubelet::KubeletVolume;
use support::*;

struct Fixture {
    dir: tempfile::TempDir,
    volume: KubeletVolume,
}

impl Fixture {
    fn new(payload: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let volume = KubeletVolume::create(dir.path().join("config"), payload);
        Fixture { dir, volume }
    }

    fn watch(&self) -> String {
        self.volume.dir.display().to_string()
    }

    fn nudge(&self, args: &[&str]) -> Running {
        let watch = self.watch();
        let mut all = vec!["--watch", &watch];
        all.extend_from_slice(args);
        start_nudge(&all)
    }
}

fn lines_with(nudge: &Running, needle: &str) -> Vec<String> {
    nudge
        .output()
        .into_iter()
        .filter(|l| l.contains(needle))
        .collect()
}

#[test]
fn webhook_posts_once_per_change_with_the_configured_headers() {
    let f = Fixture::new(&[("a", "1")]);
    let server = HttpServer::start(&[], Reply::Status(200));
    let url = server.url("/-/reload");
    let nudge = f.nudge(&[
        "--action",
        "webhook",
        "--webhook-url",
        &url,
        "--webhook-header",
        "X-Reason: config changed",
    ]);
    f.volume.write(&[("a", "2")]);
    server.wait_for_requests(1);
    nudge.wait_for("reloaded");
    settle_quietly();
    let seen = server.seen();
    assert_eq!(seen.len(), 1, "one change, one request");
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("POST", "/-/reload")
    );
    assert_eq!(seen[0].header("x-reason"), Some("config changed"));
    let reloaded = lines_with(&nudge, "reloaded");
    assert!(
        reloaded[0].contains("200 OK") && reloaded[0].contains("attempt=1"),
        "{}",
        reloaded[0]
    );
}

#[test]
fn webhook_retries_a_500_until_the_server_answers_200() {
    let f = Fixture::new(&[("a", "1")]);
    let server = HttpServer::start(
        &[Reply::Status(500), Reply::Status(500)],
        Reply::Status(200),
    );
    let url = server.url("/reload");
    let nudge = f.nudge(&["--action", "webhook", "--webhook-url", &url]);
    f.volume.write(&[("a", "2")]);
    nudge.wait_for("reloaded");
    settle_quietly();
    let seen = server.seen();
    assert_eq!(seen.len(), 3, "two failures, one success, nothing after");
    let failures = lines_with(&nudge, "reload failed; will retry");
    assert_eq!(failures.len(), 2);
    assert!(
        failures[0].contains("status 500 Internal Server Error, expected 2xx"),
        "{}",
        failures[0]
    );
    // Backoff: 500 ms doubling, each jittered to between half and all of it.
    let gaps: Vec<Duration> = seen.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(gaps[0] >= Duration::from_millis(250), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(500), "{gaps:?}");
}

#[test]
fn webhook_that_hangs_times_out_and_is_retried() {
    let f = Fixture::new(&[("a", "1")]);
    let server = HttpServer::start(&[Reply::Hang], Reply::Status(200));
    let url = server.url("/reload");
    let nudge = f.nudge(&[
        "--action",
        "webhook",
        "--webhook-url",
        &url,
        "--webhook-timeout",
        "300ms",
    ]);
    let started = Instant::now();
    f.volume.write(&[("a", "2")]);
    nudge.wait_for("reloaded");
    assert!(started.elapsed() >= Duration::from_millis(300));
    let failure = lines_with(&nudge, "reload failed").join("\n");
    assert!(failure.contains("no response within 300ms"), "{failure}");
    assert_eq!(server.count(), 2);
}

#[test]
fn webhook_connection_closed_without_a_response_is_retried() {
    let f = Fixture::new(&[("a", "1")]);
    let server = HttpServer::start(&[Reply::Close], Reply::Status(200));
    let url = server.url("/reload");
    let nudge = f.nudge(&["--action", "webhook", "--webhook-url", &url]);
    f.volume.write(&[("a", "2")]);
    nudge.wait_for("reloaded");
    assert_eq!(lines_with(&nudge, "reload failed; will retry").len(), 1);
    assert_eq!(server.count(), 2);
}

#[test]
fn webhook_status_outside_the_expected_one_is_a_failure() {
    let f = Fixture::new(&[("a", "1")]);
    let server = HttpServer::start(&[Reply::Status(200)], Reply::Status(204));
    let url = server.url("/reload");
    let nudge = f.nudge(&[
        "--action",
        "webhook",
        "--webhook-url",
        &url,
        "--webhook-status",
        "204",
        "--webhook-method",
        "put",
    ]);
    f.volume.write(&[("a", "2")]);
    nudge.wait_for("reloaded");
    let failure = lines_with(&nudge, "reload failed").join("\n");
    assert!(
        failure.contains("PUT") && failure.contains("status 200 OK, expected 204"),
        "{failure}"
    );
    assert_eq!(server.count(), 2);
    assert!(server.seen().iter().all(|r| r.method == "PUT"));
}

#[test]
fn webhook_credentials_become_basic_auth_and_the_password_never_appears_in_logs() {
    let f = Fixture::new(&[("a", "1")]);
    let server = HttpServer::start(&[Reply::Status(401)], Reply::Status(200));
    let url = format!("http://admin:hunter2@127.0.0.1:{}/-/reload", server.port);
    let nudge = f.nudge(&[
        "--action",
        "webhook",
        "--webhook-url",
        &url,
        "--log-level",
        "trace",
    ]);
    f.volume.write(&[("a", "2")]);
    nudge.wait_for("reloaded");
    let seen = server.seen();
    // base64("admin:hunter2")
    assert_eq!(
        seen[0].header("authorization"),
        Some("Basic YWRtaW46aHVudGVyMg==")
    );
    let output = nudge.output();
    assert!(
        output.iter().all(|l| !l.contains("hunter2")),
        "the password leaked"
    );
    assert!(
        output
            .iter()
            .any(|l| l.contains("http://admin:***@127.0.0.1")),
        "the redacted URL is shown"
    );
}

#[test]
fn webhook_gives_up_after_its_retries_and_acts_on_the_next_change() {
    let f = Fixture::new(&[("a", "1")]);
    let server = HttpServer::start(
        &[Reply::Status(503), Reply::Status(503)],
        Reply::Status(200),
    );
    let url = server.url("/reload");
    let nudge = f.nudge(&[
        "--action",
        "webhook",
        "--webhook-url",
        &url,
        "--webhook-retries",
        "1",
    ]);
    f.volume.write(&[("a", "2")]);
    nudge.wait_for("giving up");
    settle_quietly();
    assert_eq!(server.count(), 2, "the first attempt and one retry");
    f.volume.write(&[("a", "3")]);
    nudge.wait_for("reloaded");
    assert_eq!(server.count(), 3);
}

#[test]
fn webhook_without_a_url_is_a_one_line_configuration_error() {
    let output = std::process::Command::new(nudge_bin())
        .args(["--watch", "/tmp", "--action", "webhook"])
        .env_remove("RELOAD_WEBHOOK_URL")
        .output()
        .expect("run nudge");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--webhook-url") && stderr.contains("RELOAD_WEBHOOK_URL"),
        "{stderr}"
    );
}

#[test]
fn exec_runs_the_command_without_a_shell_with_the_changed_volume_in_its_env() {
    let f = Fixture::new(&[("a", "1")]);
    let out = f.dir.path().join("out");
    let out_s = out.display().to_string();
    // Words with spaces and `$` reach the program verbatim: no shell interprets them.
    let nudge = f.nudge(&[
        "--action",
        "exec",
        "--exec",
        "sh",
        "-c",
        "printf '%s|%s\\n' \"$NUDGE_CHANGED\" \"$1\" >> \"$0\"",
        &out_s,
        "a $literal word",
    ]);
    f.volume.write(&[("a", "2")]);
    nudge.wait_for("reloaded");
    let written = fs::read_to_string(&out).expect("the command ran");
    assert_eq!(written, format!("{}|a $literal word\n", f.watch()));
    assert!(lines_with(&nudge, "reloaded")[0].contains("exit status: 0"));
}

#[test]
fn exec_failure_is_retried_until_the_command_succeeds() {
    let f = Fixture::new(&[("a", "1")]);
    let count = f.dir.path().join("count");
    // Fails on its first run, succeeds on the second.
    let script = format!(
        "n=$(cat {c} 2>/dev/null || echo 0); echo $((n+1)) > {c}; echo run $n; [ $n -ge 1 ]",
        c = count.display()
    );
    let nudge = f.nudge(&["--action", "exec", "--exec", "sh", "-c", &script]);
    f.volume.write(&[("a", "2")]);
    nudge.wait_for("reloaded");
    settle_quietly();
    let failure = lines_with(&nudge, "reload failed").join("\n");
    assert!(
        failure.contains("exit status: 1") && failure.contains("run 0"),
        "{failure}"
    );
    assert_eq!(fs::read_to_string(&count).expect("count").trim(), "2");
}

#[test]
fn exec_that_runs_too_long_is_killed_at_the_timeout() {
    let f = Fixture::new(&[("a", "1")]);
    let nudge = f.nudge(&[
        "--action",
        "exec",
        "--exec-timeout",
        "200ms",
        "--exec",
        "sleep 30",
    ]);
    let started = Instant::now();
    f.volume.write(&[("a", "2")]);
    nudge.wait_for("did not finish within 200ms; killed");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn invalid_yaml_holds_the_signal_and_the_fixed_yaml_triggers_exactly_one() {
    let f = Fixture::new(&[("app.yaml", "{a: 1}")]);
    let app = ReloadApp::start(&f.volume.dir, &f.dir.path().join("app.log"));
    let regex = format!("reload_app.*{}", cmdline_regex(f.dir.path()));
    let nudge = f.nudge(&["--process-regex", &regex, "--resync", "200ms"]);
    f.volume.write(&[("app.yaml", "{a: 1, b: [2}")]);
    nudge.wait_for("new content is invalid");
    let held = lines_with(&nudge, "new content is invalid").join("\n");
    assert!(
        held.contains("app.yaml:") && held.contains("invalid YAML"),
        "{held}"
    );
    assert!(
        regex_lite::Regex::new(r"app\.yaml:\d+:\d+: invalid YAML")
            .expect("re")
            .is_match(&held),
        "file, line and column: {held}"
    );
    // Resyncs see the same bad content: it is known invalid, not validated again.
    nudge.wait_for_n("content unchanged", 3);
    assert_eq!(nudge.count("new content is invalid"), 1);
    assert_eq!(app.reloads().len(), 0, "the app was not signalled");
    f.volume.write(&[("app.yaml", "{a: 1, b: [2]}")]);
    app.wait_reloads(1);
    settle_quietly();
    assert_eq!(app.reloads().len(), 1);
    assert_eq!(app.reloads()[0].1, "app.yaml={a: 1, b: [2]}");
}

#[test]
fn two_hundred_updates_in_two_seconds_against_a_slow_webhook_end_on_the_final_content() {
    let f = Fixture::new(&[("n", "0")]);
    let data = f.volume.dir.join("n");
    let observe = Arc::new(move || fs::read_to_string(&data).unwrap_or_default());
    let server =
        HttpServer::start_observing(&[], Reply::Slow(Duration::from_millis(300), 200), observe);
    let url = server.url("/reload");
    let nudge = f.nudge(&["--action", "webhook", "--webhook-url", &url]);
    let started = Instant::now();
    for n in 1..=200 {
        f.volume.write(&[("n", &n.to_string())]);
        // 200 writes spread over about 2 s.
        let due = started + Duration::from_millis(10 * n);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }
    eventually("a request for the final content", || {
        server.seen().last().is_some_and(|r| r.observed == "200")
    });
    settle_quietly();
    let seen = server.seen();
    assert_eq!(seen.last().map(|r| r.observed.as_str()), Some("200"));
    assert!(seen.len() <= 10, "{} requests for 200 updates", seen.len());
    eventually("the last reload to be logged", || {
        nudge.count("reloaded") == seen.len()
    });
}

#[test]
fn min_interval_spaces_reloads_apart_and_coalesces_what_arrives_meanwhile() {
    let f = Fixture::new(&[("a", "1")]);
    let server = HttpServer::start(&[], Reply::Status(200));
    let url = server.url("/reload");
    let _nudge = f.nudge(&[
        "--action",
        "webhook",
        "--webhook-url",
        &url,
        "--min-interval",
        "1s",
    ]);
    f.volume.write(&[("a", "2")]);
    server.wait_for_requests(1);
    f.volume.write(&[("a", "3")]);
    f.volume.write(&[("a", "4")]);
    server.wait_for_requests(2);
    settle_quietly();
    let seen = server.seen();
    assert_eq!(
        seen.len(),
        2,
        "two changes inside the interval: one more reload"
    );
    let gap = seen[1].at - seen[0].at;
    assert!(gap >= Duration::from_millis(990), "{gap:?}");
}
