//! Domains and their DKIM keys.

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

#[derive(Debug, Clone)]
pub struct DkimKey {
    pub selector: Selector,
    pub private_pem: String,
    pub public_b64: String,
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

const COLUMNS: &str =
    "id, domain, active, dkim_selector, dkim_private_key, dkim_public_key, created_at";

/// The counts of [`Usage`] for the domain row `d`, as two columns.
const USAGE_COLUMNS: &str = "(SELECT count(*) FROM accounts WHERE domain_id = d.id),
                             (SELECT count(*) FROM aliases WHERE domain_id = d.id)";

/// A row starting with [`COLUMNS`] as stored; [`validate`] makes it a [`DomainRecord`].
fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Raw> {
    Raw::try_from(r)
}

type Raw = (
    i64,
    String,
    bool,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
);

/// Re-validates the names on the way out (see [`DomainRecord`]).
fn validate(raw: Raw) -> Result<DomainRecord, StoreError> {
    let (id, domain, active, sel, private, public, created_at) = raw;
    let dkim = match (sel, private, public) {
        (Some(s), Some(private_pem), Some(public_b64)) => Some(DkimKey {
            selector: Selector::parse(&s)?,
            private_pem,
            public_b64,
        }),
        _ => None,
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
            accounts: r.get(7)?,
            aliases: r.get(8)?,
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

/// Adds a domain with a fresh RSA-2048 DKIM key (selector `mail`).
pub fn add(conn: &Connection, domain: &Domain) -> Result<DomainRecord, StoreError> {
    if get(conn, domain).is_ok() {
        return Err(exists("domain", domain));
    }
    let key = dkim::generate()?;
    let selector = dkim::first_selector();
    let inserted = conn.execute(
        "INSERT INTO domains (domain, dkim_selector, dkim_private_key, dkim_public_key)
         VALUES (?1, ?2, ?3, ?4)",
        (
            domain.as_str(),
            selector.as_str(),
            &key.private_pem,
            &key.public_b64,
        ),
    );
    expect_inserted(inserted, "domain", domain)?;
    get(conn, domain)
}

/// Replaces the domain's DKIM key with a new one under a new selector; returns the new selector.
pub fn rotate_dkim(conn: &Connection, domain: &Domain) -> Result<Selector, StoreError> {
    let current = get(conn, domain)?;
    let today: String = conn.query_row("SELECT strftime('%Y%m%d', 'now')", [], |r| r.get(0))?;
    let selector = dkim::next_selector(current.dkim.as_ref().map(|k| k.selector.as_str()), &today);
    let key = dkim::generate()?;
    conn.execute(
        "UPDATE domains SET dkim_selector = ?2, dkim_private_key = ?3, dkim_public_key = ?4,
                updated_at = datetime('now') WHERE id = ?1",
        (
            current.id,
            selector.as_str(),
            &key.private_pem,
            &key.public_b64,
        ),
    )?;
    Ok(selector)
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
            accounts::add(&conn, &address, "pw", 0, "").unwrap();
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
        assert_eq!(rec.dkim.as_ref().unwrap().selector.as_str(), "mail");
        assert!(matches!(add(&conn, &d), Err(StoreError::Exists { .. })));
        let sel = rotate_dkim(&conn, &d).unwrap();
        assert!(sel.as_str().starts_with("mail-"));
        let after = get(&conn, &d).unwrap();
        assert_ne!(after.dkim.unwrap().public_b64, rec.dkim.unwrap().public_b64);
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
        crate::store::accounts::add(&conn, &a, "pw", 0, "").unwrap();
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
