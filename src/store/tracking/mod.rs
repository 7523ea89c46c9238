//! The tracking tables: `tracked_messages`, one row per message that really went out with a pixel,
//! and `pixel_opens`, one row per fetch of a known pixel.
//!
//! Both live in tracking.db (see [`crate::db`]), with the tracking policy root renders there from
//! the main database at every apply ([`TrackingPolicy`], [`write_policy`]): the tracked aliases and
//! the pixel base URL, all the milter reads.
//!
//! Who touches them: the milter looks up tracked aliases ([`tracked_alias`]) and appends or removes
//! messages through a [`MessageRecorder`]; the dashboard's pixel endpoint appends opens through an
//! [`OpenRecorder`]; the dashboard's pages read them ([`report`]). Both recorders are
//! [`BatchWriter`]s: one thread each, committing what queued up in one transaction, so neither a
//! milter session nor a pixel response ever waits for SQLite's write lock.
//!
//! The pixel is public, so what it may cost is bounded here where rows are written: a message gets
//! at most [`MAX_OPENS_PER_MESSAGE`] opens (checked by the INSERT itself), opens of unknown ids are
//! never stored, and [`retention`] deletes messages and opens older than the retention setting.

pub mod report;
pub mod retention;

use rusqlite::{Connection, OptionalExtension as _, Transaction};
use thiserror::Error;

use super::StoreError;
use super::batch_writer::{Batch, BatchWriter, QueueItem, WriterConfig, WriterError, WriterThread};
use crate::db::Pool;
use crate::names::Address;
use crate::tracking::{BaseUrl, TrackingId};

/// The id of the tracked alias a message was sent as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackedAliasId(pub i64);

/// The active, tracking-enabled alias `sender` is, on an active domain, as the last apply rendered
/// it into tracking.db; `None` for anything else.
pub fn tracked_alias(
    conn: &Connection,
    sender: &Address,
) -> Result<Option<TrackedAliasId>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT alias_id FROM tracked_aliases WHERE address = ?1")?;
    Ok(stmt
        .query_row([sender.as_str()], |r| r.get(0))
        .optional()?
        .map(TrackedAliasId))
}

/// The pixel base URL the last apply rendered into tracking.db; `None` before the first apply.
pub fn pixel_base_url(conn: &Connection) -> Result<Option<BaseUrl>, StoreError> {
    let value: Option<String> = conn
        .prepare_cached("SELECT value FROM policy_settings WHERE key = 'PIXEL_BASE_URL'")?
        .query_row([], |r| r.get(0))
        .optional()?;
    // Re-validated on the way out, like every stored name.
    value
        .map(|v| {
            BaseUrl::parse(&v).map_err(|source| {
                StoreError::Settings(crate::settings::SettingsError::Url {
                    key: "PIXEL_BASE_URL",
                    source,
                })
            })
        })
        .transpose()
}

/// What the milter needs to know of the main database, rendered into tracking.db by root's apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrackingPolicy {
    /// (address, aliases.id) of every active alias with tracking on, in an active domain, by address.
    pub tracked_aliases: Vec<(String, i64)>,
    pub pixel_base_url: String,
    /// The id of every alias (tracked or not): tracked messages of any other alias lose their
    /// alias id, as the foreign key's ON DELETE SET NULL did when both tables shared a file.
    pub alias_ids: Vec<i64>,
}

impl TrackingPolicy {
    /// The policy of `snapshot`. Pure.
    pub fn from_snapshot(snapshot: &super::Snapshot) -> Self {
        let mut tracked_aliases: Vec<(String, i64)> = snapshot
            .aliases
            .iter()
            .filter(|a| a.active && a.tracking_enabled && a.domain_active)
            .map(|a| (a.source.key(), a.id))
            .collect();
        tracked_aliases.sort();
        Self {
            tracked_aliases,
            pixel_base_url: snapshot.settings.pixel_base_url.as_str().to_string(),
            alias_ids: snapshot.aliases.iter().map(|a| a.id).collect(),
        }
    }
}

/// Replaces the policy in tracking.db with `policy`, in one transaction, when it differs from what is
/// there; clears the alias of tracked messages whose alias is gone. Returns whether the policy
/// changed.
pub fn write_policy(conn: &mut Connection, policy: &TrackingPolicy) -> Result<bool, StoreError> {
    let tx = conn.transaction()?;
    let stored: Vec<(String, i64)> = tx
        .prepare("SELECT address, alias_id FROM tracked_aliases ORDER BY address")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let stored_url: Option<String> = tx
        .query_row(
            "SELECT value FROM policy_settings WHERE key = 'PIXEL_BASE_URL'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    let changed = stored != policy.tracked_aliases
        || stored_url.as_deref() != Some(policy.pixel_base_url.as_str());
    if changed {
        tx.execute("DELETE FROM tracked_aliases", [])?;
        let mut insert =
            tx.prepare("INSERT INTO tracked_aliases (address, alias_id) VALUES (?1, ?2)")?;
        for (address, id) in &policy.tracked_aliases {
            insert.execute((address, id))?;
        }
        drop(insert);
        tx.execute(
            "INSERT INTO policy_settings (key, value) VALUES ('PIXEL_BASE_URL', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [&policy.pixel_base_url],
        )?;
    }
    let ids = format!(
        "[{}]",
        policy
            .alias_ids
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    tx.execute(
        "UPDATE tracked_messages SET alias_id = NULL
         WHERE alias_id IS NOT NULL AND alias_id NOT IN (SELECT value FROM json_each(?1))",
        [ids],
    )?;
    tx.commit()?;
    Ok(changed)
}

/// What is stored for a message that got a pixel.
#[derive(Debug, Clone)]
pub struct TrackedMessage {
    pub tracking_id: TrackingId,
    pub sender: String,
    /// Every envelope recipient of the message.
    pub recipients: Vec<String>,
    pub subject: String,
    pub alias: TrackedAliasId,
}

fn insert_message(tx: &Transaction<'_>, msg: &TrackedMessage) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO tracked_messages (tracking_id, sender, recipients, subject, alias_id)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute((
        msg.tracking_id.as_str(),
        &msg.sender,
        msg.recipients.join(","),
        &msg.subject,
        msg.alias.0,
    ))?;
    Ok(())
}

fn delete_message(conn: &Connection, tracking_id: &TrackingId) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM tracked_messages WHERE tracking_id = ?1")?
        .execute([tracking_id.as_str()])?;
    Ok(())
}

/// Why a message's row was not committed. The milter then sends the message without its pixel.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RecordError {
    #[error("writing tracked messages failed: {0}")]
    Write(String),
    #[error("the tracked-message writer is overloaded or has stopped")]
    Refused,
}

/// Called once the row of a recorded message is committed, or not.
pub type OnCommit = Box<dyn FnOnce(Result<(), RecordError>) + Send>;

/// What the message recorder is asked to do, in order.
pub enum MessageRequest {
    /// Insert the row; say on the callback whether it was committed.
    Insert(TrackedMessage, OnCommit),
    /// Delete the row of this id (its message went out without the pixel after all).
    Forget(TrackingId),
}

impl QueueItem for MessageRequest {
    fn queued_bytes(&self) -> usize {
        /// The boxed callback: a closure with a channel sender or two.
        const CALLBACK: usize = 64;
        std::mem::size_of::<Self>()
            + match self {
                Self::Insert(msg, _) => {
                    msg.tracking_id.as_str().len()
                        + msg.sender.len()
                        + msg.subject.len()
                        + msg
                            .recipients
                            .iter()
                            .map(|r| r.len() + std::mem::size_of::<String>())
                            .sum::<usize>()
                        + CALLBACK
                }
                Self::Forget(id) => id.as_str().len(),
            }
    }
}

/// Appends and removes `tracked_messages` rows for the milter.
#[derive(Clone)]
pub struct MessageRecorder(BatchWriter<MessageRequest>);

impl MessageRecorder {
    /// Bytes of messages that may wait for their commit (some 100,000 messages of ordinary size).
    /// Each waits for at most the milter's database deadline, so this only bounds a stalled
    /// database.
    const QUEUE_BYTES: usize = 32 << 20;

    pub fn start(pool: &Pool) -> Result<(Self, WriterThread), WriterError> {
        let config = WriterConfig {
            name: "tracked-messages",
            queue_bytes: Self::QUEUE_BYTES,
            max_batch: 256,
            // A message waits for its row: no retry, the message passes untracked instead.
            attempts: 1,
            cache_kib: None,
        };
        let (writer, thread) = BatchWriter::start(pool, config, MessageBatch)?;
        Ok((Self(writer), thread))
    }

    /// Queues the message's row; `on_commit` is told once it is committed, or why not (at once when
    /// the queue is full).
    pub fn record(
        &self,
        msg: TrackedMessage,
        on_commit: impl FnOnce(Result<(), RecordError>) + Send + 'static,
    ) {
        if let Err(MessageRequest::Insert(_, on_commit)) = self
            .0
            .send(MessageRequest::Insert(msg, Box::new(on_commit)))
        {
            on_commit(Err(RecordError::Refused));
        }
    }

    /// Undoes [`record`](Self::record) when the body could not be replaced after all. Queued behind
    /// the insert it undoes; nobody waits for it.
    pub fn forget(&self, tracking_id: TrackingId) {
        if let Err(MessageRequest::Forget(id)) = self.0.send(MessageRequest::Forget(tracking_id)) {
            tracing::error!(tracking_id = %id, "the tracked-message writer refused a removal; the row stays");
        }
    }
}

struct MessageBatch;

impl Batch for MessageBatch {
    type Item = MessageRequest;

    fn write(&mut self, tx: &Transaction<'_>, items: &[MessageRequest]) -> rusqlite::Result<()> {
        for request in items {
            match request {
                MessageRequest::Insert(msg, _) => insert_message(tx, msg)?,
                MessageRequest::Forget(id) => delete_message(tx, id)?,
            }
        }
        Ok(())
    }

    /// Tells each insert's caller; after a failed batch, retries its removals on their own: a row
    /// must not outlive a message that went out without its pixel. (The inserts failed with the
    /// batch; their messages pass untracked.)
    fn finish(
        &mut self,
        conn: &mut Connection,
        items: Vec<MessageRequest>,
        result: Result<(), &rusqlite::Error>,
    ) {
        let outcome = result.map_err(|e| RecordError::Write(e.to_string()));
        let mut forgets = Vec::new();
        for request in items {
            match request {
                MessageRequest::Insert(_, on_commit) => on_commit(outcome.clone()),
                MessageRequest::Forget(id) => forgets.push(id),
            }
        }
        if outcome.is_err() && !forgets.is_empty() {
            let deleted = conn.transaction().and_then(|tx| {
                for id in &forgets {
                    delete_message(&tx, id)?;
                }
                tx.commit()
            });
            if let Err(e) = deleted {
                for id in forgets {
                    tracing::error!(error = %e, tracking_id = %id, "could not delete the row of a message sent without its pixel");
                }
            }
        }
    }
}

/// One fetch of a pixel.
#[derive(Debug, Clone)]
pub struct Open {
    pub tracking_id: TrackingId,
    /// The client's address as text; empty when unknown.
    pub client_ip: String,
    pub user_agent: String,
    /// Seconds since the Unix epoch.
    pub unix_time: i64,
}

impl QueueItem for Open {
    fn queued_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.tracking_id.as_str().len()
            + self.client_ip.len()
            + self.user_agent.len()
    }
}

/// At most this many opens are stored per tracked message; later ones are not.
pub const MAX_OPENS_PER_MESSAGE: i64 = 1000;

/// The opens stored for `id` so far (at most [`MAX_OPENS_PER_MESSAGE`]), or `None` when no tracked
/// message has that id. What the pixel endpoint asks before it queues an open.
pub fn stored_opens(conn: &Connection, id: &TrackingId) -> Result<Option<i64>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT (SELECT count(*) FROM (SELECT 1 FROM pixel_opens WHERE tracking_id = ?1 LIMIT ?2))
         FROM tracked_messages WHERE tracking_id = ?1",
    )?;
    Ok(stmt
        .query_row((id.as_str(), MAX_OPENS_PER_MESSAGE), |r| r.get(0))
        .optional()?)
}

/// Appends `pixel_opens` rows for the pixel endpoint; opens of unknown ids, and opens beyond
/// [`MAX_OPENS_PER_MESSAGE`] of a message, are not stored.
#[derive(Clone)]
pub struct OpenRecorder(BatchWriter<Open>);

impl OpenRecorder {
    /// The default queue: 8 MiB, some 40,000 opens with long User-Agents, 80,000 with short ones.
    /// Only absorbs bursts: the writer keeps up with tens of thousands of opens a second.
    pub const QUEUE_BYTES: usize = 8 << 20;

    pub fn start(pool: &Pool) -> Result<(Self, WriterThread), WriterError> {
        Self::start_with(pool, Self::QUEUE_BYTES)
    }

    /// [`start`](Self::start) with a queue of `queue_bytes` (tests use a small one).
    pub fn start_with(
        pool: &Pool,
        queue_bytes: usize,
    ) -> Result<(Self, WriterThread), WriterError> {
        let config = WriterConfig {
            name: "pixel-opens",
            queue_bytes,
            max_batch: 8192,
            attempts: 5,
            // The pixel_opens index is written all over: a small cache would read and write the
            // same pages again for every batch.
            cache_kib: Some(64 * 1024),
        };
        let (writer, thread) = BatchWriter::start(pool, config, OpenBatch)?;
        Ok((Self(writer), thread))
    }

    /// Queues the open; when the queue is full it is dropped (counted and logged by the writer) and
    /// `false` is returned.
    pub fn record(&self, open: Open) -> bool {
        self.0.send(open).is_ok()
    }

    /// Opens dropped since the start because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.0.refused()
    }
}

struct OpenBatch;

impl Batch for OpenBatch {
    type Item = Open;

    fn write(&mut self, tx: &Transaction<'_>, opens: &[Open]) -> rusqlite::Result<()> {
        // The cap reads at most MAX_OPENS_PER_MESSAGE entries of the (tracking_id, opened_at) index.
        let mut insert = tx.prepare_cached(
            "INSERT INTO pixel_opens (tracking_id, client_ip, user_agent, opened_at)
             SELECT ?1, ?2, ?3, datetime(?4, 'unixepoch')
             WHERE EXISTS (SELECT 1 FROM tracked_messages WHERE tracking_id = ?1)
               AND NOT EXISTS (SELECT 1 FROM pixel_opens WHERE tracking_id = ?1 LIMIT 1 OFFSET ?5 - 1)",
        )?;
        for o in opens {
            insert.execute((
                o.tracking_id.as_str(),
                &o.client_ip,
                &o.user_agent,
                o.unix_time,
                MAX_OPENS_PER_MESSAGE,
            ))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{AliasSource, Destinations, Domain};
    use crate::store;
    use std::sync::mpsc;

    /// The dashboard's pool (both databases) with two aliases, the policy rendered.
    fn setup() -> (tempfile::TempDir, Pool) {
        let dir = tempfile::tempdir().unwrap();
        let paths = crate::paths::Paths::new(dir.path());
        std::fs::create_dir_all(paths.db_dir()).unwrap();
        let pool = crate::db::open_dashboard(&paths, 4).unwrap();
        let mut conn = pool.get().unwrap();
        let defaults = [("HOSTNAME".to_string(), "mx.example.com".to_string())].into();
        crate::store::settings::init_from_env(&conn, |_| None, &defaults).unwrap();
        store::domains::add(&conn, &Domain::parse("example.com").unwrap()).unwrap();
        let dest = Destinations::parse("alice@example.com").unwrap();
        for (source, tracking) in [("sales@example.com", true), ("plain@example.com", false)] {
            store::aliases::add(&conn, &AliasSource::parse(source).unwrap(), &dest, tracking)
                .unwrap();
        }
        render_policy(&mut conn);
        (dir, pool)
    }

    /// What apply does after every change.
    fn render_policy(conn: &mut Connection) -> bool {
        let snapshot = store::Snapshot::read(conn).unwrap();
        write_policy(conn, &TrackingPolicy::from_snapshot(&snapshot)).unwrap()
    }

    fn message(alias: TrackedAliasId) -> TrackedMessage {
        TrackedMessage {
            tracking_id: TrackingId::generate(),
            sender: "sales@example.com".into(),
            recipients: vec!["a@x.test".into(), "b@y.test".into()],
            subject: "Grüße".into(),
            alias,
        }
    }

    fn record_and_wait(recorder: &MessageRecorder, msg: TrackedMessage) -> Result<(), RecordError> {
        let (tx, rx) = mpsc::channel();
        recorder.record(msg, move |r| tx.send(r).unwrap());
        rx.recv().unwrap()
    }

    fn count(conn: &Connection, sql: &str, id: &TrackingId) -> i64 {
        conn.query_row(sql, [id.as_str()], |r| r.get(0)).unwrap()
    }

    #[test]
    fn only_active_tracked_aliases_on_active_domains() {
        let (_dir, pool) = setup();
        let mut conn = pool.get().unwrap();
        let sales = Address::parse("sales@example.com").unwrap();
        assert!(tracked_alias(&conn, &sales).unwrap().is_some());
        for other in ["plain@example.com", "nobody@example.com"] {
            let a = Address::parse(other).unwrap();
            assert!(tracked_alias(&conn, &a).unwrap().is_none(), "{other}");
        }
        assert_eq!(
            pixel_base_url(&conn).unwrap().unwrap().as_str(),
            "https://mx.example.com"
        );
        // Rendering the same policy again writes nothing.
        assert!(!render_policy(&mut conn));
        let domain = Domain::parse("example.com").unwrap();
        store::domains::set_active(&conn, &domain, false).unwrap();
        assert!(render_policy(&mut conn));
        assert!(tracked_alias(&conn, &sales).unwrap().is_none());
        store::domains::set_active(&conn, &domain, true).unwrap();
        render_policy(&mut conn);
        assert!(tracked_alias(&conn, &sales).unwrap().is_some());
        let source = AliasSource::parse("sales@example.com").unwrap();
        store::aliases::set_active(&conn, &source, false).unwrap();
        render_policy(&mut conn);
        assert!(tracked_alias(&conn, &sales).unwrap().is_none());
    }

    /// A message of an alias deleted where no trigger saw it (the CLI opens the main database
    /// alone) loses its alias at the next apply, so a new alias reusing the id does not inherit it.
    #[test]
    fn apply_clears_the_alias_of_messages_of_deleted_aliases() {
        let (dir, pool) = setup();
        let mut conn = pool.get().unwrap();
        let alias = tracked_alias(&conn, &Address::parse("sales@example.com").unwrap())
            .unwrap()
            .unwrap();
        conn.execute(
            "INSERT INTO tracked_messages (tracking_id, sender, recipients, alias_id)
             VALUES ('VQx3An5C4mtsOVsTUQiGHQ', 'sales@example.com', 'x@a.test', ?1)",
            [alias.0],
        )
        .unwrap();
        let main_only = crate::db::open(&dir.path().join("db/mailserver.db"), 1).unwrap();
        main_only
            .get()
            .unwrap()
            .execute("DELETE FROM aliases WHERE id = ?1", [alias.0])
            .unwrap();
        let before: Option<i64> = conn
            .query_row("SELECT alias_id FROM tracked_messages", [], |r| r.get(0))
            .unwrap();
        assert_eq!(before, Some(alias.0));
        render_policy(&mut conn);
        let after: Option<i64> = conn
            .query_row("SELECT alias_id FROM tracked_messages", [], |r| r.get(0))
            .unwrap();
        assert_eq!(after, None);
    }

    #[test]
    fn records_forgets_and_counts_opens_of_known_ids_only() {
        let (_dir, pool) = setup();
        let conn = pool.get().unwrap();
        let alias = tracked_alias(&conn, &Address::parse("sales@example.com").unwrap())
            .unwrap()
            .unwrap();
        let (recorder, messages) = MessageRecorder::start(&pool).unwrap();
        let kept = message(alias);
        let forgotten = message(alias);
        record_and_wait(&recorder, kept.clone()).unwrap();
        record_and_wait(&recorder, forgotten.clone()).unwrap();
        recorder.forget(forgotten.tracking_id.clone());
        let (recipients, subject): (String, String) = conn
            .query_row(
                "SELECT recipients, subject FROM tracked_messages WHERE tracking_id = ?1",
                [kept.tracking_id.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(
            (recipients.as_str(), subject.as_str()),
            ("a@x.test,b@y.test", "Grüße")
        );

        let (opens, opens_thread) = OpenRecorder::start(&pool).unwrap();
        let unknown = TrackingId::generate();
        for id in [&kept.tracking_id, &kept.tracking_id, &unknown] {
            opens.record(Open {
                tracking_id: id.clone(),
                client_ip: "192.0.2.1".into(),
                user_agent: "Mozilla/5.0".into(),
                unix_time: 1_700_000_000,
            });
        }
        drop((recorder, opens));
        messages.join();
        opens_thread.join();
        let by_id = "SELECT count(*) FROM tracked_messages WHERE tracking_id = ?1";
        assert_eq!(count(&conn, by_id, &forgotten.tracking_id), 0);
        assert_eq!(count(&conn, by_id, &kept.tracking_id), 1);
        let opens_of = "SELECT count(*) FROM pixel_opens WHERE tracking_id = ?1";
        assert_eq!(count(&conn, opens_of, &kept.tracking_id), 2);
        assert_eq!(count(&conn, opens_of, &unknown), 0);
        let at: String = conn
            .query_row("SELECT min(opened_at) FROM pixel_opens", [], |r| r.get(0))
            .unwrap();
        assert_eq!(at, "2023-11-14 22:13:20");
    }

    /// The INSERT itself keeps a message to MAX_OPENS_PER_MESSAGE opens, whatever is queued;
    /// `stored_opens` tells known ids (with their count, up to the cap) from unknown ones.
    #[test]
    fn opens_per_message_are_capped_where_they_are_written() {
        let (_dir, pool) = setup();
        let conn = pool.get().unwrap();
        let (recorder, messages) = MessageRecorder::start(&pool).unwrap();
        let msg = message(TrackedAliasId(1));
        record_and_wait(&recorder, msg.clone()).unwrap();
        assert_eq!(stored_opens(&conn, &msg.tracking_id).unwrap(), Some(0));
        assert_eq!(stored_opens(&conn, &TrackingId::generate()).unwrap(), None);
        let (opens, opens_thread) = OpenRecorder::start(&pool).unwrap();
        for i in 0..MAX_OPENS_PER_MESSAGE + 25 {
            assert!(opens.record(Open {
                tracking_id: msg.tracking_id.clone(),
                client_ip: format!("192.0.2.{}", i % 250),
                user_agent: "UA".into(),
                unix_time: 1_700_000_000 + i,
            }));
        }
        drop((recorder, opens));
        messages.join();
        opens_thread.join();
        let opens_of = "SELECT count(*) FROM pixel_opens WHERE tracking_id = ?1";
        assert_eq!(
            count(&conn, opens_of, &msg.tracking_id),
            MAX_OPENS_PER_MESSAGE
        );
        assert_eq!(
            stored_opens(&conn, &msg.tracking_id).unwrap(),
            Some(MAX_OPENS_PER_MESSAGE)
        );
    }

    /// Rows recorded from many threads at once are all committed, each caller told of its own.
    #[test]
    fn concurrent_records_are_all_committed() {
        let (_dir, pool) = setup();
        let alias = TrackedAliasId(1);
        let (recorder, _thread) = MessageRecorder::start(&pool).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let recorder = recorder.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        record_and_wait(&recorder, message(alias)).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let n: i64 = pool
            .get()
            .unwrap()
            .query_row("SELECT count(*) FROM tracked_messages", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 400);
    }

    /// A batch that fails tells its callers, and the removals in it still happen.
    #[test]
    fn a_failed_insert_is_reported_and_removals_still_happen() {
        let (_dir, pool) = setup();
        let alias = TrackedAliasId(1);
        let (recorder, thread) = MessageRecorder::start(&pool).unwrap();
        let first = message(alias);
        record_and_wait(&recorder, first.clone()).unwrap();
        // Stall the writer so the next three requests land in one batch.
        let blocker = pool.get().unwrap();
        blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
        let (tx, rx) = mpsc::channel();
        let stall = message(alias);
        let tx2 = tx.clone();
        recorder.record(stall, move |r| tx2.send(r).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(50));
        recorder.record(first.clone(), move |r| tx.send(r).unwrap()); // duplicate id: fails
        recorder.forget(first.tracking_id.clone());
        blocker.execute_batch("ROLLBACK").unwrap();
        let _ = rx.recv().unwrap(); // the stalled one: committed after the rollback, or timed out
        assert!(matches!(rx.recv().unwrap(), Err(RecordError::Write(_))));
        drop(recorder);
        thread.join();
        let conn = pool.get().unwrap();
        let by_id = "SELECT count(*) FROM tracked_messages WHERE tracking_id = ?1";
        assert_eq!(count(&conn, by_id, &first.tracking_id), 0);
    }
}
