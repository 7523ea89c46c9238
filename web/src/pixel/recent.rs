//! Which (tracking id, client address, User-Agent) triples were recorded in the last hour or two:
//! the pixel records one open per triple per hour, however often a client fetches it.
//!
//! Why this shape: a mail client reloading the image, or someone with `curl` in a loop, must not
//! become thousands of rows; and the set itself must not become the thing that fills the memory. A
//! triple is kept as a keyed 64-bit hash (SipHash with this process's random key, so nobody can aim
//! collisions at it), in one of two sets: the current hour's and the previous hour's, so a triple
//! stays at least one hour and at most two. When both sets together hold [`RecentOpens::new`]'s cap,
//! a new triple is refused (the caller drops that recording and counts it) rather than evicting one
//! that would then be recorded twice.

use std::collections::HashSet;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a triple is remembered, at least (and at most twice this).
pub const WINDOW: Duration = Duration::from_secs(3600);

/// What [`RecentOpens::first_time`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not seen within the window: now remembered; record the open.
    First,
    /// Recorded already within the window.
    Again,
    /// The set is full: not remembered; drop the recording.
    Full,
}

/// The set of recently recorded triples. Shared by every request.
pub struct RecentOpens {
    key: RandomState,
    cap: usize,
    start: Instant,
    sets: Mutex<Generations>,
}

struct Generations {
    /// The window number (time since `start` / [`WINDOW`]) of `current`.
    window: u64,
    current: HashSet<u64, Prehashed>,
    previous: HashSet<u64, Prehashed>,
}

/// The keys are SipHash values already: the set uses them as they are.
type Prehashed = BuildHasherDefault<Identity>;

#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed (write_u64); fold anything else in, for completeness.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl RecentOpens {
    /// A set that holds at most `cap` triples (some 10 bytes each).
    pub fn new(cap: usize) -> Self {
        Self {
            key: RandomState::new(),
            cap,
            start: Instant::now(),
            sets: Mutex::new(Generations {
                window: 0,
                current: HashSet::default(),
                previous: HashSet::default(),
            }),
        }
    }

    /// Whether the open of `id` by `client` with `user_agent` is the first within the window; a
    /// first one is remembered from now on.
    pub fn first_time(&self, id: &[u8], client: &[u8], user_agent: &[u8]) -> Seen {
        self.first_time_at(id, client, user_agent, self.start.elapsed())
    }

    fn first_time_at(&self, id: &[u8], client: &[u8], user_agent: &[u8], now: Duration) -> Seen {
        let triple = self.key.hash_one((id, client, user_agent));
        let window = now.as_secs() / WINDOW.as_secs();
        let mut sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        if window != sets.window {
            let g = &mut *sets;
            if window == g.window + 1 {
                std::mem::swap(&mut g.previous, &mut g.current);
                g.current.clear();
            } else {
                g.previous.clear();
                g.current.clear();
            }
            g.window = window;
        }
        if sets.current.contains(&triple) || sets.previous.contains(&triple) {
            Seen::Again
        } else if sets.current.len() + sets.previous.len() >= self.cap {
            Seen::Full
        } else {
            sets.current.insert(triple);
            Seen::First
        }
    }

    /// Triples remembered now.
    pub fn len(&self) -> usize {
        let sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        sets.current.len() + sets.previous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3600;

    fn at(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn one_per_triple_per_window() {
        let r = RecentOpens::new(100);
        let t = |id: &str, ip: &str, ua: &str, s| {
            r.first_time_at(id.as_bytes(), ip.as_bytes(), ua.as_bytes(), at(s))
        };
        assert_eq!(t("id1", "192.0.2.1", "UA", 10), Seen::First);
        assert_eq!(t("id1", "192.0.2.1", "UA", 20), Seen::Again);
        // Any part different: another triple.
        assert_eq!(t("id2", "192.0.2.1", "UA", 20), Seen::First);
        assert_eq!(t("id1", "192.0.2.2", "UA", 20), Seen::First);
        assert_eq!(t("id1", "192.0.2.1", "UA2", 20), Seen::First);
        // The parts are kept apart: moving a byte from one to the next is another triple.
        assert_eq!(t("id1", "192.0.2.1U", "A", 20), Seen::First);
        // Still remembered in the next window (at least an hour in all)...
        assert_eq!(t("id1", "192.0.2.1", "UA", HOUR + 5), Seen::Again);
        // ...and forgotten in the one after.
        assert_eq!(t("id1", "192.0.2.1", "UA", 2 * HOUR + 5), Seen::First);
        // After a long quiet time everything is forgotten.
        assert_eq!(t("id2", "192.0.2.1", "UA", 10 * HOUR), Seen::First);
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn a_full_set_refuses_new_triples_and_still_knows_old_ones() {
        let r = RecentOpens::new(1000);
        for i in 0..1000 {
            let ip = format!("10.0.{}.{}", i / 256, i % 256);
            assert_eq!(
                r.first_time_at(b"id", ip.as_bytes(), b"UA", at(1)),
                Seen::First
            );
        }
        assert_eq!(
            r.first_time_at(b"id", b"192.0.2.9", b"UA", at(2)),
            Seen::Full
        );
        assert_eq!(
            r.first_time_at(b"id", b"10.0.0.7", b"UA", at(2)),
            Seen::Again
        );
        assert_eq!(r.len(), 1000);
        // The next window still holds the previous one: full until that one expires too.
        assert_eq!(
            r.first_time_at(b"id", b"192.0.2.9", b"UA", at(HOUR + 1)),
            Seen::Full
        );
        assert_eq!(
            r.first_time_at(b"id", b"192.0.2.9", b"UA", at(2 * HOUR + 1)),
            Seen::First
        );
    }
}
