//! `nudge rollout` against a real kube-apiserver + kube-controller-manager (no mocked API):
//! the controller runs as a real process (`nudge rollout --namespace NS`), each test in its
//! own namespace; a rollout is observed as a new ReplicaSet made by the Deployment controller.
#![cfg(feature = "rollout")]

#[path = "support/cluster.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use support::{cluster, eventually, kube_client, Cluster, RolloutProcess};

const HASH: &str = "nudge.dev/config-hash";
const WAIT: Duration = Duration::from_secs(30);
/// How long "nothing happens" is watched for, after the controller provably caught up.
const QUIET: Duration = Duration::from_secs(2);

struct Env {
    client: Client,
    ns: String,
    kubeconfig: PathBuf,
}

/// A fresh namespace on the shared cluster, or `None` to skip.
async fn env(test: &str) -> Option<Env> {
    static N: AtomicU32 = AtomicU32::new(0);
    let cluster: &Cluster = cluster()?;
    let client = kube_client(&cluster.kubeconfig).await.unwrap();
    let short: String = test
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(20)
        .collect();
    let ns = format!(
        "{}-{}-{}",
        short.to_lowercase(),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    Some(Env {
        client,
        ns,
        kubeconfig: cluster.kubeconfig.clone(),
    })
}

/// A running `nudge rollout`; killed (SIGKILL) on drop.
type Controller = RolloutProcess;

impl RolloutProcess {
    fn start(env: &Env) -> Controller {
        Controller::start_with(env, &env.kubeconfig, &["--namespace", &env.ns], "")
    }

    /// `nudge rollout --debounce 300ms --kubeconfig KUBECONFIG ARGS...`, logging to a file
    /// named after the namespace and `tag`.
    fn start_with(env: &Env, kubeconfig: &Path, args: &[&str], tag: &str) -> Controller {
        let log = std::env::temp_dir().join(format!("nudge-rollout-{}{tag}.log", env.ns));
        RolloutProcess::spawn(kubeconfig, args, "info,kube=warn", log)
    }
}

impl Env {
    fn configmaps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn put_configmap(&self, name: &str, data: &[(&str, &str)]) {
        let data: BTreeMap<&str, &str> = data.iter().copied().collect();
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data});
        self.configmaps()
            .patch(
                name,
                &PatchParams::apply("test").force(),
                &Patch::Apply(&body),
            )
            .await
            .unwrap();
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

    /// A Deployment `name` with these pod-template annotations and pod spec parts.
    async fn deployment(&self, name: &str, annotations: serde_json::Value, pod: serde_json::Value) {
        let mut spec = json!({"containers": [{"name": "app", "image": "registry.invalid/app:1"}]});
        for (k, v) in pod.as_object().unwrap() {
            if k == "container" {
                for (ck, cv) in v.as_object().unwrap() {
                    spec["containers"][0][ck] = cv.clone();
                }
            } else {
                spec[k] = v.clone();
            }
        }
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}, "annotations": annotations}, "spec": spec}
            }
        }))
        .unwrap();
        self.deployments()
            .create(&PostParams::default(), &d)
            .await
            .unwrap();
    }

    async fn replicasets(&self, app: &str) -> usize {
        let rs: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &self.ns);
        rs.list(&ListParams::default().labels(&format!("app={app}")))
            .await
            .unwrap()
            .items
            .len()
    }

    async fn annotation(&self, name: &str, template: bool) -> Option<String> {
        let d = self.deployments().get(name).await.unwrap();
        let meta = if template {
            d.spec.template.metadata.clone().unwrap_or_default()
        } else {
            d.metadata
        };
        meta.annotations.and_then(|a| a.get(HASH).cloned())
    }

    /// Waits until the controller recorded its baseline on the workload (no rollout).
    async fn adopted(&self, name: &str) -> String {
        eventually(&format!("{name} adopted"), WAIT, || async {
            self.annotation(name, false).await
        })
        .await
    }

    /// Waits until the Deployment has `count` ReplicaSets; returns the template hash.
    async fn rolled_to(&self, name: &str, count: usize) -> String {
        eventually(
            &format!("{name} to have {count} ReplicaSets"),
            WAIT,
            || async {
                let hash = self.annotation(name, true).await?;
                (self.replicasets(name).await == count).then_some(hash)
            },
        )
        .await
    }

    /// Asserts the Deployment keeps `count` ReplicaSets for [`QUIET`].
    async fn stays_at(&self, name: &str, count: usize) {
        let until = std::time::Instant::now() + QUIET;
        while std::time::Instant::now() < until {
            assert_eq!(
                self.replicasets(name).await,
                count,
                "{name} rolled unexpectedly"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn warning_events(&self) -> Vec<String> {
        let events: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.client.clone(), &self.ns);
        let list = events.list(&ListParams::default()).await.unwrap();
        list.items
            .into_iter()
            .filter(|e| e.type_.as_deref() == Some("Warning"))
            .map(|e| {
                format!(
                    "{} {}",
                    e.reason.unwrap_or_default(),
                    e.note.unwrap_or_default()
                )
            })
            .collect()
    }
}

fn volume(kind: &str, name: &str) -> serde_json::Value {
    let source = match kind {
        "configMap" => json!({"configMap": {"name": name}}),
        _ => json!({"secret": {"secretName": name}}),
    };
    let mut v = source;
    v["name"] = json!("config");
    json!({"volumes": [v], "container": {"volumeMounts": [{"name": "config", "mountPath": "/etc/app"}]}})
}

fn watch(names: &str) -> serde_json::Value {
    json!({"nudge.dev/watch": names})
}

#[tokio::test]
async fn changing_a_watched_configmap_creates_exactly_one_new_replicaset() {
    let Some(env) = env("change").await else {
        return;
    };
    env.put_configmap("web-config", &[("app.conf", "v=1")])
        .await;
    env.deployment(
        "web",
        watch("web-config"),
        volume("configMap", "web-config"),
    )
    .await;
    let _controller = Controller::start(&env);
    let baseline = env.adopted("web").await;
    assert_eq!(env.replicasets("web").await, 1, "adopting must not roll");

    env.put_configmap("web-config", &[("app.conf", "v=2")])
        .await;
    let rolled = env.rolled_to("web", 2).await;
    assert_ne!(rolled, baseline);
    env.stays_at("web", 2).await;
}

#[tokio::test]
async fn an_unchanged_reapply_creates_no_replicaset_and_an_unannotated_deployment_is_untouched() {
    let Some(env) = env("unchanged").await else {
        return;
    };
    env.put_configmap("shared", &[("app.conf", "v=1")]).await;
    env.put_configmap("witness", &[("a", "1")]).await;
    env.deployment("watched", watch("shared"), volume("configMap", "shared"))
        .await;
    env.deployment("plain", json!({}), volume("configMap", "shared"))
        .await;
    env.deployment("witness", watch("witness"), volume("configMap", "witness"))
        .await;
    let _controller = Controller::start(&env);
    env.adopted("watched").await;
    env.adopted("witness").await;

    // Same data, new resourceVersion (a label), then a real change the witness follows: once
    // the witness rolled, the controller has seen the touch too.
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shared", "labels": {"touched": "yes"}}, "data": {"app.conf": "v=1"}});
    env.configmaps()
        .patch(
            "shared",
            &PatchParams::apply("test").force(),
            &Patch::Apply(&body),
        )
        .await
        .unwrap();
    env.put_configmap("witness", &[("a", "2")]).await;
    env.rolled_to("witness", 2).await;
    env.stays_at("watched", 1).await;

    env.put_configmap("shared", &[("app.conf", "v=2")]).await;
    env.rolled_to("watched", 2).await;
    assert_eq!(env.replicasets("plain").await, 1);
    assert_eq!(env.annotation("plain", false).await, None);
    assert_eq!(env.annotation("plain", true).await, None);
}

#[tokio::test]
async fn an_envfrom_only_consumer_is_rolled() {
    let Some(env) = env("envfrom").await else {
        return;
    };
    env.put_configmap("env-config", &[("LEVEL", "info")]).await;
    let pod = json!({"container": {"envFrom": [{"configMapRef": {"name": "env-config"}}]}});
    env.deployment("envapp", json!({"reloader.stakater.com/auto": "true"}), pod)
        .await;
    let _controller = Controller::start(&env);
    env.adopted("envapp").await;
    env.put_configmap("env-config", &[("LEVEL", "debug")]).await;
    env.rolled_to("envapp", 2).await;
}

#[tokio::test]
async fn a_secret_change_rolls_its_consumers() {
    let Some(env) = env("secret").await else {
        return;
    };
    env.put_secret("creds", "password", "one").await;
    let by_env = json!({"container": {"env": [{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}}]}});
    env.deployment(
        "by-env",
        json!({"secret.reloader.stakater.com/reload": "creds"}),
        by_env,
    )
    .await;
    env.deployment(
        "by-volume",
        watch("secret/creds"),
        volume("secret", "creds"),
    )
    .await;
    let _controller = Controller::start(&env);
    env.adopted("by-env").await;
    env.adopted("by-volume").await;
    env.put_secret("creds", "password", "two").await;
    env.rolled_to("by-env", 2).await;
    env.rolled_to("by-volume", 2).await;
}

#[tokio::test]
async fn invalid_yaml_holds_the_rollout_and_records_a_warning_event() {
    let Some(env) = env("invalid").await else {
        return;
    };
    env.put_configmap("app-yaml", &[("app.yaml", "level: info")])
        .await;
    env.put_configmap("witness", &[("a", "1")]).await;
    env.deployment(
        "yamlapp",
        watch("app-yaml"),
        volume("configMap", "app-yaml"),
    )
    .await;
    env.deployment("witness", watch("witness"), volume("configMap", "witness"))
        .await;
    let _controller = Controller::start(&env);
    env.adopted("yamlapp").await;
    env.adopted("witness").await;

    env.put_configmap("app-yaml", &[("app.yaml", "level: [info")])
        .await;
    let warning = eventually("a Warning Event", WAIT, || async {
        env.warning_events()
            .await
            .into_iter()
            .find(|e| e.contains("InvalidConfig"))
    })
    .await;
    assert!(warning.contains("app.yaml"), "{warning}");
    env.put_configmap("witness", &[("a", "2")]).await;
    env.rolled_to("witness", 2).await;
    assert_eq!(
        env.replicasets("yamlapp").await,
        1,
        "invalid content must not roll"
    );

    env.put_configmap("app-yaml", &[("app.yaml", "level: debug")])
        .await;
    env.rolled_to("yamlapp", 2).await;
}

#[tokio::test]
async fn a_restarted_controller_rolls_nothing() {
    let Some(env) = env("restart").await else {
        return;
    };
    env.put_configmap("cfg", &[("k", "1")]).await;
    env.put_configmap("witness", &[("a", "1")]).await;
    env.deployment("app", watch("cfg"), volume("configMap", "cfg"))
        .await;
    env.deployment("witness", watch("witness"), volume("configMap", "witness"))
        .await;
    let first = Controller::start(&env);
    env.adopted("app").await;
    env.adopted("witness").await;
    env.put_configmap("cfg", &[("k", "2")]).await;
    env.rolled_to("app", 2).await;
    drop(first);

    let _second = Controller::start(&env);
    env.put_configmap("witness", &[("a", "2")]).await;
    env.rolled_to("witness", 2).await;
    env.stays_at("app", 2).await;
}

#[tokio::test]
async fn five_quick_edits_give_one_or_two_rollouts_ending_on_the_newest_hash() {
    let Some(env) = env("burst").await else {
        return;
    };
    env.put_configmap("burst", &[("k", "0")]).await;
    env.deployment("burst", watch("burst"), volume("configMap", "burst"))
        .await;
    let _controller = Controller::start(&env);
    env.adopted("burst").await;
    for i in 1..=5 {
        env.put_configmap("burst", &[("k", &i.to_string())]).await;
    }
    let newest = expected_hash("burst", &[("k", "5")]);
    eventually("the newest hash on the template", WAIT, || async {
        (env.annotation("burst", true).await.as_deref() == Some(newest.as_str())).then_some(())
    })
    .await;
    let count = eventually("the last ReplicaSet", WAIT, || async {
        let n = env.replicasets("burst").await;
        (n >= 2).then_some(n)
    })
    .await;
    assert!(
        (2..=3).contains(&count),
        "{count} ReplicaSets: expected one or two rollouts"
    );
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

// ---------------------------------------------------------------------------------------------
// The install's RBAC (k8s/rollout/) and leader election.

/// `kubectl ARGS` from the cached control-plane binaries, as the admin; panics on failure.
fn kubectl(env: &Env, args: &[&str]) -> String {
    let bin = kubectl_bin();
    let out = Command::new(bin)
        .arg("--kubeconfig")
        .arg(&env.kubeconfig)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kubectl {args:?}: {text}");
    text
}

/// The cached kubectl (`scripts/test-cluster.sh bin-dir`).
fn kubectl_bin() -> PathBuf {
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/test-cluster.sh"))
        .arg("bin-dir")
        .output()
        .unwrap();
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("kubectl")
}

fn install_file(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("k8s/rollout")
        .join(name)
        .display()
        .to_string()
}

/// The ServiceAccount's token, from the Secret the 1.20 token controller made for it.
async fn service_account_token(env: &Env, ns: &str, name: &str) -> String {
    eventually("the ServiceAccount's token Secret", WAIT, || async {
        let sa = Api::<ServiceAccount>::namespaced(env.client.clone(), ns)
            .get_opt(name)
            .await
            .ok()??;
        let secret_name = sa.secrets?.first()?.name.clone()?;
        let secret = Api::<Secret>::namespaced(env.client.clone(), ns)
            .get_opt(&secret_name)
            .await
            .ok()??;
        let token = secret.data?.get("token")?.0.clone();
        String::from_utf8(token).ok()
    })
    .await
}

/// The admin kubeconfig with its token replaced by `token`.
fn kubeconfig_with_token(env: &Env, token: &str) -> PathBuf {
    let admin = std::fs::read_to_string(&env.kubeconfig).unwrap();
    let text: Vec<String> = admin
        .lines()
        .map(|line| match line.split_once("token:") {
            Some((indent, _)) => format!("{indent}token: {token}"),
            None => line.to_owned(),
        })
        .collect();
    let path = std::env::temp_dir().join(format!("nudge-sa-{}.kubeconfig", env.ns));
    std::fs::write(&path, text.join("\n") + "\n").unwrap();
    path
}

impl Env {
    /// `ConfigChanged` Events on workload `name`, as (reporting instance, note).
    async fn rollout_events(&self, name: &str) -> Vec<(String, String)> {
        let events: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.client.clone(), &self.ns);
        let list = events.list(&ListParams::default()).await.unwrap();
        list.items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("ConfigChanged"))
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .map(|e| {
                (
                    e.reporting_instance.unwrap_or_default(),
                    e.note.unwrap_or_default(),
                )
            })
            .collect()
    }

    async fn lease_holder(&self, lease: &str) -> Option<String> {
        Api::<Lease>::namespaced(self.client.clone(), &self.ns)
            .get_opt(lease)
            .await
            .unwrap()?
            .spec?
            .holder_identity
    }
}

#[tokio::test]
async fn the_install_service_account_may_do_everything_the_controller_does_and_may_not_write_configmaps(
) {
    let Some(env) = env("rbac").await else {
        return;
    };
    kubectl(
        &env,
        &[
            "apply",
            "-f",
            &install_file("namespace.yaml"),
            "-f",
            &install_file("serviceaccount.yaml"),
            "-f",
            &install_file("rbac.yaml"),
        ],
    );
    let token = service_account_token(&env, "nudge-system", "nudge-rollout").await;
    let as_controller = kubeconfig_with_token(&env, &token);

    env.put_configmap("cfg", &[("k", "1")]).await;
    env.deployment("app", watch("cfg"), volume("configMap", "cfg"))
        .await;
    let label = json!({"metadata": {"labels": {"nudge-test": env.ns}}});
    env.deployments()
        .patch("app", &PatchParams::default(), &Patch::Merge(&label))
        .await
        .unwrap();
    // As installed: all namespaces (here narrowed by a label selector to this test's
    // workload), leader election on the install's own Lease.
    let selector = format!("nudge-test={}", env.ns);
    let controller = Controller::start_with(
        &env,
        &as_controller,
        &[
            "--selector",
            &selector,
            "--leader-elect",
            "--lease-namespace",
            "nudge-system",
            "--identity",
            "rbac-test",
        ],
        "",
    );
    env.adopted("app").await;
    env.put_configmap("cfg", &[("k", "2")]).await;
    env.rolled_to("app", 2).await;
    eventually("the ConfigChanged Event", WAIT, || async {
        let events = env.rollout_events("app").await;
        (events.len() == 1).then_some(())
    })
    .await;
    let lease: Api<Lease> = Api::namespaced(env.client.clone(), "nudge-system");
    let holder = lease.get("nudge-rollout").await.unwrap().spec.unwrap();
    assert_eq!(holder.holder_identity.as_deref(), Some("rbac-test"));
    let log = controller.log();
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "the controller was denied something:\n{log}"
    );

    // The same identity may not write ConfigMaps: 403 from the API, and from kubectl.
    let configmaps: Api<ConfigMap> =
        Api::namespaced(kube_client(&as_controller).await.unwrap(), &env.ns);
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"k": "evil"}});
    let denied = configmaps
        .patch("cfg", &PatchParams::apply("intruder"), &Patch::Apply(&body))
        .await
        .expect_err("a ConfigMap write must be denied");
    assert!(
        matches!(&denied, kube::Error::Api(status) if status.code == 403),
        "{denied:?}"
    );
    let bin = kubectl_bin();
    let out = Command::new(bin)
        .arg("--kubeconfig")
        .arg(&as_controller)
        .args([
            "-n",
            &env.ns,
            "create",
            "configmap",
            "intruder",
            "--from-literal=a=b",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("forbidden"),
        "{stderr}"
    );
    assert_eq!(
        env.configmaps().get("cfg").await.unwrap().data.unwrap()["k"],
        "2"
    );
}

const LEASE: &str = "nudge-rollout";
const LEASE_DURATION: Duration = Duration::from_secs(4);

/// A replica with leader election on this namespace's Lease, named `identity`.
fn replica(env: &Env, identity: &str) -> Controller {
    Controller::start_with(
        env,
        &env.kubeconfig,
        &[
            "--namespace",
            &env.ns,
            "--leader-elect",
            "--lease-namespace",
            &env.ns,
            "--lease-name",
            LEASE,
            "--lease-duration",
            "4s",
            "--identity",
            identity,
        ],
        &format!("-{identity}"),
    )
}

#[tokio::test]
async fn two_replicas_with_leader_election_roll_a_change_exactly_once() {
    let Some(env) = env("leaderonce").await else {
        return;
    };
    env.put_configmap("cfg", &[("k", "1")]).await;
    env.deployment("app", watch("cfg"), volume("configMap", "cfg"))
        .await;
    let replicas = [replica(&env, "replica-a"), replica(&env, "replica-b")];
    let leader = eventually("a lease holder", WAIT, || env.lease_holder(LEASE)).await;
    env.adopted("app").await;

    env.put_configmap("cfg", &[("k", "2")]).await;
    env.rolled_to("app", 2).await;
    env.stays_at("app", 2).await;
    let events = env.rollout_events("app").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0, leader, "the Event comes from the leader");
    let acting: Vec<&Controller> = replicas
        .iter()
        .filter(|r| r.log().contains("rollout: "))
        .collect();
    assert_eq!(acting.len(), 1, "exactly one replica rolls");
    assert_eq!(env.lease_holder(LEASE).await, Some(leader));
}

#[tokio::test]
async fn killing_the_leader_hands_over_and_the_standby_rolls_the_next_change_within_the_lease_duration(
) {
    let Some(env) = env("leaderkill").await else {
        return;
    };
    env.put_configmap("cfg", &[("k", "1")]).await;
    env.deployment("app", watch("cfg"), volume("configMap", "cfg"))
        .await;
    let mut replicas = vec![
        ("replica-a", replica(&env, "replica-a")),
        ("replica-b", replica(&env, "replica-b")),
    ];
    let leader = eventually("a lease holder", WAIT, || env.lease_holder(LEASE)).await;
    let baseline = env.adopted("app").await;

    // SIGKILL: no clean release, the standby must wait for the Lease to expire.
    replicas.retain(|(identity, _)| *identity != leader);
    let killed = std::time::Instant::now();
    env.put_configmap("cfg", &[("k", "2")]).await;
    // The Lease expires at most LEASE_DURATION after the kill; the standby looks every third
    // of it, then lists, debounces (300 ms) and patches.
    let limit = LEASE_DURATION + LEASE_DURATION / 3 + Duration::from_secs(3);
    let hash = eventually("the standby's rollout", limit, || async {
        env.annotation("app", true).await
    })
    .await;
    let took = killed.elapsed();
    eprintln!("handover: the new hash was on the template {took:?} after the leader was killed");
    assert_ne!(hash, baseline);
    env.rolled_to("app", 2).await;
    let standby = replicas[0].0;
    assert_eq!(env.lease_holder(LEASE).await.as_deref(), Some(standby));
    assert!(replicas[0].1.log().contains("became leader"));
}
