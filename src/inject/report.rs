//! What `nudge inject` tells the user on stderr: one [`DocumentReport`] line per object
//! (`deployment/web: sidecar added, watching configmap/web-config`), followed by its
//! [`Warning`]s, things that will never reload. stdout carries only YAML.

use std::fmt;

/// An object for messages: lowercase kind and name, e.g. `deployment/web`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    /// Lowercase kind, e.g. `deployment`; `object` when the document has no kind.
    pub kind: String,
    /// `metadata.name`, else `metadata.generateName` with `*`, else `<unnamed>`.
    pub name: String,
}

impl ObjectRef {
    /// Reads kind and name from a document, never failing.
    pub fn of(document: &serde_yaml::Value) -> ObjectRef {
        let kind = document
            .get("kind")
            .and_then(serde_yaml::Value::as_str)
            .map_or_else(|| "object".to_owned(), str::to_ascii_lowercase);
        let metadata = document.get("metadata");
        let field = |name: &str| {
            metadata
                .and_then(|m| m.get(name))
                .and_then(serde_yaml::Value::as_str)
        };
        let name = match (field("name"), field("generateName")) {
            (Some(name), _) => name.to_owned(),
            (None, Some(prefix)) => format!("{prefix}*"),
            (None, None) => "<unnamed>".to_owned(),
        };
        ObjectRef { kind, name }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

/// Which kind of object a volume or env reference points to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKind {
    /// A ConfigMap.
    ConfigMap,
    /// A Secret.
    Secret,
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceKind::ConfigMap => "configmap",
            SourceKind::Secret => "secret",
        })
    }
}

/// A ConfigMap or Secret by name, as the pod refers to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceRef {
    /// ConfigMap or Secret.
    pub kind: SourceKind,
    /// Its name.
    pub name: String,
}

impl fmt::Display for SourceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

/// A name from an annotation: `NAME` (ConfigMap or Secret), `configmap/NAME` or `secret/NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedName {
    /// `None` when the annotation did not say which kind.
    pub kind: Option<SourceKind>,
    /// The name.
    pub name: String,
}

impl WatchedName {
    /// Whether `source` is what this name means.
    pub fn matches(&self, source: &SourceRef) -> bool {
        self.name == source.name && self.kind.is_none_or(|kind| kind == source.kind)
    }
}

impl fmt::Display for WatchedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            Some(kind) => write!(f, "{kind}/{}", self.name),
            None => write!(f, "ConfigMap or Secret {:?}", self.name),
        }
    }
}

/// Why a document was left as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// Not a kind with a pod template (Service, ConfigMap, ...).
    NotAWorkload,
    /// No annotation asks for the sidecar.
    NotRequested,
    /// `nudge.dev/inject: "false"` (or `skater.io/config-reload: "false"`).
    OptedOut,
    /// The annotations resolve to no mounted volume.
    NothingToWatch,
    /// The pod already has a container named `nudge` that inject did not add.
    HandWritten,
    /// `uninject`: no sidecar added by inject.
    NotInjected,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SkipReason::NotAWorkload => "",
            SkipReason::NotRequested => " (no nudge.dev/watch annotation)",
            SkipReason::OptedOut => " (nudge.dev/inject: \"false\")",
            SkipReason::NothingToWatch => " (nothing to watch)",
            SkipReason::HandWritten => " (already has a container named nudge)",
            SkipReason::NotInjected => " (not injected)",
        })
    }
}

/// What happened to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The sidecar was added.
    Added {
        /// What it watches.
        watching: Vec<SourceRef>,
    },
    /// An existing sidecar was rewritten after an annotation change.
    Updated {
        /// What it watches now.
        watching: Vec<SourceRef>,
    },
    /// The sidecar was already exactly as the annotations ask.
    Unchanged {
        /// What it watches.
        watching: Vec<SourceRef>,
    },
    /// An injected sidecar was removed (`uninject`, or inject after the annotations went away).
    Removed {
        /// Why, when it was inject that removed it.
        reason: Option<SkipReason>,
    },
    /// Left alone.
    Skipped(SkipReason),
}

impl Outcome {
    /// Whether the object's YAML was changed.
    pub fn changed(&self) -> bool {
        matches!(
            self,
            Outcome::Added { .. } | Outcome::Updated { .. } | Outcome::Removed { .. }
        )
    }
}

fn list(watching: &[SourceRef]) -> String {
    watching
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Added { watching } => write!(f, "sidecar added, watching {}", list(watching)),
            Outcome::Updated { watching } => {
                write!(f, "sidecar updated, watching {}", list(watching))
            }
            Outcome::Unchanged { watching } => {
                write!(f, "sidecar up to date, watching {}", list(watching))
            }
            Outcome::Removed { reason: None } => f.write_str("sidecar removed"),
            Outcome::Removed {
                reason: Some(reason),
            } => write!(f, "sidecar removed{reason}"),
            Outcome::Skipped(reason) => write!(f, "skipped{reason}"),
        }
    }
}

/// Something that will never reload, or an annotation that has no effect. Shown on stderr;
/// `--strict` turns any of them into a failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Warning {
    /// A watched ConfigMap/Secret reaches the pod only as environment variables.
    #[error("{reference} is used only through env/envFrom; environment variables are fixed when the container starts, so no reload can pick up a change (mount it as a volume, or restart the pod)")]
    EnvOnly {
        /// The ConfigMap or Secret.
        reference: SourceRef,
    },
    /// The app container mounts a watched volume only with `subPath`.
    #[error("volume {volume} ({sources}) is mounted with subPath in container {container}; subPath mounts never receive updates, so it is not watched (mount the whole volume as a directory)")]
    SubPath {
        /// The volume name.
        volume: String,
        /// Its watched sources, comma-separated.
        sources: String,
        /// The app container.
        container: String,
    },
    /// A watched ConfigMap/Secret in the same input is `immutable: true`.
    #[error("{reference} is immutable (immutable: true in this input); its content never changes, so there is nothing to reload")]
    Immutable {
        /// The ConfigMap or Secret.
        reference: SourceRef,
    },
    /// A name in a watch annotation matches no volume of the pod.
    #[error("{name} (from {annotation}) is not used by any volume of the pod{hint}")]
    NoVolume {
        /// The name as written.
        name: WatchedName,
        /// The annotation it came from.
        annotation: String,
        /// A hint, e.g. when a volume of that name exists.
        hint: String,
    },
    /// A watched volume is not mounted in the app container.
    #[error("volume {volume} ({sources}) is not mounted in the app container {container}, so nudge cannot watch what the app reads (set nudge.dev/container if another container is the app)")]
    NotMounted {
        /// The volume name.
        volume: String,
        /// Its watched sources, comma-separated.
        sources: String,
        /// The app container.
        container: String,
    },
    /// Nothing resolved to a mounted volume, so no sidecar was added.
    #[error("nothing to watch: no mounted ConfigMap, Secret or projected volume matches the annotations; sidecar not added")]
    NothingToWatch,
    /// A regular (non-native) sidecar in a Job's pod keeps it from ever completing.
    #[error("--sidecar=regular in a {kind}: the sidecar never exits, so the pod never completes; use the default native sidecar (Kubernetes 1.29+)")]
    RegularSidecarInJob {
        /// `job` or `cronjob`.
        kind: String,
    },
    /// Several app containers and no way to tell which process to reload.
    #[error("the pod has {count} containers ({names}) and no nudge.dev/process; the sidecar cannot tell which process to reload (set nudge.dev/process to the app's process name)")]
    AmbiguousTarget {
        /// How many regular containers.
        count: usize,
        /// Their names, comma-separated.
        names: String,
    },
    /// The pod already has a container named `nudge` that inject did not add.
    #[error(
        "the pod already has a container named nudge that nudge inject did not add; left as it is"
    )]
    HandWritten,
    /// An annotation is set but the chosen action does not use it.
    #[error("annotation {annotation} is ignored with action {action}")]
    Ignored {
        /// The annotation key.
        annotation: String,
        /// The action in effect.
        action: &'static str,
    },
    /// Another container already uses the admin port.
    #[error("container {container} already uses port {port}, which the sidecar's admin server needs; the sidecar would fail to start")]
    PortTaken {
        /// The container using the port.
        container: String,
        /// The port.
        port: u16,
    },
}

/// The result for one object: the report line and its warnings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentReport {
    /// The object.
    pub object: ObjectRef,
    /// What happened.
    pub outcome: Outcome,
    /// Things that will never reload, in the order found.
    pub warnings: Vec<Warning>,
}

impl fmt::Display for DocumentReport {
    /// The report line, e.g. `deployment/web: sidecar added, watching configmap/web-config`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.object, self.outcome)
    }
}
