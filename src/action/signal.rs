//! The `signal` action: find the target afresh, pin it with a pidfd, make sure the signal will
//! not kill it by default, and send. Never kills the app by accident: a signal the target
//! neither catches nor ignores (SIGHUP's default action is to terminate) is refused unless the
//! user chose `--signal-unhandled=send`.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::str::FromStr;

use nix::sys::signal::Signal;
use nix::unistd::getuid;
use tracing::warn;

use super::Outcome;
use crate::decide::Reload;
use crate::target::{self, PinnedProcess, Process, Selector, TargetError};

/// What to do when the target neither catches nor ignores the reload signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnhandledSignal {
    /// Do not send; log an error and retry with backoff (the handler may come later).
    Refuse,
    /// Send anyway, accepting the signal's default action.
    Send,
}

impl FromStr for UnhandledSignal {
    type Err = (String, String);

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "refuse" => Ok(UnhandledSignal::Refuse),
            "send" => Ok(UnhandledSignal::Send),
            _ => Err((raw.to_owned(), "refuse or send".to_owned())),
        }
    }
}

/// Why one signal could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// No target (yet), or an ambiguous one.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The target exited (or its PID was reused) between the scan and the send.
    #[error("{process} exited before {signal} could be sent")]
    Gone {
        /// The process that went away.
        process: Process,
        /// The signal.
        signal: Signal,
    },
    /// Sending would run the signal's default action, which terminates the app.
    #[error("{process} neither catches nor ignores {signal}, so sending it would terminate the app; not sent (the app may install its handler later; --signal-unhandled=send overrides)")]
    Unhandled {
        /// The target.
        process: Process,
        /// The signal.
        signal: Signal,
    },
    /// The kernel refused: different UID and no CAP_KILL.
    #[error("not allowed to send {signal} to {process} (uid {target_uid}) as uid {own_uid}: run nudge as the app's UID (securityContext.runAsUser: {target_uid}) or add capability KILL (SYS_PTRACE does not allow signalling)")]
    PermissionDenied {
        /// The target.
        process: Process,
        /// The signal.
        signal: Signal,
        /// The target's real UID.
        target_uid: u32,
        /// nudge's real UID.
        own_uid: u32,
    },
    /// Any other system error.
    #[error("sending {signal} to {process} failed: {source}")]
    Io {
        /// The target.
        process: Process,
        /// The signal.
        signal: Signal,
        /// The system error.
        #[source]
        source: io::Error,
    },
}

/// Sends a signal to the selected process(es).
#[derive(Debug)]
pub struct SignalAction {
    signal: Signal,
    selector: Selector,
    unhandled: UnhandledSignal,
    proc_root: PathBuf,
}

impl SignalAction {
    /// A signal action over the real /proc.
    pub fn new(signal: Signal, selector: Selector, unhandled: UnhandledSignal) -> Self {
        SignalAction {
            signal,
            selector,
            unhandled,
            proc_root: PathBuf::from("/proc"),
        }
    }

    /// How the target is chosen.
    pub fn selector(&self) -> &Selector {
        &self.selector
    }

    /// The signal sent.
    pub fn signal(&self) -> Signal {
        self.signal
    }

    /// Signals every selected process; succeeds if at least one received the signal (the
    /// others are logged).
    pub fn perform(&self, _reload: &Reload) -> Result<Outcome, SignalError> {
        let targets = target::find(&self.selector, &self.proc_root)?;
        let mut effects = Vec::new();
        let mut first_error = None;
        for process in targets {
            match self.send_to(&process) {
                Ok(()) => {
                    // Shown on the reload's log lines (the span decide opened for the attempt).
                    let span = tracing::Span::current();
                    span.record("target_pid", process.pid);
                    span.record("target_name", process.comm.as_str());
                    effects.push(format!("sent {} to {process}", self.signal));
                }
                Err(e) => {
                    warn!(target_pid = process.pid, target_name = %process.comm, error = %e, "signal not delivered");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if effects.is_empty() => Err(e),
            _ => Ok(Outcome { effects }),
        }
    }

    fn send_to(&self, process: &Process) -> Result<(), SignalError> {
        let signal = self.signal;
        let io_error = |source| SignalError::Io {
            process: process.clone(),
            signal,
            source,
        };
        let gone = || SignalError::Gone {
            process: process.clone(),
            signal,
        };
        let pinned = PinnedProcess::pin(process, &self.proc_root)
            .map_err(io_error)?
            .ok_or_else(gone)?;
        let state = match pinned.signal_state() {
            Ok(state) => state,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(gone()),
            Err(e) => return Err(io_error(e)),
        };
        if self.unhandled == UnhandledSignal::Refuse
            && default_action_is_harmful(signal)
            && !state.handles(signal as i32)
        {
            return Err(SignalError::Unhandled {
                process: process.clone(),
                signal,
            });
        }
        match pinned.send(signal) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(nix::libc::ESRCH) => Err(gone()),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                Err(SignalError::PermissionDenied {
                    process: process.clone(),
                    signal,
                    target_uid: state.uid,
                    own_uid: getuid().as_raw(),
                })
            }
            Err(e) => Err(io_error(e)),
        }
    }
}

/// Whether a signal's default action terminates or stops the process (true for all but the
/// few whose default is to ignore).
fn default_action_is_harmful(signal: Signal) -> bool {
    !matches!(
        signal,
        Signal::SIGCHLD | Signal::SIGCONT | Signal::SIGURG | Signal::SIGWINCH
    )
}

impl fmt::Display for UnhandledSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UnhandledSignal::Refuse => "refuse",
            UnhandledSignal::Send => "send",
        })
    }
}
