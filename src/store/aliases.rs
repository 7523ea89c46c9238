//! Aliases: a source address (or `@domain`, a catch-all) forwarded to one or more destinations, with a
//! per-alias switch for open tracking of mail sent *as* the alias.

use rusqlite::{Connection, OptionalExtension as _};

use super::{StoreError, domain_id, expect_changed, expect_inserted, list_validated, not_found};
use crate::names::{AliasSource, Destinations};

#[derive(Debug, Clone)]
pub struct Alias {
    pub id: i64,
    pub source: AliasSource,
    pub destinations: Destinations,
    pub active: bool,
    pub tracking_enabled: bool,
    pub domain_active: bool,
}

type Raw = (i64, String, String, bool, bool, bool);

const SELECT: &str = "SELECT a.id, a.source, a.destination, a.active, a.tracking_enabled, d.active
                      FROM aliases a JOIN domains d ON d.id = a.domain_id";

/// A row of [`SELECT`] as stored; [`validate`] makes it an [`Alias`].
fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Raw> {
    Raw::try_from(r)
}

/// Re-validates the addresses on the way out, so a row edited by hand cannot reach a configuration
/// file.
fn validate(raw: Raw) -> Result<Alias, StoreError> {
    let (id, source, destination, active, tracking_enabled, domain_active) = raw;
    Ok(Alias {
        id,
        source: AliasSource::parse(&source)?,
        destinations: Destinations::parse(&destination)?,
        active,
        tracking_enabled,
        domain_active,
    })
}

pub fn list(conn: &Connection) -> Result<Vec<Alias>, StoreError> {
    list_validated(
        conn,
        &format!("{SELECT} ORDER BY a.source"),
        from_row,
        validate,
    )
}

pub fn get(conn: &Connection, source: &AliasSource) -> Result<Alias, StoreError> {
    let raw = conn
        .query_row(
            &format!("{SELECT} WHERE a.source = ?1"),
            [source.key()],
            from_row,
        )
        .optional()?
        .ok_or_else(|| not_found("alias", source.key()))?;
    validate(raw)
}

/// The alias with this row id (the dashboard names aliases by id in its URLs).
pub fn get_by_id(conn: &Connection, id: i64) -> Result<Alias, StoreError> {
    let raw = conn
        .query_row(&format!("{SELECT} WHERE a.id = ?1"), [id], from_row)
        .optional()?
        .ok_or_else(|| not_found("alias", format!("#{id}")))?;
    validate(raw)
}

pub fn add(
    conn: &Connection,
    source: &AliasSource,
    destinations: &Destinations,
    tracking: bool,
) -> Result<Alias, StoreError> {
    let domain = domain_id(conn, source.domain())?;
    if let AliasSource::Address(address) = source {
        if super::accounts::get(conn, address).is_ok() {
            return Err(StoreError::AddressIsAccount {
                address: address.to_string(),
            });
        }
        if destinations.addresses().contains(address) {
            return Err(StoreError::AliasForwardsToItself {
                address: address.to_string(),
            });
        }
    }
    let inserted = conn.execute(
        "INSERT INTO aliases (domain_id, source, destination, tracking_enabled) VALUES (?1, ?2, ?3, ?4)",
        (domain, source.key(), destinations.to_string(), tracking),
    );
    expect_inserted(inserted, "alias", source.key())?;
    get(conn, source)
}

fn update(
    conn: &Connection,
    source: &AliasSource,
    set: &str,
    value: &dyn rusqlite::ToSql,
) -> Result<(), StoreError> {
    let n = conn.execute(
        &format!("UPDATE aliases SET {set} = ?2, updated_at = datetime('now') WHERE source = ?1"),
        rusqlite::params![source.key(), value],
    )?;
    expect_changed(n, "alias", source.key())
}

pub fn set_destinations(
    conn: &Connection,
    source: &AliasSource,
    destinations: &Destinations,
) -> Result<(), StoreError> {
    update(conn, source, "destination", &destinations.to_string())
}

pub fn set_active(conn: &Connection, source: &AliasSource, active: bool) -> Result<(), StoreError> {
    update(conn, source, "active", &active)
}

pub fn set_tracking(
    conn: &Connection,
    source: &AliasSource,
    tracking: bool,
) -> Result<(), StoreError> {
    update(conn, source, "tracking_enabled", &tracking)
}

pub fn remove(conn: &Connection, source: &AliasSource) -> Result<(), StoreError> {
    let n = conn.execute("DELETE FROM aliases WHERE source = ?1", [source.key()])?;
    expect_changed(n, "alias", source.key())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{Address, Domain};
    use crate::store::{accounts, domains, testutil};

    #[test]
    fn lifecycle() {
        let (_dir, conn) = testutil::conn();
        domains::add(&conn, &Domain::parse("example.com").unwrap()).unwrap();
        let src = AliasSource::parse("sales@example.com").unwrap();
        let dst = Destinations::parse("alice@example.com, bob@outside.example").unwrap();
        let a = add(&conn, &src, &dst, true).unwrap();
        assert!(a.tracking_enabled && a.active);
        assert_eq!(
            a.destinations.to_string(),
            "alice@example.com,bob@outside.example"
        );
        assert!(matches!(
            add(&conn, &src, &dst, false),
            Err(StoreError::Exists { .. })
        ));
        set_tracking(&conn, &src, false).unwrap();
        set_active(&conn, &src, false).unwrap();
        set_destinations(
            &conn,
            &src,
            &Destinations::parse("carol@example.com").unwrap(),
        )
        .unwrap();
        let got = get(&conn, &src).unwrap();
        assert!(!got.tracking_enabled && !got.active);
        assert_eq!(got.destinations.to_string(), "carol@example.com");
        let by_id = get_by_id(&conn, a.id).unwrap();
        assert_eq!(by_id.source.key(), "sales@example.com");
        assert!(matches!(
            get_by_id(&conn, a.id + 100),
            Err(StoreError::NotFound { .. })
        ));
        let all = AliasSource::parse("@example.com").unwrap();
        add(
            &conn,
            &all,
            &Destinations::parse("alice@example.com").unwrap(),
            false,
        )
        .unwrap();
        assert_eq!(list(&conn).unwrap().len(), 2);
        remove(&conn, &src).unwrap();
        assert_eq!(list(&conn).unwrap().len(), 1);
    }

    #[test]
    fn conflicts() {
        let (_dir, conn) = testutil::conn();
        domains::add(&conn, &Domain::parse("example.com").unwrap()).unwrap();
        accounts::add(
            &conn,
            &Address::parse("alice@example.com").unwrap(),
            "Tq8wLz4nRv2k",
            0,
            "",
        )
        .unwrap();
        let dst = Destinations::parse("x@y.example").unwrap();
        assert!(matches!(
            add(
                &conn,
                &AliasSource::parse("alice@example.com").unwrap(),
                &dst,
                false
            ),
            Err(StoreError::AddressIsAccount { .. })
        ));
        assert!(matches!(
            add(
                &conn,
                &AliasSource::parse("a@other.example").unwrap(),
                &dst,
                false
            ),
            Err(StoreError::UnknownDomain { .. })
        ));
        let loop_ = AliasSource::parse("l@example.com").unwrap();
        assert!(matches!(
            add(
                &conn,
                &loop_,
                &Destinations::parse("l@example.com").unwrap(),
                false
            ),
            Err(StoreError::AliasForwardsToItself { .. })
        ));
        // And the other way round: no account where an alias is.
        let sales = Address::parse("sales@example.com").unwrap();
        add(&conn, &AliasSource::Address(sales.clone()), &dst, false).unwrap();
        assert!(matches!(
            accounts::add(&conn, &sales, "Tq8wLz4nRv2k", 0, ""),
            Err(StoreError::AddressIsAlias { .. })
        ));
    }
}
