//! `maps.db`: the lookup tables Postfix and Dovecot query live (packages postfix-sqlite, dovecot-sqlite).
//!
//! Why a separate database rather than pointing the daemons at ours: Postfix's smtpd faces the
//! internet, and the main database also holds the admin's password hash, DKIM private keys and tracking
//! data. maps.db holds only what the lookups need, for active domains, accounts and aliases, and is
//! readable by the postfix group only. It is rewritten in one transaction, so a lookup sees either the
//! old set or the new one, never half of each, and changes are live at the next query (no reload).
//! It stays in rollback-journal mode: readers without write access cannot use WAL (gotcha G21).

use std::path::Path;

use rusqlite::Connection;

use crate::password;
use crate::paths::Paths;
use crate::store::Snapshot;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS domains (domain TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS mailboxes (
    email TEXT PRIMARY KEY, password TEXT NOT NULL, home TEXT NOT NULL, quota_rule TEXT);
CREATE TABLE IF NOT EXISTS aliases (source TEXT PRIMARY KEY, destination TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sender_logins (address TEXT NOT NULL, login TEXT NOT NULL, PRIMARY KEY (address, login));
";

/// The rows of maps.db, computed purely from a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Maps {
    pub domains: Vec<String>,
    /// (email, `{ARGON2ID}` hash, home, quota rule or None for unlimited)
    pub mailboxes: Vec<(String, String, String, Option<String>)>,
    pub aliases: Vec<(String, String)>,
    pub sender_logins: Vec<(String, String)>,
}

impl Maps {
    pub fn from_snapshot(snapshot: &Snapshot, paths: &Paths) -> Self {
        let mut maps = Maps {
            domains: snapshot
                .domains
                .iter()
                .filter(|d| d.active)
                .map(|d| d.domain.to_string())
                .collect(),
            ..Maps::default()
        };
        let live_accounts: Vec<_> = snapshot
            .accounts
            .iter()
            .filter(|a| a.active && a.domain_active)
            .collect();
        for a in &live_accounts {
            let home = paths.mail_home(&a.address);
            let quota = (a.quota_mb > 0).then(|| format!("*:storage={}M", a.quota_mb));
            maps.mailboxes.push((
                a.address.to_string(),
                password::dovecot_form(&a.password_hash),
                home.to_string_lossy().into_owned(),
                quota,
            ));
            maps.sender_logins
                .push((a.address.to_string(), a.address.to_string()));
        }
        for alias in snapshot
            .aliases
            .iter()
            .filter(|a| a.active && a.domain_active)
        {
            maps.aliases
                .push((alias.source.key(), alias.destinations.to_string()));
            if let crate::names::AliasSource::Address(source) = &alias.source {
                // An account may send as an alias that delivers to it.
                for dest in alias.destinations.addresses() {
                    if live_accounts.iter().any(|a| &a.address == dest) {
                        maps.sender_logins
                            .push((source.to_string(), dest.to_string()));
                    }
                }
            }
        }
        maps
    }

    /// Replaces the contents of maps.db at `path` in one transaction (creating it if needed).
    pub fn write(&self, path: &Path) -> rusqlite::Result<()> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(crate::db::BUSY_TIMEOUT)?;
        conn.pragma_update(None, "journal_mode", "DELETE")?;
        conn.execute_batch(SCHEMA)?;
        let tx = conn.transaction()?;
        tx.execute_batch(
            "DELETE FROM domains; DELETE FROM mailboxes; DELETE FROM aliases; DELETE FROM sender_logins;",
        )?;
        {
            let mut ins = tx.prepare("INSERT INTO domains (domain) VALUES (?1)")?;
            for d in &self.domains {
                ins.execute([d])?;
            }
            let mut ins = tx.prepare(
                "INSERT INTO mailboxes (email, password, home, quota_rule) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (email, pw, home, quota) in &self.mailboxes {
                ins.execute((email, pw, home, quota))?;
            }
            let mut ins =
                tx.prepare("INSERT INTO aliases (source, destination) VALUES (?1, ?2)")?;
            for (s, d) in &self.aliases {
                ins.execute((s, d))?;
            }
            let mut ins =
                tx.prepare("INSERT OR IGNORE INTO sender_logins (address, login) VALUES (?1, ?2)")?;
            for (a, l) in &self.sender_logins {
                ins.execute((a, l))?;
            }
        }
        tx.commit()
    }

    /// Reads maps.db back (to tell whether a write is needed, and for tests).
    pub fn read(path: &Path) -> rusqlite::Result<Self> {
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        let mut maps = Maps::default();
        let mut s = conn.prepare("SELECT domain FROM domains ORDER BY rowid")?;
        maps.domains = s.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
        let mut s =
            conn.prepare("SELECT email, password, home, quota_rule FROM mailboxes ORDER BY rowid")?;
        maps.mailboxes = s
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<Result<_, _>>()?;
        let mut s = conn.prepare("SELECT source, destination FROM aliases ORDER BY rowid")?;
        maps.aliases = s
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let mut s = conn.prepare("SELECT address, login FROM sender_logins ORDER BY rowid")?;
        maps.sender_logins = s
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        Ok(maps)
    }
}
