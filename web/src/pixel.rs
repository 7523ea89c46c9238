//! `GET /pixel?id=ID`: the tracking pixel. Public (no login), always the same 43-byte transparent GIF
//! with `no-store`, whatever the id and whatever happens to the recording, so the response tells a
//! prober nothing and never waits for the database.
//!
//! The endpoint is open to the whole internet, so what a request may cost is bounded ([`Pixel`]):
//! - an open is queued only for an id that exists ([`known_ids`]: a bounded cache in front of the
//!   database; a miss is looked up off the response path, at most [`PixelLimits::lookups`] at once,
//!   and beyond that the recording is dropped);
//! - at most one open per (id, client address, User-Agent) per hour ([`recent`]);
//! - at most [`MAX_OPENS_PER_MESSAGE`](tracking::MAX_OPENS_PER_MESSAGE) opens per message (counted here, enforced by the INSERT);
//! - the queue to the writer thread holds at most [`PixelLimits::queue_bytes`]; when it is full the
//!   open is dropped.
//!
//! Every drop is counted ([`PixelCounts`]) and logged, one line per kind at most every 10 s. On a
//! clean shutdown the queue is drained before the process exits, so no queued open is lost.

pub mod known_ids;
pub mod recent;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use mailserver::store::batch_writer::DropCount;
use mailserver::store::tracking::{self, Open, OpenRecorder};
use mailserver::tracking::TrackingId;
use tokio::sync::Semaphore;

use self::known_ids::{Known, KnownIds};
use self::recent::{RecentOpens, Seen};
use crate::client_ip::{client_ip, peer_ip};
use crate::state::{AppState, Db};

/// A 1x1 transparent GIF.
pub const GIF: [u8; 43] = [
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// The longest User-Agent stored, in bytes (cut at a character boundary when it is UTF-8).
const MAX_USER_AGENT: usize = 512;

/// At most `max` bytes of `bytes`, not cutting a UTF-8 character in two.
fn truncate_utf8(bytes: &[u8], max: usize) -> &[u8] {
    if bytes.len() <= max {
        return bytes;
    }
    let mut end = max;
    // Back up over continuation bytes (10xxxxxx) to the start of the character cut in two.
    while end > 0 && bytes[end] & 0xC0 == 0x80 {
        end -= 1;
    }
    &bytes[..end]
}

/// The bounds of the pixel's recording.
#[derive(Debug, Clone, Copy)]
pub struct PixelLimits {
    /// Bytes of opens waiting for the writer thread.
    pub queue_bytes: usize,
    /// (id, client, User-Agent) triples remembered for the hourly de-duplication.
    pub recent_triples: usize,
    /// Known ids cached, and as many unknown ones.
    pub cached_ids: usize,
    /// Database lookups of uncached ids running at once.
    pub lookups: usize,
}

impl Default for PixelLimits {
    fn default() -> Self {
        Self {
            queue_bytes: OpenRecorder::QUEUE_BYTES,
            // Some 10 bytes each: ~3 MiB.
            recent_triples: 1 << 18,
            // Some 30 bytes each: ~3 MiB per side.
            cached_ids: 100_000,
            lookups: 16,
        }
    }
}

/// What happened to pixel fetches with a well-formed id, since the start.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PixelCounts {
    /// Opens handed to the writer.
    pub queued: u64,
    /// Ids that do not exist (nothing queued).
    pub unknown: u64,
    /// Repeats of a triple recorded within the hour (nothing queued).
    pub repeated: u64,
    /// Opens of messages that have all the opens they may have (nothing queued).
    pub over_cap: u64,
    /// Dropped: the queue to the writer was full.
    pub dropped_queue_full: u64,
    /// Dropped: the de-duplication set was full.
    pub dropped_recent_full: u64,
    /// Dropped: too many database lookups were running.
    pub dropped_lookups_busy: u64,
}

/// One fetch of the pixel with a well-formed id, as the request has it (borrowed).
pub struct Fetch<'a> {
    pub tracking_id: &'a TrackingId,
    pub client: Option<IpAddr>,
    /// The User-Agent header's bytes, at most [`MAX_USER_AGENT`] of them.
    pub user_agent: &'a [u8],
    /// Seconds since the Unix epoch.
    pub unix_time: i64,
}

impl Fetch<'_> {
    fn to_open(&self) -> Open {
        Open {
            tracking_id: self.tracking_id.clone(),
            client_ip: self.client.map(|ip| ip.to_string()).unwrap_or_default(),
            user_agent: String::from_utf8_lossy(self.user_agent).into_owned(),
            unix_time: self.unix_time,
        }
    }
}

/// The pixel's recording: the caches, the limits and the writer's queue. One per process.
pub struct Pixel {
    opens: OpenRecorder,
    db: Db,
    /// Shared with the retention task, which clears it after deleting messages.
    known: Arc<KnownIds>,
    recent: RecentOpens,
    lookups: Arc<Semaphore>,
    lookup_limit: usize,
    queued: AtomicU64,
    unknown: AtomicU64,
    repeated: AtomicU64,
    over_cap: AtomicU64,
    recent_full: DropCount,
    lookups_busy: DropCount,
}

/// Where an open stands after the checks that need no database.
enum Next {
    Record,
    Lookup,
    Done,
}

impl Pixel {
    pub fn new(opens: OpenRecorder, db: Db, limits: PixelLimits) -> Self {
        Self {
            opens,
            db,
            known: Arc::new(KnownIds::new(limits.cached_ids)),
            recent: RecentOpens::new(limits.recent_triples),
            lookups: Arc::new(Semaphore::new(limits.lookups)),
            lookup_limit: limits.lookups,
            queued: AtomicU64::new(0),
            unknown: AtomicU64::new(0),
            repeated: AtomicU64::new(0),
            over_cap: AtomicU64::new(0),
            recent_full: DropCount::new(
                "pixel",
                "opens not recorded: the de-duplication set is full",
            ),
            lookups_busy: DropCount::new(
                "pixel",
                "opens not recorded: too many id lookups running",
            ),
        }
    }

    /// The known-id cache, for the retention task to clear.
    pub fn known_ids(&self) -> Arc<KnownIds> {
        Arc::clone(&self.known)
    }

    /// Database lookups running now.
    pub fn lookups_running(&self) -> usize {
        self.lookup_limit - self.lookups.available_permits()
    }

    pub fn counts(&self) -> PixelCounts {
        PixelCounts {
            queued: self.queued.load(Ordering::Relaxed),
            unknown: self.unknown.load(Ordering::Relaxed),
            repeated: self.repeated.load(Ordering::Relaxed),
            over_cap: self.over_cap.load(Ordering::Relaxed),
            dropped_queue_full: self.opens.dropped(),
            dropped_recent_full: self.recent_full.total(),
            dropped_lookups_busy: self.lookups_busy.total(),
        }
    }

    /// Records the open `fetch` describes if it passes every bound; never waits (a database
    /// lookup, when needed, runs on its own task). Nothing is allocated for a fetch that is not
    /// recorded.
    pub fn record(self: &Arc<Self>, fetch: &Fetch<'_>) {
        match self.check(fetch) {
            Next::Record => self.queue(fetch.to_open()),
            Next::Done => {}
            Next::Lookup => {
                let Ok(permit) = Arc::clone(&self.lookups).try_acquire_owned() else {
                    self.lookups_busy.add();
                    return;
                };
                let this = Arc::clone(self);
                let open = fetch.to_open();
                tokio::spawn(async move {
                    let id = open.tracking_id.clone();
                    let stored = this
                        .db
                        .call(move |conn| Ok(tracking::stored_opens(conn, &id)?))
                        .await;
                    match stored {
                        Ok(stored) => {
                            this.known.insert(open.tracking_id.as_str(), stored);
                            let fetch = Fetch {
                                tracking_id: &open.tracking_id,
                                client: open.client_ip.parse().ok(),
                                user_agent: open.user_agent.as_bytes(),
                                unix_time: open.unix_time,
                            };
                            if let Next::Record = this.check(&fetch) {
                                this.queue(open);
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "pixel: looking up an id failed"),
                    }
                    drop(permit);
                });
            }
        }
    }

    fn check(&self, fetch: &Fetch<'_>) -> Next {
        let id = fetch.tracking_id.as_str();
        match self.known.get(id) {
            Known::Ask => return Next::Lookup,
            Known::Unknown => {
                self.unknown.fetch_add(1, Ordering::Relaxed);
                return Next::Done;
            }
            Known::AtCap => {
                self.over_cap.fetch_add(1, Ordering::Relaxed);
                return Next::Done;
            }
            Known::UnderCap => {}
        }
        let client = match fetch.client {
            Some(IpAddr::V4(ip)) => ip.to_ipv6_mapped().octets(),
            Some(IpAddr::V6(ip)) => ip.octets(),
            None => [0; 16],
        };
        match self
            .recent
            .first_time(id.as_bytes(), &client, fetch.user_agent)
        {
            Seen::Again => {
                self.repeated.fetch_add(1, Ordering::Relaxed);
                Next::Done
            }
            Seen::Full => {
                self.recent_full.add();
                Next::Done
            }
            Seen::First if self.known.count_open(id) => Next::Record,
            Seen::First => {
                self.over_cap.fetch_add(1, Ordering::Relaxed);
                Next::Done
            }
        }
    }

    fn queue(&self, open: Open) {
        if self.opens.record(open) {
            self.queued.fetch_add(1, Ordering::Relaxed);
        }
    }
}

pub async fn pixel(State(state): State<AppState>, req: Request) -> Response {
    let id = req.uri().query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "id")
            .map(|(_, v)| v)
    });
    if let Some(tracking_id) = id.and_then(|id| TrackingId::parse(&id).ok()) {
        let user_agent = req
            .headers()
            .get(header::USER_AGENT)
            .map_or(&b""[..], |v| truncate_utf8(v.as_bytes(), MAX_USER_AGENT));
        let unix_time = mailserver::store::unix_now();
        state.pixel.record(&Fetch {
            tracking_id: &tracking_id,
            client: client_ip(req.headers(), peer_ip(&req), &state.trusted_proxies),
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
    fn user_agents_are_cut_at_a_character_boundary() {
        assert_eq!(truncate_utf8(b"short", 512), b"short");
        let long = "é".repeat(300); // 600 bytes
        let cut = truncate_utf8(long.as_bytes(), 512);
        assert_eq!(cut.len(), 512);
        assert!(std::str::from_utf8(cut).is_ok());
        let odd = format!("a{long}");
        let cut = truncate_utf8(odd.as_bytes(), 512);
        assert_eq!(cut.len(), 511);
        assert!(std::str::from_utf8(cut).is_ok());
    }

    #[test]
    fn gif_is_43_bytes() {
        assert_eq!(GIF.len(), 43);
        assert_eq!(&GIF[..6], b"GIF89a");
    }
}
