//! `nudge rollout` across control-plane outages, on this test binary's own real control plane
//! (etcd + kube-apiserver + kube-controller-manager, audit log on): the tests stop and restart
//! its components, so they run one at a time and never on the cluster other tests share.
//!
//! The controller reaches the API server through a TCP proxy owned by the test. The proxy is
//! closed across an API server restart and re-opened only after the test has changed a
//! ConfigMap, so that change provably happened while the controller was disconnected (the
//! restarted API server serves the controller's resumed watch from a fresh watch cache: 410
//! Gone, relist). A rollout is counted by the Deployment's `metadata.generation` (one per
//! template change), which needs no kube-controller-manager.
#![cfg(feature = "rollout")]

#[path = "support/cluster.rs"]
mod support;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use support::{eventually, kube_client, own_cluster, Cluster, RolloutProcess};

/// Generous: after an outage the watchers' backoff can wait up to 30 s before a retry.
const WAIT: Duration = Duration::from_secs(90);
/// How long "nothing more happens" is watched for, after the controller provably caught up.
const QUIET: Duration = Duration::from_secs(3);
/// The API server outage.
const OUTAGE: Duration = Duration::from_secs(20);

/// This binary's cluster (audit log on), started on first use; `None` means skip.
fn cluster() -> Option<&'static Cluster> {
    static CLUSTER: OnceLock<Option<Cluster>> = OnceLock::new();
    CLUSTER.get_or_init(|| own_cluster(true)).as_ref()
}

/// One test at a time: they stop components of the one cluster.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------------------------------------
// A TCP proxy between the controller and the API server that the test can close.

struct Proxy {
    port: u16,
    open: Arc<AtomicBool>,
    /// Both ends of every forwarded connection, to cut them on close.
    live: Arc<Mutex<Vec<TcpStream>>>,
    /// When connections were refused (accepted and dropped) while closed.
    refused: Arc<Mutex<Vec<Instant>>>,
}

impl Proxy {
    fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(true));
        let live = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(Vec::new()));
        let (o, l, r) = (open.clone(), live.clone(), refused.clone());
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                let Ok(inbound) = inbound else { continue };
                if !o.load(Ordering::SeqCst) {
                    r.lock().unwrap().push(Instant::now());
                    let _ = inbound.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let mut list = l.lock().unwrap();
                list.push(inbound.try_clone().unwrap());
                list.push(outbound.try_clone().unwrap());
                pipe(inbound.try_clone().unwrap(), outbound.try_clone().unwrap());
                pipe(outbound, inbound);
            }
        });
        Proxy {
            port,
            open,
            live,
            refused,
        }
    }

    /// Refuses new connections and cuts the live ones.
    fn close(&self) {
        self.open.store(false, Ordering::SeqCst);
        for s in self.live.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }

    fn refused(&self) -> Vec<Instant> {
        self.refused.lock().unwrap().clone()
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Write);
    });
}

// ---------------------------------------------------------------------------------------------
// Fixtures.

struct Env {
    cluster: &'static Cluster,
    client: Client,
    ns: String,
    proxy: Proxy,
}

async fn env(test: &str) -> Option<Env> {
    static N: AtomicU32 = AtomicU32::new(0);
    let cluster = cluster()?;
    let client = kube_client(&cluster.kubeconfig).await.unwrap();
    let ns = format!(
        "{test}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    let api_port: u16 = cluster
        .env_var("NUDGE_TEST_APISERVER")
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    Some(Env {
        cluster,
        client,
        ns,
        proxy: Proxy::start(api_port),
    })
}

/// A running `nudge rollout --namespace NS` as the user `nudge-controller`, through the proxy;
/// killed on drop.
type Controller = RolloutProcess;

impl RolloutProcess {
    fn start(env: &Env, log_filter: &str) -> Controller {
        let kubeconfig = env
            .cluster
            .dir
            .join(format!("controller-{}.kubeconfig", env.ns));
        let mut f = std::fs::File::create(&kubeconfig).unwrap();
        write!(
            f,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority: {ca}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n",
            port = env.proxy.port,
            ca = env.cluster.env_var("NUDGE_TEST_CA"),
            token = env.cluster.env_var("NUDGE_TEST_CONTROLLER_TOKEN"),
        )
        .unwrap();
        let log = std::env::temp_dir().join(format!("nudge-rollout-{}.log", env.ns));
        RolloutProcess::spawn(&kubeconfig, &["--namespace", &env.ns], log_filter, log)
    }

    fn assert_running(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "the controller exited; its log:\n{}",
            self.log()
        );
    }
}

impl Env {
    fn configmaps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Server-side applies a ConfigMap; retried while the API server is still coming back.
    async fn put_configmap(&self, name: &str, data: &[(&str, &str)], labels: &[(&str, &str)]) {
        let data: BTreeMap<&str, &str> = data.iter().copied().collect();
        let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "labels": labels}, "data": data});
        eventually(&format!("configmap {name} written"), WAIT, || async {
            self.configmaps()
                .patch(
                    name,
                    &PatchParams::apply("test").force(),
                    &Patch::Apply(&body),
                )
                .await
                .ok()
        })
        .await;
    }

    async fn put_secret(&self, name: &str, key: &str, value: &str) {
        let body = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": {key: value}});
        Api::<Secret>::namespaced(self.client.clone(), &self.ns)
            .patch(
                name,
                &PatchParams::apply("test").force(),
                &Patch::Apply(&body),
            )
            .await
            .unwrap();
    }

    /// A Deployment following `follows` (a ConfigMap or Secret) through a volume.
    async fn deployment(&self, name: &str, kind: &str, follows: &str) {
        let source = match kind {
            "configMap" => json!({"name": "config", "configMap": {"name": follows}}),
            _ => json!({"name": "config", "secret": {"secretName": follows}}),
        };
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}, "annotations": {"nudge.dev/watch": follows}},
                    "spec": {
                        "volumes": [source],
                        "containers": [{"name": "app", "image": "registry.invalid/app:1",
                            "volumeMounts": [{"name": "config", "mountPath": "/etc/app"}]}]
                    }
                }
            }
        }))
        .unwrap();
        self.deployments()
            .create(&PostParams::default(), &d)
            .await
            .unwrap();
    }

    /// (generation, template hash, workload hash) of a Deployment, if readable.
    async fn state(&self, name: &str) -> Option<(i64, Option<String>, Option<String>)> {
        let d = self.deployments().get(name).await.ok()?;
        let hash = |m: Option<&BTreeMap<String, String>>| {
            m.and_then(|a| a.get("nudge.dev/config-hash")).cloned()
        };
        let template = d.spec.template.metadata.as_ref();
        Some((
            d.metadata.generation?,
            hash(template.and_then(|m| m.annotations.as_ref())),
            hash(d.metadata.annotations.as_ref()),
        ))
    }

    /// Waits for the controller's baseline on the workload; returns its generation.
    async fn adopted(&self, name: &str) -> i64 {
        eventually(&format!("{name} adopted"), WAIT, || async {
            let (generation, _, adopted) = self.state(name).await?;
            adopted.map(|_| generation)
        })
        .await
    }

    /// Waits until the template carries `hash` at `generation`.
    async fn rolled_to(&self, name: &str, generation: i64, hash: &str) {
        eventually(
            &format!("{name} rolled to {hash} at generation {generation}"),
            WAIT,
            || async {
                let (g, template, _) = self.state(name).await?;
                (g == generation && template.as_deref() == Some(hash)).then_some(())
            },
        )
        .await;
    }

    /// Asserts the Deployment stays at `generation` for [`QUIET`].
    async fn stays_at(&self, name: &str, generation: i64) {
        let until = Instant::now() + QUIET;
        while Instant::now() < until {
            if let Some((g, _, _)) = self.state(name).await {
                assert_eq!(g, generation, "{name} rolled unexpectedly");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The audit events of the controller's user in this namespace for `resource`.
    fn audit(&self, resource: &str) -> Vec<serde_json::Value> {
        let log = std::fs::read_to_string(self.cluster.dir.join("audit.log")).unwrap_or_default();
        log.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["user"]["username"] == "nudge-controller")
            .filter(|e| e["objectRef"]["resource"] == resource)
            .filter(|e| e["objectRef"]["namespace"] == self.ns.as_str())
            .collect()
    }

    fn audit_count(&self, resource: &str, verb: &str) -> usize {
        self.audit(resource)
            .iter()
            .filter(|e| e["verb"] == verb && e["stage"] == "ResponseComplete")
            .count()
    }
}

/// The hash the controller writes for one ConfigMap.
fn expected_hash(name: &str, data: &[(&str, &str)]) -> String {
    use nudge::rollout::{content, refs::Source};
    let source = Source::configmap(name);
    let data = content::Data {
        entries: data.iter().map(|(k, v)| (*k, v.as_bytes())).collect(),
    };
    let mut objects = BTreeMap::new();
    objects.insert(source.clone(), content::object_hash(&source, &data));
    content::combined_hash(&objects)
}

/// `cfg` followed by `app`, `other` followed by `bystander`; the controller running and both
/// adopted. Returns the controller and the two generations.
async fn adopted_pair(env: &Env) -> (Controller, i64, i64) {
    adopted_pair_logging(env, "info,kube=warn").await
}

async fn adopted_pair_logging(env: &Env, log_filter: &str) -> (Controller, i64, i64) {
    env.put_configmap("cfg", &[("k", "1")], &[]).await;
    env.put_configmap("other", &[("k", "1")], &[]).await;
    env.deployment("app", "configMap", "cfg").await;
    env.deployment("bystander", "configMap", "other").await;
    let controller = Controller::start(env, log_filter);
    let app = env.adopted("app").await;
    let bystander = env.adopted("bystander").await;
    (controller, app, bystander)
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_configmap_changed_while_the_api_server_was_down_is_rolled_exactly_once_after_it_returns()
{
    let _serial = SERIAL.lock().await;
    let Some(env) = env("apiserver").await else {
        return;
    };
    let (mut controller, app, bystander) = adopted_pair(&env).await;

    env.proxy.close();
    env.cluster.stop_component("kube-apiserver");
    tokio::time::sleep(OUTAGE).await;
    controller.assert_running();
    env.cluster.start_component("kube-apiserver", &[]);
    // The controller is still cut off: this change happens while it cannot see anything.
    env.put_configmap("cfg", &[("k", "2")], &[]).await;
    // A touch that changes no content (labels only) must not roll.
    env.put_configmap("other", &[("k", "1")], &[("touched", "yes")])
        .await;
    let refused = env.proxy.refused();
    env.proxy.open();

    env.rolled_to("app", app + 1, &expected_hash("cfg", &[("k", "2")]))
        .await;
    env.stays_at("app", app + 1).await;
    env.stays_at("bystander", bystander).await;
    controller.assert_running();
    // It retried while cut off, with backoff rather than a hot loop: 9 watches (3 workload
    // kinds x workloads, ConfigMaps, Secrets) at 0.5 s doubling to 10 s make some 60 attempts
    // in a 30 s window; a loop without backoff makes thousands.
    assert!(
        (2..250).contains(&refused.len()),
        "{} reconnect attempts during the outage",
        refused.len()
    );
}

#[tokio::test]
async fn a_configmap_changed_after_etcd_restarted_under_the_api_server_is_rolled_exactly_once() {
    let _serial = SERIAL.lock().await;
    let Some(env) = env("etcd").await else {
        return;
    };
    let (mut controller, app, bystander) = adopted_pair(&env).await;

    env.cluster.stop_component("etcd");
    tokio::time::sleep(Duration::from_secs(10)).await;
    controller.assert_running();
    env.cluster.start_component("etcd", &[]);
    env.put_configmap("cfg", &[("k", "2")], &[]).await;

    env.rolled_to("app", app + 1, &expected_hash("cfg", &[("k", "2")]))
        .await;
    env.stays_at("app", app + 1).await;
    env.stays_at("bystander", bystander).await;
    controller.assert_running();
}

#[tokio::test]
async fn a_relist_after_the_watch_expired_rolls_nothing_that_did_not_change() {
    let _serial = SERIAL.lock().await;
    let Some(env) = env("relist").await else {
        return;
    };
    let (mut controller, app, bystander) =
        adopted_pair_logging(&env, "info,kube=warn,kube_runtime::watcher=debug").await;
    let lists_before = env.audit_count("configmaps", "list");

    env.proxy.close();
    // resourceVersions move, content does not (a re-apply with a new label), plus unrelated
    // churn; the restarted API server's fresh watch cache no longer holds the controller's
    // resourceVersion, so its watches get 410 Gone and relist.
    env.put_configmap("cfg", &[("k", "1")], &[("touched", "yes")])
        .await;
    for i in 0..5 {
        env.put_configmap("unrelated", &[("i", &i.to_string())], &[])
            .await;
    }
    env.cluster.stop_component("kube-apiserver");
    env.cluster.start_component("kube-apiserver", &[]);
    env.proxy.open();

    let deadline = Instant::now() + WAIT;
    while env.audit_count("configmaps", "list") <= lists_before {
        assert!(
            Instant::now() < deadline,
            "no relist of ConfigMaps within {WAIT:?}; controller log:\n{}",
            controller.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Caught up: a real change after the relist rolls, and only that.
    env.put_configmap("other", &[("k", "2")], &[]).await;
    env.rolled_to(
        "bystander",
        bystander + 1,
        &expected_hash("other", &[("k", "2")]),
    )
    .await;
    env.stays_at("app", app).await;
    env.stays_at("bystander", bystander + 1).await;
    controller.assert_running();
}

#[tokio::test]
async fn an_unreferenced_secret_is_never_read_and_no_secret_value_reaches_the_debug_log() {
    let _serial = SERIAL.lock().await;
    let Some(env) = env("secrets").await else {
        return;
    };
    const USED_1: &str = "used-value-5f2c1e9a";
    const USED_2: &str = "used-value-77b0d413";
    const UNUSED: &str = "unused-value-c08e6b52";
    env.put_secret("used", "password", USED_1).await;
    env.put_secret("unused", "password", UNUSED).await;
    env.deployment("app", "secret", "used").await;
    let controller = Controller::start(&env, "debug");
    let app = env.adopted("app").await;
    env.put_secret("used", "password", USED_2).await;
    env.put_secret("unused", "password", "unused-value-2").await;
    eventually("app rolled", WAIT, || async {
        (env.state("app").await?.0 == app + 1).then_some(())
    })
    .await;
    env.stays_at("app", app + 1).await;

    let events = env.audit("secrets");
    let by = |verb: &str| -> Vec<&serde_json::Value> {
        events
            .iter()
            .filter(|e| e["verb"] == verb && e["stage"] == "ResponseComplete")
            .collect()
    };
    // The audit log works: the followed Secret was read (adopt + change).
    assert!(
        by("get")
            .iter()
            .filter(|e| e["objectRef"]["name"] == "used")
            .count()
            >= 2,
        "no GET of the followed Secret in the audit log"
    );
    let unused_gets: Vec<_> = by("get")
        .into_iter()
        .filter(|e| e["objectRef"]["name"] != "used")
        .collect();
    assert!(unused_gets.is_empty(), "Secret data read: {unused_gets:?}");
    // Lists are logged with their response: metadata only. (The audit log does not record a
    // request's Accept header, so a watch's media type is not visible; each watch resumes the
    // list before it with the same watcher, i.e. the same `Api<PartialObjectMeta<Secret>>`.)
    let lists = by("list");
    assert!(!lists.is_empty(), "no list of Secrets in the audit log");
    for list in &lists {
        assert_eq!(
            list["responseObject"]["kind"], "PartialObjectMetadataList",
            "a list of Secrets with data: {list}"
        );
    }

    let log = controller.log();
    assert!(
        log.contains("rollout"),
        "no rollout in the debug log:\n{log}"
    );
    for value in [USED_1, USED_2, UNUSED] {
        let b64 = base64(value.as_bytes());
        assert!(
            !log.contains(value) && !log.contains(&b64),
            "a Secret value reached the debug log"
        );
    }
}

/// Standard base64 with padding (how Secret data travels in JSON).
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
