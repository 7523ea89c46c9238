//! Mail accounts (mailboxes): `username@domain`, an Argon2id password, a quota in MiB.
//!
//! Every new password passes the [`password_policy`] here, the one place the CLI and the dashboard
//! both go through.

use rusqlite::{Connection, OptionalExtension as _};

use super::{StoreError, domain_id, expect_changed, expect_inserted, list_validated, not_found};
use crate::names::{Address, Domain, LocalPart, display_name};
use crate::{password, password_policy};

#[derive(Debug, Clone)]
pub struct Account {
    pub id: i64,
    pub address: Address,
    pub name: String,
    pub active: bool,
    /// MiB; 0 means unlimited.
    pub quota_mb: u32,
    pub password_hash: String,
    /// False when the account's domain is deactivated: the account then neither receives nor logs in.
    pub domain_active: bool,
}

/// Quotas above 1 TiB are surely typos.
pub const MAX_QUOTA_MB: u32 = 1024 * 1024;

const SELECT: &str =
    "SELECT a.id, a.username, d.domain, a.name, a.active, a.quota, a.password_hash, d.active
                      FROM accounts a JOIN domains d ON d.id = a.domain_id";

/// A row of [`SELECT`] as stored; [`validate`] makes it an [`Account`].
fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Raw> {
    Raw::try_from(r)
}

type Raw = (i64, String, String, String, bool, i64, String, bool);

/// Re-validates the names on the way out, so a row edited by hand cannot reach a configuration file.
fn validate(raw: Raw) -> Result<Account, StoreError> {
    let (id, user, domain, name, active, quota, password_hash, domain_active) = raw;
    Ok(Account {
        id,
        address: Address::new(LocalPart::parse(&user)?, Domain::parse(&domain)?),
        name,
        active,
        quota_mb: u32::try_from(quota).unwrap_or(MAX_QUOTA_MB),
        password_hash,
        domain_active,
    })
}

pub fn list(conn: &Connection) -> Result<Vec<Account>, StoreError> {
    list_validated(
        conn,
        &format!("{SELECT} ORDER BY d.domain, a.username"),
        from_row,
        validate,
    )
}

pub fn get(conn: &Connection, address: &Address) -> Result<Account, StoreError> {
    let raw = conn
        .query_row(
            &format!("{SELECT} WHERE d.domain = ?1 AND a.username = ?2"),
            (address.domain().as_str(), address.local().as_str()),
            from_row,
        )
        .optional()?
        .ok_or_else(|| not_found("account", address))?;
    validate(raw)
}

fn check_quota(quota_mb: u32) -> Result<(), StoreError> {
    if quota_mb > MAX_QUOTA_MB {
        return Err(StoreError::QuotaTooLarge {
            quota_mb,
            max_mb: MAX_QUOTA_MB,
        });
    }
    Ok(())
}

pub fn add(
    conn: &Connection,
    address: &Address,
    password: &str,
    quota_mb: u32,
    name: &str,
) -> Result<Account, StoreError> {
    check_quota(quota_mb)?;
    let name = display_name(name)?;
    let domain = domain_id(conn, address.domain())?;
    let is_alias: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM aliases WHERE source = ?1)",
        [address.as_str()],
        |r| r.get(0),
    )?;
    if is_alias {
        return Err(StoreError::AddressIsAlias {
            address: address.to_string(),
        });
    }
    let hash = new_password_hash(address, password, &name)?;
    let inserted = conn.execute(
        "INSERT INTO accounts (domain_id, username, password_hash, name, quota) VALUES (?1, ?2, ?3, ?4, ?5)",
        (domain, address.local().as_str(), &hash, &name, quota_mb),
    );
    expect_inserted(inserted, "account", address)?;
    get(conn, address)
}

fn update(
    conn: &Connection,
    address: &Address,
    set: &str,
    value: &dyn rusqlite::ToSql,
) -> Result<(), StoreError> {
    let n = conn.execute(
        &format!(
            "UPDATE accounts SET {set} = ?3, updated_at = datetime('now')
             WHERE username = ?2 AND domain_id = (SELECT id FROM domains WHERE domain = ?1)"
        ),
        rusqlite::params![address.domain().as_str(), address.local().as_str(), value],
    )?;
    expect_changed(n, "account", address)
}

/// The hash of a new password for `address`, once it passes the [`password_policy`] (the address and
/// the display `name` are words a guesser knows).
fn new_password_hash(address: &Address, password: &str, name: &str) -> Result<String, StoreError> {
    password::check(password)?;
    let inputs = password_policy::account_inputs(address.as_str(), name);
    password_policy::check(password, &inputs).map_err(password::PasswordError::from)?;
    Ok(password::hash(password)?)
}

pub fn set_password(
    conn: &Connection,
    address: &Address,
    password: &str,
) -> Result<(), StoreError> {
    let name = get(conn, address)?.name;
    let hash = new_password_hash(address, password, &name)?;
    update(conn, address, "password_hash", &hash)
}

pub fn set_active(conn: &Connection, address: &Address, active: bool) -> Result<(), StoreError> {
    update(conn, address, "active", &active)
}

pub fn set_quota(conn: &Connection, address: &Address, quota_mb: u32) -> Result<(), StoreError> {
    check_quota(quota_mb)?;
    update(conn, address, "quota", &quota_mb)
}

pub fn set_name(conn: &Connection, address: &Address, name: &str) -> Result<(), StoreError> {
    let name = display_name(name)?;
    update(conn, address, "name", &name)
}

/// Removes the account. Its Maildir stays on disk (deleting mail is left to the admin).
pub fn remove(conn: &Connection, address: &Address) -> Result<(), StoreError> {
    let n = conn.execute(
        "DELETE FROM accounts WHERE username = ?2 AND domain_id = (SELECT id FROM domains WHERE domain = ?1)",
        (address.domain().as_str(), address.local().as_str()),
    )?;
    expect_changed(n, "account", address)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::password::PasswordError;
    use crate::password_policy::WeakPassword;
    use crate::store::{domains, testutil};

    /// Passwords that pass the policy.
    const PW: &str = "Tq8wLz4nRv2k-s3cret";
    const NEW_PW: &str = "vexing-quartz-ladle-91";

    #[test]
    fn lifecycle() {
        let (_dir, conn) = testutil::conn();
        domains::add(&conn, &Domain::parse("example.com").unwrap()).unwrap();
        let a = Address::parse("alice@example.com").unwrap();
        let acc = add(&conn, &a, PW, 100, "Alice").unwrap();
        assert_eq!(acc.quota_mb, 100);
        assert!(password::verify(PW, &acc.password_hash));
        assert!(matches!(
            add(&conn, &a, PW, 0, ""),
            Err(StoreError::Exists { .. })
        ));
        set_password(&conn, &a, NEW_PW).unwrap();
        assert!(password::verify(
            NEW_PW,
            &get(&conn, &a).unwrap().password_hash
        ));
        set_active(&conn, &a, false).unwrap();
        set_quota(&conn, &a, 5).unwrap();
        set_name(&conn, &a, "Alice B").unwrap();
        let got = get(&conn, &a).unwrap();
        assert!(!got.active);
        assert_eq!((got.quota_mb, got.name.as_str()), (5, "Alice B"));
        remove(&conn, &a).unwrap();
        assert!(matches!(
            remove(&conn, &a),
            Err(StoreError::NotFound { .. })
        ));
    }

    #[test]
    fn refuses_unknown_domains_and_bad_input() {
        let (_dir, conn) = testutil::conn();
        let a = Address::parse("bob@nowhere.example").unwrap();
        assert!(matches!(
            add(&conn, &a, PW, 0, ""),
            Err(StoreError::UnknownDomain { .. })
        ));
        domains::add(&conn, &Domain::parse("nowhere.example").unwrap()).unwrap();
        assert!(add(&conn, &a, "", 0, "").is_err());
        assert!(add(&conn, &a, PW, 0, "Bob\nEvil").is_err());
        assert!(matches!(
            add(&conn, &a, PW, MAX_QUOTA_MB + 1, ""),
            Err(StoreError::QuotaTooLarge { .. })
        ));
        assert!(add(&conn, &a, "Tq8wLz4nRv2k\n", 0, "").is_err());
        assert!(list(&conn).unwrap().is_empty());
    }

    #[test]
    fn weak_passwords_are_refused_on_add_and_change() {
        let (_dir, conn) = testutil::conn();
        domains::add(&conn, &Domain::parse("example.test").unwrap()).unwrap();
        let a = Address::parse("alice@example.test").unwrap();
        #[track_caller]
        fn weak<T>(r: Result<T, StoreError>) -> WeakPassword {
            match r {
                Err(StoreError::Password(PasswordError::Weak(w))) => w,
                other => panic!("{:?}", other.map(|_| ())),
            }
        }
        assert_eq!(weak(add(&conn, &a, "x", 0, "")), WeakPassword::TooShort);
        assert!(matches!(
            weak(add(&conn, &a, "password123456", 0, "")),
            WeakPassword::Guessable(_)
        ));
        // The account's own address, and its display name, are known words.
        assert!(matches!(
            weak(add(&conn, &a, "alice@example.test2024", 0, "")),
            WeakPassword::Guessable(_)
        ));
        assert!(matches!(
            weak(add(
                &conn,
                &a,
                "Wonderland-Liddell1",
                0,
                "Alice Wonderland-Liddell1"
            )),
            WeakPassword::Guessable(_)
        ));
        assert!(list(&conn).unwrap().is_empty());
        add(&conn, &a, PW, 0, "").unwrap();
        assert_eq!(
            weak(set_password(&conn, &a, "short")),
            WeakPassword::TooShort
        );
        assert!(matches!(
            weak(set_password(&conn, &a, "alice@example.test1")),
            WeakPassword::Guessable(_)
        ));
        assert!(password::verify(PW, &get(&conn, &a).unwrap().password_hash));
        // Changing the password of an unknown account is still "not found".
        let nobody = Address::parse("nobody@example.test").unwrap();
        assert!(matches!(
            set_password(&conn, &nobody, NEW_PW),
            Err(StoreError::NotFound { .. })
        ));
    }
}
