//! Log output: tracing-subscriber writing to stderr, one line per event, as readable text or
//! as JSON objects (`--log-format json`) whose fields are the event's fields. The level comes
//! from `--log-level` unless `RUST_LOG` is set. What is logged never includes file contents:
//! the stages log key names and hashes only.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber; call once, before anything logs.
pub fn init(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    match format {
        LogFormat::Text => builder.init(),
        // The event's fields at the top level; those of the reload it belongs to (volume,
        // keys, action, target) under `span`.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}
