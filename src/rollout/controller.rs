//! The kube-rs `Controller`s: for each scope (one namespace, or all but the ignored) and each
//! workload kind, a reflector over the workloads plus two metadata-only watches (ConfigMaps,
//! Secrets) whose events are mapped to the workloads that follow the object. Object data is
//! never watched; [`super::reconcile`] reads just the followed objects.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::utils::Backoff;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use tokio::sync::watch;

use super::reconcile::{self, Context};
use super::refs::Source;
use super::settings::{Scope, Settings};
use super::workload::Workload;

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
        let args = (
            client.clone(),
            ns,
            settings.clone(),
            ctx.clone(),
            shutdown.clone(),
        );
        tasks.push(Box::pin(run_kind::<Deployment>(args.clone())));
        tasks.push(Box::pin(run_kind::<StatefulSet>(args.clone())));
        tasks.push(Box::pin(run_kind::<DaemonSet>(args)));
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

fn watch_config(settings: &Settings, with_selector: bool) -> watcher::Config {
    let mut config = watcher::Config::default();
    if let Some(fields) = ignore_fields(&settings.scope) {
        config = config.fields(&fields);
    }
    if let (true, Some(selector)) = (with_selector, &settings.selector) {
        config = config.labels(selector);
    }
    config
}

async fn run_kind<K: Workload>((client, ns, settings, ctx, mut shutdown): Args) {
    let (store, writer) = reflector::store::<K>();
    let workloads = reflector::reflector(
        writer,
        resilient(watcher(
            api::<K>(&client, ns.as_deref()),
            watch_config(&settings, true),
        )),
    )
    .applied_objects();
    let configmaps = resilient(watcher(
        api::<PartialObjectMeta<ConfigMap>>(&client, ns.as_deref()),
        watch_config(&settings, false),
    ))
    .touched_objects();
    let secrets = resilient(watcher(
        api::<PartialObjectMeta<Secret>>(&client, ns.as_deref()),
        watch_config(&settings, false),
    ))
    .touched_objects();
    let (cm_store, secret_store) = (store.clone(), store.clone());
    let config = ControllerConfig::default()
        .debounce(settings.debounce)
        .concurrency(CONCURRENCY);
    let stop = async move {
        // A dropped sender means the process is exiting: stop too.
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    Controller::for_stream(workloads, store)
        .with_config(config)
        .watches_stream(configmaps, move |cm| {
            followers(&cm_store, &cm, Source::configmap)
        })
        .watches_stream(secrets, move |secret| {
            followers(&secret_store, &secret, Source::secret)
        })
        .graceful_shutdown_on(stop)
        .run(reconcile::reconcile::<K>, reconcile::error_policy::<K>, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(kind = K::kind(&()).as_ref(), "controller: {e}");
            }
        })
        .await;
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

/// The workloads in the object's namespace that follow it.
fn followers<K: Workload, O: Resource>(
    store: &Store<K>,
    object: &PartialObjectMeta<O>,
    source: fn(&str) -> Source,
) -> Vec<ObjectRef<K>> {
    let (Some(ns), Some(name)) = (&object.metadata.namespace, &object.metadata.name) else {
        return Vec::new();
    };
    let wanted = source(name);
    store
        .state()
        .iter()
        .filter(|w| w.meta().namespace.as_deref() == Some(ns.as_str()))
        .filter(|w| reconcile::followed_sources(w.as_ref()).is_ok_and(|s| s.contains(&wanted)))
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
