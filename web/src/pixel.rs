//! `GET /pixel?id=ID`: the tracking pixel. Public (no login), always the same 43-byte transparent GIF
//! with `no-store`, whatever the id, so the response tells a prober nothing.
//!
//! Opens are queued and written in batches by one task, so a response never waits on SQLite's write
//! lock. Rows are only inserted for ids that exist (the INSERT checks). On a clean shutdown the queue
//! is drained before the process exits, so no open is lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::client_ip::{client_ip, peer_ip};
use crate::state::{AppState, Db};

/// A 1x1 transparent GIF.
pub const GIF: [u8; 43] = [
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// How many opens may wait for the writer; beyond that they are counted and dropped (logged). The
/// writer keeps up with tens of thousands of opens per second, so this only absorbs bursts.
const QUEUE: usize = 1 << 20;
/// Opens written per transaction, at most.
const BATCH: usize = 8192;
/// The writer's own page cache: the pixel_opens index is written all over, so a small cache would
/// re-read and re-write the same pages for every batch.
const WRITER_CACHE_KIB: i64 = 64 * 1024;

#[derive(Debug, Clone)]
pub struct Open {
    pub id: String,
    pub ip: String,
    pub user_agent: String,
    pub unix_time: i64,
}

/// The sending side of the open queue.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Open>,
    dropped: Arc<AtomicU64>,
}

impl Recorder {
    /// Starts the writer: one thread with one connection of its own for its whole life. It ends,
    /// after writing everything queued, once every `Recorder` clone is dropped; await the handle to
    /// be sure.
    pub fn start(db: Db) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let handle = tokio::task::spawn_blocking(move || writer(&db, rx));
        (
            Self {
                tx,
                dropped: Arc::new(AtomicU64::new(0)),
            },
            handle,
        )
    }

    pub fn record(&self, open: Open) {
        if self.tx.try_send(open).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(dropped = n, "pixel open queue full; opens dropped");
            }
        }
    }
}

fn write_batch(conn: &mut rusqlite::Connection, opens: &[Open]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO pixel_opens (message_id, client_ip, user_agent, opened_at)
             SELECT ?1, ?2, ?3, datetime(?4, 'unixepoch')
             WHERE EXISTS (SELECT 1 FROM tracked_messages WHERE message_id = ?1)",
        )?;
        for o in opens {
            insert.execute((&o.id, &o.ip, &o.user_agent, o.unix_time))?;
        }
    }
    tx.commit()
}

fn writer(db: &Db, mut rx: mpsc::Receiver<Open>) {
    let mut conn = match db.pool().get() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "the pixel open writer has no database connection");
            return;
        }
    };
    if let Err(e) = conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB) {
        tracing::warn!(error = %e, "could not enlarge the writer's page cache");
    }
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(o) => batch.push(o),
                Err(_) => break,
            }
        }
        // A failed batch (database locked for longer than the busy timeout...) is retried a few
        // times before its opens are given up, logged.
        let mut tries = 0;
        while let Err(e) = write_batch(&mut conn, &batch) {
            tries += 1;
            if tries == 5 {
                tracing::error!(error = %e, opens = batch.len(), "could not record pixel opens");
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(200 * tries));
        }
        batch.clear();
    }
    tracing::info!("pixel open writer stopped");
}

fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub async fn pixel(State(state): State<AppState>, req: Request) -> Response {
    let id = req.uri().query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "id")
            .map(|(_, v)| v.into_owned())
    });
    if let Some(id) = id.filter(|id| valid_id(id)) {
        let ip = client_ip(req.headers(), peer_ip(&req), &state.trusted_proxies)
            .map(|ip| ip.to_string())
            .unwrap_or_default();
        let user_agent: String = req
            .headers()
            .get(header::USER_AGENT)
            .map(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .chars()
                    .take(512)
                    .collect()
            })
            .unwrap_or_default();
        let unix_time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        state.pixel.record(Open {
            id,
            ip,
            user_agent,
            unix_time,
        });
    }
    (
        [
            (header::CONTENT_TYPE, "image/gif"),
            (
                header::CACHE_CONTROL,
                "no-store, no-cache, must-revalidate, max-age=0",
            ),
            (header::PRAGMA, "no-cache"),
            (header::EXPIRES, "0"),
        ],
        GIF,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gif_is_43_bytes() {
        assert_eq!(GIF.len(), 43);
        assert_eq!(&GIF[..6], b"GIF89a");
    }

    #[test]
    fn ids() {
        assert!(valid_id("VQx3An5C4mtsOVsTUQiGHQ"));
        assert!(!valid_id(""));
        assert!(!valid_id("a b"));
        assert!(!valid_id(&"a".repeat(65)));
        assert!(!valid_id("x';--"));
    }
}
