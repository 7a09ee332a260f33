//! Act stage: what a reload does to the app. The decide stage calls [`ReloadAction::perform`]
//! once per reload attempt and owns retries; an action reports one [`Outcome`] or one
//! [`ActionError`] and never panics or exits.

pub mod signal;

pub use signal::{SignalAction, UnhandledSignal};

use crate::decide::Reload;

/// The configured way to make the app reload.
#[derive(Debug)]
pub enum ReloadAction {
    /// Send a signal to the app's process (default: SIGHUP).
    Signal(SignalAction),
}

/// What a successful attempt did, for the log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// One short sentence per effect, e.g. `sent SIGHUP to pid 12 (nginx)`.
    pub effects: Vec<String>,
}

/// Why an attempt failed; every variant is worth retrying because the app may come back,
/// restart under a new PID, or install its handler late.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// Signalling the app failed.
    #[error(transparent)]
    Signal(#[from] signal::SignalError),
}

impl ActionError {
    /// Whether the target process was found: `Some(false)` when the error is that it was not
    /// (or was ambiguous), `None` when the error says nothing about it.
    pub fn target_found(&self) -> Option<bool> {
        match self {
            ActionError::Signal(signal::SignalError::Target(_)) => Some(false),
            ActionError::Signal(_) => Some(true),
        }
    }
}

impl ReloadAction {
    /// Performs one reload attempt for `reload`.
    pub async fn perform(&mut self, reload: &Reload) -> Result<Outcome, ActionError> {
        match self {
            ReloadAction::Signal(action) => Ok(action.perform(reload)?),
        }
    }

    /// Short name for logs and metrics labels.
    pub fn name(&self) -> &'static str {
        match self {
            ReloadAction::Signal(_) => "signal",
        }
    }
}
