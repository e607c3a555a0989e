//! tracing subscriber setup: text or JSON lines on stderr, filter from
//! `RUST_LOG` or the config's `log.level`.

use tracing_subscriber::EnvFilter;

use crate::config::LogSettings;

/// Installs the global subscriber; a second call is a no-op (tests).
pub(crate) fn init(log: &LogSettings) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if log.format == "json" { builder.json().try_init() } else { builder.try_init() };
}
