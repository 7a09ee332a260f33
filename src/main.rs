//! The `nudge` command line: parse, set up logging, dispatch. Exit codes: 0 clean stop,
//! 1 runtime failure, 2 usage or configuration error.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use nudge::config::{Settings, WatchArgs};
use tokio::signal::unix::{signal, SignalKind};

/// Reload a Kubernetes app when its mounted ConfigMap or Secret changes.
#[derive(Parser)]
#[command(name = "nudge", version, args_conflicts_with_subcommands = true,
          after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    watch: WatchArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar: watch the volumes and reload the app on every real change (default).
    #[command(after_help = EXAMPLES)]
    Watch(WatchArgs),
    /// Explain, inside the pod, what the sidecar would do and what would not work; exits 1
    /// when something would not.
    #[command(after_help = CHECK_EXAMPLES)]
    Check(WatchArgs),
    /// Add the reload sidecar to Kubernetes manifests whose annotations ask for it.
    Inject(nudge::inject::cli::InjectArgs),
    /// Remove exactly what `nudge inject` added.
    Uninject(nudge::inject::cli::UninjectArgs),
    /// Run the cluster controller: roll annotated workloads when a ConfigMap or Secret they
    /// use changes.
    #[cfg(feature = "rollout")]
    Rollout(nudge::rollout::cli::RolloutArgs),
    /// Run the admission webhook that injects the sidecar into Pods created in the cluster.
    #[cfg(feature = "rollout")]
    Injector(nudge::injector::cli::InjectorArgs),
}

const EXAMPLES: &str = "\
Examples:
  # Reload nginx with SIGHUP when its ConfigMap volume changes:
  RELOAD_WATCH=/etc/nginx/conf.d RELOAD_PROCESS=nginx nudge

  # Settings from a file, JSON logs, admin server on localhost only:
  nudge --config /etc/nudge.yaml --log-format json --listen 127.0.0.1:9533

Exit codes: 0 clean stop, 1 runtime failure, 2 usage or configuration error.";

const CHECK_EXAMPLES: &str = "\
Examples:
  # Inside the pod, with the sidecar's own environment:
  kubectl exec deploy/web -c nudge -- nudge check

  # Check a specific path and process:
  nudge check --watch /etc/app --process app

Exit codes: 0 everything would work, 1 something would not (see PROBLEM lines),
2 usage or configuration error.";

fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    match cli.command {
        Some(Command::Watch(args)) => watch(&args),
        Some(Command::Check(args)) => check(&args),
        Some(Command::Inject(args)) => nudge::inject::cli::inject(&args),
        Some(Command::Uninject(args)) => nudge::inject::cli::uninject(&args),
        #[cfg(feature = "rollout")]
        Some(Command::Rollout(args)) => nudge::rollout::cli::rollout(&args),
        #[cfg(feature = "rollout")]
        Some(Command::Injector(args)) => nudge::injector::cli::injector(&args),
        None => watch(&cli.watch),
    }
}

/// Parses flags and env, then lays the `--config` file under them and parses again.
fn parse() -> Result<Cli, ExitCode> {
    let mut argv: Vec<OsString> = std::env::args_os().collect();
    let matches = Cli::command().get_matches_from(argv.clone());
    let settings_matches = match matches.subcommand() {
        Some(("watch" | "check", sub)) => sub,
        Some(_) => return Cli::from_arg_matches(&matches).map_err(|e| e.exit()),
        None => &matches,
    };
    if let Some(path) = settings_matches.get_one::<PathBuf>("config") {
        let command = WatchArgs::augment_args(clap::Command::new("nudge"));
        match nudge::config_file::args_from_file(path, &command, settings_matches) {
            // Appended last, so they land in the subcommand when there is one.
            Ok(extra) => argv.extend(extra),
            Err(e) => {
                eprintln!("nudge: {e}");
                return Err(ExitCode::from(2));
            }
        }
    }
    let matches = Cli::command().get_matches_from(argv);
    Cli::from_arg_matches(&matches).map_err(|e| e.exit())
}

fn settings(args: &WatchArgs) -> Result<Settings, ExitCode> {
    Settings::from_args(args).map_err(|errors| {
        for error in &errors.0 {
            eprintln!("nudge: {error}");
        }
        ExitCode::from(2)
    })
}

fn check(args: &WatchArgs) -> ExitCode {
    let settings = match settings(args) {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    let report = nudge::check::check(&settings);
    print!("{}", report.text);
    match report.problems {
        0 => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    }
}

fn watch(args: &WatchArgs) -> ExitCode {
    let settings = match settings(args) {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    nudge::logging::init(&settings.log_level, settings.log_format);
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
