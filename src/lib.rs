//! nudge: reload a Kubernetes app when its mounted ConfigMap or Secret changes.
//!
//! The sidecar is a one-way pipeline, one module per stage:
//!
//! - [`config`]   flags + env -> validated [`config::Settings`] (clear one-line errors)
//! - [`watch`]    inotify on each watched path -> [`watch::Touch`] ("look at volume N")
//! - [`snapshot`] read + SHA-256 a volume -> [`snapshot::VolumeSnapshot`], only when content moved
//! - [`decide`]   coalesce changes, retry with backoff, hand the newest content to the action
//! - [`action`]   what a reload is ([`action::ReloadAction`]): signal, restart, webhook, exec
//! - [`validate`] the validation gate: YAML/JSON/TOML syntax or a user command
//! - [`target`]   find the app's process in the shared PID namespace (/proc scan, pidfd)
//! - [`status`]   what the stages report: Prometheus metrics, readiness conditions, liveness
//! - [`server`]   the admin HTTP server: `/healthz`, `/readyz`, `/metrics`
//! - [`logging`]  text or JSON log lines (tracing-subscriber)
//! - [`config_file`] the YAML file layer under flags and env (`--config`)
//! - [`check`]    `nudge check`: explain what would and would not work in this pod
//!
//! [`run()`] wires the stages together with channels and a shutdown signal.

pub mod action;
pub mod check;
pub mod config;
pub mod config_file;
pub mod decide;
pub mod inject;
#[cfg(feature = "rollout")]
pub mod injector;
pub mod logging;
#[cfg(feature = "rollout")]
pub mod rollout;
pub mod run;
pub mod server;
pub mod snapshot;
pub mod status;
pub mod target;
pub mod validate;
pub mod watch;

pub use run::run;
