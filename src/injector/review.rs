//! The webhook's logic, pure: an `AdmissionReview` body in, the answer out. The handler in
//! [`super::server`] only moves bytes; [`mutate`] turns one Pod into a JSON patch by running
//! [`crate::inject::inject_object`] (the one injection code path) and diffing its result.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use json_patch::Patch;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::core::DynamicObject;
use serde_json::Value as Json;

use crate::inject::pod::SIDECAR_NAME;
use crate::inject::report::Outcome;
use crate::inject::{inject_object, Inventory, Options, Placement};

/// The injected sidecar's settings: `nudge inject`'s [`Options`] (image, placement) plus what
/// the webhook lets an operator change on the container it adds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Settings {
    /// Image and placement, as for `nudge inject`.
    pub inject: Options,
    /// The sidecar's resource requests and limits.
    pub resources: Resources,
    /// `imagePullPolicy` of the sidecar; `None` leaves Kubernetes' default.
    pub image_pull_policy: Option<String>,
}

/// Resource requests and limits of the sidecar (Kubernetes quantities); `None` leaves one out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    /// `requests.cpu`.
    pub cpu_request: Option<String>,
    /// `requests.memory`.
    pub memory_request: Option<String>,
    /// `limits.cpu`.
    pub cpu_limit: Option<String>,
    /// `limits.memory`.
    pub memory_limit: Option<String>,
}

impl Default for Resources {
    /// `nudge inject`'s: requests cpu 5m / memory 8Mi, limit memory 32Mi, no CPU limit.
    fn default() -> Self {
        Resources {
            cpu_request: Some(DEFAULT_CPU_REQUEST.to_owned()),
            memory_request: Some(DEFAULT_MEMORY_REQUEST.to_owned()),
            cpu_limit: None,
            memory_limit: Some(DEFAULT_MEMORY_LIMIT.to_owned()),
        }
    }
}

/// The sidecar's CPU request unless configured (as `nudge inject` writes it).
pub const DEFAULT_CPU_REQUEST: &str = "5m";
/// The sidecar's memory request unless configured.
pub const DEFAULT_MEMORY_REQUEST: &str = "8Mi";
/// The sidecar's memory limit unless configured.
pub const DEFAULT_MEMORY_LIMIT: &str = "32Mi";

impl Resources {
    /// The `resources` mapping of the container.
    fn to_yaml(&self) -> serde_yaml::Value {
        let section = |pairs: [(&str, &Option<String>); 2]| {
            let mut map = serde_yaml::Mapping::new();
            for (k, v) in pairs {
                if let Some(v) = v {
                    map.insert(k.into(), v.as_str().into());
                }
            }
            map
        };
        let mut resources = serde_yaml::Mapping::new();
        let requests = section([("cpu", &self.cpu_request), ("memory", &self.memory_request)]);
        let limits = section([("cpu", &self.cpu_limit), ("memory", &self.memory_limit)]);
        if !requests.is_empty() {
            resources.insert("requests".into(), requests.into());
        }
        if !limits.is_empty() {
            resources.insert("limits".into(), limits.into());
        }
        resources.into()
    }
}

/// What became of one review, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed with a patch that adds the sidecar.
    Injected,
    /// Allowed unchanged: not asking for nudge, already injected, or not a CREATE with an object.
    Skipped,
    /// Allowed unchanged because the annotations are wrong (the reason is a warning).
    Invalid,
    /// Denied: not a Pod.
    WrongKind,
}

impl Verdict {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Injected => "injected",
            Verdict::Skipped => "skipped",
            Verdict::Invalid => "invalid",
            Verdict::WrongKind => "wrong_kind",
        }
    }
}

/// A body that is not an `admission.k8s.io/v1` `AdmissionReview` request (HTTP 400).
#[derive(Debug, thiserror::Error)]
#[error("not an admission.k8s.io/v1 AdmissionReview request: {0}")]
pub struct MalformedReview(String);

/// Why a Pod could not be injected; the Pod is admitted unchanged with this as a warning.
#[derive(Debug, thiserror::Error)]
pub enum MutateError {
    /// The annotations or the pod spec are not what `nudge inject` accepts.
    #[error("nudge did not inject this pod: {0}")]
    Inject(String),
    /// The object did not convert between JSON and the YAML model (should not happen).
    #[error("nudge could not read this pod: {0}")]
    Convert(String),
}

/// What [`mutate`] decided for one Pod.
#[derive(Debug)]
pub struct Mutation {
    /// The patch, when the sidecar is to be added.
    pub patch: Option<Patch>,
    /// The `nudge inject` report line (`pod/web: sidecar added, watching configmap/web`).
    pub report: String,
    /// Warnings for the user (things that will never reload).
    pub warnings: Vec<String>,
}

/// Injects the sidecar into `pod` exactly as `nudge inject` would and returns the difference
/// as a JSON patch. Only a sidecar *added* makes a patch: a pod already injected (by
/// `nudge inject` upstream, or a re-invocation) is left as it is. With the default
/// [`Resources`] and no pull policy the result is `nudge inject`'s to the byte; otherwise only
/// those fields of the added container differ.
pub fn mutate(pod: &Json, settings: &Settings) -> Result<Mutation, MutateError> {
    let mut object: serde_yaml::Value =
        serde_yaml::to_value(pod).map_err(|e| MutateError::Convert(e.to_string()))?;
    let reports = inject_object(&mut object, &settings.inject, &Inventory::default())
        .map_err(|e| MutateError::Inject(e.to_string()))?;
    let added = reports
        .iter()
        .any(|r| matches!(r.outcome, Outcome::Added { .. }));
    let report = reports
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    let warnings = reports
        .iter()
        .flat_map(|r| r.warnings.iter().map(ToString::to_string))
        .collect();
    if added {
        customize(&mut object, settings);
    }
    let patch = match added {
        true => {
            let after =
                serde_json::to_value(&object).map_err(|e| MutateError::Convert(e.to_string()))?;
            Some(json_patch::diff(pod, &after))
        }
        false => None,
    };
    Ok(Mutation {
        patch,
        report,
        warnings,
    })
}

/// Applies the settings `nudge inject` has no option for to the sidecar it just added.
fn customize(pod: &mut serde_yaml::Value, settings: &Settings) {
    let defaults = Settings {
        inject: settings.inject.clone(),
        ..Settings::default()
    };
    if *settings == defaults {
        return;
    }
    let list = match settings.inject.placement {
        Placement::Native => "initContainers",
        Placement::Regular => "containers",
    };
    let sidecar = pod
        .get_mut("spec")
        .and_then(|spec| spec.get_mut(list))
        .and_then(serde_yaml::Value::as_sequence_mut)
        .and_then(|list| {
            list.iter_mut()
                .find(|c| c.get("name").and_then(serde_yaml::Value::as_str) == Some(SIDECAR_NAME))
        })
        .and_then(serde_yaml::Value::as_mapping_mut);
    if let Some(sidecar) = sidecar {
        sidecar.insert("resources".into(), settings.resources.to_yaml());
        if let Some(policy) = &settings.image_pull_policy {
            sidecar.insert("imagePullPolicy".into(), policy.as_str().into());
        }
    }
}

/// Answers one review body. `Err` is a malformed body (HTTP 400); everything else is an
/// `AdmissionReview` response (HTTP 200), serialized.
pub fn review(body: &[u8], settings: &Settings) -> Result<(Vec<u8>, Verdict), MalformedReview> {
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_slice(body).map_err(|e| MalformedReview(e.to_string()))?;
    let request: AdmissionRequest<DynamicObject> = review
        .try_into()
        .map_err(|_| MalformedReview("it has no request".to_owned()))?;
    let (response, patch, verdict) = respond(&request, settings);
    let unserializable =
        |e: serde_json::Error| MalformedReview(format!("the answer did not serialize: {e}"));
    let mut answer = serde_json::to_value(response.into_review()).map_err(unserializable)?;
    if let (Some(patch), Some(Json::Object(response))) = (patch, answer.get_mut("response")) {
        // The API server reads `patch` as Go `[]byte`: a base64 string.
        let bytes = serde_json::to_vec(&patch).map_err(unserializable)?;
        response.insert("patch".into(), Json::String(BASE64.encode(bytes)));
        response.insert("patchType".into(), Json::String("JSONPatch".into()));
    }
    Ok((
        serde_json::to_vec(&answer).map_err(unserializable)?,
        verdict,
    ))
}

/// The response, the patch to attach to it, and the verdict.
fn respond(
    request: &AdmissionRequest<DynamicObject>,
    settings: &Settings,
) -> (AdmissionResponse, Option<Patch>, Verdict) {
    let response = AdmissionResponse::from(request);
    if !request.kind.group.is_empty() || request.kind.kind != "Pod" {
        let message = format!(
            "the nudge injector only mutates v1 Pods, not {}/{} {}; check the webhook's rules",
            request.kind.group, request.kind.version, request.kind.kind
        );
        return (response.deny(message), None, Verdict::WrongKind);
    }
    let Some(object) = &request.object else {
        return (response, None, Verdict::Skipped);
    };
    let pod = match serde_json::to_value(object) {
        Ok(pod) => pod,
        Err(e) => return invalid(response, MutateError::Convert(e.to_string()).to_string()),
    };
    match mutate(&pod, settings) {
        Ok(Mutation {
            patch: Some(patch),
            report,
            warnings,
        }) => {
            tracing::info!(namespace = request.namespace.as_deref().unwrap_or(""), %report, "injected");
            let mut response = response;
            if !warnings.is_empty() {
                response.warnings = Some(warnings);
            }
            (response, Some(patch), Verdict::Injected)
        }
        Ok(Mutation { report, .. }) => {
            tracing::debug!(%report, "not injected");
            (response, None, Verdict::Skipped)
        }
        Err(e) => invalid(response, e.to_string()),
    }
}

/// Admits unchanged with the reason as a warning: a typo in an annotation must not keep a
/// pod from starting (the same spirit as `failurePolicy: Ignore`).
fn invalid(
    mut response: AdmissionResponse,
    why: String,
) -> (AdmissionResponse, Option<Patch>, Verdict) {
    tracing::warn!(reason = %why, "pod admitted without the sidecar");
    response.warnings = Some(vec![why]);
    (response, None, Verdict::Invalid)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    fn pod(annotations: Json) -> Json {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "apps", "annotations": annotations},
            "spec": {
                "containers": [{"name": "web", "image": "web:1",
                    "volumeMounts": [{"name": "c", "mountPath": "/etc/web"}]}],
                "volumes": [{"name": "c", "configMap": {"name": "web-config"}}]
            }
        })
    }

    fn review_of(kind: &str, object: Json) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "", "version": "v1", "kind": kind},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "apps", "operation": "CREATE",
                "userInfo": {"username": "admin"},
                "object": object, "dryRun": false
            }
        }))
        .unwrap()
    }

    fn answer(body: &[u8]) -> (Json, Verdict) {
        let (out, verdict) = review(body, &Settings::default()).unwrap();
        (serde_json::from_slice(&out).unwrap(), verdict)
    }

    #[test]
    fn an_annotated_pod_gets_a_base64_json_patch_that_adds_the_sidecar() {
        let (out, verdict) = answer(&review_of(
            "Pod",
            pod(json!({"nudge.dev/watch": "web-config"})),
        ));
        assert_eq!(verdict, Verdict::Injected);
        let response = &out["response"];
        assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(response["allowed"], true);
        assert_eq!(response["patchType"], "JSONPatch");
        let patch = BASE64.decode(response["patch"].as_str().unwrap()).unwrap();
        let patch: Patch = serde_json::from_slice(&patch).unwrap();
        let mut pod = pod(json!({"nudge.dev/watch": "web-config"}));
        json_patch::patch(&mut pod, &patch).unwrap();
        assert_eq!(pod["spec"]["shareProcessNamespace"], true);
    }

    #[test]
    fn an_unannotated_pod_is_allowed_without_a_patch() {
        let (out, verdict) = answer(&review_of("Pod", pod(json!({"team": "a"}))));
        assert_eq!(verdict, Verdict::Skipped);
        assert_eq!(out["response"]["allowed"], true);
        assert!(out["response"].get("patch").is_none());
    }

    #[test]
    fn an_already_injected_pod_is_allowed_without_a_patch() {
        let mut injected = pod(json!({"nudge.dev/watch": "web-config"}));
        let patch = mutate(&injected, &Settings::default())
            .unwrap()
            .patch
            .unwrap();
        json_patch::patch(&mut injected, &patch).unwrap();
        let (out, verdict) = answer(&review_of("Pod", injected));
        assert_eq!(verdict, Verdict::Skipped);
        assert!(out["response"].get("patch").is_none());
    }

    #[test]
    fn a_wrong_kind_is_denied_with_a_reason() {
        let (out, verdict) = answer(&review_of(
            "Service",
            json!({"apiVersion": "v1", "kind": "Service"}),
        ));
        assert_eq!(verdict, Verdict::WrongKind);
        assert_eq!(out["response"]["allowed"], false);
        assert!(out["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("only mutates v1 Pods"));
    }

    #[test]
    fn a_bad_annotation_admits_the_pod_unchanged_with_a_warning() {
        let (out, verdict) = answer(&review_of(
            "Pod",
            pod(json!({"nudge.dev/watch": "web-config", "nudge.dev/action": "explode"})),
        ));
        assert_eq!(verdict, Verdict::Invalid);
        assert_eq!(out["response"]["allowed"], true);
        assert!(out["response"]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("nudge did not inject"));
    }

    #[test]
    fn garbage_and_requestless_reviews_are_malformed() {
        assert!(review(b"{not json", &Settings::default()).is_err());
        let empty = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#;
        assert!(review(empty, &Settings::default()).is_err());
    }

    #[test]
    fn configured_resources_and_pull_policy_replace_only_those_fields_of_the_sidecar() {
        let input = pod(json!({"nudge.dev/watch": "web-config"}));
        let plain = mutate(&input, &Settings::default()).unwrap().patch.unwrap();
        let settings = Settings {
            inject: Options {
                placement: Placement::Regular,
                ..Options::default()
            },
            resources: Resources {
                cpu_request: Some("1m".into()),
                memory_request: None,
                cpu_limit: Some("100m".into()),
                memory_limit: Some("16Mi".into()),
            },
            image_pull_policy: Some("IfNotPresent".into()),
        };
        let custom = mutate(&input, &settings).unwrap().patch.unwrap();
        let (mut a, mut b) = (input.clone(), input.clone());
        json_patch::patch(&mut a, &plain).unwrap();
        json_patch::patch(&mut b, &custom).unwrap();
        let native = &a["spec"]["initContainers"][0];
        assert_eq!(native["resources"]["requests"]["memory"], "8Mi");
        let sidecar = &b["spec"]["containers"][1];
        assert_eq!(sidecar["name"], "nudge");
        assert_eq!(
            sidecar["resources"],
            json!({"requests": {"cpu": "1m"}, "limits": {"cpu": "100m", "memory": "16Mi"}})
        );
        assert_eq!(sidecar["imagePullPolicy"], "IfNotPresent");
        let mut without = sidecar.clone();
        let mut reference = native.clone();
        for c in [&mut without, &mut reference] {
            let c = c.as_object_mut().unwrap();
            for k in ["resources", "imagePullPolicy", "restartPolicy"] {
                c.remove(k);
            }
        }
        assert_eq!(without, reference);
    }
}
