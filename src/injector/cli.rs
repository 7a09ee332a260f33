//! `nudge injector`'s flags, the `--sidecar auto` version probe, the runtime and exit codes
//! (0 clean stop, 1 runtime failure, 2 usage or configuration error).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

use super::{server, tls};
use crate::config::LogFormat;
use crate::inject::{Options, Placement, DEFAULT_IMAGE};

/// How long `--sidecar auto` waits for the API server's `/version`.
const VERSION_TIMEOUT: Duration = Duration::from_secs(5);
/// The first Kubernetes release with native sidecars (`restartPolicy: Always` init containers)
/// on by default.
pub const NATIVE_SIDECARS_SINCE: (u32, u32) = (1, 29);

/// Which sidecar the injected pods get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SidecarArg {
    /// An init container with `restartPolicy: Always` (Kubernetes 1.29+).
    Native,
    /// A plain container (any Kubernetes).
    Regular,
    /// Native from Kubernetes 1.29, regular before (asks the API server's /version).
    Auto,
}

/// Flags of `nudge injector`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct InjectorArgs {
    /// Address to serve HTTPS on (`:8443` means all interfaces).
    #[arg(long, default_value = ":8443", env = "NUDGE_INJECTOR_LISTEN")]
    pub listen: String,
    /// Serving certificate (PEM, chain first); reloaded when the file changes.
    #[arg(long, value_name = "FILE", env = "NUDGE_INJECTOR_TLS_CERT")]
    pub tls_cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", env = "NUDGE_INJECTOR_TLS_KEY")]
    pub tls_key: PathBuf,
    /// Sidecar placement in injected pods.
    #[arg(
        long,
        value_enum,
        default_value = "auto",
        env = "NUDGE_INJECTOR_SIDECAR"
    )]
    pub sidecar: SidecarArg,
    /// Sidecar image (a pod's `nudge.dev/image` wins).
    #[arg(long, default_value = DEFAULT_IMAGE, env = "NUDGE_INJECTOR_IMAGE")]
    pub image: String,
    /// Kubeconfig for `--sidecar auto` (default: KUBECONFIG, ~/.kube/config, in-cluster).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Log filter (tracing env-filter syntax).
    #[arg(long, default_value = "info", env = "NUDGE_LOG_LEVEL")]
    pub log_level: String,
    /// Log format: text or json.
    #[arg(long, default_value = "text", value_parser = ["text", "json"], env = "NUDGE_LOG_FORMAT")]
    pub log_format: String,
}

const EXAMPLES: &str = "\
Examples:
  # In the cluster (k8s/injector/), with cert-manager's Secret mounted at /tls:
  nudge injector --tls-cert /tls/tls.crt --tls-key /tls/tls.key

  # Against a local cluster, regular sidecars:
  nudge injector --listen 127.0.0.1:8443 --tls-cert cert.pem --tls-key key.pem --sidecar regular

Exit codes: 0 clean stop, 1 runtime failure, 2 usage or configuration error.";

/// Runs `nudge injector`.
pub fn injector(args: &InjectorArgs) -> ExitCode {
    let format = match args.log_format.as_str() {
        "json" => LogFormat::Json,
        _ => LogFormat::Text,
    };
    crate::logging::init(&args.log_level, format);
    let addr = match parse_listen(&args.listen) {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("nudge: {e}");
            return ExitCode::from(2);
        }
    };
    let certs = match tls::CertStore::open(&args.tls_cert, &args.tls_key) {
        Ok(certs) => Arc::new(certs),
        Err(e) => {
            eprintln!("nudge: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("nudge: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(args, addr, certs)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(
    args: &InjectorArgs,
    addr: SocketAddr,
    certs: Arc<tls::CertStore>,
) -> anyhow::Result<()> {
    let placement = placement(args).await;
    let options = Options {
        image: args.image.clone(),
        placement,
    };
    info!(?placement, image = %options.image, "injecting");
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (--listen): {e}"))?;
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let watching = tokio::spawn(tls::watch(certs.clone(), shutdown.clone()));
    let serving = tokio::spawn(server::serve(listener, certs, options, shutdown));
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    info!("stopping");
    let _ = stop.send(true);
    let _ = serving.await;
    if let Ok(Err(e)) = watching.await {
        warn!(error = %e, "the certificate watcher had stopped");
    }
    Ok(())
}

/// `:8443` → `0.0.0.0:8443`; anything else must be an `IP:PORT`.
pub fn parse_listen(raw: &str) -> Result<SocketAddr, String> {
    let full = match raw.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => raw.to_owned(),
    };
    full.parse()
        .map_err(|_| format!("--listen {raw:?} is not an address like :8443 or 127.0.0.1:8443"))
}

async fn placement(args: &InjectorArgs) -> Placement {
    match args.sidecar {
        SidecarArg::Native => Placement::Native,
        SidecarArg::Regular => Placement::Regular,
        SidecarArg::Auto => match tokio::time::timeout(VERSION_TIMEOUT, server_version(args)).await
        {
            Ok(Ok((major, minor))) => {
                let placement = placement_for(major, minor);
                info!(version = %format!("{major}.{minor}"), ?placement, "--sidecar auto: chose by the API server's version");
                placement
            }
            Ok(Err(e)) => {
                warn!(error = %e, "--sidecar auto: the API server's version is unknown; using native sidecars (set --sidecar regular for clusters before 1.29)");
                Placement::Native
            }
            Err(_) => {
                warn!("--sidecar auto: the API server did not answer /version in {VERSION_TIMEOUT:?}; using native sidecars (set --sidecar regular for clusters before 1.29)");
                Placement::Native
            }
        },
    }
}

/// Native from 1.29 on, regular before.
pub fn placement_for(major: u32, minor: u32) -> Placement {
    match (major, minor) >= NATIVE_SIDECARS_SINCE {
        true => Placement::Native,
        false => Placement::Regular,
    }
}

async fn server_version(args: &InjectorArgs) -> anyhow::Result<(u32, u32)> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?
        }
        None => Config::infer().await?,
    };
    let info = Client::try_from(config)?.apiserver_version().await?;
    parse_version(&info.major, &info.minor)
        .ok_or_else(|| anyhow::anyhow!("unreadable version {}.{}", info.major, info.minor))
}

/// `("1", "20+")` → `(1, 20)` (providers append `+` and more to the minor).
pub fn parse_version(major: &str, minor: &str) -> Option<(u32, u32)> {
    let digits = |s: &str| {
        s.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .ok()
    };
    Some((digits(major)?, digits(minor)?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn auto_picks_native_sidecars_from_1_29_and_regular_before() {
        assert_eq!(placement_for(1, 20), Placement::Regular);
        assert_eq!(placement_for(1, 28), Placement::Regular);
        assert_eq!(placement_for(1, 29), Placement::Native);
        assert_eq!(placement_for(2, 0), Placement::Native);
    }

    #[test]
    fn provider_suffixes_on_the_minor_version_are_ignored() {
        assert_eq!(parse_version("1", "20+"), Some((1, 20)));
        assert_eq!(parse_version("1", "31"), Some((1, 31)));
        assert_eq!(parse_version("", "x"), None);
    }

    #[test]
    fn a_bare_port_listens_on_all_interfaces() {
        assert_eq!(parse_listen(":8443").unwrap().to_string(), "0.0.0.0:8443");
        assert_eq!(parse_listen("127.0.0.1:0").unwrap().port(), 0);
        assert!(parse_listen("8443").is_err());
    }
}
