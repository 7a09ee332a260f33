//! The three workload kinds behind one trait, what the controller reads from them (annotation
//! layers, the recorded hash) and the server-side apply body it writes. Pure.

use std::collections::BTreeMap;
use std::fmt::Debug;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::NamespaceResourceScope;
use kube::Resource;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::{HASH_ANNOTATION, SOURCES_ANNOTATION};
use crate::inject::annotations::Layer;

/// A Deployment, StatefulSet or DaemonSet.
pub trait Workload:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
    /// The pod template, when the spec is present.
    fn template(&self) -> Option<&PodTemplateSpec>;

    /// Drops the status, and the spec too unless `keep_spec` (see [`slim`]).
    fn drop_status(&mut self, keep_spec: bool);
}

/// The three kinds share their shape (`spec.template`, `status`) but no trait of k8s-openapi.
macro_rules! impl_workload {
    ($($kind:ty),*) => {$(
        impl Workload for $kind {
            fn template(&self) -> Option<&PodTemplateSpec> {
                Some(&self.spec.template)
            }

            fn drop_status(&mut self, keep_spec: bool) {
                self.status = None;
                if !keep_spec {
                    self.spec = Default::default();
                }
            }
        }
    )*};
}

impl_workload!(Deployment, StatefulSet, DaemonSet);

/// Cuts a workload down to what the controller reads, before the reflector stores it (the
/// store holds every workload in scope, annotated or not). `managedFields` and the status
/// always go: they are most of a stored Deployment's memory (`managedFields` decodes to a
/// tree of maps) and nothing reads them. A workload that follows nothing (`follows` false)
/// keeps only its identity (name, namespace, uid, resourceVersion: enough for the controller
/// to key, trigger and skip it), so its annotations, labels and pod template are not kept;
/// when its annotations change, the watch delivers the whole object again.
pub fn slim<K: Workload>(workload: &mut K, follows: bool) {
    let meta = workload.meta_mut();
    if follows {
        meta.managed_fields = None;
    } else {
        *meta = ObjectMeta {
            name: meta.name.take(),
            namespace: meta.namespace.take(),
            uid: meta.uid.take(),
            resource_version: meta.resource_version.take(),
            ..ObjectMeta::default()
        };
    }
    workload.drop_status(follows);
}

/// `deployment/NAME` for messages.
pub fn display<K: Workload>(workload: &K) -> String {
    format!(
        "{}/{}",
        K::kind(&()).to_ascii_lowercase(),
        workload.meta().name.as_deref().unwrap_or_default()
    )
}

fn layer(annotations: Option<&BTreeMap<String, String>>) -> Layer {
    annotations
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The annotation layers the shared parser reads, outermost first: the workload's metadata,
/// then the pod template's.
pub fn layers<K: Workload>(workload: &K) -> Vec<Layer> {
    let template = workload
        .template()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref());
    vec![layer(workload.meta().annotations.as_ref()), layer(template)]
}

/// The hash the workload was last rolled to (pod template), else the baseline recorded when
/// the controller adopted it (workload metadata), else `None`.
pub fn recorded_hash<K: Workload>(workload: &K) -> Option<&str> {
    let template = workload
        .template()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(HASH_ANNOTATION));
    let own = workload
        .meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(HASH_ANNOTATION));
    template.or(own).map(String::as_str)
}

/// The recorded per-object hash prefixes ([`SOURCES_ANNOTATION`]).
pub fn recorded_sources<K: Workload>(workload: &K) -> Option<&str> {
    let annotations = workload.meta().annotations.as_ref()?;
    annotations.get(SOURCES_ANNOTATION).map(String::as_str)
}

/// What to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// Record the baseline on the workload only: no rollout (a workload just opted in).
    Adopt,
    /// Record on the workload and the pod template: the workload's strategy rolls.
    Roll,
}

/// The server-side apply body: only the fields the `nudge` field manager owns.
pub fn apply_body<K: Workload>(
    name: &str,
    hash: &str,
    sources: &str,
    write: Write,
) -> serde_json::Value {
    let metadata = json!({
        "name": name,
        "annotations": { HASH_ANNOTATION: hash, SOURCES_ANNOTATION: sources },
    });
    let mut body = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": metadata,
    });
    if write == Write::Roll {
        body["spec"] = json!({
            "template": { "metadata": { "annotations": { HASH_ANNOTATION: hash } } }
        });
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(own: serde_json::Value, template: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "annotations": own},
            "spec": {
                "selector": {},
                "template": {"metadata": {"annotations": template}, "spec": {"containers": []}}
            }
        }))
        .unwrap()
    }

    #[test]
    fn the_template_hash_wins_over_the_adopted_baseline() {
        let both = deployment(
            json!({HASH_ANNOTATION: "base"}),
            json!({HASH_ANNOTATION: "rolled"}),
        );
        assert_eq!(recorded_hash(&both), Some("rolled"));
        let adopted = deployment(json!({HASH_ANNOTATION: "base"}), json!({}));
        assert_eq!(recorded_hash(&adopted), Some("base"));
        assert_eq!(recorded_hash(&deployment(json!({}), json!({}))), None);
    }

    #[test]
    fn adopting_never_touches_the_pod_template() {
        let adopt = apply_body::<Deployment>("web", "h", "s", Write::Adopt);
        assert!(adopt.get("spec").is_none());
        let roll = apply_body::<Deployment>("web", "h", "s", Write::Roll);
        assert_eq!(
            roll["spec"]["template"]["metadata"]["annotations"][HASH_ANNOTATION],
            "h"
        );
        assert_eq!(roll["kind"], "Deployment");
        assert_eq!(roll["apiVersion"], "apps/v1");
    }

    #[test]
    fn slimming_keeps_what_reconciling_reads_and_only_the_identity_of_the_rest() {
        let mut d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u", "resourceVersion": "7",
                "labels": {"app": "web"}, "annotations": {"nudge.dev/watch": "*"},
                "managedFields": [{"manager": "kubectl", "operation": "Update",
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]},
            "spec": {
                "selector": {},
                "template": {"metadata": {"annotations": {HASH_ANNOTATION: "h"}},
                    "spec": {"containers": [{"name": "app"}]}}
            },
            "status": {"replicas": 1}
        }))
        .unwrap();
        let full = d.clone();
        slim(&mut d, true);
        assert!(d.metadata.managed_fields.is_none() && d.status.is_none());
        assert_eq!(d.metadata.annotations, full.metadata.annotations);
        assert_eq!(d.spec, full.spec);
        assert_eq!(recorded_hash(&d), Some("h"));
        slim(&mut d, false);
        assert_eq!(d.metadata.name.as_deref(), Some("web"));
        assert_eq!(d.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(d.metadata.uid.as_deref(), Some("u"));
        assert_eq!(d.metadata.resource_version.as_deref(), Some("7"));
        assert!(d.metadata.annotations.is_none() && d.metadata.labels.is_none());
        assert_eq!(d.spec, Default::default());
        assert_eq!(layers(&d), [vec![], vec![]]);
    }

    #[test]
    fn layers_are_workload_then_template() {
        let d = deployment(json!({"a": "1"}), json!({"b": "2"}));
        assert_eq!(
            layers(&d),
            [
                vec![("a".to_owned(), "1".to_owned())],
                vec![("b".to_owned(), "2".to_owned())]
            ]
        );
    }
}
