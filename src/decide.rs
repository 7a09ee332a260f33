//! Decide stage: turns a stream of [`VolumeChange`]s into reloads. It remembers the content
//! last acted on for every volume, coalesces whatever arrives while an attempt runs or waits
//! for its retry into one reload of the newest content, and retries failed attempts with
//! exponential backoff until they succeed, the content reverts, or nudge shuts down.
//! Nothing is lost and nothing is done twice.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, Instant};
use tracing::{error, info, warn};

use crate::action::ReloadAction;
use crate::snapshot::{KeyChanges, VolumeChange, VolumeSnapshot};
use crate::status::{AttemptOutcome, Status};

/// First retry delay after a failed attempt.
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// Longest retry delay: a missing target is looked for at least this often.
const RETRY_MAX: Duration = Duration::from_secs(10);

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
                (acted.map(|a| a.hash) != Some(latest.hash)).then(|| VolumeDiff {
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
}

/// Runs the decide stage until shutdown or until the snapshot stage ends.
///
/// `acted` is the content the app is assumed to run with at start-up (the baseline, or nothing
/// with `--reload-on-start`); `latest` is what is on disk now.
pub async fn run(
    paths: Vec<PathBuf>,
    acted: Vec<Option<Arc<VolumeSnapshot>>>,
    latest: Vec<Option<Arc<VolumeSnapshot>>>,
    mut action: ReloadAction,
    mut changes: mpsc::Receiver<VolumeChange>,
    status: Status,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut contents = Contents {
        status: status.clone(),
        paths,
        acted,
        latest,
    };
    let mut attempt: u32 = 0;
    let mut retry_at: Option<Instant> = None;
    loop {
        // Coalesce: take everything already queued before deciding.
        while let Ok(change) = changes.try_recv() {
            contents.record(change);
        }
        let due = contents.pending();
        if due.is_none() {
            attempt = 0;
            retry_at = None;
        }
        let ready = due.is_some() && retry_at.is_none_or(|at| at <= Instant::now());
        if let (true, Some(reload)) = (ready, due) {
            attempt += 1;
            match perform(&mut action, &reload, attempt, &status).await {
                true => {
                    contents.acted_on(&reload);
                    attempt = 0;
                    retry_at = None;
                }
                false => retry_at = Some(Instant::now() + backoff(attempt)),
            }
            continue;
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            change = changes.recv() => match change {
                Some(change) => contents.record(change),
                None => return,
            },
            _ = sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {}
        }
    }
}

/// One attempt, logged with its outcome and duration; true when it succeeded.
async fn perform(
    action: &mut ReloadAction,
    reload: &Reload,
    attempt: u32,
    status: &Status,
) -> bool {
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
    let result = action.perform(reload).await;
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
    match result {
        Ok(outcome) => {
            info!(action = action.name(), ?volumes, ?keys, attempt, elapsed_ms, effects = ?outcome.effects, "reloaded");
            true
        }
        Err(e) => {
            let retry_in = backoff(attempt);
            if attempt == 1 || attempt.is_power_of_two() {
                error!(action = action.name(), ?volumes, attempt, error = %e, ?retry_in, "reload failed; will retry");
            } else {
                warn!(action = action.name(), attempt, error = %e, ?retry_in, "reload failed; will retry");
            }
            false
        }
    }
}

/// Exponential backoff: 100 ms, 200 ms, ... capped at 10 s.
fn backoff(attempt: u32) -> Duration {
    RETRY_FIRST
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(RETRY_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(5), Duration::from_millis(1600));
        assert_eq!(backoff(30), RETRY_MAX);
    }
}
