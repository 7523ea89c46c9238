//! The owner of every table: admins (with their sessions and the login limiter), domains, accounts,
//! aliases, tracking (`tracked_messages`, `pixel_opens` and the tracking policy, in tracking.db) and
//! settings, each read and written only through this module's typed functions over validated types
//! (what a setting means is [`crate::settings`]; storing it is [`settings`]).
//!
//! Why one owner: the CLI, the milter and the dashboard are separate processes sharing one SQLite
//! file, so its tables are the contract between them. With every statement in the library, a column
//! rename is one change in one crate, checked by its tests, and the web and milter crates hold no SQL
//! text at all. The schema itself is the migrations in `sql/`, applied by [`crate::db`].
//!
//! These functions only touch the database; after a change to domains, accounts or aliases the caller
//! calls [`crate::apply`] so the daemons see it. [`Snapshot`] reads everything the renderers need in
//! one transaction.

pub mod accounts;
pub mod admins;
pub mod aliases;
pub mod batch_writer;
pub mod domains;
pub mod login_limiter;
pub mod overview;
pub mod sessions;
pub mod settings;
pub mod tracking;

use rusqlite::Connection;
use thiserror::Error;

use crate::names::NameError;
use crate::password::PasswordError;
use crate::settings::{Settings, SettingsError};

pub use accounts::Account;
pub use aliases::Alias;
pub use domains::DomainRecord;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Password(#[from] PasswordError),
    #[error(transparent)]
    AdminPassword(#[from] admins::AdminPasswordError),
    #[error(transparent)]
    Dkim(#[from] crate::dkim::DkimError),
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("{what} {key} does not exist")]
    NotFound { what: &'static str, key: String },
    #[error("{what} {key} already exists")]
    Exists { what: &'static str, key: String },
    #[error("the domain {domain} is not managed here; add it first")]
    UnknownDomain { domain: String },
    #[error(
        "the domain {domain} still has {accounts} account(s) and {aliases} alias(es); remove them first or remove with --cascade"
    )]
    DomainInUse {
        domain: String,
        accounts: i64,
        aliases: i64,
    },
    #[error("the quota is too large (at most {max_mb} MiB)")]
    QuotaTooLarge { quota_mb: u32, max_mb: u32 },
    /// An account was to be added at an address that is already an alias's source.
    #[error("{address} is already an alias; remove the alias first")]
    AddressIsAlias { address: String },
    /// An alias was to be added at an address that is already an account.
    #[error("{address} is an account; an alias cannot have the same address")]
    AddressIsAccount { address: String },
    #[error("{address} cannot forward to itself")]
    AliasForwardsToItself { address: String },
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
}

/// Everything the renderers need, read in one transaction so the files agree with each other.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub settings: Settings,
    pub domains: Vec<DomainRecord>,
    pub accounts: Vec<Account>,
    pub aliases: Vec<Alias>,
}

impl Snapshot {
    pub fn read(conn: &mut Connection) -> Result<Self, StoreError> {
        let tx = conn.transaction()?;
        let snapshot = Self {
            settings: settings::load(&tx)?,
            domains: domains::list(&tx)?,
            accounts: accounts::list(&tx)?,
            aliases: aliases::list(&tx)?,
        };
        tx.commit()?;
        Ok(snapshot)
    }
}

/// The current time in Unix seconds: the `now` that [`sessions`] and [`login_limiter`] take (tests
/// pass their own).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `NotFound` for the `what` (e.g. "account") named `key`.
pub(crate) fn not_found(what: &'static str, key: impl std::fmt::Display) -> StoreError {
    StoreError::NotFound {
        what,
        key: key.to_string(),
    }
}

/// `Exists` for the `what` (e.g. "account") named `key`.
pub(crate) fn exists(what: &'static str, key: impl std::fmt::Display) -> StoreError {
    StoreError::Exists {
        what,
        key: key.to_string(),
    }
}

/// The outcome of an UPDATE or DELETE of the `what` named `key` that changed `rows` rows: `NotFound`
/// when it changed none (there is no such `what`).
pub(crate) fn expect_changed(
    rows: usize,
    what: &'static str,
    key: impl std::fmt::Display,
) -> Result<(), StoreError> {
    if rows == 0 {
        return Err(not_found(what, key));
    }
    Ok(())
}

/// The outcome of the INSERT of the `what` named `key`: `Exists` when a unique key refused it.
pub(crate) fn expect_inserted(
    result: rusqlite::Result<usize>,
    what: &'static str,
    key: impl std::fmt::Display,
) -> Result<(), StoreError> {
    match result {
        Err(e) if crate::db::is_unique_violation(&e) => Err(exists(what, key)),
        Err(e) => Err(e.into()),
        Ok(_) => Ok(()),
    }
}

/// Every row `sql` selects, read by `from_row` and re-validated by `validate`.
pub(crate) fn list_validated<Raw, T>(
    conn: &Connection,
    sql: &str,
    from_row: fn(&rusqlite::Row<'_>) -> rusqlite::Result<Raw>,
    validate: fn(Raw) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map([], from_row)?;
    rows.map(|r| validate(r?)).collect()
}

/// The id of a managed domain, or `UnknownDomain`.
pub(crate) fn domain_id(
    conn: &Connection,
    domain: &crate::names::Domain,
) -> Result<i64, StoreError> {
    use rusqlite::OptionalExtension as _;
    conn.query_row(
        "SELECT id FROM domains WHERE domain = ?1",
        [domain.as_str()],
        |r| r.get(0),
    )
    .optional()?
    .ok_or_else(|| StoreError::UnknownDomain {
        domain: domain.to_string(),
    })
}

#[cfg(test)]
pub(crate) mod testutil {
    use crate::db;

    /// The migrated databases in a temp dir, as the dashboard opens them (tracking.db attached),
    /// with settings stored.
    pub(crate) fn conn() -> (tempfile::TempDir, db::PooledConnection) {
        let dir = tempfile::tempdir().unwrap();
        let paths = crate::paths::Paths::new(dir.path());
        std::fs::create_dir_all(paths.db_dir()).unwrap();
        let pool = db::open_dashboard(&paths, 1).unwrap();
        let conn = pool.get().unwrap();
        let defaults = [("HOSTNAME".to_string(), "mx.example.com".to_string())].into();
        super::settings::init_from_env(&conn, |_| None, &defaults).unwrap();
        (dir, conn)
    }
}
