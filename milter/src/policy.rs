//! Which mail is tracked, and where tracked messages are recorded (the main SQLite database).
//!
//! Reads ([`Policy::tracked_alias`], [`Policy::pixel_base_url`]) are short indexed queries on a WAL
//! database, where readers never wait for writers; the milter runs them on its runtime thread.
//! Writes go to one recorder thread, and callers await their commit without holding a thread. Any
//! error means "do not track": the message passes through unchanged.

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
}

impl Policy {
    pub fn open(db_path: &Path) -> Result<Self, PolicyError> {
        let pool = db::open(db_path, 4)?;
        Ok(Self {
            recorder: spawn_recorder(&pool)?,
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

    /// Queues the message's row; the receiver says once it is committed (or why not). The caller
    /// awaits it without holding a thread.
    pub fn record(&self, msg: TrackedMessage) -> Committed {
        let (reply, committed) = oneshot::channel();
        // If the recorder is gone, `reply` is dropped with the request and the receiver says so.
        let _ = self.recorder.send(Request::Insert(msg, reply));
        Committed(committed)
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
pub struct Committed(oneshot::Receiver<Result<(), String>>);

impl Committed {
    pub async fn wait(self) -> Result<(), PolicyError> {
        Self::outcome(self.0.await)
    }

    /// For callers outside the runtime (tests).
    pub fn wait_blocking(self) -> Result<(), PolicyError> {
        Self::outcome(self.0.blocking_recv())
    }

    fn outcome(
        answer: Result<Result<(), String>, oneshot::error::RecvError>,
    ) -> Result<(), PolicyError> {
        answer
            .map_err(|_| PolicyError::Record("the recorder thread stopped".into()))?
            .map_err(PolicyError::Record)
    }
}

/// What the recorder thread is asked to do, in order.
enum Request {
    /// Insert the row, and say on the channel whether it was committed.
    Insert(TrackedMessage, oneshot::Sender<Result<(), String>>),
    /// Delete the row of this tracking id.
    Forget(String),
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
                    tracing::warn!(error = %e, requests = batch.len(), "writing tracked messages failed");
                    retry_forgets(&mut conn, &batch);
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

/// After a failed batch, the forgets in it on their own: a row must not outlive a message that
/// went out without its pixel. (The inserts failed with the batch; their messages pass untracked.)
fn retry_forgets(conn: &mut rusqlite::Connection, batch: &[Request]) {
    let ids: Vec<&str> = batch
        .iter()
        .filter_map(|r| match r {
            Request::Forget(id) => Some(id.as_str()),
            Request::Insert(..) => None,
        })
        .collect();
    if ids.is_empty() {
        return;
    }
    let deleted = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .and_then(|tx| {
            for id in &ids {
                delete(&tx, id)?;
            }
            tx.commit()
        });
    if let Err(e) = deleted {
        for id in ids {
            tracing::error!(error = %e, tracking_id = id, "could not delete the row of a message sent without its pixel");
        }
    }
}

fn delete(tx: &rusqlite::Transaction<'_>, tracking_id: &str) -> Result<(), rusqlite::Error> {
    tx.prepare_cached("DELETE FROM tracked_messages WHERE message_id = ?1")?
        .execute([tracking_id])?;
    Ok(())
}

fn write(conn: &mut rusqlite::Connection, batch: &[Request]) -> Result<(), rusqlite::Error> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    for request in batch {
        match request {
            Request::Insert(msg, _) => {
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
            }
            Request::Forget(id) => delete(&tx, id)?,
        }
    }
    tx.commit()
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
        policy
            .record(TrackedMessage {
                tracking_id: new_tracking_id(),
                sender: "sales@example.com".into(),
                recipients: vec![],
                subject: String::new(),
                alias_id: alias.id,
            })
            .wait_blocking()
            .unwrap(); // committed after the forget, which came first
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM tracked_messages WHERE message_id = ?1",
                [&id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 0);
        assert_eq!(policy.pixel_base_url().unwrap(), "https://mx.example.com");
    }
}
