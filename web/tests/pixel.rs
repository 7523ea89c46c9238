//! `/pixel` cannot fill the disk or the memory: the attacks of issue 12 against the whole router,
//! in process, over a real SQLite database. Each test counts rows after a clean shutdown (which
//! drains the writer's queue), so a row that would be written late is counted too.

mod common;

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt as _;
use mailserver::tracking::TrackingId;
use mailserver_web::AppState;
use mailserver_web::pixel::{GIF, PixelCounts, PixelLimits};
use tower::ServiceExt as _;

struct App {
    dir: tempfile::TempDir,
    state: AppState,
    router: axum::Router,
    writer: tokio::task::JoinHandle<()>,
}

const KNOWN: &str = "VQx3An5C4mtsOVsTUQiGHQ";

fn app(limits: PixelLimits) -> App {
    let (dir, paths, pool) = common::fresh_data_dir("pixel");
    {
        let conn = pool.get().unwrap();
        conn.execute(
            "INSERT INTO tracked_messages (tracking_id, sender, recipients) VALUES (?1, 's@x.test', 'r@y.test')",
            [KNOWN],
        )
        .unwrap();
    }
    let (state, writer) = AppState::start_with(pool, paths, vec![], limits).unwrap();
    let router = mailserver_web::app(state.clone());
    App {
        dir,
        state,
        router,
        writer,
    }
}

impl App {
    /// GET /pixel?id=ID from `peer` with `user_agent`; checks the answer is the GIF.
    async fn hit(&self, id: &str, peer: SocketAddr, user_agent: &str) {
        let mut req = Request::get(format!("/pixel?id={id}"))
            .header(header::USER_AGENT, user_agent)
            .body(Body::empty())
            .unwrap();
        req.extensions_mut().insert(ConnectInfo(peer));
        let resp = self.router.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "image/gif");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], &GIF[..]);
    }

    /// Shuts down as the binary does (the queue drained), then counts the rows. The counts are
    /// read once no lookup is running (what the pixel decides after that is final).
    async fn shut_down(self) -> (PixelCounts, i64) {
        while self.state.pixel.lookups_running() > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let counts = self.state.pixel.counts();
        let Self {
            dir,
            state,
            router,
            writer,
        } = self;
        let pool = state.db.pool().clone();
        drop((router, state));
        writer.await.unwrap();
        let rows = pool
            .get()
            .unwrap()
            .query_row("SELECT count(*) FROM pixel_opens", [], |r| r.get(0))
            .unwrap();
        drop(dir);
        (counts, rows)
    }
}

fn peer(i: u32) -> SocketAddr {
    SocketAddr::new(
        std::net::Ipv4Addr::from(0xC000_0200u32 + (i % 250) + ((i / 250) << 8)).into(),
        40000,
    )
}

/// 2,000 fetches of one real id by one client (address and User-Agent): one row.
#[tokio::test]
async fn repeated_fetches_by_one_client_are_one_open() {
    let app = app(PixelLimits::default());
    // The first fetch of an id looks it up (on its own task); all at once, then after that.
    for _ in 0..1000 {
        app.hit(KNOWN, peer(1), "Mozilla/5.0 (same)").await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    for _ in 0..1000 {
        app.hit(KNOWN, peer(1), "Mozilla/5.0 (same)").await;
    }
    let (counts, rows) = app.shut_down().await;
    assert_eq!(rows, 1, "{counts:?}");
    assert_eq!(counts.queued, 1, "{counts:?}");
    assert!(counts.repeated >= 1000, "{counts:?}");
}

/// 2,000 fetches of one real id from 2,000 addresses: 1,000 rows, the cap per message.
#[tokio::test]
async fn a_message_gets_at_most_1000_opens() {
    let app = app(PixelLimits::default());
    app.hit(KNOWN, peer(0), "UA").await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await; // the id is looked up
    for i in 1..2000 {
        app.hit(KNOWN, peer(i), "UA").await;
    }
    let (counts, rows) = app.shut_down().await;
    assert_eq!(rows, 1000, "{counts:?}");
    assert_eq!(counts.queued, 1000, "{counts:?}");
    assert_eq!(counts.over_cap, 1000, "{counts:?}");
}

/// Ids in the right format that do not exist: nothing is queued and no row written, whether one id
/// is fetched again and again or every fetch has a new one; the id cache stays within its bound.
#[tokio::test]
async fn unknown_ids_are_never_queued() {
    let limits = PixelLimits {
        cached_ids: 500,
        ..PixelLimits::default()
    };
    let app = app(limits);
    let unknown = TrackingId::generate();
    for i in 0..2000 {
        app.hit(unknown.as_str(), peer(i), "UA").await;
        app.hit(TrackingId::generate().as_str(), peer(i), "UA")
            .await;
        if i % 100 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let (known, cached_unknown) = app.state.pixel.known_ids().len();
    assert!(known == 0 && cached_unknown <= 500, "{cached_unknown}");
    let (counts, rows) = app.shut_down().await;
    assert_eq!(rows, 0);
    assert_eq!(counts.queued, 0, "{counts:?}");
    // Every fetch was either answered from the cache or its lookup found nothing, or (beyond the
    // lookups allowed at once) it was dropped without a lookup.
    assert_eq!(
        counts.unknown + counts.dropped_lookups_busy,
        4000,
        "{counts:?}"
    );
}

/// A full queue (the writer stalled behind another connection's write lock): opens are dropped and
/// counted, every answer is still the GIF, and what was queued is written once the lock is gone.
#[tokio::test]
async fn a_full_queue_drops_opens_and_still_answers() {
    let limits = PixelLimits {
        queue_bytes: 2000,
        ..PixelLimits::default()
    };
    let app = app(limits);
    app.hit(KNOWN, peer(0), "UA").await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let blocker = app.state.db.pool().get().unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let started = std::time::Instant::now();
    for i in 1..300 {
        app.hit(KNOWN, peer(i), "UA").await;
    }
    // The answers did not wait for the database.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let counts = app.state.pixel.counts();
    assert!(counts.dropped_queue_full > 250, "{counts:?}");
    assert_eq!(counts.queued + counts.dropped_queue_full, 300, "{counts:?}");
    blocker.execute_batch("ROLLBACK").unwrap();
    drop(blocker);
    let (counts, rows) = app.shut_down().await;
    assert_eq!(rows as u64, counts.queued, "{counts:?}");
}
