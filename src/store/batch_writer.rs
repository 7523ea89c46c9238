//! One writer thread for rows that many callers append, committing them in batches.
//!
//! Both the milter (a row per tracked message) and the dashboard (a row per pixel fetch) append to
//! a table from many tasks at once. Each commit costs SQLite's locking and WAL writes (some 30
//! system calls and an fsync at checkpoints); one thread with one connection of its own shares them
//! among every item that queued up while the previous transaction was written, and means our own
//! connections never wait on each other's write lock (SQLite's busy handler sleeps). Callers hand an
//! item to a queue bounded in bytes and never block: when the queue is full the item is given back
//! and counted, so a flood costs memory up to the bound and no more. The bound is in bytes, not
//! items, because what an outsider controls is the size of an item (a User-Agent of a pixel fetch):
//! a count bound would let large items multiply the memory it allows. Each item reports its own size
//! ([`QueueItem::queued_bytes`]).
//!
//! What a batch means is the caller's: a [`Batch`] says how to write its items in one transaction
//! and what to do once the batch is written or has failed for good (answer waiting callers, retry
//! part of it...). The thread ends once every [`BatchWriter`] clone is dropped, after writing
//! everything still queued; [`WriterThread::join`] waits for that.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, Transaction, TransactionBehavior};

use thiserror::Error;

use crate::db::{DbError, Pool, PooledConnection};

/// Why a writer could not start.
#[derive(Debug, Error)]
pub enum WriterError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("could not start the {name} thread: {source}")]
    Thread {
        name: &'static str,
        source: std::io::Error,
    },
}

/// An item of a [`BatchWriter`]'s queue, which knows what it costs there.
pub trait QueueItem {
    /// The memory the item holds while queued: its own size plus what it owns on the heap (a close
    /// estimate is enough; it is what the queue's byte budget counts).
    fn queued_bytes(&self) -> usize;
}

/// How a kind of item is written.
pub trait Batch: Send + 'static {
    type Item: QueueItem + Send + 'static;

    /// Writes `items` inside `tx`; the writer commits. An error fails the whole batch.
    fn write(&mut self, tx: &Transaction<'_>, items: &[Self::Item]) -> rusqlite::Result<()>;

    /// Called once per batch, after it was committed (`Ok`) or failed its last attempt (`Err`).
    /// `conn` is the writer's own connection, for a follow-up of the writer's choosing.
    fn finish(
        &mut self,
        conn: &mut Connection,
        items: Vec<Self::Item>,
        result: Result<(), &rusqlite::Error>,
    ) {
        let _ = (conn, items, result);
    }
}

/// Tunables of one writer.
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// The thread's name, also used in log lines.
    pub name: &'static str,
    /// Bytes ([`QueueItem::queued_bytes`]) that may wait for the writer; beyond that
    /// [`BatchWriter::send`] gives items back.
    pub queue_bytes: usize,
    /// Items written per transaction, at most.
    pub max_batch: usize,
    /// Attempts per batch before it is given up (a locked database, a full disk...), with a
    /// growing pause of 200 ms, 400 ms... between them. 1 means no retry.
    pub attempts: u32,
    /// The page cache of the writer's connection in KiB, when it should differ from SQLite's
    /// default (an index written all over needs a larger one).
    pub cache_kib: Option<i64>,
}

/// The sending side; cheap to clone.
pub struct BatchWriter<T> {
    queue: Sender<T>,
    /// Bytes queued and not yet taken by the writer. (An unbounded channel with this count rather
    /// than `sync_channel`, whose bound counts items and which allocates every slot up front.)
    queued: Arc<AtomicUsize>,
    capacity: usize,
    refused: Arc<DropCount>,
}

impl<T> Clone for BatchWriter<T> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
            queued: Arc::clone(&self.queued),
            capacity: self.capacity,
            refused: Arc::clone(&self.refused),
        }
    }
}

/// Counts things given up (items refused by a full queue, recordings dropped) and says so in the
/// log at most once per [`DropCount::LOG_EVERY`]: one line with how many since the last line and in
/// all, however fast they come. A flood must not turn into a flood of log lines.
#[derive(Debug)]
pub struct DropCount {
    source: &'static str,
    what: &'static str,
    total: AtomicU64,
    /// `total` when the last line was logged.
    logged_total: AtomicU64,
    /// Milliseconds after `start` of the last line, plus one (0: never logged).
    logged_at: AtomicU64,
    start: Instant,
}

impl DropCount {
    /// The shortest time between two log lines.
    pub const LOG_EVERY: Duration = Duration::from_secs(10);

    /// `source` and `what` name who drops what, in the log line (`"pixel-opens"`, `"items refused:
    /// the queue is full or the writer stopped"`).
    pub fn new(source: &'static str, what: &'static str) -> Self {
        Self {
            source,
            what,
            total: AtomicU64::new(0),
            logged_total: AtomicU64::new(0),
            logged_at: AtomicU64::new(0),
            start: Instant::now(),
        }
    }

    /// Counts one, and logs a warning when the last one is [`Self::LOG_EVERY`] old (or there was
    /// none).
    pub fn add(&self) {
        let total = self.total.fetch_add(1, Ordering::Relaxed) + 1;
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX) + 1;
        let last = self.logged_at.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= Self::LOG_EVERY.as_millis() as u64;
        if due
            && self
                .logged_at
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            let before = self.logged_total.swap(total, Ordering::AcqRel);
            tracing::warn!(
                source = self.source,
                dropped = total.saturating_sub(before),
                dropped_total = total,
                "{} (logged at most every {} s)",
                self.what,
                Self::LOG_EVERY.as_secs()
            );
        }
    }

    /// How many were counted since the start.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

/// The writer thread, to wait for after the last [`BatchWriter`] is dropped.
pub struct WriterThread(JoinHandle<()>);

impl WriterThread {
    /// Waits until everything queued is written and the thread has ended.
    pub fn join(self) {
        if self.0.join().is_err() {
            tracing::error!("a batch writer thread panicked");
        }
    }
}

impl<T: QueueItem + Send + 'static> BatchWriter<T> {
    /// Starts the writer thread with a connection of its own from `pool`.
    pub fn start<B>(
        pool: &Pool,
        config: WriterConfig,
        batch: B,
    ) -> Result<(Self, WriterThread), WriterError>
    where
        B: Batch<Item = T>,
    {
        let conn = pool.get().map_err(DbError::from)?;
        let (queue, items) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let taken = Arc::clone(&queued);
        let thread = std::thread::Builder::new()
            .name(config.name.into())
            .spawn(move || run(conn, config, batch, items, &taken))
            .map_err(|e| WriterError::Thread {
                name: config.name,
                source: e,
            })?;
        Ok((
            Self {
                queue,
                queued,
                capacity: config.queue_bytes,
                refused: Arc::new(DropCount::new(
                    config.name,
                    "items refused: the queue is full or the writer stopped",
                )),
            },
            WriterThread(thread),
        ))
    }

    /// Queues `item` without waiting. When its bytes do not fit in the queue's budget, or the writer
    /// has stopped, the item is given back (and counted, see [`DropCount`]).
    pub fn send(&self, item: T) -> Result<(), T> {
        let bytes = item.queued_bytes();
        let before = self.queued.fetch_add(bytes, Ordering::AcqRel);
        let sent = if before.saturating_add(bytes) <= self.capacity {
            self.queue.send(item).map_err(|e| e.0)
        } else {
            Err(item)
        };
        sent.inspect_err(|_| {
            self.queued.fetch_sub(bytes, Ordering::AcqRel);
            self.refused.add();
        })
    }

    /// Items refused since the start (queue full or writer stopped).
    pub fn refused(&self) -> u64 {
        self.refused.total()
    }

    /// Bytes queued and not yet taken by the writer.
    pub fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
}

fn run<B: Batch>(
    mut conn: PooledConnection,
    config: WriterConfig,
    mut batch: B,
    items: Receiver<B::Item>,
    queued: &AtomicUsize,
) {
    if let Some(kib) = config.cache_kib
        && let Err(e) = conn.pragma_update(None, "cache_size", -kib)
    {
        tracing::warn!(writer = config.name, error = %e, "could not set the writer's page cache");
    }
    let max = config.max_batch.max(1);
    while let Ok(first) = items.recv() {
        let mut pending = Vec::with_capacity(max.min(1024));
        pending.push(first);
        pending.extend(items.try_iter().take(max - 1));
        let bytes = pending.iter().map(QueueItem::queued_bytes).sum();
        queued.fetch_sub(bytes, Ordering::AcqRel);
        let mut attempt = 1;
        let result = loop {
            match write_once(&mut conn, &mut batch, &pending) {
                Ok(()) => break Ok(()),
                Err(e) if attempt >= config.attempts.max(1) => break Err(e),
                Err(e) => {
                    tracing::warn!(writer = config.name, error = %e, attempt, "writing a batch failed; retrying");
                    std::thread::sleep(Duration::from_millis(200 * u64::from(attempt)));
                    attempt += 1;
                }
            }
        };
        if let Err(e) = &result {
            tracing::error!(writer = config.name, error = %e, items = pending.len(), "writing a batch failed");
        }
        batch.finish(&mut conn, pending, result.as_ref().map(|_| ()));
    }
    tracing::debug!(writer = config.name, "batch writer stopped");
}

fn write_once<B: Batch>(
    conn: &mut Connection,
    batch: &mut B,
    items: &[B::Item],
) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    batch.write(&tx, items)?;
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Numbers {
        finished: Arc<Mutex<Vec<(usize, bool)>>>,
    }

    impl QueueItem for i64 {
        fn queued_bytes(&self) -> usize {
            8
        }
    }

    impl Batch for Numbers {
        type Item = i64;
        fn write(&mut self, tx: &Transaction<'_>, items: &[i64]) -> rusqlite::Result<()> {
            for n in items {
                tx.execute("INSERT INTO t (n) VALUES (?1)", [n])?;
            }
            Ok(())
        }
        fn finish(&mut self, _: &mut Connection, items: Vec<i64>, r: Result<(), &rusqlite::Error>) {
            self.finished.lock().unwrap().push((items.len(), r.is_ok()));
        }
    }

    fn pool() -> (tempfile::TempDir, Pool) {
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::db::open(&dir.path().join("t.db"), 2).unwrap();
        pool.get()
            .unwrap()
            .execute_batch("CREATE TABLE t (n INTEGER NOT NULL UNIQUE)")
            .unwrap();
        (dir, pool)
    }

    const CONFIG: WriterConfig = WriterConfig {
        name: "test-writer",
        queue_bytes: 80_000,
        max_batch: 64,
        attempts: 1,
        cache_kib: Some(1024),
    };

    /// Every item sent from many threads is written, in batches, and the thread drains its queue
    /// before it ends.
    #[test]
    fn writes_everything_in_batches_then_stops() {
        let (_dir, pool) = pool();
        let finished = Arc::new(Mutex::new(Vec::new()));
        let (writer, thread) = BatchWriter::start(
            &pool,
            CONFIG,
            Numbers {
                finished: Arc::clone(&finished),
            },
        )
        .unwrap();
        let senders: Vec<_> = (0..4)
            .map(|t| {
                let w = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        w.send(t * 1000 + i).unwrap();
                    }
                })
            })
            .collect();
        for s in senders {
            s.join().unwrap();
        }
        drop(writer);
        thread.join();
        let n: i64 = pool
            .get()
            .unwrap()
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2000);
        let finished = finished.lock().unwrap();
        assert!(finished.iter().all(|(len, ok)| *ok && *len <= 64));
        assert_eq!(finished.iter().map(|(len, _)| len).sum::<usize>(), 2000);
    }

    /// A failing batch is reported to `finish` as failed, and its items are not written.
    #[test]
    fn a_failed_batch_is_reported() {
        let (_dir, pool) = pool();
        let finished = Arc::new(Mutex::new(Vec::new()));
        let (writer, thread) = BatchWriter::start(
            &pool,
            WriterConfig {
                max_batch: 1,
                attempts: 2,
                ..CONFIG
            },
            Numbers {
                finished: Arc::clone(&finished),
            },
        )
        .unwrap();
        writer.send(7).unwrap();
        writer.send(7).unwrap(); // violates UNIQUE: fails twice, then is given up
        writer.send(8).unwrap();
        drop(writer);
        thread.join();
        assert_eq!(
            *finished.lock().unwrap(),
            [(1, true), (1, false), (1, true)]
        );
    }

    /// A full queue gives the item back instead of blocking the caller.
    #[test]
    fn a_full_queue_gives_items_back() {
        let (_dir, pool) = pool();
        // Hold the write lock so the writer stalls on its first batch.
        let blocker = pool.get().unwrap();
        blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
        let (writer, thread) = BatchWriter::start(
            &pool,
            WriterConfig {
                queue_bytes: 16,
                attempts: 1,
                ..CONFIG
            },
            Numbers {
                finished: Arc::default(),
            },
        )
        .unwrap();
        let refused = (0..50).filter(|i| writer.send(*i).is_err()).count();
        // At most the queue's 2, twice (before and after the writer took its first batch).
        assert!(refused >= 45, "only {refused} refused");
        blocker.execute_batch("ROLLBACK").unwrap();
        drop(writer);
        thread.join();
    }

    /// Rows of any size: a text column, so the queue's budget is tested in bytes.
    struct Texts;

    impl QueueItem for String {
        fn queued_bytes(&self) -> usize {
            std::mem::size_of::<String>() + self.len()
        }
    }

    impl Batch for Texts {
        type Item = String;
        fn write(&mut self, tx: &Transaction<'_>, items: &[String]) -> rusqlite::Result<()> {
            for s in items {
                tx.execute("INSERT INTO s (v) VALUES (?1)", [s])?;
            }
            Ok(())
        }
    }

    /// The budget counts bytes, not items: with the writer stalled, 64 KiB of queue takes every
    /// small item that fits and refuses a large one, counts the refusals, and once the writer
    /// catches up the queue is empty again and takes items once more.
    #[test]
    fn the_queue_is_bounded_in_bytes() {
        let (_dir, pool) = pool();
        pool.get()
            .unwrap()
            .execute_batch("CREATE TABLE s (v TEXT NOT NULL)")
            .unwrap();
        let blocker = pool.get().unwrap();
        blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
        let budget = 64 * 1024;
        let (writer, thread) = BatchWriter::start(
            &pool,
            WriterConfig {
                queue_bytes: budget,
                max_batch: 1,
                attempts: 50,
                ..CONFIG
            },
            Texts,
        )
        .unwrap();
        let small = "x".repeat(100);
        let each = small.queued_bytes();
        // The writer takes the first item and stalls on it; the rest wait in the queue.
        writer.send(small.clone()).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(writer.queued_bytes(), 0);
        let accepted = (0..10_000)
            .take_while(|_| writer.send(small.clone()).is_ok())
            .count();
        assert_eq!(accepted, budget / each);
        assert!(writer.queued_bytes() <= budget);
        assert_eq!(writer.refused(), 1);
        // Room for one more small item, but not for a large one.
        let large = "y".repeat(budget);
        assert!(writer.send(large.clone()).is_err());
        assert_eq!(writer.refused(), 2);

        blocker.execute_batch("ROLLBACK").unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while writer.queued_bytes() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(writer.queued_bytes(), 0);
        writer.send(large[..budget / 2].to_string()).unwrap();
        drop(writer);
        thread.join();
        let rows: i64 = pool
            .get()
            .unwrap()
            .query_row("SELECT count(*) FROM s", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows as usize, 1 + accepted + 1);
    }

    /// However many are dropped, the log gets one line per period; the count is exact.
    #[test]
    fn drop_counts_are_exact_and_their_log_is_rate_limited() {
        let count = DropCount::new("test", "test items dropped");
        for _ in 0..100_000 {
            count.add();
        }
        assert_eq!(count.total(), 100_000);
        // One line was logged (the first drop); the next is not due for LOG_EVERY.
        assert_eq!(count.logged_total.load(Ordering::Relaxed), 1);
    }
}
