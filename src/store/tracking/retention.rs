//! Retention: tracked messages and opens older than `TRACKING_RETENTION_DAYS` are deleted.
//!
//! Why here and in chunks: the dashboard runs [`purge`] daily (and `mailserver tracking purge` on
//! demand) while the milter and the pixel writer keep appending to the same tables. One DELETE of a
//! year's rows would hold SQLite's write lock for as long as it takes, and every writer would wait
//! (the milter's wait is bounded, so its mail would go out untracked). Each chunk here is its own
//! short transaction, with a pause between chunks in which the others get the lock.
//!
//! What goes: every open older than the cutoff (by `opened_at`), and every message older than the
//! cutoff (by `created_at`) together with all its opens, however recent, in the same transaction as
//! the message, so no open outlives its message. The statements name only the tracking tables and
//! rely on no foreign key, so they work the same when those tables live in a database of their own.

use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use crate::settings::RetentionDays;
use crate::store::StoreError;

/// How much one transaction deletes, and the pause between two.
#[derive(Debug, Clone, Copy)]
pub struct Chunks {
    /// Opens per transaction (the first pass, opens older than the cutoff).
    pub opens: i64,
    /// Messages per transaction, each with all its opens (at most
    /// [`super::MAX_OPENS_PER_MESSAGE`] each, so a chunk stays small).
    pub messages: i64,
    /// Sleep between two transactions, so other writers get the lock.
    pub pause: Duration,
}

impl Default for Chunks {
    fn default() -> Self {
        Self {
            opens: 5000,
            messages: 20,
            pause: Duration::from_millis(20),
        }
    }
}

/// What one [`purge`] deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    pub messages: u64,
    pub opens: u64,
}

/// [`purge`] with the retention period stored now (`TRACKING_RETENTION_DAYS`): what the CLI and the
/// dashboard's daily job run, so a changed setting counts from the next run on.
pub fn purge_as_configured(
    conn: &mut Connection,
    chunks: Chunks,
) -> Result<(RetentionDays, Purged), StoreError> {
    let keep = crate::store::settings::load(conn)?.tracking_retention;
    Ok((keep, purge(conn, keep, chunks)?))
}

/// Deletes the tracked messages and the opens older than `keep` days (and every open of a deleted
/// message), in transactions of at most `chunks`. Returns what was deleted.
pub fn purge(
    conn: &mut Connection,
    keep: RetentionDays,
    chunks: Chunks,
) -> Result<Purged, StoreError> {
    // One cutoff for the whole run, in the stored format ('YYYY-MM-DD HH:MM:SS', UTC), so the
    // comparisons below are text comparisons on the indexed columns.
    let cutoff: String = conn.query_row(
        "SELECT datetime('now', ?1)",
        [format!("-{} days", keep.days())],
        |r| r.get(0),
    )?;
    let mut purged = Purged::default();
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "DELETE FROM pixel_opens WHERE id IN
               (SELECT id FROM pixel_opens WHERE opened_at < ?1 LIMIT ?2)",
            (&cutoff, chunks.opens),
        )?;
        tx.commit()?;
        purged.opens += n as u64;
        if n == 0 {
            break;
        }
        std::thread::sleep(chunks.pause);
    }
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // The same ordered chunk of old messages for both statements, inside one transaction.
        let opens = tx.execute(
            "DELETE FROM pixel_opens WHERE tracking_id IN
               (SELECT tracking_id FROM tracked_messages WHERE created_at < ?1
                ORDER BY created_at, id LIMIT ?2)",
            (&cutoff, chunks.messages),
        )?;
        let messages = tx.execute(
            "DELETE FROM tracked_messages WHERE id IN
               (SELECT id FROM tracked_messages WHERE created_at < ?1
                ORDER BY created_at, id LIMIT ?2)",
            (&cutoff, chunks.messages),
        )?;
        tx.commit()?;
        purged.opens += opens as u64;
        purged.messages += messages as u64;
        if messages == 0 {
            break;
        }
        std::thread::sleep(chunks.pause);
    }
    Ok(purged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, crate::db::Pool) {
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::db::open_tracking_file(&dir.path().join("t.db"), 2).unwrap();
        (dir, pool)
    }

    fn message(conn: &Connection, id: &str, days_ago: i64) {
        conn.execute(
            "INSERT INTO tracked_messages (tracking_id, sender, recipients, created_at)
             VALUES (?1, 's@x.test', 'r@y.test', datetime('now', ?2))",
            (id, format!("-{days_ago} days")),
        )
        .unwrap();
    }

    fn opens(conn: &Connection, id: &str, days_ago: i64, n: usize) {
        for _ in 0..n {
            conn.execute(
                "INSERT INTO pixel_opens (tracking_id, opened_at) VALUES (?1, datetime('now', ?2))",
                (id, format!("-{days_ago} days")),
            )
            .unwrap();
        }
    }

    fn ids(conn: &Connection, sql: &str) -> Vec<(String, i64)> {
        conn.prepare(sql)
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// Old messages go with all their opens (also recent ones), old opens of recent messages go,
    /// everything newer than the cutoff stays; small chunks give the same result as one big one.
    #[test]
    fn deletes_old_messages_with_their_opens_and_old_opens() {
        for chunks in [
            Chunks::default(),
            Chunks {
                opens: 3,
                messages: 1,
                pause: Duration::ZERO,
            },
        ] {
            let (_dir, pool) = setup();
            let mut conn = pool.get().unwrap();
            message(&conn, "old-1", 200);
            opens(&conn, "old-1", 199, 4);
            opens(&conn, "old-1", 2, 2); // recent opens of an old message
            message(&conn, "old-2", 181);
            opens(&conn, "old-2", 181, 1);
            message(&conn, "recent", 179);
            opens(&conn, "recent", 185, 7); // (the clock may disagree; old opens go anyway)
            opens(&conn, "recent", 100, 3);
            opens(&conn, "recent", 1, 2);
            message(&conn, "today", 0);
            opens(&conn, "today", 0, 1);

            let purged = purge(&mut conn, RetentionDays::new(180).unwrap(), chunks).unwrap();
            assert_eq!(
                purged,
                Purged {
                    messages: 2,
                    opens: 4 + 2 + 1 + 7
                },
                "{chunks:?}"
            );
            assert_eq!(
                ids(
                    &conn,
                    "SELECT tracking_id, 0 FROM tracked_messages ORDER BY created_at"
                ),
                [("recent".to_string(), 0), ("today".to_string(), 0)]
            );
            assert_eq!(
                ids(
                    &conn,
                    "SELECT tracking_id, count(*) FROM pixel_opens GROUP BY tracking_id ORDER BY 1"
                ),
                [("recent".to_string(), 5), ("today".to_string(), 1)]
            );
            // Nothing left to do: a second run deletes nothing.
            let again = purge(&mut conn, RetentionDays::new(180).unwrap(), chunks).unwrap();
            assert_eq!(again, Purged::default());
        }
    }

    /// Each chunk is its own transaction: between two, another connection gets the write lock.
    #[test]
    fn other_writers_get_the_lock_between_chunks() {
        let (_dir, pool) = setup();
        let mut conn = pool.get().unwrap();
        for i in 0..40 {
            message(&conn, &format!("old-{i}"), 365);
            opens(&conn, &format!("old-{i}"), 365, 2);
        }
        let other = pool.clone();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let purging = std::sync::Arc::clone(&done);
        // Writes while the purge runs, as the milter would; counts what got through meanwhile.
        let writer = std::thread::spawn(move || {
            let conn = other.get().unwrap();
            let mut written = 0;
            while !purging.load(std::sync::atomic::Ordering::Acquire) {
                conn.execute(
                    "INSERT INTO tracked_messages (tracking_id, sender, recipients)
                     VALUES (hex(randomblob(8)), 's@x.test', 'r@y.test')",
                    [],
                )
                .unwrap();
                written += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            written
        });
        let purged = purge(
            &mut conn,
            RetentionDays::new(30).unwrap(),
            Chunks {
                opens: 4,
                messages: 1,
                pause: Duration::from_millis(10),
            },
        )
        .unwrap();
        done.store(true, std::sync::atomic::Ordering::Release);
        assert_eq!(
            purged,
            Purged {
                messages: 40,
                opens: 80
            }
        );
        // Some 60 chunks with 10 ms between them: a purge holding the lock throughout would have let
        // one or two inserts through.
        let written = writer.join().unwrap();
        assert!(written > 20, "the other writer wrote only {written} rows");
        let left: i64 = conn
            .query_row("SELECT count(*) FROM tracked_messages", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, written);
    }
}
