//! Which ConfigMaps and Secrets a pod template references (volumes, projected sources,
//! `env[].valueFrom`, `envFrom`) and which of them a workload follows, given the watch list
//! its annotations ask for. Pure: no API calls.

use std::collections::BTreeSet;
use std::fmt;

use k8s_openapi::api::core::v1::{Container, PodSpec, Volume};

use crate::inject::annotations::WatchSpec;
use crate::inject::report::SourceKind;

/// One ConfigMap or Secret in the workload's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Source {
    /// ConfigMap or Secret.
    pub kind: SourceKind,
    /// Its name.
    pub name: String,
}

impl Source {
    /// A ConfigMap source.
    pub fn configmap(name: &str) -> Source {
        Source {
            kind: SourceKind::ConfigMap,
            name: name.to_owned(),
        }
    }

    /// A Secret source.
    pub fn secret(name: &str) -> Source {
        Source {
            kind: SourceKind::Secret,
            name: name.to_owned(),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

/// Every ConfigMap and Secret the pod spec references, in all containers and init containers.
pub fn referenced(spec: &PodSpec) -> BTreeSet<Source> {
    let mut out = BTreeSet::new();
    for volume in spec.volumes.iter().flatten() {
        volume_sources(volume, &mut out);
    }
    let containers = spec.init_containers.iter().flatten();
    for container in containers.chain(spec.containers.iter()) {
        container_sources(container, &mut out);
    }
    out
}

fn volume_sources(volume: &Volume, out: &mut BTreeSet<Source>) {
    if let Some(cm) = &volume.config_map {
        out.insert(Source::configmap(&cm.name));
    }
    if let Some(name) = volume.secret.as_ref().and_then(|s| s.secret_name.as_ref()) {
        out.insert(Source::secret(name));
    }
    let projected = volume.projected.as_ref().and_then(|p| p.sources.as_ref());
    for projection in projected.into_iter().flatten() {
        if let Some(cm) = &projection.config_map {
            out.insert(Source::configmap(&cm.name));
        }
        if let Some(secret) = &projection.secret {
            out.insert(Source::secret(&secret.name));
        }
    }
}

fn container_sources(container: &Container, out: &mut BTreeSet<Source>) {
    for env in container.env.iter().flatten() {
        let Some(from) = &env.value_from else {
            continue;
        };
        if let Some(key) = &from.config_map_key_ref {
            out.insert(Source::configmap(&key.name));
        }
        if let Some(key) = &from.secret_key_ref {
            out.insert(Source::secret(&key.name));
        }
    }
    for from in container.env_from.iter().flatten() {
        if let Some(cm) = &from.config_map_ref {
            out.insert(Source::configmap(&cm.name));
        }
        if let Some(secret) = &from.secret_ref {
            out.insert(Source::secret(&secret.name));
        }
    }
}

/// The sources a workload follows: with `*` (or Reloader's `auto`), every referenced source of
/// the covered kinds; with names, each named source. A name without a kind means the
/// referenced ConfigMap or Secret of that name, or a ConfigMap when the template references
/// neither (names an env-only consumer may read through other means).
pub fn followed(watch: &WatchSpec, referenced: &BTreeSet<Source>) -> BTreeSet<Source> {
    match watch {
        WatchSpec::Everything(kinds) => referenced
            .iter()
            .filter(|s| kinds.covers(s.kind))
            .cloned()
            .collect(),
        WatchSpec::Names(names) => {
            let mut out = BTreeSet::new();
            for (wanted, _annotation) in names {
                if let Some(kind) = wanted.kind {
                    out.insert(Source {
                        kind,
                        name: wanted.name.clone(),
                    });
                    continue;
                }
                let matching: Vec<&Source> = referenced
                    .iter()
                    .filter(|s| s.name == wanted.name)
                    .collect();
                if matching.is_empty() {
                    out.insert(Source::configmap(&wanted.name));
                }
                out.extend(matching.into_iter().cloned());
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inject::annotations::Kinds;
    use crate::inject::report::WatchedName;

    fn spec(json: serde_json::Value) -> PodSpec {
        serde_json::from_value(json).unwrap()
    }

    fn full_spec() -> PodSpec {
        spec(serde_json::json!({
            "containers": [{
                "name": "app",
                "env": [
                    {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "a"}}},
                    {"name": "B", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "b"}}},
                    {"name": "C", "value": "plain"}
                ],
                "envFrom": [{"configMapRef": {"name": "from-cm"}}, {"secretRef": {"name": "from-secret"}}]
            }],
            "initContainers": [{"name": "init", "envFrom": [{"configMapRef": {"name": "init-cm"}}]}],
            "volumes": [
                {"name": "v1", "configMap": {"name": "vol-cm"}},
                {"name": "v2", "secret": {"secretName": "vol-secret"}},
                {"name": "v3", "projected": {"sources": [
                    {"configMap": {"name": "proj-cm"}}, {"secret": {"name": "proj-secret"}}
                ]}},
                {"name": "v4", "emptyDir": {}}
            ]
        }))
    }

    #[test]
    fn every_kind_of_reference_in_the_pod_spec_is_found() {
        let names: Vec<String> = referenced(&full_spec())
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            names,
            [
                "configmap/env-cm",
                "configmap/from-cm",
                "configmap/init-cm",
                "configmap/proj-cm",
                "configmap/vol-cm",
                "secret/env-secret",
                "secret/from-secret",
                "secret/proj-secret",
                "secret/vol-secret",
            ]
        );
    }

    #[test]
    fn everything_of_one_kind_follows_only_that_kind() {
        let only_secrets = WatchSpec::Everything(Kinds {
            configmaps: false,
            secrets: true,
        });
        let followed = followed(&only_secrets, &referenced(&full_spec()));
        assert!(followed.iter().all(|s| s.kind == SourceKind::Secret));
        assert_eq!(followed.len(), 4);
    }

    #[test]
    fn a_bare_name_means_the_referenced_object_of_that_name() {
        let watch = WatchSpec::Names(vec![
            (
                WatchedName {
                    kind: None,
                    name: "from-secret".into(),
                },
                "nudge.dev/watch".into(),
            ),
            (
                WatchedName {
                    kind: None,
                    name: "unreferenced".into(),
                },
                "nudge.dev/watch".into(),
            ),
        ]);
        let followed = followed(&watch, &referenced(&full_spec()));
        let expected: BTreeSet<Source> = [
            Source::secret("from-secret"),
            Source::configmap("unreferenced"),
        ]
        .into();
        assert_eq!(followed, expected);
    }
}
