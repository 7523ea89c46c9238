//! Rendering: one database snapshot in, every daemon file out. Pure: no I/O, so it is unit-tested
//! without daemons and two renders of the same snapshot are byte-identical.
//!
//! What ends up in a command line or in a file root's daemons act on comes from [`RootSettings`]
//! (root's own program and environment), never from the snapshot: the dashboard's user can write
//! the database. The DKIM private keys are not rendered either: they are files already
//! ([`crate::dkim_keys`]); OpenDKIM's KeyTable names those whose public key is known.
//!
//! The static parts come from the templates in `docker/templates/`, compiled into the binary, so the
//! native stack (`scripts/stack.sh`) and the image run exactly the same configuration.

pub mod maps;
pub mod template;

use std::path::PathBuf;

use thiserror::Error;

use crate::paths::Paths;
use crate::settings::{ListenAddress, RootSettings};
use crate::store::Snapshot;
use crate::store::tracking::TrackingPolicy;
use crate::system::{Owner, SystemUsers};
pub use maps::Maps;
pub use template::TemplateError;

/// Postfix's `message_size_limit`: 25 MiB, what most providers accept.
pub const MESSAGE_SIZE_LIMIT: u64 = 25 * 1024 * 1024;

/// Which daemon must reload when a file changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Daemon {
    Postfix,
    Dovecot,
    Opendkim,
    /// Read only when supervisord starts.
    Supervisor,
}

/// One file to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub path: PathBuf,
    pub contents: Vec<u8>,
    pub mode: u32,
    pub owner: Owner,
    pub daemon: Daemon,
}

/// Everything a snapshot renders to.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub files: Vec<File>,
    pub maps: Maps,
    /// DKIM key files to keep, one per domain (active or not: a key is not remade when its domain
    /// is switched back on); others under `dkim/` are stale and removed.
    pub dkim_keys: Vec<PathBuf>,
    /// What the milter reads from tracking.db.
    pub tracking: TrackingPolicy,
}

#[derive(Debug, Error)]
pub enum RenderError {
    #[error(transparent)]
    Template(#[from] TemplateError),
}

const TEMPLATES: &[(&str, &str, Daemon)] = &[
    (
        "postfix/main.cf",
        include_str!("../../docker/templates/postfix/main.cf"),
        Daemon::Postfix,
    ),
    (
        "postfix/master.cf",
        include_str!("../../docker/templates/postfix/master.cf"),
        Daemon::Postfix,
    ),
    (
        "postfix/virtual_domains.cf",
        include_str!("../../docker/templates/postfix/virtual_domains.cf"),
        Daemon::Postfix,
    ),
    (
        "postfix/virtual_mailboxes.cf",
        include_str!("../../docker/templates/postfix/virtual_mailboxes.cf"),
        Daemon::Postfix,
    ),
    (
        "postfix/virtual_aliases.cf",
        include_str!("../../docker/templates/postfix/virtual_aliases.cf"),
        Daemon::Postfix,
    ),
    (
        "postfix/sender_logins.cf",
        include_str!("../../docker/templates/postfix/sender_logins.cf"),
        Daemon::Postfix,
    ),
    (
        "postfix/own_domains.cf",
        include_str!("../../docker/templates/postfix/own_domains.cf"),
        Daemon::Postfix,
    ),
    (
        "dovecot/dovecot.conf",
        include_str!("../../docker/templates/dovecot/dovecot.conf"),
        Daemon::Dovecot,
    ),
    (
        "dovecot/dovecot-sql.conf.ext",
        include_str!("../../docker/templates/dovecot/dovecot-sql.conf.ext"),
        Daemon::Dovecot,
    ),
    (
        "opendkim/opendkim.conf",
        include_str!("../../docker/templates/opendkim/opendkim.conf"),
        Daemon::Opendkim,
    ),
    (
        "supervisord.conf",
        include_str!("../../docker/templates/supervisord.conf"),
        Daemon::Supervisor,
    ),
];

fn path_str(p: PathBuf) -> String {
    p.to_string_lossy().into_owned()
}

/// The template variables for a snapshot.
pub fn vars(
    snapshot: &Snapshot,
    paths: &Paths,
    users: &SystemUsers,
    root: &RootSettings,
    require_safe_keys: bool,
) -> template::Vars {
    let s = &snapshot.settings;
    let (inet_interfaces, bind, dovecot_listen) = match s.listen {
        ListenAddress::All => ("all".to_string(), String::new(), "*".to_string()),
        ListenAddress::Ip(ip) => (ip.to_string(), format!("{ip}:"), ip.to_string()),
    };
    [
        ("DATA_DIR", path_str(paths.data.clone())),
        ("CONFIG_DIR", path_str(paths.config_dir())),
        ("RUN_DIR", path_str(paths.run_dir())),
        ("LOG_DIR", path_str(paths.log_dir())),
        ("SPOOL_DIR", path_str(paths.spool_dir())),
        ("MAPS_DB", path_str(paths.maps_db())),
        ("TLS_CERT", path_str(paths.tls_cert())),
        ("TLS_KEY", path_str(paths.tls_key())),
        ("BIN_DIR", path_str(root.bin_dir.clone())),
        ("HOSTNAME", s.hostname.to_string()),
        ("MYDOMAIN", s.hostname.parent().to_string()),
        ("INET_INTERFACES", inet_interfaces),
        ("BIND", bind),
        ("DOVECOT_LISTEN", dovecot_listen),
        ("SMTP_PORT", s.ports.smtp.to_string()),
        ("SUBMISSION_PORT", s.ports.submission.to_string()),
        ("SMTPS_PORT", s.ports.smtps.to_string()),
        ("IMAP_PORT", s.ports.imap.to_string()),
        ("IMAPS_PORT", s.ports.imaps.to_string()),
        ("POP3_PORT", s.ports.pop3.to_string()),
        ("POP3S_PORT", s.ports.pop3s.to_string()),
        ("WEB_PORT", s.ports.web.to_string()),
        ("RELAYHOST", root.relayhost.as_str().to_string()),
        ("MESSAGE_SIZE_LIMIT", MESSAGE_SIZE_LIMIT.to_string()),
        ("VMAIL_UID", users.vmail_uid.to_string()),
        ("VMAIL_GID", users.vmail_gid.to_string()),
        (
            "DKIM_REQUIRE_SAFE_KEYS",
            if require_safe_keys { "true" } else { "false" }.to_string(),
        ),
    ]
    .into_iter()
    .collect()
}

/// Renders every file for `snapshot`.
pub fn render(
    snapshot: &Snapshot,
    paths: &Paths,
    users: &SystemUsers,
    root: &RootSettings,
    require_safe_keys: bool,
) -> Result<Rendered, RenderError> {
    let vars = vars(snapshot, paths, users, root, require_safe_keys);
    let config = paths.config_dir();
    let mut files = Vec::new();

    let dkim_keys = snapshot
        .domains
        .iter()
        .filter_map(|d| Some(paths.dkim_key(&d.domain, &d.dkim.as_ref()?.selector)))
        .collect();
    // Apply makes each key file before it stores the public key: a known public key means the
    // file is there, so the KeyTable never names a missing file.
    let mut key_table = String::new();
    let mut signing_table = String::new();
    for d in snapshot.domains.iter().filter(|d| d.active) {
        let Some(key) = d.dkim.as_ref().filter(|k| k.public_b64.is_some()) else {
            continue;
        };
        let key_path = paths.dkim_key(&d.domain, &key.selector);
        let name = format!("{}._domainkey.{}", key.selector, d.domain);
        key_table.push_str(&format!(
            "{name} {}:{}:{}\n",
            d.domain,
            key.selector,
            key_path.display()
        ));
        signing_table.push_str(&format!("*@{} {name}\n", d.domain));
    }
    for (path, contents) in [
        ("opendkim/KeyTable", key_table),
        ("opendkim/SigningTable", signing_table),
        ("opendkim/TrustedHosts", "127.0.0.1\n::1\n".to_string()),
    ] {
        files.push(File {
            path: config.join(path),
            contents: contents.into_bytes(),
            mode: 0o644,
            owner: Owner::Root,
            daemon: Daemon::Opendkim,
        });
    }
    for (name, text, daemon) in TEMPLATES {
        files.push(File {
            path: config.join(name),
            contents: template::render(name, text, &vars)?.into_bytes(),
            mode: 0o644,
            owner: Owner::Root,
            daemon: *daemon,
        });
    }
    Ok(Rendered {
        files,
        maps: Maps::from_snapshot(snapshot, paths),
        dkim_keys,
        tracking: TrackingPolicy::from_snapshot(snapshot),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{Address, AliasSource, Destinations, Domain};
    use crate::store::{self, testutil};

    fn snapshot_with_data() -> (tempfile::TempDir, Snapshot) {
        let (dir, mut conn) = testutil::conn();
        let d = Domain::parse("example.com").unwrap();
        let rec = store::domains::add(&conn, &d).unwrap();
        // What apply stores once it has made the key file.
        store::domains::set_public_key(&conn, rec.id, &rec.dkim.unwrap().selector, "PUBLIC")
            .unwrap();
        store::domains::add(&conn, &Domain::parse("off.example").unwrap()).unwrap();
        // A domain whose key apply has not made yet.
        store::domains::add(&conn, &Domain::parse("pending.example").unwrap()).unwrap();
        store::domains::set_active(&conn, &Domain::parse("off.example").unwrap(), false).unwrap();
        let alice = Address::parse("alice@example.com").unwrap();
        store::accounts::add(&conn, &alice, "Tq8wLz4nRv2k", 10, "Alice").unwrap();
        let bob = Address::parse("bob@example.com").unwrap();
        store::accounts::add(&conn, &bob, "Tq8wLz4nRv2k", 0, "").unwrap();
        store::accounts::set_active(&conn, &bob, false).unwrap();
        store::aliases::add(
            &conn,
            &AliasSource::parse("sales@example.com").unwrap(),
            &Destinations::parse("alice@example.com,ext@outside.example").unwrap(),
            true,
        )
        .unwrap();
        store::aliases::add(
            &conn,
            &AliasSource::parse("@example.com").unwrap(),
            &Destinations::parse("alice@example.com").unwrap(),
            false,
        )
        .unwrap();
        let snap = Snapshot::read(&mut conn).unwrap();
        (dir, snap)
    }

    fn root() -> RootSettings {
        RootSettings {
            bin_dir: "/usr/local/bin".into(),
            relayhost: Default::default(),
        }
    }

    /// Renders `snap` for the container's layout (`/data`, the image's users, everything on).
    fn render_in_data(snap: &Snapshot) -> Rendered {
        render(
            snap,
            &Paths::new("/data"),
            &SystemUsers::fixed_for_tests(),
            &root(),
            true,
        )
        .unwrap()
    }

    fn file<'a>(r: &'a Rendered, suffix: &str) -> &'a str {
        let f = r
            .files
            .iter()
            .find(|f| f.path.to_string_lossy().ends_with(suffix))
            .unwrap_or_else(|| panic!("no file {suffix}"));
        std::str::from_utf8(&f.contents).unwrap()
    }

    #[test]
    fn renders_every_template_without_leftovers() {
        let (_dir, snap) = snapshot_with_data();
        let r = render_in_data(&snap);
        for f in &r.files {
            let text = String::from_utf8_lossy(&f.contents);
            assert!(
                !text.contains("{{"),
                "{} has an unrendered variable",
                f.path.display()
            );
        }
        let main = file(&r, "postfix/main.cf");
        assert!(main.contains("myhostname = mx.example.com\n"));
        assert!(main.contains("inet_interfaces = all\n"));
        assert!(main.contains("smtpd_milters = { unix:/data/run/milter/milter.sock, default_action=accept }, unix:/data/run/opendkim/opendkim.sock"));
        let master = file(&r, "postfix/master.cf");
        assert!(master.starts_with("# Postfix master.cf"));
        assert!(master.contains("\n25 inet n - n - - smtpd\n"));
        for service in ["cleanup", "qmgr", "smtp", "bounce", "lmtp", "postlog"] {
            assert!(
                master.contains(&format!("\n{service} ")),
                "master.cf lacks {service}"
            );
        }
        assert!(file(&r, "dovecot/dovecot.conf").contains("port = 993"));
    }

    /// The templates spell the paths of sockets, pid files and config files from the directories
    /// `vars` gives them; the code that reloads, checks and connects uses `Paths`. They must agree.
    #[test]
    fn the_configuration_names_the_paths_the_code_uses() {
        let (_dir, snap) = snapshot_with_data();
        let paths = Paths::new("/data");
        let r = render_in_data(&snap);
        for p in [
            paths.postfix_config_dir().join("main.cf"),
            paths.dovecot_conf(),
            paths.opendkim_conf(),
        ] {
            assert!(
                r.files.iter().any(|f| f.path == p),
                "{} is not rendered",
                p.display()
            );
        }
        let has_line = |file_suffix: &str, words: &[&str]| {
            let text = file(&r, file_suffix);
            assert!(
                text.lines()
                    .any(|l| l.split_whitespace().eq(words.iter().copied())),
                "{file_suffix} has no line {words:?}:\n{text}"
            );
        };
        let s = |p: std::path::PathBuf| p.to_string_lossy().into_owned();
        let main = file(&r, "postfix/main.cf");
        has_line(
            "postfix/main.cf",
            &["queue_directory", "=", &s(paths.postfix_queue_dir())],
        );
        for socket in [paths.milter_socket(), paths.opendkim_socket()] {
            assert!(
                main.contains(&format!("unix:{}", socket.display())),
                "{main}"
            );
        }
        for map in [
            "virtual_domains.cf",
            "virtual_mailboxes.cf",
            "sender_logins.cf",
        ] {
            has_line(map, &["dbpath", "=", &s(paths.maps_db())]);
        }
        has_line(
            "dovecot/dovecot-sql.conf.ext",
            &["connect", "=", &s(paths.maps_db())],
        );
        // Dovecot writes master.pid in its base_dir.
        has_line(
            "dovecot/dovecot.conf",
            &["base_dir", "=", &s(paths.dovecot_run_dir())],
        );
        assert_eq!(
            paths.dovecot_pid_file(),
            paths.dovecot_run_dir().join("master.pid")
        );
        has_line(
            "opendkim/opendkim.conf",
            &[
                "Socket",
                &format!("local:{}", paths.opendkim_socket().display()),
            ],
        );
        has_line(
            "opendkim/opendkim.conf",
            &["PidFile", &s(paths.opendkim_pid_file())],
        );
        let supervisord = file(&r, "supervisord.conf");
        for needle in [
            format!("-c {}", paths.dovecot_conf().display()),
            format!("-x {}", paths.opendkim_conf().display()),
            format!("postfix -c {} ", paths.postfix_config_dir().display()),
        ] {
            assert!(
                supervisord.contains(&needle),
                "no {needle:?} in supervisord.conf"
            );
        }
    }

    #[test]
    fn only_active_domains_sign_and_resolve() {
        let (_dir, snap) = snapshot_with_data();
        let r = render_in_data(&snap);
        assert_eq!(
            file(&r, "opendkim/KeyTable"),
            "mail._domainkey.example.com example.com:mail:/data/dkim/example.com/mail.private\n"
        );
        assert_eq!(
            file(&r, "opendkim/SigningTable"),
            "*@example.com mail._domainkey.example.com\n"
        );
        // No private key is rendered; every domain's key file is kept, active or not.
        assert!(!r.files.iter().any(|f| f.path.starts_with("/data/dkim")));
        assert_eq!(
            r.dkim_keys,
            [
                "/data/dkim/example.com/mail.private",
                "/data/dkim/off.example/mail.private",
                "/data/dkim/pending.example/mail.private"
            ]
            .map(std::path::PathBuf::from)
        );
        assert_eq!(r.maps.domains, vec!["example.com", "pending.example"]);
        assert_eq!(
            r.tracking.tracked_aliases,
            [("sales@example.com".to_string(), 1)]
        );
        // bob is disabled: not a mailbox.
        assert_eq!(r.maps.mailboxes.len(), 1);
        let (email, pw, home, quota) = &r.maps.mailboxes[0];
        assert_eq!(email, "alice@example.com");
        assert!(pw.starts_with("{ARGON2ID}$argon2id$"));
        assert_eq!(home, "/data/mail/example.com/alice");
        assert_eq!(quota.as_deref(), Some("*:storage=10M"));
        assert_eq!(
            r.maps.aliases,
            vec![
                ("@example.com".to_string(), "alice@example.com".to_string()),
                (
                    "sales@example.com".to_string(),
                    "alice@example.com,ext@outside.example".to_string()
                ),
            ]
        );
        // alice may send as herself and as sales@ (which delivers to her); nobody as the catch-all.
        assert_eq!(
            r.maps.sender_logins,
            vec![
                (
                    "alice@example.com".to_string(),
                    "alice@example.com".to_string()
                ),
                (
                    "sales@example.com".to_string(),
                    "alice@example.com".to_string()
                ),
            ]
        );
    }

    #[test]
    fn loopback_listening_and_unsafe_key_dirs() {
        let (_dir, mut snap) = snapshot_with_data();
        snap.settings.listen = crate::settings::ListenAddress::Ip("127.0.0.1".parse().unwrap());
        snap.settings.ports.smtp = 2525;
        let r = render(
            &snap,
            &Paths::new("/tmp/x"),
            &SystemUsers::fixed_for_tests(),
            &root(),
            false,
        )
        .unwrap();
        assert!(file(&r, "postfix/master.cf").contains("\n127.0.0.1:2525 inet n - n - - smtpd\n"));
        assert!(file(&r, "dovecot/dovecot.conf").contains("listen = 127.0.0.1\n"));
        assert!(file(&r, "opendkim/opendkim.conf").contains("RequireSafeKeys         false"));
    }

    #[test]
    fn rendering_is_deterministic() {
        let (_dir, snap) = snapshot_with_data();
        let paths = Paths::new("/data");
        let u = SystemUsers::fixed_for_tests();
        let a = render(&snap, &paths, &u, &root(), true).unwrap();
        let b = render(&snap, &paths, &u, &root(), true).unwrap();
        assert_eq!(a.files, b.files);
        assert_eq!(a.maps, b.maps);
    }

    #[test]
    fn maps_db_round_trips() {
        let (dir, snap) = snapshot_with_data();
        let r = render_in_data(&snap);
        let path = dir.path().join("maps.db");
        r.maps.write(&path).unwrap();
        r.maps.write(&path).unwrap();
        assert_eq!(Maps::read(&path).unwrap(), r.maps);
        Maps::default().write(&path).unwrap();
        assert_eq!(Maps::read(&path).unwrap(), Maps::default());
    }
}
