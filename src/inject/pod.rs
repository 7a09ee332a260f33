//! Reads a pod spec and works out what the sidecar must do for a [`Request`]: which volumes the
//! names resolve to (configMap, secret and projected sources), which container is the app, where
//! it mounts them, what UID and process to use, and every reason something will never reload.
//! Read-only: the result is a [`Plan`] that [`super::sidecar`] applies.

use std::collections::HashSet;

use serde_yaml::{Mapping, Value};

use super::annotations::{self, Kinds, Request, WatchSpec};
use super::error::Problem;
use super::report::{SourceKind, SourceRef, Warning};
use super::value::{as_int, as_map, as_str, join, maps};
use super::Inventory;

/// Name of the injected container.
pub const SIDECAR_NAME: &str = "nudge";
/// Port of the sidecar's admin server (`/healthz`, `/readyz`, `/metrics`).
pub const ADMIN_PORT: u16 = 9533;

/// One volume mount the sidecar copies from the app container (always read-only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The pod volume.
    pub volume: String,
    /// Where the app container mounts it; the sidecar watches the same path.
    pub path: String,
}

/// Everything the sidecar needs, worked out from the pod spec and the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The app container's name.
    pub app: String,
    /// Mounts to copy, in the app container's order.
    pub mounts: Vec<Mount>,
    /// The ConfigMaps/Secrets behind those mounts, for the report.
    pub watching: Vec<SourceRef>,
    /// The app's UID when the manifest says it (container, else pod `runAsUser`).
    pub run_as_user: Option<i64>,
    /// `RELOAD_PROCESS`, from the annotation or inferred when the pod has several containers.
    pub process: Option<String>,
}

/// The pod spec view: containers, init containers and volumes with their field paths.
struct Pod<'a> {
    path: String,
    containers: Vec<(&'a Mapping, String)>,
    init_containers: Vec<(&'a Mapping, String)>,
    volumes: Vec<Volume>,
}

/// One pod volume and the ConfigMaps/Secrets it shows.
struct Volume {
    name: String,
    sources: Vec<SourceRef>,
}

/// Whether the pod spec already has a container named `nudge` (in either list).
pub fn has_sidecar_named(spec: &Mapping, path: &str) -> Result<bool, Problem> {
    for list in ["initContainers", "containers"] {
        for (container, field) in maps(spec.get(list), &join(path, list))? {
            if name_of(container, &field)? == SIDECAR_NAME {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Works out the sidecar for `request` in the pod spec at `path` (for messages), or `None`
/// when nothing can be watched. Warnings are appended to `warnings`.
pub fn plan(
    spec: &Mapping,
    path: &str,
    request: &Request,
    namespace: Option<&str>,
    inventory: &Inventory,
    warnings: &mut Vec<Warning>,
) -> Result<Option<Plan>, Problem> {
    let pod = Pod::read(spec, path)?;
    let watched: Vec<&Volume> = pod.volumes.iter().filter(|v| wants(request, v)).collect();
    let app = pod.app_container(request, &watched)?;
    let (app_map, app_path) = app;
    let app_name = name_of(app_map, app_path)?.to_owned();

    // The app's mounts of watched volumes, first whole-volume mount of each.
    let mut mounts: Vec<Mount> = Vec::new();
    let mut sub_path_only: Vec<&str> = Vec::new();
    let mounts_field = join(app_path, "volumeMounts");
    for (mount, field) in maps(app_map.get("volumeMounts"), &mounts_field)? {
        let volume = as_str(mount.get("name"), &join(&field, "name"))?.unwrap_or_default();
        if !watched.iter().any(|v| v.name == volume) || mounts.iter().any(|m| m.volume == volume) {
            continue;
        }
        let sub_path = ["subPath", "subPathExpr"]
            .iter()
            .map(|k| as_str(mount.get(*k), &join(&field, k)))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .any(|s| s.is_some_and(|s| !s.is_empty()));
        if sub_path {
            sub_path_only.push(volume);
            continue;
        }
        let mount_path =
            as_str(mount.get("mountPath"), &join(&field, "mountPath"))?.unwrap_or_default();
        mounts.push(Mount {
            volume: volume.to_owned(),
            path: mount_path.to_owned(),
        });
    }
    for volume in &watched {
        if mounts.iter().any(|m| m.volume == volume.name) {
            continue;
        }
        let sources = sources_text(request, volume);
        if sub_path_only.contains(&volume.name.as_str()) {
            warnings.push(Warning::SubPath {
                volume: volume.name.clone(),
                sources,
                container: app_name.clone(),
            });
        } else {
            warnings.push(Warning::NotMounted {
                volume: volume.name.clone(),
                sources,
                container: app_name.clone(),
            });
        }
    }

    pod.unmatched_names(request, warnings)?;

    let mut watching: Vec<SourceRef> = Vec::new();
    for mount in &mounts {
        for volume in watched.iter().filter(|v| v.name == mount.volume) {
            for source in volume.sources.iter().filter(|s| source_wanted(request, s)) {
                if !watching.contains(source) {
                    watching.push(source.clone());
                }
            }
        }
    }
    for source in &watching {
        if inventory.is_immutable(source, namespace) {
            warnings.push(Warning::Immutable {
                reference: source.clone(),
            });
        }
    }
    if mounts.is_empty() {
        warnings.push(Warning::NothingToWatch);
        return Ok(None);
    }

    let run_as_user = match as_int(
        as_map(
            app_map.get("securityContext"),
            &join(app_path, "securityContext"),
        )?
        .and_then(|sc| sc.get("runAsUser")),
        &join(app_path, "securityContext.runAsUser"),
    )? {
        Some(uid) => Some(uid),
        None => as_int(
            as_map(spec.get("securityContext"), &join(path, "securityContext"))?
                .and_then(|sc| sc.get("runAsUser")),
            &join(path, "securityContext.runAsUser"),
        )?,
    };

    let mut process = request.process.clone();
    if process.is_none() && request.action.needs_processes() && pod.containers.len() > 1 {
        process = inferred_process(app_map, app_path)?;
        if process.is_none() {
            let names = pod
                .containers
                .iter()
                .map(|(c, f)| name_of(c, f))
                .collect::<Result<Vec<_>, _>>()?;
            warnings.push(Warning::AmbiguousTarget {
                count: names.len(),
                names: names.join(", "),
            });
        }
    }
    pod.port_taken(warnings)?;

    Ok(Some(Plan {
        app: app_name,
        mounts,
        watching,
        run_as_user,
        process,
    }))
}

impl<'a> Pod<'a> {
    fn read(spec: &'a Mapping, path: &str) -> Result<Pod<'a>, Problem> {
        let containers = maps(spec.get("containers"), &join(path, "containers"))?;
        if containers.is_empty() {
            return Err(Problem::Missing {
                field: join(path, "containers"),
            });
        }
        let init_containers = maps(spec.get("initContainers"), &join(path, "initContainers"))?;
        let mut volumes = Vec::new();
        for (volume, field) in maps(spec.get("volumes"), &join(path, "volumes"))? {
            volumes.push(Volume::read(volume, &field)?);
        }
        Ok(Pod {
            path: path.to_owned(),
            containers,
            init_containers,
            volumes,
        })
    }

    /// `nudge.dev/container`, else kubectl's default container, else the first container
    /// that mounts a watched volume whole, else the first container.
    fn app_container(
        &self,
        request: &Request,
        watched: &[&Volume],
    ) -> Result<&(&'a Mapping, String), Problem> {
        let by_name = |name: &str| -> Result<Option<&(&'a Mapping, String)>, Problem> {
            for entry in &self.containers {
                if name_of(entry.0, &entry.1)? == name {
                    return Ok(Some(entry));
                }
            }
            Ok(None)
        };
        if let Some(name) = &request.container {
            return by_name(name)?.ok_or_else(|| Problem::NoSuchContainer {
                annotation: annotations::CONTAINER.to_owned(),
                name: name.clone(),
                available: self
                    .containers
                    .iter()
                    .filter_map(|(c, _)| c.get("name").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        if let Some(found) = request
            .default_container
            .as_deref()
            .map(by_name)
            .transpose()?
            .flatten()
        {
            return Ok(found);
        }
        for entry in &self.containers {
            let mounts = maps(entry.0.get("volumeMounts"), &join(&entry.1, "volumeMounts"))?;
            let mounts_watched = mounts.iter().any(|(m, _)| {
                let name = m.get("name").and_then(Value::as_str);
                let whole = m.get("subPath").is_none() && m.get("subPathExpr").is_none();
                whole && watched.iter().any(|v| Some(v.name.as_str()) == name)
            });
            if mounts_watched {
                return Ok(entry);
            }
        }
        self.containers.first().ok_or_else(|| Problem::Missing {
            field: join(&self.path, "containers"),
        })
    }

    /// Warnings for names that match no volume: env-only use, or no use at all.
    fn unmatched_names(
        &self,
        request: &Request,
        warnings: &mut Vec<Warning>,
    ) -> Result<(), Problem> {
        let env = self.env_sources()?;
        let in_volumes: HashSet<&SourceRef> =
            self.volumes.iter().flat_map(|v| &v.sources).collect();
        match &request.watch {
            WatchSpec::Names(names) => {
                for (name, annotation) in names {
                    if in_volumes.iter().any(|s| name.matches(s)) {
                        continue;
                    }
                    if let Some(source) = env.iter().find(|s| name.matches(s)) {
                        warnings.push(Warning::EnvOnly {
                            reference: source.clone(),
                        });
                        continue;
                    }
                    let hint = if self.volumes.iter().any(|v| v.name == name.name) {
                        format!(
                            "; a volume is named {:?}, but {annotation} takes ConfigMap/Secret names, not volume names",
                            name.name
                        )
                    } else {
                        String::new()
                    };
                    warnings.push(Warning::NoVolume {
                        name: name.clone(),
                        annotation: annotation.clone(),
                        hint,
                    });
                }
            }
            WatchSpec::Everything(kinds) => {
                for source in env
                    .iter()
                    .filter(|s| kinds.covers(s.kind) && !in_volumes.contains(s))
                {
                    warnings.push(Warning::EnvOnly {
                        reference: source.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// ConfigMaps/Secrets referenced by `env` and `envFrom` of every container, in order.
    fn env_sources(&self) -> Result<Vec<SourceRef>, Problem> {
        let mut found = Vec::new();
        let mut push = |kind, name: Option<&str>| {
            if let Some(name) = name {
                let source = SourceRef {
                    kind,
                    name: name.to_owned(),
                };
                if !found.contains(&source) {
                    found.push(source);
                }
            }
        };
        for (container, field) in self.init_containers.iter().chain(&self.containers) {
            for (env, env_field) in maps(container.get("env"), &join(field, "env"))? {
                let Some(from) = as_map(env.get("valueFrom"), &join(&env_field, "valueFrom"))?
                else {
                    continue;
                };
                for (key, kind) in [
                    ("configMapKeyRef", SourceKind::ConfigMap),
                    ("secretKeyRef", SourceKind::Secret),
                ] {
                    let reference = as_map(from.get(key), &join(&env_field, key))?;
                    push(
                        kind,
                        reference
                            .and_then(|r| r.get("name"))
                            .and_then(Value::as_str),
                    );
                }
            }
            for (env, env_field) in maps(container.get("envFrom"), &join(field, "envFrom"))? {
                for (key, kind) in [
                    ("configMapRef", SourceKind::ConfigMap),
                    ("secretRef", SourceKind::Secret),
                ] {
                    let reference = as_map(env.get(key), &join(&env_field, key))?;
                    push(
                        kind,
                        reference
                            .and_then(|r| r.get("name"))
                            .and_then(Value::as_str),
                    );
                }
            }
        }
        Ok(found)
    }

    /// Warns when a container already listens on the admin port.
    fn port_taken(&self, warnings: &mut Vec<Warning>) -> Result<(), Problem> {
        for (container, field) in self.containers.iter().chain(&self.init_containers) {
            for (port, port_field) in maps(container.get("ports"), &join(field, "ports"))? {
                let number = as_int(
                    port.get("containerPort"),
                    &join(&port_field, "containerPort"),
                )?;
                if number == Some(i64::from(ADMIN_PORT)) {
                    warnings.push(Warning::PortTaken {
                        container: name_of(container, field)?.to_owned(),
                        port: ADMIN_PORT,
                    });
                }
            }
        }
        Ok(())
    }
}

impl Volume {
    fn read(volume: &Mapping, field: &str) -> Result<Volume, Problem> {
        let name = as_str(volume.get("name"), &join(field, "name"))?
            .unwrap_or_default()
            .to_owned();
        let mut sources = Vec::new();
        let mut push = |kind, name: Option<&str>| {
            if let Some(name) = name {
                sources.push(SourceRef {
                    kind,
                    name: name.to_owned(),
                });
            }
        };
        if let Some(cm) = as_map(volume.get("configMap"), &join(field, "configMap"))? {
            push(
                SourceKind::ConfigMap,
                as_str(cm.get("name"), &join(field, "configMap.name"))?,
            );
        }
        if let Some(secret) = as_map(volume.get("secret"), &join(field, "secret"))? {
            push(
                SourceKind::Secret,
                as_str(secret.get("secretName"), &join(field, "secret.secretName"))?,
            );
        }
        if let Some(projected) = as_map(volume.get("projected"), &join(field, "projected"))? {
            let sources_field = join(field, "projected.sources");
            for (source, source_field) in maps(projected.get("sources"), &sources_field)? {
                for (key, kind) in [
                    ("configMap", SourceKind::ConfigMap),
                    ("secret", SourceKind::Secret),
                ] {
                    if let Some(reference) = as_map(source.get(key), &join(&source_field, key))? {
                        push(
                            kind,
                            as_str(
                                reference.get("name"),
                                &join(&source_field, &format!("{key}.name")),
                            )?,
                        );
                    }
                }
            }
        }
        Ok(Volume { name, sources })
    }
}

/// Whether the request wants this volume.
fn wants(request: &Request, volume: &Volume) -> bool {
    volume.sources.iter().any(|s| source_wanted(request, s))
}

fn source_wanted(request: &Request, source: &SourceRef) -> bool {
    match &request.watch {
        WatchSpec::Everything(kinds) => Kinds::covers(*kinds, source.kind),
        WatchSpec::Names(names) => names.iter().any(|(n, _)| n.matches(source)),
    }
}

fn sources_text(request: &Request, volume: &Volume) -> String {
    volume
        .sources
        .iter()
        .filter(|s| source_wanted(request, s))
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn name_of<'m>(container: &'m Mapping, field: &str) -> Result<&'m str, Problem> {
    as_str(container.get("name"), &join(field, "name"))?.ok_or_else(|| Problem::Missing {
        field: join(field, "name"),
    })
}

/// The process name (comm) the app container starts, when its `command` says so plainly:
/// the basename of `command[0]`, cut to the kernel's 15 characters. Shells and scripts are
/// not guessed at, because they usually `exec` something else.
fn inferred_process(container: &Mapping, field: &str) -> Result<Option<String>, Problem> {
    let command = first_string(container.get("command"), &join(field, "command"))?;
    let Some(program) = command else {
        return Ok(None);
    };
    let base = program.rsplit('/').next().unwrap_or(program);
    const SHELLS: [&str; 6] = ["sh", "bash", "ash", "dash", "zsh", "busybox"];
    if base.is_empty() || SHELLS.contains(&base) || base.ends_with(".sh") {
        return Ok(None);
    }
    Ok(Some(base.chars().take(15).collect()))
}

/// The first string of a list of strings, if any.
fn first_string<'a>(value: Option<&'a Value>, field: &str) -> Result<Option<&'a str>, Problem> {
    let items = super::value::as_seq(value, field)?;
    match items.first() {
        None => Ok(None),
        Some(first) => as_str(Some(first), &format!("{field}[0]")),
    }
}
