//! The one logging setup of the three binaries (`mailserver`, `mailserver-milter`,
//! `mailserver-web`): `tracing` events as plain text lines, filtered by `RUST_LOG` (a default level
//! when it is unset or invalid), in colour only when the stream they end on is a terminal
//! (supervisord and the scripts keep them in plain files).
//!
//! ```no_run
//! use mailserver::logging::{self, LogOptions};
//! use tracing::level_filters::LevelFilter;
//! logging::init(LogOptions::stderr(LevelFilter::WARN));
//! ```

use std::io::{self, IsTerminal as _, Write};

use tracing::level_filters::LevelFilter;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// A standard stream: where log lines go, or where a custom writer ends up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn is_terminal(self) -> bool {
        match self {
            Stream::Stdout => io::stdout().is_terminal(),
            Stream::Stderr => io::stderr().is_terminal(),
        }
    }
}

/// What [`Stream`] writes each line with.
pub enum StreamWriter {
    Stdout(io::Stdout),
    Stderr(io::Stderr),
}

impl Write for StreamWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            StreamWriter::Stdout(w) => w.write(buf),
            StreamWriter::Stderr(w) => w.write(buf),
        }
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            StreamWriter::Stdout(w) => w.write_all(buf),
            StreamWriter::Stderr(w) => w.write_all(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            StreamWriter::Stdout(w) => w.flush(),
            StreamWriter::Stderr(w) => w.flush(),
        }
    }
}

impl<'a> MakeWriter<'a> for Stream {
    type Writer = StreamWriter;

    fn make_writer(&'a self) -> Self::Writer {
        match self {
            Stream::Stdout => StreamWriter::Stdout(io::stdout()),
            Stream::Stderr => StreamWriter::Stderr(io::stderr()),
        }
    }
}

/// How a binary logs: [`LogOptions::stdout`] or [`LogOptions::stderr`], optionally through another
/// writer with [`LogOptions::writer`].
#[derive(Debug, Clone)]
pub struct LogOptions<W = Stream> {
    /// The level logged when `RUST_LOG` is unset or cannot be parsed.
    pub default_level: LevelFilter,
    /// Where each line is written: any [`MakeWriter`].
    pub writer: W,
    /// The stream `writer` ends on; colours are used only when it is a terminal.
    pub stream: Stream,
}

impl LogOptions<Stream> {
    /// Lines straight to standard output.
    pub fn stdout(default_level: LevelFilter) -> Self {
        Self {
            default_level,
            writer: Stream::Stdout,
            stream: Stream::Stdout,
        }
    }

    /// Lines straight to standard error.
    pub fn stderr(default_level: LevelFilter) -> Self {
        Self {
            default_level,
            writer: Stream::Stderr,
            stream: Stream::Stderr,
        }
    }
}

impl<W> LogOptions<W> {
    /// Writes through `writer` instead (a batching writer, say), which ends on the same stream.
    pub fn writer<W2>(self, writer: W2) -> LogOptions<W2> {
        LogOptions {
            default_level: self.default_level,
            writer,
            stream: self.stream,
        }
    }
}

/// The filter: `RUST_LOG` when it is set and valid, else `default_level` for everything.
fn filter(default_level: LevelFilter) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::default().add_directive(default_level.into()))
}

/// Installs the global subscriber. Does nothing when one is installed already (tests that start a
/// server in process).
pub fn init<W>(options: LogOptions<W>)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let _ = tracing_subscriber::fmt()
        .with_writer(options.writer)
        .with_ansi(options.stream.is_terminal())
        .with_env_filter(filter(options.default_level))
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

    #[test]
    fn a_custom_writer_keeps_the_stream() {
        let o = LogOptions::stdout(LevelFilter::INFO).writer(io::sink);
        assert_eq!(
            (o.stream, o.default_level),
            (Stream::Stdout, LevelFilter::INFO)
        );
        let o = LogOptions::stderr(LevelFilter::WARN);
        assert_eq!(o.writer, Stream::Stderr);
    }
}
