//! Applying a rendered configuration: validate, write atomically, reload what changed.
//!
//! Order matters and is fixed: (0) make the DKIM keys that are missing ([`dkim_keys::ensure`]: the
//! key files exist before the KeyTable names them); (1) render everything from one snapshot, with
//! what ends up in command lines from [`RootSettings`], never from the database; (2) validate the
//! files that changed with the daemons' own checkers (`postconf`, `doveconf`, `opendkim -n`) on a
//! staging copy; nothing is written if any check fails; (3) write each changed file to a new temp
//! file (`O_EXCL | O_NOFOLLOW`) in the same root-only directory, fsync, rename, fsync the directory;
//! (4) rewrite maps.db in one transaction, and the tracking policy in tracking.db; (5) reload only
//! the running daemons whose files changed. An exclusive lock serialises concurrent applies (CLI and
//! dashboard).

use std::collections::BTreeSet;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use rusqlite::Connection;
use thiserror::Error;

use crate::dkim_keys;
use crate::paths::Paths;
use crate::render::{self, Daemon, File, Rendered};
use crate::settings::{RootSettings, SettingsError};
use crate::store::{Snapshot, StoreError, tracking};
use crate::system::{self, SystemError, SystemUsers};

#[derive(Debug, Error)]
pub enum ApplyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    System(#[from] SystemError),
    #[error(transparent)]
    Render(#[from] render::RenderError),
    #[error("{checker} rejected the new configuration (nothing was changed):\n{output}")]
    Invalid { checker: String, output: String },
    #[error("could not {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("could not update the lookup database: {0}")]
    Maps(#[from] rusqlite::Error),
    #[error("reloading {daemon:?} failed: {output}")]
    Reload { daemon: Daemon, output: String },
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The applier (see [`crate::applier`]) could not be reached, or reported this failure.
    #[error("{0}")]
    Applier(String),
}

pub(crate) fn io<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> ApplyError + 'a {
    move |source| ApplyError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// What an apply did.
#[derive(Debug, Default)]
pub struct Report {
    pub written: Vec<PathBuf>,
    pub removed: Vec<PathBuf>,
    pub reloaded: BTreeSet<Daemon>,
    /// Whether the tracking policy in tracking.db changed.
    pub tracking_changed: bool,
}

/// Renders the current database and applies it. Safe to call at any time, from any process.
pub fn apply(paths: &Paths, conn: &mut Connection) -> Result<Report, ApplyError> {
    let users = SystemUsers::lookup()?;
    let run = paths.run_dir();
    fs::create_dir_all(&run).map_err(io("create", &run))?;
    let lock_path = paths.lock_file();
    let lock = fs::File::create(&lock_path).map_err(io("create", &lock_path))?;
    lock.lock().map_err(io("lock", &lock_path))?;

    let made = dkim_keys::ensure(paths, conn, &users)?;
    let snapshot = Snapshot::read(conn)?;
    let root = RootSettings::load(paths)?;
    let safe_keys = !system::under_world_writable(&paths.dkim_dir());
    let rendered = render::render(&snapshot, paths, &users, &root, safe_keys)?;
    let mut report = write_and_reload(paths, &users, &rendered, !made.written.is_empty())?;
    report.written.splice(0..0, made.written);
    drop(lock);
    Ok(report)
}

fn differs(f: &File) -> bool {
    match fs::read(&f.path) {
        Ok(old) => old != f.contents,
        Err(_) => true,
    }
}

fn write_and_reload(
    paths: &Paths,
    users: &SystemUsers,
    rendered: &Rendered,
    keys_made: bool,
) -> Result<Report, ApplyError> {
    let changed: Vec<&File> = rendered.files.iter().filter(|f| differs(f)).collect();
    validate(paths, &changed)?;

    let mut report = Report::default();
    for f in &changed {
        write_atomic(f, users)?;
        report.written.push(f.path.clone());
    }
    // Ownership and mode are re-asserted even for unchanged files (a restore may have reset them).
    for f in rendered.files.iter().filter(|f| !changed.contains(f)) {
        set_owner_mode(&f.path, f, users)?;
    }
    report.removed = prune_stale_keys(&paths.dkim_dir(), &rendered.dkim_keys)?;

    let maps_path = paths.maps_db();
    let maps_dir = paths.maps_dir();
    fs::create_dir_all(&maps_dir).map_err(io("create", &maps_dir))?;
    rendered.maps.write(&maps_path)?;
    system::Owner::RootPostfixGroup
        .set_on(&maps_path, 0o640, users)
        .map_err(io("set the owner and mode of", &maps_path))?;
    report.tracking_changed = write_tracking_policy(paths, &rendered.tracking)?;

    let mut daemons: BTreeSet<Daemon> = changed.iter().map(|f| f.daemon).collect();
    if keys_made || !report.removed.is_empty() {
        daemons.insert(Daemon::Opendkim);
    }
    for daemon in daemons {
        if reload(paths, daemon)? {
            report.reloaded.insert(daemon);
        }
    }
    Ok(report)
}

/// Renders the tracking policy into tracking.db (the milter's only view of the main database).
fn write_tracking_policy(
    paths: &Paths,
    policy: &tracking::TrackingPolicy,
) -> Result<bool, ApplyError> {
    let pool = crate::db::open_tracking(paths, 1)?;
    let mut conn = pool.get().map_err(crate::db::DbError::from)?;
    Ok(tracking::write_policy(&mut conn, policy)?)
}

/// Writes `f` through [`system::replace_file`], backdated. Every rendered file is in root's
/// configuration directory, which only root writes.
fn write_atomic(f: &File, users: &SystemUsers) -> Result<(), ApplyError> {
    let dir = f.path.parent().expect("rendered paths are absolute");
    fs::create_dir_all(dir).map_err(io("create", dir))?;
    system::replace_file(&f.path, &f.contents, 0o600, |out, tmp| {
        f.owner.set_on(tmp, f.mode, users)?;
        // Postfix re-reads (and sleeps 300 ms on) config files younger than ~2 s: backdate them (G7).
        out.set_modified(SystemTime::now() - Duration::from_secs(60))
    })
    .map_err(io("write", &f.path))
}

fn set_owner_mode(path: &Path, f: &File, users: &SystemUsers) -> Result<(), ApplyError> {
    f.owner
        .set_on(path, f.mode, users)
        .map_err(io("set the owner and mode of", path))
}

fn prune_stale_keys(dkim_dir: &Path, keep: &[PathBuf]) -> Result<Vec<PathBuf>, ApplyError> {
    let mut removed = Vec::new();
    let Ok(domains) = fs::read_dir(dkim_dir) else {
        return Ok(removed);
    };
    for domain in domains.flatten() {
        let dir = domain.path();
        let Ok(keys) = fs::read_dir(&dir) else {
            continue;
        };
        for key in keys.flatten() {
            let path = key.path();
            if path.extension().is_some_and(|e| e == "private") && !keep.contains(&path) {
                fs::remove_file(&path).map_err(io("remove", &path))?;
                removed.push(path);
            }
        }
        let _ = fs::remove_dir(&dir); // only succeeds when empty
    }
    Ok(removed)
}

/// Writes a staging file with an old modification time: Postfix tools wait ~2 s for a config file
/// younger than that to settle (gotcha G7), which would make every validation slow.
fn write_backdated(path: &Path, contents: &[u8]) -> Result<(), ApplyError> {
    let mut f = system::create_exclusive(path, 0o644).map_err(io("create", path))?;
    f.write_all(contents).map_err(io("write", path))?;
    f.set_modified(SystemTime::now() - Duration::from_secs(60))
        .map_err(io("set the time of", path))
}

fn have(program: &str) -> bool {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .any(|d| Path::new(d).join(program).exists())
}

fn run_checker(program: &str, args: &[&str], pending: &[&File]) -> Result<(), ApplyError> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| ApplyError::Invalid {
            checker: program.to_string(),
            output: e.to_string(),
        })?;
    // postconf only warns about unknown or malformed parameters, so warnings count as failures, except
    // a lookup table file that does not exist yet because it is among the files about to be written.
    let stderr: String = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|line| {
            !(line.contains("configuration \"")
                && line.ends_with("No such file or directory")
                && pending
                    .iter()
                    .any(|f| line.contains(&format!("\"{}\"", f.path.display()))))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    if !out.status.success() || stderr.contains("warning:") || stderr.contains("fatal:") {
        return Err(ApplyError::Invalid {
            checker: format!("{program} {}", args.join(" ")),
            output: format!("{stderr}{}", String::from_utf8_lossy(&out.stdout)),
        });
    }
    Ok(())
}

/// Checks changed daemon configs on a staging copy before anything live is touched. Checkers that are
/// not installed (a build machine without the daemons) are skipped.
fn validate(paths: &Paths, changed: &[&File]) -> Result<(), ApplyError> {
    let config = paths.config_dir();
    let staging = paths.staging_dir();
    // The staging directory mirrors the live one: a live path's staged copy.
    let staged = |live: &Path| -> PathBuf {
        staging.join(
            live.strip_prefix(&config)
                .expect("the daemons' configuration is under config/"),
        )
    };
    let touches = |d: Daemon| {
        changed
            .iter()
            .any(|f| f.daemon == d && f.path.starts_with(&config))
    };
    // Copies the daemon's configuration directory `live` to its staged place, with the changed
    // files in their new version.
    let stage = |live: &Path| -> Result<(), ApplyError> {
        let dir = staged(live);
        fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        // Staged files refer to each other (main.cf names the map files, opendkim.conf its tables):
        // point those references at the staged copies.
        let live_dir = live.to_string_lossy().into_owned();
        let staged_dir = dir.to_string_lossy().into_owned();
        let mut done = Vec::new();
        for f in changed.iter().filter(|f| f.path.starts_with(live)) {
            let name = f.path.file_name().expect("file name");
            let text = String::from_utf8_lossy(&f.contents).replace(&live_dir, &staged_dir);
            write_backdated(&dir.join(name), text.as_bytes())?;
            done.push(name.to_os_string());
        }
        // Unchanged files the checker also reads.
        if let Ok(entries) = fs::read_dir(live) {
            for entry in entries.flatten() {
                if done.contains(&entry.file_name()) || !entry.path().is_file() {
                    continue;
                }
                let text = fs::read_to_string(entry.path()).unwrap_or_default();
                write_backdated(
                    &dir.join(entry.file_name()),
                    text.replace(&live_dir, &staged_dir).as_bytes(),
                )?;
            }
        }
        Ok(())
    };
    // A fresh staging directory: what a crashed apply left there is not trusted.
    match fs::remove_dir_all(&staging) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(io("remove", &staging)(e));
        }
        _ => {}
    }
    let result = (|| {
        if touches(Daemon::Postfix) && have("postconf") {
            let live = paths.postfix_config_dir();
            stage(&live)?;
            let d = staged(&live);
            let d = d.to_string_lossy();
            run_checker("postconf", &["-c", &d, "-n"], changed)?;
            run_checker("postconf", &["-c", &d, "-M"], changed)?;
        }
        if touches(Daemon::Dovecot) && have("doveconf") {
            stage(&paths.dovecot_config_dir())?;
            let conf = staged(&paths.dovecot_conf());
            run_checker("doveconf", &["-n", "-c", &conf.to_string_lossy()], changed)?;
        }
        if touches(Daemon::Opendkim) && have("opendkim") {
            stage(&paths.opendkim_config_dir())?;
            let conf = staged(&paths.opendkim_conf());
            run_checker("opendkim", &["-n", "-x", &conf.to_string_lossy()], changed)?;
        }
        Ok(())
    })();
    let _ = fs::remove_dir_all(&staging);
    result
}

/// Reloads `daemon` if it is running. Returns whether it did.
fn reload(paths: &Paths, daemon: Daemon) -> Result<bool, ApplyError> {
    match daemon {
        Daemon::Postfix => {
            if system::pid_alive(&paths.postfix_pid_file()).is_none() {
                return Ok(false);
            }
            let out = Command::new("postfix")
                .arg("-c")
                .arg(paths.postfix_config_dir())
                .arg("reload")
                .stdin(Stdio::null())
                .output()
                .map_err(|e| ApplyError::Reload {
                    daemon,
                    output: e.to_string(),
                })?;
            if !out.status.success() {
                return Err(ApplyError::Reload {
                    daemon,
                    output: String::from_utf8_lossy(&out.stderr).into_owned(),
                });
            }
            Ok(true)
        }
        Daemon::Dovecot => signal(daemon, &paths.dovecot_pid_file(), nix::sys::signal::SIGHUP),
        Daemon::Opendkim => signal(
            daemon,
            &paths.opendkim_pid_file(),
            nix::sys::signal::SIGUSR1,
        ),
        Daemon::Supervisor => Ok(false),
    }
}

fn signal(
    daemon: Daemon,
    pid_file: &Path,
    sig: nix::sys::signal::Signal,
) -> Result<bool, ApplyError> {
    let Some(pid) = system::pid_alive(pid_file) else {
        return Ok(false);
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).map_err(|e| {
        ApplyError::Reload {
            daemon,
            output: e.to_string(),
        }
    })?;
    Ok(true)
}
