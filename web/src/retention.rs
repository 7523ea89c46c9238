//! The daily retention job: tracked messages and opens older than `TRACKING_RETENTION_DAYS` are
//! deleted by the dashboard process, shortly after it starts and then every 24 hours.
//!
//! Why the dashboard: it is the one long-running process that owns the tracking tables' readers,
//! and it runs as the user that writes pixel opens, so no extra service or privilege is needed. The
//! deletes themselves are the library's ([`retention::purge`]), in short transactions on a blocking
//! thread, so neither the pixel writer nor the milter waits long for the write lock.

use std::sync::Arc;
use std::time::Duration;

use mailserver::store::tracking::retention;
use tokio::task::JoinHandle;

use crate::pixel::known_ids::KnownIds;
use crate::state::Db;

/// The first run, after the start (the process is busy starting before that).
pub const FIRST_RUN: Duration = Duration::from_secs(10);
/// Between two runs.
pub const EVERY: Duration = Duration::from_secs(24 * 3600);

/// Starts the job; it runs until the task is aborted. `known` is the pixel's id cache, emptied
/// after messages were deleted so their ids stop counting as known at once. Each run reads the
/// retention period as it is stored then.
pub fn spawn(db: Db, known: Arc<KnownIds>) -> JoinHandle<()> {
    tokio::spawn(async move {
        tokio::time::sleep(FIRST_RUN).await;
        let mut every = tokio::time::interval(EVERY);
        loop {
            every.tick().await;
            run_once(&db, &known).await;
        }
    })
}

/// One run: deletes, logs what went, clears the cache.
pub async fn run_once(db: &Db, known: &KnownIds) {
    let result = db
        .call(|conn| {
            Ok(retention::purge_as_configured(
                conn,
                retention::Chunks::default(),
            )?)
        })
        .await;
    match result {
        Ok((keep, purged)) => {
            if purged.messages > 0 {
                known.clear();
            }
            tracing::info!(
                messages = purged.messages,
                opens = purged.opens,
                days = keep.days(),
                "tracking retention: deleted what is older than the retention period"
            );
        }
        Err(e) => tracing::error!(error = %e, "tracking retention: deleting old rows failed"),
    }
}
