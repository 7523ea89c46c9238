//! Dashboard sessions: who is logged in, until when, and each session's CSRF token.
//!
//! Why in the database: `mailserver admin reset-password` (another process) must be able to end
//! every session, and a restart of the dashboard should not log anyone out. The cookie carries a
//! random 256-bit id; only its SHA-256 is stored, so a copy of the database (a backup, a leaked
//! file) hands out no live session.
//!
//! A session ends after [`IDLE_TIMEOUT`] without a request, and [`LIFETIME`] after the login however
//! busy it is. `last_seen` is written at most once per [`TOUCH_EVERY`], so browsing the dashboard
//! does not turn every page view into a database write. Times are Unix seconds, passed in, so tests
//! can move the clock. Each admin keeps at most [`MAX_PER_ADMIN`] sessions (the oldest go first).

use std::time::Duration;

use base64::Engine as _;
use rusqlite::{Connection, OptionalExtension as _};
use sha2::{Digest as _, Sha256};

use super::StoreError;

/// A session ends after this long without a request.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// A session ends this long after the login, however busy.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// `last_seen` is updated at most this often.
pub const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// The most sessions one admin keeps.
pub const MAX_PER_ADMIN: i64 = 50;

/// A live session, as a request finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub username: String,
    /// The token every form of this session must carry.
    pub csrf: String,
}

/// A session just started: the id goes into the cookie (it is not stored anywhere).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    pub id: String,
    pub csrf: String,
}

/// A random URL-safe token of 256 bits (session ids, CSRF tokens).
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What the table stores for a session id.
fn id_hash(id: &str) -> String {
    Sha256::digest(id.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Starts a session for `username` at `now` (and drops expired ones, and the admin's oldest beyond
/// [`MAX_PER_ADMIN`]).
pub fn create(conn: &Connection, username: &str, now: i64) -> Result<NewSession, StoreError> {
    prune(conn, now)?;
    let new = NewSession {
        id: random_token(),
        csrf: random_token(),
    };
    conn.execute(
        "INSERT INTO admin_sessions (id_sha256, username, csrf, created_at, last_seen)
         VALUES (?1, ?2, ?3, ?4, ?4)",
        (id_hash(&new.id), username, &new.csrf, now),
    )?;
    conn.execute(
        "DELETE FROM admin_sessions WHERE id_sha256 IN (
             SELECT id_sha256 FROM admin_sessions WHERE username = ?1
             ORDER BY created_at DESC LIMIT -1 OFFSET ?2)",
        (username, MAX_PER_ADMIN),
    )?;
    Ok(new)
}

/// The live session with cookie id `id` at `now`, if any; marks it as seen (at most once per
/// [`TOUCH_EVERY`]).
pub fn find(conn: &Connection, id: &str, now: i64) -> Result<Option<Session>, StoreError> {
    let hash = id_hash(id);
    let found = conn
        .query_row(
            "SELECT username, csrf, last_seen FROM admin_sessions
             WHERE id_sha256 = ?1 AND last_seen > ?2 - ?3 AND created_at > ?2 - ?4",
            (
                &hash,
                now,
                IDLE_TIMEOUT.as_secs() as i64,
                LIFETIME.as_secs() as i64,
            ),
            |r| {
                Ok((
                    Session {
                        username: r.get(0)?,
                        csrf: r.get(1)?,
                    },
                    r.get::<_, i64>(2)?,
                ))
            },
        )
        .optional()?;
    let Some((session, last_seen)) = found else {
        return Ok(None);
    };
    if now - last_seen >= TOUCH_EVERY.as_secs() as i64 {
        conn.execute(
            "UPDATE admin_sessions SET last_seen = ?2 WHERE id_sha256 = ?1",
            (&hash, now),
        )?;
    }
    Ok(Some(session))
}

/// Ends the session with cookie id `id` (logout). Returns whether there was one.
pub fn end(conn: &Connection, id: &str) -> Result<bool, StoreError> {
    Ok(conn.execute(
        "DELETE FROM admin_sessions WHERE id_sha256 = ?1",
        [id_hash(id)],
    )? > 0)
}

/// Ends every session of `username` except the one with cookie id `keep` (after a password or 2FA
/// change). Returns how many it ended.
pub fn end_others(conn: &Connection, username: &str, keep: &str) -> Result<usize, StoreError> {
    Ok(conn.execute(
        "DELETE FROM admin_sessions WHERE username = ?1 AND id_sha256 <> ?2",
        (username, id_hash(keep)),
    )?)
}

/// Ends every session of every admin (`mailserver admin reset-password`). Returns how many were live
/// at `now`.
pub fn end_all(conn: &Connection, now: i64) -> Result<usize, StoreError> {
    prune(conn, now)?;
    Ok(conn.execute("DELETE FROM admin_sessions", [])?)
}

/// Deletes expired sessions.
fn prune(conn: &Connection, now: i64) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM admin_sessions WHERE last_seen <= ?1 - ?2 OR created_at <= ?1 - ?3",
        (
            now,
            IDLE_TIMEOUT.as_secs() as i64,
            LIFETIME.as_secs() as i64,
        ),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{admins, testutil};

    const T0: i64 = 1_800_000_000;
    const IDLE: i64 = IDLE_TIMEOUT.as_secs() as i64;

    fn conn_with_admin() -> (tempfile::TempDir, crate::db::PooledConnection) {
        let (dir, conn) = testutil::conn();
        admins::reset_password(&conn, "admin", "a-test-password-long-enough", T0).unwrap();
        (dir, conn)
    }

    #[test]
    fn a_session_is_found_by_its_id_and_only_its_hash_is_stored() {
        let (_dir, conn) = conn_with_admin();
        let s = create(&conn, "admin", T0).unwrap();
        assert_ne!(s.id, s.csrf);
        assert_eq!(
            find(&conn, &s.id, T0 + 1).unwrap(),
            Some(Session {
                username: "admin".into(),
                csrf: s.csrf.clone()
            })
        );
        assert_eq!(find(&conn, "not-a-session", T0).unwrap(), None);
        let stored: String = conn
            .query_row("SELECT id_sha256 FROM admin_sessions", [], |r| r.get(0))
            .unwrap();
        assert_eq!(stored.len(), 64);
        assert!(!stored.contains(&s.id));
    }

    #[test]
    fn idle_sessions_end_and_use_keeps_them_alive_until_the_lifetime() {
        let (_dir, conn) = conn_with_admin();
        let s = create(&conn, "admin", T0).unwrap();
        // Used every 50 minutes: alive for the whole lifetime, and not a second longer.
        let mut now = T0;
        while now + 3000 < T0 + LIFETIME.as_secs() as i64 {
            now += 3000;
            assert!(
                find(&conn, &s.id, now).unwrap().is_some(),
                "at {}",
                now - T0
            );
        }
        assert!(
            find(&conn, &s.id, T0 + LIFETIME.as_secs() as i64)
                .unwrap()
                .is_none()
        );
        // Left alone: gone after the idle timeout.
        let s = create(&conn, "admin", T0).unwrap();
        assert!(find(&conn, &s.id, T0 + IDLE - 1).unwrap().is_some());
        let s = create(&conn, "admin", T0).unwrap();
        assert!(find(&conn, &s.id, T0 + IDLE).unwrap().is_none());
    }

    #[test]
    fn last_seen_is_written_at_most_once_a_minute() {
        let (_dir, conn) = conn_with_admin();
        let s = create(&conn, "admin", T0).unwrap();
        let last_seen = || -> i64 {
            conn.query_row("SELECT last_seen FROM admin_sessions", [], |r| r.get(0))
                .unwrap()
        };
        find(&conn, &s.id, T0 + 59).unwrap();
        assert_eq!(last_seen(), T0);
        find(&conn, &s.id, T0 + 60).unwrap();
        assert_eq!(last_seen(), T0 + 60);
    }

    #[test]
    fn ending_sessions() {
        let (_dir, conn) = conn_with_admin();
        let a = create(&conn, "admin", T0).unwrap();
        let b = create(&conn, "admin", T0).unwrap();
        let c = create(&conn, "admin", T0).unwrap();
        assert_eq!(end_others(&conn, "admin", &a.id).unwrap(), 2);
        assert!(find(&conn, &a.id, T0).unwrap().is_some());
        assert!(find(&conn, &b.id, T0).unwrap().is_none());
        assert!(end(&conn, &a.id).unwrap());
        assert!(!end(&conn, &a.id).unwrap());
        assert!(find(&conn, &a.id, T0).unwrap().is_none());
        let d = create(&conn, "admin", T0).unwrap();
        assert_eq!(end_all(&conn, T0).unwrap(), 1);
        assert!(find(&conn, &d.id, T0).unwrap().is_none());
        assert!(find(&conn, &c.id, T0).unwrap().is_none());
    }

    #[test]
    fn an_admin_keeps_a_bounded_number_of_sessions() {
        let (_dir, conn) = conn_with_admin();
        let first = create(&conn, "admin", T0).unwrap();
        for i in 0..MAX_PER_ADMIN {
            create(&conn, "admin", T0 + 1 + i).unwrap();
        }
        let n: i64 = conn
            .query_row("SELECT count(*) FROM admin_sessions", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, MAX_PER_ADMIN);
        assert!(find(&conn, &first.id, T0 + 100).unwrap().is_none());
    }
}
