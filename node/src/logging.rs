//! Logging: tracing to stderr. Nothing logged anywhere in this crate contains a share, a key, an input or an
//! output value: logs name jobs, parties, keys' public halves and sizes only.

use tracing::level_filters::LevelFilter;

/// Installs a stderr subscriber at `level` (overridden by the `VEIL_LOG` environment variable). Does nothing
/// if a subscriber is already installed.
pub fn init(level: &str) {
    let level = std::env::var("VEIL_LOG").unwrap_or_else(|_| level.to_string());
    let filter = level.parse::<LevelFilter>().unwrap_or(LevelFilter::INFO);
    let _ = tracing_subscriber::fmt()
        .with_max_level(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}
