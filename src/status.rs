//! What the pipeline reports about itself. Every stage holds a clone of [`Status`] and calls
//! its methods when something worth counting happens; the admin server reads it to answer
//! `/healthz`, `/readyz` and `/metrics`. Stages never read it back: data still flows one way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

/// How one reload attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AttemptOutcome {
    /// The action succeeded.
    Success,
    /// The action failed and will be retried.
    Failure,
}

/// Everything reported so far.
#[derive(Debug, Clone, Default)]
pub struct StatusState {
    /// Every watched path has its inotify watch (or waits for the path through an ancestor).
    pub watching: bool,
    /// Whether the last reload attempt found its target (`None` before any attempt).
    pub target_found: Option<bool>,
    /// Reload attempts by action name and outcome.
    pub attempts: BTreeMap<(&'static str, AttemptOutcome), u64>,
    /// Reloads that completed (after any retries), by action name.
    pub reloads: BTreeMap<&'static str, u64>,
    /// Duration of the last attempt.
    pub last_attempt_duration: Option<Duration>,
    /// Wall-clock time of the last successful reload.
    pub last_success: Option<SystemTime>,
    /// Content changes detected, by volume.
    pub changes: BTreeMap<PathBuf, u64>,
    /// Current content hash (hex) by volume.
    pub hashes: BTreeMap<PathBuf, String>,
    /// Full rescans (queue overflow, resync, watch errors).
    pub rescans: u64,
    /// Errors from inotify or from keeping watches in place.
    pub watch_errors: u64,
    /// Volumes whose newest content fails validation, with the reason.
    pub validation_failing: BTreeMap<PathBuf, String>,
    /// New content held back because it failed validation.
    pub validation_failures: u64,
    /// Restarts within 10 minutes of the previous one (the kubelet backs off).
    pub restart_backoff_warnings: u64,
}

/// A cloneable handle to the shared [`StatusState`].
#[derive(Debug, Clone, Default)]
pub struct Status {
    state: Arc<Mutex<StatusState>>,
}

impl Status {
    /// A copy of everything reported so far.
    pub fn state(&self) -> StatusState {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, StatusState> {
        // A panic while holding this lock cannot leave the counters inconsistent in a way
        // that matters; keep serving them.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The watch stage has (re)established its watches.
    pub fn set_watching(&self, watching: bool) {
        self.lock().watching = watching;
    }

    /// The watch stage rescanned every volume.
    pub fn rescanned(&self) {
        self.lock().rescans += 1;
    }

    /// inotify reported an error, or a watch could not be kept.
    pub fn watch_error(&self) {
        self.lock().watch_errors += 1;
    }

    /// A volume's content changed to `hash`.
    pub fn content_changed(&self, volume: &Path, hash: &str) {
        let mut state = self.lock();
        *state.changes.entry(volume.to_path_buf()).or_default() += 1;
        state.hashes.insert(volume.to_path_buf(), hash.to_owned());
    }

    /// The content of a volume at start-up.
    pub fn baseline(&self, volume: &Path, hash: &str) {
        self.lock()
            .hashes
            .insert(volume.to_path_buf(), hash.to_owned());
    }

    /// The newest content of `volume` failed validation and is held back.
    pub fn validation_failed(&self, volume: &Path, reason: &str) {
        let mut state = self.lock();
        state.validation_failures += 1;
        state
            .validation_failing
            .insert(volume.to_path_buf(), reason.to_owned());
    }

    /// The newest content of `volume` passed validation (or was replaced by content that did).
    pub fn validation_passed(&self, volume: &Path) {
        self.lock().validation_failing.remove(volume);
    }

    /// The restart action restarted the app again soon after the previous restart, so the
    /// kubelet's CrashLoopBackOff delay applies.
    pub fn restart_backoff_warning(&self) {
        self.lock().restart_backoff_warnings += 1;
    }

    /// One reload attempt ended.
    pub fn attempt(
        &self,
        action: &'static str,
        outcome: AttemptOutcome,
        took: Duration,
        target_found: Option<bool>,
    ) {
        let mut state = self.lock();
        *state.attempts.entry((action, outcome)).or_default() += 1;
        state.last_attempt_duration = Some(took);
        if target_found.is_some() {
            state.target_found = target_found;
        }
        if outcome == AttemptOutcome::Success {
            *state.reloads.entry(action).or_default() += 1;
            state.last_success = Some(SystemTime::now());
        }
    }
}
