//! The `restart` action: end the app container's main process so the kubelet restarts the
//! container in place. The matched process may be a worker; the container only exits when its
//! main process does, so nudge walks up to the PPID-0 ancestor (in a shared PID namespace a
//! container's first process has a parent outside the namespace), sends `--restart-signal`
//! through a pidfd, waits `--grace`, then SIGKILLs. A background task reports the new PID and
//! the downtime once the container is back.
//!
//! The kubelet delays repeated restarts (CrashLoopBackOff), so a restart within ten minutes of
//! the previous one is warned about and counted.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::time::Instant;
use tracing::{info, warn};

use super::Outcome;
use crate::decide::Reload;
use crate::status::Status;
use crate::target::{self, PinnedProcess, Process, Selector, TargetError};

/// Default time between the restart signal and SIGKILL, as terminationGracePeriodSeconds.
pub const DEFAULT_GRACE: &str = "30s";
/// Default signal that asks the main process to stop.
pub const DEFAULT_RESTART_SIGNAL: &str = "SIGTERM";
/// The kubelet resets a container's restart backoff after it ran this long.
pub const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// How long to wait for the process to vanish after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How long the background task looks for the restarted container.
const WATCH_FOR_NEW: Duration = Duration::from_secs(600);
/// How often an ending process is checked on.
const EXIT_POLL: Duration = Duration::from_millis(2);
/// How often the background task looks for it.
const NEW_POLL: Duration = Duration::from_millis(50);

/// Why a restart attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum RestartError {
    /// No target (yet), or an ambiguous one.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// Walking up would reach PID 1 or nudge itself: never end those.
    #[error("the main process of {process}'s container would be {main}, which nudge never ends (PID 1 or nudge's own container); choose the app with RELOAD_PROCESS")]
    Refused {
        /// The matched process.
        process: Process,
        /// The ancestor that would have been ended.
        main: Process,
    },
    /// The kernel refused to deliver the signal.
    #[error("not allowed to send {signal} to {process}: run nudge as the app's UID or add capability KILL")]
    PermissionDenied {
        /// The main process.
        process: Process,
        /// The signal.
        signal: Signal,
    },
    /// The process survived SIGKILL (uninterruptible sleep, or gone from view).
    #[error("{process} did not exit within {waited:?} of SIGKILL")]
    Survived {
        /// The main process.
        process: Process,
        /// How long nudge waited.
        waited: Duration,
    },
    /// Any other system error.
    #[error("restarting {process} failed: {source}")]
    Io {
        /// The main process.
        process: Process,
        /// The system error.
        #[source]
        source: io::Error,
    },
}

/// Ends the app container's main process so the kubelet restarts it.
#[derive(Debug)]
pub struct RestartAction {
    signal: Signal,
    grace: Duration,
    selector: Selector,
    proc_root: PathBuf,
    status: Status,
    last_restart: Option<Instant>,
}

impl RestartAction {
    /// A restart action over the real /proc.
    pub fn new(signal: Signal, grace: Duration, selector: Selector) -> Self {
        RestartAction {
            signal,
            grace,
            selector,
            proc_root: PathBuf::from("/proc"),
            status: Status::default(),
            last_restart: None,
        }
    }

    /// How the process whose container is restarted is chosen (for readiness and `nudge check`).
    pub fn selector(&self) -> &Selector {
        &self.selector
    }

    /// The signal that asks the main process to stop.
    pub fn signal(&self) -> Signal {
        self.signal
    }

    /// Reports to `status` (the CrashLoopBackOff warning counter).
    pub fn set_status(&mut self, status: Status) {
        self.status = status;
    }

    /// Ends the main process of the target's container: signal, grace, SIGKILL.
    pub async fn perform(&mut self, _reload: &Reload) -> Result<Outcome, RestartError> {
        let matched = target::find(&self.selector, &self.proc_root)?;
        let mut effects = Vec::new();
        let mut mains: Vec<Process> = Vec::new();
        for process in matched {
            let main = main_of(&process, &self.proc_root)?;
            if main.pid == 1 || is_self_or_ancestor(&main, &self.proc_root) {
                return Err(RestartError::Refused { process, main });
            }
            if !mains.iter().any(|m| m.pid == main.pid) {
                mains.push(main);
            }
        }
        for main in mains {
            self.warn_if_backoff(&main);
            effects.push(self.end(&main).await?);
            let ended_at = Instant::now();
            self.last_restart = Some(ended_at);
            tokio::spawn(report_new_main(
                self.selector.clone(),
                self.proc_root.clone(),
                main,
                ended_at,
            ));
        }
        Ok(Outcome { effects })
    }

    fn warn_if_backoff(&self, main: &Process) {
        let Some(last) = self.last_restart else {
            return;
        };
        let since = last.elapsed();
        if since < BACKOFF_RESET {
            warn!(
                target_pid = main.pid,
                since_previous = ?since,
                "restarting again within 10 minutes of the previous restart: the kubelet delays \
                 repeated restarts (CrashLoopBackOff, 10s doubling to 5m) and restartCount grows; \
                 prefer --action signal or webhook if the app can reload in place"
            );
            self.status.restart_backoff_warning();
        }
    }

    /// Signal, wait up to the grace period, SIGKILL; one sentence for the log.
    async fn end(&self, main: &Process) -> Result<String, RestartError> {
        let io_error = |source| RestartError::Io {
            process: main.clone(),
            source,
        };
        let Some(pinned) = PinnedProcess::pin(main, &self.proc_root).map_err(io_error)? else {
            return Ok(format!("{main} had already exited"));
        };
        let started = Instant::now();
        self.send(&pinned, self.signal)?;
        if wait_exit(&pinned, &self.proc_root, self.grace)
            .await
            .map_err(io_error)?
        {
            return Ok(format!(
                "sent {} to {main}, the container's main process; it exited after {:?}",
                self.signal,
                started.elapsed()
            ));
        }
        self.send(&pinned, Signal::SIGKILL)?;
        if wait_exit(&pinned, &self.proc_root, KILL_WAIT)
            .await
            .map_err(io_error)?
        {
            return Ok(format!(
                "sent {} to {main}, the container's main process; still running after the {:?} grace, so sent SIGKILL",
                self.signal, self.grace
            ));
        }
        Err(RestartError::Survived {
            process: main.clone(),
            waited: KILL_WAIT,
        })
    }

    fn send(&self, pinned: &PinnedProcess, signal: Signal) -> Result<(), RestartError> {
        match pinned.send(signal) {
            Ok(()) => Ok(()),
            // Already gone: that is what we want.
            Err(e) if e.raw_os_error() == Some(nix::libc::ESRCH) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                Err(RestartError::PermissionDenied {
                    process: pinned.process.clone(),
                    signal,
                })
            }
            Err(source) => Err(RestartError::Io {
                process: pinned.process.clone(),
                source,
            }),
        }
    }
}

/// The container's main process: walk up from `process` to the ancestor whose parent is 0
/// (outside the PID namespace) or 1 (the pause process), or whose parent is not visible.
pub fn main_of(process: &Process, proc_root: &Path) -> Result<Process, RestartError> {
    let mut current = process.clone();
    // A chain longer than this is a loop from PID reuse mid-walk; stop there.
    for _ in 0..64 {
        if current.ppid == 0 || current.ppid == 1 {
            break;
        }
        match target::read_process(&proc_root.join(current.ppid.to_string())) {
            Some((parent, _)) => current = parent,
            None => break,
        }
    }
    Ok(current)
}

/// Whether `process` is nudge or one of nudge's ancestors (its own container's main process).
fn is_self_or_ancestor(process: &Process, proc_root: &Path) -> bool {
    let mut pid = std::process::id() as i32;
    for _ in 0..64 {
        if pid == process.pid {
            return true;
        }
        match target::read_process(&proc_root.join(pid.to_string())) {
            Some((p, _)) if p.ppid > 0 => pid = p.ppid,
            _ => return false,
        }
    }
    false
}

/// Waits until the pinned process has exited (gone, or a zombie awaiting its reaper); false on
/// timeout. Polled through /proc: the process is not nudge's child, and a few reads per
/// 2 ms for at most the grace period cost nothing worth an unsafe fd registration.
async fn wait_exit(pinned: &PinnedProcess, proc_root: &Path, within: Duration) -> io::Result<bool> {
    let deadline = Instant::now() + within;
    let dir = proc_root.join(pinned.process.pid.to_string());
    loop {
        match target::read_process(&dir) {
            Some((now, _)) if now.start_time == pinned.process.start_time => {}
            _ => return Ok(true),
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(EXIT_POLL).await;
    }
}

/// Looks for the restarted container's main process and logs its PID and the downtime.
async fn report_new_main(selector: Selector, proc_root: PathBuf, old: Process, ended_at: Instant) {
    let deadline = ended_at + WATCH_FOR_NEW;
    while Instant::now() < deadline {
        let found = target::find(&selector, &proc_root).ok().and_then(|found| {
            found
                .iter()
                .filter_map(|p| main_of(p, &proc_root).ok())
                .find(|m| (m.pid, m.start_time) != (old.pid, old.start_time))
        });
        if let Some(new) = found {
            let downtime = ended_at.elapsed();
            info!(
                old_pid = old.pid,
                new_pid = new.pid,
                ?downtime,
                "app restarted: {new} replaces {old}"
            );
            return;
        }
        tokio::time::sleep(NEW_POLL).await;
    }
    warn!(old_pid = old.pid, waited = ?WATCH_FOR_NEW, "the restarted app did not appear");
}
