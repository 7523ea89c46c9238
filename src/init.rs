//! `mailserver init`: idempotent first-start (and every-start) preparation of the data directory.
//!
//! Creates the directory tree with the right owners, the databases (migrated; an older main database's
//! tracking rows moved to tracking.db), the first admin (a random password, printed once, or `ADMIN_PASSWORD_FILE`'s), the self-signed TLS certificate when none
//! exists, stores the settings from the environment (`RELAYHOST` in a root-only file, see
//! [`RootSettings`]), and applies the configuration. Running it again changes nothing that already
//! exists: keys and certificates are never regenerated.
//!
//! Who may read what (issue 12): the main database and the TLS key are root's with the dashboard's
//! group; tracking.db is root's with the `mailserver` group (dashboard and milter); the DKIM keys are
//! OpenDKIM's. The database directories are writable by those groups (SQLite creates -wal and -shm
//! files there), so root never follows a name in them: their files are checked and given their owner
//! and mode through a descriptor ([`system::own_safely`]), and a link or a hard-linked file is
//! refused with an error that names it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::apply::{self, ApplyError};
use crate::db::{self, DbError};
use crate::names::Hostname;
use crate::paths::Paths;
use crate::settings::{RootSettings, Settings, SettingsError};
use crate::store::{StoreError, admins};
use crate::system::{self, Owner, SystemError, SystemUsers, UnsafePathError};
use crate::tls;

#[derive(Debug, Error)]
pub enum InitError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    System(#[from] SystemError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("refusing to prepare the database files: {0}")]
    Unsafe(#[from] UnsafePathError),
    #[error("could not {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        source: std::io::Error,
    },
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> InitError + 'a {
    move |source| InitError::Io {
        action,
        path: path.display().to_string(),
        source,
    }
}

#[derive(Debug)]
pub struct InitReport {
    pub settings: Settings,
    /// The admin created (or whose old default password was replaced), with its password to print.
    pub created_admin: Option<admins::CreatedAdmin>,
    pub created_certificate: bool,
    pub apply: apply::Report,
}

fn dir(path: &Path, mode: u32, owner: Owner, users: &SystemUsers) -> Result<(), InitError> {
    fs::create_dir_all(path).map_err(io("create", path))?;
    own(path, mode, owner, users)
}

/// Sets the owner (when running as root) and the mode of an existing file or directory. Done at
/// every start, so a volume made by an older image, or restored from a backup, is put right.
fn own(path: &Path, mode: u32, owner: Owner, users: &SystemUsers) -> Result<(), InitError> {
    owner
        .set_on(path, mode, users)
        .map_err(io("set the owner and mode of", path))
}

/// The host name to use when neither the environment nor the database gives one.
fn default_hostname() -> String {
    let system = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    if Hostname::parse(&system).is_ok() {
        system
    } else {
        "mail.localdomain".to_string()
    }
}

pub fn init(paths: &Paths, env: impl Fn(&str) -> Option<String>) -> Result<InitReport, InitError> {
    crate::settings::check_data_dir(&paths.data)?;
    let users = SystemUsers::lookup()?;
    // The daemons' users must be able to traverse the data directory (mktemp -d makes 0700).
    dir(&paths.data, 0o755, Owner::Root, &users)?;
    // The main database: the dashboard's group creates its -wal and -shm files; the milter cannot
    // enter. Postfix and Dovecot read maps.db, in a directory of its own that only root writes.
    dir(&paths.db_dir(), 0o770, Owner::RootWebGroup, &users)?;
    // tracking.db: the dashboard and the milter (group `mailserver`). Setgid, so that -wal and -shm
    // files either of them creates stay in the group and readable by the other.
    dir(
        &paths.tracking_dir(),
        0o2770,
        Owner::RootMailserverGroup,
        &users,
    )?;
    dir(&paths.maps_dir(), 0o755, Owner::Root, &users)?;
    dir(&paths.config_dir(), 0o755, Owner::Root, &users)?;
    dir(&paths.ssl_dir(), 0o755, Owner::Root, &users)?;
    dir(&paths.dkim_dir(), 0o755, Owner::Root, &users)?;
    dir(&paths.mail_dir(), 0o770, Owner::Vmail, &users)?;
    dir(&paths.spool_dir(), 0o755, Owner::Root, &users)?;
    dir(&paths.postfix_queue_dir(), 0o755, Owner::Root, &users)?;
    dir(&paths.log_dir(), 0o755, Owner::Root, &users)?;
    dir(&paths.run_dir(), 0o755, Owner::Root, &users)?;
    // The milters' sockets: whoever can connect can have mail signed, or feed the tracking milter a
    // made-up `{auth_authen}`. Each daemon creates its socket in a directory of its own that only it
    // and Postfix's group may enter (0750). The directory is setgid, so the socket is created in
    // Postfix's group, and each daemon makes it 0660 (the milter by chmod, OpenDKIM by UMask 007).
    dir(
        &paths.milter_run_dir(),
        0o2750,
        Owner::MilterPostfixGroup,
        &users,
    )?;
    dir(
        &paths.opendkim_run_dir(),
        0o2750,
        Owner::OpendkimPostfixGroup,
        &users,
    )?;

    // Before SQLite opens anything: what another user may have planted is refused, not followed.
    own_database(&paths.db(), Owner::RootWebGroup, &users)?;
    own_database(&paths.tracking_db(), Owner::RootMailserverGroup, &users)?;
    // maps.db moved to maps/; the old copy would be stale (unlink does not follow a link).
    for old in [
        paths.legacy_maps_db(),
        paths.db_dir().join("maps.db-journal"),
    ] {
        system::remove_if_exists(&old).map_err(io("remove", &old))?;
    }
    let pool = db::open_main(paths, 2)?;
    let mut conn = pool.get().map_err(DbError::from)?;
    // And the files SQLite has just created as root.
    own_database(&paths.db(), Owner::RootWebGroup, &users)?;
    own_database(&paths.tracking_db(), Owner::RootMailserverGroup, &users)?;

    RootSettings::store_relayhost(paths, &env)?;
    let initial_admin_password = admins::InitialPassword::from_env(&env);
    let defaults: BTreeMap<String, String> = [("HOSTNAME".to_string(), default_hostname())].into();
    let settings = crate::store::settings::init_from_env(&conn, env, &defaults)?;
    let created_admin = admins::ensure_admin(&conn, &initial_admin_password)?;

    let created_certificate = !paths.tls_cert().exists() || !paths.tls_key().exists();
    if created_certificate {
        let cert = tls::self_signed(&settings.hostname)?;
        write_new(&paths.tls_key(), cert.key_pem.as_bytes(), 0o600)?;
        write_new(&paths.tls_cert(), cert.cert_pem.as_bytes(), 0o644)?;
    }
    // The dashboard serves TLS as its own user (its group reads the key; the milter's cannot); the
    // mail daemons read it as root.
    own(&paths.tls_key(), 0o640, Owner::RootWebGroup, &users)?;

    let apply = apply::apply(paths, &mut conn)?;
    Ok(InitReport {
        settings,
        created_admin,
        created_certificate,
        apply,
    })
}

/// Gives a database in a directory other users can write, and its -wal and -shm files when they
/// exist, `owner` and mode 0660, through a descriptor: a link, a hard-linked file or anything but a
/// regular file is refused ([`system::own_safely`]) and nothing is changed.
fn own_database(path: &Path, owner: Owner, users: &SystemUsers) -> Result<(), InitError> {
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = PathBuf::from(name);
        if fs::symlink_metadata(&file).is_ok() {
            system::own_safely(&file, owner, 0o660, users)?;
        }
    }
    Ok(())
}

/// Writes a file in a root-only directory ([`system::replace_file`] with `mode`).
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), InitError> {
    system::replace_file(path, contents, mode, |_, _| Ok(())).map_err(io("write", path))
}
