//! `mailserver-milter`: the tracking milter daemon, and `inject` for offline rewriting.
//!
//! ```text
//! mailserver-milter [--data DIR] [--socket unix:PATH|inet:HOST:PORT] [--max-body BYTES]
//! mailserver-milter inject --base-url URL [--id ID] < in.eml > out.eml
//! ```
//! The daemon listens on `$DATA_DIR/run/milter/milter.sock` by default (the path the rendered main.cf
//! names) and stops cleanly on SIGTERM or SIGINT. `inject` runs the same rewrite with no database and
//! no policy; with nothing to do it writes the input unchanged and exits 0.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use mailserver::tracking::{BaseUrl, TrackingId, pixel_url};
use mailserver_milter::listener::{Buffered, ListenAddr, LowLatencyTcpListener};
use mailserver_milter::log::BatchedLines;
use mailserver_milter::rewrite::{self, Outcome};
use mailserver_milter::session::{self, Limits};
use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{SignalKind, signal};

const USAGE: &str = "usage:
  mailserver-milter [--data DIR] [--socket unix:PATH|inet:HOST:PORT] [--max-body BYTES]
  mailserver-milter inject --base-url URL [--id ID] < in.eml > out.eml";

fn value(args: &mut impl Iterator<Item = String>, flag: &str) -> Result<String> {
    args.next()
        .with_context(|| format!("{flag} needs a value\n{USAGE}"))
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("inject") {
        args.next();
        return inject(args);
    }
    let mut data =
        std::env::var_os("DATA_DIR").map_or_else(|| PathBuf::from("/data"), PathBuf::from);
    let mut socket = None;
    let mut limits = Limits::default();
    if let Ok(v) = std::env::var("MILTER_MAX_BODY") {
        limits.max_body = v
            .parse()
            .context("MILTER_MAX_BODY must be a number of bytes")?;
    }
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--data" => data = PathBuf::from(value(&mut args, "--data")?),
            "--socket" => {
                socket = Some(
                    value(&mut args, "--socket")?
                        .parse::<ListenAddr>()
                        .map_err(anyhow::Error::msg)?,
                )
            }
            "--max-body" => {
                limits.max_body = value(&mut args, "--max-body")?
                    .parse()
                    .context("--max-body")?
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let log = BatchedLines::start(std::io::stdout());
    tracing_subscriber::fmt()
        .with_writer(log.clone())
        // Colours only on a terminal: supervisord keeps this output in plain log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let paths = mailserver::settings::Paths::new(&data);
    let socket =
        socket.unwrap_or_else(|| ListenAddr::Unix(paths.run_dir().join("milter/milter.sock")));
    // One thread for all milter connections: they wait on sockets, and the lookups and the rewrite
    // of ordinary messages take microseconds (session.rs says which work goes to the blocking pool).
    // Measured in scripts/bench-milter.sh, one thread cost less CPU per message than one per core
    // (fewer cross-thread wake-ups).
    let served = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve(socket, paths.db(), limits));
    log.flush();
    served
}

async fn serve(addr: ListenAddr, db: PathBuf, limits: Limits) -> Result<()> {
    let milter = session::Milter::new(db, limits);
    let callbacks = session::callbacks(milter);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("shutting down");
    };
    match &addr {
        ListenAddr::Unix(path) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("could not create {}", dir.display()))?;
            }
            let _ = std::fs::remove_file(path);
            let listener = UnixListener::bind(path)
                .with_context(|| format!("could not bind {}", path.display()))?;
            // Postfix connects as its own unprivileged user.
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
                .with_context(|| format!("could not chmod {}", path.display()))?;
            tracing::info!(socket = %path.display(), "mailserver-milter listening");
            indymilter::run(Buffered(listener), callbacks, session::config(), shutdown).await?;
            let _ = std::fs::remove_file(path);
        }
        ListenAddr::Inet(sa) => {
            let listener = TcpListener::bind(sa)
                .await
                .with_context(|| format!("could not bind {sa}"))?;
            tracing::info!(address = %sa, "mailserver-milter listening (TCP_NODELAY, TCP_QUICKACK)");
            indymilter::run(
                Buffered(LowLatencyTcpListener(listener)),
                callbacks,
                session::config(),
                shutdown,
            )
            .await?;
        }
    }
    tracing::info!("stopped");
    Ok(())
}

fn inject(mut args: impl Iterator<Item = String>) -> Result<()> {
    let mut base = None;
    let mut id = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--base-url" => base = Some(value(&mut args, "--base-url")?),
            "--id" => id = Some(value(&mut args, "--id")?),
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let base = base.with_context(|| format!("inject needs --base-url\n{USAGE}"))?;
    let id = match id {
        Some(id) => TrackingId::parse(&id).context("--id")?,
        None => TrackingId::generate(),
    };
    let pixel = pixel_url(&BaseUrl::parse(&base).context("--base-url")?, &id);
    let mut input = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut input)
        .context("could not read standard input")?;
    let result = rewrite::inject_message(&input, &pixel);
    let mut out = std::io::stdout().lock();
    match result {
        Ok(Outcome::Rewritten(output)) => out.write_all(&output)?,
        Ok(Outcome::Unchanged(why)) => {
            eprintln!("mailserver-milter inject: left unchanged: {why:?}");
            out.write_all(&input)?;
        }
        Err(e) => {
            out.write_all(&input)?;
            out.flush()?;
            bail!("left unchanged: {e}");
        }
    }
    out.flush()?;
    Ok(())
}
