//! The `exec` action: run a command (an argument vector; no shell unless the user writes
//! `sh -c`), with the changed volume paths in `NUDGE_CHANGED` (colon-separated, like `PATH`).
//! Exit status 0 is success; a non-zero status, a signal or the timeout is a failure that the
//! decide stage retries. The child is killed when it times out or nudge stops.

use std::process::Stdio;
use std::time::Duration;

use super::Outcome;
use crate::decide::Reload;
use crate::validate::output_tail;

/// Default time the command may run.
pub const DEFAULT_TIMEOUT: &str = "30s";
/// Name of the environment variable holding the changed volume paths.
pub const ENV_CHANGED: &str = "NUDGE_CHANGED";

/// Why one run failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The program could not be started.
    #[error("could not start {program:?}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// It ran longer than the timeout and was killed.
    #[error("{program:?} did not finish within {timeout:?}; killed")]
    Timeout {
        /// The program.
        program: String,
        /// The timeout.
        timeout: Duration,
    },
    /// It exited non-zero or was killed by a signal.
    #[error("{program:?} {status}{}", if output.is_empty() { String::new() } else { format!(": {}", output.replace('\n', " | ")) })]
    Failed {
        /// The program.
        program: String,
        /// `exit status: 3`, `signal: 9 (SIGKILL)`.
        status: std::process::ExitStatus,
        /// The tail of its output.
        output: String,
    },
}

/// Runs a command on every reload.
#[derive(Debug, Clone)]
pub struct ExecAction {
    argv: Vec<String>,
    timeout: Duration,
}

impl ExecAction {
    /// An exec action; `argv` is not empty (settings check that).
    pub fn new(argv: Vec<String>, timeout: Duration) -> Self {
        ExecAction { argv, timeout }
    }

    /// Runs the command once.
    pub async fn perform(&self, reload: &Reload) -> Result<Outcome, ExecError> {
        let (program, args) = self
            .argv
            .split_first()
            .map_or(("", &[][..]), |(p, a)| (p.as_str(), a));
        let changed = reload
            .volumes
            .iter()
            .map(|v| v.path.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let child = tokio::process::Command::new(program)
            .args(args)
            .env(ENV_CHANGED, &changed)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| ExecError::Spawn {
                program: program.to_owned(),
                source,
            })?;
        let output = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .map_err(|_| ExecError::Timeout {
                program: program.to_owned(),
                timeout: self.timeout,
            })?
            .map_err(|source| ExecError::Spawn {
                program: program.to_owned(),
                source,
            })?;
        let tail = output_tail(&output.stdout, &output.stderr);
        if !output.status.success() {
            return Err(ExecError::Failed {
                program: program.to_owned(),
                status: output.status,
                output: tail,
            });
        }
        let mut effect = format!("ran {program:?}: {}", output.status);
        if !tail.is_empty() {
            effect.push_str(&format!(": {}", tail.replace('\n', " | ")));
        }
        Ok(Outcome {
            effects: vec![effect],
        })
    }
}
