//! The SQLite database: one file, the source of truth for everything the daemons run on.
//!
//! Migrations live in `sql/` as numbered files, compiled into the binary and applied at start-up; the
//! schema version is SQLite's `PRAGMA user_version`. The database runs in WAL mode because only our own
//! processes (CLI, dashboard, milter) open it; the daemons read the separate `maps.db` (see
//! [`crate::render::maps`]), which is why G21 (WAL readers without write access) does not apply here.

use std::path::Path;
use std::time::Duration;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OpenFlags};
use thiserror::Error;

pub type Pool = r2d2::Pool<SqliteConnectionManager>;
pub type PooledConnection = r2d2::PooledConnection<SqliteConnectionManager>;

/// How long a connection waits for another writer before giving up with SQLITE_BUSY.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The migrations, in order. Index + 1 is the schema version each one produces.
const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_init.sql", include_str!("../sql/0001_init.sql")),
    (
        "0002_totp_replay.sql",
        include_str!("../sql/0002_totp_replay.sql"),
    ),
    (
        "0003_tracking_names.sql",
        include_str!("../sql/0003_tracking_names.sql"),
    ),
];

#[derive(Debug, Error)]
pub enum DbError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database pool error: {0}")]
    Pool(#[from] r2d2::Error),
    #[error("migration {name} failed: {source}")]
    Migration {
        name: &'static str,
        source: rusqlite::Error,
    },
    #[error(
        "the database has schema version {found}, newer than this program knows ({known}); upgrade the program"
    )]
    TooNew { found: i64, known: i64 },
}

/// Settings applied to every connection we open.
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(())
}

/// Opens (creating if needed) the database at `path`, migrates it, and returns a pool.
pub fn open(path: &Path, max_connections: u32) -> Result<Pool, DbError> {
    {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        configure(&conn)?;
        migrate(&mut conn)?;
    }
    let manager = SqliteConnectionManager::file(path)
        .with_flags(OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .with_init(|c| configure(c));
    Ok(r2d2::Pool::builder()
        .max_size(max_connections)
        .connection_timeout(Duration::from_secs(10))
        .build(manager)?)
}

/// Brings the schema up to the newest version. Each migration runs in its own transaction.
pub fn migrate(conn: &mut Connection) -> Result<i64, DbError> {
    let known = MIGRATIONS.len() as i64;
    let mut version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > known {
        return Err(DbError::TooNew {
            found: version,
            known,
        });
    }
    while version < known {
        let (name, sql) = MIGRATIONS[version as usize];
        let next = version + 1;
        let tx = conn.transaction()?;
        tx.execute_batch(sql)
            .and_then(|()| tx.pragma_update(None, "user_version", next))
            .map_err(|source| DbError::Migration { name, source })?;
        tx.commit()?;
        tracing::info!(migration = name, version = next, "applied migration");
        version = next;
    }
    Ok(version)
}

/// True when `err` is a UNIQUE/PRIMARY KEY constraint violation (used to turn it into a friendly error).
pub fn is_unique_violation(err: &rusqlite::Error) -> bool {
    matches!(
        err,
        rusqlite::Error::SqliteFailure(e, _)
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_sets_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let pool = open(&path, 2).unwrap();
        let conn = pool.get().unwrap();
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
        let fk: i64 = conn
            .pragma_query_value(None, "foreign_keys", |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1);
        drop(conn);
        drop(pool);
        // A second open is a no-op.
        let pool = open(&path, 2).unwrap();
        let mut conn = pool.get().unwrap();
        assert_eq!(migrate(&mut conn).unwrap(), MIGRATIONS.len() as i64);
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        assert!(matches!(
            open(&path, 1),
            Err(DbError::TooNew { found: 99, .. })
        ));
    }

    #[test]
    fn constraints_hold() {
        let dir = tempfile::tempdir().unwrap();
        let pool = open(&dir.path().join("t.db"), 1).unwrap();
        let conn = pool.get().unwrap();
        conn.execute("INSERT INTO domains (domain) VALUES ('example.com')", [])
            .unwrap();
        let dup = conn
            .execute("INSERT INTO domains (domain) VALUES ('example.com')", [])
            .unwrap_err();
        assert!(is_unique_violation(&dup));
        // Foreign keys are enforced.
        assert!(
            conn.execute(
                "INSERT INTO accounts (domain_id, username, password_hash) VALUES (42, 'a', 'x')",
                []
            )
            .is_err()
        );
        // A domain still used by an account cannot be deleted.
        conn.execute(
            "INSERT INTO accounts (domain_id, username, password_hash) VALUES (1, 'a', 'x')",
            [],
        )
        .unwrap();
        assert!(
            conn.execute("DELETE FROM domains WHERE id = 1", [])
                .is_err()
        );
    }
}
