//! Decide stage: turns a stream of [`VolumeChange`]s into reloads. It remembers the content
//! last acted on for every volume, coalesces whatever arrives while an attempt runs or waits
//! for its retry into one reload of the newest content, and retries failed attempts with
//! exponential backoff until they succeed, the content reverts, or nudge shuts down (a
//! webhook gives up after `--webhook-retries`). Nothing is lost and nothing is done twice.
//!
//! Before acting it runs the validation gate ([`crate::validate`]): while any volume's newest
//! content is invalid the action is held, so the app keeps its last good configuration.
//! Verdicts are remembered by content hash, so a resync of the same bad content is not
//! validated again. `--min-interval` spaces actions apart; whatever arrives meanwhile is
//! coalesced into the next one.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, Instant};
use tracing::{debug, error, info, info_span, warn, Instrument};

use crate::action::ReloadAction;
use crate::snapshot::{Digest, KeyChanges, VolumeChange, VolumeSnapshot};
use crate::status::{AttemptOutcome, Status};
use crate::validate::{Validation, Validator, Verdict};

/// First retry delay after a failed attempt.
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// Longest retry delay: a missing target is looked for at least this often.
const RETRY_MAX: Duration = Duration::from_secs(10);

/// How failed attempts are retried: the one retry policy of every action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Wait after the first failure; doubles after each further one.
    pub first: Duration,
    /// Longest wait.
    pub max: Duration,
    /// Retries after the first attempt before giving up on this content; `None`: never give up.
    pub retries: Option<u32>,
    /// Randomise each wait to between half and all of it, so sidecars of many replicas do not
    /// hit one server in lockstep.
    pub jitter: bool,
}

impl Default for RetryPolicy {
    /// 100 ms doubling to 10 s, forever: a missing target may come back at any time.
    fn default() -> Self {
        RetryPolicy {
            first: RETRY_FIRST,
            max: RETRY_MAX,
            retries: None,
            jitter: false,
        }
    }
}

impl RetryPolicy {
    /// A webhook's policy: 500 ms doubling to 30 s with jitter, `retries` times.
    pub fn webhook(retries: u32) -> Self {
        RetryPolicy {
            first: crate::action::webhook::RETRY_FIRST,
            max: crate::action::webhook::RETRY_MAX,
            retries: Some(retries),
            jitter: true,
        }
    }

    /// The wait after failed attempt number `attempt` (1-based), or `None` to give up.
    pub fn delay(&self, attempt: u32) -> Option<Duration> {
        if self.retries.is_some_and(|r| attempt > r) {
            return None;
        }
        let full = self
            .first
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max);
        Some(if self.jitter {
            full.mul_f64(0.5 + fastrand::f64() / 2.0)
        } else {
            full
        })
    }
}

/// How the decide stage gates and paces reloads.
#[derive(Debug, Clone)]
pub struct DecideSettings {
    /// The validation gate.
    pub validation: Validation,
    /// Least time between the starts of two reloads.
    pub min_interval: Duration,
}

impl Default for DecideSettings {
    fn default() -> Self {
        DecideSettings {
            validation: Validation::Auto,
            min_interval: Duration::ZERO,
        }
    }
}

/// One volume's part of a reload.
#[derive(Debug, Clone)]
pub struct VolumeDiff {
    /// The watched path.
    pub path: PathBuf,
    /// The content being reloaded to.
    pub snapshot: Arc<VolumeSnapshot>,
    /// Keys that differ from the content last acted on.
    pub changes: KeyChanges,
}

/// A reload to perform: every volume whose newest content differs from what was last acted on.
#[derive(Debug, Clone)]
pub struct Reload {
    /// The volumes that changed.
    pub volumes: Vec<VolumeDiff>,
}

/// Content per volume: what was last acted on, and the newest seen.
struct Contents {
    status: Status,
    paths: Vec<PathBuf>,
    acted: Vec<Option<Arc<VolumeSnapshot>>>,
    latest: Vec<Option<Arc<VolumeSnapshot>>>,
    /// Content whose reload was given up on (retries exhausted): not retried until it changes.
    abandoned: Vec<Option<Digest>>,
}

impl Contents {
    fn record(&mut self, change: VolumeChange) {
        let diff = change
            .snapshot
            .changes_since(self.latest[change.volume].as_deref());
        info!(
            volume = %self.paths[change.volume].display(),
            hash = %change.snapshot.hash.short(),
            added = ?diff.added,
            removed = ?diff.removed,
            modified = ?diff.modified,
            "content changed"
        );
        self.status.content_changed(
            &self.paths[change.volume],
            &change.snapshot.hash.to_string(),
        );
        self.latest[change.volume] = Some(change.snapshot);
    }

    /// The reload that would bring the app to the newest content, if any is due.
    fn pending(&self) -> Option<Reload> {
        let volumes: Vec<VolumeDiff> = (0..self.paths.len())
            .filter_map(|i| {
                let latest = self.latest[i].as_ref()?;
                let acted = self.acted[i].as_deref();
                let due = acted.map(|a| a.hash) != Some(latest.hash)
                    && self.abandoned[i] != Some(latest.hash);
                due.then(|| VolumeDiff {
                    path: self.paths[i].clone(),
                    snapshot: latest.clone(),
                    changes: latest.changes_since(acted),
                })
            })
            .collect();
        (!volumes.is_empty()).then_some(Reload { volumes })
    }

    fn acted_on(&mut self, reload: &Reload) {
        for diff in &reload.volumes {
            if let Some(i) = self.paths.iter().position(|p| *p == diff.path) {
                self.acted[i] = Some(diff.snapshot.clone());
            }
        }
    }

    fn abandon(&mut self, reload: &Reload) {
        for diff in &reload.volumes {
            if let Some(i) = self.paths.iter().position(|p| *p == diff.path) {
                self.abandoned[i] = Some(diff.snapshot.hash);
            }
        }
    }
}

/// What the validation gate says about a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GateVerdict {
    /// Act.
    Pass,
    /// Hold until the content changes.
    Hold,
    /// The files moved on while being read; look again shortly.
    Stale,
}

/// Verdicts remembered at most; more distinct contents than this start the memory afresh.
const VERDICT_MEMORY: usize = 256;

/// The validation gate, with verdicts remembered by content hash.
struct Gate {
    validator: Validator,
    status: Status,
    /// Verdict per (volume, content); `Some(reason)` when invalid.
    verdicts: HashMap<Vec<(PathBuf, Digest)>, Option<String>>,
    /// Volumes reported as failing validation, to clear once they no longer are.
    failing: Vec<PathBuf>,
}

impl Gate {
    async fn admits(&mut self, reload: &Reload) -> GateVerdict {
        if self.validator.is_none() {
            return GateVerdict::Pass;
        }
        let changed_volumes = reload
            .volumes
            .iter()
            .map(|v| v.path.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let mut verdict = GateVerdict::Pass;
        for diff in &reload.volumes {
            let key = vec![(diff.path.clone(), diff.snapshot.hash)];
            let known = self.verdicts.get(&key).cloned();
            let reason = match known {
                Some(reason) => {
                    if reason.is_some() {
                        debug!(volume = %diff.path.display(), hash = %diff.snapshot.hash.short(), "content known to be invalid; reload still held");
                    }
                    reason
                }
                None => {
                    let changed: Vec<String> = diff
                        .changes
                        .added
                        .iter()
                        .chain(&diff.changes.modified)
                        .cloned()
                        .collect();
                    let started = Instant::now();
                    let reason = match self
                        .validator
                        .check(&diff.path, &diff.snapshot, &changed, &changed_volumes)
                        .await
                    {
                        Verdict::Stale => return GateVerdict::Stale,
                        Verdict::Valid => None,
                        Verdict::Invalid(invalid) => {
                            let took_ms = started.elapsed().as_secs_f64() * 1000.0;
                            error!(volume = %diff.path.display(), hash = %diff.snapshot.hash.short(), error = %invalid, took_ms, "new content is invalid; reload held (the app keeps its last good config)");
                            Some(invalid.to_string())
                        }
                    };
                    self.remember(key, reason.clone());
                    reason
                }
            };
            match reason {
                Some(reason) => {
                    self.status.validation_failed(&diff.path, &reason);
                    if !self.failing.contains(&diff.path) {
                        self.failing.push(diff.path.clone());
                    }
                    verdict = GateVerdict::Hold;
                }
                None => self.passed(&diff.path),
            }
        }
        verdict
    }

    /// Remembers a verdict, so the same content is never validated twice.
    fn remember(&mut self, key: Vec<(PathBuf, Digest)>, reason: Option<String>) {
        if self.verdicts.len() >= VERDICT_MEMORY {
            self.verdicts.clear();
        }
        self.verdicts.insert(key, reason);
    }

    fn passed(&mut self, volume: &PathBuf) {
        if let Some(i) = self.failing.iter().position(|p| p == volume) {
            self.failing.swap_remove(i);
            self.status.validation_passed(volume);
        }
    }

    /// Nothing is pending (the content went back to what the app runs): nothing is failing.
    fn clear(&mut self) {
        for volume in std::mem::take(&mut self.failing) {
            self.status.validation_passed(&volume);
        }
    }
}

/// Runs the decide stage until shutdown or until the snapshot stage ends.
///
/// `acted` is the content the app is assumed to run with at start-up (the baseline, or nothing
/// with `--reload-on-start`); `latest` is what is on disk now.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    paths: Vec<PathBuf>,
    acted: Vec<Option<Arc<VolumeSnapshot>>>,
    latest: Vec<Option<Arc<VolumeSnapshot>>>,
    mut action: ReloadAction,
    settings: DecideSettings,
    mut changes: mpsc::Receiver<VolumeChange>,
    status: Status,
    mut shutdown: watch::Receiver<bool>,
) {
    if let ReloadAction::Restart(restart) = &mut action {
        restart.set_status(status.clone());
    }
    let policy = action.retry_policy();
    let mut contents = Contents {
        status: status.clone(),
        abandoned: vec![None; paths.len()],
        paths,
        acted,
        latest,
    };
    let mut gate = Gate {
        validator: Validator::new(settings.validation),
        status: status.clone(),
        verdicts: HashMap::new(),
        failing: Vec::new(),
    };
    let mut attempt: u32 = 0;
    // Earliest time of the next attempt: a retry's backoff, or the minimum interval.
    let mut wait_until: Option<Instant> = None;
    // The content the gate holds back; re-examined only when the content changes.
    let mut held: Option<Vec<Digest>> = None;
    loop {
        // Coalesce: take everything already queued before deciding.
        while let Ok(change) = changes.try_recv() {
            contents.record(change);
        }
        let due = contents.pending();
        if due.is_none() {
            attempt = 0;
            held = None;
            gate.clear();
        }
        let key = due.as_ref().map(hashes);
        let ready =
            due.is_some() && held != key && wait_until.is_none_or(|at| at <= Instant::now());
        if let (true, Some(reload)) = (ready, due) {
            match gate.admits(&reload).await {
                GateVerdict::Hold => held = key,
                GateVerdict::Stale => wait_until = Some(Instant::now() + RETRY_FIRST),
                GateVerdict::Pass => {
                    held = None;
                    attempt += 1;
                    let started = Instant::now();
                    let next = {
                        let attempt_fut = perform(&mut action, &reload, attempt, &status, policy);
                        tokio::pin!(attempt_fut);
                        // Keep taking changes while the action runs, so the snapshot stage
                        // never waits on us and the newest content is known when it ends.
                        loop {
                            tokio::select! {
                                next = &mut attempt_fut => break next,
                                Some(change) = changes.recv() => contents.record(change),
                            }
                        }
                    };
                    wait_until = match next {
                        Next::Done => {
                            contents.acted_on(&reload);
                            attempt = 0;
                            (!settings.min_interval.is_zero())
                                .then(|| started + settings.min_interval)
                        }
                        Next::RetryIn(delay) => Some(Instant::now() + delay),
                        Next::GiveUp => {
                            contents.abandon(&reload);
                            attempt = 0;
                            None
                        }
                    };
                }
            }
            continue;
        }
        let timer = wait_until.filter(|_| contents.pending().is_some());
        tokio::select! {
            _ = shutdown.changed() => return,
            change = changes.recv() => match change {
                Some(change) => contents.record(change),
                None => return,
            },
            _ = sleep_until(timer.unwrap_or_else(Instant::now)), if timer.is_some() => {
                wait_until = None;
            }
        }
    }
}

/// The content hashes of a reload, to recognise the same reload again.
fn hashes(reload: &Reload) -> Vec<Digest> {
    reload.volumes.iter().map(|v| v.snapshot.hash).collect()
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// It succeeded.
    Done,
    /// It failed; try again after this long.
    RetryIn(Duration),
    /// It failed and the retries are used up.
    GiveUp,
}

/// One attempt, logged with its outcome and duration.
async fn perform(
    action: &mut ReloadAction,
    reload: &Reload,
    attempt: u32,
    status: &Status,
    policy: RetryPolicy,
) -> Next {
    let started = Instant::now();
    let volumes: Vec<String> = reload
        .volumes
        .iter()
        .map(|v| v.path.display().to_string())
        .collect();
    let keys: Vec<&String> = reload
        .volumes
        .iter()
        .flat_map(|v| {
            v.changes
                .added
                .iter()
                .chain(&v.changes.removed)
                .chain(&v.changes.modified)
        })
        .collect();
    // Every line logged during the attempt carries these; the action records its target.
    let span = info_span!(
        "reload",
        action = action.name(),
        volume = %volumes.join(","),
        keys = ?keys,
        target_pid = tracing::field::Empty,
        target_name = tracing::field::Empty,
    );
    let result = action.perform(reload).instrument(span.clone()).await;
    let _in_span = span.enter();
    let took = started.elapsed();
    let elapsed_ms = took.as_secs_f64() * 1000.0;
    match &result {
        Ok(_) => status.attempt(action.name(), AttemptOutcome::Success, took, Some(true)),
        Err(e) => status.attempt(
            action.name(),
            AttemptOutcome::Failure,
            took,
            e.target_found(),
        ),
    }
    let name = action.name();
    let e = match result {
        Ok(outcome) => {
            info!(action = name, ?volumes, ?keys, attempt, elapsed_ms, outcome = "success", effects = ?outcome.effects, "reloaded");
            return Next::Done;
        }
        Err(e) => e,
    };
    match policy.delay(attempt) {
        None => {
            error!(action = name, ?volumes, attempt, elapsed_ms, outcome = "failure", error = %e, "reload failed; giving up on this content after {attempt} attempts (the next change is acted on)");
            Next::GiveUp
        }
        Some(retry_in) if attempt == 1 || attempt.is_power_of_two() || policy.retries.is_some() => {
            error!(action = name, ?volumes, attempt, elapsed_ms, outcome = "failure", error = %e, ?retry_in, "reload failed; will retry");
            Next::RetryIn(retry_in)
        }
        Some(retry_in) => {
            warn!(action = name, attempt, elapsed_ms, outcome = "failure", error = %e, ?retry_in, "reload failed; will retry");
            Next::RetryIn(retry_in)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.delay(1), Some(Duration::from_millis(100)));
        assert_eq!(policy.delay(2), Some(Duration::from_millis(200)));
        assert_eq!(policy.delay(5), Some(Duration::from_millis(1600)));
        assert_eq!(policy.delay(30), Some(RETRY_MAX));
    }

    #[test]
    fn webhook_backoff_is_jittered_capped_and_bounded() {
        let policy = RetryPolicy::webhook(5);
        for attempt in 1..=5 {
            let full =
                Duration::from_millis(500 * (1 << (attempt - 1))).min(Duration::from_secs(30));
            let delay = policy.delay(attempt).expect("within the retries");
            assert!(
                delay >= full / 2 && delay <= full,
                "attempt {attempt}: {delay:?}"
            );
        }
        assert_eq!(policy.delay(6), None, "five retries, then give up");
        assert!(RetryPolicy::webhook(20).delay(20).expect("retry") <= Duration::from_secs(30));
    }
}
