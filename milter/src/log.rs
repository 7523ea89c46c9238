//! The daemon's log output: lines are gathered in memory and written to stdout in batches, at
//! the latest every [`FLUSH_EVERY`], and at once for warnings and errors.
//!
//! Why: under supervisord, stdout is a pipe that supervisord (Python) reads, waking once for every
//! write. With one line per tracked message, that cost supervisord about 0.15 ms of CPU per message
//! in `scripts/bench-milter.sh`, a third as much as the milter itself. Batched, it wakes a few
//! times a second under load, and the milter saves a system call per line.
//!
//! Nothing is lost on the way out: `main` flushes after the server stops, and a panic flushes
//! before the panic message is printed.

use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// The longest a line waits before it is written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// Lines gathered beyond this are written at once.
const MAX_BUFFERED: usize = 64 * 1024;

/// A [`MakeWriter`] for `tracing_subscriber::fmt` that batches lines before `out`.
pub struct BatchedLines<W: Write + Send + 'static> {
    shared: Arc<Shared<W>>,
}

impl<W: Write + Send + 'static> Clone for BatchedLines<W> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

struct Shared<W> {
    buffered: Mutex<Vec<u8>>,
    out: Mutex<W>,
}

impl<W: Write + Send + 'static> BatchedLines<W> {
    /// Batches lines before `out`; nothing is written until [`flush`](Self::flush), a warning or
    /// [`MAX_BUFFERED`] bytes of lines.
    pub fn new(out: W) -> Self {
        Self {
            shared: Arc::new(Shared {
                buffered: Mutex::new(Vec::new()),
                out: Mutex::new(out),
            }),
        }
    }

    /// Also starts a thread that flushes every [`FLUSH_EVERY`], and a panic hook that flushes
    /// before the panic message.
    pub fn start(out: W) -> Self {
        let lines = Self::new(out);
        let flusher = lines.clone();
        let _ = std::thread::Builder::new()
            .name("log-flush".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(FLUSH_EVERY);
                    flusher.flush();
                }
            });
        let on_panic = lines.clone();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            on_panic.try_flush();
            previous(info);
        }));
        lines
    }

    /// Writes out every gathered line.
    pub fn flush(&self) {
        // `out` first, held while the batch is taken: two flushes at once (the flusher thread and
        // a warning) then write their batches in the order the lines came in.
        let mut out = lock(&self.shared.out);
        let pending = std::mem::take(&mut *lock(&self.shared.buffered));
        write_out(&mut *out, &pending);
    }

    /// [`flush`](Self::flush) for the panic hook: skips the lines rather than wait for a lock, in
    /// case the panic came from this very thread while it held one.
    fn try_flush(&self) {
        let Ok(mut out) = self.shared.out.try_lock() else {
            return;
        };
        let Ok(mut buffered) = self.shared.buffered.try_lock() else {
            return;
        };
        let pending = std::mem::take(&mut *buffered);
        drop(buffered);
        write_out(&mut *out, &pending);
    }
}

fn write_out(out: &mut impl Write, pending: &[u8]) {
    if pending.is_empty() {
        return;
    }
    // Nowhere to report a failed log write; the lines are dropped.
    let _ = out.write_all(pending).and_then(|()| out.flush());
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One event's output; on drop it joins the batch, and a warning or error flushes it.
pub struct Line<'a, W: Write + Send + 'static> {
    lines: &'a BatchedLines<W>,
    urgent: bool,
}

impl<W: Write + Send + 'static> Write for Line<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        lock(&self.lines.shared.buffered).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write + Send + 'static> Drop for Line<'_, W> {
    fn drop(&mut self) {
        if self.urgent || lock(&self.lines.shared.buffered).len() >= MAX_BUFFERED {
            self.lines.flush();
        }
    }
}

impl<'a, W: Write + Send + 'static> MakeWriter<'a> for BatchedLines<W> {
    type Writer = Line<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        Line {
            lines: self,
            urgent: false,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        Line {
            lines: self,
            urgent: *meta.level() <= Level::WARN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer the test can read back, counting the writes that reached it.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut s = self.0.lock().unwrap();
            s.0.extend_from_slice(buf);
            s.1 += 1;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().0.clone()).unwrap()
        }
        fn writes(&self) -> usize {
            self.0.lock().unwrap().1
        }
    }

    fn subscriber(lines: BatchedLines<Sink>) -> impl tracing::Subscriber {
        tracing_subscriber::fmt()
            .with_writer(lines)
            .with_ansi(false)
            .without_time()
            .finish()
    }

    #[test]
    fn info_lines_wait_for_a_flush_and_leave_in_one_write() {
        let sink = Sink::default();
        let lines = BatchedLines::new(sink.clone());
        tracing::subscriber::with_default(subscriber(lines.clone()), || {
            tracing::info!(n = 1, "pixel added");
            tracing::info!(n = 2, "pixel added");
        });
        assert_eq!(sink.text(), "", "written before the flush");
        lines.flush();
        let text = sink.text();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(
            text.contains("pixel added n=1") && text.contains("n=2"),
            "{text}"
        );
        assert_eq!(sink.writes(), 1);
        lines.flush();
        assert_eq!(sink.writes(), 1, "an empty flush wrote");
    }

    #[test]
    fn a_warning_goes_out_at_once_with_what_came_before() {
        let sink = Sink::default();
        let lines = BatchedLines::new(sink.clone());
        tracing::subscriber::with_default(subscriber(lines.clone()), || {
            tracing::info!("first");
            tracing::warn!("delivering unchanged");
        });
        let text = sink.text();
        assert!(text.find("first").unwrap() < text.find("delivering unchanged").unwrap());
    }

    #[test]
    fn a_full_buffer_is_written_without_waiting() {
        let sink = Sink::default();
        let lines = BatchedLines::new(sink.clone());
        tracing::subscriber::with_default(subscriber(lines.clone()), || {
            for i in 0..2000 {
                tracing::info!(i, "a line long enough to fill the buffer soon");
            }
        });
        assert!(sink.writes() >= 1);
        assert!(sink.text().len() >= MAX_BUFFERED);
    }
}
