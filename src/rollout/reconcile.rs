//! Reconciling one workload: which sources it follows, read just those (one GET each), hash
//! and gate them, then adopt (first sight: record the baseline, no rollout), roll (hash moved:
//! write it to the pod template) or do nothing (same hash). Also the retry policy and the
//! controller's counters.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Client, Resource, ResourceExt};

use super::content::{self, Data, Gate, Invalid};
use super::error::ReconcileError;
use super::refs::{self, Source};
use super::workload::{self, Workload, Write};
use super::FIELD_MANAGER;
use crate::inject::annotations;
use crate::inject::error::Problem;
use crate::inject::report::SourceKind;

/// First retry delay after a failed reconcile; doubles per consecutive failure.
const RETRY_BASE: Duration = Duration::from_secs(1);
/// Longest retry delay.
const RETRY_MAX: Duration = Duration::from_secs(300);
/// How often a workload whose referenced object is missing is looked at again.
const MISSING_RECHECK: Duration = Duration::from_secs(60);

/// What the reconcilers count (exported as `nudge_rollout_*` once the admin server serves them).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Workloads rolled (template hash written).
    pub rollouts: AtomicU64,
    /// Workloads adopted (baseline recorded, no rollout).
    pub adopted: AtomicU64,
    /// Rollouts held because content did not pass the validation gate.
    pub invalid: AtomicU64,
    /// Reconciles that found the hash unchanged.
    pub unchanged: AtomicU64,
    /// Reconciles that failed (retried with backoff).
    pub errors: AtomicU64,
}

/// Shared by every reconcile.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Publishes Events on workloads and ConfigMaps.
    pub recorder: Recorder,
    /// The validation gate.
    pub gate: Gate,
    /// Counters.
    pub metrics: Metrics,
    /// Consecutive failures per workload, for the retry backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// A context with zeroed counters.
    pub fn new(client: Client, recorder: Recorder, gate: Gate) -> Context {
        Context {
            client,
            recorder,
            gate,
            metrics: Metrics::default(),
            failures: Mutex::default(),
        }
    }
}

/// The sources a workload follows: its annotations (the shared parser) applied to the
/// references of its pod template. Empty when nothing asks.
pub fn followed_sources<K: Workload>(workload: &K) -> Result<BTreeSet<Source>, Problem> {
    let Some(watch) = annotations::followed(&workload::layers(workload))? else {
        return Ok(BTreeSet::new());
    };
    let referenced = workload
        .template()
        .and_then(|t| t.spec.as_ref())
        .map(refs::referenced)
        .unwrap_or_default();
    Ok(refs::followed(&watch, &referenced))
}

/// What reading the followed sources gave.
enum Read {
    /// Per-object hashes, all valid.
    Hashes(BTreeMap<Source, String>),
    /// A followed object does not exist (yet): hold.
    Missing(Source),
    /// Content failed the gate: hold.
    Invalid(Invalid),
}

/// Reconciles one workload. See the module doc.
pub async fn reconcile<K: Workload>(
    workload: Arc<K>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let shown = workload::display(&*workload);
    let ns = workload
        .namespace()
        .ok_or_else(|| ReconcileError::NoNamespace(shown.clone()))?;
    let sources = match followed_sources(&*workload) {
        Ok(sources) => sources,
        Err(problem) => {
            tracing::warn!(workload = %shown, namespace = %ns, "annotations ignored: {problem}");
            warn_event(&ctx, &*workload, "InvalidAnnotation", problem.to_string()).await;
            return Ok(Action::await_change());
        }
    };
    if sources.is_empty() {
        return Ok(Action::await_change());
    }
    let result = match read(&ctx, &ns, &sources).await? {
        Read::Hashes(hashes) => apply(&ctx, &*workload, &shown, &ns, &hashes).await,
        Read::Missing(source) => {
            tracing::info!(workload = %shown, namespace = %ns, object = %source, "followed object missing: holding");
            Ok(Action::requeue(MISSING_RECHECK))
        }
        Read::Invalid(invalid) => hold_invalid(&ctx, &*workload, &shown, &ns, &invalid).await,
    };
    if result.is_ok() {
        forget_failures(&ctx, &ns, &shown);
    }
    result
}

/// Reads each source, gates and hashes it, and drops its data before the next.
async fn read(ctx: &Context, ns: &str, sources: &BTreeSet<Source>) -> Result<Read, ReconcileError> {
    let mut hashes = BTreeMap::new();
    for source in sources {
        let read_error = |e| ReconcileError::Read {
            object: source.to_string(),
            source: e,
        };
        let hashed = match source.kind {
            SourceKind::ConfigMap => {
                let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
                api.get_opt(&source.name)
                    .await
                    .map_err(read_error)?
                    .map(|cm| gate_and_hash(ctx.gate, source, &configmap_data(&cm)))
            }
            SourceKind::Secret => {
                let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
                api.get_opt(&source.name)
                    .await
                    .map_err(read_error)?
                    .map(|secret| gate_and_hash(ctx.gate, source, &secret_data(&secret)))
            }
        };
        match hashed {
            None => return Ok(Read::Missing(source.clone())),
            Some(Err(invalid)) => return Ok(Read::Invalid(invalid)),
            Some(Ok(hash)) => hashes.insert(source.clone(), hash),
        };
    }
    Ok(Read::Hashes(hashes))
}

fn gate_and_hash(gate: Gate, source: &Source, data: &Data<'_>) -> Result<String, Invalid> {
    content::check(gate, source, data)?;
    Ok(content::object_hash(source, data))
}

fn configmap_data(cm: &ConfigMap) -> Data<'_> {
    let text = cm
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v.as_bytes()));
    let binary = cm
        .binary_data
        .iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v.0.as_slice()));
    Data {
        entries: text.chain(binary).collect(),
    }
}

fn secret_data(secret: &Secret) -> Data<'_> {
    let entries = secret.data.iter().flatten();
    Data {
        entries: entries.map(|(k, v)| (k.as_str(), v.0.as_slice())).collect(),
    }
}

/// Compares with the recorded hash and writes when it moved.
async fn apply<K: Workload>(
    ctx: &Context,
    workload: &K,
    shown: &str,
    ns: &str,
    hashes: &BTreeMap<Source, String>,
) -> Result<Action, ReconcileError> {
    let new = content::combined_hash(hashes);
    let old = workload::recorded_hash(workload).map(str::to_owned);
    let write = match &old {
        Some(old) if *old == new => {
            ctx.metrics.unchanged.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(workload = %shown, namespace = %ns, hash = content::prefix(&new), "unchanged");
            return Ok(Action::await_change());
        }
        Some(_) => Write::Roll,
        None => Write::Adopt,
    };
    let changed = content::changed(workload::recorded_sources(workload), hashes);
    let sources = content::sources_annotation(hashes);
    let name = workload.name_any();
    let body = workload::apply_body::<K>(&name, &new, &sources, write);
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&name, &params, &Patch::Apply(&body))
        .await
        .map_err(|source| ReconcileError::Apply {
            workload: shown.to_owned(),
            source,
        })?;
    report_write(
        ctx,
        workload,
        shown,
        ns,
        write,
        old.as_deref(),
        &new,
        &changed,
    )
    .await;
    Ok(Action::await_change())
}

#[allow(clippy::too_many_arguments)]
async fn report_write<K: Workload>(
    ctx: &Context,
    workload: &K,
    shown: &str,
    ns: &str,
    write: Write,
    old: Option<&str>,
    new: &str,
    changed: &[String],
) {
    let changed = changed.join(", ");
    let new_prefix = content::prefix(new);
    match write {
        Write::Adopt => {
            ctx.metrics.adopted.fetch_add(1, Ordering::Relaxed);
            tracing::info!(workload = %shown, namespace = %ns, hash = new_prefix, "adopted: baseline recorded, no rollout");
        }
        Write::Roll => {
            ctx.metrics.rollouts.fetch_add(1, Ordering::Relaxed);
            let old_prefix = old.map(content::prefix).unwrap_or("none");
            let note = format!("{changed} changed: config hash {old_prefix} -> {new_prefix}");
            tracing::info!(workload = %shown, namespace = %ns, "rollout: {note}");
            let event = Event {
                type_: EventType::Normal,
                reason: "ConfigChanged".into(),
                note: Some(note),
                action: "Rollout".into(),
                secondary: None,
            };
            publish(ctx, workload, &event).await;
        }
    }
}

async fn hold_invalid<K: Workload>(
    ctx: &Context,
    workload: &K,
    shown: &str,
    ns: &str,
    invalid: &Invalid,
) -> Result<Action, ReconcileError> {
    ctx.metrics.invalid.fetch_add(1, Ordering::Relaxed);
    let note = format!(
        "rollout held: {} key {:?} {}",
        invalid.source, invalid.key, invalid.reason
    );
    tracing::warn!(workload = %shown, namespace = %ns, "{note}");
    warn_event(ctx, workload, "InvalidConfig", note.clone()).await;
    if invalid.source.kind == SourceKind::ConfigMap {
        let cm = ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some(invalid.source.name.clone()),
                namespace: Some(ns.to_owned()),
                ..Default::default()
            },
            ..Default::default()
        };
        warn_event(ctx, &cm, "InvalidConfig", note).await;
    }
    Ok(Action::await_change())
}

async fn warn_event<R: Resource<DynamicType = ()>>(
    ctx: &Context,
    object: &R,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(note),
        action: "Validate".into(),
        secondary: None,
    };
    publish(ctx, object, &event).await;
}

async fn publish<R: Resource<DynamicType = ()>>(ctx: &Context, object: &R, event: &Event) {
    let reference = object.object_ref(&());
    if let Err(e) = ctx.recorder.publish(event, &reference).await {
        tracing::warn!(reason = %event.reason, "could not publish Event: {e}");
    }
}

/// The controller's error policy: retry with exponential backoff per workload.
pub fn error_policy<K: Workload>(
    workload: Arc<K>,
    error: &ReconcileError,
    ctx: Arc<Context>,
) -> Action {
    ctx.metrics.errors.fetch_add(1, Ordering::Relaxed);
    let key = format!(
        "{}/{}",
        workload.namespace().unwrap_or_default(),
        workload::display(&*workload)
    );
    let failures = {
        let mut map = ctx.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(key.clone()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let delay = RETRY_BASE
        .saturating_mul(1 << failures.min(16).saturating_sub(1))
        .min(RETRY_MAX);
    tracing::warn!(workload = %key, retry_in = ?delay, "reconcile failed: {error}");
    Action::requeue(delay)
}

fn forget_failures(ctx: &Context, ns: &str, shown: &str) {
    let mut map = ctx.failures.lock().unwrap_or_else(|p| p.into_inner());
    map.remove(&format!("{ns}/{shown}"));
}
