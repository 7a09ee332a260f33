//! The controller's error types: configuration problems (exit 2) and run-time failures
//! (retried with backoff by the reconcile loop; fatal only at start).

use thiserror::Error;

/// A usage or configuration error: reported as one line, exit code 2.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// `--namespace` and `--ignore-namespaces` both given.
    #[error("--namespace and --ignore-namespaces exclude each other (got both)")]
    NamespaceConflict,
    /// A namespace name is not a DNS label.
    #[error("{flag}: {value:?} is not a namespace name (lowercase letters, digits, '-')")]
    BadNamespace {
        /// The flag.
        flag: &'static str,
        /// The value as given.
        value: String,
    },
    /// The API server rejected `--selector`.
    #[error("--selector: {value:?} is not a label selector: {source}")]
    BadSelector {
        /// The value as given.
        value: String,
        /// The server's answer.
        #[source]
        source: kube::Error,
    },
    /// A duration flag is zero or inconsistent.
    #[error("{0}")]
    BadDuration(String),
    /// The kubeconfig could not be read or used.
    #[error("cannot use kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The path.
        path: String,
        /// Why.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// No kubeconfig, no in-cluster environment.
    #[error("no cluster configuration (give --kubeconfig, set KUBECONFIG, or run in a pod): {0}")]
    Infer(#[source] kube::config::InferConfigError),
    /// The client could not be built from the configuration.
    #[error("cannot build the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    /// The API server did not answer at start.
    #[error("API server {url} unreachable at start: {source}")]
    Unreachable {
        /// The server URL.
        url: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
}

/// A failure while reconciling one workload; the controller retries it with backoff.
#[derive(Debug, Error)]
pub enum ReconcileError {
    /// Reading a ConfigMap or Secret failed.
    #[error("reading {object}: {source}")]
    Read {
        /// `configmap/NAME` or `secret/NAME`.
        object: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// The server-side apply of the hash failed.
    #[error("applying the config hash to {workload}: {source}")]
    Apply {
        /// `deployment/NAME`.
        workload: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// The object has no namespace (never for the kinds watched).
    #[error("{0} has no namespace")]
    NoNamespace(String),
}

/// A failure of the controller as a whole.
#[derive(Debug, Error)]
pub enum RunError {
    /// Leader election could not talk to the API at all.
    #[error("leader election: {0}")]
    Lease(#[source] kube::Error),
}
