//! What can go wrong in `nudge inject`/`uninject`: a [`Problem`] with one field of one object,
//! located by [`DocumentError`] (document index, List item, kind/name). Every message names the
//! field or annotation and says what a valid value looks like. I/O errors belong to the CLI
//! ([`super::cli`]), not here: this module's callers do no I/O.

use std::fmt;

use super::report::ObjectRef;

/// One invalid field or annotation of one object.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// The document is not valid YAML.
    #[error("invalid YAML: {0}")]
    Yaml(#[source] serde_yaml::Error),
    /// A field has the wrong type.
    #[error("{field}: expected {expected}")]
    WrongType {
        /// Dotted path of the field, e.g. `spec.template.spec.volumes[0]`.
        field: String,
        /// What the field should be, e.g. `a list`.
        expected: &'static str,
    },
    /// A field needed to add the sidecar is missing.
    #[error("{field}: missing, but needed to add the sidecar")]
    Missing {
        /// Dotted path of the missing field.
        field: String,
    },
    /// An annotation that must be `"true"` or `"false"` is something else.
    #[error("annotation {annotation}: {value:?} is not a boolean; expected \"true\" or \"false\"")]
    NotABool {
        /// The annotation key.
        annotation: String,
        /// The value given.
        value: String,
    },
    /// `nudge.dev/action` names no known action.
    #[error("annotation {annotation}: unknown action {value:?}; expected one of signal, restart, webhook, exec")]
    UnknownAction {
        /// The annotation key.
        annotation: String,
        /// The value given.
        value: String,
    },
    /// `nudge.dev/signal` is not a signal the sidecar would accept.
    #[error("annotation {annotation}: {value:?} is not a signal; expected {expected}")]
    BadSignal {
        /// The annotation key.
        annotation: String,
        /// The value given.
        value: String,
        /// What the sidecar accepts (from [`crate::config::parse_signal`]).
        expected: String,
    },
    /// One entry of a watch list is not a ConfigMap/Secret name.
    #[error("annotation {annotation}: {entry:?} is not a ConfigMap or Secret name; expected NAME, configmap/NAME, secret/NAME or * (lowercase letters, digits, '-' and '.')")]
    BadWatchEntry {
        /// The annotation key.
        annotation: String,
        /// The offending entry.
        entry: String,
    },
    /// An annotation that needs a value is empty.
    #[error("annotation {annotation}: empty; {expected}")]
    Empty {
        /// The annotation key.
        annotation: String,
        /// What a valid value looks like.
        expected: &'static str,
    },
    /// `nudge.dev/webhook-url` is not an http(s) URL.
    #[error("annotation {annotation}: {value:?} is not an http:// or https:// URL")]
    BadUrl {
        /// The annotation key.
        annotation: String,
        /// The value given.
        value: String,
    },
    /// `nudge.dev/image` is not an image reference.
    #[error("annotation {annotation}: {value:?} is not an image reference (no spaces allowed)")]
    BadImage {
        /// The annotation key.
        annotation: String,
        /// The value given.
        value: String,
    },
    /// An action needs an annotation that is not there.
    #[error("annotation nudge.dev/action: {action} needs annotation {needs} ({what})")]
    ActionNeeds {
        /// The action, e.g. `webhook`.
        action: &'static str,
        /// The missing annotation.
        needs: &'static str,
        /// What it holds.
        what: &'static str,
    },
    /// `nudge.dev/container` names no container of the pod.
    #[error("annotation {annotation}: the pod has no container named {name:?}; its containers are {available}")]
    NoSuchContainer {
        /// The annotation key.
        annotation: String,
        /// The name given.
        name: String,
        /// The pod's container names, comma-separated.
        available: String,
    },
    /// `nudge.dev/injected` holds something `nudge inject` never writes.
    #[error("annotation nudge.dev/injected: {value:?} was not written by this version of nudge inject; remove the sidecar by hand")]
    BadMarker {
        /// The value found.
        value: String,
    },
}

/// A [`Problem`] located in the input: document index (1-based), item of a `List`, object.
#[derive(Debug, thiserror::Error)]
pub struct DocumentError {
    /// 1-based index of the YAML document in its input.
    pub document: usize,
    /// 1-based index of the item when the document is a `List`.
    pub item: Option<usize>,
    /// The object, when the document got far enough to have one.
    pub object: Option<ObjectRef>,
    /// What is wrong (boxed: errors are rare, results are common).
    #[source]
    pub problem: Box<Problem>,
}

impl fmt::Display for DocumentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "document {}", self.document)?;
        if let Some(item) = self.item {
            write!(f, ", item {item}")?;
        }
        if let Some(object) = &self.object {
            write!(f, " ({object})")?;
        }
        write!(f, ": {}", self.problem)
    }
}

/// A [`Problem`] of a known object, before the stream adds the document index.
#[derive(Debug, thiserror::Error)]
#[error("{object}: {problem}")]
pub struct ObjectError {
    /// The object.
    pub object: ObjectRef,
    /// What is wrong (boxed: errors are rare, results are common).
    #[source]
    pub problem: Box<Problem>,
}

impl ObjectError {
    /// `problem` in `object`.
    pub fn new(object: &ObjectRef, problem: Problem) -> ObjectError {
        ObjectError {
            object: object.clone(),
            problem: Box::new(problem),
        }
    }
}
