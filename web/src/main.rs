//! `mailserver-web`: serves the dashboard and the pixel endpoint over HTTPS with the certificate in
//! `$DATA_DIR/ssl/`, on the address and port from the stored settings (`WEB_PORT`, default 8080).
//! Stops cleanly on SIGTERM or SIGINT, after writing every queued pixel open.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use axum_server::tls_rustls::RustlsConfig;
use mailserver::settings::{ListenAddress, Paths, Settings};
use mailserver_web::{AppState, Db, auth::Auth, pixel};
use tokio::signal::unix::{SignalKind, signal};

fn data_dir() -> Result<PathBuf> {
    let mut data =
        std::env::var_os("DATA_DIR").map_or_else(|| PathBuf::from("/data"), PathBuf::from);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--data" => data = PathBuf::from(args.next().context("--data needs a directory")?),
            "-h" | "--help" => {
                println!("usage: mailserver-web [--data DIR]");
                std::process::exit(0);
            }
            other => anyhow::bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(data)
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
    tracing_subscriber::fmt()
        // Colours only on a terminal: supervisord keeps this output in plain log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let paths = Paths::new(data_dir()?);
    let (pool, settings) = {
        let paths = paths.clone();
        tokio::task::spawn_blocking(move || -> Result<_> {
            let pool = mailserver::db::open(&paths.db(), 8)?;
            let settings = Settings::load(&*pool.get()?)?;
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

    let (opens, writer) = pixel::start_recorder(&pool)?;
    let db = Db::new(pool);
    let state = AppState {
        db,
        paths: Arc::new(paths),
        auth: Arc::new(Auth::default()),
        opens,
        trusted_proxies: Arc::new(trusted_proxies()?),
    };
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
