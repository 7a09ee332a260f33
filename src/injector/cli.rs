//! `nudge injector`'s flags, the `--sidecar auto` version probe, the runtime and exit codes
//! (0 clean stop, 1 runtime failure, 2 usage or configuration error).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use std::ffi::OsString;

use clap::{Args, FromArgMatches, ValueEnum};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

use super::review::{
    Resources, Settings, DEFAULT_CPU_REQUEST, DEFAULT_MEMORY_LIMIT, DEFAULT_MEMORY_REQUEST,
};
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

/// Flags of `nudge injector`. Every flag is also a key of the `--config` file (precedence:
/// file < environment < command line).
#[derive(Debug, Clone, Args)]
#[command(after_help = EXAMPLES)]
pub struct InjectorArgs {
    /// YAML file of settings whose keys are these flags' long names (`image: ...`).
    #[arg(long, value_name = "FILE", env = "NUDGE_INJECTOR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to serve HTTPS on (`:8443` means all interfaces).
    #[arg(long, default_value = ":8443", env = "NUDGE_INJECTOR_LISTEN")]
    pub listen: String,
    /// Serving certificate (PEM, chain first); reloaded when the file changes. Required.
    #[arg(long, value_name = "FILE", env = "NUDGE_INJECTOR_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1). Required.
    #[arg(long, value_name = "FILE", env = "NUDGE_INJECTOR_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
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
    /// The sidecar's imagePullPolicy (default: Kubernetes' own for the image's tag).
    #[arg(long, value_name = "POLICY", value_parser = ["Always", "IfNotPresent", "Never"],
          env = "NUDGE_INJECTOR_IMAGE_PULL_POLICY")]
    pub image_pull_policy: Option<String>,
    /// The sidecar's CPU request (`none` leaves it out).
    #[arg(long, value_name = "QUANTITY", default_value = DEFAULT_CPU_REQUEST,
          value_parser = quantity, env = "NUDGE_INJECTOR_SIDECAR_CPU_REQUEST")]
    pub sidecar_cpu_request: Quantity,
    /// The sidecar's memory request (`none` leaves it out).
    #[arg(long, value_name = "QUANTITY", default_value = DEFAULT_MEMORY_REQUEST,
          value_parser = quantity, env = "NUDGE_INJECTOR_SIDECAR_MEMORY_REQUEST")]
    pub sidecar_memory_request: Quantity,
    /// The sidecar's CPU limit (none by default, so hashing a large Secret is never throttled).
    #[arg(long, value_name = "QUANTITY", default_value = "none",
          value_parser = quantity, env = "NUDGE_INJECTOR_SIDECAR_CPU_LIMIT")]
    pub sidecar_cpu_limit: Quantity,
    /// The sidecar's memory limit (`none` leaves it out).
    #[arg(long, value_name = "QUANTITY", default_value = DEFAULT_MEMORY_LIMIT,
          value_parser = quantity, env = "NUDGE_INJECTOR_SIDECAR_MEMORY_LIMIT")]
    pub sidecar_memory_limit: Quantity,
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

/// A Kubernetes resource quantity (`5m`, `8Mi`, `0.5`, `1e3`), or `None` for `none`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quantity(pub Option<String>);

/// Parses `--sidecar-*-request/limit`: a Kubernetes quantity or `none`.
fn quantity(raw: &str) -> Result<Quantity, String> {
    if raw == "none" {
        return Ok(Quantity(None));
    }
    let number_end = raw
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(raw.len());
    let (number, suffix) = raw.split_at(number_end);
    let digits = number.trim_start_matches('+');
    let number_ok = !digits.is_empty()
        && digits != "."
        && digits.matches('.').count() <= 1
        && digits.chars().all(|c| c.is_ascii_digit() || c == '.');
    let exponent = |s: &str| {
        let s = s.strip_prefix(['e', 'E'])?;
        let s = s.strip_prefix(['+', '-']).unwrap_or(s);
        (!s.is_empty() && s.chars().all(|c| c.is_ascii_digit())).then_some(())
    };
    let suffix_ok = matches!(
        suffix,
        "" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"
    ) || exponent(suffix).is_some();
    match number_ok && suffix_ok {
        true => Ok(Quantity(Some(raw.to_owned()))),
        false => Err(format!(
            "{raw:?} is not a Kubernetes quantity like 5m, 8Mi or 0.5 (or `none`)"
        )),
    }
}

const EXAMPLES: &str = "\
Examples:
  # In the cluster (k8s/injector/), with cert-manager's Secret mounted at /tls:
  nudge injector --tls-cert /tls/tls.crt --tls-key /tls/tls.key

  # Against a local cluster, regular sidecars:
  nudge injector --listen 127.0.0.1:8443 --tls-cert cert.pem --tls-key key.pem --sidecar regular

Exit codes: 0 clean stop, 1 runtime failure, 2 usage or configuration error.";

/// Why `nudge injector`'s settings are unusable (exit 2, one line).
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The `--config` file could not be used.
    #[error(transparent)]
    File(#[from] crate::config_file::FileError),
    /// A value from the config file did not parse (clap's message names the flag).
    #[error("config file {path}: {message}")]
    FileValue {
        /// The file.
        path: PathBuf,
        /// clap's first line, naming the key as a flag.
        message: String,
    },
    /// A required setting is missing.
    #[error("{0} is required (flag, {1} or `{2}:` in the --config file)")]
    Missing(&'static str, &'static str, &'static str),
    /// `--listen` is not an address.
    #[error("--listen {0:?} is not an address like :8443 or 127.0.0.1:8443")]
    Listen(String),
    /// The certificate or key is unusable.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// Lays the `--config` file under the flags and environment of this `nudge injector` command
/// line (`argv` from the program name on); returns `args` unchanged without a file.
pub fn with_config_file(
    args: &InjectorArgs,
    argv: &[OsString],
) -> Result<InjectorArgs, SettingsError> {
    let Some(path) = args.config.clone() else {
        return Ok(args.clone());
    };
    // `nudge injector ARGS...`: the subcommand's own arguments.
    let at = argv
        .iter()
        .position(|a| a == "injector")
        .map_or(argv.len().min(1), |i| i + 1);
    let mut sub: Vec<OsString> = std::iter::once(OsString::from("nudge injector"))
        .chain(argv[at..].iter().cloned())
        .collect();
    let command = InjectorArgs::augment_args(clap::Command::new("nudge injector"));
    let file_error = |e: clap::Error| SettingsError::FileValue {
        path: path.clone(),
        message: first_line(&e),
    };
    let matches = command
        .clone()
        .try_get_matches_from(sub.clone())
        .map_err(file_error)?;
    sub.extend(crate::config_file::args_from_file(
        &path, &command, &matches,
    )?);
    let matches = command.try_get_matches_from(sub).map_err(file_error)?;
    InjectorArgs::from_arg_matches(&matches).map_err(file_error)
}

fn first_line(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let line = rendered.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

/// The validated settings: address, certificate store, the sidecar's settings.
fn settings(args: &InjectorArgs) -> Result<(SocketAddr, tls::CertStore), SettingsError> {
    let addr =
        parse_listen(&args.listen).map_err(|_| SettingsError::Listen(args.listen.clone()))?;
    let cert = args.tls_cert.as_deref().ok_or(SettingsError::Missing(
        "--tls-cert",
        "NUDGE_INJECTOR_TLS_CERT",
        "tls-cert",
    ))?;
    let key = args.tls_key.as_deref().ok_or(SettingsError::Missing(
        "--tls-key",
        "NUDGE_INJECTOR_TLS_KEY",
        "tls-key",
    ))?;
    Ok((addr, tls::CertStore::open(cert, key)?))
}

/// The injected sidecar's settings, with `placement` decided.
pub fn sidecar_settings(args: &InjectorArgs, placement: Placement) -> Settings {
    Settings {
        inject: Options {
            image: args.image.clone(),
            placement,
        },
        resources: Resources {
            cpu_request: args.sidecar_cpu_request.0.clone(),
            memory_request: args.sidecar_memory_request.0.clone(),
            cpu_limit: args.sidecar_cpu_limit.0.clone(),
            memory_limit: args.sidecar_memory_limit.0.clone(),
        },
        image_pull_policy: args.image_pull_policy.clone(),
    }
}

/// Runs `nudge injector` (settings from `args`, then the `--config` file under them).
pub fn injector(args: &InjectorArgs) -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let args = match with_config_file(args, &argv) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("nudge: {e}");
            return ExitCode::from(2);
        }
    };
    let format = match args.log_format.as_str() {
        "json" => LogFormat::Json,
        _ => LogFormat::Text,
    };
    crate::logging::init(&args.log_level, format);
    let (addr, certs) = match settings(&args) {
        Ok(settings) => settings,
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
    match runtime.block_on(run(&args, addr, Arc::new(certs))) {
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
    let settings = sidecar_settings(args, placement);
    let resources = &settings.resources;
    let show = |q: &Option<String>| q.clone().unwrap_or_else(|| "none".to_owned());
    info!(
        ?placement,
        image = %settings.inject.image,
        image_pull_policy = settings.image_pull_policy.as_deref().unwrap_or("default"),
        cpu_request = %show(&resources.cpu_request),
        memory_request = %show(&resources.memory_request),
        cpu_limit = %show(&resources.cpu_limit),
        memory_limit = %show(&resources.memory_limit),
        "injecting"
    );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (--listen): {e}"))?;
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let watching = tokio::spawn(tls::watch(certs.clone(), shutdown.clone()));
    let serving = tokio::spawn(server::serve(listener, certs, settings, shutdown));
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
    use std::path::Path;

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

    #[test]
    fn sidecar_quantities_are_kubernetes_quantities_or_none() {
        for good in ["5m", "8Mi", "0.5", "1", "1e3", "2Gi", "+1", "100k"] {
            assert_eq!(
                quantity(good),
                Ok(Quantity(Some(good.to_owned()))),
                "{good}"
            );
        }
        assert_eq!(quantity("none"), Ok(Quantity(None)));
        for bad in ["", "Mi", "5 m", "8MB", "1.2.3", "-1", "lots", "."] {
            let err = quantity(bad).unwrap_err();
            assert!(err.contains("not a Kubernetes quantity"), "{bad}: {err}");
        }
    }

    fn parse(argv: &[&str]) -> InjectorArgs {
        let command = InjectorArgs::augment_args(clap::Command::new("nudge injector"));
        let matches = command.try_get_matches_from(argv).unwrap();
        InjectorArgs::from_arg_matches(&matches).unwrap()
    }

    fn layered(file: &str, flags: &[&str]) -> Result<InjectorArgs, SettingsError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("injector.yaml");
        std::fs::write(&path, file).unwrap();
        let config = format!("--config={}", path.display());
        let mut argv = vec!["nudge", "injector", config.as_str()];
        argv.extend_from_slice(flags);
        let args = parse(&argv[1..]);
        let os: Vec<OsString> = argv.iter().map(OsString::from).collect();
        with_config_file(&args, &os)
    }

    #[test]
    fn the_config_file_sets_sidecar_settings_that_flags_override() {
        let file = "tls-cert: /tls/tls.crt\ntls-key: /tls/tls.key\nimage: reg/nudge:file\n\
                    sidecar-cpu-request: 1m\nsidecar-memory-limit: none\nimage-pull-policy: Always\n";
        let args = layered(file, &["--image=reg/nudge:flag"]).unwrap();
        assert_eq!(args.image, "reg/nudge:flag");
        assert_eq!(args.tls_cert.as_deref(), Some(Path::new("/tls/tls.crt")));
        let settings = sidecar_settings(&args, Placement::Regular);
        assert_eq!(settings.resources.cpu_request.as_deref(), Some("1m"));
        assert_eq!(settings.resources.memory_request.as_deref(), Some("8Mi"));
        assert_eq!(settings.resources.memory_limit, None);
        assert_eq!(settings.image_pull_policy.as_deref(), Some("Always"));
    }

    #[test]
    fn a_bad_config_file_value_or_key_is_one_line_naming_it() {
        let err = layered("sidecar-memory-limit: lots\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--sidecar-memory-limit") && err.contains("not a Kubernetes quantity"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        let err = layered("memory: 1Gi\n", &[]).unwrap_err().to_string();
        assert!(err.contains("unknown key \"memory\""), "{err}");
    }

    #[test]
    fn without_a_certificate_the_settings_name_the_missing_flag() {
        let err = settings(&parse(&["nudge injector"]))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("--tls-cert is required"), "{err}");
    }
}
