//! Which mail is tracked, and where tracked messages are recorded: the milter's handle on the
//! library's [`store::tracking`](mailserver::store::tracking).
//!
//! The milter opens tracking.db only (see [`mailserver::db`]): the tracked aliases and the pixel
//! base URL are rendered there by root's apply from the main database, which the milter's user
//! cannot read.
//!
//! Reads ([`Policy::tracked_alias`], [`Policy::pixel_base_url`]) are short indexed queries on a WAL
//! database, where readers never wait for writers; the milter runs them on its runtime thread.
//! Rows are written by the library's [`MessageRecorder`] thread, and callers await their commit
//! without holding a thread. Any error means "do not track": the message passes through unchanged.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mailserver::db::{self, DbError, Pool};
use mailserver::names::Address;
use mailserver::store::StoreError;
use mailserver::store::batch_writer::WriterError;
use mailserver::store::tracking::{self, MessageRecorder, RecordError, TrackedAliasId};
use mailserver::tracking::{BaseUrl, TrackingId};
use thiserror::Error;
use tokio::sync::oneshot;

pub use mailserver::store::tracking::TrackedMessage;

#[derive(Debug, Error)]
pub enum PolicyError {
    #[error(transparent)]
    Open(#[from] DbError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Writer(#[from] WriterError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(
        "no pixel base URL in tracking.db yet (has `mailserver init` applied the configuration?)"
    )]
    NotApplied,
}

/// How long the pixel base URL read from tracking.db is reused before it is read again.
const SETTINGS_TTL: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Policy {
    pool: Pool,
    base_url: Arc<Mutex<Option<(BaseUrl, Instant)>>>,
    recorder: MessageRecorder,
}

impl Policy {
    /// Opens (and migrates) tracking.db at `tracking_db` and starts the recorder thread.
    pub fn open(tracking_db: &Path) -> Result<Self, PolicyError> {
        let pool = db::open_tracking_file(tracking_db, 4)?;
        // The recorder thread lives as long as the process; nothing waits for it to end.
        let (recorder, _thread) = MessageRecorder::start(&pool)?;
        Ok(Self {
            pool,
            base_url: Arc::new(Mutex::new(None)),
            recorder,
        })
    }

    /// The tracked alias `sender` is, if any (see [`tracking::tracked_alias`]).
    pub fn tracked_alias(&self, sender: &Address) -> Result<Option<TrackedAliasId>, PolicyError> {
        let conn = self.pool.get().map_err(DbError::from)?;
        Ok(tracking::tracked_alias(&conn, sender)?)
    }

    /// The pixel base URL apply rendered into tracking.db (`PIXEL_BASE_URL`, default
    /// `https://$HOSTNAME`), re-read at most every 30 seconds.
    pub fn pixel_base_url(&self) -> Result<BaseUrl, PolicyError> {
        let mut cached = self.base_url.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((url, at)) = cached.as_ref()
            && at.elapsed() < SETTINGS_TTL
        {
            return Ok(url.clone());
        }
        let conn = self.pool.get().map_err(DbError::from)?;
        let url = tracking::pixel_base_url(&conn)?.ok_or(PolicyError::NotApplied)?;
        *cached = Some((url.clone(), Instant::now()));
        Ok(url)
    }

    /// Queues the message's row; the answer says once it is committed (or why not). The caller
    /// awaits it without holding a thread.
    pub fn record(&self, msg: TrackedMessage) -> Committed {
        let (reply, committed) = oneshot::channel();
        self.recorder.record(msg, move |result| {
            let _ = reply.send(result);
        });
        Committed(committed)
    }

    /// Undoes [`record`](Self::record) when the body could not be replaced after all. Queued behind
    /// the insert it undoes; nobody waits for it.
    pub fn forget(&self, tracking_id: TrackingId) {
        self.recorder.forget(tracking_id);
    }
}

/// The answer to [`Policy::record`]: `Ok` once the row is committed.
pub struct Committed(oneshot::Receiver<Result<(), RecordError>>);

impl Committed {
    pub async fn wait(self) -> Result<(), PolicyError> {
        Self::outcome(self.0.await)
    }

    /// For callers outside the runtime (tests).
    pub fn wait_blocking(self) -> Result<(), PolicyError> {
        Self::outcome(self.0.blocking_recv())
    }

    fn outcome(
        answer: Result<Result<(), RecordError>, oneshot::error::RecvError>,
    ) -> Result<(), PolicyError> {
        // A dropped callback means the writer stopped with the request.
        Ok(answer.map_err(|_| RecordError::Refused)??)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailserver::names::{AliasSource, Destinations, Domain};
    use mailserver::store;

    /// The main database with a tracked alias, its policy rendered into tracking.db as apply does,
    /// and the policy opened on tracking.db alone.
    fn setup() -> (tempfile::TempDir, Policy) {
        let dir = tempfile::tempdir().unwrap();
        let paths = mailserver::paths::Paths::new(dir.path());
        std::fs::create_dir_all(paths.db_dir()).unwrap();
        let main = mailserver::db::open_dashboard(&paths, 1).unwrap();
        let mut conn = main.get().unwrap();
        let defaults = [("HOSTNAME".to_string(), "mx.example.com".to_string())].into();
        mailserver::store::settings::init_from_env(&conn, |_| None, &defaults).unwrap();
        store::domains::add(&conn, &Domain::parse("example.com").unwrap()).unwrap();
        let dest = Destinations::parse("alice@example.com").unwrap();
        let source = AliasSource::parse("sales@example.com").unwrap();
        store::aliases::add(&conn, &source, &dest, true).unwrap();
        let snapshot = store::Snapshot::read(&mut conn).unwrap();
        tracking::write_policy(
            &mut conn,
            &tracking::TrackingPolicy::from_snapshot(&snapshot),
        )
        .unwrap();
        drop(conn);
        let policy = Policy::open(&paths.tracking_db()).unwrap();
        (dir, policy)
    }

    /// The policy's own glue: the lookup, the cached base URL, and a commit awaited through the
    /// oneshot. (The queries and the writer are tested in the library.)
    #[test]
    fn looks_up_records_and_reads_the_base_url() {
        let (_dir, policy) = setup();
        let alias = policy
            .tracked_alias(&Address::parse("sales@example.com").unwrap())
            .unwrap()
            .unwrap();
        let msg = TrackedMessage {
            tracking_id: TrackingId::generate(),
            sender: "sales@example.com".into(),
            recipients: vec!["a@x.test".into()],
            subject: "s".into(),
            alias,
        };
        policy.record(msg.clone()).wait_blocking().unwrap();
        // The same id again violates the UNIQUE constraint: the caller learns of it.
        assert!(matches!(
            policy.record(msg).wait_blocking(),
            Err(PolicyError::Record(RecordError::Write(_)))
        ));
        assert_eq!(
            policy.pixel_base_url().unwrap().as_str(),
            "https://mx.example.com"
        );
    }
}
