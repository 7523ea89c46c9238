//! Domains and their DKIM keys.

use rusqlite::{Connection, OptionalExtension as _};

use super::StoreError;
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

const COLUMNS: &str =
    "id, domain, active, dkim_selector, dkim_private_key, dkim_public_key, created_at";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

type RawRow = (
    i64,
    String,
    bool,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
);

fn build(raw: RawRow) -> Result<DomainRecord, StoreError> {
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
    let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM domains ORDER BY domain"))?;
    let rows = stmt.query_map([], from_row)?;
    rows.map(|r| build(r?)).collect()
}

pub fn get(conn: &Connection, domain: &Domain) -> Result<DomainRecord, StoreError> {
    let raw = conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM domains WHERE domain = ?1"),
            [domain.as_str()],
            from_row,
        )
        .optional()?
        .ok_or_else(|| StoreError::NotFound {
            what: "domain",
            key: domain.to_string(),
        })?;
    build(raw)
}

/// Adds a domain with a fresh RSA-2048 DKIM key (selector `mail`).
pub fn add(conn: &Connection, domain: &Domain) -> Result<DomainRecord, StoreError> {
    if get(conn, domain).is_ok() {
        return Err(StoreError::Exists {
            what: "domain",
            key: domain.to_string(),
        });
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
    match inserted {
        Err(e) if crate::db::is_unique_violation(&e) => Err(StoreError::Exists {
            what: "domain",
            key: domain.to_string(),
        }),
        Err(e) => Err(e.into()),
        Ok(_) => get(conn, domain),
    }
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
    if n == 0 {
        return Err(StoreError::NotFound {
            what: "domain",
            key: domain.to_string(),
        });
    }
    Ok(())
}

/// Removes a domain. Refused while accounts or aliases use it, unless `cascade` removes them too.
pub fn remove(conn: &Connection, domain: &Domain, cascade: bool) -> Result<(), StoreError> {
    let record = get(conn, domain)?;
    let (accounts, aliases): (i64, i64) = conn.query_row(
        "SELECT (SELECT count(*) FROM accounts WHERE domain_id = ?1),
                (SELECT count(*) FROM aliases WHERE domain_id = ?1)",
        [record.id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if (accounts > 0 || aliases > 0) && !cascade {
        return Err(StoreError::DomainInUse {
            domain: domain.to_string(),
            accounts,
            aliases,
        });
    }
    let tx = conn.unchecked_transaction()?;
    tx.execute("DELETE FROM accounts WHERE domain_id = ?1", [record.id])?;
    tx.execute("DELETE FROM aliases WHERE domain_id = ?1", [record.id])?;
    tx.execute("DELETE FROM domains WHERE id = ?1", [record.id])?;
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testutil;

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
        remove(&conn, &d, false).unwrap();
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
        remove(&conn, &d, true).unwrap();
        assert!(crate::store::accounts::list(&conn).unwrap().is_empty());
    }
}
