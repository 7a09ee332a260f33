//! Log output: tracing-subscriber writing to stderr, one line per event, as readable text or
//! as JSON objects (`--log-format json`) whose fields are the event's fields. The level comes
//! from `--log-level` unless `RUST_LOG` is set (`info,nudge=debug`: a level per target; span
//! and field filters are not supported, which keeps a regex engine out of the binary). What is
//! logged never includes file contents: the stages log key names and hashes only.

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// Installs the global subscriber; call once, before anything logs.
pub fn init(level: &str, format: LogFormat) {
    let (filter, bad_rust_log) = filter(std::env::var("RUST_LOG").ok().as_deref(), level);
    let output = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry.with(output).init(),
        // The event's fields at the top level; those of the reload it belongs to (volume,
        // keys, action, target) under `span`.
        LogFormat::Json => registry
            .with(
                output
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .init(),
    }
    if let Some(why) = bad_rust_log {
        tracing::warn!("RUST_LOG ignored, expected directives like `info,nudge=debug`: {why}");
    }
}

/// The filter from `RUST_LOG` when it is set and parses, else from `--log-level`; with the
/// reason `RUST_LOG` was ignored, so a typo is reported instead of silently logging less.
fn filter(rust_log: Option<&str>, level: &str) -> (Targets, Option<String>) {
    let fallback = || level.parse::<Targets>().unwrap_or_default();
    match rust_log.map(str::trim).filter(|s| !s.is_empty()) {
        None => (fallback(), None),
        Some(directives) => match directives.parse::<Targets>() {
            Ok(targets) => (targets, None),
            Err(e) => (fallback(), Some(e.to_string())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::level_filters::LevelFilter;

    #[test]
    fn rust_log_directives_override_the_level_per_target() {
        let (targets, problem) = filter(Some("warn,nudge=debug"), "info");
        assert!(problem.is_none());
        assert_eq!(targets.default_level(), Some(LevelFilter::WARN));
        assert!(targets.would_enable("nudge::watch", &tracing::Level::DEBUG));
        assert!(!targets.would_enable("hyper", &tracing::Level::INFO));
    }

    #[test]
    fn falls_back_to_the_level_and_says_why_when_rust_log_is_malformed() {
        let (targets, problem) = filter(Some("nudge=loud"), "info");
        assert_eq!(targets.default_level(), Some(LevelFilter::INFO));
        assert!(problem.is_some());
    }

    #[test]
    fn uses_the_level_when_rust_log_is_unset_or_blank() {
        for unset in [None, Some("  ")] {
            let (targets, problem) = filter(unset, "debug");
            assert_eq!(targets.default_level(), Some(LevelFilter::DEBUG));
            assert!(problem.is_none());
        }
    }
}
