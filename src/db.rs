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
    (
        "0004_login_state.sql",
        include_str!("../sql/0004_login_state.sql"),
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

    /// Applies the migrations up to `version` only, as an older program would have.
    fn migrate_to(conn: &mut Connection, version: usize) {
        for (i, (_, sql)) in MIGRATIONS[..version].iter().enumerate() {
            let tx = conn.transaction().unwrap();
            tx.execute_batch(sql).unwrap();
            tx.pragma_update(None, "user_version", i as i64 + 1)
                .unwrap();
            tx.commit().unwrap();
        }
    }

    /// 0003 renames the tracking columns: every row, index and the foreign key survive.
    #[test]
    fn tracking_columns_are_renamed_with_their_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "foreign_keys", true).unwrap();
        migrate_to(&mut conn, 2);
        conn.execute_batch(
            "INSERT INTO domains (domain) VALUES ('example.com');
             INSERT INTO aliases (domain_id, source, destination, tracking_enabled)
                 VALUES (1, 'news@example.com', 'a@example.com', 1);
             INSERT INTO tracked_messages (message_id, sender, recipient, subject, alias_id, created_at)
                 VALUES ('VQx3An5C4mtsOVsTUQiGHQ', 'news@example.com', 'x@a.test,y@b.test', 'Hi', 1,
                         '2024-05-01 10:00:00'),
                        ('TrackingIdForTestsAAAA', 'news@example.com', 'z@c.test', '', 1,
                         '2024-05-02 10:00:00');
             INSERT INTO pixel_opens (message_id, client_ip, user_agent, opened_at)
                 VALUES ('VQx3An5C4mtsOVsTUQiGHQ', '192.0.2.1', 'UA 1', '2024-05-01 11:00:00'),
                        ('VQx3An5C4mtsOVsTUQiGHQ', '192.0.2.2', 'UA 2', '2024-05-01 12:00:00'),
                        ('TrackingIdForTestsAAAA', '192.0.2.3', 'UA 3', '2024-05-03 09:00:00');",
        )
        .unwrap();
        drop(conn);
        let pool = open(&path, 1).unwrap();
        let conn = pool.get().unwrap();
        let messages: Vec<(String, String, String)> = conn
            .prepare("SELECT tracking_id, recipients, created_at FROM tracked_messages ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            messages,
            [
                (
                    "VQx3An5C4mtsOVsTUQiGHQ".to_string(),
                    "x@a.test,y@b.test".to_string(),
                    "2024-05-01 10:00:00".to_string()
                ),
                (
                    "TrackingIdForTestsAAAA".to_string(),
                    "z@c.test".to_string(),
                    "2024-05-02 10:00:00".to_string()
                ),
            ]
        );
        let opens: Vec<(String, String, String)> = conn
            .prepare("SELECT tracking_id, client_ip, user_agent FROM pixel_opens ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(opens.len(), 3);
        assert_eq!(opens[2].0, "TrackingIdForTestsAAAA");
        assert_eq!(opens[1].2, "UA 2");
        // The indexes follow the renamed columns.
        let index_sql: String = conn
            .query_row(
                "SELECT sql FROM sqlite_master WHERE name = 'pixel_opens_message'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(index_sql.contains("tracking_id"), "{index_sql}");
        // The foreign key still cascades, and still refuses opens of unknown ids.
        assert!(
            conn.execute(
                "INSERT INTO pixel_opens (tracking_id) VALUES ('AAAAAAAAAAAAAAAAAAAAAA')",
                []
            )
            .is_err()
        );
        conn.execute(
            "DELETE FROM tracked_messages WHERE tracking_id = 'VQx3An5C4mtsOVsTUQiGHQ'",
            [],
        )
        .unwrap();
        let left: i64 = conn
            .query_row("SELECT count(*) FROM pixel_opens", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 1);
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
