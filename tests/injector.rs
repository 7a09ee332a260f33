//! `nudge injector` end to end: the real binary behind a real `MutatingWebhookConfiguration`
//! on the test API server (1.20), certificate rotation kubelet-style, and the JSON patch
//! against `nudge inject`'s own output over the inject corpus.
#![cfg(feature = "rollout")]

#[path = "support/cluster.rs"]
mod cluster;
mod support;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::{json, Value as Json};
use support::kubelet::KubeletVolume;

const WAIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Fixtures: a test CA, the injector process.

/// A CA and serving certificates for 127.0.0.1 made with openssl.
struct Pki {
    dir: tempfile::TempDir,
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
    fn new() -> Pki {
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

    fn ca_pem(&self) -> String {
        fs::read_to_string(self.dir.path().join("ca.crt")).expect("ca.crt")
    }

    /// A serving certificate for 127.0.0.1 with this serial: (cert PEM, key PEM).
    fn serving(&self, serial: u32) -> (String, String) {
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
}

/// `nudge injector` as a child process, killed on drop.
struct Injector {
    child: Child,
    port: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Injector {
    fn start(tls: &Path, args: &[&str]) -> Injector {
        let mut child = Command::new(env!("CARGO_BIN_EXE_nudge"))
            .arg("injector")
            .arg("--listen=127.0.0.1:0")
            .arg(format!("--tls-cert={}", tls.join("tls.crt").display()))
            .arg(format!("--tls-key={}", tls.join("tls.key").display()))
            .args(args)
            .env("NUDGE_LOG_LEVEL", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nudge injector");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("piped");
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("  injector | {line}");
                sink.lock().expect("lock").push(line);
            }
        });
        let deadline = Instant::now() + WAIT;
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

    fn logged(&self, needle: &str) -> bool {
        self.lines
            .lock()
            .expect("lock")
            .iter()
            .any(|l| l.contains(needle))
    }

    fn stop(mut self) {
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

/// The serial of the certificate a new TLS connection to `port` is served.
fn served_serial(port: u16) -> Option<String> {
    let s_client = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    std::io::Write::write_all(x509.stdin.as_mut()?, &s_client.stdout).ok()?;
    let out = x509.wait_with_output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().strip_prefix("serial=").map(str::to_owned)
}

// ---------------------------------------------------------------------------------------------
// Against the real API server.

async fn client(kubeconfig: &Path) -> Client {
    let config = Config::from_custom_kubeconfig(
        Kubeconfig::read_from(kubeconfig).expect("kubeconfig"),
        &KubeConfigOptions::default(),
    )
    .await
    .expect("config");
    Client::try_from(config).expect("client")
}

async fn namespace(client: &Client, name: &str, labels: Json) {
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).expect("ns");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    // The ServiceAccount admission plugin rejects pods until the controller made `default`.
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
    cluster::eventually("the default ServiceAccount", WAIT, || {
        let sas = sas.clone();
        async move { sas.get_opt("default").await.ok().flatten() }
    })
    .await;
}

fn web_pod(name: &str, annotated: bool) -> Pod {
    let annotations = match annotated {
        true => json!({"nudge.dev/watch": "web-config"}),
        false => json!({}),
    };
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "containers": [{"name": "web", "image": "nginx:1.27",
                "volumeMounts": [{"name": "config", "mountPath": "/etc/nginx/conf.d"}]}],
            "volumes": [{"name": "config", "configMap": {"name": "web-config"}}]
        }
    }))
    .expect("pod")
}

fn webhook_configuration(name: &str, port: u16, ca: &str) -> MutatingWebhookConfiguration {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca);
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "webhooks": [{
            "name": "inject.nudge.dev",
            "clientConfig": {"url": format!("https://127.0.0.1:{port}/mutate"), "caBundle": ca},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                       "resources": ["pods"], "scope": "Namespaced"}],
            "namespaceSelector": {"matchLabels": {"nudge.dev/injection": "enabled"}},
            "objectSelector": {"matchExpressions": [
                {"key": "app.kubernetes.io/name", "operator": "NotIn", "values": ["nudge-injector"]}]},
            "failurePolicy": "Ignore",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 5
        }]
    }))
    .expect("webhook configuration")
}

fn containers(pod: &Pod) -> Vec<String> {
    let spec = pod.spec.as_ref().expect("spec");
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .map(|c| c.name.clone())
        .collect()
}

#[tokio::test]
async fn pods_created_through_the_api_server_are_injected_only_where_asked_and_created_without_the_injector(
) {
    let Some(cluster) = cluster::cluster() else {
        return;
    };
    let client = client(&cluster.kubeconfig).await;
    let pki = Pki::new();
    let (cert, key) = pki.serving(1);
    let tls = tempfile::tempdir().expect("tempdir");
    fs::write(tls.path().join("tls.crt"), cert).expect("cert");
    fs::write(tls.path().join("tls.key"), key).expect("key");
    let kubeconfig = format!("--kubeconfig={}", cluster.kubeconfig.display());
    let injector = Injector::start(tls.path(), &["--sidecar=auto", &kubeconfig]);
    assert!(
        injector.logged("--sidecar auto: chose by the API server's version"),
        "auto did not ask the API server"
    );

    let suffix = std::process::id();
    let (enabled, plain) = (format!("inj-on-{suffix}"), format!("inj-off-{suffix}"));
    namespace(&client, &enabled, json!({"nudge.dev/injection": "enabled"})).await;
    namespace(&client, &plain, json!({})).await;
    let webhooks: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let name = format!("nudge-injector-test-{suffix}");
    webhooks
        .create(
            &PostParams::default(),
            &webhook_configuration(&name, injector.port, &pki.ca_pem()),
        )
        .await
        .expect("register the webhook");

    // The API server picks new webhook configurations up asynchronously: create annotated
    // probe pods until one comes back injected.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &enabled);
    let mut attempt = 0;
    let injected = cluster::eventually("an annotated pod stored injected", WAIT, || {
        attempt += 1;
        let pods = pods.clone();
        let name = format!("web-{attempt}");
        async move {
            let created = pods
                .create(&PostParams::default(), &web_pod(&name, true))
                .await
                .expect("create pod");
            match containers(&created).iter().any(|c| c == "nudge") {
                true => Some(created),
                false => None,
            }
        }
    })
    .await;
    let stored = pods
        .get(injected.metadata.name.as_deref().expect("name"))
        .await
        .expect("read back");
    let spec = stored.spec.as_ref().expect("spec");
    assert_eq!(spec.share_process_namespace, Some(true));
    // 1.20: `auto` chose a regular sidecar, a plain entry in containers.
    let sidecar = spec
        .containers
        .iter()
        .find(|c| c.name == "nudge")
        .expect("regular sidecar in containers");
    assert!(spec
        .init_containers
        .iter()
        .flatten()
        .all(|c| c.name != "nudge"));
    let mounts = sidecar.volume_mounts.as_ref().expect("mounts");
    assert!(!mounts.is_empty());
    assert!(
        mounts.iter().all(|m| m.read_only == Some(true)),
        "{mounts:?}"
    );

    let plain_pod = pods
        .create(&PostParams::default(), &web_pod("plain", false))
        .await
        .expect("create");
    assert_eq!(containers(&plain_pod), vec!["web".to_owned()]);
    assert_eq!(
        plain_pod
            .spec
            .as_ref()
            .and_then(|s| s.share_process_namespace),
        None
    );
    let elsewhere: Api<Pod> = Api::namespaced(client.clone(), &plain);
    let other = elsewhere
        .create(&PostParams::default(), &web_pod("web", true))
        .await
        .expect("create");
    assert_eq!(containers(&other), vec!["web".to_owned()]);

    // failurePolicy Ignore: with nothing listening, pods are still created, unchanged.
    injector.stop();
    let without = pods
        .create(&PostParams::default(), &web_pod("while-down", true))
        .await
        .expect("created while the injector is down");
    assert_eq!(containers(&without), vec!["web".to_owned()]);

    let _ = webhooks.delete(&name, &DeleteParams::default()).await;
}

// ---------------------------------------------------------------------------------------------
// Certificate rotation.

#[test]
fn a_rotated_certificate_is_served_to_the_next_connection_without_a_restart() {
    let pki = Pki::new();
    let (cert1, key1) = pki.serving(0x1001);
    let (cert2, key2) = pki.serving(0x2002);
    let dir = tempfile::tempdir().expect("tempdir");
    let volume = KubeletVolume::create(
        dir.path().join("tls"),
        &[("tls.crt", &cert1), ("tls.key", &key1)],
    );
    let injector = Injector::start(&volume.dir, &["--sidecar=native"]);
    assert_eq!(served_serial(injector.port).as_deref(), Some("1001"));

    volume.write(&[("tls.crt", &cert2), ("tls.key", &key2)]);
    let deadline = Instant::now() + WAIT;
    loop {
        // Every handshake during the swap gets one whole certificate, old or new.
        let serial = served_serial(injector.port).expect("a handshake during the rotation failed");
        if serial == "2002" {
            break;
        }
        assert_eq!(serial, "1001");
        assert!(
            Instant::now() < deadline,
            "still serving the old certificate"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(injector.logged("serving certificate reloaded"));
}

// ---------------------------------------------------------------------------------------------
// The patch is `nudge inject`'s rewrite.

fn corpus_objects() -> Vec<(String, Json, Json)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/inject");
    let mut dirs: Vec<PathBuf> = fs::read_dir(&root)
        .expect("corpus")
        .map(|e| e.expect("entry").path())
        .collect();
    dirs.sort();
    let mut out = Vec::new();
    for dir in dirs {
        let Ok(text) = fs::read_to_string(dir.join("in.yaml")) else {
            continue;
        };
        for (index, raw) in nudge::inject::stream::split(&text).iter().enumerate() {
            let Ok(value) = serde_yaml::from_str::<serde_yaml::Value>(raw.text) else {
                continue;
            };
            // YAML 1.1 octal file modes (`defaultMode: 0440`) read as strings here but as
            // numbers by kubectl; the API server always sends the webhook numbers, so these
            // documents are no input a review can carry.
            if !value.is_mapping() || raw.text.contains("Mode: 0") || value.get("items").is_some() {
                continue;
            }
            // `nudge inject` on this one object, as text.
            let single = serde_yaml::to_string(&value).expect("yaml");
            let Ok(rewrite) = nudge::inject::inject(&single, &nudge::inject::Options::default())
            else {
                continue;
            };
            if !rewrite
                .reports
                .iter()
                .any(|r| r.to_string().contains("sidecar added"))
            {
                continue;
            }
            let injected: serde_yaml::Value =
                serde_yaml::from_str(&rewrite.output).expect("output parses");
            let name = format!(
                "{}#{index}",
                dir.file_name().expect("name").to_string_lossy()
            );
            out.push((
                name,
                serde_json::to_value(&value).expect("json"),
                serde_json::to_value(&injected).expect("json"),
            ));
        }
    }
    out
}

#[test]
fn the_json_patch_applied_to_the_input_equals_nudge_injects_output_over_the_corpus() {
    let objects = corpus_objects();
    assert!(
        objects.len() >= 5,
        "only {} corpus objects get a sidecar",
        objects.len()
    );
    for (name, input, expected) in objects {
        let mutation = nudge::injector::review::mutate(&input, &nudge::inject::Options::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let patch = mutation.patch.unwrap_or_else(|| panic!("{name}: no patch"));
        let mut patched = input.clone();
        json_patch::patch(&mut patched, &patch).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(patched, expected, "{name}");
    }
}
