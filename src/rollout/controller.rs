//! The kube-rs `Controller`s: for each scope (one namespace, or all but the ignored), a
//! reflector per workload kind and one metadata-only watch per source kind (ConfigMaps,
//! Secrets), shared by the three kinds' controllers: each event is mapped to the workloads
//! that follow the object and sent to their controller. Object data is never watched;
//! [`super::reconcile`] reads just the followed objects.
//!
//! Memory follows the workloads and what they reference, not the ConfigMaps and Secrets in
//! scope: a watched ConfigMap or Secret is decoded as name, namespace and resourceVersion only
//! ([`SourceMeta`]) and not stored at all; the lists are paged; a stored workload is cut
//! down to what reconciling reads ([`workload::slim`]).

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc;
use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::core::ObjectMeta;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::ListSemantic;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use serde::{Deserialize, Deserializer};
use tokio::sync::watch;

use super::reconcile::{self, Context};
use super::refs::Source;
use super::settings::{Scope, Settings};
use super::workload::{self, Workload};

/// Reconciles running at once per controller.
const CONCURRENCY: u16 = 4;

/// Runs every controller until `shutdown` turns true.
pub async fn run(
    client: Client,
    settings: &Settings,
    ctx: Arc<Context>,
    shutdown: watch::Receiver<bool>,
) {
    let namespaces: Vec<Option<String>> = match &settings.scope {
        Scope::Namespaces(list) => list.iter().cloned().map(Some).collect(),
        Scope::All { .. } => vec![None],
    };
    let mut tasks: Vec<Pin<Box<dyn Future<Output = ()> + '_>>> = Vec::new();
    for ns in namespaces {
        tasks.push(Box::pin(run_scope((
            client.clone(),
            ns,
            settings.clone(),
            ctx.clone(),
            shutdown.clone(),
        ))));
    }
    futures::future::join_all(tasks).await;
}

type Args = (
    Client,
    Option<String>,
    Settings,
    Arc<Context>,
    watch::Receiver<bool>,
);

fn api<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// `metadata.namespace!=a,metadata.namespace!=b` for the ignored namespaces.
fn ignore_fields(scope: &Scope) -> Option<String> {
    match scope {
        Scope::All { ignore } if !ignore.is_empty() => Some(
            ignore
                .iter()
                .map(|ns| format!("metadata.namespace!={ns}"))
                .collect::<Vec<_>>()
                .join(","),
        ),
        _ => None,
    }
}

/// Objects a page of a workload list: a whole workload decodes to tens of KiB (its
/// `managedFields` alone to a tree of maps) before [`workload::slim`] cuts it down, so a page
/// is what a list costs at its peak.
const WORKLOAD_PAGE: u32 = 50;
/// Objects a page of a ConfigMap or Secret list (metadata only, decoded to a few strings).
const SOURCE_PAGE: u32 = 500;

/// Lists are paged and read at the most recent resourceVersion: a list "at any
/// resourceVersion" (`resourceVersion=0`, kube's default) is served from the API server's
/// watch cache, which ignores the page size and answers with every object in scope at once —
/// a response, and its decoded form, that grow with the cluster.
fn watch_config(settings: &Settings, workloads: bool) -> watcher::Config {
    let mut config = watcher::Config::default()
        .list_semantic(ListSemantic::MostRecent)
        .page_size(if workloads {
            WORKLOAD_PAGE
        } else {
            SOURCE_PAGE
        });
    if let Some(fields) = ignore_fields(&settings.scope) {
        config = config.fields(&fields);
    }
    if let (true, Some(selector)) = (workloads, &settings.selector) {
        config = config.labels(selector);
    }
    config
}

/// One scope: three workload controllers fed by two shared source watches.
async fn run_scope((client, ns, settings, ctx, mut shutdown): Args) {
    let deployments = Kind::<Deployment>::new(&client, ns.as_deref(), &settings);
    let statefulsets = Kind::<StatefulSet>::new(&client, ns.as_deref(), &settings);
    let daemonsets = Kind::<DaemonSet>::new(&client, ns.as_deref(), &settings);
    let sources = futures::stream::select(
        source_events::<ConfigMap>(&client, ns.as_deref(), &settings, Source::configmap),
        source_events::<Secret>(&client, ns.as_deref(), &settings, Source::secret),
    );
    let triggers = (
        deployments.trigger(),
        statefulsets.trigger(),
        daemonsets.trigger(),
    );
    let fan_out = sources.for_each(move |(namespace, source)| {
        triggers.0.send(&namespace, &source);
        triggers.1.send(&namespace, &source);
        triggers.2.send(&namespace, &source);
        std::future::ready(())
    });
    let stop = async move {
        // A dropped sender means the process is exiting: stop too.
        let _ = shutdown.wait_for(|stop| *stop).await;
    }
    .shared();
    let controllers = futures::future::join3(
        deployments.run(&settings, ctx.clone(), stop.clone()),
        statefulsets.run(&settings, ctx.clone(), stop.clone()),
        daemonsets.run(&settings, ctx, stop),
    );
    // The source watches never end: the scope ends when its controllers have shut down.
    futures::future::select(Box::pin(fan_out), Box::pin(controllers)).await;
}

/// A ConfigMap or Secret watch, as `(namespace, source)` for each object it touches (applied,
/// deleted, or listed again after a relist).
fn source_events<K>(
    client: &Client,
    ns: Option<&str>,
    settings: &Settings,
    source: fn(&str) -> Source,
) -> impl Stream<Item = (String, Source)> + Send + 'static
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + fmt::Debug
        + Send
        + Sync
        + 'static,
{
    resilient(watcher(
        api::<SourceMeta<K>>(client, ns),
        watch_config(settings, false),
    ))
    .touched_objects()
    .filter_map(move |object| {
        let touched = match object {
            Ok(object) => {
                let SourceMeta { metadata, .. } = object;
                metadata.namespace.zip(metadata.name)
            }
            Err(e) => {
                tracing::debug!(kind = K::kind(&()).as_ref(), "watch: {e}");
                None
            }
        };
        std::future::ready(touched.map(|(namespace, name)| (namespace, source(&name))))
    })
}

/// One workload kind: its reflector (over slimmed objects) and the channel the source watches
/// trigger its followers through.
struct Kind<K: Workload> {
    store: Store<K>,
    workloads: Pin<Box<dyn Stream<Item = Result<K, watcher::Error>> + Send>>,
    tx: mpsc::UnboundedSender<ObjectRef<K>>,
    rx: mpsc::UnboundedReceiver<ObjectRef<K>>,
}

impl<K: Workload> Kind<K> {
    fn new(client: &Client, ns: Option<&str>, settings: &Settings) -> Self {
        let (store, writer) = reflector::store::<K>();
        let workloads = reflector::reflector(
            writer,
            resilient(watcher(api::<K>(client, ns), watch_config(settings, true)))
                .modify(slim::<K>),
        )
        .applied_objects()
        .boxed();
        let (tx, rx) = mpsc::unbounded();
        Kind {
            store,
            workloads,
            tx,
            rx,
        }
    }

    fn trigger(&self) -> Trigger<K> {
        Trigger {
            store: self.store.clone(),
            tx: self.tx.clone(),
        }
    }

    async fn run(
        self,
        settings: &Settings,
        ctx: Arc<Context>,
        stop: impl Future<Output = ()> + Send + Sync + 'static,
    ) {
        let config = ControllerConfig::default()
            .debounce(settings.debounce)
            .concurrency(CONCURRENCY);
        drop(self.tx);
        Controller::for_stream(self.workloads, self.store)
            .with_config(config)
            .reconcile_on(self.rx)
            .graceful_shutdown_on(stop)
            .run(reconcile::reconcile::<K>, reconcile::error_policy::<K>, ctx)
            .for_each(|result| async move {
                if let Err(e) = result {
                    tracing::debug!(kind = K::kind(&()).as_ref(), "controller: {e}");
                }
            })
            .await;
    }
}

/// [`workload::slim`] as the watch applies it, before the reflector stores the workload: one
/// follows something when its annotations ask for a source, or are invalid (reconciling
/// reports them, so it keeps them).
fn slim<K: Workload>(workload: &mut K) {
    let follows = reconcile::followed_sources(workload).map_or(true, |s| !s.is_empty());
    workload::slim(workload, follows);
}

/// Sends the workloads of one kind that follow a touched source to their controller.
struct Trigger<K: Workload> {
    store: Store<K>,
    tx: mpsc::UnboundedSender<ObjectRef<K>>,
}

impl<K: Workload> Trigger<K> {
    fn send(&self, namespace: &str, source: &Source) {
        for follower in followers(&self.store, namespace, source) {
            // Fails only once the controller has shut down.
            let _ = self.tx.unbounded_send(follower);
        }
    }
}

/// A ConfigMap or Secret as the controller watches it: name, namespace and resourceVersion.
/// The requests are metadata-only ([`Resource::metadata_api`]), and decoding skips every
/// other field, so neither `managedFields` nor annotations (where `kubectl apply` keeps a
/// copy of a Secret's data) are ever held, even for the length of a list.
#[derive(Debug)]
pub struct SourceMeta<K> {
    metadata: ObjectMeta,
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for SourceMeta<K> {
    fn clone(&self) -> Self {
        SourceMeta {
            metadata: self.metadata.clone(),
            kind: PhantomData,
        }
    }
}

impl<'de, K> Deserialize<'de> for SourceMeta<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            #[serde(default)]
            metadata: WireMeta,
        }
        #[derive(Deserialize, Default)]
        #[serde(rename_all = "camelCase")]
        struct WireMeta {
            name: Option<String>,
            namespace: Option<String>,
            resource_version: Option<String>,
        }
        let Wire { metadata } = Wire::deserialize(deserializer)?;
        Ok(SourceMeta {
            metadata: ObjectMeta {
                name: metadata.name,
                namespace: metadata.namespace,
                resource_version: metadata.resource_version,
                ..ObjectMeta::default()
            },
            kind: PhantomData,
        })
    }
}

impl<K: Resource<DynamicType = ()>> Resource for SourceMeta<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }

    fn metadata_api() -> bool {
        true
    }
}

/// A watch that survives outages: errors (API server or etcd unreachable, connection cut) are
/// retried with [`WatchBackoff`]; a 410 Gone (the watch's resourceVersion expired) is not a
/// failure but the server asking for a relist, which the watcher has already scheduled, so it
/// is dropped here and the relist starts at once instead of after a backoff step. The relist
/// re-triggers every follower, and reconciling compares hashes, so it rolls only what changed.
fn resilient<T, S>(stream: S) -> impl Stream<Item = Result<watcher::Event<T>, watcher::Error>>
where
    S: Stream<Item = Result<watcher::Event<T>, watcher::Error>>,
{
    stream
        .filter(|event| {
            let gone =
                matches!(event, Err(watcher::Error::WatchError(status)) if status.code == 410);
            if gone {
                tracing::info!("watch expired (410 Gone): relisting");
            }
            std::future::ready(!gone)
        })
        .backoff(WatchBackoff::default())
}

/// Exponential backoff with jitter for the watches: 0.5 s doubling to at most 10 s (kube's
/// default grows to 30 s and resets only after 2 minutes without errors, which after a
/// one-minute outage delays reconnecting by up to 30 s more). Reset by the first event after
/// a reconnect.
#[derive(Debug)]
pub struct WatchBackoff {
    next: Duration,
    seed: u64,
}

impl WatchBackoff {
    const MIN: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(10);
}

impl Default for WatchBackoff {
    fn default() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        WatchBackoff {
            next: Self::MIN,
            seed,
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        // xorshift: jitter in [0.5, 1.0) of the step, so many watchers do not retry in step.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let jitter = 0.5 + (self.seed >> 11) as f64 / (1u64 << 54) as f64;
        let delay = self.next.mul_f64(jitter);
        self.next = (self.next * 2).min(Self::MAX);
        Some(delay)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = Self::MIN;
    }
}

/// The workloads in `namespace` that follow `source`.
fn followers<K: Workload>(store: &Store<K>, namespace: &str, source: &Source) -> Vec<ObjectRef<K>> {
    store
        .state()
        .iter()
        .filter(|w| w.meta().namespace.as_deref() == Some(namespace))
        .filter(|w| reconcile::followed_sources(w.as_ref()).is_ok_and(|s| s.contains(source)))
        .map(|w| ObjectRef::from_obj(w.as_ref()))
        .collect()
}

/// A debounce that coalesces a burst of edits into one rollout without delaying a lone edit
/// noticeably.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(500);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watched_source_keeps_its_identity_and_nothing_else() {
        let listed = serde_json::json!({
            "kind": "PartialObjectMetadataList",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": "42"},
            "items": [{
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": {
                    "name": "db", "namespace": "ns", "resourceVersion": "41", "uid": "u",
                    "labels": {"app": "db"},
                    "annotations": {"kubectl.kubernetes.io/last-applied-configuration":
                        "{\"data\":{\"password\":\"aHVudGVyMg==\"}}"},
                    "managedFields": [{"manager": "kubectl", "operation": "Update",
                        "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:password": {}}}}]
                }
            }]
        });
        let list: kube::core::ObjectList<SourceMeta<Secret>> =
            serde_json::from_value(listed).unwrap();
        let meta = &list.items[0].metadata;
        assert_eq!(meta.name.as_deref(), Some("db"));
        assert_eq!(meta.namespace.as_deref(), Some("ns"));
        assert_eq!(meta.resource_version.as_deref(), Some("41"));
        assert_eq!(
            *meta,
            ObjectMeta {
                name: meta.name.clone(),
                namespace: meta.namespace.clone(),
                resource_version: meta.resource_version.clone(),
                ..ObjectMeta::default()
            }
        );
        assert!(!format!("{:?}", list.items[0]).contains("aHVudGVyMg"));
        assert!(SourceMeta::<Secret>::metadata_api());
        assert_eq!(SourceMeta::<Secret>::plural(&()), "secrets");
        assert_eq!(SourceMeta::<ConfigMap>::kind(&()), "ConfigMap");
    }

    #[test]
    fn only_the_followers_in_the_namespace_are_triggered() {
        let (store, mut writer) = reflector::store::<Deployment>();
        let deployment = |ns: &str, name: &str, annotated: bool| -> Deployment {
            let annotations = if annotated {
                serde_json::json!({"nudge.dev/watch": "*"})
            } else {
                serde_json::json!({})
            };
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": ns},
                "spec": {"selector": {}, "template": {
                    "metadata": {"annotations": annotations},
                    "spec": {"containers": [{"name": "app",
                        "envFrom": [{"configMapRef": {"name": "cfg"}}]}]}
                }}
            }))
            .unwrap()
        };
        for d in [
            deployment("a", "follows", true),
            deployment("a", "plain", false),
            deployment("b", "elsewhere", true),
        ] {
            let mut d = d;
            slim(&mut d);
            writer.apply_watcher_event(&watcher::Event::Apply(d));
        }
        let names = |ns: &str, source: Source| -> Vec<String> {
            followers(&store, ns, &source)
                .into_iter()
                .map(|r| r.name)
                .collect()
        };
        assert_eq!(names("a", Source::configmap("cfg")), ["follows"]);
        assert_eq!(names("b", Source::configmap("cfg")), ["elsewhere"]);
        assert!(names("a", Source::secret("cfg")).is_empty());
        assert!(names("a", Source::configmap("other")).is_empty());
    }

    #[test]
    fn the_watch_backoff_grows_with_jitter_to_ten_seconds_and_resets() {
        let mut b = WatchBackoff::default();
        let delays: Vec<Duration> = b.by_ref().take(12).collect();
        assert!(delays[0] >= Duration::from_millis(250) && delays[0] < Duration::from_millis(500));
        assert!(delays.iter().all(|d| *d <= WatchBackoff::MAX));
        assert!(delays[11] >= WatchBackoff::MAX / 2);
        b.reset();
        assert!(b.next().unwrap() < Duration::from_millis(500));
    }
}
