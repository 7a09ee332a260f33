//! The annotations `nudge inject` reads, and the aliases users already write for other tools,
//! turned into one [`Decision`]. Annotations come in layers, outermost first (the workload's
//! metadata, a CronJob's `jobTemplate`, then the pod template): for single-valued keys the
//! innermost layer wins; the watch list comes whole from the innermost layer that names
//! anything. Every value is validated here, so a typo fails before anything is written.

use nix::sys::signal::Signal;

use super::error::Problem;
use super::report::{SourceKind, Warning, WatchedName};

/// ConfigMaps/Secrets to follow: comma-separated names, `configmap/NAME`, `secret/NAME`, or `*`.
pub const WATCH: &str = "nudge.dev/watch";
/// The reload action: `signal` (default), `restart`, `webhook` or `exec`.
pub const ACTION: &str = "nudge.dev/action";
/// The reload signal for the `signal` action (default `SIGHUP`).
pub const SIGNAL: &str = "nudge.dev/signal";
/// The name (comm) of the process to signal or restart.
pub const PROCESS: &str = "nudge.dev/process";
/// The URL the `webhook` action calls; implies `webhook` when no action is set.
pub const WEBHOOK_URL: &str = "nudge.dev/webhook-url";
/// The command the `exec` action runs.
pub const EXEC: &str = "nudge.dev/exec";
/// Which container is the app (its UID, mounts and process are used).
pub const CONTAINER: &str = "nudge.dev/container";
/// The sidecar image for this workload (overrides `--image`).
pub const IMAGE: &str = "nudge.dev/image";
/// `"false"` skips (and removes) the sidecar; `"true"` with no watch list watches everything.
pub const INJECT: &str = "nudge.dev/inject";
/// Written by inject on the pod template; records what to undo. Never read as a request.
pub const INJECTED: &str = "nudge.dev/injected";

/// Seed design alias: `"true"` on the workload turns injection on (watch everything).
pub const SKATER_CONFIG_RELOAD: &str = "skater.io/config-reload";
/// Seed design alias: ConfigMap names on the pod template.
pub const SKATER_CONFIGMAP_WATCH: &str = "skater.io/configmap-watch";
/// Stakater Reloader: `"true"` follows every ConfigMap and Secret of the pod.
pub const RELOADER_AUTO: &str = "reloader.stakater.com/auto";
/// Stakater Reloader: `"true"` follows every ConfigMap of the pod.
pub const RELOADER_CONFIGMAP_AUTO: &str = "configmap.reloader.stakater.com/auto";
/// Stakater Reloader: `"true"` follows every Secret of the pod.
pub const RELOADER_SECRET_AUTO: &str = "secret.reloader.stakater.com/auto";
/// Stakater Reloader: comma-separated ConfigMap names.
pub const RELOADER_CONFIGMAP_RELOAD: &str = "configmap.reloader.stakater.com/reload";
/// Stakater Reloader: comma-separated Secret names.
pub const RELOADER_SECRET_RELOAD: &str = "secret.reloader.stakater.com/reload";

/// kubectl's own annotation naming the default container; used to pick the app container.
pub const KUBECTL_DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";

/// Every key whose presence means "this document talks to nudge" (all but [`INJECTED`]).
pub const REQUEST_KEYS: [&str; 16] = [
    WATCH,
    ACTION,
    SIGNAL,
    PROCESS,
    WEBHOOK_URL,
    EXEC,
    CONTAINER,
    IMAGE,
    INJECT,
    SKATER_CONFIG_RELOAD,
    SKATER_CONFIGMAP_WATCH,
    RELOADER_AUTO,
    RELOADER_CONFIGMAP_AUTO,
    RELOADER_SECRET_AUTO,
    RELOADER_CONFIGMAP_RELOAD,
    RELOADER_SECRET_RELOAD,
];

/// The annotations of one metadata block, in document order (string values only).
pub type Layer = Vec<(String, String)>;

/// Which kinds of source "everything" covers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Kinds {
    /// ConfigMaps (and projected volumes with a ConfigMap source).
    pub configmaps: bool,
    /// Secrets (and projected volumes with a Secret source).
    pub secrets: bool,
}

impl Kinds {
    /// Both kinds.
    pub const ALL: Kinds = Kinds {
        configmaps: true,
        secrets: true,
    };

    /// Whether `kind` is covered.
    pub fn covers(self, kind: SourceKind) -> bool {
        match kind {
            SourceKind::ConfigMap => self.configmaps,
            SourceKind::Secret => self.secrets,
        }
    }

    fn any(self) -> bool {
        self.configmaps || self.secrets
    }

    fn union(self, other: Kinds) -> Kinds {
        Kinds {
            configmaps: self.configmaps || other.configmaps,
            secrets: self.secrets || other.secrets,
        }
    }
}

/// What to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchSpec {
    /// Every volume with a source of these kinds (`*`, Reloader's `auto`).
    Everything(Kinds),
    /// These names, each with the annotation it came from.
    Names(Vec<(WatchedName, String)>),
}

/// How the sidecar reloads the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send a signal to the app's process.
    Signal(Signal),
    /// Stop the app's main process so the kubelet restarts the container.
    Restart,
    /// Call a URL.
    Webhook(String),
    /// Run a command in the sidecar.
    Exec(String),
}

impl Action {
    /// The `RELOAD_ACTION` value.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Signal(_) => "signal",
            Action::Restart => "restart",
            Action::Webhook(_) => "webhook",
            Action::Exec(_) => "exec",
        }
    }

    /// Whether the sidecar must see the app's processes (signal, restart; exec may `kill`).
    pub fn needs_processes(&self) -> bool {
        !matches!(self, Action::Webhook(_))
    }
}

/// A validated request for the sidecar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// What to watch.
    pub watch: WatchSpec,
    /// How to reload.
    pub action: Action,
    /// `nudge.dev/process`.
    pub process: Option<String>,
    /// `nudge.dev/container`.
    pub container: Option<String>,
    /// `kubectl.kubernetes.io/default-container`, the fallback for the app container.
    pub default_container: Option<String>,
    /// `nudge.dev/image`.
    pub image: Option<String>,
}

/// What the annotations ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Add (or update) the sidecar.
    Inject(Request),
    /// `nudge.dev/inject: "false"`: no sidecar, remove an injected one.
    OptOut,
    /// Nothing asks for a sidecar.
    NotRequested,
}

/// Whether any layer has an annotation that talks to nudge.
pub fn mentions_nudge(layers: &[Layer]) -> bool {
    layers
        .iter()
        .flatten()
        .any(|(k, _)| REQUEST_KEYS.contains(&k.as_str()))
}

/// Reads and validates the layers (outermost first) into a decision, plus warnings about
/// annotations that have no effect.
pub fn decide(layers: &[Layer]) -> Result<(Decision, Vec<Warning>), Problem> {
    let merged = |key: &str| -> Option<(String, String)> {
        layers
            .iter()
            .rev()
            .find_map(|layer| layer.iter().find(|(k, _)| k == key).cloned())
    };
    let flag = |key: &str| -> Result<Option<bool>, Problem> {
        merged(key).map(|(k, v)| parse_bool(&k, &v)).transpose()
    };

    // Validate everything that is present, whether or not it ends up used.
    let inject = flag(INJECT)?;
    let skater = flag(SKATER_CONFIG_RELOAD)?;
    let mut enabled = Kinds::default();
    for (key, kinds) in [
        (INJECT, Kinds::ALL),
        (SKATER_CONFIG_RELOAD, Kinds::ALL),
        (RELOADER_AUTO, Kinds::ALL),
        (
            RELOADER_CONFIGMAP_AUTO,
            Kinds {
                configmaps: true,
                secrets: false,
            },
        ),
        (
            RELOADER_SECRET_AUTO,
            Kinds {
                configmaps: false,
                secrets: true,
            },
        ),
    ] {
        if flag(key)? == Some(true) {
            enabled = enabled.union(kinds);
        }
    }
    let mut explicit = None;
    for layer in layers.iter().rev() {
        let level = explicit_watch(layer)?;
        if explicit.is_none() && level.is_some() {
            explicit = level;
        }
    }
    let action = merged(ACTION)
        .map(|(k, v)| parse_action(&k, &v))
        .transpose()?;
    let signal = merged(SIGNAL)
        .map(|(k, v)| parse_signal(&k, &v))
        .transpose()?;
    let url = merged(WEBHOOK_URL)
        .map(|(k, v)| parse_url(&k, &v))
        .transpose()?;
    let exec = merged(EXEC)
        .map(|(k, v)| non_empty(&k, &v, "the command to run"))
        .transpose()?;
    let process = merged(PROCESS)
        .map(|(k, v)| non_empty(&k, &v, "the name of the process to reload"))
        .transpose()?;
    let container = merged(CONTAINER)
        .map(|(k, v)| non_empty(&k, &v, "the name of the app container"))
        .transpose()?;
    let image = merged(IMAGE)
        .map(|(k, v)| parse_image(&k, &v))
        .transpose()?;
    let default_container = merged(KUBECTL_DEFAULT_CONTAINER).map(|(_, v)| v.trim().to_owned());

    let action = match (action.as_deref(), &url) {
        (None, Some(url)) | (Some("webhook"), Some(url)) => Action::Webhook(url.clone()),
        (Some("webhook"), None) => {
            return Err(Problem::ActionNeeds {
                action: "webhook",
                needs: WEBHOOK_URL,
                what: "the URL to call",
            })
        }
        (Some("exec"), _) => match &exec {
            Some(command) => Action::Exec(command.clone()),
            None => {
                return Err(Problem::ActionNeeds {
                    action: "exec",
                    needs: EXEC,
                    what: "the command to run",
                })
            }
        },
        (Some("restart"), _) => Action::Restart,
        _ => Action::Signal(signal.unwrap_or(Signal::SIGHUP)),
    };
    let mut warnings = Vec::new();
    let mut ignored = |present: bool, annotation: &str, used_by: &[&str]| {
        if present && !used_by.contains(&action.name()) {
            warnings.push(Warning::Ignored {
                annotation: annotation.to_owned(),
                action: action.name(),
            });
        }
    };
    ignored(signal.is_some(), SIGNAL, &["signal"]);
    ignored(url.is_some(), WEBHOOK_URL, &["webhook"]);
    ignored(exec.is_some(), EXEC, &["exec"]);
    ignored(process.is_some(), PROCESS, &["signal", "restart", "exec"]);

    if inject == Some(false) || skater == Some(false) {
        return Ok((Decision::OptOut, Vec::new()));
    }
    let watch = match explicit {
        Some(watch) => watch,
        None if enabled.any() => WatchSpec::Everything(enabled),
        None => return Ok((Decision::NotRequested, Vec::new())),
    };
    let request = Request {
        watch,
        action,
        process,
        container,
        default_container,
        image,
    };
    Ok((Decision::Inject(request), warnings))
}

/// What the rollout controller follows for a workload: the watch list its annotations ask
/// for, or `None` when nothing asks (or `nudge.dev/inject: "false"` opts out). Validates
/// exactly as [`decide`] does, so `nudge inject` and `nudge rollout` agree on every value.
pub fn followed(layers: &[Layer]) -> Result<Option<WatchSpec>, Problem> {
    Ok(match decide(layers)?.0 {
        Decision::Inject(request) => Some(request.watch),
        Decision::OptOut | Decision::NotRequested => None,
    })
}

/// The names one layer asks for, from `nudge.dev/watch` and the name-list aliases.
fn explicit_watch(layer: &Layer) -> Result<Option<WatchSpec>, Problem> {
    let mut everything = Kinds::default();
    let mut names: Vec<(WatchedName, String)> = Vec::new();
    for (key, value) in layer {
        let kind = match key.as_str() {
            WATCH => None,
            SKATER_CONFIGMAP_WATCH | RELOADER_CONFIGMAP_RELOAD => Some(SourceKind::ConfigMap),
            RELOADER_SECRET_RELOAD => Some(SourceKind::Secret),
            _ => continue,
        };
        let entries: Vec<&str> = value
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .collect();
        if entries.is_empty() {
            return Err(Problem::Empty {
                annotation: key.clone(),
                expected: "expected comma-separated ConfigMap or Secret names, or *",
            });
        }
        for entry in entries {
            if entry == "*" && key == WATCH {
                everything = Kinds::ALL;
                continue;
            }
            let name = parse_watch_entry(key, entry, kind)?;
            if !names.iter().any(|(n, _)| *n == name) {
                names.push((name, key.clone()));
            }
        }
    }
    Ok(if everything.any() {
        Some(WatchSpec::Everything(everything))
    } else if names.is_empty() {
        None
    } else {
        Some(WatchSpec::Names(names))
    })
}

fn parse_watch_entry(
    annotation: &str,
    entry: &str,
    kind: Option<SourceKind>,
) -> Result<WatchedName, Problem> {
    let bad = || Problem::BadWatchEntry {
        annotation: annotation.to_owned(),
        entry: entry.to_owned(),
    };
    let (kind, name) = match entry.split_once('/') {
        None => (kind, entry),
        Some((prefix, name)) if kind.is_none() => {
            let kind = match prefix.to_ascii_lowercase().as_str() {
                "configmap" | "configmaps" | "cm" => SourceKind::ConfigMap,
                "secret" | "secrets" => SourceKind::Secret,
                _ => return Err(bad()),
            };
            (Some(kind), name)
        }
        Some(_) => return Err(bad()),
    };
    if !is_dns_subdomain(name) {
        return Err(bad());
    }
    Ok(WatchedName {
        kind,
        name: name.to_owned(),
    })
}

/// RFC 1123 subdomain, the rule for ConfigMap and Secret names.
fn is_dns_subdomain(name: &str) -> bool {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    !name.is_empty()
        && name.len() <= 253
        && name.chars().all(ok_char)
        && alnum(name.chars().next())
        && alnum(name.chars().last())
}

fn parse_bool(annotation: &str, value: &str) -> Result<bool, Problem> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(Problem::NotABool {
            annotation: annotation.to_owned(),
            value: value.to_owned(),
        }),
    }
}

fn parse_action(annotation: &str, value: &str) -> Result<String, Problem> {
    match value.trim() {
        action @ ("signal" | "restart" | "webhook" | "exec") => Ok(action.to_owned()),
        _ => Err(Problem::UnknownAction {
            annotation: annotation.to_owned(),
            value: value.to_owned(),
        }),
    }
}

/// Parses exactly as the sidecar does ([`crate::config::parse_signal`]).
fn parse_signal(annotation: &str, value: &str) -> Result<Signal, Problem> {
    crate::config::parse_signal(value).map_err(|(value, expected)| Problem::BadSignal {
        annotation: annotation.to_owned(),
        value,
        expected,
    })
}

fn parse_url(annotation: &str, value: &str) -> Result<String, Problem> {
    let url = value.trim();
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(rest)
            if !rest.is_empty() && !rest.starts_with('/') && !url.contains(char::is_whitespace) =>
        {
            Ok(url.to_owned())
        }
        _ => Err(Problem::BadUrl {
            annotation: annotation.to_owned(),
            value: value.to_owned(),
        }),
    }
}

fn parse_image(annotation: &str, value: &str) -> Result<String, Problem> {
    let image = non_empty(
        annotation,
        value,
        "the sidecar image, e.g. ghcr.io/nudge-dev/nudge:0.1.0",
    )?;
    if image.contains(char::is_whitespace) {
        return Err(Problem::BadImage {
            annotation: annotation.to_owned(),
            value: value.to_owned(),
        });
    }
    Ok(image)
}

fn non_empty(annotation: &str, value: &str, expected: &'static str) -> Result<String, Problem> {
    let value = value.trim();
    if value.is_empty() {
        return Err(Problem::Empty {
            annotation: annotation.to_owned(),
            expected,
        });
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn layer(pairs: &[(&str, &str)]) -> Layer {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn request(layers: &[Layer]) -> Request {
        match decide(layers).expect("valid").0 {
            Decision::Inject(request) => request,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    fn names(spec: &WatchSpec) -> Vec<String> {
        match spec {
            WatchSpec::Names(names) => names.iter().map(|(n, _)| n.to_string()).collect(),
            WatchSpec::Everything(_) => vec!["*".into()],
        }
    }

    #[test]
    fn template_watch_list_replaces_the_workload_one() {
        let r = request(&[layer(&[(WATCH, "a")]), layer(&[(WATCH, "b, secret/c")])]);
        assert_eq!(names(&r.watch), ["ConfigMap or Secret \"b\"", "secret/c"]);
    }

    #[test]
    fn workload_watch_list_applies_when_the_template_names_nothing() {
        let r = request(&[layer(&[(WATCH, "a")]), layer(&[(ACTION, "restart")])]);
        assert_eq!(names(&r.watch), ["ConfigMap or Secret \"a\""]);
        assert_eq!(r.action, Action::Restart);
    }

    #[test]
    fn star_means_every_configmap_and_secret() {
        let r = request(&[layer(&[(WATCH, "*")])]);
        assert_eq!(r.watch, WatchSpec::Everything(Kinds::ALL));
    }

    #[test]
    fn reloader_and_skater_aliases_map_to_the_same_request() {
        let r = request(&[layer(&[(RELOADER_AUTO, "true")])]);
        assert_eq!(r.watch, WatchSpec::Everything(Kinds::ALL));
        let r = request(&[layer(&[(RELOADER_SECRET_AUTO, "true")])]);
        assert_eq!(
            r.watch,
            WatchSpec::Everything(Kinds {
                configmaps: false,
                secrets: true
            })
        );
        let r = request(&[layer(&[
            (RELOADER_CONFIGMAP_RELOAD, "a,b"),
            (RELOADER_SECRET_RELOAD, "x"),
        ])]);
        assert_eq!(names(&r.watch), ["configmap/a", "configmap/b", "secret/x"]);
        let r = request(&[
            layer(&[(SKATER_CONFIG_RELOAD, "true")]),
            layer(&[(SKATER_CONFIGMAP_WATCH, "web")]),
        ]);
        assert_eq!(names(&r.watch), ["configmap/web"]);
        let r = request(&[layer(&[(SKATER_CONFIG_RELOAD, "true")])]);
        assert_eq!(r.watch, WatchSpec::Everything(Kinds::ALL));
    }

    #[test]
    fn reloader_auto_false_asks_for_nothing() {
        let (d, _) = decide(&[layer(&[(RELOADER_AUTO, "false")])]).unwrap();
        assert_eq!(d, Decision::NotRequested);
    }

    #[test]
    fn inject_false_opts_out_even_with_a_watch_list() {
        let (d, _) = decide(&[layer(&[(INJECT, "false")]), layer(&[(WATCH, "a")])]).unwrap();
        assert_eq!(d, Decision::OptOut);
    }

    #[test]
    fn template_inject_true_overrides_workload_false() {
        let (d, _) = decide(&[
            layer(&[(INJECT, "false"), (WATCH, "a")]),
            layer(&[(INJECT, "true")]),
        ])
        .unwrap();
        assert!(matches!(d, Decision::Inject(_)));
    }

    #[test]
    fn signal_is_parsed_like_the_sidecar_parses_it() {
        for raw in ["SIGUSR2", "usr2", "12"] {
            let r = request(&[layer(&[(WATCH, "a"), (SIGNAL, raw)])]);
            assert_eq!(r.action, Action::Signal(Signal::SIGUSR2), "{raw}");
        }
        let err = decide(&[layer(&[(WATCH, "a"), (SIGNAL, "SIGFOO")])]).unwrap_err();
        assert!(err.to_string().contains("nudge.dev/signal") && err.to_string().contains("SIGFOO"));
    }

    #[test]
    fn webhook_url_alone_implies_the_webhook_action() {
        let r = request(&[layer(&[
            (WATCH, "a"),
            (WEBHOOK_URL, "http://localhost:9090/-/reload"),
        ])]);
        assert_eq!(
            r.action,
            Action::Webhook("http://localhost:9090/-/reload".into())
        );
    }

    #[test]
    fn invalid_values_are_errors_naming_the_annotation() {
        let cases: &[(&str, &str)] = &[
            (ACTION, "reboot"),
            (INJECT, "yes"),
            (WEBHOOK_URL, "localhost:9090"),
            (WATCH, "Web_Config"),
            (WATCH, "deployment/web"),
            (WATCH, " , "),
            (IMAGE, "a b"),
            (PROCESS, " "),
        ];
        for (key, value) in cases {
            let err = decide(&[layer(&[(WATCH, "ok"), (key, value)])]).unwrap_err();
            assert!(err.to_string().contains(key), "{key}={value}: {err}");
        }
    }

    #[test]
    fn webhook_and_exec_actions_need_their_annotation() {
        let err = decide(&[layer(&[(WATCH, "a"), (ACTION, "webhook")])]).unwrap_err();
        assert!(err.to_string().contains(WEBHOOK_URL));
        let err = decide(&[layer(&[(WATCH, "a"), (ACTION, "exec")])]).unwrap_err();
        assert!(err.to_string().contains(EXEC));
    }

    #[test]
    fn annotations_the_action_does_not_use_are_warned_about() {
        let (_, w) =
            decide(&[layer(&[(WATCH, "a"), (ACTION, "restart"), (SIGNAL, "HUP")])]).unwrap();
        assert_eq!(
            w,
            [Warning::Ignored {
                annotation: SIGNAL.into(),
                action: "restart"
            }]
        );
    }
}
