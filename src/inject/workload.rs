//! Where each kind keeps its pod template, and which metadata blocks carry annotations.
//! Kinds not listed here pass through `nudge inject` unchanged.

/// A kind with a pod template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadKind {
    /// `v1 Pod`: the object is its own template.
    Pod,
    /// `apps/v1 Deployment`.
    Deployment,
    /// `apps/v1 StatefulSet`.
    StatefulSet,
    /// `apps/v1 DaemonSet`.
    DaemonSet,
    /// `apps/v1 ReplicaSet`.
    ReplicaSet,
    /// `v1 ReplicationController`.
    ReplicationController,
    /// `batch/v1 Job`.
    Job,
    /// `batch/v1 CronJob`.
    CronJob,
}

impl WorkloadKind {
    /// The workload kind for a `kind:` value, if it has a pod template.
    pub fn from_kind(kind: &str) -> Option<WorkloadKind> {
        Some(match kind {
            "Pod" => WorkloadKind::Pod,
            "Deployment" => WorkloadKind::Deployment,
            "StatefulSet" => WorkloadKind::StatefulSet,
            "DaemonSet" => WorkloadKind::DaemonSet,
            "ReplicaSet" => WorkloadKind::ReplicaSet,
            "ReplicationController" => WorkloadKind::ReplicationController,
            "Job" => WorkloadKind::Job,
            "CronJob" => WorkloadKind::CronJob,
            _ => return None,
        })
    }

    /// Path from the object to the pod template (a mapping with `metadata` and `spec`).
    pub fn template_path(self) -> &'static [&'static str] {
        match self {
            WorkloadKind::Pod => &[],
            WorkloadKind::CronJob => &["spec", "jobTemplate", "spec", "template"],
            _ => &["spec", "template"],
        }
    }

    /// Paths of the metadata blocks whose annotations count, outermost first.
    pub fn annotation_layers(self) -> &'static [&'static [&'static str]] {
        match self {
            WorkloadKind::Pod => &[&["metadata"]],
            WorkloadKind::CronJob => &[
                &["metadata"],
                &["spec", "jobTemplate", "metadata"],
                &["spec", "jobTemplate", "spec", "template", "metadata"],
            ],
            _ => &[&["metadata"], &["spec", "template", "metadata"]],
        }
    }

    /// Whether the pod is meant to run to completion.
    pub fn completes(self) -> bool {
        matches!(self, WorkloadKind::Job | WorkloadKind::CronJob)
    }
}

/// Whether a `kind:` is a list of objects in `items` (`List`, `DeploymentList`, ...).
pub fn is_list(kind: &str) -> bool {
    kind.ends_with("List")
}
