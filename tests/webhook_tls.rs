//! https webhooks (cargo feature `https`, the `-tls` image) against a real TLS server: nudge
//! trusts the CA that `SSL_CERT_FILE` names, as a `FROM scratch` image with a mounted CA
//! bundle does, and refuses a server its roots do not vouch for.
#![cfg(feature = "https")]

mod support;

use std::fs;
use std::path::Path;
use std::process::Command;

use support::kubelet::KubeletVolume;
use support::*;

/// A real HTTPS server (Python's http.server behind its ssl module) that answers every POST
/// with 200 and prints `POST <path>` for each.
const HTTPS_SERVER: &str = r#"
import http.server, ssl, sys
class Reload(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
        print("POST", self.path, flush=True)
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Reload)
tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
tls.load_cert_chain(sys.argv[1], sys.argv[2])
server.socket = tls.wrap_socket(server.socket, server_side=True)
print("port", server.server_address[1], flush=True)
server.serve_forever()
"#;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

/// A private CA (`ca.crt`) and a certificate for 127.0.0.1 it signed (`server.crt`/`.key`).
fn private_ca_and_server_certificate(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec![
        "req", "-x509", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
    ];
    ca.extend(ec);
    ca.extend(["-subj", "/CN=nudge webhook test CA"]);
    ca.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
    ca.extend(["-addext", "keyUsage=critical,keyCertSign"]);
    openssl(dir, &ca);
    let mut csr = vec!["req", "-keyout", "server.key", "-out", "server.csr"];
    csr.extend(ec);
    csr.extend(["-subj", "/CN=127.0.0.1"]);
    openssl(dir, &csr);
    fs::write(dir.join("ext"), "subjectAltName=IP:127.0.0.1\n").expect("write ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "7",
            "-days",
            "2",
            "-extfile",
            "ext",
            "-out",
            "server.crt",
        ],
    );
}

struct TlsFixture {
    dir: tempfile::TempDir,
    volume: KubeletVolume,
    server: Running,
    url: String,
}

impl TlsFixture {
    fn new() -> TlsFixture {
        let dir = tempfile::tempdir().expect("tempdir");
        private_ca_and_server_certificate(dir.path());
        let mut python = Command::new("python3");
        python
            .args(["-c", HTTPS_SERVER])
            .arg(dir.path().join("server.crt"))
            .arg(dir.path().join("server.key"));
        let server = Running::spawn(python);
        server.wait_for("port ");
        let port = server
            .output()
            .iter()
            .find_map(|l| l.strip_prefix("port ").map(str::to_owned))
            .expect("port line");
        let volume = KubeletVolume::create(dir.path().join("config"), &[("app.yaml", "a: 1")]);
        TlsFixture {
            url: format!("https://127.0.0.1:{port}/-/reload"),
            dir,
            volume,
            server,
        }
    }

    /// nudge calling the server on every change, with `env` added.
    fn nudge(&self, env: &[(&str, &Path)]) -> Running {
        let mut command = Command::new(nudge_bin());
        command
            .args(["--watch", &self.volume.dir.display().to_string()])
            .args(["--action", "webhook", "--webhook-url", &self.url])
            .args(["--webhook-retries", "0"])
            .env("RUST_LOG", "nudge=debug")
            .env("RELOAD_LISTEN", "127.0.0.1:0")
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR");
        for (name, value) in env {
            command.env(name, value);
        }
        let nudge = Running::spawn(command);
        nudge.wait_for("watching");
        nudge
    }
}

#[test]
fn https_webhook_trusts_the_ca_bundle_named_by_ssl_cert_file() {
    let f = TlsFixture::new();
    let bundle = f.dir.path().join("ca.crt");
    let nudge = f.nudge(&[("SSL_CERT_FILE", &bundle)]);
    f.volume.write(&[("app.yaml", "a: 2")]);
    nudge.wait_for("reloaded");
    f.server.wait_for("POST /-/reload");
    assert_eq!(f.server.count("POST /-/reload"), 1);
}

#[test]
fn https_webhook_to_a_server_outside_the_trusted_roots_fails_without_sending() {
    let f = TlsFixture::new();
    // Another private CA: a bundle that does not vouch for this server (and no dependence on
    // whether the machine has system roots at all).
    let other = tempfile::tempdir().expect("tempdir");
    private_ca_and_server_certificate(other.path());
    let nudge = f.nudge(&[("SSL_CERT_FILE", &other.path().join("ca.crt"))]);
    f.volume.write(&[("app.yaml", "a: 2")]);
    nudge.wait_for("reload failed");
    let failure = nudge
        .output()
        .into_iter()
        .find(|l| l.contains("reload failed"))
        .unwrap_or_default();
    assert!(failure.contains("certificate"), "{failure}");
    assert_eq!(f.server.count("POST"), 0);
}
