//! `nudge injector`: a mutating admission webhook that adds the reload sidecar to Pods whose
//! annotations ask for it, exactly as `nudge inject` would (the same
//! [`crate::inject::inject_object`], its result diffed into a JSON patch).
//!
//! Layout:
//! - [`review`] `AdmissionReview` bytes in, answer out; [`review::mutate`] Pod → JSON patch (pure)
//! - [`server`] HTTPS (rustls) + hyper: `/mutate`, `/healthz`, `/readyz`, `/metrics`
//! - [`tls`]    the serving certificate, reloaded on rotation by nudge's own volume watcher
//! - [`cli`]    flags, `--sidecar auto` (the API server's `/version`), runtime, exit codes

#![deny(clippy::unwrap_used, clippy::expect_used)]
#![warn(missing_docs)]

pub mod cli;
pub mod review;
pub mod server;
pub mod tls;
