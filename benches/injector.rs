//! `make bench-injector`: `nudge injector`'s admission latency and memory.
//!
//! - Loopback: the release injector (`--sidecar regular`, log level info as deployed) behind
//!   HTTPS with the test CA; one keep-alive client sends 1,000 reviews of an annotated Pod
//!   (each answered with a patch), one at a time, after 100 warm-up reviews; p50/p99/max.
//! - Through the real API server (scripts/test-cluster.sh: kube-apiserver 1.20 + etcd +
//!   controller-manager on loopback): 1,000 Pod creations (annotated) in a namespace the
//!   webhook applies to and 1,000 in one it does not, interleaved, each timed from request to
//!   response; the difference of the p50s is what the webhook adds.
//! - RSS (VmRSS): idle after start, during 8 concurrent keep-alive clients x 1,000 reviews
//!   (sampled every 10 ms), and the peak (VmHWM).
//!
//! Writes the "## Injector: admission latency and memory" section of BENCHMARKS.md. Not a
//! test: `cargo bench --features rollout --bench injector`; returns at once without `--bench`.

#[path = "../tests/support/cluster.rs"]
mod cluster;
#[path = "support/report.rs"]
#[allow(dead_code)]
mod common;
#[path = "../tests/support/injector.rs"]
mod injector_support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use injector_support::{annotated_pod, client_config, review_of, Https, Injector, Pki};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::json;

const REVIEWS: usize = 1000;
const WARM_UP: usize = 100;
const CREATES: usize = 1000;
const LOAD_CLIENTS: usize = 8;
const HEADING: &str = "## Injector: admission latency and memory";

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    // The injector logs one line per injected pod; the bench does not echo them.
    std::env::set_var("NUDGE_QUIET_INJECTOR", "1");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let results = rt.block_on(run())?;
    let section = report(&results);
    print!("{section}");
    common::write_section(&section).map_err(|e| e.to_string())?;
    Ok(())
}

struct Results {
    loopback: Vec<Duration>,
    plain: Vec<Duration>,
    hooked: Vec<Duration>,
    idle_kib: u64,
    load_kib: u64,
    peak_kib: u64,
    after_kib: u64,
    load_reviews: usize,
    load_elapsed: Duration,
}

async fn run() -> Result<Results, Error> {
    let Some(cluster) = cluster::cluster() else {
        return Err("test control plane binaries missing (scripts/test-cluster.sh build)".into());
    };
    let pki = Pki::new();
    let tls = pki.tls_dir(1);
    let config = client_config(&pki.ca_pem());
    let injector = Injector::start(tls.path(), &["--sidecar=regular"]);
    let pid = injector.pid();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_kib = common::status_field(pid, "VmRSS:");

    // Loopback, one keep-alive connection, one review at a time.
    let mut https = Https::open(injector.port, &config).await?;
    for i in 0..WARM_UP {
        one_review(&mut https, &format!("warm-{i}")).await?;
    }
    let mut loopback = Vec::with_capacity(REVIEWS);
    for i in 0..REVIEWS {
        let started = Instant::now();
        one_review(&mut https, &format!("r-{i}")).await?;
        loopback.push(started.elapsed());
    }

    // Under load: concurrent keep-alive clients, RSS sampled meanwhile.
    let sampling = Arc::new(AtomicBool::new(true));
    let max_kib = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (sampling, max_kib) = (sampling.clone(), max_kib.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                max_kib.fetch_max(common::status_field(pid, "VmRSS:"), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let started = Instant::now();
    let mut clients = Vec::new();
    for c in 0..LOAD_CLIENTS {
        let (port, config) = (injector.port, config.clone());
        clients.push(tokio::spawn(async move {
            let mut https = Https::open(port, &config).await?;
            for i in 0..REVIEWS {
                one_review(&mut https, &format!("load-{c}-{i}")).await?;
            }
            Ok::<_, Error>(())
        }));
    }
    for client in clients {
        client.await??;
    }
    let load_elapsed = started.elapsed();
    sampling.store(false, Ordering::Relaxed);
    sampler.await?;
    let load_kib = max_kib.load(Ordering::Relaxed);
    let peak_kib = common::status_field(pid, "VmHWM:");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_kib = common::status_field(pid, "VmRSS:");

    // Through the API server: pod create round trips with and without the webhook.
    let client = cluster::kube_client(&cluster.kubeconfig).await?;
    let suffix = std::process::id();
    let (hooked_ns, plain_ns) = (format!("bench-on-{suffix}"), format!("bench-off-{suffix}"));
    namespace(
        &client,
        &hooked_ns,
        json!({"nudge.dev/injection": "enabled"}),
    )
    .await?;
    namespace(&client, &plain_ns, json!({})).await?;
    register_webhook(&client, injector.port, &pki.ca_pem(), &suffix.to_string()).await?;
    let hooked_pods: Api<Pod> = Api::namespaced(client.clone(), &hooked_ns);
    let plain_pods: Api<Pod> = Api::namespaced(client.clone(), &plain_ns);
    // Until the API server calls the webhook (it picks configurations up asynchronously).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut probe = 0;
    loop {
        probe += 1;
        let created = create(&hooked_pods, &format!("probe-{probe}")).await?;
        if injected(&created) {
            break;
        }
        if Instant::now() > deadline {
            return Err("the API server never called the injector".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for i in 0..20 {
        create(&plain_pods, &format!("warm-{i}")).await?;
        create(&hooked_pods, &format!("warm-{i}")).await?;
    }
    let (mut plain, mut hooked) = (Vec::new(), Vec::new());
    for i in 0..CREATES {
        let name = format!("web-{i}");
        let started = Instant::now();
        let created = create(&plain_pods, &name).await?;
        plain.push(started.elapsed());
        if injected(&created) {
            return Err("a pod outside the labelled namespace was injected".into());
        }
        let started = Instant::now();
        let created = create(&hooked_pods, &name).await?;
        hooked.push(started.elapsed());
        if !injected(&created) {
            return Err(format!("pod {name} was not injected").into());
        }
    }
    injector.stop();
    Ok(Results {
        loopback,
        plain,
        hooked,
        idle_kib,
        load_kib,
        peak_kib,
        after_kib,
        load_reviews: LOAD_CLIENTS * REVIEWS,
        load_elapsed,
    })
}

async fn one_review(https: &mut Https, uid: &str) -> Result<(), Error> {
    let (status, body) = https.review(review_of(uid, annotated_pod("web"))).await?;
    if status != 200 || !body.windows(7).any(|w| w == b"\"patch\"") {
        return Err(format!(
            "review {uid}: HTTP {status} {}",
            String::from_utf8_lossy(&body)
        )
        .into());
    }
    Ok(())
}

async fn namespace(client: &Client, name: &str, labels: serde_json::Value) -> Result<(), Error> {
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    // Pods are refused until the default ServiceAccount and its token exist.
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
    cluster::eventually(
        "the default ServiceAccount and its token",
        Duration::from_secs(30),
        || {
            let sas = sas.clone();
            async move {
                let sa = sas.get_opt("default").await.ok().flatten()?;
                sa.secrets.filter(|s| !s.is_empty())
            }
        },
    )
    .await;
    Ok(())
}

async fn register_webhook(client: &Client, port: u16, ca: &str, suffix: &str) -> Result<(), Error> {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca);
    let webhook: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": format!("nudge-injector-bench-{suffix}")},
        "webhooks": [{
            "name": "inject.nudge.dev",
            "clientConfig": {"url": format!("https://127.0.0.1:{port}/mutate"), "caBundle": ca},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                       "resources": ["pods"], "scope": "Namespaced"}],
            "namespaceSelector": {"matchLabels": {"nudge.dev/injection": "enabled"}},
            "failurePolicy": "Ignore",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 5
        }]
    }))?;
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .create(&PostParams::default(), &webhook)
        .await?;
    Ok(())
}

async fn create(pods: &Api<Pod>, name: &str) -> Result<Pod, Error> {
    let mut pod = annotated_pod(name);
    if let Some(metadata) = pod["metadata"].as_object_mut() {
        metadata.remove("namespace");
    }
    Ok(pods
        .create(&PostParams::default(), &serde_json::from_value(pod)?)
        .await?)
}

fn injected(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .is_some_and(|s| s.containers.iter().any(|c| c.name == "nudge"))
}

/// (p50, p99, max) of the samples.
fn percentiles(samples: &[Duration]) -> (Duration, Duration, Duration) {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let at =
        |q: f64| sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1];
    (at(0.50), at(0.99), at(1.0))
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn report(r: &Results) -> String {
    let mut s = format!("{HEADING}\n\n");
    s.push_str(
        "`make bench-injector` (benches/injector.rs). The release `nudge injector --sidecar regular` \
(log level info, one line per injected pod) with a certificate from a test CA (P-256). Loopback: \
one keep-alive HTTPS client, 1,000 `AdmissionReview`s of an annotated Pod one at a time (after \
100 warm-up), each answered with a patch, timed from request to whole answer. API server: the \
test control plane (kube-apiserver 1.20 + etcd on loopback, scripts/test-cluster.sh); 1,000 Pod \
creations in a namespace labelled `nudge.dev/injection: enabled` (the webhook is called, the pod \
stored injected) and 1,000 in an unlabelled one, interleaved, each timed from request to \
response (after 20 warm-up each).\n\n",
    );
    s.push_str("| admission latency | p50 | p99 | max |\n|---|---|---|---|\n");
    let (lp50, lp99, lmax) = percentiles(&r.loopback);
    let (pp50, pp99, pmax) = percentiles(&r.plain);
    let (hp50, hp99, hmax) = percentiles(&r.hooked);
    for (what, (p50, p99, max)) in [
        ("loopback review (HTTPS, keep-alive)", (lp50, lp99, lmax)),
        ("pod create, no webhook", (pp50, pp99, pmax)),
        ("pod create, through the webhook", (hp50, hp99, hmax)),
    ] {
        s.push_str(&format!(
            "| {what} | {} | {} | {} |\n",
            ms(p50),
            ms(p99),
            ms(max)
        ));
    }
    let added = hp50.as_secs_f64() - pp50.as_secs_f64();
    s.push_str(&format!(
        "\nThe webhook adds {:.2} ms at p50 to a pod creation (target: < 2 ms){}.\n\n",
        added * 1e3,
        if added * 1e3 < 2.0 {
            ""
        } else {
            " — over the target"
        }
    ));
    s.push_str("| injector RSS | |\n|---|---|\n");
    s.push_str(&format!(
        "| idle (1 s after start) | {} |\n",
        mib(r.idle_kib)
    ));
    s.push_str(&format!(
        "| under load ({LOAD_CLIENTS} keep-alive clients, {} reviews in {:.1} s = {:.0}/s; max of 10 ms samples) | {} |\n",
        r.load_reviews,
        r.load_elapsed.as_secs_f64(),
        r.load_reviews as f64 / r.load_elapsed.as_secs_f64(),
        mib(r.load_kib)
    ));
    s.push_str(&format!("| peak (VmHWM) | {} |\n", mib(r.peak_kib)));
    s.push_str(&format!("| 2 s after the load | {} |\n", mib(r.after_kib)));
    s.push_str(&format!(
        "\nMachine: {} CPUs, shared with other builds (the API-server numbers include etcd's \
writes and move with that load; the loopback ones much less).\n\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    ));
    s
}
