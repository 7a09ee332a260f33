//! `nudge inject` / `nudge uninject` end to end: the golden corpus under tests/inject/ (each
//! case a directory with `in.yaml`, optional `args`, and the expected `out.yaml` and
//! `stderr.txt` side by side; `NUDGE_BLESS=1 cargo test --test inject` rewrites the expected
//! files), idempotency and exact uninject over that corpus, the k8s/ examples, the CLI's file
//! handling, property tests, and schema validation of every output with the PyPI package
//! `kubernetes-validate` (skipped with a reason when missing, a failure when CI=true).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use nudge::inject::{inject, uninject, Options};
use proptest::prelude::*;
use serde_yaml::Value;

/// The Kubernetes version every manifest is validated against.
const KUBERNETES_VERSION: &str = "1.37.0";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bless() -> bool {
    std::env::var_os("NUDGE_BLESS").is_some_and(|v| v != "0")
}

fn nudge(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nudge"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nudge starts");
    child
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(stdin)
        .expect("stdin written");
    child.wait_with_output().expect("nudge finishes")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8 output")
}

/// Every document of a stream, parsed as Kubernetes reads it (for comparisons that ignore
/// formatting): YAML 1.1 octal file modes such as `defaultMode: 0440` become numbers.
fn documents(yaml: &str) -> Vec<Value> {
    fn yaml11(value: &mut Value) {
        match value {
            Value::Mapping(map) => {
                for (k, v) in map.iter_mut() {
                    let mode = matches!(k.as_str(), Some("defaultMode" | "mode"));
                    let octal = v
                        .as_str()
                        .and_then(|t| t.strip_prefix('0'))
                        .map(|d| i64::from_str_radix(d, 8));
                    match (mode, octal) {
                        (true, Some(Ok(n))) => *v = Value::from(n),
                        _ => yaml11(v),
                    }
                }
            }
            Value::Sequence(items) => items.iter_mut().for_each(yaml11),
            _ => {}
        }
    }
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).expect("valid YAML"))
        .filter(|v: &Value| !v.is_null())
        .map(|mut v| {
            yaml11(&mut v);
            v
        })
        .collect()
}

/// One golden case.
struct Case {
    name: String,
    dir: PathBuf,
    args: Vec<String>,
    input: String,
}

fn cases() -> Vec<Case> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(root().join("tests/inject"))
        .expect("tests/inject exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.join("in.yaml").is_file())
        .collect();
    dirs.sort();
    dirs.into_iter()
        .map(|dir| {
            let args = fs::read_to_string(dir.join("args")).unwrap_or_else(|_| "inject -".into());
            Case {
                name: dir
                    .file_name()
                    .expect("name")
                    .to_string_lossy()
                    .into_owned(),
                args: args.split_whitespace().map(str::to_owned).collect(),
                input: fs::read_to_string(dir.join("in.yaml")).expect("in.yaml readable"),
                dir,
            }
        })
        .collect()
}

/// What a case printed: stdout, and stderr followed by the exit code.
fn run_case(case: &Case) -> (String, String, i32) {
    let args: Vec<&str> = case.args.iter().map(String::as_str).collect();
    let output = nudge(&args, case.input.as_bytes());
    let code = output.status.code().expect("exit code");
    let stderr = format!("{}exit: {code}\n", text(&output.stderr));
    (text(&output.stdout), stderr, code)
}

fn check_or_bless(path: &Path, actual: &str, failures: &mut Vec<String>) {
    if bless() {
        fs::write(path, actual).expect("expected file written");
        return;
    }
    let expected = fs::read_to_string(path).unwrap_or_default();
    if expected != actual {
        failures.push(format!(
            "{} differs (NUDGE_BLESS=1 rewrites it)\n--- expected\n{expected}\n--- actual\n{actual}",
            path.display()
        ));
    }
}

#[test]
fn golden_corpus_output_and_report_match_the_expected_files() {
    let cases = cases();
    assert!(cases.len() >= 20, "the corpus has {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let (stdout, stderr, _) = run_case(case);
        check_or_bless(&case.dir.join("out.yaml"), &stdout, &mut failures);
        check_or_bless(&case.dir.join("stderr.txt"), &stderr, &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn injecting_the_injected_output_again_changes_nothing() {
    for case in cases()
        .iter()
        .filter(|c| c.args.first().map(String::as_str) == Some("inject"))
    {
        let (stdout, _, code) = run_case(case);
        if code != 0 {
            continue;
        }
        let again = Case {
            name: case.name.clone(),
            dir: case.dir.clone(),
            args: case.args.clone(),
            input: stdout.clone(),
        };
        let (twice, stderr, code) = run_case(&again);
        assert_eq!(code, 0, "{}: {stderr}", case.name);
        assert_eq!(
            twice, stdout,
            "{}: second inject changed the output",
            case.name
        );
        assert!(
            !stderr.contains("sidecar added") && !stderr.contains("sidecar updated"),
            "{}: {stderr}",
            case.name
        );
    }
}

#[test]
fn uninject_gives_back_exactly_the_input() {
    let mut checked = 0;
    for case in cases()
        .iter()
        .filter(|c| c.args.first().map(String::as_str) == Some("inject"))
    {
        let (injected, _, code) = run_case(case);
        if code != 0 || case.input.contains("nudge.dev/injected") {
            continue;
        }
        let output = nudge(&["uninject", "-"], injected.as_bytes());
        assert!(
            output.status.success(),
            "{}: {}",
            case.name,
            text(&output.stderr)
        );
        let restored = text(&output.stdout);
        assert_eq!(
            documents(&restored),
            documents(&case.input),
            "{}",
            case.name
        );
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} cases checked");
}

#[test]
fn errors_write_nothing_to_stdout_and_exit_2() {
    let mut errors = 0;
    for case in cases().iter().filter(|c| c.name.starts_with("error-")) {
        let (stdout, stderr, code) = run_case(case);
        assert_eq!(code, 2, "{}: {stderr}", case.name);
        assert!(stdout.is_empty(), "{}: wrote {stdout}", case.name);
        assert!(stderr.contains("document "), "{}: {stderr}", case.name);
        errors += 1;
    }
    assert!(errors >= 8, "only {errors} error cases");
}

#[test]
fn strict_mode_fails_on_warnings_without_writing_output() {
    let case = cases()
        .into_iter()
        .find(|c| c.name == "warnings-strict")
        .expect("the warnings-strict case exists");
    let (stdout, stderr, code) = run_case(&case);
    assert_eq!(code, 1, "{stderr}");
    assert!(stdout.is_empty());
    assert!(stderr.contains("warning: "));
}

/// Each k8s/ example directory: `manifest.yaml` is what a user writes; `injected.yaml` is what
/// `nudge inject` makes of it (ready to apply without nudge installed).
fn examples() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(root().join("k8s"))
        .expect("k8s/ exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.join("manifest.yaml").is_file())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn k8s_examples_are_exactly_what_nudge_inject_makes_of_their_manifests() {
    let dirs = examples();
    assert!(dirs.len() >= 4, "{dirs:?}");
    let mut failures = Vec::new();
    for dir in dirs {
        assert!(
            dir.join("README.md").is_file(),
            "{} has no README.md",
            dir.display()
        );
        let manifest = fs::read_to_string(dir.join("manifest.yaml")).expect("readable");
        let output = nudge(&["inject", "--strict", "-"], manifest.as_bytes());
        assert!(
            output.status.success(),
            "{}: {}",
            dir.display(),
            text(&output.stderr)
        );
        check_or_bless(
            &dir.join("injected.yaml"),
            &text(&output.stdout),
            &mut failures,
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn files_stdin_and_output_file_work_like_kubectl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let case = cases()
        .into_iter()
        .find(|c| c.name == "helm-web-nginx")
        .expect("case");
    let a = dir.path().join("a.yaml");
    let b = dir.path().join("b.yaml");
    fs::write(&a, &case.input).expect("write");
    fs::write(
        &b,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: web\n",
    )
    .expect("write");
    let out = dir.path().join("out.yaml");
    let args = [
        "inject",
        "-f",
        a.to_str().expect("utf8"),
        "-f",
        "-",
        "-o",
        out.to_str().expect("utf8"),
    ];
    let output = nudge(&args, fs::read_to_string(&b).expect("read").as_bytes());
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(output.stdout.is_empty(), "-o keeps stdout empty");
    let written = fs::read_to_string(&out).expect("output written");
    let docs = documents(&written);
    assert_eq!(
        docs.last().and_then(|d| d.get("kind")),
        Some(&Value::from("Namespace"))
    );
    assert_eq!(docs.len(), documents(&case.input).len() + 1);
    assert!(text(&output.stderr).contains("namespace/web: skipped"));

    // A bad input later in the list: nothing written, the old output file left as it was.
    let bad = dir.path().join("bad.yaml");
    fs::write(
        &bad,
        "kind: Deployment\nmetadata: {name: x}\n  bad: indentation\n",
    )
    .expect("write");
    let args = [
        "inject",
        a.to_str().expect("utf8"),
        bad.to_str().expect("utf8"),
        "-o",
        out.to_str().expect("utf8"),
    ];
    let output = nudge(&args, b"");
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("bad.yaml: document 1: invalid YAML"),
        "{stderr}"
    );
    assert_eq!(fs::read_to_string(&out).expect("still there"), written);
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("e").file_name())
        .collect();
    assert_eq!(leftovers.len(), 4, "no temporary file left: {leftovers:?}");

    let missing = dir.path().join("missing.yaml");
    let output = nudge(&["inject", missing.to_str().expect("utf8")], b"");
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("cannot read"));
}

#[test]
fn stdout_carries_only_yaml_and_stderr_one_line_per_object() {
    let case = cases()
        .into_iter()
        .find(|c| c.name == "list-kubectl-get")
        .expect("case");
    let (stdout, stderr, code) = run_case(&case);
    assert_eq!(code, 0);
    assert!(serde_yaml::from_str::<Value>(&stdout).is_ok());
    let items = documents(&case.input)[0]["items"]
        .as_sequence()
        .expect("items")
        .len();
    let lines = stderr
        .lines()
        .filter(|l| !l.starts_with("warning:") && !l.starts_with("exit:"))
        .count();
    assert_eq!(lines, items);
}

// ---------------------------------------------------------------------------------------------
// Schema validation with kubernetes-validate.

/// Runs `kubernetes-validate --strict` on `files`; `None` when the tool is not installed
/// (which fails the test when CI=true).
fn kubernetes_validate(files: &[PathBuf]) -> Option<Output> {
    let probe = Command::new("kubernetes-validate")
        .arg("--version")
        .output();
    if probe.map(|o| o.status.success()).unwrap_or(false) {
        let output = Command::new("kubernetes-validate")
            .args(["--strict", "--quiet", "-k", KUBERNETES_VERSION])
            .args(files)
            .output()
            .expect("kubernetes-validate runs");
        return Some(output);
    }
    let reason = "kubernetes-validate is not installed (pip install kubernetes-validate)";
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true but {reason}"
    );
    eprintln!("SKIPPED schema validation: {reason}");
    None
}

/// Writes every object of every stream as its own file (List items flattened, since the
/// schemas have none for `List`).
fn flatten_to_files(streams: &[(String, String)], dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for (name, yaml) in streams {
        for (index, doc) in documents(yaml).into_iter().enumerate() {
            let objects = match doc.get("items") {
                Some(Value::Sequence(items)) => items.clone(),
                _ => vec![doc],
            };
            for (item, object) in objects.into_iter().enumerate() {
                if is_custom_resource(&object) {
                    continue;
                }
                let path = dir.join(format!("{name}-{index}-{item}.yaml"));
                fs::write(
                    &path,
                    nudge::inject::emit::to_yaml(&object).expect("serializable"),
                )
                .expect("write");
                files.push(path);
            }
        }
    }
    files
}

/// API groups of CRDs that k8s/ uses (cert-manager in k8s/injector/). kubernetes-validate has
/// no schema for them and only warns "Couldn't find schema", which [`assert_valid`] rejects, so
/// their objects are left out of schema validation instead.
const CRD_GROUPS: &[&str] = &["cert-manager.io/"];

fn is_custom_resource(object: &Value) -> bool {
    object["apiVersion"]
        .as_str()
        .is_some_and(|v| CRD_GROUPS.iter().any(|g| v.starts_with(g)))
}

fn assert_valid(streams: &[(String, String)]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = flatten_to_files(streams, dir.path());
    assert!(!files.is_empty());
    let Some(output) = kubernetes_validate(&files) else {
        return;
    };
    let report = format!("{}{}", text(&output.stdout), text(&output.stderr));
    assert!(
        output.status.success(),
        "schema validation failed:\n{report}"
    );
    // Unknown kinds only warn; every object here has a built-in schema.
    assert!(!report.contains("Couldn't find schema"), "{report}");
}

#[test]
fn every_injected_output_validates_against_the_kubernetes_schemas() {
    let mut streams = Vec::new();
    for case in cases() {
        let (stdout, _, code) = run_case(&case);
        if code == 0 && !stdout.is_empty() {
            streams.push((case.name.clone(), stdout));
        }
    }
    assert!(streams.len() >= 10);
    assert_valid(&streams);
}

#[test]
fn every_k8s_manifest_validates_against_the_kubernetes_schemas() {
    let mut streams = Vec::new();
    let mut pending = vec![root().join("k8s")];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).expect("readable dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml")
                && path.file_name().is_some_and(|n| n != "kustomization.yaml")
            {
                let name = path
                    .strip_prefix(root())
                    .expect("inside")
                    .to_string_lossy()
                    .replace('/', "_");
                streams.push((name, fs::read_to_string(&path).expect("readable")));
            }
        }
    }
    assert!(streams.len() >= 8, "{}", streams.len());
    // The controller's install (k8s/rollout/) is validated with the examples.
    assert!(
        streams
            .iter()
            .any(|(name, _)| name == "k8s_rollout_rbac.yaml"),
        "k8s/rollout/rbac.yaml not found"
    );
    assert_valid(&streams);
}

#[test]
fn the_kustomize_component_renders_to_valid_manifests_when_kubectl_is_available() {
    let example = root().join("k8s/kustomize/example");
    let rendered = Command::new("kubectl")
        .args(["kustomize"])
        .arg(&example)
        .output();
    let Some(rendered) = rendered.ok().filter(|o| o.status.success()) else {
        eprintln!(
            "SKIPPED: kubectl kustomize is not available to render {}",
            example.display()
        );
        return;
    };
    let yaml = text(&rendered.stdout);
    let docs = documents(&yaml);
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    let spec = &deployment["spec"]["template"]["spec"];
    assert_eq!(spec["shareProcessNamespace"], Value::Bool(true));
    assert_eq!(spec["initContainers"][0]["name"], "nudge");
    assert_valid(&[("kustomize-example".to_owned(), yaml)]);
}

// ---------------------------------------------------------------------------------------------
// Properties.

fn kind() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "Pod",
        "Deployment",
        "StatefulSet",
        "DaemonSet",
        "ReplicaSet",
        "ReplicationController",
        "Job",
        "CronJob",
        "Service",
        "ConfigMap",
    ])
}

/// Annotation keys users write that are not nudge's (nor its aliases').
fn foreign_annotations() -> impl Strategy<Value = BTreeMap<String, String>> {
    let key = prop::sample::select(vec![
        "app.kubernetes.io/name",
        "prometheus.io/scrape",
        "nudge.dev.example.com/watch",
        "checksum/config",
        "linkerd.io/inject",
        "kubectl.kubernetes.io/default-container",
        "reloader.stakater.com/search",
        "deployment.kubernetes.io/revision",
    ]);
    prop::collection::btree_map(key.prop_map(str::to_owned), "[a-z0-9*,/ -]{0,12}", 0..4)
}

fn map<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    Value::Mapping(
        pairs
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
    )
}

fn pod_spec(names: Vec<String>, mount: bool, sub_path: bool) -> Value {
    let volumes: Vec<Value> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let name = ("name", Value::from(format!("vol-{i}")));
            match i % 3 {
                0 => map([name, ("configMap", map([("name", n.as_str().into())]))]),
                1 => map([name, ("secret", map([("secretName", n.as_str().into())]))]),
                _ => map([
                    name,
                    (
                        "projected",
                        map([(
                            "sources",
                            Value::Sequence(vec![
                                map([("configMap", map([("name", n.as_str().into())]))]),
                                map([("secret", map([("name", format!("{n}-s").into())]))]),
                            ]),
                        )]),
                    ),
                ]),
            }
        })
        .collect();
    let mounts: Vec<Value> = (0..names.len())
        .filter(|_| mount)
        .map(|i| {
            let mut m = map([
                ("name", format!("vol-{i}").into()),
                ("mountPath", format!("/etc/app/{i}").into()),
            ]);
            if sub_path && i == 0 {
                m.as_mapping_mut()
                    .expect("mapping")
                    .insert("subPath".into(), "app.conf".into());
            }
            m
        })
        .collect();
    let app = map([
        ("name", "app".into()),
        ("image", "example/app:1".into()),
        ("volumeMounts", Value::Sequence(mounts)),
    ]);
    map([
        ("containers", Value::Sequence(vec![app])),
        ("volumes", Value::Sequence(volumes)),
    ])
}

fn workload(
    kind: &str,
    workload_annotations: BTreeMap<String, String>,
    template_annotations: BTreeMap<String, String>,
    spec: Value,
) -> Value {
    let metadata = |annotations: BTreeMap<String, String>| {
        let mut m = map([("name", "app".into())]);
        if !annotations.is_empty() {
            let annotations = serde_yaml::to_value(annotations).expect("serializable");
            m.as_mapping_mut()
                .expect("mapping")
                .insert("annotations".into(), annotations);
        }
        m
    };
    let outer = metadata(workload_annotations);
    let template = map([
        ("metadata", metadata(template_annotations)),
        ("spec", spec.clone()),
    ]);
    let spec = match kind {
        "Pod" => {
            // A Pod's own metadata is its template's: merge both annotation sets onto it.
            let mut pod_metadata = template["metadata"].clone();
            if let Some(outer) = outer.get("annotations").and_then(Value::as_mapping) {
                let annotations = pod_metadata
                    .as_mapping_mut()
                    .expect("mapping")
                    .entry("annotations".into())
                    .or_insert_with(|| Value::Mapping(Default::default()));
                for (k, v) in outer {
                    annotations
                        .as_mapping_mut()
                        .expect("mapping")
                        .insert(k.clone(), v.clone());
                }
            }
            return map([
                ("apiVersion", "v1".into()),
                ("kind", "Pod".into()),
                ("metadata", pod_metadata),
                ("spec", spec),
            ]);
        }
        "CronJob" => map([
            ("schedule", "@hourly".into()),
            (
                "jobTemplate",
                map([("spec", map([("template", template)]))]),
            ),
        ]),
        "Service" | "ConfigMap" => {
            map([("ports", Value::Sequence(vec![map([("port", 80.into())])]))])
        }
        _ => map([("template", template)]),
    };
    map([
        ("apiVersion", "v1".into()),
        ("kind", kind.into()),
        ("metadata", outer),
        ("spec", spec),
    ])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    #[test]
    fn injection_never_changes_a_document_without_nudge_annotations(
        kind in kind(),
        outer in foreign_annotations(),
        inner in foreign_annotations(),
        names in prop::collection::vec("[a-z][a-z0-9-]{0,8}[a-z0-9]", 0..4),
        mount in any::<bool>(),
        sub_path in any::<bool>(),
        comment in any::<bool>(),
    ) {
        let object = workload(kind, outer, inner, pod_spec(names, mount, sub_path));
        let mut yaml = serde_yaml::to_string(&object).expect("ser");
        if comment {
            yaml = format!("# Source: chart/templates/app.yaml\n{yaml}---\n# trailing\n");
        }
        let rewrite = inject(&yaml, &Options::default()).expect("no error without annotations");
        prop_assert_eq!(&rewrite.output, &yaml);
        prop_assert!(rewrite.reports.iter().all(|r| !r.outcome.changed() && r.warnings.is_empty()));
    }

    #[test]
    fn uninject_undoes_inject_for_any_annotated_workload(
        kind in kind(),
        watch in prop::sample::select(vec!["*", "n0", "n0,n1", "configmap/n2", "secret/n1", "n9"]),
        on_template in any::<bool>(),
        names in prop::collection::vec(Just(()), 0..4),
        mount in any::<bool>(),
        sub_path in any::<bool>(),
    ) {
        let names: Vec<String> = (0..names.len()).map(|i| format!("n{i}")).collect();
        let annotations: BTreeMap<String, String> = [("nudge.dev/watch".to_owned(), watch.to_owned())].into();
        let (outer, inner) = if on_template { (BTreeMap::new(), annotations) } else { (annotations, BTreeMap::new()) };
        let object = workload(kind, outer, inner, pod_spec(names, mount, sub_path));
        let yaml = serde_yaml::to_string(&object).expect("ser");
        let injected = inject(&yaml, &Options::default()).expect("valid");
        let again = inject(&injected.output, &Options::default()).expect("valid");
        prop_assert_eq!(&again.output, &injected.output);
        let restored = uninject(&injected.output).expect("valid");
        prop_assert_eq!(documents(&restored.output), documents(&yaml));
    }
}

proptest! {
    #[test]
    fn changed_documents_serialize_to_what_they_were_and_quote_yaml_1_1_lookalikes(
        values in prop::collection::btree_map(
            "[a-z][a-z0-9.-]{0,8}",
            prop_oneof![
                prop::sample::select(vec!["yes", "No", "on", "OFF", "y", "n", "1_000", "0b11", "1:30", "2026-11-28", "0755", "~", "null", "true", "12", "0.5", ".inf"]).prop_map(str::to_owned),
                "[ -~]{0,16}",
            ],
            0..8,
        ),
        numbers in prop::collection::vec(any::<i32>(), 0..3),
        flags in prop::collection::vec(any::<bool>(), 0..3),
    ) {
        let mut object = serde_yaml::Mapping::new();
        object.insert("annotations".into(), serde_yaml::to_value(&values).expect("ser"));
        object.insert("numbers".into(), serde_yaml::to_value(&numbers).expect("ser"));
        object.insert("flags".into(), serde_yaml::to_value(&flags).expect("ser"));
        let object = Value::Mapping(object);
        let yaml = nudge::inject::emit::to_yaml(&object).expect("serializable");
        prop_assert_eq!(serde_yaml::from_str::<Value>(&yaml).expect("parses"), object);
        for value in values.values() {
            if ["yes", "No", "on", "OFF", "y", "n", "1_000", "0b11", "1:30", "2026-11-28"].contains(&value.as_str()) {
                prop_assert!(yaml.contains(&format!(": '{value}'\n")), "{} unquoted in\n{}", value, yaml);
            }
        }
    }
}
