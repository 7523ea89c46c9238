//! Domains and their DKIM selectors and public keys.
//!
//! The private keys are not here: each is the file `dkim/<domain>/<selector>.private`, readable by
//! OpenDKIM alone, written by root's apply (`crate::dkim_keys`). Adding a domain or rotating its key
//! stores a selector without a public key; the next apply makes the key pair, writes the file and
//! stores the public half ([`set_public_key`]). Databases of older versions held the private keys in
//! `dkim_private_key`: apply writes each to its file and clears the column ([`legacy_private_keys`]).

use rusqlite::{Connection, OptionalExtension as _};

use super::{StoreError, exists, expect_changed, expect_inserted, list_validated, not_found};
use crate::dkim;
use crate::names::{Domain, Selector};

/// A domain as stored. The names were validated when they went in and are re-validated on the way out,
/// so a row edited by hand cannot smuggle a bad name into a config file.
#[derive(Debug, Clone)]
pub struct DomainRecord {
    pub id: i64,
    pub domain: Domain,
    pub active: bool,
    pub dkim: Option<DkimKey>,
    pub created_at: String,
}

/// A domain's DKIM key as the database knows it: the selector, and the public key once apply has
/// made the pair (`None` while it is pending).
#[derive(Debug, Clone)]
pub struct DkimKey {
    pub selector: Selector,
    pub public_b64: Option<String>,
}

/// How many accounts and aliases use a domain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub accounts: i64,
    pub aliases: i64,
}

impl Usage {
    pub fn in_use(&self) -> bool {
        self.accounts > 0 || self.aliases > 0
    }
}

const COLUMNS: &str = "id, domain, active, dkim_selector, dkim_public_key, created_at";

/// The counts of [`Usage`] for the domain row `d`, as two columns.
const USAGE_COLUMNS: &str = "(SELECT count(*) FROM accounts WHERE domain_id = d.id),
                             (SELECT count(*) FROM aliases WHERE domain_id = d.id)";

/// A row starting with [`COLUMNS`] as stored; [`validate`] makes it a [`DomainRecord`].
fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Raw> {
    Raw::try_from(r)
}

type Raw = (i64, String, bool, Option<String>, Option<String>, String);

/// Re-validates the names on the way out (see [`DomainRecord`]).
fn validate(raw: Raw) -> Result<DomainRecord, StoreError> {
    let (id, domain, active, sel, public_b64, created_at) = raw;
    let dkim = match sel {
        Some(s) => Some(DkimKey {
            selector: Selector::parse(&s)?,
            public_b64,
        }),
        None => None,
    };
    Ok(DomainRecord {
        id,
        domain: Domain::parse(&domain)?,
        active,
        dkim,
        created_at,
    })
}

pub fn list(conn: &Connection) -> Result<Vec<DomainRecord>, StoreError> {
    list_validated(
        conn,
        &format!("SELECT {COLUMNS} FROM domains ORDER BY domain"),
        from_row,
        validate,
    )
}

pub fn get(conn: &Connection, domain: &Domain) -> Result<DomainRecord, StoreError> {
    let raw = conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM domains WHERE domain = ?1"),
            [domain.as_str()],
            from_row,
        )
        .optional()?
        .ok_or_else(|| not_found("domain", domain))?;
    validate(raw)
}

/// Every domain with its usage, in one statement (so the counts belong to the list).
pub fn list_with_usage(conn: &Connection) -> Result<Vec<(DomainRecord, Usage)>, StoreError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS}, {USAGE_COLUMNS} FROM domains d ORDER BY domain"
    ))?;
    let rows = stmt.query_map([], |r| {
        let usage = Usage {
            accounts: r.get(6)?,
            aliases: r.get(7)?,
        };
        Ok((from_row(r)?, usage))
    })?;
    rows.map(|r| {
        let (raw, usage) = r?;
        Ok((validate(raw)?, usage))
    })
    .collect()
}

fn usage_of(conn: &Connection, id: i64) -> Result<Usage, StoreError> {
    Ok(conn.query_row(
        &format!("SELECT {USAGE_COLUMNS} FROM domains d WHERE d.id = ?1"),
        [id],
        |r| {
            Ok(Usage {
                accounts: r.get(0)?,
                aliases: r.get(1)?,
            })
        },
    )?)
}

/// Adds a domain with the DKIM selector `mail` and no key yet: the next apply makes it (root's,
/// so that the dashboard's user never holds a private key).
pub fn add(conn: &Connection, domain: &Domain) -> Result<DomainRecord, StoreError> {
    if get(conn, domain).is_ok() {
        return Err(exists("domain", domain));
    }
    let selector = dkim::first_selector();
    let inserted = conn.execute(
        "INSERT INTO domains (domain, dkim_selector) VALUES (?1, ?2)",
        (domain.as_str(), selector.as_str()),
    );
    expect_inserted(inserted, "domain", domain)?;
    get(conn, domain)
}

/// Gives the domain a new selector with no key yet; the next apply makes its key and removes the
/// old selector's file. Returns the new selector.
pub fn rotate_dkim(conn: &Connection, domain: &Domain) -> Result<Selector, StoreError> {
    let current = get(conn, domain)?;
    let today: String = conn.query_row("SELECT strftime('%Y%m%d', 'now')", [], |r| r.get(0))?;
    let selector = dkim::next_selector(current.dkim.as_ref().map(|k| k.selector.as_str()), &today);
    conn.execute(
        "UPDATE domains SET dkim_selector = ?2, dkim_private_key = NULL, dkim_public_key = NULL,
                updated_at = datetime('now') WHERE id = ?1",
        (current.id, selector.as_str()),
    )?;
    Ok(selector)
}

/// Stores the public key apply made for the domain's selector `selector`. Changes nothing (and
/// returns false) when the selector changed meanwhile (a rotation): the next apply makes that key.
pub fn set_public_key(
    conn: &Connection,
    id: i64,
    selector: &Selector,
    public_b64: &str,
) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE domains SET dkim_public_key = ?3, dkim_private_key = NULL,
                updated_at = datetime('now')
         WHERE id = ?1 AND dkim_selector = ?2",
        (id, selector.as_str(), public_b64),
    )?;
    Ok(n > 0)
}

/// A private key an older version stored in the database: (domain id, selector, PEM).
pub type LegacyPrivateKey = (i64, Selector, String);

/// The private keys still in the database, for apply to move into their files.
pub fn legacy_private_keys(conn: &Connection) -> Result<Vec<LegacyPrivateKey>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT id, dkim_selector, dkim_private_key FROM domains
         WHERE dkim_private_key IS NOT NULL AND dkim_selector IS NOT NULL ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get(2)?))
    })?;
    rows.map(|r| {
        let (id, selector, pem) = r?;
        Ok((id, Selector::parse(&selector)?, pem))
    })
    .collect()
}

/// Clears a private key from the database once its file holds it (only while the selector is still
/// `selector`).
pub fn forget_private_key(
    conn: &Connection,
    id: i64,
    selector: &Selector,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE domains SET dkim_private_key = NULL WHERE id = ?1 AND dkim_selector = ?2",
        (id, selector.as_str()),
    )?;
    Ok(())
}

pub fn set_active(conn: &Connection, domain: &Domain, active: bool) -> Result<(), StoreError> {
    let n = conn.execute(
        "UPDATE domains SET active = ?2, updated_at = datetime('now') WHERE domain = ?1",
        (domain.as_str(), active),
    )?;
    expect_changed(n, "domain", domain)
}

/// Removes a domain. Refused while accounts or aliases use it, unless `cascade` removes them too.
/// Returns what was removed with it.
pub fn remove(conn: &Connection, domain: &Domain, cascade: bool) -> Result<Usage, StoreError> {
    let record = get(conn, domain)?;
    let usage = usage_of(conn, record.id)?;
    if usage.in_use() && !cascade {
        return Err(StoreError::DomainInUse {
            domain: domain.to_string(),
            accounts: usage.accounts,
            aliases: usage.aliases,
        });
    }
    let tx = conn.unchecked_transaction()?;
    tx.execute("DELETE FROM accounts WHERE domain_id = ?1", [record.id])?;
    tx.execute("DELETE FROM aliases WHERE domain_id = ?1", [record.id])?;
    tx.execute("DELETE FROM domains WHERE id = ?1", [record.id])?;
    tx.commit()?;
    Ok(usage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{Address, AliasSource, Destinations};
    use crate::store::{accounts, aliases, testutil};

    #[test]
    fn list_with_usage_counts_per_domain() {
        let (_dir, conn) = testutil::conn();
        let one = Domain::parse("one.example").unwrap();
        let two = Domain::parse("two.example").unwrap();
        add(&conn, &one).unwrap();
        add(&conn, &two).unwrap();
        for user in ["a", "b"] {
            let address = Address::parse(&format!("{user}@one.example")).unwrap();
            accounts::add(&conn, &address, "Tq8wLz4nRv2k", 0, "").unwrap();
        }
        aliases::add(
            &conn,
            &AliasSource::parse("@two.example").unwrap(),
            &Destinations::parse("a@one.example").unwrap(),
            false,
        )
        .unwrap();
        let got: Vec<(String, Usage)> = list_with_usage(&conn)
            .unwrap()
            .into_iter()
            .map(|(d, u)| (d.domain.to_string(), u))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "one.example".into(),
                    Usage {
                        accounts: 2,
                        aliases: 0
                    }
                ),
                (
                    "two.example".into(),
                    Usage {
                        accounts: 0,
                        aliases: 1
                    }
                ),
            ]
        );
    }

    #[test]
    fn add_list_rotate_remove() {
        let (_dir, conn) = testutil::conn();
        let d = Domain::parse("example.com").unwrap();
        let rec = add(&conn, &d).unwrap();
        let key = rec.dkim.as_ref().unwrap();
        assert_eq!(key.selector.as_str(), "mail");
        // The key pair is apply's to make.
        assert_eq!(key.public_b64, None);
        assert!(set_public_key(&conn, rec.id, &key.selector, "PUBLIC").unwrap());
        assert_eq!(
            get(&conn, &d).unwrap().dkim.unwrap().public_b64.as_deref(),
            Some("PUBLIC")
        );
        assert!(matches!(add(&conn, &d), Err(StoreError::Exists { .. })));
        let sel = rotate_dkim(&conn, &d).unwrap();
        assert!(sel.as_str().starts_with("mail-"));
        let after = get(&conn, &d).unwrap().dkim.unwrap();
        assert_eq!(
            (after.selector.as_str(), after.public_b64),
            (sel.as_str(), None)
        );
        // A public key made for the old selector is not stored for the new one.
        assert!(!set_public_key(&conn, rec.id, &key.selector, "OLD").unwrap());
        set_active(&conn, &d, false).unwrap();
        assert!(!list(&conn).unwrap()[0].active);
        assert_eq!(remove(&conn, &d, false).unwrap(), Usage::default());
        assert!(list(&conn).unwrap().is_empty());
    }

    #[test]
    fn remove_refuses_a_domain_in_use() {
        let (_dir, conn) = testutil::conn();
        let d = Domain::parse("example.com").unwrap();
        add(&conn, &d).unwrap();
        let a = crate::names::Address::parse("alice@example.com").unwrap();
        crate::store::accounts::add(&conn, &a, "Tq8wLz4nRv2k", 0, "").unwrap();
        assert!(matches!(
            remove(&conn, &d, false),
            Err(StoreError::DomainInUse { accounts: 1, .. })
        ));
        assert_eq!(
            remove(&conn, &d, true).unwrap(),
            Usage {
                accounts: 1,
                aliases: 0
            }
        );
        assert!(crate::store::accounts::list(&conn).unwrap().is_empty());
    }
}
