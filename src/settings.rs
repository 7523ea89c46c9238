//! Server settings (the data directory's layout is in `paths`).
//!
//! `mailserver init` reads the settings from the environment (the container's `.env`, or
//! `scripts/stack.sh`) and stores them in the database, so that every later command renders the same
//! configuration whatever environment it happens to run in. A variable that is present (even empty)
//! replaces the stored value; one that is absent keeps it.
//!
//! Two values are not in the database: what ends up in a command line or in a file root's daemons
//! act on must not come from a table the dashboard's user can write. [`RootSettings`] has them: the
//! binaries' directory is the running (root) program's own, and `RELAYHOST` is kept in a root-only
//! file `init` writes from root's environment.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::names::{Hostname, NameError};
use crate::tracking::BaseUrl;

#[derive(Debug, Error)]
pub enum SettingsError {
    #[error("{key}: {source}")]
    Name {
        key: &'static str,
        source: NameError,
    },
    #[error("{key}: {why} (got {value:?})")]
    Invalid {
        key: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("{key}: {source}")]
    Url {
        key: &'static str,
        source: crate::tracking::TrackingError,
    },
    #[error("the server is not initialised yet: run `mailserver init` first")]
    NotInitialised,
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("could not {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The listening ports of the public services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub smtp: u16,
    pub submission: u16,
    pub smtps: u16,
    pub imap: u16,
    pub imaps: u16,
    pub pop3: u16,
    pub pop3s: u16,
    pub web: u16,
}

impl Default for Ports {
    fn default() -> Self {
        Self {
            smtp: 25,
            submission: 587,
            smtps: 465,
            imap: 143,
            imaps: 993,
            pop3: 110,
            pop3s: 995,
            web: 8080,
        }
    }
}

/// Where the public services listen: every interface (the container) or one IPv4 address (tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenAddress {
    All,
    Ip(Ipv4Addr),
}

impl ListenAddress {
    pub fn parse(s: &str) -> Result<Self, SettingsError> {
        match s.trim() {
            "" | "*" | "all" | "0.0.0.0" => Ok(Self::All),
            other => other
                .parse()
                .map(Self::Ip)
                .map_err(|_| SettingsError::Invalid {
                    key: "LISTEN_ADDRESS",
                    value: s.to_string(),
                    why: "expected * or an IPv4 address",
                }),
        }
    }
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("*"),
            Self::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Postfix's `relayhost`: `[host]:port`, `host:port` or `host`; empty means deliver directly.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Relayhost(String);

impl Relayhost {
    pub fn parse(s: &str) -> Result<Self, SettingsError> {
        let s = s.trim();
        let invalid = |why| SettingsError::Invalid {
            key: "RELAYHOST",
            value: s.to_string(),
            why,
        };
        if s.is_empty() {
            return Ok(Self::default());
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(|| invalid("unclosed ["))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| invalid("expected :port after ]"))?,
                ),
            };
            (host, port)
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            }
        };
        if host.parse::<Ipv4Addr>().is_err() && crate::names::Domain::parse(host).is_err() {
            return Err(invalid(
                "the host is neither an IPv4 address nor a domain name",
            ));
        }
        if let Some(p) = port
            && p.parse::<u16>().map_or(true, |p| p == 0)
        {
            return Err(invalid("the port is not a number from 1 to 65535"));
        }
        Ok(Self(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `TRACKING_RETENTION_DAYS`: tracked messages and opens older than this many days are deleted.
/// From 1 to 36,500 (a hundred years); 180 by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionDays(u32);

impl RetentionDays {
    pub const DEFAULT: Self = Self(180);
    const MAX: u32 = 36_500;

    /// `days` if it is within 1..=36,500.
    pub fn new(days: u32) -> Option<Self> {
        (1..=Self::MAX).contains(&days).then_some(Self(days))
    }

    /// Parses the setting; empty means the default.
    pub fn parse(s: &str) -> Result<Self, SettingsError> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(Self::DEFAULT);
        }
        s.parse::<u32>()
            .ok()
            .and_then(Self::new)
            .ok_or_else(|| SettingsError::Invalid {
                key: "TRACKING_RETENTION_DAYS",
                value: s.to_string(),
                why: "expected a whole number of days from 1 to 36500",
            })
    }

    pub fn days(self) -> u32 {
        self.0
    }
}

impl Default for RetentionDays {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Display for RetentionDays {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Everything about the server that is not in the domain/account/alias tables.
#[derive(Debug, Clone)]
pub struct Settings {
    pub hostname: Hostname,
    pub listen: ListenAddress,
    pub ports: Ports,
    pub pixel_base_url: BaseUrl,
    /// How long tracked messages and opens are kept.
    pub tracking_retention: RetentionDays,
}

const KEYS: &[&str] = &[
    "HOSTNAME",
    "LISTEN_ADDRESS",
    "SMTP_PORT",
    "SUBMISSION_PORT",
    "SMTPS_PORT",
    "IMAP_PORT",
    "IMAPS_PORT",
    "POP3_PORT",
    "POP3S_PORT",
    "WEB_PORT",
    "PIXEL_BASE_URL",
    "TRACKING_RETENTION_DAYS",
];

fn port(
    map: &BTreeMap<String, String>,
    key: &'static str,
    default: u16,
) -> Result<u16, SettingsError> {
    match map.get(key) {
        None => Ok(default),
        Some(v) if v.trim().is_empty() => Ok(default),
        Some(v) => v
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| SettingsError::Invalid {
                key,
                value: v.clone(),
                why: "expected a port from 1 to 65535",
            }),
    }
}

fn safe_path(key: &'static str, v: &str) -> Result<PathBuf, SettingsError> {
    let ok = v.starts_with('/')
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '+'));
    if ok {
        Ok(PathBuf::from(v))
    } else {
        Err(SettingsError::Invalid {
            key,
            value: v.to_string(),
            why: "expected an absolute path of letters, digits and / . _ - +",
        })
    }
}

/// Validates a data directory path, which is written into every daemon's configuration.
pub fn check_data_dir(path: &Path) -> Result<(), SettingsError> {
    let s = path.to_string_lossy();
    safe_path("DATA_DIR", &s).map(|_| ())?;
    if s.len() > 60 {
        // Unix socket paths are limited to 108 bytes; keep room for run/dovecot/auth-postfix etc.
        return Err(SettingsError::Invalid {
            key: "DATA_DIR",
            value: s.into_owned(),
            why: "longer than 60 characters (unix socket paths below it would be too long)",
        });
    }
    Ok(())
}

impl Settings {
    /// Builds settings from `KEY=value` pairs; missing keys take their defaults.
    pub fn from_map(map: &BTreeMap<String, String>) -> Result<Self, SettingsError> {
        let d = Ports::default();
        let ports = Ports {
            smtp: port(map, "SMTP_PORT", d.smtp)?,
            submission: port(map, "SUBMISSION_PORT", d.submission)?,
            smtps: port(map, "SMTPS_PORT", d.smtps)?,
            imap: port(map, "IMAP_PORT", d.imap)?,
            imaps: port(map, "IMAPS_PORT", d.imaps)?,
            pop3: port(map, "POP3_PORT", d.pop3)?,
            pop3s: port(map, "POP3S_PORT", d.pop3s)?,
            web: port(map, "WEB_PORT", d.web)?,
        };
        let hostname =
            Hostname::parse(map.get("HOSTNAME").map_or("", String::as_str)).map_err(|source| {
                SettingsError::Name {
                    key: "HOSTNAME",
                    source,
                }
            })?;
        let pixel_base_url = match map.get("PIXEL_BASE_URL").map(|s| s.trim()) {
            Some(v) if !v.is_empty() => BaseUrl::parse(v),
            _ => BaseUrl::parse(&format!("https://{hostname}")),
        }
        .map_err(|source| SettingsError::Url {
            key: "PIXEL_BASE_URL",
            source,
        })?;
        Ok(Self {
            hostname,
            listen: ListenAddress::parse(map.get("LISTEN_ADDRESS").map_or("", String::as_str))?,
            ports,
            pixel_base_url,
            tracking_retention: RetentionDays::parse(
                map.get("TRACKING_RETENTION_DAYS")
                    .map_or("", String::as_str),
            )?,
        })
    }

    pub fn to_map(&self) -> BTreeMap<String, String> {
        let p = &self.ports;
        [
            ("HOSTNAME", self.hostname.to_string()),
            ("LISTEN_ADDRESS", self.listen.to_string()),
            ("SMTP_PORT", p.smtp.to_string()),
            ("SUBMISSION_PORT", p.submission.to_string()),
            ("SMTPS_PORT", p.smtps.to_string()),
            ("IMAP_PORT", p.imap.to_string()),
            ("IMAPS_PORT", p.imaps.to_string()),
            ("POP3_PORT", p.pop3.to_string()),
            ("POP3S_PORT", p.pop3s.to_string()),
            ("WEB_PORT", p.web.to_string()),
            ("PIXEL_BASE_URL", self.pixel_base_url.as_str().to_string()),
            (
                "TRACKING_RETENTION_DAYS",
                self.tracking_retention.to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The environment over `stored`, over `defaults` for keys never set, validated. A variable that
    /// is present (even empty) replaces the stored value; one that is absent keeps it.
    pub fn merge(
        stored: BTreeMap<String, String>,
        env: impl Fn(&str) -> Option<String>,
        defaults: &BTreeMap<String, String>,
    ) -> Result<Self, SettingsError> {
        let mut map = defaults.clone();
        map.extend(stored);
        for key in KEYS {
            if let Some(v) = env(key) {
                map.insert((*key).to_string(), v);
            }
        }
        Self::from_map(&map)
    }
}

/// What root renders into command lines (supervisord.conf) and into main.cf: from root's own
/// program and environment, never from the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootSettings {
    /// Where `mailserver`, `mailserver-milter` and `mailserver-web` are installed: the directory of
    /// the running program (root's `mailserver`), so the image (or `scripts/stack.sh`) decides.
    pub bin_dir: PathBuf,
    /// Postfix's `relayhost`, from [`Paths::relayhost_file`](crate::paths::Paths::relayhost_file).
    pub relayhost: Relayhost,
}

impl RootSettings {
    /// The binaries' directory of this program and the relay host `init` stored.
    pub fn load(paths: &crate::paths::Paths) -> Result<Self, SettingsError> {
        let exe = std::env::current_exe().map_err(|source| SettingsError::Io {
            action: "find",
            path: PathBuf::from("/proc/self/exe"),
            source,
        })?;
        let dir = exe.parent().unwrap_or(Path::new("/"));
        let bin_dir = safe_path("BIN_DIR", &dir.to_string_lossy())?;
        let file = paths.relayhost_file();
        let relayhost = match std::fs::read_to_string(&file) {
            Ok(text) => Relayhost::parse(&text)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Relayhost::default(),
            Err(source) => {
                return Err(SettingsError::Io {
                    action: "read",
                    path: file,
                    source,
                });
            }
        };
        Ok(Self { bin_dir, relayhost })
    }

    /// Stores `RELAYHOST` from root's environment (`env`) for [`load`](Self::load): a variable that
    /// is present (even empty) replaces the stored value, one that is absent keeps it. The file is
    /// root's, in the root-only configuration directory, written with
    /// [`crate::system::replace_file`].
    pub fn store_relayhost(
        paths: &crate::paths::Paths,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<(), SettingsError> {
        let Some(value) = env("RELAYHOST") else {
            return Ok(());
        };
        let relayhost = Relayhost::parse(&value)?;
        let file = paths.relayhost_file();
        let contents = format!("{}\n", relayhost.as_str());
        crate::system::replace_file(&file, contents.as_bytes(), 0o644, |_, _| Ok(())).map_err(
            |source| SettingsError::Io {
                action: "write",
                path: file.clone(),
                source,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn defaults_and_overrides() {
        let s = Settings::from_map(&map(&[
            ("HOSTNAME", "mx.example.com"),
            ("SMTP_PORT", "2525"),
        ]))
        .unwrap();
        assert_eq!(s.ports.smtp, 2525);
        assert_eq!(s.ports.submission, 587);
        assert_eq!(s.pixel_base_url.as_str(), "https://mx.example.com");
        assert_eq!(s.listen, ListenAddress::All);
        let again = Settings::from_map(&s.to_map()).unwrap();
        assert_eq!(again.to_map(), s.to_map());
    }

    #[test]
    fn rejects_bad_values() {
        for (k, v) in [
            ("HOSTNAME", "mx example.com"),
            ("HOSTNAME", "mx.example.com\nmydestination = evil"),
            ("SMTP_PORT", "0"),
            ("SMTP_PORT", "70000"),
            ("LISTEN_ADDRESS", "somewhere"),
            ("PIXEL_BASE_URL", "javascript:alert(1)"),
            ("PIXEL_BASE_URL", "https://x.example/\"onerror"),
            ("TRACKING_RETENTION_DAYS", "0"),
            ("TRACKING_RETENTION_DAYS", "-5"),
            ("TRACKING_RETENTION_DAYS", "180d"),
            ("TRACKING_RETENTION_DAYS", "1.5"),
            ("TRACKING_RETENTION_DAYS", "36501"),
            ("TRACKING_RETENTION_DAYS", "99999999999"),
        ] {
            let mut m = map(&[("HOSTNAME", "mx.example.com")]);
            m.insert(k.to_string(), v.to_string());
            assert!(Settings::from_map(&m).is_err(), "{k}={v:?} was accepted");
        }
    }

    #[test]
    fn retention_days() {
        let s = Settings::from_map(&map(&[("HOSTNAME", "mx.example.com")])).unwrap();
        assert_eq!(s.tracking_retention.days(), 180);
        for (v, days) in [("1", 1), (" 30 ", 30), ("36500", 36_500), ("", 180)] {
            let m = map(&[
                ("HOSTNAME", "mx.example.com"),
                ("TRACKING_RETENTION_DAYS", v),
            ]);
            assert_eq!(
                Settings::from_map(&m).unwrap().tracking_retention.days(),
                days,
                "{v:?}"
            );
        }
        let m = map(&[
            ("HOSTNAME", "mx.example.com"),
            ("TRACKING_RETENTION_DAYS", "0"),
        ]);
        let err = Settings::from_map(&m).unwrap_err().to_string();
        assert_eq!(
            err,
            "TRACKING_RETENTION_DAYS: expected a whole number of days from 1 to 36500 (got \"0\")"
        );
    }

    #[test]
    fn relayhosts() {
        for ok in [
            "",
            "[127.0.0.1]:2626",
            "relay.example.com",
            "relay.example.com:587",
            "[smtp.example.com]",
        ] {
            assert!(Relayhost::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["[relay.example.com", "relay.example.com:smtp\n", "a b:25"] {
            assert!(Relayhost::parse(bad).is_err(), "{bad:?}");
        }
    }

    /// BIN_DIR and RELAYHOST in the settings table (where an older version, or the dashboard's
    /// user, put them) are not settings any more: what root renders comes from elsewhere.
    #[test]
    fn root_settings_ignore_the_database() {
        let s = Settings::from_map(&map(&[
            ("HOSTNAME", "mx.example.com"),
            ("BIN_DIR", "/tmp/evil"),
            ("RELAYHOST", "evil.example:25"),
        ]))
        .unwrap();
        assert!(!s.to_map().contains_key("BIN_DIR"));
        assert!(!s.to_map().contains_key("RELAYHOST"));
        let dir = tempfile::tempdir().unwrap();
        let paths = crate::paths::Paths::new(dir.path());
        std::fs::create_dir_all(paths.config_dir()).unwrap();
        let root = RootSettings::load(&paths).unwrap();
        assert_eq!(root.relayhost, Relayhost::default());
        let exe = std::env::current_exe().unwrap();
        assert_eq!(root.bin_dir, exe.parent().unwrap());
        let env = |k: &str| (k == "RELAYHOST").then(|| "[127.0.0.1]:2626".to_string());
        RootSettings::store_relayhost(&paths, env).unwrap();
        // Absent from the environment: kept.
        RootSettings::store_relayhost(&paths, |_| None).unwrap();
        assert_eq!(
            RootSettings::load(&paths).unwrap().relayhost.as_str(),
            "[127.0.0.1]:2626"
        );
        let bad = |k: &str| (k == "RELAYHOST").then(|| "relay\nmydestination = x".to_string());
        assert!(RootSettings::store_relayhost(&paths, bad).is_err());
        // Present but empty: cleared.
        RootSettings::store_relayhost(&paths, |_| Some(String::new())).unwrap();
        assert_eq!(RootSettings::load(&paths).unwrap().relayhost.as_str(), "");
    }
}
