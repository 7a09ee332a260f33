//! `nudge rollout`'s flags, the client set-up (kubeconfig or in-cluster), the runtime and exit
//! codes: 0 clean stop, 1 runtime failure (API unreachable at start), 2 usage error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::events::{Recorder, Reporter};
use kube::{Api, Client, Config};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use super::content::Gate;
use super::controller::{self, DEFAULT_DEBOUNCE};
use super::error::ConfigError;
use super::reconcile::Context;
use super::settings::{self, LeaseSettings, Scope, Settings};

/// The controller's name in Events and the default Lease name.
const CONTROLLER_NAME: &str = "nudge-rollout";

/// Validation before a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GateArg {
    /// `.yaml`/`.yml`/`.json`/`.toml` keys must parse.
    Auto,
    /// No validation.
    None,
}

/// Flags of `nudge rollout`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct RolloutArgs {
    /// Kubeconfig file (default: KUBECONFIG, ~/.kube/config, then the in-cluster account).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Act only in this namespace (repeatable or comma-separated; default: all namespaces).
    #[arg(
        long = "namespace",
        short = 'n',
        value_name = "NS",
        env = "NUDGE_NAMESPACES"
    )]
    pub namespaces: Vec<String>,
    /// Act in all namespaces but these (comma-separated).
    #[arg(long, value_name = "NS,...", env = "NUDGE_IGNORE_NAMESPACES")]
    pub ignore_namespaces: Vec<String>,
    /// Label selector on workloads (e.g. `team=web,tier!=db`).
    #[arg(long, short = 'l', env = "NUDGE_SELECTOR")]
    pub selector: Option<String>,
    /// Validation before a rollout.
    #[arg(long, value_enum, default_value = "auto", env = "NUDGE_VALIDATE")]
    pub validate: GateArg,
    /// Wait this long for more changes before acting (a burst becomes one rollout).
    #[arg(long, value_parser = humantime::parse_duration, env = "NUDGE_DEBOUNCE")]
    pub debounce: Option<Duration>,
    /// Run only while holding a coordination.k8s.io/v1 Lease (for several replicas).
    #[arg(long, env = "NUDGE_LEADER_ELECT")]
    pub leader_elect: bool,
    /// The Lease name.
    #[arg(long, default_value = CONTROLLER_NAME, env = "NUDGE_LEASE_NAME")]
    pub lease_name: String,
    /// The Lease namespace (default: POD_NAMESPACE, else `default`).
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// How long a Lease is valid without renewal.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "15s", env = "NUDGE_LEASE_DURATION")]
    pub lease_duration: Duration,
    /// This replica's identity in the Lease (default: POD_NAME, else HOSTNAME).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
}

const EXAMPLES: &str = "\
Examples:
  # From a workstation, one namespace:
  nudge rollout --kubeconfig ~/.kube/config --namespace web

  # In-cluster, two replicas (k8s/rollout/):
  nudge rollout --leader-elect --ignore-namespaces kube-system

Exit codes: 0 clean stop, 1 runtime failure, 2 usage or configuration error.";

/// Runs `nudge rollout` to completion.
pub fn rollout(args: &RolloutArgs) -> ExitCode {
    init_logging();
    let settings = match to_settings(args) {
        Ok(settings) => settings,
        Err(e) => return usage_error(&e),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("nudge rollout: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ (ConfigError::Unreachable { .. } | ConfigError::Client(_))) => {
            eprintln!("nudge rollout: {e}");
            ExitCode::from(1)
        }
        Err(e) => usage_error(&e),
    }
}

fn usage_error(e: &ConfigError) -> ExitCode {
    eprintln!("nudge rollout: {e}");
    ExitCode::from(2)
}

// TODO: switch to `nudge::logging` (JSON logs) once the sidecar's logging module is shared.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NUDGE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Flags -> validated settings.
pub fn to_settings(args: &RolloutArgs) -> Result<Settings, ConfigError> {
    let scope = settings::scope(&args.namespaces, &args.ignore_namespaces)?;
    let selector = settings::selector(args.selector.as_deref());
    if args.lease_duration < Duration::from_secs(3) {
        return Err(ConfigError::BadDuration(format!(
            "--lease-duration: {:?} is too short (at least 3s)",
            args.lease_duration
        )));
    }
    let lease = args.leader_elect.then(|| LeaseSettings {
        name: args.lease_name.clone(),
        namespace: args
            .lease_namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        identity: args
            .identity
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| format!("nudge-{}", std::process::id())),
        duration: args.lease_duration,
    });
    Ok(Settings {
        scope,
        selector,
        gate: match args.validate {
            GateArg::Auto => Gate::Auto,
            GateArg::None => Gate::None,
        },
        debounce: args.debounce.unwrap_or(DEFAULT_DEBOUNCE),
        lease,
        kubeconfig: args.kubeconfig.clone(),
    })
}

/// Connects, checks the API answers, then runs until SIGTERM/SIGINT.
async fn run(settings: Settings) -> Result<(), ConfigError> {
    let (client, url) = client(&settings).await?;
    client
        .apiserver_version()
        .await
        .map_err(|source| ConfigError::Unreachable { url, source })?;
    check_selector(&client, &settings).await?;
    let reporter = Reporter {
        controller: CONTROLLER_NAME.into(),
        instance: settings.lease.as_ref().map(|l| l.identity.clone()),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let ctx = Arc::new(Context::new(client.clone(), recorder, settings.gate));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("stopping");
        let _ = stop_tx.send(true);
    });
    tracing::info!(scope = ?settings.scope, "nudge rollout started");
    match &settings.lease {
        None => controller::run(client, &settings, ctx, stop_rx).await,
        Some(lease) => {
            let work = |stop| controller::run(client.clone(), &settings, ctx.clone(), stop);
            super::leader::run_while_leader(client.clone(), lease, stop_rx, work).await;
        }
    }
    Ok(())
}

/// Lets the API server parse `--selector` once, so a typo is a usage error, not a watch
/// failing forever.
async fn check_selector(client: &Client, settings: &Settings) -> Result<(), ConfigError> {
    let Some(selector) = &settings.selector else {
        return Ok(());
    };
    let api: Api<Deployment> = match &settings.scope {
        Scope::Namespaces(list) => Api::namespaced(client.clone(), &list[0]),
        Scope::All { .. } => Api::all(client.clone()),
    };
    let params = ListParams::default().labels(selector).limit(1);
    match api.list_metadata(&params).await {
        Err(source @ kube::Error::Api(_)) if is_bad_request(&source) => {
            Err(ConfigError::BadSelector {
                value: selector.clone(),
                source,
            })
        }
        _ => Ok(()),
    }
}

fn is_bad_request(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 400)
}

async fn wait_for_signal() {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process can only be killed; keep running.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// The client and the server URL (for messages).
async fn client(settings: &Settings) -> Result<(Client, String), ConfigError> {
    let config = match &settings.kubeconfig {
        Some(path) => {
            let kubeconfig_error = |source| ConfigError::Kubeconfig {
                path: path.display().to_string(),
                source,
            };
            let kubeconfig = Kubeconfig::read_from(path).map_err(kubeconfig_error)?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(kubeconfig_error)?
        }
        None => Config::infer().await.map_err(ConfigError::Infer)?,
    };
    let url = config.cluster_url.to_string();
    Ok((Client::try_from(config).map_err(ConfigError::Client)?, url))
}
