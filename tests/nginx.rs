//! A real nginx reloading on nudge's SIGHUP: nginx reads a server block from a kubelet-style
//! volume; after the volume is updated and nudge signals the master, a real HTTP request gets
//! the new response. Needs `nginx` (Debian `nginx-light`, installed by .ci/run); skipped only
//! outside CI when it is missing.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use support::kubelet::KubeletVolume;
use support::*;

/// `--process nginx` matches every nginx master on the machine: one nginx at a time.
static ONE_NGINX: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn nginx_available() -> bool {
    let found = Command::new("nginx")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "nginx is missing in CI: apt-get install nginx-light"
        );
        eprintln!("skipping: nginx not installed (apt-get install nginx-light)");
    }
    found
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn site(body: &str) -> String {
    format!("default_type text/plain;\nlocation / {{ return 200 \"{body}\\n\"; }}\n")
}

/// GET / over a plain TCP connection; `None` while nginx is not answering.
fn get(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response.split("\r\n\r\n").nth(1)?.trim().to_owned())
}

fn write_main_config(dir: &Path, volume: &Path, port: u16) -> std::path::PathBuf {
    let conf = dir.join("nginx.conf");
    let text = format!(
        "user root;\nworker_processes 2;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {dir};\n\
         server {{ listen 127.0.0.1:{port}; include {volume}/site.conf; }}\n}}\n",
        dir = dir.display(),
        volume = volume.display(),
    );
    std::fs::write(&conf, text).expect("write nginx.conf");
    conf
}

#[test]
fn nginx_serves_the_new_config_after_nudges_sighup() {
    let _one_nginx = ONE_NGINX.lock().unwrap_or_else(|e| e.into_inner());
    if !nginx_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let volume = KubeletVolume::create(
        dir.path().join("conf.d"),
        &[("site.conf", &site("version one"))],
    );
    let port = free_port();
    let conf = write_main_config(dir.path(), &volume.dir, port);
    let mut nginx_cmd = Command::new("nginx");
    nginx_cmd
        .arg("-c")
        .arg(&conf)
        .args(["-g", "daemon off;"])
        .process_group(0);
    let nginx = Nginx(Running::spawn(nginx_cmd));
    eventually("nginx to answer", || {
        get(port).as_deref() == Some("version one")
    });

    let watch = volume.dir.display().to_string();
    let nudge = start_nudge(&["--watch", &watch, "--process", "nginx"]);
    volume.write(&[("site.conf", &site("version two"))]);
    eventually("nginx to serve the new config", || {
        get(port).as_deref() == Some("version two")
    });

    // Only the master was signalled: its workers share the name "nginx" and were skipped.
    let master = nginx.0.pid();
    let sent: Vec<String> = nudge
        .output()
        .into_iter()
        .filter(|l| l.contains("reloaded"))
        .collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(
        sent[0].contains(&format!("sent SIGHUP to pid {master} (nginx)")),
        "{}",
        sent[0]
    );
    assert_eq!(
        sent[0].matches("sent SIGHUP").count(),
        1,
        "no worker was signalled: {}",
        sent[0]
    );
}

/// nginx in its own process group, so that teardown ends the master and every worker (a
/// SIGKILL to the master alone would leave its workers orphaned).
struct Nginx(Running);

impl Drop for Nginx {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(-self.0.pid());
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
    }
}

#[test]
fn nginx_keeps_serving_the_old_page_when_nginx_t_rejects_the_new_config() {
    let _one_nginx = ONE_NGINX.lock().unwrap_or_else(|e| e.into_inner());
    if !nginx_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let volume = KubeletVolume::create(
        dir.path().join("conf.d"),
        &[("site.conf", &site("version one"))],
    );
    let port = free_port();
    let conf = write_main_config(dir.path(), &volume.dir, port);
    let mut nginx_cmd = Command::new("nginx");
    nginx_cmd
        .arg("-c")
        .arg(&conf)
        .args(["-g", "daemon off;"])
        .process_group(0);
    let _nginx = Nginx(Running::spawn(nginx_cmd));
    eventually("nginx to answer", || {
        get(port).as_deref() == Some("version one")
    });

    let watch = volume.dir.display().to_string();
    let check = format!("nginx -t -c {}", conf.display());
    let nudge = start_nudge(&[
        "--watch",
        &watch,
        "--process",
        "nginx",
        "--validate-cmd",
        &check,
    ]);
    // A directive nginx does not know: `nginx -t` fails, nudge holds the SIGHUP.
    volume.write(&[("site.conf", "no_such_directive on;\n")]);
    nudge.wait_for("new content is invalid");
    let held = nudge
        .output()
        .into_iter()
        .find(|l| l.contains("new content is invalid"))
        .unwrap_or_default();
    assert!(
        held.contains("validation command \\\"nginx\\\"")
            || held.contains("validation command \"nginx\""),
        "{held}"
    );
    assert!(
        held.contains("no_such_directive"),
        "nginx's own message is logged: {held}"
    );
    settle_quietly();
    assert_eq!(
        get(port).as_deref(),
        Some("version one"),
        "nginx still serves the old page"
    );
    assert_eq!(nudge.count("reloaded"), 0);

    volume.write(&[("site.conf", &site("version three"))]);
    eventually("nginx to serve the fixed config", || {
        get(port).as_deref() == Some("version three")
    });
    assert_eq!(nudge.count("reloaded"), 1);
}
