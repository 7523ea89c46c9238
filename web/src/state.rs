//! Shared application state and the database helper that keeps SQLite off the async threads.

use std::net::IpAddr;
use std::sync::Arc;

use mailserver::db::Pool;
use mailserver::paths::Paths;
use mailserver::store::batch_writer::WriterError;
use mailserver::store::tracking::OpenRecorder;
use tokio::task::JoinHandle;

use crate::auth::Auth;
use crate::error::WebError;
use crate::pixel::{Pixel, PixelLimits};

/// Everything a handler may need. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub paths: Arc<Paths>,
    pub auth: Arc<Auth>,
    /// Where the pixel endpoint records opens, within its bounds.
    pub pixel: Arc<Pixel>,
    /// Peers whose `X-Forwarded-For` is believed (`TRUSTED_PROXIES`).
    pub trusted_proxies: Arc<Vec<IpAddr>>,
}

impl AppState {
    /// The state of a fresh process: no sessions yet, and the pixel-open writer started. The handle
    /// completes once every clone of the state is dropped and every queued open is written; await
    /// it before exiting.
    pub fn start(
        pool: Pool,
        paths: Paths,
        trusted_proxies: Vec<IpAddr>,
    ) -> Result<(Self, JoinHandle<()>), WriterError> {
        Self::start_with(pool, paths, trusted_proxies, PixelLimits::default())
    }

    /// [`start`](Self::start) with other bounds for the pixel (tests use small ones).
    pub fn start_with(
        pool: Pool,
        paths: Paths,
        trusted_proxies: Vec<IpAddr>,
        pixel: PixelLimits,
    ) -> Result<(Self, JoinHandle<()>), WriterError> {
        let (opens, thread) = OpenRecorder::start_with(&pool, pixel.queue_bytes)?;
        let db = Db::new(pool);
        let state = Self {
            pixel: Arc::new(Pixel::new(opens, db.clone(), pixel)),
            db,
            paths: Arc::new(paths),
            auth: Arc::new(Auth::default()),
            trusted_proxies: Arc::new(trusted_proxies),
        };
        Ok((state, tokio::task::spawn_blocking(move || thread.join())))
    }
}

/// The database pool, used only through [`Db::call`].
#[derive(Clone)]
pub struct Db {
    pool: Pool,
}

impl Db {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    /// Runs `f` with a pooled connection on tokio's blocking pool. The connection is taken inside the
    /// closure, so none is ever held across an `.await`.
    pub async fn call<R, F>(&self, f: F) -> Result<R, WebError>
    where
        R: Send + 'static,
        F: FnOnce(&mut rusqlite::Connection) -> Result<R, WebError> + Send + 'static,
    {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = pool.get().map_err(|e| WebError::Internal(e.to_string()))?;
            f(&mut conn)
        })
        .await
        .map_err(|e| WebError::Internal(format!("database task failed: {e}")))?
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}
