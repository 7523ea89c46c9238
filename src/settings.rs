//! Server settings (the data directory's layout is in `paths`).
//!
//! `mailserver init` reads the settings from the environment (the container's `.env`, or
//! `scripts/stack.sh`) and stores them in the database, so that every later command renders the same
//! configuration whatever environment it happens to run in. A variable that is present (even empty)
//! replaces the stored value; one that is absent keeps it.

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
    pub relayhost: Relayhost,
    pub pixel_base_url: BaseUrl,
    /// Where `mailserver-milter` and `mailserver-web` are installed.
    pub bin_dir: PathBuf,
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
    "RELAYHOST",
    "PIXEL_BASE_URL",
    "BIN_DIR",
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
        let bin_dir = match map.get("BIN_DIR").map(|s| s.trim()) {
            Some(v) if !v.is_empty() => safe_path("BIN_DIR", v)?,
            _ => PathBuf::from("/usr/local/bin"),
        };
        Ok(Self {
            hostname,
            listen: ListenAddress::parse(map.get("LISTEN_ADDRESS").map_or("", String::as_str))?,
            ports,
            relayhost: Relayhost::parse(map.get("RELAYHOST").map_or("", String::as_str))?,
            pixel_base_url,
            bin_dir,
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
            ("RELAYHOST", self.relayhost.as_str().to_string()),
            ("PIXEL_BASE_URL", self.pixel_base_url.as_str().to_string()),
            ("BIN_DIR", self.bin_dir.to_string_lossy().into_owned()),
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
            ("RELAYHOST", "[relay.example.com"),
            ("RELAYHOST", "relay.example.com:smtp\n"),
            ("PIXEL_BASE_URL", "javascript:alert(1)"),
            ("PIXEL_BASE_URL", "https://x.example/\"onerror"),
            ("BIN_DIR", "relative/bin"),
            ("BIN_DIR", "/bin; rm -rf /"),
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
    }
}
