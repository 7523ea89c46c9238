//! The one logging setup of the three binaries (`mailserver`, `mailserver-milter`,
//! `mailserver-web`): `tracing` events as plain text lines, filtered by `RUST_LOG` (a default level
//! when it is unset or invalid), in colour only when the stream they end on is a terminal
//! (supervisord and the scripts keep them in plain files).
//!
//! ```no_run
//! use tracing::level_filters::LevelFilter;
//! mailserver::logging::to_stderr(LevelFilter::WARN);
//! ```

use std::io::{self, IsTerminal as _};

use tracing::level_filters::LevelFilter;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Lines to standard error (the CLI, whose standard output is its records).
pub fn to_stderr(default_level: LevelFilter) {
    install(default_level, io::stderr, io::stderr().is_terminal());
}

/// Lines to standard output (the daemons, whose output supervisord keeps).
pub fn to_stdout(default_level: LevelFilter) {
    install(default_level, io::stdout, io::stdout().is_terminal());
}

/// Lines through `writer` (a batching writer, say) that ends on standard output.
pub fn to_stdout_through<W>(default_level: LevelFilter, writer: W)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    install(default_level, writer, io::stdout().is_terminal());
}

/// The filter: `RUST_LOG` when it is set and valid, else `default_level` for everything.
fn filter(default_level: LevelFilter) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::default().add_directive(default_level.into()))
}

/// Installs the global subscriber. Does nothing when one is installed already (tests that start a
/// server in process).
fn install<W>(default_level: LevelFilter, writer: W, ansi: bool)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let _ = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(ansi)
        .with_env_filter(filter(default_level))
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_level_filters_when_rust_log_is_absent() {
        // EnvFilter's Display lists its directives; with no RUST_LOG in the test environment (or an
        // invalid one), the default level is the only one.
        if std::env::var_os("RUST_LOG").is_some() {
            return;
        }
        assert_eq!(filter(LevelFilter::WARN).to_string(), "warn");
        assert_eq!(filter(LevelFilter::INFO).to_string(), "info");
    }
}
