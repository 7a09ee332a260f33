//! `make bench-rollout`: `nudge rollout` at cluster scale on a real control plane
//! (scripts/test-cluster.sh). For each N: a generator creates N ConfigMaps and Secrets (35/65,
//! payload sizes up to 100 KiB, skewed small: size = 100 KiB * u^3) and N/20 + 15 Deployments,
//! of which 15 are annotated (each follows 2 ConfigMaps and 1 Secret); then the release
//! controller is started and measured: start-up to ready (all 15 adopted), peak and steady RSS,
//! and update -> template-patched latency over 50 updates. Writes a section of BENCHMARKS.md.
//!
//! Not a test: `cargo bench --features rollout --bench rollout -- [N...]` (default 1000 9100).
//! Returns at once unless run with `--bench` (so `cargo test --benches` stays quick).

#[path = "support/report.rs"]
#[allow(dead_code)]
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::json;

const ANNOTATED: usize = 15;
const UPDATES: usize = 50;
const HASH: &str = "nudge.dev/config-hash";

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        return Ok(());
    }
    let mut sizes: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    if sizes.is_empty() {
        sizes = vec![1000, 9100];
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("scripts/test-cluster.sh");
    let dir = std::env::temp_dir().join(format!("nudge-bench-rollout-{}", std::process::id()));
    let ok = Command::new(&script)
        .arg("start")
        .arg(&dir)
        .stdout(Stdio::null())
        .status()?
        .success();
    if !ok {
        return Err("test-cluster.sh start failed (run scripts/test-cluster.sh build?)".into());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        let mut rows = Vec::new();
        for n in sizes {
            rows.push(run(&dir, n).await?);
        }
        Ok::<_, Error>(rows)
    });
    let _ = Command::new(&script)
        .arg("stop")
        .arg(&dir)
        .stderr(Stdio::null())
        .status();
    let _ = std::fs::remove_dir_all(&dir);
    let rows = result?;
    let section = report(&rows);
    print!("{section}");
    common::write_section(&section)?;
    Ok(())
}

struct Row {
    n: usize,
    configmaps: usize,
    secrets: usize,
    deployments: usize,
    raw_bytes: u64,
    generate: Duration,
    startup: Duration,
    peak_kib: u64,
    steady_kib: u64,
    after_kib: u64,
    p50: Duration,
    p99: Duration,
}

/// A deterministic xorshift generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Valid YAML of about `len` bytes (at most `len` + one line): `kN_random: random` lines.
    fn text(&mut self, len: usize) -> String {
        const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut s = String::with_capacity(len + 80);
        let mut line = 0;
        while s.len() < len {
            line += 1;
            s.push_str(&format!("k{line}_"));
            let key_len = 4 + (self.next() % 12) as usize;
            let val_len = 8 + (self.next() % 48) as usize;
            for _ in 0..key_len {
                s.push(CHARS[(self.next() % 36) as usize] as char);
            }
            s.push_str(": ");
            for _ in 0..val_len {
                s.push(CHARS[(self.next() % 36) as usize] as char);
            }
            s.push('\n');
        }
        s
    }
}

async fn client(dir: &Path) -> Result<Client, Error> {
    let config = Config::from_custom_kubeconfig(
        Kubeconfig::read_from(dir.join("kubeconfig"))?,
        &KubeConfigOptions::default(),
    )
    .await?;
    Ok(Client::try_from(config)?)
}

async fn run(dir: &Path, n: usize) -> Result<Row, Error> {
    let client = client(dir).await?;
    let ns = format!("bench-{n}");
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await?;
    let configmaps = n * 35 / 100;
    let secrets = n - configmaps;
    let deployments = ANNOTATED + n / 20;
    eprintln!("bench-rollout: N={n}: generating {configmaps} ConfigMaps, {secrets} Secrets, {deployments} Deployments");
    let t = Instant::now();
    let raw = Arc::new(AtomicU64::new(0));
    let cm_api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let secret_api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let jobs = (0..n).map(|i| {
        let (cm_api, secret_api, raw) = (cm_api.clone(), secret_api.clone(), raw.clone());
        async move {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((i as u64 + 1) * 0x1000_0000_01b3));
            // At least 64 bytes, at most 100 KiB: `text` may overshoot by one line (< 80).
            let size = ((100.0 * 1024.0 * rng.unit().powi(3)) as usize).clamp(64, 100 * 1024);
            let body = rng.text(size.saturating_sub(80).max(1));
            raw.fetch_add(body.len() as u64, Ordering::Relaxed);
            if i < configmaps {
                let cm: ConfigMap = serde_json::from_value(json!({
                    "metadata": {"name": format!("cm-{i}")},
                    "data": {"app.yaml": body}
                }))?;
                cm_api.create(&PostParams::default(), &cm).await?;
            } else {
                let s: Secret = serde_json::from_value(json!({
                    "metadata": {"name": format!("secret-{}", i - configmaps)},
                    "stringData": {"credentials": body}
                }))?;
                secret_api.create(&PostParams::default(), &s).await?;
            }
            Ok::<_, Error>(())
        }
    });
    let mut stream = futures::stream::iter(jobs).buffer_unordered(16);
    while let Some(r) = stream.next().await {
        r?;
    }
    let dep_api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    for d in 0..deployments {
        let annotated = d < ANNOTATED;
        let (cm1, cm2, secret) = (
            format!("cm-{}", (2 * d) % configmaps),
            format!("cm-{}", (2 * d + 1) % configmaps),
            format!("secret-{}", d % secrets),
        );
        let annotations = if annotated {
            json!({"nudge.dev/watch": "*"})
        } else {
            json!({})
        };
        let dep: Deployment = serde_json::from_value(json!({
            "metadata": {"name": format!("app-{d}")},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": format!("app-{d}")}},
                "template": {
                    "metadata": {"labels": {"app": format!("app-{d}")}, "annotations": annotations},
                    "spec": {
                        "volumes": [{"name": "c", "configMap": {"name": cm1}},
                                    {"name": "s", "secret": {"secretName": secret}}],
                        "containers": [{"name": "app", "image": "registry.invalid/app:1",
                            "envFrom": [{"configMapRef": {"name": cm2}}],
                            "volumeMounts": [{"name": "c", "mountPath": "/etc/c"},
                                             {"name": "s", "mountPath": "/etc/s"}]}]
                    }
                }
            }
        }))?;
        dep_api.create(&PostParams::default(), &dep).await?;
    }
    let generate = t.elapsed();
    let raw_bytes = raw.load(Ordering::Relaxed);
    let raw_mib = raw_bytes as f64 / 1048576.0;
    eprintln!(
        "bench-rollout: N={n}: {raw_mib:.0} MiB raw in {:.0?}",
        generate
    );

    // The controller (release build), its RSS sampled every 20 ms.
    let log = dir.join(format!("controller-{n}.log"));
    let mut child: Child = Command::new(env!("CARGO_BIN_EXE_nudge"))
        .args(["rollout", "--namespace", &ns, "--kubeconfig"])
        .arg(dir.join("kubeconfig"))
        .env("NUDGE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let pid = child.id();
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(common::status_field(pid, "VmRSS:"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let annotated: Vec<String> = (0..ANNOTATED).map(|d| format!("app-{d}")).collect();
    loop {
        let mut adopted = 0;
        for name in &annotated {
            let d = dep_api.get(name).await?;
            if d.metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(HASH))
            {
                adopted += 1;
            }
        }
        if adopted == ANNOTATED {
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            return Err(format!("controller not ready after 300 s; log: {}", log.display()).into());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let startup = started.elapsed();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let steady_kib = common::status_field(pid, "VmRSS:");

    // 50 updates, round robin over the annotated Deployments' first ConfigMap.
    let mut latencies = Vec::new();
    for u in 0..UPDATES {
        let d = u % ANNOTATED;
        let name = format!("app-{d}");
        let before = template_hash(&dep_api, &name).await?;
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "data": {"app.yaml": format!("update: {u}\n")}});
        cm_api
            .patch(
                &format!("cm-{}", (2 * d) % configmaps),
                &PatchParams::apply("bench").force(),
                &Patch::Apply(&body),
            )
            .await?;
        let t = Instant::now();
        loop {
            if template_hash(&dep_api, &name).await? != before {
                break;
            }
            if t.elapsed() > Duration::from_secs(60) {
                return Err(format!("update {u} not rolled in 60 s").into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        latencies.push(t.elapsed());
    }
    latencies.sort();
    let after_kib = common::status_field(pid, "VmRSS:");
    let hwm = common::status_field(pid, "VmHWM:");
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let _ = child.kill();
    let _ = child.wait();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1)];
    Ok(Row {
        n,
        configmaps,
        secrets,
        deployments,
        raw_bytes,
        generate,
        startup,
        peak_kib: hwm.max(peak.load(Ordering::Relaxed)),
        steady_kib,
        after_kib,
        p50: pct(0.50),
        p99: pct(0.99),
    })
}

async fn template_hash(api: &Api<Deployment>, name: &str) -> Result<Option<String>, Error> {
    let d = api.get(name).await?;
    let annotations: Option<BTreeMap<String, String>> =
        d.spec.template.metadata.and_then(|m| m.annotations);
    Ok(annotations.and_then(|a| a.get(HASH).cloned()))
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn report(rows: &[Row]) -> String {
    let mut s =
        String::from("## nudge rollout: memory at cluster scale, start-up, update latency\n\n");
    s.push_str(&format!(
        "Run: {}, {}. Command: `make bench-rollout` (`cargo bench --features rollout --bench \
rollout -- {}`).\n\n",
        common::date_utc(),
        common::machine(),
        rows.iter()
            .map(|r| r.n.to_string())
            .collect::<Vec<_>>()
            .join(" "),
    ));
    s.push_str(
        "`make bench-rollout` (benches/rollout.rs): a real kube-apiserver 1.20 + etcd on loopback \
(scripts/test-cluster.sh), one namespace; N ConfigMaps (35 %) and Secrets (65 %) with one key \
each, sizes up to 100 KiB (100 KiB x u^3); N/20 + 15 Deployments, 15 annotated \
(`nudge.dev/watch: \"*\"`, each referencing 2 ConfigMaps and 1 Secret). The release controller \
(`--features rollout`, default 500 ms debounce) is started after generation. Start-up: spawn to \
all 15 annotated Deployments adopted. Peak RSS: max of VmHWM and 20 ms VmRSS samples over the \
whole run; steady: VmRSS 10 s after ready. Latency: ConfigMap update (API response) to the pod \
template carrying the new hash, polled every 5 ms, over 50 updates (includes the debounce).\n\n",
    );
    s.push_str("| N objects | CMs / Secrets / Deployments | raw data | start-up to ready | peak RSS | steady RSS | RSS after 50 updates | latency p50 | latency p99 |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        s.push_str(&format!(
            "| {} | {} / {} / {} | {} bytes ({:.1} MiB) | {:.2} s | {} | {} | {} | {:.0} ms | {:.0} ms |\n",
            r.n,
            r.configmaps,
            r.secrets,
            r.deployments,
            r.raw_bytes,
            r.raw_bytes as f64 / 1048576.0,
            r.startup.as_secs_f64(),
            mib(r.peak_kib),
            mib(r.steady_kib),
            mib(r.after_kib),
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3,
        ));
    }
    if let (Some(a), Some(b)) = (rows.first(), rows.last()) {
        if rows.len() > 1 {
            s.push_str(&format!(
                "\nPeak RSS at N={} is {:.2}x that at N={} (raw data {:.1}x). Targets: <= 20 MiB at 1,000, <= 50 MiB at 9,100, within 1.5x.\n",
                b.n,
                b.peak_kib as f64 / a.peak_kib.max(1) as f64,
                a.n,
                b.raw_bytes as f64 / a.raw_bytes.max(1) as f64,
            ));
        }
    }
    let generated: Vec<String> = rows
        .iter()
        .map(|r| format!("N={}: {:.0} s", r.n, r.generate.as_secs_f64()))
        .collect();
    s.push_str(&format!(
        "\nGeneration time (not part of the measurement): {}. The machine is shared (other builds \
ran meanwhile), so start-up and latency carry noise.\n\n",
        generated.join(", "),
    ));
    s
}
