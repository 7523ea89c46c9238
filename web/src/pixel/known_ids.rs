//! Which tracking ids exist, and how many opens each has stored or queued: a cache in front of the
//! database, so the pixel queues opens of real messages only, and at most
//! [`MAX_OPENS_PER_MESSAGE`] per message, without asking SQLite on every request.
//!
//! Bounded like everything an outsider can fill: at most `cap` known and `cap` unknown ids (ids are
//! kept as keyed 64-bit hashes); a full side is emptied and fills again from the database. Every
//! entry is forgotten after [`MAX_AGE`], so a message deleted by another process (`mailserver
//! tracking purge`) stops counting as known within that time; the dashboard's own purge clears the
//! cache at once. The database has the last word anyway: the INSERT checks that the message exists
//! and is under the cap.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mailserver::store::tracking::MAX_OPENS_PER_MESSAGE;

/// How long the cache believes what it was told.
pub const MAX_AGE: Duration = Duration::from_secs(3600);

/// What the cache knows about an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// A tracked message with fewer than [`MAX_OPENS_PER_MESSAGE`] opens.
    UnderCap,
    /// A tracked message with all the opens it may have.
    AtCap,
    /// No such message.
    Unknown,
    /// Not cached: ask the database, then [`KnownIds::insert`].
    Ask,
}

pub struct KnownIds {
    key: RandomState,
    cap: usize,
    maps: Mutex<Maps>,
}

struct Maps {
    since: Instant,
    /// Opens stored or queued, per known id.
    known: HashMap<u64, i64>,
    unknown: HashSet<u64>,
}

impl Maps {
    fn fresh() -> Self {
        Self {
            since: Instant::now(),
            known: HashMap::new(),
            unknown: HashSet::new(),
        }
    }
}

impl KnownIds {
    /// A cache of at most `cap` known and `cap` unknown ids (some 30 bytes each).
    pub fn new(cap: usize) -> Self {
        Self {
            key: RandomState::new(),
            cap,
            maps: Mutex::new(Maps::fresh()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Maps> {
        let mut maps = self.maps.lock().unwrap_or_else(|e| e.into_inner());
        if maps.since.elapsed() >= MAX_AGE {
            *maps = Maps::fresh();
        }
        maps
    }

    /// What is known about `id`.
    pub fn get(&self, id: &str) -> Known {
        let h = self.key.hash_one(id);
        let maps = self.lock();
        match maps.known.get(&h) {
            Some(&n) if n < MAX_OPENS_PER_MESSAGE => Known::UnderCap,
            Some(_) => Known::AtCap,
            None if maps.unknown.contains(&h) => Known::Unknown,
            None => Known::Ask,
        }
    }

    /// Counts one more open of a known `id`; false when it has all it may have (or is no longer
    /// cached: the caller asks again next time).
    pub fn count_open(&self, id: &str) -> bool {
        let h = self.key.hash_one(id);
        let mut maps = self.lock();
        match maps.known.get_mut(&h) {
            Some(n) if *n < MAX_OPENS_PER_MESSAGE => {
                *n += 1;
                true
            }
            _ => false,
        }
    }

    /// What the database said: `Some(opens stored)` for a tracked message, `None` for no such id.
    pub fn insert(&self, id: &str, stored_opens: Option<i64>) {
        let h = self.key.hash_one(id);
        let mut maps = self.lock();
        let cap = self.cap;
        match stored_opens {
            Some(n) => {
                if maps.known.len() >= cap {
                    maps.known.clear();
                }
                // A concurrent lookup may have counted opens already: keep the larger count.
                let entry = maps.known.entry(h).or_insert(n);
                *entry = (*entry).max(n);
            }
            None => {
                if maps.unknown.len() >= cap {
                    maps.unknown.clear();
                }
                maps.unknown.insert(h);
            }
        }
    }

    /// Forgets everything (after a purge deleted messages).
    pub fn clear(&self) {
        *self.maps.lock().unwrap_or_else(|e| e.into_inner()) = Maps::fresh();
    }

    /// Ids cached now: (known, unknown).
    pub fn len(&self) -> (usize, usize) {
        let maps = self.lock();
        (maps.known.len(), maps.unknown.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_up_to_the_cap() {
        let k = KnownIds::new(10);
        assert_eq!(k.get("a"), Known::Ask);
        assert!(!k.count_open("a"), "not cached: not counted");
        k.insert("a", Some(MAX_OPENS_PER_MESSAGE - 2));
        assert_eq!(k.get("a"), Known::UnderCap);
        assert!(k.count_open("a"));
        assert!(k.count_open("a"));
        assert!(!k.count_open("a"));
        assert_eq!(k.get("a"), Known::AtCap);
        // A late lookup with an older count does not reset it.
        k.insert("a", Some(3));
        assert_eq!(k.get("a"), Known::AtCap);
        k.insert("b", None);
        assert_eq!(k.get("b"), Known::Unknown);
        k.clear();
        assert_eq!((k.get("a"), k.get("b")), (Known::Ask, Known::Ask));
    }

    #[test]
    fn stays_within_its_cap() {
        let k = KnownIds::new(100);
        for i in 0..10_000 {
            k.insert(&format!("unknown{i}"), None);
            k.insert(&format!("known{i}"), Some(0));
        }
        let (known, unknown) = k.len();
        assert!(known <= 100 && unknown <= 100, "{known} {unknown}");
        assert_eq!(k.get("known9999"), Known::UnderCap);
    }
}
