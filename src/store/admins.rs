//! Dashboard administrators. `mailserver init` creates `admin`/`admin`; the dashboard nags until changed.

use rusqlite::{Connection, OptionalExtension as _};

use super::StoreError;
use crate::password;

pub const DEFAULT_USERNAME: &str = "admin";
pub const DEFAULT_PASSWORD: &str = "admin";

/// Creates the default admin when there is no admin at all. Returns true when it did.
pub fn ensure_default(conn: &Connection) -> Result<bool, StoreError> {
    let any: bool = conn.query_row("SELECT EXISTS (SELECT 1 FROM admins)", [], |r| r.get(0))?;
    if any {
        return Ok(false);
    }
    let hash = password::hash(DEFAULT_PASSWORD)?;
    conn.execute(
        "INSERT INTO admins (username, password_hash) VALUES (?1, ?2)",
        (DEFAULT_USERNAME, hash),
    )?;
    Ok(true)
}

/// Sets an admin's password and turns 2FA off (the recovery path when the admin is locked out);
/// creates the admin if it does not exist.
pub fn reset_password(
    conn: &Connection,
    username: &str,
    new_password: &str,
) -> Result<(), StoreError> {
    let username = crate::names::LocalPart::parse(username)?;
    let hash = password::hash(new_password)?;
    conn.execute(
        "INSERT INTO admins (username, password_hash) VALUES (?1, ?2)
         ON CONFLICT (username) DO UPDATE SET password_hash = excluded.password_hash,
             totp_enabled = 0, totp_secret = NULL, updated_at = datetime('now')",
        (username.as_str(), hash),
    )?;
    Ok(())
}

/// The stored hash for `username`, if the admin exists.
pub fn password_hash(conn: &Connection, username: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT password_hash FROM admins WHERE username = ?1",
            [username],
            |r| r.get(0),
        )
        .optional()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testutil;

    #[test]
    fn default_admin_and_reset() {
        let (_dir, conn) = testutil::conn();
        assert!(ensure_default(&conn).unwrap());
        assert!(!ensure_default(&conn).unwrap());
        let h = password_hash(&conn, "admin").unwrap().unwrap();
        assert!(password::verify("admin", &h));
        conn.execute("UPDATE admins SET totp_enabled = 1, totp_secret = 'X'", [])
            .unwrap();
        reset_password(&conn, "admin", "n3w").unwrap();
        let h = password_hash(&conn, "admin").unwrap().unwrap();
        assert!(password::verify("n3w", &h));
        let on: bool = conn
            .query_row("SELECT totp_enabled FROM admins", [], |r| r.get(0))
            .unwrap();
        assert!(!on);
    }
}
