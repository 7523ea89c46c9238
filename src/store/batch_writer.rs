//! One writer thread for rows that many callers append, committing them in batches.
//!
//! Both the milter (a row per tracked message) and the dashboard (a row per pixel fetch) append to
//! a table from many tasks at once. Each commit costs SQLite's locking and WAL writes (some 30
//! system calls and an fsync at checkpoints); one thread with one connection of its own shares them
//! among every item that queued up while the previous transaction was written, and means our own
//! connections never wait on each other's write lock (SQLite's busy handler sleeps). Callers hand an
//! item to a bounded queue and never block: when the queue is full the item is given back and
//! counted, so a flood costs memory up to the bound and no more.
//!
//! What a batch means is the caller's: a [`Batch`] says how to write its items in one transaction
//! and what to do once the batch is written or has failed for good (answer waiting callers, retry
//! part of it...). The thread ends once every [`BatchWriter`] clone is dropped, after writing
//! everything still queued; [`WriterThread::join`] waits for that.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

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

/// How a kind of item is written.
pub trait Batch: Send + 'static {
    type Item: Send + 'static;

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
    /// Items that may wait for the writer; beyond that [`BatchWriter::send`] gives them back.
    pub queue: usize,
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
    /// Items queued and not yet taken by the writer. (An unbounded channel with this count rather
    /// than `sync_channel`, which allocates every slot of its bound up front.)
    queued: Arc<AtomicUsize>,
    capacity: usize,
    refused: Arc<AtomicU64>,
    name: &'static str,
}

impl<T> Clone for BatchWriter<T> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
            queued: Arc::clone(&self.queued),
            capacity: self.capacity,
            refused: Arc::clone(&self.refused),
            name: self.name,
        }
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

impl<T: Send + 'static> BatchWriter<T> {
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
                capacity: config.queue,
                refused: Arc::new(AtomicU64::new(0)),
                name: config.name,
            },
            WriterThread(thread),
        ))
    }

    /// Queues `item` without waiting. When the queue is full or the writer has stopped, the item is
    /// given back (and counted: a warning at every power of two).
    pub fn send(&self, item: T) -> Result<(), T> {
        let sent = if self.queued.fetch_add(1, Ordering::AcqRel) < self.capacity {
            self.queue.send(item).map_err(|e| e.0)
        } else {
            Err(item)
        };
        sent.inspect_err(|_| {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(
                    writer = self.name,
                    refused = n,
                    "batch writer queue full or stopped; items refused"
                );
            }
        })
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
        queued.fetch_sub(pending.len(), Ordering::AcqRel);
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
        queue: 10_000,
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
                queue: 2,
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
}
