//! The kube-rs `Controller`s: for each scope (one namespace, or all but the ignored) and each
//! workload kind, a reflector over the workloads plus two metadata-only watches (ConfigMaps,
//! Secrets) whose events are mapped to the workloads that follow the object. Object data is
//! never watched; [`super::reconcile`] reads just the followed objects.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
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
        watcher(
            api::<K>(&client, ns.as_deref()),
            watch_config(&settings, true),
        )
        .default_backoff(),
    )
    .applied_objects();
    let configmaps = watcher(
        api::<PartialObjectMeta<ConfigMap>>(&client, ns.as_deref()),
        watch_config(&settings, false),
    )
    .default_backoff()
    .touched_objects();
    let secrets = watcher(
        api::<PartialObjectMeta<Secret>>(&client, ns.as_deref()),
        watch_config(&settings, false),
    )
    .default_backoff()
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
