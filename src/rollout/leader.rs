//! Leader election on a coordination.k8s.io/v1 Lease, client-go style: a candidate takes the
//! Lease when it is free or expired (optimistic concurrency on resourceVersion, so two
//! candidates never both win), renews it every third of its duration, and stops acting as
//! soon as it cannot prove it still holds it. A standby takes over within one lease duration.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;

use super::settings::LeaseSettings;

/// What a look at the Lease found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// We hold it (just taken or renewed).
    ByUs,
    /// Someone else holds a valid lease, or took it first.
    ByOther,
}

/// Runs `work` only while this replica holds the Lease: waits to acquire, runs `work` with a
/// stop signal, renews; on loss stops `work`, waits for it, and becomes a candidate again.
/// Returns when `shutdown` turns true, after releasing the Lease.
pub async fn run_while_leader<F, Fut>(
    client: Client,
    lease: &LeaseSettings,
    mut shutdown: watch::Receiver<bool>,
    work: F,
) where
    F: Fn(watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()>,
{
    let api: Api<Lease> = Api::namespaced(client, &lease.namespace);
    let period = lease.duration / 3;
    loop {
        if !wait_to_acquire(&api, lease, period, &mut shutdown).await {
            return;
        }
        tracing::info!(lease = %lease.name, identity = %lease.identity, "became leader");
        let (stop_tx, stop_rx) = watch::channel(false);
        let renewing = renew_until_lost(&api, lease, period, shutdown.clone());
        tokio::pin!(renewing);
        let working = work(stop_rx);
        tokio::pin!(working);
        tokio::select! {
            () = &mut working => {}
            () = &mut renewing => {
                tracing::warn!(lease = %lease.name, "leadership lost or stopping: stopping the controllers");
                let _ = stop_tx.send(true);
                working.await;
            }
        }
        if *shutdown.borrow() {
            release(&api, lease).await;
            return;
        }
    }
}

/// Polls until the Lease is ours (true) or shutdown is asked (false).
async fn wait_to_acquire(
    api: &Api<Lease>,
    lease: &LeaseSettings,
    period: Duration,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    loop {
        match try_acquire(api, lease).await {
            Ok(Held::ByUs) => return true,
            Ok(Held::ByOther) => {}
            Err(e) => tracing::warn!(lease = %lease.name, "leader election: {e}"),
        }
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return false,
            () = tokio::time::sleep(period) => {}
        }
    }
}

/// Renews every `period`; returns when the lease could not be renewed for a whole lease
/// duration, someone else holds it, or shutdown is asked.
async fn renew_until_lost(
    api: &Api<Lease>,
    lease: &LeaseSettings,
    period: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last_renewed = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            () = tokio::time::sleep(period) => {}
        }
        match try_acquire(api, lease).await {
            Ok(Held::ByUs) => last_renewed = tokio::time::Instant::now(),
            Ok(Held::ByOther) => return,
            Err(e) => tracing::warn!(lease = %lease.name, "renewing the lease: {e}"),
        }
        // Stop acting before a standby may take over: it waits a full duration after our
        // last successful renewal.
        if last_renewed.elapsed() + period >= lease.duration {
            return;
        }
    }
}

/// Takes or renews the Lease when it is ours, free or expired.
async fn try_acquire(api: &Api<Lease>, lease: &LeaseSettings) -> Result<Held, kube::Error> {
    let now = MicroTime(Timestamp::now());
    let Some(mut current) = api.get_opt(&lease.name).await? else {
        let fresh = Lease {
            metadata: ObjectMeta {
                name: Some(lease.name.clone()),
                ..Default::default()
            },
            spec: Some(spec(lease, now.clone(), now, 0)),
        };
        return conflict_is_other(api.create(&PostParams::default(), &fresh).await);
    };
    let old = current.spec.clone().unwrap_or_default();
    let ours = old.holder_identity.as_deref() == Some(lease.identity.as_str());
    let free = old
        .holder_identity
        .as_deref()
        .unwrap_or_default()
        .is_empty();
    if !ours && !free && !expired(&old) {
        return Ok(Held::ByOther);
    }
    let (acquired, transitions) = match (ours, old.acquire_time.clone()) {
        (true, Some(at)) => (at, old.lease_transitions.unwrap_or(0)),
        _ => (
            now.clone(),
            old.lease_transitions.unwrap_or(0).saturating_add(1),
        ),
    };
    current.spec = Some(spec(lease, acquired, now, transitions));
    conflict_is_other(
        api.replace(&lease.name, &PostParams::default(), &current)
            .await,
    )
}

fn spec(
    lease: &LeaseSettings,
    acquired: MicroTime,
    renewed: MicroTime,
    transitions: i32,
) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(lease.identity.clone()),
        lease_duration_seconds: Some(i32::try_from(lease.duration.as_secs()).unwrap_or(i32::MAX)),
        acquire_time: Some(acquired),
        renew_time: Some(renewed),
        lease_transitions: Some(transitions),
        ..Default::default()
    }
}

fn expired(spec: &LeaseSpec) -> bool {
    let (Some(renewed), Some(seconds)) = (&spec.renew_time, spec.lease_duration_seconds) else {
        return true;
    };
    let age_ms = Timestamp::now().as_millisecond() - renewed.0.as_millisecond();
    age_ms > i64::from(seconds) * 1000
}

fn conflict_is_other(result: Result<Lease, kube::Error>) -> Result<Held, kube::Error> {
    match result {
        Ok(_) => Ok(Held::ByUs),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(Held::ByOther),
        Err(e) => Err(e),
    }
}

/// Gives the Lease up on a clean stop so a standby takes over at once.
async fn release(api: &Api<Lease>, lease: &LeaseSettings) {
    let Ok(Some(mut current)) = api.get_opt(&lease.name).await else {
        return;
    };
    let Some(spec) = current.spec.as_mut() else {
        return;
    };
    if spec.holder_identity.as_deref() != Some(lease.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    if let Err(e) = api
        .replace(&lease.name, &PostParams::default(), &current)
        .await
    {
        tracing::warn!(lease = %lease.name, "releasing the lease: {e}");
    }
}
