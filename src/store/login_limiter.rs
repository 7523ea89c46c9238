//! The failed-login limiter: how many times a client address (and an address with a user name) may
//! try the dashboard's password before it has to wait.
//!
//! Why in the database: `mailserver admin reset-password` runs in another process and must be able
//! to clear every lockout, and a lockout must survive a restart of the dashboard.
//!
//! Why an attempt is counted *before* the password is checked: a check takes an Argon2 hash (tens of
//! milliseconds of a core). If failures were recorded after the check, a hundred concurrent wrong
//! passwords would all be checked before the first failure was written. Here [`begin_attempt`]
//! counts the attempt in one write transaction (SQLite serialises writers), and only an attempt it
//! lets through may be checked; a successful login then deletes the row ([`succeed`]). The first
//! [`FREE_ATTEMPTS`] attempts pass; each one after that also locks the key, for 2 s at first (at
//! least a full second, whatever the fraction of the current one), doubling with every attempt up
//! to [`MAX_LOCKOUT`], so a burst gets at most `FREE_ATTEMPTS + 1` checks.
//!
//! Why only per address, and per address + user name, and never per user name alone: a per-user
//! lock lets anyone lock the admin out by failing on purpose. The admin coming from an address that
//! has not failed is therefore never refused here (the dashboard also caps how many checks run at
//! once, which may make them retry a moment later, but not wait for a lockout). An IPv6 client is
//! keyed by its /64, the block one host usually has to itself.
//!
//! Bounded: rows of keys that have not tried for [`MEMORY`] and are not locked are deleted, and the
//! table never holds more than [`MAX_ROWS`] rows (the least recently used go first). All times are
//! Unix seconds, passed in, so tests can move the clock.

use std::net::IpAddr;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior};

use super::StoreError;

/// Attempts a key may make before each further attempt locks it for a while.
pub const FREE_ATTEMPTS: i64 = 5;
/// The longest lockout.
pub const MAX_LOCKOUT: Duration = Duration::from_secs(15 * 60);
/// A key's attempts are forgotten after this long without a new one (unless it is locked).
pub const MEMORY: Duration = Duration::from_secs(3600);
/// The most rows the table holds.
pub const MAX_ROWS: i64 = 10_000;
/// The longest user name kept in a key (longer ones are cut: they are not admins anyway).
const MAX_KEY_USER: usize = 64;

/// What an attempt is counted against: the client's address, and the address with the user name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitKeys {
    keys: [String; 2],
}

impl LimitKeys {
    /// The keys of a login attempt by `username` from `ip` (`None`: the address is not known, which
    /// the dashboard never sees in practice; such attempts share one key).
    pub fn new(ip: Option<IpAddr>, username: &str) -> Self {
        let ip = match ip {
            Some(IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
            Some(IpAddr::V6(v6)) => v6.to_canonical().to_string(),
            Some(ip) => ip.to_string(),
            None => "unknown".to_string(),
        };
        let user: String = username.to_lowercase().chars().take(MAX_KEY_USER).collect();
        Self {
            keys: [format!("ip {ip}"), format!("ip+user {ip} {user}")],
        }
    }

    pub fn as_slice(&self) -> &[String] {
        &self.keys
    }
}

/// The limiter's answer to an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Counted: check the password now, and call [`succeed`] if it is right.
    Allowed,
    /// Not counted, and the password must not be checked: try again in this many seconds (≥ 1).
    Locked { retry_after: u64 },
}

/// Counts an attempt against `keys` at `now`, unless one of them is locked. All or nothing: a locked
/// key means no key is counted.
pub fn begin_attempt(
    conn: &mut Connection,
    keys: &LimitKeys,
    now: i64,
) -> Result<Attempt, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    prune(&tx, now)?;
    let mut new_rows = false;
    for key in keys.as_slice() {
        // The WHERE leaves a locked row alone, and then RETURNING gives no row.
        let counted: Option<i64> = tx
            .query_row(
                "INSERT INTO login_failures (key, attempts, last_attempt, locked_until)
                 VALUES (?1, 1, ?2, 0)
                 ON CONFLICT (key) DO UPDATE SET
                     attempts = attempts + 1,
                     last_attempt = ?2,
                     locked_until = CASE WHEN attempts + 1 > ?3
                         THEN ?2 + min(?4, 2 << min(attempts - ?3, 20)) ELSE 0 END
                 WHERE locked_until <= ?2
                 RETURNING attempts",
                (key, now, FREE_ATTEMPTS, MAX_LOCKOUT.as_secs() as i64),
                |r| r.get(0),
            )
            .optional()?;
        match counted {
            Some(1) => new_rows = true,
            Some(_) => {}
            None => {
                let until: i64 = tx.query_row(
                    "SELECT locked_until FROM login_failures WHERE key = ?1",
                    [key],
                    |r| r.get(0),
                )?;
                // Dropping the transaction rolls back the other key's count.
                return Ok(Attempt::Locked {
                    retry_after: u64::try_from(until - now).unwrap_or(0).max(1),
                });
            }
        }
    }
    if new_rows {
        cap(&tx, now)?;
    }
    tx.commit()?;
    Ok(Attempt::Allowed)
}

/// A successful login: forgets the attempts of `keys`.
pub fn succeed(conn: &Connection, keys: &LimitKeys) -> Result<(), StoreError> {
    for key in keys.as_slice() {
        conn.execute("DELETE FROM login_failures WHERE key = ?1", [key])?;
    }
    Ok(())
}

/// Forgets every attempt and lifts every lockout (`mailserver admin reset-password`). Returns how
/// many keys were locked.
pub fn clear_all(conn: &Connection, now: i64) -> Result<usize, StoreError> {
    let locked: i64 = conn.query_row(
        "SELECT count(*) FROM login_failures WHERE locked_until > ?1",
        [now],
        |r| r.get(0),
    )?;
    conn.execute("DELETE FROM login_failures", [])?;
    Ok(locked as usize)
}

/// Deletes the rows of keys that have not tried for [`MEMORY`] and are not locked.
fn prune(conn: &Connection, now: i64) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM login_failures WHERE last_attempt < ?1 AND locked_until <= ?2",
        (now - MEMORY.as_secs() as i64, now),
    )?;
    Ok(())
}

/// Keeps at most [`MAX_ROWS`] rows: unlocked ones go first, then the least recently used.
fn cap(conn: &Connection, now: i64) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM login_failures WHERE key IN (
             SELECT key FROM login_failures
             ORDER BY locked_until > ?2, last_attempt
             LIMIT max(0, (SELECT count(*) FROM login_failures) - ?1))",
        (MAX_ROWS, now),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testutil;

    const T0: i64 = 1_800_000_000;

    fn keys(ip: &str, user: &str) -> LimitKeys {
        LimitKeys::new(Some(ip.parse().unwrap()), user)
    }

    fn locked(r: Attempt) -> Option<u64> {
        match r {
            Attempt::Allowed => None,
            Attempt::Locked { retry_after } => Some(retry_after),
        }
    }

    #[test]
    fn the_attempts_after_the_free_ones_lock_for_longer_each_time_up_to_the_cap() {
        let (_dir, mut conn) = testutil::conn();
        let k = keys("192.0.2.1", "admin");
        for _ in 0..FREE_ATTEMPTS {
            assert_eq!(begin_attempt(&mut conn, &k, T0).unwrap(), Attempt::Allowed);
        }
        // The sixth attempt is checked, and locks for 2 s; a seventh at once is refused.
        assert_eq!(begin_attempt(&mut conn, &k, T0).unwrap(), Attempt::Allowed);
        assert_eq!(locked(begin_attempt(&mut conn, &k, T0).unwrap()), Some(2));
        assert_eq!(
            locked(begin_attempt(&mut conn, &k, T0 + 1).unwrap()),
            Some(1)
        );
        assert_eq!(
            begin_attempt(&mut conn, &k, T0 + 2).unwrap(),
            Attempt::Allowed
        );
        assert_eq!(
            locked(begin_attempt(&mut conn, &k, T0 + 2).unwrap()),
            Some(4)
        );
        let mut now = T0;
        let mut last_lock = 0;
        for _ in 0..30 {
            // Wait out the lockout, then try again.
            while let Attempt::Locked { retry_after } = begin_attempt(&mut conn, &k, now).unwrap() {
                last_lock = retry_after;
                now += retry_after as i64;
            }
        }
        assert_eq!(last_lock, MAX_LOCKOUT.as_secs());
        succeed(&conn, &k).unwrap();
        assert_eq!(begin_attempt(&mut conn, &k, now).unwrap(), Attempt::Allowed);
    }

    #[test]
    fn the_keys_are_per_address_and_per_address_and_user_never_per_user() {
        let (_dir, mut conn) = testutil::conn();
        let attacker = keys("192.0.2.1", "admin");
        for _ in 0..=FREE_ATTEMPTS {
            begin_attempt(&mut conn, &attacker, T0).unwrap();
        }
        assert!(locked(begin_attempt(&mut conn, &attacker, T0).unwrap()).is_some());
        // Another user name from the same address: the address is locked.
        assert!(
            locked(begin_attempt(&mut conn, &keys("192.0.2.1", "other"), T0).unwrap()).is_some()
        );
        // The admin from another address is not.
        assert_eq!(
            begin_attempt(&mut conn, &keys("192.0.2.2", "admin"), T0).unwrap(),
            Attempt::Allowed
        );
        // The same /64 is the same client; another /64 is not.
        let v6 = keys("2001:db8:1:2::1", "admin");
        for _ in 0..=FREE_ATTEMPTS {
            begin_attempt(&mut conn, &v6, T0).unwrap();
        }
        assert!(
            locked(begin_attempt(&mut conn, &keys("2001:db8:1:2::ffff", "x"), T0).unwrap())
                .is_some()
        );
        assert_eq!(
            begin_attempt(&mut conn, &keys("2001:db8:1:3::1", "admin"), T0).unwrap(),
            Attempt::Allowed
        );
    }

    #[test]
    fn a_locked_key_counts_nothing_against_the_other() {
        let (_dir, mut conn) = testutil::conn();
        // Lock the address + user key only, by rows planted directly.
        conn.execute(
            "INSERT INTO login_failures VALUES ('ip+user 192.0.2.1 admin', 9, ?1, ?2)",
            (T0, T0 + 60),
        )
        .unwrap();
        assert_eq!(
            locked(begin_attempt(&mut conn, &keys("192.0.2.1", "admin"), T0).unwrap()),
            Some(60)
        );
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM login_failures WHERE key = 'ip 192.0.2.1'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(
            n, 0,
            "the address key was counted although the attempt was refused"
        );
    }

    #[test]
    fn old_rows_are_forgotten_and_the_table_is_capped() {
        let (_dir, mut conn) = testutil::conn();
        begin_attempt(&mut conn, &keys("192.0.2.1", "a"), T0).unwrap();
        begin_attempt(
            &mut conn,
            &keys("192.0.2.2", "a"),
            T0 + MEMORY.as_secs() as i64 + 1,
        )
        .unwrap();
        let keys_left: Vec<String> = conn
            .prepare("SELECT key FROM login_failures ORDER BY key")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(keys_left, ["ip 192.0.2.2", "ip+user 192.0.2.2 a"]);

        // Fill the table to the cap with rows planted directly, then one more attempt.
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
             INSERT INTO login_failures SELECT 'ip 10.' || i, 1, ?2, 0 FROM n",
            (MAX_ROWS, T0 + 3600),
        )
        .unwrap();
        begin_attempt(&mut conn, &keys("192.0.2.3", "a"), T0 + 3601).unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM login_failures", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, MAX_ROWS);
        let newest: i64 = conn
            .query_row(
                "SELECT count(*) FROM login_failures WHERE key LIKE '%192.0.2.3%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(newest, 2, "the newest rows were the ones dropped");
    }

    #[test]
    fn clear_all_lifts_every_lockout() {
        let (_dir, mut conn) = testutil::conn();
        let k = keys("192.0.2.1", "admin");
        for _ in 0..=FREE_ATTEMPTS {
            begin_attempt(&mut conn, &k, T0).unwrap();
        }
        assert!(locked(begin_attempt(&mut conn, &k, T0).unwrap()).is_some());
        assert_eq!(clear_all(&conn, T0).unwrap(), 2);
        assert_eq!(begin_attempt(&mut conn, &k, T0).unwrap(), Attempt::Allowed);
    }
}
