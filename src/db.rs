//! The SQLite databases: the main one (`db/mailserver.db`), the source of truth for everything the
//! daemons run on, and the tracking one (`tracking/tracking.db`), all the milter may open.
//!
//! Why two: the milter's user must read nothing but what tracking needs (least privilege, issue 12).
//! The main database (admins, account hashes, domains with their public DKIM keys, aliases,
//! settings) is the dashboard's and root's alone; tracking.db holds tracked messages, pixel opens and
//! the tracking policy root renders into it at every apply (the tracked aliases, the pixel base URL).
//! The dashboard opens the main database with tracking.db ATTACHed as `tracking`
//! ([`open_dashboard`]), so the statements in [`crate::store::tracking`] stay unqualified and join
//! across both files.
//!
//! Migrations live in `sql/` (main) and `sql/tracking/` as numbered files, compiled into the binary
//! and applied at start-up; each database's version is its `PRAGMA user_version`. Both run in WAL
//! mode because only our own processes open them; the daemons read the separate `maps.db` (see
//! [`crate::render::maps`]), which is why G21 (WAL readers without write access) does not apply.
//!
//! Root opens these files in directories other users can write: it first refuses a database (or its
//! -wal/-shm) that is a link or not a plain file ([`system::refuse_planted`]) and opens with
//! `SQLITE_OPEN_NOFOLLOW`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OpenFlags};
use thiserror::Error;

use crate::paths::Paths;
use crate::system::{self, UnsafePathError};

pub type Pool = r2d2::Pool<SqliteConnectionManager>;
pub type PooledConnection = r2d2::PooledConnection<SqliteConnectionManager>;

/// How long a connection waits for another writer before giving up with SQLITE_BUSY.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The main database's migrations, in order. Index + 1 is the schema version each one produces.
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
    (
        TRACKING_MOVED,
        include_str!("../sql/0005_tracking_moved.sql"),
    ),
];

/// The main database's migration that drops the tracking tables; their rows are copied to
/// tracking.db first ([`move_tracking`]).
const TRACKING_MOVED: &str = "0005_tracking_moved.sql";

/// tracking.db's migrations, in order, likewise.
const TRACKING_MIGRATIONS: &[(&str, &str)] = &[(
    "tracking/0001_init.sql",
    include_str!("../sql/tracking/0001_init.sql"),
)];

/// The schema name tracking.db is ATTACHed under on the dashboard's connections.
pub const TRACKING_SCHEMA: &str = "tracking";

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
    #[error(
        "the main database still holds {rows} tracking row(s) to move to tracking.db; run `mailserver init` (as root) first"
    )]
    TrackingNotMoved { rows: i64 },
    #[error(transparent)]
    Unsafe(#[from] UnsafePathError),
    #[error("could not create {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Settings applied to every connection we open.
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(())
}

/// How every pooled connection is opened: read-write, never through a symbolic link.
fn pool_flags() -> OpenFlags {
    OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_NOFOLLOW
}

/// Opens (creating if needed) the database at `path` for migrating: in WAL mode, configured. As
/// root, a database or -wal/-shm file that is a link or not a plain file is refused first.
fn open_for_migration(path: &Path) -> Result<Connection, DbError> {
    if nix::unistd::geteuid().is_root() {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            system::refuse_planted(Path::new(&p))?;
        }
    }
    let conn =
        Connection::open_with_flags(path, OpenFlags::default() | OpenFlags::SQLITE_OPEN_NOFOLLOW)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    configure(&conn)?;
    Ok(conn)
}

fn pool(manager: SqliteConnectionManager, max_connections: u32) -> Result<Pool, DbError> {
    Ok(r2d2::Pool::builder()
        .max_size(max_connections)
        .connection_timeout(Duration::from_secs(10))
        .build(manager)?)
}

/// Opens (creating if needed) the main database at `path`, migrates it, and returns a pool of
/// connections to it alone. Refuses ([`DbError::TrackingNotMoved`]) a database whose tracking rows
/// have not been moved yet: [`open_main`] (as `init` does) moves them.
pub fn open(path: &Path, max_connections: u32) -> Result<Pool, DbError> {
    migrate(&mut open_for_migration(path)?)?;
    let manager = SqliteConnectionManager::file(path)
        .with_flags(pool_flags())
        .with_init(|c| configure(c));
    pool(manager, max_connections)
}

/// Opens the main database of `paths` as [`open`] does, moving the tracking rows of an older
/// database into tracking.db (created and migrated here if needed) on the way.
pub fn open_main(paths: &Paths, max_connections: u32) -> Result<Pool, DbError> {
    migrate_both(paths)?;
    let manager = SqliteConnectionManager::file(paths.db())
        .with_flags(pool_flags())
        .with_init(|c| configure(c));
    pool(manager, max_connections)
}

/// Migrates tracking.db and then the main database of `paths` (creating them if needed), moving
/// an older main database's tracking rows to tracking.db on the way.
fn migrate_both(paths: &Paths) -> Result<(), DbError> {
    migrate_tracking(&mut open_for_migration(&paths.tracking_db())?)?;
    migrate_main(
        &mut open_for_migration(&paths.db())?,
        Some(&paths.tracking_db()),
    )?;
    Ok(())
}

/// Opens (creating it and its directory if needed) the tracking.db of `paths` alone, migrated.
pub fn open_tracking(paths: &Paths, max_connections: u32) -> Result<Pool, DbError> {
    create_dir(&paths.tracking_dir())?;
    open_tracking_file(&paths.tracking_db(), max_connections)
}

/// Opens the tracking database at `path` alone, migrated: the milter's only database.
pub fn open_tracking_file(path: &Path, max_connections: u32) -> Result<Pool, DbError> {
    migrate_tracking(&mut open_for_migration(path)?)?;
    let manager = SqliteConnectionManager::file(path)
        .with_flags(pool_flags())
        .with_init(|c| configure(c));
    pool(manager, max_connections)
}

/// The dashboard's pool: the main database (migrated as [`open_main`] does) with tracking.db
/// ATTACHed as [`TRACKING_SCHEMA`] on every connection, so unqualified statements reach the tables
/// of both. No foreign key can cross the two files: a TEMP trigger on each connection keeps the one
/// that did (`tracked_messages.alias_id` is set to NULL when its alias is deleted).
pub fn open_dashboard(paths: &Paths, max_connections: u32) -> Result<Pool, DbError> {
    create_dir(&paths.tracking_dir())?;
    migrate_both(paths)?;
    let tracking = paths.tracking_db().to_string_lossy().into_owned();
    let manager = SqliteConnectionManager::file(paths.db())
        .with_flags(pool_flags())
        .with_init(move |c| {
            configure(c)?;
            attach_tracking(c, &tracking)
        });
    pool(manager, max_connections)
}

/// ATTACHes tracking.db at `path` as [`TRACKING_SCHEMA`], with the TEMP trigger of
/// [`open_dashboard`].
fn attach_tracking(conn: &Connection, path: &str) -> rusqlite::Result<()> {
    conn.execute("ATTACH DATABASE ?1 AS tracking", [path])?;
    // A TEMP trigger may change tables of any attached database; its statements stay unqualified.
    conn.execute_batch(
        "CREATE TEMP TRIGGER IF NOT EXISTS alias_deleted_keeps_no_messages
             AFTER DELETE ON main.aliases
         BEGIN
             UPDATE tracked_messages SET alias_id = NULL WHERE alias_id = OLD.id;
         END;",
    )
}

fn create_dir(dir: &Path) -> Result<(), DbError> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|source| DbError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })
}

/// Brings the main database's schema up to the newest version, refusing to drop tracking rows
/// (see [`open`]). Each migration runs in its own transaction.
pub fn migrate(conn: &mut Connection) -> Result<i64, DbError> {
    migrate_main(conn, None)
}

/// [`migrate`], moving tracking rows to the tracking.db at `tracking` (already migrated) first.
fn migrate_main(conn: &mut Connection, tracking: Option<&Path>) -> Result<i64, DbError> {
    run_migrations(conn, MIGRATIONS, |conn, name| {
        if name == TRACKING_MOVED {
            move_tracking(conn, tracking)?;
        }
        Ok(())
    })
}

/// Brings tracking.db's schema up to the newest version.
pub fn migrate_tracking(conn: &mut Connection) -> Result<i64, DbError> {
    run_migrations(conn, TRACKING_MIGRATIONS, |_, _| Ok(()))
}

fn run_migrations(
    conn: &mut Connection,
    migrations: &[(&'static str, &'static str)],
    mut before: impl FnMut(&mut Connection, &str) -> Result<(), DbError>,
) -> Result<i64, DbError> {
    let known = migrations.len() as i64;
    let mut version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > known {
        return Err(DbError::TooNew {
            found: version,
            known,
        });
    }
    while version < known {
        let (name, sql) = migrations[version as usize];
        before(conn, name)?;
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

/// Copies the main database's `tracked_messages` and `pixel_opens` rows (ids kept) into tracking.db
/// at `tracking`, before [`TRACKING_MOVED`] drops them. Idempotent: rows already there are left
/// alone (`INSERT OR IGNORE`). The copy is committed on its own, before the drop: with WAL, one
/// transaction over two files is not atomic across a crash, so a crash between the two leaves the
/// rows in both files and the next start copies nothing new and drops them, while the opposite
/// order could lose them. Without a tracking.db, only a main database without tracking rows may go
/// on.
fn move_tracking(conn: &mut Connection, tracking: Option<&Path>) -> Result<(), DbError> {
    let rows: i64 = conn.query_row(
        "SELECT (SELECT count(*) FROM main.tracked_messages) + (SELECT count(*) FROM main.pixel_opens)",
        [],
        |r| r.get(0),
    )?;
    let Some(tracking) = tracking else {
        return match rows {
            0 => Ok(()),
            rows => Err(DbError::TrackingNotMoved { rows }),
        };
    };
    if rows == 0 {
        return Ok(());
    }
    conn.execute(
        "ATTACH DATABASE ?1 AS moving",
        [tracking.to_string_lossy().as_ref()],
    )?;
    let copied = conn.transaction().and_then(|tx| {
        let messages = tx.execute(
            "INSERT OR IGNORE INTO moving.tracked_messages
                 (id, tracking_id, sender, recipients, subject, alias_id, created_at)
             SELECT id, tracking_id, sender, recipients, subject, alias_id, created_at
             FROM main.tracked_messages ORDER BY id",
            [],
        )?;
        let opens = tx.execute(
            "INSERT OR IGNORE INTO moving.pixel_opens (id, tracking_id, client_ip, user_agent, opened_at)
             SELECT id, tracking_id, client_ip, user_agent, opened_at FROM main.pixel_opens
             WHERE tracking_id IN (SELECT tracking_id FROM moving.tracked_messages) ORDER BY id",
            [],
        )?;
        tx.commit()?;
        Ok((messages, opens))
    });
    conn.execute("DETACH DATABASE moving", [])?;
    let (messages, opens) = copied?;
    tracing::info!(messages, opens, "copied the tracking rows to tracking.db");
    Ok(())
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
        seed_tracking(&conn);
        migrate_to_from(&mut conn, 2, 3);
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

    /// Tracking rows as an older program wrote them (before 0003's renames, which `seed_tracking`
    /// relies on): two messages of alias 1, three opens.
    fn seed_tracking(conn: &Connection) {
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
                        ('TrackingIdForTestsAAAA', '192.0.2.3', 'UA 3', '2024-05-03 09:00:00');
             INSERT INTO settings (key, value) VALUES ('HOSTNAME', 'mx.example.com'),
                 ('BIN_DIR', '/tmp/evil'), ('RELAYHOST', 'evil.example:25');",
        )
        .unwrap();
    }

    /// Applies migrations `from`..`to` (0-based count of those already applied).
    fn migrate_to_from(conn: &mut Connection, from: usize, to: usize) {
        for (i, (_, sql)) in MIGRATIONS.iter().enumerate().take(to).skip(from) {
            let tx = conn.transaction().unwrap();
            tx.execute_batch(sql).unwrap();
            tx.pragma_update(None, "user_version", i as i64 + 1)
                .unwrap();
            tx.commit().unwrap();
        }
    }

    /// The version just before [`TRACKING_MOVED`].
    fn before_move() -> usize {
        MIGRATIONS
            .iter()
            .position(|(name, _)| *name == TRACKING_MOVED)
            .unwrap()
    }

    /// (id, tracking id, alias id) of each message and (id, tracking id, User-Agent) of each open.
    type TrackingRows = (Vec<(i64, String, Option<i64>)>, Vec<(i64, String, String)>);

    fn tracking_rows(paths: &Paths) -> TrackingRows {
        let conn = Connection::open(paths.tracking_db()).unwrap();
        let messages = conn
            .prepare("SELECT id, tracking_id, alias_id FROM tracked_messages ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let opens = conn
            .prepare("SELECT id, tracking_id, user_agent FROM pixel_opens ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        (messages, opens)
    }

    /// An old-layout database with tracking rows: refused without a tracking.db, moved with one
    /// (rows, ids and dates kept), the tables and the root-only settings gone from the main
    /// database, and moving again (after a crash between copy and drop, or at every start) changes
    /// nothing.
    #[test]
    fn tracking_rows_move_to_tracking_db_once() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        std::fs::create_dir_all(paths.db_dir()).unwrap();
        let mut conn = Connection::open(paths.db()).unwrap();
        conn.pragma_update(None, "foreign_keys", true).unwrap();
        migrate_to(&mut conn, 2);
        seed_tracking(&conn);
        migrate_to_from(&mut conn, 2, before_move());
        drop(conn);

        assert!(matches!(
            open(&paths.db(), 1),
            Err(DbError::TrackingNotMoved { rows: 5 })
        ));
        // A crash after the copy, before the drop: the copy is done again, harmlessly.
        create_dir(&paths.tracking_dir()).unwrap();
        migrate_tracking(&mut Connection::open(paths.tracking_db()).unwrap()).unwrap();
        let mut conn = Connection::open(paths.db()).unwrap();
        move_tracking(&mut conn, Some(&paths.tracking_db())).unwrap();
        drop(conn);

        let pool = open_main(&paths, 1).unwrap();
        let expected = (
            vec![
                (1, "VQx3An5C4mtsOVsTUQiGHQ".to_string(), Some(1)),
                (2, "TrackingIdForTestsAAAA".to_string(), Some(1)),
            ],
            vec![
                (1, "VQx3An5C4mtsOVsTUQiGHQ".to_string(), "UA 1".to_string()),
                (2, "VQx3An5C4mtsOVsTUQiGHQ".to_string(), "UA 2".to_string()),
                (3, "TrackingIdForTestsAAAA".to_string(), "UA 3".to_string()),
            ],
        );
        assert_eq!(tracking_rows(&paths), expected);
        let conn = pool.get().unwrap();
        let left: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name IN ('tracked_messages', 'pixel_opens')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(left, 0);
        let settings: Vec<String> = conn
            .prepare("SELECT key FROM settings ORDER BY key")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(settings, ["HOSTNAME"]);
        drop(conn);
        drop(pool);
        drop(open_main(&paths, 1).unwrap());
        assert_eq!(tracking_rows(&paths), expected);
    }

    /// The dashboard's connections see both files under unqualified names, join across them, and
    /// deleting an alias clears the alias of its tracked messages (what ON DELETE SET NULL did).
    #[test]
    fn the_dashboard_joins_across_both_databases() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        std::fs::create_dir_all(paths.db_dir()).unwrap();
        let pool = open_dashboard(&paths, 2).unwrap();
        let conn = pool.get().unwrap();
        conn.execute_batch(
            "INSERT INTO domains (domain) VALUES ('example.com');
             INSERT INTO aliases (id, domain_id, source, destination, tracking_enabled)
                 VALUES (7, 1, 'news@example.com', 'a@example.com', 1);
             INSERT INTO tracked_messages (tracking_id, sender, recipients, alias_id)
                 VALUES ('VQx3An5C4mtsOVsTUQiGHQ', 'news@example.com', 'x@a.test', 7);
             INSERT INTO pixel_opens (tracking_id) VALUES ('VQx3An5C4mtsOVsTUQiGHQ');",
        )
        .unwrap();
        let source: String = conn
            .query_row(
                "SELECT a.source FROM tracked_messages m JOIN aliases a ON a.id = m.alias_id",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(source, "news@example.com");
        // On another pooled connection too: the trigger is on each.
        let other = pool.get().unwrap();
        other
            .execute("DELETE FROM aliases WHERE id = 7", [])
            .unwrap();
        let alias: Option<i64> = conn
            .query_row("SELECT alias_id FROM tracked_messages", [], |r| r.get(0))
            .unwrap();
        assert_eq!(alias, None);
        // The rows are in tracking.db, not in the main database.
        assert_eq!(tracking_rows(&paths).1.len(), 1);
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
