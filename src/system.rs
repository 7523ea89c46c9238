//! Facts about the host the configuration depends on: system users, running daemons, safe paths,
//! and the two ways root touches a file without trusting its name: [`own_safely`] (owner and mode
//! through an open descriptor, for files in directories other users can write) and
//! [`create_exclusive`] (a new file, never an existing one nor a link).

use std::fs::File;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Group, Uid, User};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SystemError {
    #[error("the system user {0} does not exist (is the package installed? `useradd` vmail?)")]
    NoUser(&'static str),
    #[error("the system group {0} does not exist")]
    NoGroup(&'static str),
    #[error("could not look up {name}: {source}")]
    Lookup {
        name: &'static str,
        source: nix::Error,
    },
}

/// The users and groups our files are owned by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SystemUsers {
    pub vmail_uid: u32,
    pub vmail_gid: u32,
    pub postfix_gid: u32,
    pub opendkim_uid: u32,
    pub opendkim_gid: u32,
    /// The dashboard's user and its own group, which owns the main database and the TLS key and
    /// can reach the applier.
    pub web_uid: u32,
    pub web_gid: u32,
    /// The milter's user and its own group (it owns nothing of root's).
    pub milter_uid: u32,
    pub milter_gid: u32,
    /// The group both are members of, which owns the tracking database.
    pub mailserver_gid: u32,
}

fn user(name: &'static str) -> Result<User, SystemError> {
    User::from_name(name)
        .map_err(|source| SystemError::Lookup { name, source })?
        .ok_or(SystemError::NoUser(name))
}

fn group(name: &'static str) -> Result<Group, SystemError> {
    Group::from_name(name)
        .map_err(|source| SystemError::Lookup { name, source })?
        .ok_or(SystemError::NoGroup(name))
}

impl SystemUsers {
    pub fn lookup() -> Result<Self, SystemError> {
        let vmail = user("vmail")?;
        let opendkim = user("opendkim")?;
        let web = user(WEB_USER)?;
        let milter = user(MILTER_USER)?;
        Ok(Self {
            vmail_uid: vmail.uid.as_raw(),
            vmail_gid: vmail.gid.as_raw(),
            postfix_gid: group("postfix")?.gid.as_raw(),
            opendkim_uid: opendkim.uid.as_raw(),
            opendkim_gid: opendkim.gid.as_raw(),
            web_uid: web.uid.as_raw(),
            web_gid: group(WEB_GROUP)?.gid.as_raw(),
            milter_uid: milter.uid.as_raw(),
            milter_gid: group(MILTER_GROUP)?.gid.as_raw(),
            mailserver_gid: group(MAILSERVER_GROUP)?.gid.as_raw(),
        })
    }

    /// Fixed ids for rendering in tests, where the users need not exist.
    pub fn fixed_for_tests() -> Self {
        Self {
            vmail_uid: 5000,
            vmail_gid: 5000,
            postfix_gid: 106,
            opendkim_uid: 103,
            opendkim_gid: 108,
            web_uid: 5001,
            web_gid: 5003,
            milter_uid: 5002,
            milter_gid: 5004,
            mailserver_gid: 5001,
        }
    }

    pub fn mailserver_gid(&self) -> Gid {
        Gid::from_raw(self.mailserver_gid)
    }
}

/// The user `mailserver-web` runs as (supervisord.conf), and the milter's; see the Dockerfile. Each
/// has a primary group of its own name and is a member of [`MAILSERVER_GROUP`].
pub const WEB_USER: &str = "mailserver-web";
pub const MILTER_USER: &str = "mailserver-milter";
pub const WEB_GROUP: &str = "mailserver-web";
pub const MILTER_GROUP: &str = "mailserver-milter";
pub const MAILSERVER_GROUP: &str = "mailserver";

/// Who owns a file we write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Root,
    /// Readable by Postfix's group (maps.db).
    RootPostfixGroup,
    Opendkim,
    Vmail,
    /// Root's, with the dashboard's group: the main database, the TLS key, the applier's socket.
    RootWebGroup,
    /// Root's, with the `mailserver` group (dashboard and milter): the tracking database.
    RootMailserverGroup,
    /// Root's, with OpenDKIM's group: the per-domain key directories, which only root writes.
    RootOpendkimGroup,
    /// The milter's, with Postfix's group: its socket's directory, which only the milter and
    /// Postfix may enter.
    MilterPostfixGroup,
    /// OpenDKIM's, with Postfix's group: its socket's directory, likewise.
    OpendkimPostfixGroup,
}

impl Owner {
    /// Gives `path` this owner and `mode`. The owner is set only when running as root (nobody else
    /// may chown); the mode always.
    pub fn set_on(self, path: &Path, mode: u32, users: &SystemUsers) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        if nix::unistd::geteuid().is_root() {
            let (uid, gid) = self.ids(users);
            nix::unistd::chown(path, Some(uid), Some(gid))?;
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    }

    pub fn ids(self, users: &SystemUsers) -> (Uid, Gid) {
        match self {
            Owner::Root => (Uid::from_raw(0), Gid::from_raw(0)),
            Owner::RootPostfixGroup => (Uid::from_raw(0), Gid::from_raw(users.postfix_gid)),
            Owner::Opendkim => (
                Uid::from_raw(users.opendkim_uid),
                Gid::from_raw(users.opendkim_gid),
            ),
            Owner::Vmail => (
                Uid::from_raw(users.vmail_uid),
                Gid::from_raw(users.vmail_gid),
            ),
            Owner::RootWebGroup => (Uid::from_raw(0), Gid::from_raw(users.web_gid)),
            Owner::RootMailserverGroup => (Uid::from_raw(0), users.mailserver_gid()),
            Owner::RootOpendkimGroup => (Uid::from_raw(0), Gid::from_raw(users.opendkim_gid)),
            Owner::MilterPostfixGroup => (
                Uid::from_raw(users.milter_uid),
                Gid::from_raw(users.postfix_gid),
            ),
            Owner::OpendkimPostfixGroup => (
                Uid::from_raw(users.opendkim_uid),
                Gid::from_raw(users.postfix_gid),
            ),
        }
    }
}

/// Why [`own_safely`] refused a path.
#[derive(Debug, Error)]
pub enum UnsafePathError {
    #[error("{0} is a symbolic link; refusing to follow it (was it planted?)")]
    Symlink(PathBuf),
    #[error("{0} is not a regular file; refusing to touch it")]
    NotRegular(PathBuf),
    #[error("{path} has {links} hard links; refusing to touch it (was it planted?)")]
    HardLinked { path: PathBuf, links: u64 },
    #[error("could not {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Opens an existing file as root may when another user can write its directory: never through
/// a symbolic link (`O_NOFOLLOW`), never blocking on a FIFO (`O_NONBLOCK`), and only a regular
/// file with one link (a hard link to, say, /etc/shadow would pass every other test).
pub fn open_unlinked_regular(path: &Path) -> Result<File, UnsafePathError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_flags::O_NOFOLLOW | libc_flags::O_NONBLOCK | libc_flags::O_NOCTTY)
        .open(path)
        .map_err(|source| {
            if source.raw_os_error() == Some(libc_flags::ELOOP) {
                UnsafePathError::Symlink(path.to_path_buf())
            } else {
                UnsafePathError::Io {
                    action: "open",
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
    let meta = file.metadata().map_err(|source| UnsafePathError::Io {
        action: "stat",
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.file_type().is_file() {
        return Err(UnsafePathError::NotRegular(path.to_path_buf()));
    }
    if meta.nlink() != 1 {
        return Err(UnsafePathError::HardLinked {
            path: path.to_path_buf(),
            links: meta.nlink(),
        });
    }
    Ok(file)
}

/// Gives the existing regular file `path` this owner (when root) and `mode`, through an open
/// descriptor ([`open_unlinked_regular`]), so a name another user replaced between our check and
/// our change cannot redirect it: a symbolic link, a hard link or anything but a regular file is
/// refused with an error, and nothing is changed.
pub fn own_safely(
    path: &Path,
    owner: Owner,
    mode: u32,
    users: &SystemUsers,
) -> Result<(), UnsafePathError> {
    use std::os::unix::fs::PermissionsExt as _;
    let file = open_unlinked_regular(path)?;
    let io = |action| {
        move |source| UnsafePathError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    };
    if nix::unistd::geteuid().is_root() {
        let (uid, gid) = owner.ids(users);
        nix::unistd::fchown(&file, Some(uid), Some(gid))
            .map_err(std::io::Error::from)
            .map_err(io("change the owner of"))?;
    }
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io("change the mode of"))
}

/// Refuses a path that exists and is not a plain file of its own ([`open_unlinked_regular`]);
/// a path that does not exist passes. Root checks a database and its -wal/-shm files with it
/// before SQLite opens them in a directory other users can write.
pub fn refuse_planted(path: &Path) -> Result<(), UnsafePathError> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        _ => open_unlinked_regular(path).map(drop),
    }
}

/// Creates `path` for writing with `mode`, failing if anything (a file, a link) is already there:
/// `O_CREAT | O_EXCL | O_NOFOLLOW`. Root writes its temp files only this way.
pub fn create_exclusive(path: &Path, mode: u32) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc_flags::O_NOFOLLOW)
        .open(path)
}

/// Removes `path` if it is there (`unlink`: a link is removed, never followed).
pub fn remove_if_exists(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Replaces `path` with `contents` atomically, the way root writes every file: a new temp file
/// beside it ([`create_exclusive`] with `mode`, so a planted name is never followed), `finish`
/// (owner, mode, times) applied to it, fsync, rename over `path`, fsync of the directory. On an
/// error the temp file is removed and `path` is untouched.
pub fn replace_file(
    path: &Path,
    contents: &[u8],
    mode: u32,
    finish: impl FnOnce(&File, &Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("no directory"))?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    remove_if_exists(&tmp)?;
    let result = (|| {
        let mut out = create_exclusive(&tmp, mode)?;
        out.write_all(contents)?;
        finish(&out, &tmp)?;
        out.sync_all()?;
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The few `open(2)` flags and errno values used here, from nix's re-export of libc.
mod libc_flags {
    pub(super) const O_NOFOLLOW: i32 = nix::libc::O_NOFOLLOW;
    pub(super) const O_NONBLOCK: i32 = nix::libc::O_NONBLOCK;
    pub(super) const O_NOCTTY: i32 = nix::libc::O_NOCTTY;
    pub(super) const ELOOP: i32 = nix::libc::ELOOP;
}

/// True when the process in `pid_file` exists and is not a zombie (see gotcha G13: `kill -0` lies).
pub fn pid_alive(pid_file: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(pid_file).ok()?;
    let pid: i32 = text.trim().parse().ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state is the field after the parenthesised command name.
    let state = stat.rsplit_once(')')?.1.split_whitespace().next()?;
    (state != "Z" && state != "X").then_some(pid)
}

/// The daemons the dashboard reports on, in the order [`daemon_status`] gives them.
pub const DAEMONS: [&str; 4] = ["Postfix", "Dovecot", "OpenDKIM", "Tracking milter"];

/// Whether each of [`DAEMONS`] is up: its pid file names a live process, or (the milter) its socket
/// answers. The pid files are root's (mode 0600): unprivileged callers ask the applier instead.
pub fn daemon_status(paths: &crate::paths::Paths) -> Vec<(&'static str, bool)> {
    let up = [
        pid_alive(&paths.postfix_pid_file()).is_some(),
        pid_alive(&paths.dovecot_pid_file()).is_some(),
        pid_alive(&paths.opendkim_pid_file()).is_some(),
        std::os::unix::net::UnixStream::connect(paths.milter_socket()).is_ok(),
    ];
    DAEMONS.into_iter().zip(up).collect()
}

/// True when some directory above `path` (or `path` itself) is writable by everybody, as `/tmp` is.
/// OpenDKIM's RequireSafeKeys refuses keys below such a directory; see gotcha G14.
pub fn under_world_writable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    let mut p: Option<PathBuf> = Some(path.to_path_buf());
    while let Some(dir) = p {
        if let Ok(meta) = std::fs::metadata(&dir)
            && meta.permissions().mode() & 0o002 != 0
        {
            return true;
        }
        p = dir.parent().map(Path::to_path_buf);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn world_writable_ancestors() {
        assert!(under_world_writable(Path::new("/tmp/x/y")));
        assert!(!under_world_writable(Path::new("/usr/share")));
    }

    fn users() -> SystemUsers {
        SystemUsers::fixed_for_tests()
    }

    #[test]
    fn own_safely_changes_a_plain_file() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("db");
        std::fs::write(&f, "x").unwrap();
        // Owner::Root keeps the test runnable as root without making up ids.
        own_safely(&f, Owner::Root, 0o640, &users()).unwrap();
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o7777,
            0o640
        );
    }

    #[test]
    fn own_safely_refuses_a_symlink_and_leaves_its_target_alone() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("shadow");
        std::fs::write(&target, "secret").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("db-wal");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = own_safely(&link, Owner::Root, 0o666, &users()).unwrap_err();
        assert!(matches!(err, UnsafePathError::Symlink(_)), "{err}");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(
            std::fs::metadata(&target).unwrap().permissions().mode() & 0o7777,
            0o600
        );
        assert!(refuse_planted(&link).is_err());
    }

    #[test]
    fn own_safely_refuses_a_hard_link_and_a_fifo() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("shadow");
        std::fs::write(&target, "secret").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("db-shm");
        std::fs::hard_link(&target, &link).unwrap();
        let err = own_safely(&link, Owner::Root, 0o666, &users()).unwrap_err();
        assert!(
            matches!(err, UnsafePathError::HardLinked { links: 2, .. }),
            "{err}"
        );
        assert_eq!(
            std::fs::metadata(&target).unwrap().permissions().mode() & 0o7777,
            0o600
        );
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // O_NONBLOCK: the open returns at once instead of waiting for a writer.
        assert!(matches!(
            own_safely(&fifo, Owner::Root, 0o666, &users()),
            Err(UnsafePathError::NotRegular(_))
        ));
        assert!(refuse_planted(&dir.path().join("missing")).is_ok());
    }

    #[test]
    fn create_exclusive_refuses_existing_files_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        let link = dir.path().join("tmp");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(create_exclusive(&link, 0o600).is_err());
        assert!(create_exclusive(&target, 0o600).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        let new = dir.path().join("new");
        use std::io::Write as _;
        create_exclusive(&new, 0o600)
            .unwrap()
            .write_all(b"x")
            .unwrap();
        assert_eq!(std::fs::read(&new).unwrap(), b"x");
    }

    #[test]
    fn our_own_pid_is_alive() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pid");
        std::fs::write(&f, format!("{}\n", std::process::id())).unwrap();
        assert!(pid_alive(&f).is_some());
        std::fs::write(&f, "999999999").unwrap();
        assert!(pid_alive(&f).is_none());
        assert!(pid_alive(&dir.path().join("missing")).is_none());
    }
}
