//! `mailserver-web`: serves the dashboard and the pixel endpoint over HTTPS with the certificate in
//! `$DATA_DIR/ssl/`, on the address and port from the stored settings (`WEB_PORT`, default 8080),
//! within the connection bounds of [`mailserver_web::serve`], and runs the daily tracking-retention
//! job. Stops cleanly on SIGTERM or SIGINT, after writing every queued pixel open.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Parser;
use mailserver::logging;
use mailserver::paths::Paths;
use mailserver::settings::ListenAddress;
use mailserver_web::AppState;
use mailserver_web::serve::{Limits, WebServer, tls_config};
use tokio::signal::unix::{SignalKind, signal};
use tracing::level_filters::LevelFilter;

#[derive(Parser)]
#[command(
    name = "mailserver-web",
    version,
    about = "The dashboard and the tracking pixel, over HTTPS"
)]
struct Cli {
    /// The data directory (database, TLS certificate in ssl/).
    #[arg(long, env = "DATA_DIR", default_value = mailserver::paths::DEFAULT_DATA_DIR, value_name = "DIR")]
    data: PathBuf,
}

/// `TRUSTED_PROXIES`: comma-separated IP addresses whose `X-Forwarded-For` is believed.
fn trusted_proxies() -> Result<Vec<IpAddr>> {
    std::env::var("TRUSTED_PROXIES")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .with_context(|| format!("TRUSTED_PROXIES: {s:?} is not an IP address"))
        })
        .collect()
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    logging::to_stdout(LevelFilter::INFO);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let paths = Paths::new(cli.data);
    let (pool, settings) = {
        let paths = paths.clone();
        tokio::task::spawn_blocking(move || -> Result<_> {
            let pool = mailserver::db::open_dashboard(&paths, 8)?;
            let settings = mailserver::store::settings::load(&*pool.get()?)?;
            Ok((pool, settings))
        })
        .await??
    };
    let ip = match settings.listen {
        ListenAddress::All => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        ListenAddress::Ip(ip) => IpAddr::V4(ip),
    };
    let addr = SocketAddr::new(ip, settings.ports.web);
    let (cert, key) = (
        std::fs::read(paths.tls_cert()),
        std::fs::read(paths.tls_key()),
    );
    let tls = tls_config(cert?, key?)
        .await
        .context("could not load the TLS certificate from ssl/")?;
    let listener =
        std::net::TcpListener::bind(addr).with_context(|| format!("could not listen on {addr}"))?;

    let (state, writer) = AppState::start(pool, paths, trusted_proxies()?)?;
    let retention = mailserver_web::retention::spawn(state.db.clone(), state.pixel.known_ids());
    let app = mailserver_web::app(state);

    let server = WebServer::new(listener, tls, Limits::default());
    let stopper = server.handle();
    tokio::spawn(async move {
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("shutting down");
        stopper.graceful_shutdown(Some(Duration::from_secs(5)));
    });
    tracing::info!(%addr, "mailserver-web listening (HTTPS)");
    server.serve(app).await.context("the web server failed")?;
    retention.abort();
    // The router (and with it every OpenRecorder) is gone: the writer drains the queue and stops.
    writer.await.context("the pixel writer failed")?;
    tracing::info!("stopped");
    Ok(())
}
