//! Adds the sidecar to a pod template and takes it out again, exactly. [`attach`] writes the
//! container, `shareProcessNamespace`, and the `nudge.dev/injected` annotation, whose value
//! records the fields it had to create or change; [`detach`] reads that record and restores
//! them, so `detach(attach(x)) == x` including key order.
//!
//! The sidecar, for reference (see k8s/README.md):
//! - native sidecar (an `initContainers` entry with `restartPolicy: Always`, last so regular
//!   init containers run without it) or, with `--sidecar=regular`, the last of `containers`;
//! - configured by env only: `RELOAD_WATCH` (the app's mount paths), `RELOAD_ACTION`, and
//!   `RELOAD_SIGNAL` / `RELOAD_PROCESS` / `RELOAD_WEBHOOK_URL` / `RELOAD_EXEC` as needed,
//!   `RELOAD_LISTEN=:9533`;
//! - the watched volumes mounted read-only at the app's paths;
//! - requests cpu 5m / memory 8Mi, limit memory 32Mi (an idle inotify loop; no CPU limit so
//!   a hash of a large Secret is never throttled);
//! - non-root, read-only root filesystem, no privilege escalation, all capabilities dropped;
//!   the app's UID when the manifest states it, else capability KILL to signal another UID;
//! - liveness `/healthz` and readiness `/readyz` on the named port `nudge-admin` (9533).

use serde_yaml::{Mapping, Value};

use super::annotations::{Action, INJECTED};
use super::error::Problem;
use super::pod::{Plan, ADMIN_PORT, SIDECAR_NAME};
use super::value::{insert_before, key, mapping, remove, string};

/// `RELOAD_ACTION`: the reload action (sidecar core, being built).
pub const ENV_ACTION: &str = "RELOAD_ACTION";
/// `RELOAD_WEBHOOK_URL`: the URL of the `webhook` action.
pub const ENV_WEBHOOK_URL: &str = "RELOAD_WEBHOOK_URL";
/// `RELOAD_EXEC`: the command of the `exec` action.
pub const ENV_EXEC: &str = "RELOAD_EXEC";
/// `RELOAD_LISTEN`: address of the admin server.
pub const ENV_LISTEN: &str = "RELOAD_LISTEN";
/// Named port of the admin server, used by the probes.
pub const ADMIN_PORT_NAME: &str = "nudge-admin";

/// Version tag at the start of the `nudge.dev/injected` value.
const MARKER_VERSION: &str = "v1";

/// Where the sidecar goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Placement {
    /// An `initContainers` entry with `restartPolicy: Always` (Kubernetes 1.29+): starts
    /// before the app and never keeps a Job's pod from completing.
    #[default]
    Native,
    /// A plain entry in `containers`, for clusters older than 1.29.
    Regular,
}

/// The sidecar container for `plan`.
pub fn container(plan: &Plan, action: &Action, image: &str, placement: Placement) -> Value {
    let env_var =
        |name: &str, value: &str| mapping([("name", string(name)), ("value", string(value))]);
    let watch: Vec<&str> = plan.mounts.iter().map(|m| m.path.as_str()).collect();
    let mut env = vec![
        env_var(crate::config::ENV_WATCH, &watch.join(",")),
        env_var(ENV_ACTION, action.name()),
    ];
    match action {
        Action::Signal(signal) => env.push(env_var(crate::config::ENV_SIGNAL, signal.as_str())),
        Action::Webhook(url) => env.push(env_var(ENV_WEBHOOK_URL, url)),
        Action::Exec(command) => env.push(env_var(ENV_EXEC, command)),
        Action::Restart => {}
    }
    if action.needs_processes() {
        if let Some(process) = &plan.process {
            env.push(env_var(crate::config::ENV_PROCESS, process));
        }
    }
    env.push(env_var(ENV_LISTEN, &format!(":{ADMIN_PORT}")));

    let mounts = plan
        .mounts
        .iter()
        .map(|m| {
            mapping([
                ("name", string(&m.volume)),
                ("mountPath", string(&m.path)),
                ("readOnly", Value::Bool(true)),
            ])
        })
        .collect();
    let probe = |path: &str| {
        mapping([(
            "httpGet",
            mapping([("path", string(path)), ("port", string(ADMIN_PORT_NAME))]),
        )])
    };
    let mut security = Mapping::new();
    security.insert(key("runAsNonRoot"), Value::Bool(true));
    let same_user = plan.run_as_user.filter(|uid| *uid != 0);
    if let (Some(uid), true) = (same_user, action.needs_processes()) {
        security.insert(key("runAsUser"), Value::from(uid));
    }
    security.insert(key("readOnlyRootFilesystem"), Value::Bool(true));
    security.insert(key("allowPrivilegeEscalation"), Value::Bool(false));
    let mut capabilities = Mapping::new();
    capabilities.insert(key("drop"), Value::Sequence(vec![string("ALL")]));
    if same_user.is_none() && action.needs_processes() {
        capabilities.insert(key("add"), Value::Sequence(vec![string("KILL")]));
    }
    security.insert(key("capabilities"), Value::Mapping(capabilities));

    let mut sidecar = Mapping::new();
    sidecar.insert(key("name"), string(SIDECAR_NAME));
    sidecar.insert(key("image"), string(image));
    if placement == Placement::Native {
        sidecar.insert(key("restartPolicy"), string("Always"));
    }
    sidecar.insert(key("env"), Value::Sequence(env));
    sidecar.insert(
        key("ports"),
        Value::Sequence(vec![mapping([
            ("name", string(ADMIN_PORT_NAME)),
            ("containerPort", Value::from(ADMIN_PORT)),
        ])]),
    );
    sidecar.insert(key("volumeMounts"), Value::Sequence(mounts));
    sidecar.insert(
        key("resources"),
        mapping([
            (
                "requests",
                mapping([("cpu", string("5m")), ("memory", string("8Mi"))]),
            ),
            ("limits", mapping([("memory", string("32Mi"))])),
        ]),
    );
    sidecar.insert(key("livenessProbe"), probe("/healthz"));
    sidecar.insert(key("readinessProbe"), probe("/readyz"));
    sidecar.insert(key("securityContext"), Value::Mapping(security));
    Value::Mapping(sidecar)
}

/// What a field looked like before inject changed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prior {
    /// The key was not there.
    Absent,
    /// The key was there with `null`.
    Null,
    /// The key was there with `false` (only `shareProcessNamespace`).
    False,
}

impl Prior {
    fn word(self) -> &'static str {
        match self {
            Prior::Absent => "absent",
            Prior::Null => "null",
            Prior::False => "false",
        }
    }

    fn parse(word: &str) -> Option<Prior> {
        match word {
            "absent" => Some(Prior::Absent),
            "null" => Some(Prior::Null),
            "false" => Some(Prior::False),
            _ => None,
        }
    }

    fn restore(self, map: &mut Mapping, k: &str) {
        match self {
            Prior::Absent => {
                remove(map, k);
            }
            Prior::Null => {
                map.insert(key(k), Value::Null);
            }
            Prior::False => {
                map.insert(key(k), Value::Bool(false));
            }
        }
    }
}

/// Fields whose prior state the marker can record.
const RECORDED: [&str; 4] = [
    "metadata",
    "annotations",
    "initContainers",
    "shareProcessNamespace",
];

fn prior_of(map: &Mapping, k: &str) -> Option<Prior> {
    match map.get(k) {
        None => Some(Prior::Absent),
        Some(Value::Null) => Some(Prior::Null),
        Some(Value::Bool(false)) => Some(Prior::False),
        Some(_) => None,
    }
}

/// Adds `sidecar` to the pod template `template` (a mapping with `metadata` and `spec`).
/// `share_processes` sets `shareProcessNamespace: true`. The template must not hold a sidecar.
pub fn attach(
    template: &mut Mapping,
    sidecar: Value,
    placement: Placement,
    share_processes: bool,
) -> Result<(), Problem> {
    let mut record: Vec<(&str, Prior)> = Vec::new();
    let spec = spec_mut(template)?;
    let list = match placement {
        Placement::Native => "initContainers",
        Placement::Regular => "containers",
    };
    if list == "initContainers" {
        if let Some(prior) = prior_of(spec, list) {
            record.push((list, prior));
            insert_before(spec, &["containers"], list, Value::Sequence(Vec::new()));
        }
    }
    match spec.get_mut(list) {
        Some(Value::Sequence(items)) => items.push(sidecar),
        _ => {
            return Err(Problem::WrongType {
                field: format!("spec.{list}"),
                expected: "a list",
            })
        }
    }
    if share_processes {
        if let Some(prior) = prior_of(spec, "shareProcessNamespace") {
            record.push(("shareProcessNamespace", prior));
        }
        insert_before(
            spec,
            &["initContainers", "containers"],
            "shareProcessNamespace",
            Value::Bool(true),
        );
    }

    if let Some(prior) = prior_of(template, "metadata") {
        record.push(("metadata", prior));
        insert_before(
            template,
            &["spec"],
            "metadata",
            Value::Mapping(Mapping::new()),
        );
    }
    let metadata = match template.get_mut("metadata") {
        Some(Value::Mapping(metadata)) => metadata,
        _ => return Err(wrong("metadata", "a mapping")),
    };
    if let Some(prior) = prior_of(metadata, "annotations") {
        if !record.iter().any(|(k, _)| *k == "metadata") {
            record.push(("annotations", prior));
        }
        metadata.insert(key("annotations"), Value::Mapping(Mapping::new()));
    }
    let annotations = match metadata.get_mut("annotations") {
        Some(Value::Mapping(annotations)) => annotations,
        _ => return Err(wrong("metadata.annotations", "a mapping")),
    };
    let mut marker = String::from(MARKER_VERSION);
    for field in RECORDED {
        if let Some((_, prior)) = record.iter().find(|(k, _)| *k == field) {
            marker.push_str(&format!("; {field}={}", prior.word()));
        }
    }
    annotations.insert(key(INJECTED), Value::String(marker));
    Ok(())
}

/// Whether the pod template carries the `nudge.dev/injected` marker.
pub fn is_injected(template: &Mapping) -> bool {
    template
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get(INJECTED))
        .is_some()
}

/// Removes what [`attach`] added; returns whether there was anything to remove.
pub fn detach(template: &mut Mapping) -> Result<bool, Problem> {
    let Some(marker) = template
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get(INJECTED))
    else {
        return Ok(false);
    };
    let record = parse_marker(marker)?;
    let prior = |field: &str| record.iter().find(|(k, _)| k == field).map(|(_, p)| *p);

    let spec = spec_mut(template)?;
    for list in ["initContainers", "containers"] {
        if let Some(Value::Sequence(items)) = spec.get_mut(list) {
            items.retain(|c| c.get("name").and_then(Value::as_str) != Some(SIDECAR_NAME));
        }
    }
    if let Some(p) = prior("initContainers") {
        let emptied =
            matches!(spec.get("initContainers"), Some(Value::Sequence(items)) if items.is_empty());
        if emptied {
            p.restore(spec, "initContainers");
        }
    }
    if let Some(p) = prior("shareProcessNamespace") {
        p.restore(spec, "shareProcessNamespace");
    }

    if let Some(Value::Mapping(metadata)) = template.get_mut("metadata") {
        if let Some(Value::Mapping(annotations)) = metadata.get_mut("annotations") {
            remove(annotations, INJECTED);
            let emptied = annotations.is_empty();
            if let (Some(p), true) = (prior("annotations"), emptied) {
                p.restore(metadata, "annotations");
            }
        }
        if let Some(p) = prior("metadata") {
            let emptied = match metadata.get("annotations") {
                Some(Value::Mapping(a)) => a.is_empty(),
                _ => false,
            };
            if emptied {
                remove(metadata, "annotations");
            }
            if metadata.is_empty() {
                p.restore(template, "metadata");
            }
        }
    }
    Ok(true)
}

fn parse_marker(marker: &Value) -> Result<Vec<(String, Prior)>, Problem> {
    let text = marker.as_str().unwrap_or_default();
    let bad = || Problem::BadMarker {
        value: text.to_owned(),
    };
    let mut parts = text.split(';').map(str::trim);
    if parts.next() != Some(MARKER_VERSION) {
        return Err(bad());
    }
    parts
        .map(|part| {
            let (field, word) = part.split_once('=').ok_or_else(bad)?;
            let prior = Prior::parse(word).ok_or_else(bad)?;
            if !RECORDED.contains(&field) {
                return Err(bad());
            }
            Ok((field.to_owned(), prior))
        })
        .collect()
}

fn spec_mut(template: &mut Mapping) -> Result<&mut Mapping, Problem> {
    match template.get_mut("spec") {
        Some(Value::Mapping(spec)) => Ok(spec),
        Some(_) => Err(wrong("spec", "a mapping")),
        None => Err(Problem::Missing {
            field: "spec".to_owned(),
        }),
    }
}

fn wrong(field: &str, expected: &'static str) -> Problem {
    Problem::WrongType {
        field: field.to_owned(),
        expected,
    }
}
