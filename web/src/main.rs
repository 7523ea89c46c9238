//! `mailserver-web`: serves the dashboard and the pixel endpoint over HTTPS with the certificate in
//! `$DATA_DIR/ssl/`, on the address and port from the stored settings (`WEB_PORT`, default 8080).
//! Stops cleanly on SIGTERM or SIGINT, after writing every queued pixel open.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use axum_server::tls_rustls::RustlsConfig;
use clap::Parser;
use mailserver::logging;
use mailserver::paths::Paths;
use mailserver::settings::ListenAddress;
use mailserver_web::AppState;
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
    let tls = RustlsConfig::from_pem_file(paths.tls_cert(), paths.tls_key())
        .await
        .context("could not load the TLS certificate from ssl/")?;

    let (state, writer) = AppState::start(pool, paths, trusted_proxies()?)?;
    let app = mailserver_web::app(state);

    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
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
    axum_server::bind_rustls(addr, tls)
        .handle(handle)
        .serve(app.into_make_service_with_connect_info::<SocketAddr>())
        .await
        .context("the web server failed")?;
    // The router (and with it every OpenRecorder) is gone: the writer drains the queue and stops.
    writer.await.context("the pixel writer failed")?;
    tracing::info!("stopped");
    Ok(())
}
