//! The data directory's layout: every file, directory and socket that more than one module (or
//! process) names is spelled out once, here.
//!
//! The daemon templates in `docker/templates/` spell some of these paths too, from the directories
//! [`render::vars`](crate::render::vars) gives them (`{{RUN_DIR}}/opendkim/opendkim.pid` and so on);
//! the render tests check that the rendered configuration names the same paths as these methods.

use std::path::PathBuf;

use crate::names::{Address, Domain, Selector};

/// The data directory when neither `--data` nor `DATA_DIR` names one: the container's volume.
pub const DEFAULT_DATA_DIR: &str = "/data";

/// Where everything lives under the data directory (`/data` in the container).
#[derive(Debug, Clone)]
pub struct Paths {
    pub data: PathBuf,
}

impl Paths {
    pub fn new(data: impl Into<PathBuf>) -> Self {
        Self { data: data.into() }
    }

    // TLS.
    pub fn ssl_dir(&self) -> PathBuf {
        self.data.join("ssl")
    }
    pub fn tls_cert(&self) -> PathBuf {
        self.ssl_dir().join("cert.pem")
    }
    pub fn tls_key(&self) -> PathBuf {
        self.ssl_dir().join("key.pem")
    }

    // DKIM keys.
    pub fn dkim_dir(&self) -> PathBuf {
        self.data.join("dkim")
    }
    /// The private key of `domain` under `selector`, as OpenDKIM's KeyTable names it. Apply removes
    /// every other `*.private` file below [`dkim_dir`](Self::dkim_dir).
    pub fn dkim_key(&self, domain: &Domain, selector: &Selector) -> PathBuf {
        self.dkim_dir()
            .join(domain.as_str())
            .join(format!("{selector}.private"))
    }

    // Mail.
    pub fn mail_dir(&self) -> PathBuf {
        self.data.join("mail")
    }
    /// An account's Dovecot home (its Maildir is below it), as maps.db gives it to Dovecot.
    pub fn mail_home(&self, address: &Address) -> PathBuf {
        self.mail_dir()
            .join(address.domain().as_str())
            .join(address.local().as_str())
    }

    // Databases.
    /// The main database's directory: root:mailserver-web 0770, so only the dashboard (and root)
    /// can open it; the milter cannot.
    pub fn db_dir(&self) -> PathBuf {
        self.data.join("db")
    }
    /// The main database: admins, accounts, aliases, domains (public DKIM keys), settings.
    pub fn db(&self) -> PathBuf {
        self.db_dir().join("mailserver.db")
    }
    /// The tracking database's directory: root:mailserver 02770, shared by the milter and the
    /// dashboard (setgid, so the -wal and -shm files either creates stay in group `mailserver`).
    pub fn tracking_dir(&self) -> PathBuf {
        self.data.join("tracking")
    }
    /// Tracked messages, pixel opens, and the tracking policy root renders from the main database
    /// (the tracked aliases and the pixel base URL): all the milter may read.
    pub fn tracking_db(&self) -> PathBuf {
        self.tracking_dir().join("tracking.db")
    }
    /// The lookup database's directory: root's alone (0755), so that root writes maps.db where no
    /// other user can plant a link.
    pub fn maps_dir(&self) -> PathBuf {
        self.data.join("maps")
    }
    /// The lookup database Postfix and Dovecot read (see `render::maps`).
    pub fn maps_db(&self) -> PathBuf {
        self.maps_dir().join("maps.db")
    }
    /// Where maps.db lived before it got a directory of its own; `init` removes it.
    pub fn legacy_maps_db(&self) -> PathBuf {
        self.db_dir().join("maps.db")
    }

    // Rendered configuration.
    /// Rendered daemon configuration; derived from the database, rewritten by every apply.
    /// Each file's path below it is its template's path below `docker/templates/`.
    pub fn config_dir(&self) -> PathBuf {
        self.data.join("config")
    }
    /// Postfix's configuration directory (`postfix -c`, `postconf -c`, `postqueue -c`).
    pub fn postfix_config_dir(&self) -> PathBuf {
        self.config_dir().join("postfix")
    }
    pub fn dovecot_config_dir(&self) -> PathBuf {
        self.config_dir().join("dovecot")
    }
    /// `dovecot -c` and `doveconf -c`.
    pub fn dovecot_conf(&self) -> PathBuf {
        self.dovecot_config_dir().join("dovecot.conf")
    }
    pub fn opendkim_config_dir(&self) -> PathBuf {
        self.config_dir().join("opendkim")
    }
    /// `opendkim -x`.
    pub fn opendkim_conf(&self) -> PathBuf {
        self.opendkim_config_dir().join("opendkim.conf")
    }
    /// Postfix's relay host (`RELAYHOST`), as `init` took it from root's environment. Kept in the
    /// root-only configuration directory rather than in the database the dashboard can write,
    /// because it ends up in main.cf, which root's Postfix master reads.
    pub fn relayhost_file(&self) -> PathBuf {
        self.config_dir().join("relayhost")
    }
    /// Where apply validates changed files before any live one is touched; it mirrors
    /// [`config_dir`](Self::config_dir) and is removed after each validation.
    pub fn staging_dir(&self) -> PathBuf {
        self.config_dir().join(".staging")
    }

    // Spool.
    /// Postfix's queue and more: persistent, so that queued mail survives a restart.
    pub fn spool_dir(&self) -> PathBuf {
        self.data.join("spool")
    }
    /// Postfix's `queue_directory`.
    pub fn postfix_queue_dir(&self) -> PathBuf {
        self.spool_dir().join("postfix")
    }
    /// The Postfix master's pid file (Postfix keeps it in its queue directory).
    pub fn postfix_pid_file(&self) -> PathBuf {
        self.postfix_queue_dir().join("pid/master.pid")
    }

    // Sockets and pid files; recreated at every start.
    pub fn run_dir(&self) -> PathBuf {
        self.data.join("run")
    }
    /// Dovecot's `base_dir`: its sockets (LMTP, auth) and its pid file.
    pub fn dovecot_run_dir(&self) -> PathBuf {
        self.run_dir().join("dovecot")
    }
    pub fn dovecot_pid_file(&self) -> PathBuf {
        self.dovecot_run_dir().join("master.pid")
    }
    /// OpenDKIM's, for its socket and pid file.
    pub fn opendkim_run_dir(&self) -> PathBuf {
        self.run_dir().join("opendkim")
    }
    pub fn opendkim_pid_file(&self) -> PathBuf {
        self.opendkim_run_dir().join("opendkim.pid")
    }
    /// The milter socket Postfix connects to for DKIM (second on `smtpd_milters`).
    pub fn opendkim_socket(&self) -> PathBuf {
        self.opendkim_run_dir().join("opendkim.sock")
    }
    /// The milter's own directory, where it creates its socket.
    pub fn milter_run_dir(&self) -> PathBuf {
        self.run_dir().join("milter")
    }
    /// Where `mailserver-milter` listens by default, first on Postfix's `smtpd_milters`.
    pub fn milter_socket(&self) -> PathBuf {
        self.milter_run_dir().join("milter.sock")
    }
    /// The applier's directory: root:mailserver-web 0750, so only the dashboard's group gets in.
    pub fn applier_run_dir(&self) -> PathBuf {
        self.run_dir().join("applier")
    }
    /// Where the applier takes requests from the unprivileged dashboard (see `applier`).
    pub fn applier_socket(&self) -> PathBuf {
        self.applier_run_dir().join("applier.sock")
    }
    /// Serialises applies (the CLI's, the applier's).
    pub fn lock_file(&self) -> PathBuf {
        self.run_dir().join("apply.lock")
    }

    pub fn log_dir(&self) -> PathBuf {
        self.data.join("log")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let p = Paths::new("/data");
        let cases = [
            (p.db(), "/data/db/mailserver.db"),
            (p.maps_db(), "/data/maps/maps.db"),
            (p.tracking_db(), "/data/tracking/tracking.db"),
            (p.relayhost_file(), "/data/config/relayhost"),
            (p.postfix_pid_file(), "/data/spool/postfix/pid/master.pid"),
            (p.dovecot_pid_file(), "/data/run/dovecot/master.pid"),
            (p.opendkim_pid_file(), "/data/run/opendkim/opendkim.pid"),
            (p.opendkim_socket(), "/data/run/opendkim/opendkim.sock"),
            (p.milter_socket(), "/data/run/milter/milter.sock"),
            (p.applier_socket(), "/data/run/applier/applier.sock"),
            (p.staging_dir(), "/data/config/.staging"),
            (p.dovecot_conf(), "/data/config/dovecot/dovecot.conf"),
            (p.opendkim_conf(), "/data/config/opendkim/opendkim.conf"),
            (
                p.dkim_key(
                    &Domain::parse("example.com").unwrap(),
                    &Selector::parse("mail").unwrap(),
                ),
                "/data/dkim/example.com/mail.private",
            ),
            (
                p.mail_home(&Address::parse("alice@example.com").unwrap()),
                "/data/mail/example.com/alice",
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, PathBuf::from(want));
        }
    }
}
