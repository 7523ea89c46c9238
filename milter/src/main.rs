//! `mailserver-milter`: the tracking milter on Postfix's `smtpd_milters`, ahead of OpenDKIM.
//!
//! This is the daemon's skeleton: it listens on a unix socket (default `$DATA_DIR/run/milter/milter.sock`,
//! the path the rendered main.cf names), accepts every message unchanged, logs with tracing, and stops
//! cleanly on SIGTERM or SIGINT. The tracking rewrite lands with its own issue.

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use indymilter::{Callbacks, Config, Status};
use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};

struct Args {
    data: PathBuf,
    socket: Option<PathBuf>,
}

fn parse_args() -> Result<Args> {
    let mut data =
        std::env::var_os("DATA_DIR").map_or_else(|| PathBuf::from("/data"), PathBuf::from);
    let mut socket = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--data" => data = PathBuf::from(args.next().context("--data needs a directory")?),
            "--socket" => {
                socket = Some(PathBuf::from(args.next().context("--socket needs a path")?))
            }
            "-h" | "--help" => {
                println!("usage: mailserver-milter [--data DIR] [--socket PATH]");
                std::process::exit(0);
            }
            other => anyhow::bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(Args { data, socket })
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = parse_args()?;
    let socket = args.socket.unwrap_or_else(|| {
        mailserver::settings::Paths::new(&args.data)
            .run_dir()
            .join("milter/milter.sock")
    });
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("could not create {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket)
        .with_context(|| format!("could not bind {}", socket.display()))?;
    // Postfix connects as its own unprivileged user.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666))
        .with_context(|| format!("could not chmod {}", socket.display()))?;
    tracing::info!(socket = %socket.display(), "mailserver-milter listening");

    let callbacks: Callbacks<()> =
        Callbacks::new().on_connect(|_, _, _| Box::pin(async { Status::Accept }));
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("shutting down");
    };
    indymilter::run(listener, callbacks, Config::default(), shutdown)
        .await
        .context("milter failed")?;
    let _ = std::fs::remove_file(&socket);
    tracing::info!("stopped");
    Ok(())
}
