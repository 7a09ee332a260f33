//! `nudge rollout`: the cluster-level controller. It watches annotated Deployments,
//! StatefulSets and DaemonSets, and ConfigMaps/Secrets as *metadata only*; when an object a
//! workload follows moves, it reads just that workload's referenced objects, hashes them, and
//! writes the hash to the pod template (server-side apply, field manager `nudge`) so the
//! workload's own strategy rolls it. The hash on the template is the controller's only memory.
//!
//! Layout:
//! - [`cli`]      flags -> [`settings::Settings`], the tokio runtime, exit codes
//! - [`settings`] validated settings (scopes, selector, validation mode, lease)
//! - [`refs`]     which ConfigMaps/Secrets a pod template references and follows (pure)
//! - [`content`]  the config hash and the validation gate over fetched data (pure)
//! - [`workload`] the three workload kinds behind one trait; the apply patch (pure)
//! - [`reconcile`] one workload: fetch, hash, validate, apply, Event
//! - [`controller`] kube-rs `Controller`s wired to metadata-only ConfigMap/Secret watches
//! - [`leader`]   leader election on a coordination.k8s.io/v1 Lease
//! - [`error`]    the error types

pub mod cli;
pub mod content;
pub mod controller;
pub mod error;
pub mod leader;
pub mod reconcile;
pub mod refs;
pub mod settings;
pub mod workload;

/// The field manager of every server-side apply the controller makes.
pub const FIELD_MANAGER: &str = "nudge";
/// The pod template annotation holding the config hash (and the workload's, before the first
/// rollout).
pub const HASH_ANNOTATION: &str = "nudge.dev/config-hash";
/// The workload annotation listing each followed object's hash prefix, to name what changed.
pub const SOURCES_ANNOTATION: &str = "nudge.dev/config-sources";
