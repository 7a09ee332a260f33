//! `nudge injector` fixtures shared by tests/injector.rs and benches/injector.rs: a test CA
//! and serving certificates (openssl), the real injector binary as a child process, and an
//! HTTPS client that trusts the test CA (one keep-alive connection, or raw TLS for abuse).
#![allow(dead_code)] // each user takes part of it

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::CONTENT_TYPE;
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value as Json};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// How long the injector may take to start listening.
const START: Duration = Duration::from_secs(30);

/// A CA and serving certificates for 127.0.0.1 made with openssl.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=nudge test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
            dir.path(),
        );
        fs::write(
            dir.path().join("ext"),
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write ext");
        Pki { dir }
    }

    pub fn ca_pem(&self) -> String {
        fs::read_to_string(self.dir.path().join("ca.crt")).expect("ca.crt")
    }

    /// A serving certificate for 127.0.0.1 with this serial: (cert PEM, key PEM).
    pub fn serving(&self, serial: u32) -> (String, String) {
        let d = self.dir.path();
        let (key, csr, crt) = (
            format!("{serial}.key"),
            format!("{serial}.csr"),
            format!("{serial}.crt"),
        );
        openssl(
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                "/CN=127.0.0.1",
            ],
            d,
        );
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-set_serial",
                &serial.to_string(),
                "-days",
                "2",
                "-extfile",
                "ext",
                "-out",
                &crt,
            ],
            d,
        );
        let read = |f: &str| fs::read_to_string(d.join(f)).expect("pem");
        (read(&crt), read(&key))
    }

    /// A directory holding `tls.crt` and `tls.key` of a fresh serving certificate.
    pub fn tls_dir(&self, serial: u32) -> tempfile::TempDir {
        let (cert, key) = self.serving(serial);
        let tls = tempfile::tempdir().expect("tempdir");
        fs::write(tls.path().join("tls.crt"), cert).expect("cert");
        fs::write(tls.path().join("tls.key"), key).expect("key");
        tls
    }
}

/// `nudge injector` as a child process, killed on drop.
pub struct Injector {
    pub child: Child,
    pub port: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Injector {
    /// Starts the injector serving `tls/tls.crt` on 127.0.0.1 (any port) with extra `args`.
    pub fn start(tls: &Path, args: &[&str]) -> Injector {
        Injector::start_with(tls, args, &[])
    }

    /// ... and extra environment variables.
    pub fn start_with(tls: &Path, args: &[&str], env: &[(&str, &str)]) -> Injector {
        let mut child = Command::new(env!("CARGO_BIN_EXE_nudge"))
            .arg("injector")
            .arg("--listen=127.0.0.1:0")
            .arg(format!("--tls-cert={}", tls.join("tls.crt").display()))
            .arg(format!("--tls-key={}", tls.join("tls.key").display()))
            .args(args)
            .env("NUDGE_LOG_LEVEL", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nudge injector");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("piped");
        let sink = lines.clone();
        let quiet = std::env::var_os("NUDGE_QUIET_INJECTOR").is_some();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !quiet {
                    eprintln!("  injector | {line}");
                }
                sink.lock().expect("lock").push(line);
            }
        });
        let deadline = Instant::now() + START;
        let port = loop {
            let found = lines.lock().expect("lock").iter().find_map(|l| {
                let at = l.find("injector listening")?;
                let addr = l[at..].split("addr=").nth(1)?;
                addr.split_whitespace()
                    .next()?
                    .rsplit(':')
                    .next()?
                    .parse()
                    .ok()
            });
            if let Some(port) = found {
                break port;
            }
            assert!(
                child.try_wait().expect("try_wait").is_none(),
                "nudge injector exited: {:?}",
                lines.lock().expect("lock")
            );
            assert!(Instant::now() < deadline, "nudge injector never listened");
            std::thread::sleep(Duration::from_millis(20));
        };
        Injector { child, port, lines }
    }

    pub fn logged(&self, needle: &str) -> bool {
        self.lines
            .lock()
            .expect("lock")
            .iter()
            .any(|l| l.contains(needle))
    }

    /// The first log line containing `needle`.
    pub fn line(&self, needle: &str) -> Option<String> {
        self.lines
            .lock()
            .expect("lock")
            .iter()
            .find(|l| l.contains(needle))
            .cloned()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Injector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A rustls client configuration that trusts only `ca_pem`.
pub fn client_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA cert");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// A TLS connection to 127.0.0.1:`port`.
pub async fn tls_connect(
    port: u16,
    config: &Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("127.0.0.1").expect("an IP name");
    TlsConnector::from(config.clone()).connect(name, tcp).await
}

/// One keep-alive HTTPS (HTTP/1.1) connection.
pub struct Https {
    send: SendRequest<Full<Bytes>>,
}

/// A status code and body.
pub type Answer = (u16, Bytes);

impl Https {
    pub async fn open(port: u16, config: &Arc<rustls::ClientConfig>) -> std::io::Result<Https> {
        let tls = tls_connect(port, config).await?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Https { send })
    }

    /// Sends one request; `Err` when the connection failed or was closed.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<Answer, hyper::Error> {
        self.send.ready().await?;
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1");
        if let Some(content_type) = content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        let request = request.body(Full::new(Bytes::from(body))).expect("request");
        let response = self.send.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    pub async fn review(&mut self, body: Vec<u8>) -> Result<Answer, hyper::Error> {
        self.request("POST", "/mutate", Some("application/json"), body)
            .await
    }

    pub async fn get(&mut self, path: &str) -> Result<Answer, hyper::Error> {
        self.request("GET", path, None, Vec::new()).await
    }
}

/// A Pod whose annotations ask for nudge (watching its ConfigMap volume).
pub fn annotated_pod(name: &str) -> Json {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "apps",
                     "annotations": {"nudge.dev/watch": "web-config"}},
        "spec": {
            "containers": [{"name": "web", "image": "nginx:1.27",
                "volumeMounts": [{"name": "config", "mountPath": "/etc/nginx/conf.d"}]}],
            "volumes": [{"name": "config", "configMap": {"name": "web-config"}}]
        }
    })
}

/// An `admission.k8s.io/v1` CREATE review of `pod`, as the API server sends it.
pub fn review_of(uid: &str, pod: Json) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": pod["metadata"]["name"], "namespace": "apps", "operation": "CREATE",
            "userInfo": {"username": "admin", "groups": ["system:masters"]},
            "object": pod, "oldObject": null, "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    }))
    .expect("review JSON")
}

/// The answer's `response` object, checked to be for `uid`.
pub fn response_for(uid: &str, body: &[u8]) -> Json {
    let answer: Json = serde_json::from_slice(body).expect("an AdmissionReview answer");
    let response = answer["response"].clone();
    assert_eq!(response["uid"], uid, "{answer}");
    response
}

/// The patch of an answer, decoded, applied to `pod`.
pub fn patched(pod: &Json, response: &Json) -> Json {
    use base64::Engine;
    let patch = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().expect("a patch"))
        .expect("base64");
    let patch: json_patch::Patch = serde_json::from_slice(&patch).expect("a JSON patch");
    let mut out = pod.clone();
    json_patch::patch(&mut out, &patch).expect("the patch applies");
    out
}

/// Writes all of `bytes` and flushes (tokio's `io-util` helpers are not among nudge's features).
pub async fn write_all<S>(stream: &mut S, mut bytes: &[u8]) -> std::io::Result<()>
where
    S: tokio::io::AsyncWrite + Unpin,
{
    use std::pin::Pin;
    while !bytes.is_empty() {
        let n = std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_write(cx, bytes)).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        bytes = &bytes[n..];
    }
    std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_flush(cx)).await
}

/// Reads what is there (at least one byte), or `Ok(0)` at the end of the stream.
pub async fn read_some<S>(stream: &mut S, buf: &mut [u8]) -> std::io::Result<usize>
where
    S: tokio::io::AsyncRead + Unpin,
{
    use std::pin::Pin;
    let mut read = tokio::io::ReadBuf::new(buf);
    std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_read(cx, &mut read)).await?;
    Ok(read.filled().len())
}

/// The status code at the start of an HTTP/1.1 response, if one came.
pub fn status_of(response: &[u8]) -> Option<u16> {
    String::from_utf8_lossy(response)
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
}
