//! `mailserver init`: idempotent first-start (and every-start) preparation of the data directory.
//!
//! Creates the directory tree with the right owners, the database (migrated), the first admin, the
//! self-signed TLS certificate when none exists, stores the settings from the environment, and applies
//! the configuration. Running it again changes nothing that already exists: keys and certificates are
//! never regenerated.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::apply::{self, ApplyError};
use crate::db::{self, DbError};
use crate::names::Hostname;
use crate::paths::Paths;
use crate::settings::{Settings, SettingsError};
use crate::store::{StoreError, admins};
use crate::system::{Owner, SystemError, SystemUsers};
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
    // The dashboard and the milter (group `mailserver`) create the database's -wal and -shm files;
    // Postfix and Dovecot only traverse it to read maps.db.
    dir(&paths.db_dir(), 0o775, Owner::RootMailserverGroup, &users)?;
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

    let pool = db::open(&paths.db(), 2)?;
    let mut conn = pool.get().map_err(DbError::from)?;
    // Read and written by the dashboard and the milter; nobody else (it holds the DKIM private keys
    // and the admin's hash). SQLite gives new -wal/-shm files the database file's mode and owner.
    for suffix in ["", "-wal", "-shm"] {
        let mut path = paths.db().into_os_string();
        path.push(suffix);
        let path = PathBuf::from(path);
        if suffix.is_empty() || path.exists() {
            own(&path, 0o660, Owner::RootMailserverGroup, &users)?;
        }
    }

    let defaults: BTreeMap<String, String> = [
        ("HOSTNAME".to_string(), default_hostname()),
        (
            "BIN_DIR".to_string(),
            std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(|d| d.to_string_lossy().into_owned()))
                .unwrap_or_default(),
        ),
    ]
    .into();
    let initial_admin_password = admins::InitialPassword::from_env(&env);
    let settings = crate::store::settings::init_from_env(&conn, env, &defaults)?;
    let created_admin = admins::ensure_admin(&conn, &initial_admin_password)?;

    let created_certificate = !paths.tls_cert().exists() || !paths.tls_key().exists();
    if created_certificate {
        let cert = tls::self_signed(&settings.hostname)?;
        write_new(&paths.tls_key(), cert.key_pem.as_bytes(), 0o600)?;
        write_new(&paths.tls_cert(), cert.cert_pem.as_bytes(), 0o644)?;
    }
    // The dashboard serves TLS as its own user; the mail daemons read the key as root.
    own(&paths.tls_key(), 0o640, Owner::RootMailserverGroup, &users)?;

    let apply = apply::apply(paths, &mut conn)?;
    Ok(InitReport {
        settings,
        created_admin,
        created_certificate,
        apply,
    })
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), InitError> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, contents).map_err(io("write", &tmp))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).map_err(io("chmod", &tmp))?;
    fs::rename(&tmp, path).map_err(io("rename", &tmp))
}
