//! `nudge inject` and `nudge uninject`: add the reload sidecar to Kubernetes manifests whose
//! annotations ask for it, and take it out again. Everything here except [`cli`] is pure (text
//! or `serde_yaml::Value` in, text or `Value` out, no I/O), so the admission webhook can reuse
//! [`inject_object`] to build a JSON patch.
//!
//! Layout, one step per module:
//! - [`stream`]      multi-document text -> documents, and back (untouched documents verbatim)
//! - [`workload`]    which kinds have a pod template, and where
//! - [`annotations`] annotations and their aliases -> a validated [`annotations::Decision`]
//! - [`pod`]         pod spec + request -> [`pod::Plan`] (volumes, mounts, UID, process) + warnings
//! - [`sidecar`]     the sidecar container; attach to / detach from a pod template, exactly
//! - [`emit`]        changed documents back to YAML that Kubernetes (YAML 1.1) reads the same
//! - [`report`]      the stderr report lines and warnings
//! - [`error`]       [`error::Problem`] and where it happened
//! - [`cli`]         the `inject`/`uninject` subcommands: files, stdin, `-o`, exit codes

#![deny(clippy::unwrap_used, clippy::expect_used)]
#![warn(missing_docs)]

pub mod annotations;
pub mod cli;
pub mod emit;
pub mod error;
pub mod pod;
pub mod report;
pub mod sidecar;
pub mod stream;
mod value;
pub mod workload;

use serde_yaml::Value;

use annotations::{Decision, Layer};
use error::{DocumentError, ObjectError, Problem};
use report::{DocumentReport, ObjectRef, Outcome, SkipReason, SourceKind, SourceRef, Warning};
pub use sidecar::Placement;
use workload::WorkloadKind;

/// The sidecar image used when neither `--image` nor `nudge.dev/image` says otherwise.
pub const DEFAULT_IMAGE: &str = "ghcr.io/nudge-dev/nudge:0.1.0";

/// How to inject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Sidecar image (a workload's `nudge.dev/image` wins).
    pub image: String,
    /// Native or regular sidecar.
    pub placement: Placement,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            image: DEFAULT_IMAGE.to_owned(),
            placement: Placement::Native,
        }
    }
}

/// The rewritten stream and one report per object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    /// The output YAML.
    pub output: String,
    /// One entry per object (List items each get their own), in input order.
    pub reports: Vec<DocumentReport>,
}

impl Rewrite {
    /// Every warning of every object, with the object it belongs to.
    pub fn warnings(&self) -> impl Iterator<Item = (&ObjectRef, &Warning)> {
        self.reports
            .iter()
            .flat_map(|r| r.warnings.iter().map(move |w| (&r.object, w)))
    }
}

/// What the input says about ConfigMaps and Secrets beyond the workloads: which are immutable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    immutable: Vec<(SourceRef, Option<String>)>,
}

impl Inventory {
    /// Collects the immutable ConfigMaps and Secrets among `objects` (List items included).
    pub fn from_objects<'a>(objects: impl IntoIterator<Item = &'a Value>) -> Inventory {
        let mut inventory = Inventory::default();
        for object in objects {
            inventory.add(object);
        }
        inventory
    }

    fn add(&mut self, object: &Value) {
        let kind = object
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if workload::is_list(kind) {
            if let Some(Value::Sequence(items)) = object.get("items") {
                items.iter().for_each(|item| self.add(item));
            }
            return;
        }
        let kind = match kind {
            "ConfigMap" => SourceKind::ConfigMap,
            "Secret" => SourceKind::Secret,
            _ => return,
        };
        if object.get("immutable") != Some(&Value::Bool(true)) {
            return;
        }
        let metadata = object.get("metadata");
        let text = |k: &str| {
            metadata
                .and_then(|m| m.get(k))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        if let Some(name) = text("name") {
            self.immutable
                .push((SourceRef { kind, name }, text("namespace")));
        }
    }

    /// Whether `source`, seen from a workload in `namespace`, is known to be immutable.
    pub fn is_immutable(&self, source: &SourceRef, namespace: Option<&str>) -> bool {
        self.immutable.iter().any(|(s, ns)| {
            s == source
                && match (ns.as_deref(), namespace) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                }
        })
    }
}

/// Injects the sidecar into every document of a YAML stream that asks for it.
pub fn inject(text: &str, options: &Options) -> Result<Rewrite, DocumentError> {
    rewrite(text, |object, inventory| {
        inject_object(object, options, inventory)
    })
}

/// Removes every sidecar that [`inject`] added, and nothing else.
pub fn uninject(text: &str) -> Result<Rewrite, DocumentError> {
    rewrite(text, |object, _| uninject_object(object))
}

/// The stream driver: parse every document first (so nothing is written on error), apply `f`
/// to each object (List items one by one), re-serialize only what changed.
fn rewrite(
    text: &str,
    mut f: impl FnMut(&mut Value, &Inventory) -> Result<Vec<DocumentReport>, ObjectError>,
) -> Result<Rewrite, DocumentError> {
    let raws = stream::split(text);
    // 1-based numbers for messages, counting only documents with content.
    let numbers: Vec<usize> = raws
        .iter()
        .scan(0, |count, raw| {
            *count += usize::from(raw.has_content());
            Some((*count).max(1))
        })
        .collect();
    let mut parsed = Vec::with_capacity(raws.len());
    for (raw, number) in raws.iter().zip(&numbers) {
        let value: Value = serde_yaml::from_str(raw.text).map_err(|e| DocumentError {
            document: *number,
            item: None,
            object: None,
            problem: Box::new(Problem::Yaml(e)),
        })?;
        parsed.push(value);
    }
    let inventory = Inventory::from_objects(&parsed);
    let mut output = String::new();
    let mut reports = Vec::new();
    for ((raw, mut value), number) in raws.iter().zip(parsed).zip(numbers) {
        let located = |item: Option<usize>| {
            move |e: ObjectError| DocumentError {
                document: number,
                item,
                object: Some(e.object),
                problem: e.problem,
            }
        };
        let mut changed = false;
        let kind = value
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if workload::is_list(&kind) && value.get("items").is_some() {
            let Some(Value::Sequence(items)) = value.get_mut("items") else {
                return Err(DocumentError {
                    document: number,
                    item: None,
                    object: None,
                    problem: Box::new(Problem::WrongType {
                        field: "items".to_owned(),
                        expected: "a list",
                    }),
                });
            };
            for (item_index, item) in items.iter_mut().enumerate() {
                let item_reports = f(item, &inventory).map_err(located(Some(item_index + 1)))?;
                changed |= item_reports.iter().any(|r| r.outcome.changed());
                reports.extend(item_reports);
            }
        } else if value.is_mapping() {
            let object_reports = f(&mut value, &inventory).map_err(located(None))?;
            changed |= object_reports.iter().any(|r| r.outcome.changed());
            reports.extend(object_reports);
        }
        if changed {
            value::yaml11_file_modes(&mut value);
            let body = emit::to_yaml(&value).map_err(|e| DocumentError {
                document: number,
                item: None,
                object: Some(ObjectRef::of(&value)),
                problem: Box::new(Problem::Yaml(e)),
            })?;
            stream::push_document(&mut output, &(raw.preamble() + &body));
        } else {
            stream::push_document(&mut output, raw.text);
        }
    }
    Ok(Rewrite { output, reports })
}

/// Injects (or updates, or removes) the sidecar in one object, in place. Returns its report;
/// an object that is not a workload gets a `skipped` report and is not touched.
pub fn inject_object(
    object: &mut Value,
    options: &Options,
    inventory: &Inventory,
) -> Result<Vec<DocumentReport>, ObjectError> {
    let reference = ObjectRef::of(object);
    let fail = |problem| ObjectError::new(&reference, problem);
    let report = |outcome, warnings| {
        vec![DocumentReport {
            object: reference.clone(),
            outcome,
            warnings,
        }]
    };
    let Some(kind) = object
        .get("kind")
        .and_then(Value::as_str)
        .and_then(WorkloadKind::from_kind)
    else {
        return Ok(report(
            Outcome::Skipped(SkipReason::NotAWorkload),
            Vec::new(),
        ));
    };

    let mut candidate = object.clone();
    let was_injected = match template(&candidate, kind).map_err(fail)? {
        Some(template) => sidecar::is_injected(template),
        None => false,
    };
    if was_injected {
        let template = value::lookup_map_mut(&mut candidate, kind.template_path()).map_err(fail)?;
        sidecar::detach(template).map_err(fail)?;
    }
    let layers = layers(&candidate, kind).map_err(fail)?;
    if !was_injected && !annotations::mentions_nudge(&layers) {
        return Ok(report(
            Outcome::Skipped(SkipReason::NotRequested),
            Vec::new(),
        ));
    }
    let (decision, mut warnings) = annotations::decide(&layers).map_err(fail)?;
    let request = match decision {
        Decision::Inject(request) => request,
        Decision::OptOut => {
            return Ok(removed_or_skipped(
                object,
                candidate,
                was_injected,
                SkipReason::OptedOut,
                warnings,
                &reference,
            ))
        }
        Decision::NotRequested => {
            return Ok(removed_or_skipped(
                object,
                candidate,
                was_injected,
                SkipReason::NotRequested,
                warnings,
                &reference,
            ))
        }
    };

    let path = kind.template_path().join(".");
    let spec_path = value::join(&path, "spec");
    let template = value::lookup_map_mut(&mut candidate, kind.template_path()).map_err(fail)?;
    let spec = match template.get("spec") {
        Some(Value::Mapping(spec)) => spec,
        Some(_) => {
            return Err(fail(Problem::WrongType {
                field: spec_path,
                expected: "a mapping",
            }))
        }
        None => return Err(fail(Problem::Missing { field: spec_path })),
    };
    if pod::has_sidecar_named(spec, &spec_path).map_err(fail)? {
        warnings.push(Warning::HandWritten);
        return Ok(report(Outcome::Skipped(SkipReason::HandWritten), warnings));
    }
    let namespace = object
        .get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str);
    let plan = pod::plan(
        spec,
        &spec_path,
        &request,
        namespace,
        inventory,
        &mut warnings,
    )
    .map_err(fail)?;
    let Some(plan) = plan else {
        return Ok(removed_or_skipped(
            object,
            candidate,
            was_injected,
            SkipReason::NothingToWatch,
            warnings,
            &reference,
        ));
    };
    if options.placement == Placement::Regular && kind.completes() {
        warnings.push(Warning::RegularSidecarInJob {
            kind: reference.kind.clone(),
        });
    }
    let image = request.image.as_deref().unwrap_or(&options.image);
    let container = sidecar::container(&plan, &request.action, image, options.placement);
    sidecar::attach(
        template,
        container,
        options.placement,
        request.action.needs_processes(),
    )
    .map_err(fail)?;

    let watching = plan.watching;
    let outcome = if candidate == *object {
        Outcome::Unchanged { watching }
    } else if was_injected {
        Outcome::Updated { watching }
    } else {
        Outcome::Added { watching }
    };
    *object = candidate;
    Ok(report(outcome, warnings))
}

/// Removes an injected sidecar from one object, in place.
pub fn uninject_object(object: &mut Value) -> Result<Vec<DocumentReport>, ObjectError> {
    let reference = ObjectRef::of(object);
    let fail = |problem| ObjectError::new(&reference, problem);
    let Some(kind) = object
        .get("kind")
        .and_then(Value::as_str)
        .and_then(WorkloadKind::from_kind)
    else {
        return Ok(vec![DocumentReport {
            object: reference,
            outcome: Outcome::Skipped(SkipReason::NotAWorkload),
            warnings: Vec::new(),
        }]);
    };
    let injected = match template(object, kind).map_err(fail)? {
        Some(template) => sidecar::is_injected(template),
        None => false,
    };
    let outcome = if injected {
        let template = value::lookup_map_mut(object, kind.template_path()).map_err(fail)?;
        sidecar::detach(template).map_err(fail)?;
        Outcome::Removed { reason: None }
    } else {
        Outcome::Skipped(SkipReason::NotInjected)
    };
    Ok(vec![DocumentReport {
        object: reference,
        outcome,
        warnings: Vec::new(),
    }])
}

fn removed_or_skipped(
    object: &mut Value,
    candidate: Value,
    was_injected: bool,
    reason: SkipReason,
    warnings: Vec<Warning>,
    reference: &ObjectRef,
) -> Vec<DocumentReport> {
    let outcome = if was_injected {
        *object = candidate;
        Outcome::Removed {
            reason: Some(reason),
        }
    } else {
        Outcome::Skipped(reason)
    };
    vec![DocumentReport {
        object: reference.clone(),
        outcome,
        warnings,
    }]
}

/// The pod template of `object`, when it has one.
fn template(object: &Value, kind: WorkloadKind) -> Result<Option<&serde_yaml::Mapping>, Problem> {
    let path = kind.template_path().join(".");
    value::as_map(value::lookup(object, kind.template_path())?, &path)
}

/// The annotations of each metadata layer of `object`, outermost first. Only string values of
/// nudge's own keys (and kubectl's default-container) are type-checked.
fn layers(object: &Value, kind: WorkloadKind) -> Result<Vec<Layer>, Problem> {
    let mut layers = Vec::new();
    for path in kind.annotation_layers() {
        let field = path.join(".");
        let metadata = value::as_map(value::lookup(object, path)?, &field)?;
        let annotations_field = value::join(&field, "annotations");
        let annotations = match metadata {
            Some(metadata) => value::as_map(metadata.get("annotations"), &annotations_field)?,
            None => None,
        };
        let mut layer = Layer::new();
        for (k, v) in annotations.into_iter().flatten() {
            let Some(k) = k.as_str() else { continue };
            let ours = annotations::REQUEST_KEYS.contains(&k)
                || k == annotations::KUBECTL_DEFAULT_CONTAINER;
            if !ours {
                continue;
            }
            let Value::String(text) = v else {
                return Err(Problem::WrongType {
                    field: format!("{annotations_field}.{k:?}"),
                    expected: "a string (annotation values must be quoted, e.g. \"true\")",
                });
            };
            layer.push((k.to_owned(), text.clone()));
        }
        layers.push(layer);
    }
    Ok(layers)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  annotations:\n    nudge.dev/watch: web-config\nspec:\n  template:\n    spec:\n      containers:\n      - name: web\n        image: web:1\n        volumeMounts:\n        - {name: c, mountPath: /etc/web}\n      volumes:\n      - {name: c, configMap: {name: web-config}}\n";

    #[test]
    fn inject_object_is_the_same_rewrite_as_the_text_api_for_the_webhook() {
        let mut object: Value = serde_yaml::from_str(DEPLOYMENT).unwrap();
        let reports =
            inject_object(&mut object, &Options::default(), &Inventory::default()).unwrap();
        assert_eq!(
            reports[0].to_string(),
            "deployment/web: sidecar added, watching configmap/web-config"
        );
        let text = inject(DEPLOYMENT, &Options::default()).unwrap();
        assert_eq!(serde_yaml::from_str::<Value>(&text.output).unwrap(), object);
    }

    #[test]
    fn the_sidecar_watches_the_app_mount_path_read_only_in_init_containers() {
        let mut object: Value = serde_yaml::from_str(DEPLOYMENT).unwrap();
        inject_object(&mut object, &Options::default(), &Inventory::default()).unwrap();
        let spec = &object["spec"]["template"]["spec"];
        let sidecar = &spec["initContainers"][0];
        assert_eq!(sidecar["restartPolicy"], "Always");
        assert_eq!(sidecar["env"][0]["value"], "/etc/web");
        assert_eq!(sidecar["volumeMounts"][0]["readOnly"], true);
        assert_eq!(spec["shareProcessNamespace"], true);
        assert_eq!(sidecar["securityContext"]["capabilities"]["add"][0], "KILL");
    }

    #[test]
    fn immutable_objects_match_by_name_and_namespace() {
        let objects: Vec<Value> = [
            "{kind: ConfigMap, metadata: {name: a, namespace: x}, immutable: true}",
            "{kind: Secret, metadata: {name: b}, immutable: false}",
        ]
        .iter()
        .map(|y| serde_yaml::from_str(y).unwrap())
        .collect();
        let inventory = Inventory::from_objects(&objects);
        let a = SourceRef {
            kind: SourceKind::ConfigMap,
            name: "a".into(),
        };
        assert!(inventory.is_immutable(&a, Some("x")));
        assert!(inventory.is_immutable(&a, None));
        assert!(!inventory.is_immutable(&a, Some("y")));
        assert!(!inventory.is_immutable(
            &SourceRef {
                kind: SourceKind::Secret,
                name: "b".into()
            },
            None
        ));
    }
}
