//! `nudge injector` end to end: the real binary behind a real `MutatingWebhookConfiguration`
//! on the test API server (1.20) — pods created directly and by a Deployment's controllers —,
//! abuse over the network (garbage, wrong content type, huge bodies, byte-a-second clients),
//! the probe and metrics endpoints, the sidecar's settings from flags, env and config file,
//! certificate rotation kubelet-style, and the JSON patch against `nudge inject`'s own output
//! over the inject corpus.
#![cfg(feature = "rollout")]

#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/injector.rs"]
mod injector_support;
mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use injector_support::{
    annotated_pod, client_config, patched, read_some, response_for, review_of, status_of,
    tls_connect, write_all, Https, Injector, Pki,
};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use serde_json::{json, Value as Json};
use support::kubelet::KubeletVolume;

const WAIT: Duration = Duration::from_secs(30);

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

async fn namespace(client: &Client, name: &str, labels: Json) {
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).expect("ns");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    // The ServiceAccount admission plugin rejects pods until the controllers made `default`
    // and its token Secret.
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
    cluster::eventually("the default ServiceAccount and its token", WAIT, || {
        let sas = sas.clone();
        async move {
            let sa = sas.get_opt("default").await.ok().flatten()?;
            sa.secrets.filter(|s| !s.is_empty())
        }
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

/// A webhook configuration like k8s/injector/webhook.yaml's, by URL to the test injector, for
/// namespaces labelled `nudge.dev/injection: enabled` *and* `nudge.dev/test-scope: SCOPE` (so
/// tests sharing the API server never call each other's injector).
fn webhook_configuration(
    name: &str,
    scope: &str,
    port: u16,
    ca: &str,
) -> MutatingWebhookConfiguration {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca);
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "webhooks": [{
            "name": "inject.nudge.dev",
            "clientConfig": {"url": format!("https://127.0.0.1:{port}/mutate"), "caBundle": ca},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                       "resources": ["pods"], "scope": "Namespaced"}],
            "namespaceSelector": {"matchLabels": {
                "nudge.dev/injection": "enabled", "nudge.dev/test-scope": scope}},
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

/// An injector registered with the test API server for one labelled namespace, known to be
/// called (a probe pod came back injected).
struct Registered {
    client: Client,
    injector: Option<Injector>,
    /// The namespace the webhook applies to.
    namespace: String,
    /// The webhook configuration's name (deleted by [`Registered::unregister`]).
    webhook: String,
    _tls: tempfile::TempDir,
}

async fn register(cluster: &cluster::Cluster, scope: &str) -> Registered {
    let client = cluster::kube_client(&cluster.kubeconfig)
        .await
        .expect("client");
    let pki = Pki::new();
    let tls = pki.tls_dir(1);
    let kubeconfig = format!("--kubeconfig={}", cluster.kubeconfig.display());
    let injector = Injector::start(tls.path(), &["--sidecar=auto", &kubeconfig]);
    assert!(
        injector.logged("--sidecar auto: chose by the API server's version"),
        "auto did not ask the API server"
    );
    let suffix = std::process::id();
    let namespace_name = format!("inj-{scope}-{suffix}");
    namespace(
        &client,
        &namespace_name,
        json!({"nudge.dev/injection": "enabled", "nudge.dev/test-scope": scope}),
    )
    .await;
    let webhooks: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let webhook = format!("nudge-injector-{scope}-{suffix}");
    webhooks
        .create(
            &PostParams::default(),
            &webhook_configuration(&webhook, scope, injector.port, &pki.ca_pem()),
        )
        .await
        .expect("register the webhook");
    // The API server picks new webhook configurations up asynchronously: create annotated
    // probe pods until one comes back injected.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace_name);
    let mut attempt = 0;
    cluster::eventually("an annotated probe pod stored injected", WAIT, || {
        attempt += 1;
        let pods = pods.clone();
        let name = format!("probe-{attempt}");
        async move {
            let created = pods
                .create(&PostParams::default(), &web_pod(&name, true))
                .await
                .expect("create pod");
            containers(&created)
                .iter()
                .any(|c| c == "nudge")
                .then_some(())
        }
    })
    .await;
    Registered {
        client,
        injector: Some(injector),
        namespace: namespace_name,
        webhook,
        _tls: tls,
    }
}

impl Registered {
    async fn unregister(&self) {
        let webhooks: Api<MutatingWebhookConfiguration> = Api::all(self.client.clone());
        let _ = webhooks
            .delete(&self.webhook, &DeleteParams::default())
            .await;
    }
}

/// The stored pod has a regular sidecar (what `auto` picks on 1.20) with read-only mounts
/// and a shared process namespace.
fn assert_injected_regular(stored: &Pod) {
    let spec = stored.spec.as_ref().expect("spec");
    assert_eq!(spec.share_process_namespace, Some(true));
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
}

#[tokio::test]
async fn pods_created_through_the_api_server_are_injected_only_where_asked_and_created_without_the_injector(
) {
    let Some(cluster) = cluster::cluster() else {
        return;
    };
    let mut registered = register(cluster, "pods").await;
    let client = registered.client.clone();
    let plain = format!("inj-off-{}", std::process::id());
    namespace(&client, &plain, json!({})).await;

    let pods: Api<Pod> = Api::namespaced(client.clone(), &registered.namespace);
    pods.create(&PostParams::default(), &web_pod("web", true))
        .await
        .expect("create pod");
    // Read back through the API: what is stored, not what create answered.
    assert_injected_regular(&pods.get("web").await.expect("read back"));

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
    registered.injector.take().expect("running").stop();
    let without = pods
        .create(&PostParams::default(), &web_pod("while-down", true))
        .await
        .expect("created while the injector is down");
    assert_eq!(containers(&without), vec!["web".to_owned()]);

    registered.unregister().await;
}

#[tokio::test]
async fn a_deployments_pods_created_by_the_controller_manager_are_injected() {
    let Some(cluster) = cluster::cluster() else {
        return;
    };
    let registered = register(cluster, "deploy").await;
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"},
                             "annotations": {"nudge.dev/watch": "web-config"}},
                "spec": web_pod("unused", false).spec
            }
        }
    }))
    .expect("deployment");
    Api::<Deployment>::namespaced(registered.client.clone(), &registered.namespace)
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create the Deployment");

    // The Deployment controller makes a ReplicaSet, whose controller creates the pods (through
    // the API server, so through the webhook); no kubelet runs them, they stay Pending.
    let pods: Api<Pod> = Api::namespaced(registered.client.clone(), &registered.namespace);
    let created = cluster::eventually("the Deployment's 2 pods", WAIT, || {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .ok()?;
            (list.items.len() == 2).then_some(list.items)
        }
    })
    .await;
    for pod in created {
        let name = pod.metadata.name.clone().expect("name");
        let owner = pod
            .metadata
            .owner_references
            .as_ref()
            .and_then(|o| o.first())
            .expect("an owner");
        assert_eq!(owner.kind, "ReplicaSet", "{name}");
        assert_injected_regular(&pods.get(&name).await.expect("read back"));
    }
    registered.unregister().await;
}

// ---------------------------------------------------------------------------------------------
// Abuse over the network, against the running injector.

/// A started injector and a client configuration that trusts it.
fn running_injector(
    args: &[&str],
) -> (Injector, Arc<rustls::ClientConfig>, Pki, tempfile::TempDir) {
    let pki = Pki::new();
    let tls = pki.tls_dir(7);
    let injector = Injector::start(tls.path(), args);
    let config = client_config(&pki.ca_pem());
    (injector, config, pki, tls)
}

/// One review on `https`, answered 200 with an injected pod for `uid`.
async fn assert_review_answered(https: &mut Https, uid: &str) {
    let pod = annotated_pod("web");
    let (status, body) = https
        .review(review_of(uid, pod.clone()))
        .await
        .unwrap_or_else(|e| panic!("review {uid}: {e}"));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let response = response_for(uid, &body);
    assert_eq!(response["allowed"], true);
    assert_eq!(
        patched(&pod, &response)["spec"]["shareProcessNamespace"],
        true
    );
}

/// Writes `head` then `body` on a raw TLS connection and reads until the server answers or
/// closes: `Some(status)` or `None` (dropped without an answer).
async fn raw_exchange(
    port: u16,
    config: &Arc<rustls::ClientConfig>,
    head: String,
    body: Vec<u8>,
) -> Option<u16> {
    let mut tls = tls_connect(port, config).await.expect("TLS");
    if write_all(&mut tls, head.as_bytes()).await.is_ok() {
        for chunk in body.chunks(64 * 1024) {
            // The server stops reading once it has refused: stop writing then.
            let wrote =
                tokio::time::timeout(Duration::from_secs(2), write_all(&mut tls, chunk)).await;
            if !matches!(wrote, Ok(Ok(()))) {
                break;
            }
        }
    }
    let mut answer = Vec::new();
    let mut buf = vec![0; 16 * 1024];
    let read = tokio::time::timeout(WAIT, async {
        // Until the end of the stream, or an error (a reset after the answer may cost its
        // bytes; then the connection was at least dropped).
        while let Ok(n @ 1..) = read_some(&mut tls, &mut buf).await {
            answer.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(read.is_ok(), "the server neither answered nor closed");
    status_of(&answer)
}

#[tokio::test]
async fn garbage_wrong_content_types_and_huge_bodies_get_http_errors_while_other_reviews_are_answered(
) {
    let (injector, config, _pki, _tls) = running_injector(&["--sidecar=regular"]);
    let port = injector.port;
    let mut steady = Https::open(port, &config).await.expect("connect");
    assert_review_answered(&mut steady, "before").await;

    let mut https = Https::open(port, &config).await.expect("connect");
    let (status, body) = https
        .review(b"{\"apiVersion\": 3, garbage".to_vec())
        .await
        .expect("answered");
    assert_eq!(status, 400);
    assert!(
        String::from_utf8_lossy(&body).contains("not an admission.k8s.io/v1 AdmissionReview"),
        "{body:?}"
    );
    assert_review_answered(&mut steady, "after-garbage").await;

    let binary: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
    let mut https = Https::open(port, &config).await.expect("connect");
    let (status, _) = https.review(binary).await.expect("answered");
    assert_eq!(status, 400);

    for content_type in [Some("text/plain"), Some("application/yaml"), None] {
        let mut https = Https::open(port, &config).await.expect("connect");
        let (status, body) = https
            .request(
                "POST",
                "/mutate",
                content_type,
                review_of("typed", annotated_pod("web")),
            )
            .await
            .expect("answered");
        assert_eq!(status, 415, "{content_type:?}: {body:?}");
    }
    assert_review_answered(&mut steady, "after-content-types").await;

    // Over 3 MiB, declared: refused before the body is read.
    let huge = 3 * 1024 * 1024 + 1;
    let head = format!(
        "POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {huge}\r\n\r\n"
    );
    let answered = raw_exchange(port, &config, head, vec![b' '; huge]).await;
    assert!(matches!(answered, Some(413) | None), "{answered:?}");
    // Over 3 MiB, chunked (no length to refuse by): cut off at the limit.
    let mut chunked = Vec::new();
    for _ in 0..64 {
        chunked.extend_from_slice(format!("{:x}\r\n", 64 * 1024).as_bytes());
        chunked.extend(std::iter::repeat_n(b' ', 64 * 1024));
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let head = "POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_owned();
    let answered = raw_exchange(port, &config, head, chunked).await;
    assert!(matches!(answered, Some(413) | None), "{answered:?}");
    // A whole review just under the limit is still read and answered.
    let mut big = annotated_pod("big");
    big["metadata"]["labels"] = json!({"pad": "x"});
    big["metadata"]["annotations"]["pad"] = json!("y".repeat(2 * 1024 * 1024));
    let mut https = Https::open(port, &config).await.expect("connect");
    let (status, body) = https.review(review_of("big", big)).await.expect("answered");
    assert_eq!(
        status,
        200,
        "{}",
        String::from_utf8_lossy(&body[..body.len().min(300)])
    );

    assert_review_answered(&mut steady, "after-huge").await;
    let mut fresh = Https::open(port, &config).await.expect("connect");
    assert_review_answered(&mut fresh, "fresh").await;
    let (_, metrics) = fresh.get("/metrics").await.expect("metrics");
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains(r#"nudge_injector_reviews_total{verdict="too_large"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"nudge_injector_reviews_total{verdict="malformed"} 5"#),
        "{metrics}"
    );
}

/// Sends `bytes` one a second on `stream` until it is closed; returns how long the server let
/// it live and whether an HTTP status came back (`Some(code)`).
async fn byte_a_second<S>(mut stream: S, bytes: Vec<u8>) -> (Duration, Option<u16>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let started = Instant::now();
    let mut pending = bytes.into_iter();
    let mut answer = Vec::new();
    let mut buf = vec![0; 4096];
    while started.elapsed() < Duration::from_secs(60) {
        if let Some(byte) = pending.next() {
            if write_all(&mut stream, &[byte]).await.is_err() {
                break;
            }
        }
        // Waiting a second for the server is the pace.
        match tokio::time::timeout(Duration::from_secs(1), read_some(&mut stream, &mut buf)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    (started.elapsed(), status_of(&answer))
}

#[tokio::test]
async fn clients_sending_a_byte_a_second_are_dropped_while_another_clients_reviews_are_answered() {
    let (injector, config, _pki, _tls) = running_injector(&["--sidecar=regular"]);
    let port = injector.port;
    let review = review_of("slow", annotated_pod("web"));
    // Slow headers: a request line and headers of ~150 bytes would take minutes.
    let head = format!(
        "POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        review.len()
    );
    let slow_head = tokio::spawn(byte_a_second(
        tls_connect(port, &config).await.expect("TLS"),
        head.clone().into_bytes(),
    ));
    // Slow body: the headers at once, then the review a byte a second.
    let mut tls = tls_connect(port, &config).await.expect("TLS");
    write_all(&mut tls, head.as_bytes()).await.expect("headers");
    let slow_body = tokio::spawn(byte_a_second(tls, review));
    // Slow TLS handshake: a ClientHello a byte a second, on plain TCP.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("tcp");
    let hello = [
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    let slow_hello = tokio::spawn(byte_a_second(tcp, hello.repeat(4)));

    // Meanwhile: reviews on a keep-alive connection, and on new connections, all answered.
    let answered = Arc::new(AtomicUsize::new(0));
    let counting = answered.clone();
    let busy = tokio::spawn(async move {
        let mut steady = Https::open(port, &config).await.expect("connect");
        for i in 0.. {
            let uid = format!("steady-{i}");
            let answer = tokio::time::timeout(Duration::from_secs(5), async {
                assert_review_answered(&mut steady, &uid).await;
                if i % 10 == 0 {
                    let mut fresh = Https::open(port, &config).await.expect("connect");
                    assert_review_answered(&mut fresh, &format!("fresh-{i}")).await;
                }
            })
            .await;
            assert!(answer.is_ok(), "review {uid} not answered in 5 s");
            counting.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });

    let (head_lived, head_status) = slow_head.await.expect("slow head");
    let (body_lived, body_status) = slow_body.await.expect("slow body");
    let (hello_lived, _) = slow_hello.await.expect("slow hello");
    let during = answered.load(Ordering::Relaxed);
    busy.abort();
    assert!(
        !busy.await.expect_err("aborted").is_panic(),
        "the steady client failed"
    );
    // Dropped by the 5 s header / 10 s body / 5 s handshake deadlines, long before the
    // slow clients could have finished (the bound is the deadlines plus slack, not a benchmark).
    assert!(head_lived < Duration::from_secs(20), "{head_lived:?}");
    assert_eq!(
        head_status, None,
        "headers too slow: dropped without an answer"
    );
    assert!(body_lived < Duration::from_secs(25), "{body_lived:?}");
    assert_eq!(body_status, Some(408), "body too slow: 408 Request Timeout");
    assert!(hello_lived < Duration::from_secs(20), "{hello_lived:?}");
    assert!(
        during >= 20,
        "only {during} reviews answered during the slow clients"
    );
}

// ---------------------------------------------------------------------------------------------
// Probes and metrics, as the sidecar's.

#[tokio::test]
async fn healthz_readyz_and_metrics_answer_as_the_sidecars_do() {
    let (injector, config, _pki, _tls) = running_injector(&["--sidecar=native"]);
    let mut https = Https::open(injector.port, &config).await.expect("connect");
    let (status, body) = https.get("/healthz").await.expect("healthz");
    assert_eq!((status, body.as_ref()), (200, b"ok\n".as_ref()));
    let ready = cluster::eventually("ready", WAIT, || {
        let config = config.clone();
        async move {
            let mut https = Https::open(injector.port, &config).await.ok()?;
            let (status, body) = https.get("/readyz").await.ok()?;
            (status == 200).then(|| String::from_utf8_lossy(&body).into_owned())
        }
    })
    .await;
    assert!(
        ready.starts_with("ready\nok   certificate: serving "),
        "{ready}"
    );
    assert!(ready.contains("ok   watching: "), "{ready}");
    assert_review_answered(&mut https, "counted").await;
    let (status, metrics) = https.get("/metrics").await.expect("metrics");
    assert_eq!(status, 200);
    let metrics = String::from_utf8_lossy(&metrics).into_owned();
    assert!(
        metrics.contains(r#"nudge_injector_reviews_total{verdict="injected"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("nudge_injector_review_seconds_count 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"nudge_injector_certificate_reloads_total{result="ok"} 0"#),
        "{metrics}"
    );
    promtool_check(&metrics);
    let (status, _) = https
        .request("POST", "/healthz", None, Vec::new())
        .await
        .expect("answered");
    assert_eq!(status, 405);
    let (status, _) = https.get("/nope").await.expect("answered");
    assert_eq!(status, 404);
}

/// `promtool check metrics` on the text; fails in CI without promtool, skips elsewhere.
fn promtool_check(metrics: &str) {
    use std::io::Write;
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "promtool missing"
        );
        eprintln!("SKIP promtool check: promtool not installed");
        return;
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(metrics.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// The injected sidecar's settings.

#[tokio::test]
async fn the_sidecars_image_and_resources_come_from_the_config_file_under_env_under_flags() {
    let pki = Pki::new();
    let tls = pki.tls_dir(9);
    let file = tls.path().join("injector.yaml");
    fs::write(
        &file,
        "image: registry.example/nudge:from-file\n\
         image-pull-policy: IfNotPresent\n\
         sidecar-cpu-request: 2m\n\
         sidecar-memory-request: 4Mi\n\
         sidecar-memory-limit: 16Mi\n\
         sidecar: native\n",
    )
    .expect("config file");
    let config_arg = format!("--config={}", file.display());
    let injector = Injector::start_with(
        tls.path(),
        &[&config_arg, "--sidecar-memory-limit=24Mi"],
        &[
            ("NUDGE_INJECTOR_IMAGE", "registry.example/nudge:from-env"),
            ("NUDGE_INJECTOR_SIDECAR", "regular"),
            ("NUDGE_INJECTOR_SIDECAR_MEMORY_LIMIT", "20Mi"),
        ],
    );
    let config = client_config(&pki.ca_pem());
    let mut https = Https::open(injector.port, &config).await.expect("connect");
    let pod = annotated_pod("web");
    let (status, body) = https
        .review(review_of("settings", pod.clone()))
        .await
        .expect("answered");
    assert_eq!(status, 200);
    let injected = patched(&pod, &response_for("settings", &body));
    // env over file: image and placement; flag over env and file: the memory limit.
    let sidecar = &injected["spec"]["containers"][1];
    assert_eq!(sidecar["name"], "nudge");
    assert_eq!(sidecar["image"], "registry.example/nudge:from-env");
    assert_eq!(sidecar["imagePullPolicy"], "IfNotPresent");
    assert_eq!(
        sidecar["resources"],
        json!({"requests": {"cpu": "2m", "memory": "4Mi"}, "limits": {"memory": "24Mi"}})
    );
    // A pod's own nudge.dev/image still wins over every layer.
    let mut own = annotated_pod("own");
    own["metadata"]["annotations"]["nudge.dev/image"] = json!("mine/nudge:1");
    let (_, body) = https
        .review(review_of("own", own.clone()))
        .await
        .expect("answered");
    let injected = patched(&own, &response_for("own", &body));
    assert_eq!(injected["spec"]["containers"][1]["image"], "mine/nudge:1");
    assert!(
        injector.logged("memory_limit=24Mi"),
        "the settings are logged"
    );
}

#[test]
fn bad_injector_settings_exit_2_with_one_line_naming_the_setting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("injector.yaml");
    fs::write(
        &file,
        "tls-cert: /nope.crt\ntls-key: /nope.key\nsidecar-cpu-request: fast\n",
    )
    .expect("file");
    let cases: [(Vec<String>, &str); 4] = [
        (
            vec![format!("--config={}", file.display())],
            "--sidecar-cpu-request",
        ),
        (
            vec!["--sidecar-memory-limit=lots".into(), "--tls-cert=a".into()],
            "--sidecar-memory-limit",
        ),
        (vec![], "--tls-cert is required"),
        (
            vec!["--tls-cert=/nope.crt".into(), "--tls-key=/nope.key".into()],
            "/nope.crt",
        ),
    ];
    for (args, needle) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_nudge"))
            .arg("injector")
            .args(&args)
            .env_remove("NUDGE_INJECTOR_TLS_CERT")
            .env_remove("NUDGE_INJECTOR_TLS_KEY")
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        let first = stderr.lines().next().unwrap_or_default();
        assert!(first.contains(needle), "{args:?}: {stderr}");
    }
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
        let mutation = nudge::injector::review::mutate(&input, &Default::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let patch = mutation.patch.unwrap_or_else(|| panic!("{name}: no patch"));
        let mut patched = input.clone();
        json_patch::patch(&mut patched, &patch).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(patched, expected, "{name}");
    }
}
