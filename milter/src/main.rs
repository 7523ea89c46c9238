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
use clap::{Parser, Subcommand};
use mailserver::logging;
use mailserver::paths::Paths;
use mailserver::tracking::{BaseUrl, TrackingId, pixel_url};
use mailserver_milter::listener::{Buffered, ListenAddr, LowLatencyTcpListener};
use mailserver_milter::log::BatchedLines;
use mailserver_milter::rewrite::{self, Outcome};
use mailserver_milter::session::{self, Limits};
use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{SignalKind, signal};
use tracing::level_filters::LevelFilter;

#[derive(Parser)]
#[command(
    name = "mailserver-milter",
    version,
    about = "The tracking milter: adds an open-tracking pixel to mail sent through tracked aliases"
)]
struct Cli {
    /// The data directory (its database says which aliases are tracked).
    #[arg(long, env = "DATA_DIR", default_value = mailserver::paths::DEFAULT_DATA_DIR, value_name = "DIR")]
    data: PathBuf,
    /// Where to listen [default: DIR/run/milter/milter.sock, the socket the rendered main.cf names].
    #[arg(long, value_name = "unix:PATH|inet:HOST:PORT")]
    socket: Option<ListenAddr>,
    /// Bodies larger than this pass through untracked [default: 25 MiB].
    #[arg(long, env = "MILTER_MAX_BODY", value_name = "BYTES")]
    max_body: Option<usize>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Rewrite one message, standard input to standard output, as the milter would (no database,
    /// no policy): `inject --base-url URL < in.eml > out.eml`.
    Inject {
        /// Where the pixel is served from: http(s)://host[:port][/path].
        #[arg(long, value_parser = BaseUrl::parse)]
        base_url: BaseUrl,
        /// The tracking id in the pixel's URL [default: a new random one].
        #[arg(long)]
        id: Option<TrackingId>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Inject { base_url, id }) = cli.command {
        return inject(&base_url, &id.unwrap_or_else(TrackingId::generate));
    }
    let mut limits = Limits::default();
    if let Some(max_body) = cli.max_body {
        limits.max_body = max_body;
    }
    let log = BatchedLines::start(std::io::stdout());
    logging::to_stdout_through(LevelFilter::INFO, log.clone());
    let paths = Paths::new(cli.data);
    let socket = cli
        .socket
        .unwrap_or_else(|| ListenAddr::Unix(paths.milter_socket()));
    // One thread for all milter connections: they wait on sockets, and the lookups and the rewrite
    // of ordinary messages take microseconds (session.rs says which work goes to the blocking pool).
    // Measured in scripts/bench-milter.sh, one thread cost less CPU per message than one per core
    // (fewer cross-thread wake-ups).
    let served = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve(socket, paths.tracking_db(), limits));
    log.flush();
    served
}

/// Serves on `addr` with the tracking database at `tracking_db`, the only database the milter opens.
async fn serve(addr: ListenAddr, tracking_db: PathBuf, limits: Limits) -> Result<()> {
    let milter = session::Milter::new(tracking_db, limits);
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
            // Owner and group only: whoever can connect can claim `{auth_authen}`. Postfix connects
            // through its group: `init` makes the socket's directory setgid `postfix` (0750), so
            // the socket is created in that group. Elsewhere, give the socket's group to Postfix.
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
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

fn inject(base: &BaseUrl, id: &TrackingId) -> Result<()> {
    let pixel = pixel_url(base, id);
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
