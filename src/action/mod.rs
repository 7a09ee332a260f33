//! Act stage: what a reload does to the app. The decide stage calls [`ReloadAction::perform`]
//! once per reload attempt and owns retries; an action reports one [`Outcome`] or one
//! [`ActionError`] and never panics or exits.

pub mod exec;
pub mod restart;
pub mod signal;
pub mod webhook;

pub use exec::ExecAction;
pub use restart::RestartAction;
pub use signal::{SignalAction, UnhandledSignal};
pub use webhook::WebhookAction;

use std::fmt;
use std::str::FromStr;

use crate::decide::{Reload, RetryPolicy};

/// The configured way to make the app reload.
#[derive(Debug)]
pub enum ReloadAction {
    /// Send a signal to the app's process (default: SIGHUP).
    Signal(SignalAction),
    /// End the app container's main process so the kubelet restarts it.
    Restart(RestartAction),
    /// Call one or more URLs (boxed: the HTTP client is large).
    Webhook(Box<WebhookAction>),
    /// Run a command.
    Exec(ExecAction),
}

/// Which action `--action` chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    /// `signal`.
    Signal,
    /// `restart`.
    Restart,
    /// `webhook`.
    Webhook,
    /// `exec`.
    Exec,
}

impl FromStr for ActionKind {
    type Err = (String, String);

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "signal" => Ok(ActionKind::Signal),
            "restart" => Ok(ActionKind::Restart),
            "webhook" => Ok(ActionKind::Webhook),
            "exec" => Ok(ActionKind::Exec),
            _ => Err((
                raw.to_owned(),
                "signal, restart, webhook or exec".to_owned(),
            )),
        }
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ActionKind::Signal => "signal",
            ActionKind::Restart => "restart",
            ActionKind::Webhook => "webhook",
            ActionKind::Exec => "exec",
        })
    }
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
    /// Restarting the app failed.
    #[error(transparent)]
    Restart(#[from] restart::RestartError),
    /// A webhook call failed.
    #[error(transparent)]
    Webhook(#[from] webhook::WebhookError),
    /// The command failed.
    #[error(transparent)]
    Exec(#[from] exec::ExecError),
}

impl ActionError {
    /// Whether the target process was found: `Some(false)` when the error is that it was not
    /// (or was ambiguous), `None` when the error says nothing about it.
    pub fn target_found(&self) -> Option<bool> {
        match self {
            ActionError::Signal(signal::SignalError::Target(_)) => Some(false),
            ActionError::Signal(_) => Some(true),
            ActionError::Restart(restart::RestartError::Target(_)) => Some(false),
            ActionError::Restart(_) => Some(true),
            ActionError::Webhook(_) | ActionError::Exec(_) => None,
        }
    }
}

impl ReloadAction {
    /// Performs one reload attempt for `reload`.
    pub async fn perform(&mut self, reload: &Reload) -> Result<Outcome, ActionError> {
        match self {
            ReloadAction::Signal(action) => Ok(action.perform(reload)?),
            ReloadAction::Restart(action) => Ok(action.perform(reload).await?),
            ReloadAction::Webhook(action) => Ok(action.perform(reload).await?),
            ReloadAction::Exec(action) => Ok(action.perform(reload).await?),
        }
    }

    /// How the decide stage retries this action's failures: a webhook honours
    /// `--webhook-retries` with jitter (many sidecars may call one server); the others retry
    /// until they succeed, because the app may come back at any time.
    pub fn retry_policy(&self) -> RetryPolicy {
        match self {
            ReloadAction::Webhook(action) => RetryPolicy::webhook(action.retries()),
            _ => RetryPolicy::default(),
        }
    }

    /// Short name for logs and metrics labels.
    pub fn name(&self) -> &'static str {
        match self {
            ReloadAction::Signal(_) => "signal",
            ReloadAction::Restart(_) => "restart",
            ReloadAction::Webhook(_) => "webhook",
            ReloadAction::Exec(_) => "exec",
        }
    }
}
