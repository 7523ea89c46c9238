//! Facts about the host the configuration depends on: system users, running daemons, safe paths.

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
    /// The dashboard's and the milter's users, both in the `mailserver` group, which owns the
    /// database and can reach the applier.
    pub web_uid: u32,
    pub milter_uid: u32,
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
        Ok(Self {
            vmail_uid: vmail.uid.as_raw(),
            vmail_gid: vmail.gid.as_raw(),
            postfix_gid: group("postfix")?.gid.as_raw(),
            opendkim_uid: opendkim.uid.as_raw(),
            opendkim_gid: opendkim.gid.as_raw(),
            web_uid: user(WEB_USER)?.uid.as_raw(),
            milter_uid: user(MILTER_USER)?.uid.as_raw(),
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
            milter_uid: 5002,
            mailserver_gid: 5001,
        }
    }

    pub fn mailserver_gid(&self) -> Gid {
        Gid::from_raw(self.mailserver_gid)
    }
}

/// The user `mailserver-web` runs as (supervisord.conf), and the milter's; see the Dockerfile.
pub const WEB_USER: &str = "mailserver-web";
pub const MILTER_USER: &str = "mailserver-milter";
pub const MAILSERVER_GROUP: &str = "mailserver";

/// Who owns a file we write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Root,
    /// Readable by Postfix's group (maps.db).
    RootPostfixGroup,
    Opendkim,
    Vmail,
    /// Root's, readable (and for the database, writable) by the `mailserver` group.
    RootMailserverGroup,
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
            Owner::RootMailserverGroup => (Uid::from_raw(0), users.mailserver_gid()),
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
