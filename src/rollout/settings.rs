//! Validated controller settings: which namespaces, which workloads, how strict, and the
//! leader-election lease. Built from the flags by [`super::cli`]; every error is one line.

use std::path::PathBuf;
use std::time::Duration;

use super::content::Gate;
use super::error::ConfigError;

/// Which namespaces the controller acts in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Exactly these namespaces (one watch set per namespace).
    Namespaces(Vec<String>),
    /// Every namespace but these (a field selector on every watch).
    All {
        /// Namespaces left alone.
        ignore: Vec<String>,
    },
}

/// The leader-election lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSettings {
    /// The Lease name.
    pub name: String,
    /// The Lease namespace.
    pub namespace: String,
    /// This replica's identity (holderIdentity).
    pub identity: String,
    /// How long a lease is valid without renewal; a standby takes over after it.
    pub duration: Duration,
}

/// Everything `nudge rollout` runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Namespaces.
    pub scope: Scope,
    /// Label selector on workloads.
    pub selector: Option<String>,
    /// The validation gate.
    pub gate: Gate,
    /// How long the controller waits for more events before reconciling a workload.
    pub debounce: Duration,
    /// Leader election, when enabled.
    pub lease: Option<LeaseSettings>,
    /// An explicit kubeconfig, else KUBECONFIG / ~/.kube/config / in-cluster.
    pub kubeconfig: Option<PathBuf>,
}

/// Checks namespace flags and turns them into a [`Scope`].
pub fn scope(namespaces: &[String], ignore: &[String]) -> Result<Scope, ConfigError> {
    let split = |values: &[String], flag: &'static str| -> Result<Vec<String>, ConfigError> {
        let mut out = Vec::new();
        for value in values.iter().flat_map(|v| v.split(',')).map(str::trim) {
            if value.is_empty() {
                continue;
            }
            if !is_dns_label(value) {
                return Err(ConfigError::BadNamespace {
                    flag,
                    value: value.to_owned(),
                });
            }
            out.push(value.to_owned());
        }
        Ok(out)
    };
    let namespaces = split(namespaces, "--namespace")?;
    let ignore = split(ignore, "--ignore-namespaces")?;
    match (namespaces.is_empty(), ignore.is_empty()) {
        (false, false) => Err(ConfigError::NamespaceConflict),
        (false, true) => Ok(Scope::Namespaces(namespaces)),
        (true, _) => Ok(Scope::All { ignore }),
    }
}

/// An empty selector means none. The API server checks the syntax at start (its parser is
/// the reference; kube-rs has none for strings).
pub fn selector(value: Option<&str>) -> Option<String> {
    value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// RFC 1123 label, the rule for namespace names.
fn is_dns_label(name: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && alnum(name.chars().next())
        && alnum(name.chars().last())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_and_ignored_namespaces_exclude_each_other() {
        let err = scope(&["a".into()], &["b".into()]).unwrap_err();
        assert!(err.to_string().contains("exclude"));
        assert_eq!(
            scope(&["a,b".into(), "c".into()], &[]).unwrap(),
            Scope::Namespaces(vec!["a".into(), "b".into(), "c".into()])
        );
        assert_eq!(
            scope(&[], &["kube-system".into()]).unwrap(),
            Scope::All {
                ignore: vec!["kube-system".into()]
            }
        );
    }

    #[test]
    fn a_bad_namespace_is_named_in_one_line() {
        let err = scope(&["Bad_NS".into()], &[]).unwrap_err().to_string();
        assert!(
            err.contains("Bad_NS") && err.contains("--namespace"),
            "{err}"
        );
        assert_eq!(selector(Some(" ")), None);
        assert_eq!(
            selector(Some("app=web,tier!=db")).as_deref(),
            Some("app=web,tier!=db")
        );
    }
}
