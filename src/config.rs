//! Settings of the sidecar. Every flag also reads a `RELOAD_*` environment variable, so a pod
//! spec configures nudge with `env:` alone. Clap collects raw strings ([`WatchArgs`]);
//! [`Settings::from_args`] validates all of them at once and reports every problem on its own
//! line, naming the flag and its environment variable.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use nix::sys::signal::Signal;
use regex_lite::Regex;

use crate::action::webhook::{
    parse_header, ExpectedStatus, WebhookAction, WebhookSettings, WebhookUrl,
};
use crate::action::{
    ActionKind, ExecAction, ReloadAction, RestartAction, SignalAction, UnhandledSignal,
};
use crate::decide::DecideSettings;
use crate::target::Selector;
use crate::validate::{split_words, Validation};
use hyper::Method;

/// Environment variable for `--watch` (comma-separated list of paths).
pub const ENV_WATCH: &str = "RELOAD_WATCH";
/// Environment variable for `--signal`.
pub const ENV_SIGNAL: &str = "RELOAD_SIGNAL";
/// Environment variable for `--process`.
pub const ENV_PROCESS: &str = "RELOAD_PROCESS";
/// Environment variable for `--process-regex`.
pub const ENV_PROCESS_REGEX: &str = "RELOAD_PROCESS_REGEX";
/// Environment variable for `--pid-file`.
pub const ENV_PID_FILE: &str = "RELOAD_PID_FILE";
/// Environment variable for `--signal-unhandled`.
pub const ENV_SIGNAL_UNHANDLED: &str = "RELOAD_SIGNAL_UNHANDLED";
/// Environment variable for `--reload-on-start`.
pub const ENV_RELOAD_ON_START: &str = "RELOAD_ON_START";
/// Environment variable for `--settle`.
pub const ENV_SETTLE: &str = "RELOAD_SETTLE";
/// Environment variable for `--resync`.
pub const ENV_RESYNC: &str = "RELOAD_RESYNC";
/// Environment variable for `--log-level` (`RUST_LOG` wins when set).
pub const ENV_LOG_LEVEL: &str = "RELOAD_LOG_LEVEL";
/// Environment variable for `--action`.
pub const ENV_ACTION: &str = "RELOAD_ACTION";
/// Environment variable for `--restart-signal`.
pub const ENV_RESTART_SIGNAL: &str = "RELOAD_RESTART_SIGNAL";
/// Environment variable for `--grace`.
pub const ENV_GRACE: &str = "RELOAD_GRACE";
/// Environment variable for `--webhook-url` (comma-separated list).
pub const ENV_WEBHOOK_URL: &str = "RELOAD_WEBHOOK_URL";
/// Environment variable for `--webhook-method`.
pub const ENV_WEBHOOK_METHOD: &str = "RELOAD_WEBHOOK_METHOD";
/// Environment variable for `--webhook-status`.
pub const ENV_WEBHOOK_STATUS: &str = "RELOAD_WEBHOOK_STATUS";
/// Environment variable for `--webhook-timeout`.
pub const ENV_WEBHOOK_TIMEOUT: &str = "RELOAD_WEBHOOK_TIMEOUT";
/// Environment variable for `--webhook-retries`.
pub const ENV_WEBHOOK_RETRIES: &str = "RELOAD_WEBHOOK_RETRIES";
/// Environment variable for `--webhook-header` (one `Name: value` per line).
pub const ENV_WEBHOOK_HEADER: &str = "RELOAD_WEBHOOK_HEADER";
/// Environment variable for `--exec` (a command line, split into words without a shell).
pub const ENV_EXEC: &str = "RELOAD_EXEC";
/// Environment variable for `--exec-timeout`.
pub const ENV_EXEC_TIMEOUT: &str = "RELOAD_EXEC_TIMEOUT";
/// Environment variable for `--validate`.
pub const ENV_VALIDATE: &str = "RELOAD_VALIDATE";
/// Environment variable for `--validate-cmd`.
pub const ENV_VALIDATE_CMD: &str = "RELOAD_VALIDATE_CMD";
/// Environment variable for `--min-interval`.
pub const ENV_MIN_INTERVAL: &str = "RELOAD_MIN_INTERVAL";
/// Environment variable for `--log-format`.
pub const ENV_LOG_FORMAT: &str = "RELOAD_LOG_FORMAT";
/// Environment variable for `--listen`.
pub const ENV_LISTEN: &str = "RELOAD_LISTEN";
/// Environment variable for `--config`.
pub const ENV_CONFIG: &str = "RELOAD_CONFIG";

/// Default reload signal: what nginx, PostgreSQL and Prometheus reload on.
pub const DEFAULT_SIGNAL: &str = "SIGHUP";
/// Default settle delay for plain (non-kubelet) directories and files.
pub const DEFAULT_SETTLE: &str = "100ms";
/// Default period of the full rehash that catches anything inotify missed.
pub const DEFAULT_RESYNC: &str = "2m";
/// Default action: send the reload signal.
pub const DEFAULT_ACTION: &str = "signal";
/// Default validation: parse YAML, JSON and TOML files by extension.
pub const DEFAULT_VALIDATE: &str = "auto";
/// Default least time between two reloads: none.
pub const DEFAULT_MIN_INTERVAL: &str = "0";
/// Default address of the admin server (`/healthz`, `/readyz`, `/metrics`): every interface.
pub const DEFAULT_LISTEN: &str = ":9533";
/// Default log format.
pub const DEFAULT_LOG_FORMAT: &str = "text";

/// Raw command-line flags of the sidecar, each with its `RELOAD_*` fallback.
#[derive(Debug, Clone, clap::Args)]
pub struct WatchArgs {
    /// Directory or file to watch; repeat the flag or give a comma-separated list in the env var.
    /// A kubelet ConfigMap/Secret volume is recognised by its `..data` link.
    #[arg(long = "watch", env = ENV_WATCH, value_name = "PATH", help_heading = "Watching")]
    pub watch: Vec<String>,

    /// Quiet time after the last event in a plain directory or file before it is read.
    /// Kubelet volumes are read at once when `..data` is swapped.
    /// (`--debounce` is another name for it.)
    #[arg(long, alias = "debounce", env = ENV_SETTLE, value_name = "DURATION",
          default_value = DEFAULT_SETTLE, help_heading = "Watching")]
    pub settle: String,

    /// Rehash every watched path this often as a safety net (acts only if content differs);
    /// `0` disables.
    #[arg(long, env = ENV_RESYNC, value_name = "DURATION", default_value = DEFAULT_RESYNC,
          help_heading = "Watching")]
    pub resync: String,

    /// Reload once at start-up too (normally the content found at start-up is the baseline).
    #[arg(long, env = ENV_RELOAD_ON_START, value_name = "BOOL", num_args = 0..=1,
          default_value = "false", default_missing_value = "true",
          value_parser = BoolishValueParser::new(), help_heading = "Watching")]
    pub reload_on_start: bool,

    /// Signal that makes the app reload: a name (SIGHUP, HUP, hup) or a number (1).
    #[arg(long, env = ENV_SIGNAL, value_name = "SIGNAL", default_value = DEFAULT_SIGNAL,
          help_heading = "Target")]
    pub signal: String,

    /// Signal the process whose name (comm) is exactly NAME; workers that share the
    /// master's name are skipped.
    #[arg(long, env = ENV_PROCESS, value_name = "NAME", help_heading = "Target")]
    pub process: Option<String>,

    /// Signal the process whose full command line matches the regular expression RE.
    #[arg(long = "process-regex", env = ENV_PROCESS_REGEX, value_name = "RE",
          help_heading = "Target")]
    pub process_regex: Option<String>,

    /// Signal the process whose PID is written in FILE (read afresh for every reload).
    #[arg(long = "pid-file", env = ENV_PID_FILE, value_name = "FILE", help_heading = "Target")]
    pub pid_file: Option<PathBuf>,

    /// What to do when the target neither catches nor ignores the signal (its default
    /// action would kill it): `refuse` (log and retry) or `send` anyway.
    #[arg(long = "signal-unhandled", env = ENV_SIGNAL_UNHANDLED, value_name = "POLICY",
          default_value = "refuse", help_heading = "Target")]
    pub signal_unhandled: String,

    /// What a reload does: `signal` the app, `restart` its container, call a `webhook`, or
    /// `exec` a command.
    #[arg(long, env = ENV_ACTION, value_name = "ACTION", default_value = DEFAULT_ACTION,
          help_heading = "Action")]
    pub action: String,

    /// restart: the signal that asks the container's main process to stop.
    #[arg(long = "restart-signal", env = ENV_RESTART_SIGNAL, value_name = "SIGNAL",
          default_value = crate::action::restart::DEFAULT_RESTART_SIGNAL, help_heading = "Action")]
    pub restart_signal: String,

    /// restart: how long the main process may take to exit before SIGKILL.
    #[arg(long, env = ENV_GRACE, value_name = "DURATION",
          default_value = crate::action::restart::DEFAULT_GRACE, help_heading = "Action")]
    pub grace: String,

    /// webhook: URL to call; repeat the flag or comma-separate in the env var.
    /// `http://user:pass@host/` sends basic auth (the password is never logged).
    #[arg(long = "webhook-url", env = ENV_WEBHOOK_URL, value_name = "URL", help_heading = "Action")]
    pub webhook_url: Vec<String>,

    /// webhook: request method.
    #[arg(long = "webhook-method", env = ENV_WEBHOOK_METHOD, value_name = "METHOD",
          default_value = crate::action::webhook::DEFAULT_METHOD, help_heading = "Action")]
    pub webhook_method: String,

    /// webhook: expected status: a code (200), a class (2xx), a range (200-299), or a list.
    #[arg(long = "webhook-status", env = ENV_WEBHOOK_STATUS, value_name = "STATUS",
          default_value = crate::action::webhook::DEFAULT_STATUS, help_heading = "Action")]
    pub webhook_status: String,

    /// webhook: time limit of one request, response included.
    #[arg(long = "webhook-timeout", env = ENV_WEBHOOK_TIMEOUT, value_name = "DURATION",
          default_value = crate::action::webhook::DEFAULT_TIMEOUT, help_heading = "Action")]
    pub webhook_timeout: String,

    /// webhook: retries after a failed request (exponential backoff with jitter, at most 30s
    /// apart), then give up until the content changes again.
    #[arg(long = "webhook-retries", env = ENV_WEBHOOK_RETRIES, value_name = "N",
          default_value = crate::action::webhook::DEFAULT_RETRIES, help_heading = "Action")]
    pub webhook_retries: String,

    /// webhook: extra request header `Name: value`; repeat the flag, or one per line in the
    /// env var.
    #[arg(long = "webhook-header", env = ENV_WEBHOOK_HEADER, value_name = "NAME:VALUE",
          help_heading = "Action")]
    pub webhook_header: Vec<String>,

    /// exec: the command and its arguments (no shell; end the list with `;` if more flags
    /// follow). One value (or the env var) is split into words: `--exec "kill -USR1 7"`.
    /// The changed volume paths are in NUDGE_CHANGED, colon-separated.
    #[arg(long, env = ENV_EXEC, value_name = "CMD", num_args = 1.., allow_hyphen_values = true,
          value_terminator = ";", help_heading = "Action")]
    pub exec: Vec<String>,

    /// exec: how long the command may run before it is killed and counted as failed.
    #[arg(long = "exec-timeout", env = ENV_EXEC_TIMEOUT, value_name = "DURATION",
          default_value = crate::action::exec::DEFAULT_TIMEOUT, help_heading = "Action")]
    pub exec_timeout: String,

    /// Validate new content before acting: `auto` parses changed .yaml/.yml/.json/.toml
    /// files; `none` does not. Invalid content is held back.
    #[arg(long, env = ENV_VALIDATE, value_name = "MODE", default_value = DEFAULT_VALIDATE,
          help_heading = "Validation")]
    pub validate: String,

    /// Command that must exit 0 for new content to be acted on (no shell; NUDGE_CHANGED
    /// holds the changed volume paths), e.g. "nginx -t -c /etc/nginx/nginx.conf".
    #[arg(long = "validate-cmd", env = ENV_VALIDATE_CMD, value_name = "CMD",
          help_heading = "Validation")]
    pub validate_cmd: Option<String>,

    /// Least time between the starts of two reloads; changes meanwhile become one reload.
    #[arg(long = "min-interval", env = ENV_MIN_INTERVAL, value_name = "DURATION",
          default_value = DEFAULT_MIN_INTERVAL, help_heading = "Validation")]
    pub min_interval: String,

    /// Log level: error, warn, info, debug or trace (`RUST_LOG` overrides).
    #[arg(long = "log-level", env = ENV_LOG_LEVEL, value_name = "LEVEL", default_value = "info",
          help_heading = "Logging")]
    pub log_level: String,

    /// Log format: `text` (one readable line per event) or `json` (one JSON object per line).
    #[arg(long = "log-format", env = ENV_LOG_FORMAT, value_name = "FORMAT",
          default_value = DEFAULT_LOG_FORMAT, help_heading = "Logging")]
    pub log_format: String,

    /// Address of the admin server (/healthz, /readyz, /metrics): `HOST:PORT`, `:PORT` for
    /// every interface, or `off`.
    #[arg(long, env = ENV_LISTEN, value_name = "ADDR", default_value = DEFAULT_LISTEN,
          help_heading = "Admin server")]
    pub listen: String,

    /// YAML file with the same settings, keyed by long flag name (`process-regex: nginx`);
    /// flags and environment variables override it.
    #[arg(long, env = ENV_CONFIG, value_name = "FILE", help_heading = "Config file")]
    pub config: Option<PathBuf>,
}

/// Validated settings of the sidecar, ready to run.
#[derive(Debug)]
pub struct Settings {
    /// Paths to watch, in the order given.
    pub watch: Vec<PathBuf>,
    /// Settle delay for plain directories and files.
    pub settle: Duration,
    /// Full-rehash period; `None` when disabled.
    pub resync: Option<Duration>,
    /// Whether to reload once at start-up.
    pub reload_on_start: bool,
    /// What a reload does.
    pub action: ReloadAction,
    /// Log level directive for tracing.
    pub log_level: String,
    /// Log line format.
    pub log_format: LogFormat,
    /// Address of the admin server; `None` when `--listen off`.
    pub listen: Option<SocketAddr>,
    /// Validation gate and pacing of the decide stage.
    pub decide: DecideSettings,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line, fields as keys.
    Json,
}

/// One invalid setting: names the flag and its env var, the value given and what was expected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {flag} ({env}) {value:?}: expected {expected}")]
pub struct ConfigError {
    /// The flag, e.g. `--signal`.
    pub flag: &'static str,
    /// The environment variable, e.g. `RELOAD_SIGNAL`.
    pub env: &'static str,
    /// The value that was given.
    pub value: String,
    /// What a valid value looks like.
    pub expected: String,
}

/// Every invalid setting found in one pass, shown one per line.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

impl std::error::Error for ConfigErrors {}

impl Settings {
    /// Validates raw flags; on failure returns every problem, not just the first.
    pub fn from_args(args: &WatchArgs) -> Result<Settings, ConfigErrors> {
        let mut errors = Vec::new();
        let watch: Vec<PathBuf> = args
            .watch
            .iter()
            .flat_map(|list| list.split(','))
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect();
        if watch.is_empty() {
            errors.push(ConfigError {
                flag: "--watch",
                env: ENV_WATCH,
                value: String::new(),
                expected: "at least one directory or file to watch, e.g. /etc/config".into(),
            });
        }
        let settle = collect(
            &mut errors,
            parse_duration(&args.settle),
            "--settle",
            ENV_SETTLE,
        );
        let resync = collect(
            &mut errors,
            parse_duration(&args.resync),
            "--resync",
            ENV_RESYNC,
        );
        let signal = collect(
            &mut errors,
            parse_signal(&args.signal),
            "--signal",
            ENV_SIGNAL,
        );
        let unhandled = collect(
            &mut errors,
            args.signal_unhandled.parse::<UnhandledSignal>(),
            "--signal-unhandled",
            ENV_SIGNAL_UNHANDLED,
        );
        let selector = selector(args, &mut errors);
        let log_level = collect(
            &mut errors,
            parse_log_level(&args.log_level),
            "--log-level",
            ENV_LOG_LEVEL,
        );
        let log_format = collect(
            &mut errors,
            parse_log_format(&args.log_format),
            "--log-format",
            ENV_LOG_FORMAT,
        );
        let listen = collect(
            &mut errors,
            parse_listen(&args.listen),
            "--listen",
            ENV_LISTEN,
        );
        let choice = ActionChoice::from_args(args, &mut errors);
        let decide = decide_settings(args, &mut errors);
        let (Some(log_format), Some(listen), Some(choice), Some(decide)) =
            (log_format, listen, choice, decide)
        else {
            return Err(ConfigErrors(errors));
        };
        match (settle, resync, signal, unhandled, selector, log_level) {
            (
                Some(settle),
                Some(resync),
                Some(signal),
                Some(unhandled),
                Some(selector),
                Some(log_level),
            ) if errors.is_empty() => Ok(Settings {
                watch,
                settle,
                resync: (!resync.is_zero()).then_some(resync),
                reload_on_start: args.reload_on_start,
                action: choice.into_action(signal, selector, unhandled),
                log_level,
                log_format,
                listen,
                decide,
            }),
            _ => Err(ConfigErrors(errors)),
        }
    }
}

/// Result of parsing one raw value: the parsed value, or the raw value and what was expected.
type Parsed<T> = Result<T, (String, String)>;

/// The action chosen by `--action`, with its own settings validated; the target selector and
/// reload signal are shared with the signal action and joined in [`ActionChoice::into_action`].
enum ActionChoice {
    Signal,
    Restart { signal: Signal, grace: Duration },
    Webhook(Box<WebhookAction>),
    Exec(ExecAction),
}

impl ActionChoice {
    /// Validates `--action` and the flags of the chosen action (only those: a default webhook
    /// URL is no error for `--action signal`).
    fn from_args(args: &WatchArgs, errors: &mut Vec<ConfigError>) -> Option<ActionChoice> {
        let kind = collect(
            errors,
            args.action.parse::<ActionKind>(),
            "--action",
            ENV_ACTION,
        )?;
        match kind {
            ActionKind::Signal => Some(ActionChoice::Signal),
            ActionKind::Restart => {
                let signal = collect(
                    errors,
                    parse_signal(&args.restart_signal),
                    "--restart-signal",
                    ENV_RESTART_SIGNAL,
                );
                let grace = collect(errors, parse_duration(&args.grace), "--grace", ENV_GRACE);
                Some(ActionChoice::Restart {
                    signal: signal?,
                    grace: grace?,
                })
            }
            ActionKind::Webhook => {
                webhook(args, errors).map(|w| ActionChoice::Webhook(Box::new(w)))
            }
            ActionKind::Exec => exec(args, errors).map(ActionChoice::Exec),
        }
    }

    fn into_action(
        self,
        signal: Signal,
        selector: Selector,
        unhandled: UnhandledSignal,
    ) -> ReloadAction {
        match self {
            ActionChoice::Signal => {
                ReloadAction::Signal(SignalAction::new(signal, selector, unhandled))
            }
            ActionChoice::Restart { signal, grace } => {
                ReloadAction::Restart(RestartAction::new(signal, grace, selector))
            }
            ActionChoice::Webhook(action) => ReloadAction::Webhook(action),
            ActionChoice::Exec(action) => ReloadAction::Exec(action),
        }
    }
}

fn webhook(args: &WatchArgs, errors: &mut Vec<ConfigError>) -> Option<WebhookAction> {
    let before = errors.len();
    let raw_urls: Vec<&str> = args
        .webhook_url
        .iter()
        .flat_map(|list| list.split(','))
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    if raw_urls.is_empty() {
        errors.push(ConfigError {
            flag: "--webhook-url",
            env: ENV_WEBHOOK_URL,
            value: String::new(),
            expected: "at least one URL with --action webhook, e.g. http://localhost:9090/-/reload"
                .into(),
        });
    }
    let urls: Vec<WebhookUrl> = raw_urls
        .iter()
        .filter_map(|u| collect(errors, u.parse(), "--webhook-url", ENV_WEBHOOK_URL))
        .collect();
    let method = collect(
        errors,
        Method::from_bytes(args.webhook_method.trim().to_ascii_uppercase().as_bytes()).map_err(
            |_| {
                (
                    args.webhook_method.clone(),
                    "an HTTP method such as POST or GET".into(),
                )
            },
        ),
        "--webhook-method",
        ENV_WEBHOOK_METHOD,
    );
    let expected = collect(
        errors,
        args.webhook_status.parse::<ExpectedStatus>(),
        "--webhook-status",
        ENV_WEBHOOK_STATUS,
    );
    let timeout = collect(
        errors,
        parse_duration(&args.webhook_timeout).and_then(|d| non_zero(d, &args.webhook_timeout)),
        "--webhook-timeout",
        ENV_WEBHOOK_TIMEOUT,
    );
    let retries = collect(
        errors,
        args.webhook_retries.trim().parse::<u32>().map_err(|_| {
            (
                args.webhook_retries.clone(),
                "a number of retries, e.g. 5".into(),
            )
        }),
        "--webhook-retries",
        ENV_WEBHOOK_RETRIES,
    );
    let headers: Vec<_> = args
        .webhook_header
        .iter()
        .flat_map(|list| list.lines())
        .filter(|h| !h.trim().is_empty())
        .filter_map(|h| {
            collect(
                errors,
                parse_header(h),
                "--webhook-header",
                ENV_WEBHOOK_HEADER,
            )
        })
        .collect();
    if errors.len() > before {
        return None;
    }
    // Shown redacted, should the action fail to build (no CA certificates for https).
    let shown = urls
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let settings = WebhookSettings {
        urls,
        method: method?,
        expected: expected?,
        timeout: timeout?,
        headers,
        retries: retries?,
    };
    collect(
        errors,
        WebhookAction::new(settings).map_err(|e| (shown, e)),
        "--webhook-url",
        ENV_WEBHOOK_URL,
    )
}

fn exec(args: &WatchArgs, errors: &mut Vec<ConfigError>) -> Option<ExecAction> {
    let argv = match args.exec.as_slice() {
        // One value (or the env var): a command line, split into words without a shell.
        [line] => collect(
            errors,
            split_words(line).map_err(|e| (line.clone(), format!("a command line ({e})"))),
            "--exec",
            ENV_EXEC,
        )?,
        argv => argv.to_vec(),
    };
    if argv.is_empty() {
        errors.push(ConfigError {
            flag: "--exec",
            env: ENV_EXEC,
            value: String::new(),
            expected: "a command with --action exec, e.g. --exec /bin/reload.sh".into(),
        });
    }
    let timeout = collect(
        errors,
        parse_duration(&args.exec_timeout).and_then(|d| non_zero(d, &args.exec_timeout)),
        "--exec-timeout",
        ENV_EXEC_TIMEOUT,
    )?;
    (!argv.is_empty()).then(|| ExecAction::new(argv, timeout))
}

fn decide_settings(args: &WatchArgs, errors: &mut Vec<ConfigError>) -> Option<DecideSettings> {
    let mode = match args.validate.trim().to_ascii_lowercase().as_str() {
        "auto" => Ok(Validation::Auto),
        "none" => Ok(Validation::None),
        _ => Err((
            args.validate.clone(),
            "auto or none (or set --validate-cmd)".to_owned(),
        )),
    };
    let mode = collect(errors, mode, "--validate", ENV_VALIDATE);
    let command = match args.validate_cmd.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(line) => collect(
            errors,
            split_words(line).map_err(|e| (line.to_owned(), format!("a command line ({e})"))),
            "--validate-cmd",
            ENV_VALIDATE_CMD,
        ),
    };
    let min_interval = collect(
        errors,
        parse_duration(&args.min_interval),
        "--min-interval",
        ENV_MIN_INTERVAL,
    );
    Some(DecideSettings {
        // A command replaces the built-in parsers: it knows the app's own syntax.
        validation: command.map_or(mode?, Validation::Command),
        min_interval: min_interval?,
    })
}

fn non_zero(duration: Duration, raw: &str) -> Parsed<Duration> {
    if duration.is_zero() {
        return Err((raw.to_owned(), "a duration above zero, e.g. 5s".to_owned()));
    }
    Ok(duration)
}

fn collect<T>(
    errors: &mut Vec<ConfigError>,
    parsed: Parsed<T>,
    flag: &'static str,
    env: &'static str,
) -> Option<T> {
    parsed
        .map_err(|(value, expected)| {
            errors.push(ConfigError {
                flag,
                env,
                value,
                expected,
            })
        })
        .ok()
}

/// Chooses the target selector; at most one of `--process`, `--process-regex`, `--pid-file`.
fn selector(args: &WatchArgs, errors: &mut Vec<ConfigError>) -> Option<Selector> {
    let non_empty = |s: &Option<String>| s.as_deref().filter(|s| !s.is_empty()).map(str::to_owned);
    let name = non_empty(&args.process);
    let regex = non_empty(&args.process_regex);
    let pid_file = args.pid_file.clone().filter(|p| !p.as_os_str().is_empty());
    let given = [name.is_some(), regex.is_some(), pid_file.is_some()];
    if given.iter().filter(|g| **g).count() > 1 {
        errors.push(ConfigError {
            flag: "--process/--process-regex/--pid-file",
            env: "RELOAD_PROCESS/RELOAD_PROCESS_REGEX/RELOAD_PID_FILE",
            value: [
                name.clone(),
                regex.clone(),
                pid_file.as_ref().map(|p| p.display().to_string()),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(", "),
            expected: "at most one way to select the target process".into(),
        });
        return None;
    }
    if let Some(name) = name {
        return Some(Selector::Name(name));
    }
    if let Some(pattern) = regex {
        return collect(
            errors,
            Regex::new(&pattern).map_err(|e| {
                (
                    pattern.clone(),
                    format!("a regular expression ({})", one_line(&e)),
                )
            }),
            "--process-regex",
            ENV_PROCESS_REGEX,
        )
        .map(Selector::CommandLine);
    }
    Some(pid_file.map_or(Selector::OtherContainer, Selector::PidFile))
}

/// The last line of a multi-line error (regex errors draw a caret diagram above it).
fn one_line(error: &dyn std::error::Error) -> String {
    let text = error.to_string();
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    last.trim().trim_start_matches("error: ").to_owned()
}

/// Parses `SIGHUP`, `HUP`, `hup` or `1` into a signal.
pub fn parse_signal(raw: &str) -> Parsed<Signal> {
    let expected = || {
        (
            raw.to_owned(),
            "a signal name such as SIGHUP, HUP, hup, SIGUSR1, or a number from 1 to 31".to_owned(),
        )
    };
    let text = raw.trim();
    if let Ok(number) = text.parse::<i32>() {
        return Signal::try_from(number).map_err(|_| expected());
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name).map_err(|_| expected())
}

/// Parses a duration such as `100ms`, `30s`, `2m` or `0`.
pub fn parse_duration(raw: &str) -> Parsed<Duration> {
    let text = raw.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(text).map_err(|_| {
        (
            raw.to_owned(),
            "a duration such as 100ms, 30s, 2m or 0".to_owned(),
        )
    })
}

fn parse_log_format(raw: &str) -> Parsed<LogFormat> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err((raw.to_owned(), "text or json".to_owned())),
    }
}

/// Parses `HOST:PORT`, `:PORT` (every interface) or `off`.
pub fn parse_listen(raw: &str) -> Parsed<Option<SocketAddr>> {
    let text = raw.trim();
    if text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    // `:9533` is the Go-style "every interface"; 0.0.0.0 works on IPv4-only nodes too.
    let full = match text.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => text.to_owned(),
    };
    full.parse::<SocketAddr>().map(Some).map_err(|_| {
        (
            raw.to_owned(),
            "HOST:PORT, :PORT (every interface) or off, e.g. :9533 or 127.0.0.1:9533".to_owned(),
        )
    })
}

fn parse_log_level(raw: &str) -> Parsed<String> {
    let level = raw.trim().to_ascii_lowercase();
    match level.as_str() {
        "error" | "warn" | "info" | "debug" | "trace" | "off" => Ok(level),
        _ => Err((
            raw.to_owned(),
            "one of error, warn, info, debug, trace, off".to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: WatchArgs,
    }

    fn settings(argv: &[&str]) -> Result<Settings, ConfigErrors> {
        let cli = Cli::try_parse_from(std::iter::once("nudge").chain(argv.iter().copied()))
            .expect("flags parse");
        Settings::from_args(&cli.args)
    }

    #[test]
    fn signal_accepts_full_short_lowercase_and_numeric_names() {
        for raw in ["SIGHUP", "HUP", "hup", "1", " sighup "] {
            assert_eq!(parse_signal(raw), Ok(Signal::SIGHUP), "{raw}");
        }
        assert_eq!(parse_signal("usr2"), Ok(Signal::SIGUSR2));
    }

    #[test]
    fn unknown_signal_names_flag_and_env_var() {
        let err = settings(&["--watch", "/x", "--signal", "SIGFOO"]).unwrap_err();
        assert_eq!(err.0.len(), 1);
        let line = err.to_string();
        assert!(
            line.contains("--signal") && line.contains("RELOAD_SIGNAL") && line.contains("SIGFOO")
        );
        assert!(!line.contains('\n'));
    }

    #[test]
    fn all_problems_are_reported_together() {
        let err =
            settings(&["--signal", "0", "--process-regex", "(", "--resync", "soon"]).unwrap_err();
        let flags: Vec<_> = err.0.iter().map(|e| e.flag).collect();
        assert_eq!(
            flags,
            ["--watch", "--resync", "--signal", "--process-regex"]
        );
    }

    #[test]
    fn conflicting_selectors_are_rejected() {
        let err = settings(&[
            "--watch",
            "/x",
            "--process",
            "nginx",
            "--pid-file",
            "/run/p",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("at most one way to select"));
    }

    #[test]
    fn watch_takes_repeated_flags_and_comma_lists() {
        let s = settings(&["--watch", "/a,/b", "--watch", "/c"]).expect("valid");
        assert_eq!(s.watch, [PathBuf::from("/a"), "/b".into(), "/c".into()]);
    }

    #[test]
    fn durations_and_defaults() {
        let s = settings(&["--watch", "/a", "--resync", "0"]).expect("valid");
        assert_eq!(s.settle, Duration::from_millis(100));
        assert_eq!(s.resync, None);
        assert!(!s.reload_on_start);
        let s = settings(&["--watch", "/a", "--reload-on-start", "--settle", "2s"]).expect("valid");
        assert!(s.reload_on_start);
        assert_eq!(s.settle, Duration::from_secs(2));
        assert_eq!(s.resync, Some(Duration::from_secs(120)));
    }

    #[test]
    fn no_selector_means_the_other_container() {
        let s = settings(&["--watch", "/a"]).expect("valid");
        let ReloadAction::Signal(action) = s.action else {
            panic!("the default action is signal")
        };
        assert!(matches!(action.selector(), Selector::OtherContainer));
    }
}
