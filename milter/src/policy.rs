//! Which mail is tracked, and where tracked messages are recorded (the main SQLite database).
//!
//! Reads ([`Policy::tracked_alias`], [`Policy::pixel_base_url`]) are short indexed queries on a WAL
//! database, where readers never wait for writers; the milter runs them on its runtime thread.
//! A row is written on the caller's thread too when SQLite's write lock is free, and otherwise by
//! one recorder thread that waits for the lock while the caller awaits the commit without holding
//! a thread (see [`Policy::record`]). Any error means "do not track": the message passes through
//! unchanged.

use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use mailserver::db::{self, DbError, Pool};
use mailserver::names::Address;
use rusqlite::OptionalExtension as _;
use thiserror::Error;
use tokio::sync::oneshot;

#[derive(Debug, Error)]
pub enum PolicyError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database pool error: {0}")]
    Pool(#[from] r2d2::Error),
    #[error(transparent)]
    Settings(#[from] mailserver::settings::SettingsError),
    #[error("recording failed: {0}")]
    Record(String),
}

/// A tracked alias the sender matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackedAlias {
    pub id: i64,
}

/// What is stored for a message that really got a pixel.
#[derive(Debug, Clone)]
pub struct TrackedMessage {
    pub tracking_id: String,
    pub sender: String,
    pub recipients: Vec<String>,
    pub subject: String,
    pub alias_id: i64,
}

/// How long the pixel base URL read from the settings is reused before it is read again.
const SETTINGS_TTL: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Policy {
    pool: Pool,
    base_url: Arc<Mutex<Option<(String, Instant)>>>,
    recorder: mpsc::Sender<Request>,
    direct: Arc<Mutex<Direct>>,
}

impl Policy {
    pub fn open(db_path: &Path) -> Result<Self, PolicyError> {
        let pool = db::open(db_path, 4)?;
        Ok(Self {
            recorder: spawn_recorder(&pool)?,
            direct: Arc::new(Mutex::new(Direct::new(pool.get()?)?)),
            pool,
            base_url: Arc::new(Mutex::new(None)),
        })
    }

    /// The active, tracking-enabled alias `sender` is, on an active domain; `None` for anything else.
    pub fn tracked_alias(&self, sender: &Address) -> Result<Option<TrackedAlias>, PolicyError> {
        let conn = self.pool.get()?;
        let mut stmt = conn.prepare_cached(
            "SELECT a.id FROM aliases a JOIN domains d ON d.id = a.domain_id
             WHERE a.source = ?1 AND a.active = 1 AND a.tracking_enabled = 1 AND d.active = 1",
        )?;
        Ok(stmt
            .query_row([sender.as_str()], |r| r.get(0))
            .optional()?
            .map(|id| TrackedAlias { id }))
    }

    /// The pixel base URL from the stored settings (`PIXEL_BASE_URL`, default `https://$HOSTNAME`),
    /// re-read at most every 30 seconds.
    pub fn pixel_base_url(&self) -> Result<String, PolicyError> {
        let mut cached = self.base_url.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((url, at)) = cached.as_ref()
            && at.elapsed() < SETTINGS_TTL
        {
            return Ok(url.clone());
        }
        let conn = self.pool.get()?;
        let settings = mailserver::settings::Settings::load(&conn)?;
        let url = settings.pixel_base_url.as_str().to_string();
        *cached = Some((url.clone(), Instant::now()));
        Ok(url)
    }

    /// Writes the message's row; the answer says once it is committed (or why not).
    ///
    /// When SQLite's write lock is free, the row is written and committed right here, on the
    /// caller's thread (some 50 µs, no thread hand-off). When another writer holds the lock, the
    /// direct connection does not wait (its busy timeout is zero): the row goes to the recorder
    /// thread, which waits for the lock, and the caller awaits the commit without holding a thread.
    pub fn record(&self, msg: TrackedMessage) -> Committed {
        if let Ok(mut direct) = self.direct.try_lock() {
            match direct.insert(&msg) {
                Ok(checkpoint) => {
                    if checkpoint {
                        let _ = self.recorder.send(Request::Checkpoint);
                    }
                    return Committed(Answer::Done);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "database busy; the recorder thread writes the row");
                }
            }
        }
        let (reply, committed) = oneshot::channel();
        // If the recorder is gone, `reply` is dropped with the request and the receiver says so.
        let _ = self.recorder.send(Request::Insert(msg, reply));
        Committed(Answer::Queued(committed))
    }

    /// Undoes [`record`](Self::record) when the body could not be replaced after all. Queued on the
    /// recorder, so it runs after the insert it undoes; nobody waits for it.
    pub fn forget(&self, tracking_id: &str) {
        if self
            .recorder
            .send(Request::Forget(tracking_id.to_string()))
            .is_err()
        {
            tracing::error!(tracking_id, "the recorder thread stopped; row not removed");
        }
    }
}

/// The answer to [`Policy::record`]: `Ok` once the row is committed.
pub struct Committed(Answer);

enum Answer {
    /// Committed on the caller's thread.
    Done,
    /// Queued on the recorder thread, which answers here.
    Queued(oneshot::Receiver<Result<(), String>>),
}

impl Committed {
    pub async fn wait(self) -> Result<(), PolicyError> {
        match self.0 {
            Answer::Done => Ok(()),
            Answer::Queued(answer) => recorded(answer.await),
        }
    }

    /// For callers outside the runtime (tests).
    pub fn wait_blocking(self) -> Result<(), PolicyError> {
        match self.0 {
            Answer::Done => Ok(()),
            Answer::Queued(answer) => recorded(answer.blocking_recv()),
        }
    }

    /// Whether the row was written on the caller's thread (tests).
    pub fn was_direct(&self) -> bool {
        matches!(self.0, Answer::Done)
    }
}

fn recorded(
    answer: Result<Result<(), String>, oneshot::error::RecvError>,
) -> Result<(), PolicyError> {
    match answer {
        Ok(result) => result.map_err(PolicyError::Record),
        Err(_) => Err(PolicyError::Record("the recorder thread stopped".into())),
    }
}

/// Direct commits between two checkpoints, which the recorder thread runs.
const CHECKPOINT_EVERY: u32 = 200;

/// The connection [`Policy::record`] writes on directly. It never waits for the write lock, and
/// never checkpoints itself (a checkpoint copies the WAL into the database and syncs both: some
/// 10 ms the milter's runtime thread would be stalled): every [`CHECKPOINT_EVERY`] commits, it asks
/// the recorder thread to run one instead.
struct Direct {
    conn: db::PooledConnection,
    commits: u32,
}

impl Direct {
    fn new(conn: db::PooledConnection) -> Result<Self, rusqlite::Error> {
        conn.busy_timeout(Duration::ZERO)?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        Ok(Self { conn, commits: 0 })
    }

    /// Inserts and commits the row; `Ok(true)` when a checkpoint is due.
    fn insert(&mut self, msg: &TrackedMessage) -> Result<bool, rusqlite::Error> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        insert(&tx, msg)?;
        tx.commit()?;
        self.commits += 1;
        Ok(self.commits % CHECKPOINT_EVERY == 0)
    }
}

impl Drop for Direct {
    /// The connection goes back to the pool with the settings every other one has.
    fn drop(&mut self) {
        let _ = self.conn.busy_timeout(db::BUSY_TIMEOUT);
        let _ = self.conn.pragma_update(None, "wal_autocheckpoint", 1000);
    }
}

/// What the recorder thread is asked to do, in order.
enum Request {
    /// Insert the row, and say on the channel whether it was committed.
    Insert(TrackedMessage, oneshot::Sender<Result<(), String>>),
    /// Delete the row of this tracking id.
    Forget(String),
    /// Copy the WAL into the database and let the next write start it over (for [`Direct`]).
    Checkpoint,
}

/// Requests handled in one transaction at the most.
const MAX_BATCH: usize = 256;

/// The thread that writes `tracked_messages`, on a connection of its own. It commits in batches:
/// every request that queued up while the previous transaction was written goes into the next one.
/// One writer also means our own connections never wait on each other's locks (SQLite's busy
/// handler sleeps), and under load a commit's locking and WAL writes (some 30 system calls) are
/// shared by the messages of a batch. Each caller still learns of its own row's commit, through a
/// oneshot channel that wakes its task on the milter's runtime; a failed transaction fails every
/// row in it, and those messages pass untracked.
fn spawn_recorder(pool: &Pool) -> Result<mpsc::Sender<Request>, PolicyError> {
    let mut conn = pool.get()?;
    let (requests, queue) = mpsc::channel::<Request>();
    std::thread::Builder::new()
        .name("recorder".into())
        .spawn(move || {
            while let Ok(first) = queue.recv() {
                let mut batch = vec![first];
                batch.extend(queue.try_iter().take(MAX_BATCH - 1));
                let result = write(&mut conn, &batch).map_err(|e| e.to_string());
                if let Err(e) = &result {
                    tracing::warn!(error = %e, rows = batch.len(), "writing tracked messages failed");
                }
                for request in batch {
                    if let Request::Insert(_, reply) = request {
                        let _ = reply.send(result.clone());
                    }
                }
            }
        })
        .map_err(|e| PolicyError::Record(format!("could not start the recorder thread: {e}")))?;
    Ok(requests)
}

fn write(conn: &mut rusqlite::Connection, batch: &[Request]) -> Result<(), rusqlite::Error> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut checkpoint = false;
    for request in batch {
        match request {
            Request::Insert(msg, _) => insert(&tx, msg)?,
            Request::Forget(id) => {
                tx.prepare_cached("DELETE FROM tracked_messages WHERE message_id = ?1")?
                    .execute([id])?;
            }
            Request::Checkpoint => checkpoint = true,
        }
    }
    tx.commit()?;
    if checkpoint {
        // RESTART: copies the whole WAL into the database, then waits until no reader uses it, so
        // that the next write starts the WAL over from its beginning. A PASSIVE one, which would
        // keep pace with the direct writes, never finds the WAL fully copied at the moment a write
        // begins, and the WAL file grew by 3.6 KB per message under load. Meanwhile direct writes
        // find the lock taken and queue here; the milter's thread waits for nothing. A failure
        // only delays the checkpoint to the next request.
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "WAL checkpoint failed");
        }
    }
    Ok(())
}

fn insert(tx: &rusqlite::Transaction<'_>, msg: &TrackedMessage) -> Result<(), rusqlite::Error> {
    tx.prepare_cached(
        "INSERT INTO tracked_messages (message_id, sender, recipient, subject, alias_id)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute((
        &msg.tracking_id,
        &msg.sender,
        msg.recipients.join(","),
        &msg.subject,
        msg.alias_id,
    ))?;
    Ok(())
}

/// A fresh tracking id: 128 random bits, base64url without padding (22 characters).
pub fn new_tracking_id() -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailserver::names::{AliasSource, Destinations, Domain};
    use mailserver::store;

    fn setup() -> (tempfile::TempDir, Policy) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let policy = Policy::open(&path).unwrap();
        let conn = policy.pool.get().unwrap();
        let defaults = [("HOSTNAME".to_string(), "mx.example.com".to_string())].into();
        mailserver::settings::Settings::init_from_env(&conn, |_| None, &defaults).unwrap();
        store::domains::add(&conn, &Domain::parse("example.com").unwrap()).unwrap();
        let dest = Destinations::parse("alice@example.com").unwrap();
        store::aliases::add(
            &conn,
            &AliasSource::parse("sales@example.com").unwrap(),
            &dest,
            true,
        )
        .unwrap();
        store::aliases::add(
            &conn,
            &AliasSource::parse("plain@example.com").unwrap(),
            &dest,
            false,
        )
        .unwrap();
        drop(conn);
        (dir, policy)
    }

    #[test]
    fn only_active_tracked_aliases_on_active_domains() {
        let (_dir, policy) = setup();
        let sales = Address::parse("sales@example.com").unwrap();
        assert!(policy.tracked_alias(&sales).unwrap().is_some());
        assert!(
            policy
                .tracked_alias(&Address::parse("plain@example.com").unwrap())
                .unwrap()
                .is_none()
        );
        assert!(
            policy
                .tracked_alias(&Address::parse("nobody@example.com").unwrap())
                .unwrap()
                .is_none()
        );
        let conn = policy.pool.get().unwrap();
        store::domains::set_active(&conn, &Domain::parse("example.com").unwrap(), false).unwrap();
        assert!(policy.tracked_alias(&sales).unwrap().is_none());
        store::domains::set_active(&conn, &Domain::parse("example.com").unwrap(), true).unwrap();
        store::aliases::set_active(
            &conn,
            &AliasSource::parse("sales@example.com").unwrap(),
            false,
        )
        .unwrap();
        assert!(policy.tracked_alias(&sales).unwrap().is_none());
    }

    /// Rows recorded from many threads at once are all committed, each caller told of its own.
    #[test]
    fn concurrent_records_are_all_committed() {
        let (_dir, policy) = setup();
        let alias = policy
            .tracked_alias(&Address::parse("sales@example.com").unwrap())
            .unwrap()
            .unwrap();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let policy = policy.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let msg = TrackedMessage {
                            tracking_id: new_tracking_id(),
                            sender: "sales@example.com".into(),
                            recipients: vec!["a@x.test".into()],
                            subject: "s".into(),
                            alias_id: alias.id,
                        };
                        policy.record(msg).wait_blocking().unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let conn = policy.pool.get().unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM tracked_messages", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 400);
    }

    /// While another process holds the write lock, the row is not written on the caller's thread
    /// (which must never wait for it) but by the recorder, once the lock is free.
    #[test]
    fn a_busy_database_hands_the_row_to_the_recorder() {
        let (dir, policy) = setup();
        let alias = policy
            .tracked_alias(&Address::parse("sales@example.com").unwrap())
            .unwrap()
            .unwrap();
        let msg = |id: &str| TrackedMessage {
            tracking_id: id.into(),
            sender: "sales@example.com".into(),
            recipients: vec!["a@x.test".into()],
            subject: String::new(),
            alias_id: alias.id,
        };
        assert!(policy.record(msg("direct")).was_direct());

        let other = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let started = Instant::now();
        let queued = policy.record(msg("queued"));
        assert!(!queued.was_direct(), "written past another writer's lock");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "the caller waited for the lock"
        );
        std::thread::sleep(Duration::from_millis(100));
        other.execute_batch("COMMIT").unwrap();
        queued.wait_blocking().unwrap();

        let conn = policy.pool.get().unwrap();
        let ids: Vec<String> = conn
            .prepare("SELECT message_id FROM tracked_messages ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(ids, ["direct", "queued"]);
    }

    /// The direct connection never checkpoints; the recorder's checkpoints keep the WAL from
    /// growing with every row (without them: some 4 pages, 16 KB, per row).
    #[test]
    fn direct_writes_keep_the_wal_bounded() {
        let (dir, policy) = setup();
        let alias = policy
            .tracked_alias(&Address::parse("sales@example.com").unwrap())
            .unwrap()
            .unwrap();
        let rows = 5 * CHECKPOINT_EVERY as usize;
        for _ in 0..rows {
            let msg = TrackedMessage {
                tracking_id: new_tracking_id(),
                sender: "sales@example.com".into(),
                recipients: vec!["a@x.test".into()],
                subject: "s".into(),
                alias_id: alias.id,
            };
            policy.record(msg).wait_blocking().unwrap();
        }
        let wal = std::fs::metadata(dir.path().join("t.db-wal"))
            .unwrap()
            .len();
        let unbounded = rows as u64 * 4 * 4096;
        assert!(wal < unbounded / 2, "WAL {wal} bytes after {rows} rows");
    }

    #[test]
    fn records_and_forgets() {
        let (_dir, policy) = setup();
        let id = new_tracking_id();
        assert_eq!(id.len(), 22);
        assert_ne!(id, new_tracking_id());
        let alias = policy
            .tracked_alias(&Address::parse("sales@example.com").unwrap())
            .unwrap()
            .unwrap();
        let msg = TrackedMessage {
            tracking_id: id.clone(),
            sender: "sales@example.com".into(),
            recipients: vec!["a@x.test".into(), "b@y.test".into()],
            subject: "Grüße".into(),
            alias_id: alias.id,
        };
        policy.record(msg).wait_blocking().unwrap();
        let conn = policy.pool.get().unwrap();
        let (rcpt, subject): (String, String) = conn
            .query_row(
                "SELECT recipient, subject FROM tracked_messages WHERE message_id = ?1",
                [&id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(
            (rcpt.as_str(), subject.as_str()),
            ("a@x.test,b@y.test", "Grüße")
        );
        policy.forget(&id);
        // The recorder thread deletes it, soon.
        let count = || -> i64 {
            conn.query_row(
                "SELECT count(*) FROM tracked_messages WHERE message_id = ?1",
                [&id],
                |r| r.get(0),
            )
            .unwrap()
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while count() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(count(), 0);
        assert_eq!(policy.pixel_base_url().unwrap(), "https://mx.example.com");
    }
}
