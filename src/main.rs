//! The `nudge` command line: parse, set up logging, dispatch. Exit codes: 0 clean stop,
//! 1 runtime failure, 2 usage or configuration error.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nudge::config::{Settings, WatchArgs};
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

/// Reload a Kubernetes app when its mounted ConfigMap or Secret changes.
#[derive(Parser)]
#[command(name = "nudge", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    watch: WatchArgs,
}

// Parsed once at start-up: boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the sidecar: watch the volumes and reload the app on every real change (default).
    Watch(WatchArgs),
    /// Add the reload sidecar to Kubernetes manifests whose annotations ask for it.
    Inject(nudge::inject::cli::InjectArgs),
    /// Remove exactly what `nudge inject` added.
    Uninject(nudge::inject::cli::UninjectArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Watch(args)) => watch(&args),
        Some(Command::Inject(args)) => nudge::inject::cli::inject(&args),
        Some(Command::Uninject(args)) => nudge::inject::cli::uninject(&args),
        None => watch(&cli.watch),
    }
}

fn watch(args: &WatchArgs) -> ExitCode {
    let settings = match Settings::from_args(args) {
        Ok(settings) => settings,
        Err(errors) => {
            for error in &errors.0 {
                eprintln!("nudge: {error}");
            }
            return ExitCode::from(2);
        }
    };
    init_logging(&settings.log_level);
    match block_on(settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::from(1)
        }
    }
}

fn block_on(settings: Settings) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let stop = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        nudge::run(settings, nudge::status::Status::default(), stop).await?;
        Ok(())
    })
}

fn init_logging(level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}
