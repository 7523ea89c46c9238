//! Dashboard administrators: their passwords and two-factor authentication (TOTP), and the login check.
//!
//! `mailserver init` creates `admin`/`admin`; the dashboard nags until it is changed. The login logic
//! lives here rather than in the dashboard so that every rule about the `admins` table (the dummy hash
//! for unknown users, the code appended to the password, the replay guard) sits beside the statements
//! it depends on. Only the TOTP arithmetic stays with the dashboard, which owns the TOTP crate: the
//! functions that check a code take it as a [`CodeCheck`].
//!
//! 2FA has three states: off (no secret), pending (a secret shown to the admin, not yet confirmed with
//! a code; the login ignores it) and on. Each accepted code's time step is stored, and a code is only
//! accepted for a later step than the last one, so a code (or an older one) cannot be replayed.

use rusqlite::{Connection, OptionalExtension as _};

use super::{StoreError, expect_changed, not_found};
use crate::password;

pub const DEFAULT_USERNAME: &str = "admin";
pub const DEFAULT_PASSWORD: &str = "admin";

/// The digits of a TOTP code, appended to the password at login when 2FA is on.
pub const CODE_DIGITS: usize = 6;

/// Checks a TOTP code against a base32 secret at the current time: the time step the code is valid
/// for, or `None` when it is not valid now. The dashboard passes its TOTP implementation.
pub trait CodeCheck: Fn(&str, &str) -> Option<u64> {}
impl<F: Fn(&str, &str) -> Option<u64>> CodeCheck for F {}

/// A hash to burn the same time on when the user does not exist (no user enumeration by timing).
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0G6XVWwRVchmqAqeGz1LmA2zdDP5dxoxl4pdRYQeygA";

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

/// Changes an existing admin's password (2FA stays as it is).
pub fn set_password(
    conn: &Connection,
    username: &str,
    new_password: &str,
) -> Result<(), StoreError> {
    let hash = password::hash(new_password)?;
    let n = conn.execute(
        "UPDATE admins SET password_hash = ?2, updated_at = datetime('now') WHERE username = ?1",
        (username, hash),
    )?;
    expect_changed(n, "admin", username)
}

/// True when `password` is the admin's password (false for an unknown admin).
pub fn check_password(
    conn: &Connection,
    username: &str,
    password: &str,
) -> Result<bool, StoreError> {
    Ok(credentials(conn, username)?.is_some_and(|c| password::verify(password, &c.password_hash)))
}

/// A successful login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginOk {
    /// The password is still [`DEFAULT_PASSWORD`]: the dashboard shows a banner.
    pub default_password: bool,
}

/// Verifies a login: `password` is the admin's password, followed by the current
/// [`CODE_DIGITS`]-digit code when 2FA is on. An accepted code is used up (see [`consume_totp_step`]).
/// `None` for a wrong password or code, a replayed code, or an unknown admin, in about the same time
/// (an unknown admin costs one Argon2 verification too). Blocking: Argon2 takes tens of milliseconds.
pub fn verify_login(
    conn: &Connection,
    username: &str,
    password: &str,
    check_code: impl CodeCheck,
) -> Result<Option<LoginOk>, StoreError> {
    let Some(creds) = credentials(conn, username)? else {
        let _ = password::verify(password, DUMMY_HASH);
        return Ok(None);
    };
    if !creds.totp_enabled {
        if !password::verify(password, &creds.password_hash) {
            return Ok(None);
        }
        return Ok(Some(LoginOk {
            default_password: password == DEFAULT_PASSWORD,
        }));
    }
    let Some(split) = password
        .len()
        .checked_sub(CODE_DIGITS)
        .filter(|&i| password.is_char_boundary(i))
    else {
        let _ = password::verify(password, DUMMY_HASH);
        return Ok(None);
    };
    let (pw, code) = password.split_at(split);
    let pw_ok = password::verify(pw, &creds.password_hash);
    let step = creds
        .totp_secret
        .as_deref()
        .and_then(|secret| check_code(secret, code));
    match (pw_ok, step) {
        (true, Some(step)) if consume_totp_step(conn, username, step)? => Ok(Some(LoginOk {
            default_password: pw == DEFAULT_PASSWORD,
        })),
        _ => Ok(None),
    }
}

/// Where an admin's 2FA stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TotpState {
    pub enabled: bool,
    /// A secret waiting for its first correct code (2FA still off).
    pub pending: Option<String>,
}

pub fn totp_state(conn: &Connection, username: &str) -> Result<TotpState, StoreError> {
    let creds = credentials(conn, username)?.ok_or_else(|| not_found("admin", username))?;
    Ok(TotpState {
        enabled: creds.totp_enabled,
        pending: if creds.totp_enabled {
            None
        } else {
            creds.totp_secret
        },
    })
}

/// Stores `secret` (base32) as the admin's pending secret, replacing an earlier pending one. 2FA stays
/// off until [`confirm_totp`]. Returns false, changing nothing, when 2FA is on already.
pub fn start_totp(conn: &Connection, username: &str, secret: &str) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE admins SET totp_secret = ?2, updated_at = datetime('now')
         WHERE username = ?1 AND totp_enabled = 0",
        (username, secret),
    )?;
    Ok(n == 1)
}

/// Turns 2FA on when `code` is valid for the pending secret (and not a replay). Returns whether it did.
pub fn confirm_totp(
    conn: &Connection,
    username: &str,
    code: &str,
    check_code: impl CodeCheck,
) -> Result<bool, StoreError> {
    let Some(secret) = totp_state(conn, username)?.pending else {
        return Ok(false);
    };
    if !code_accepted(conn, username, &secret, code, check_code)? {
        return Ok(false);
    }
    conn.execute(
        "UPDATE admins SET totp_enabled = 1, updated_at = datetime('now')
         WHERE username = ?1 AND totp_secret IS NOT NULL",
        [username],
    )?;
    Ok(true)
}

/// Turns 2FA off (and forgets the secret) when 2FA is on, `password` is right and `code` is valid (and
/// not a replay). Returns whether it did.
pub fn disable_totp(
    conn: &Connection,
    username: &str,
    password: &str,
    code: &str,
    check_code: impl CodeCheck,
) -> Result<bool, StoreError> {
    let Some(Credentials {
        password_hash,
        totp_enabled: true,
        totp_secret: Some(secret),
    }) = credentials(conn, username)?
    else {
        return Ok(false);
    };
    if !password::verify(password, &password_hash)
        || !code_accepted(conn, username, &secret, code, check_code)?
    {
        return Ok(false);
    }
    conn.execute(
        "UPDATE admins SET totp_enabled = 0, totp_secret = NULL, updated_at = datetime('now')
         WHERE username = ?1",
        [username],
    )?;
    Ok(true)
}

/// True when `code` is valid for `secret` now and not a replay; its time step is then used up (see
/// [`consume_totp_step`]).
fn code_accepted(
    conn: &Connection,
    username: &str,
    secret: &str,
    code: &str,
    check_code: impl CodeCheck,
) -> Result<bool, StoreError> {
    match check_code(secret, code) {
        Some(step) => consume_totp_step(conn, username, step),
        None => Ok(false),
    }
}

/// The replay guard: records `step` as the admin's last accepted TOTP time step. False when it (or a
/// later one) was accepted already, i.e. the code is a replay and must be refused.
pub fn consume_totp_step(conn: &Connection, username: &str, step: u64) -> Result<bool, StoreError> {
    // Steps are Unix time / 30: far below i64::MAX; saturate rather than wrap if a caller misbehaves.
    let step = i64::try_from(step).unwrap_or(i64::MAX);
    let n = conn.execute(
        "UPDATE admins SET totp_last_step = ?2 WHERE username = ?1 AND totp_last_step < ?2",
        (username, step),
    )?;
    Ok(n == 1)
}

/// What the login and 2FA checks read.
struct Credentials {
    password_hash: String,
    totp_enabled: bool,
    /// The confirmed secret when 2FA is on, the pending one (if any) when it is off.
    totp_secret: Option<String>,
}

fn credentials(conn: &Connection, username: &str) -> Result<Option<Credentials>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT password_hash, totp_enabled, totp_secret FROM admins WHERE username = ?1",
            [username],
            |r| {
                Ok(Credentials {
                    password_hash: r.get(0)?,
                    totp_enabled: r.get(1)?,
                    totp_secret: r.get(2)?,
                })
            },
        )
        .optional()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testutil;

    const SECRET: &str = "JBSWY3DPEHPK3PXP";

    /// A stand-in for the dashboard's TOTP: the code is the step, zero-padded to six digits, and is
    /// valid for [`SECRET`] only.
    fn check(secret: &str, code: &str) -> Option<u64> {
        (secret == SECRET && code.len() == CODE_DIGITS)
            .then(|| code.parse().ok())
            .flatten()
    }

    fn code(step: u64) -> String {
        format!("{step:06}")
    }

    /// The default admin with 2FA on (secret [`SECRET`]), as the dashboard's two steps leave it.
    fn admin_with_2fa(conn: &Connection) {
        ensure_default(conn).unwrap();
        assert!(start_totp(conn, "admin", SECRET).unwrap());
        assert!(confirm_totp(conn, "admin", &code(10), check).unwrap());
    }

    #[test]
    fn default_admin_and_reset() {
        let (_dir, conn) = testutil::conn();
        assert!(ensure_default(&conn).unwrap());
        assert!(!ensure_default(&conn).unwrap());
        assert!(check_password(&conn, "admin", "admin").unwrap());
        admin_with_2fa(&conn);
        reset_password(&conn, "admin", "n3w").unwrap();
        assert!(check_password(&conn, "admin", "n3w").unwrap());
        assert!(!check_password(&conn, "admin", "admin").unwrap());
        assert_eq!(totp_state(&conn, "admin").unwrap(), TotpState::default());
    }

    #[test]
    fn set_password_changes_only_an_existing_admin() {
        let (_dir, conn) = testutil::conn();
        ensure_default(&conn).unwrap();
        set_password(&conn, "admin", "a-long-new-password").unwrap();
        assert!(check_password(&conn, "admin", "a-long-new-password").unwrap());
        assert!(!check_password(&conn, "admin", "admin").unwrap());
        assert!(!check_password(&conn, "nobody", "admin").unwrap());
        assert!(matches!(
            set_password(&conn, "nobody", "pw"),
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            set_password(&conn, "admin", ""),
            Err(StoreError::Password(_))
        ));
    }

    #[test]
    fn login_without_2fa() {
        let (_dir, conn) = testutil::conn();
        ensure_default(&conn).unwrap();
        let login = |user: &str, pw: &str| verify_login(&conn, user, pw, check).unwrap();
        assert_eq!(
            login("admin", "admin"),
            Some(LoginOk {
                default_password: true
            })
        );
        assert_eq!(login("admin", "wrong"), None);
        assert_eq!(login("nobody", "admin"), None);
        set_password(&conn, "admin", "a-long-new-password").unwrap();
        assert_eq!(
            login("admin", "a-long-new-password"),
            Some(LoginOk {
                default_password: false
            })
        );
        // A pending secret changes nothing until it is confirmed.
        assert!(start_totp(&conn, "admin", SECRET).unwrap());
        assert!(login("admin", "a-long-new-password").is_some());
    }

    #[test]
    fn login_with_2fa_needs_the_code_once() {
        let (_dir, conn) = testutil::conn();
        admin_with_2fa(&conn);
        let login = |pw: &str| verify_login(&conn, "admin", pw, check).unwrap();
        assert_eq!(login("admin"), None, "the password alone");
        assert_eq!(login(&code(20)), None, "the code alone");
        assert_eq!(
            login(&format!("wrong{}", code(20))),
            None,
            "a wrong password"
        );
        assert_eq!(
            login(&format!("admin{}", code(20))),
            Some(LoginOk {
                default_password: true
            })
        );
        assert_eq!(login(&format!("admin{}", code(20))), None, "a replay");
        assert_eq!(login(&format!("admin{}", code(19))), None, "an older code");
        assert!(login(&format!("admin{}", code(21))).is_some());
        // Non-ASCII right where the code starts: refused, not a panic.
        assert_eq!(login("adminé12345"), None);
    }

    #[test]
    fn the_replay_guard_accepts_each_step_once_and_only_forward() {
        let (_dir, conn) = testutil::conn();
        ensure_default(&conn).unwrap();
        assert!(consume_totp_step(&conn, "admin", 100).unwrap());
        assert!(!consume_totp_step(&conn, "admin", 100).unwrap());
        assert!(!consume_totp_step(&conn, "admin", 99).unwrap());
        assert!(consume_totp_step(&conn, "admin", 101).unwrap());
        assert!(consume_totp_step(&conn, "admin", u64::MAX).unwrap());
        assert!(!consume_totp_step(&conn, "admin", u64::MAX).unwrap());
        assert!(!consume_totp_step(&conn, "nobody", 1).unwrap());
    }

    #[test]
    fn the_2fa_life_cycle() {
        let (_dir, conn) = testutil::conn();
        ensure_default(&conn).unwrap();
        assert_eq!(totp_state(&conn, "admin").unwrap(), TotpState::default());
        assert!(matches!(
            totp_state(&conn, "nobody"),
            Err(StoreError::NotFound { .. })
        ));
        // Nothing to confirm yet.
        assert!(!confirm_totp(&conn, "admin", &code(5), check).unwrap());
        assert!(start_totp(&conn, "admin", SECRET).unwrap());
        assert_eq!(
            totp_state(&conn, "admin").unwrap(),
            TotpState {
                enabled: false,
                pending: Some(SECRET.into())
            }
        );
        assert!(!confirm_totp(&conn, "admin", "nope", check).unwrap());
        assert!(confirm_totp(&conn, "admin", &code(5), check).unwrap());
        assert_eq!(
            totp_state(&conn, "admin").unwrap(),
            TotpState {
                enabled: true,
                pending: None
            }
        );
        // On: a new secret is refused, and so is confirming again.
        assert!(!start_totp(&conn, "admin", "OTHER").unwrap());
        assert!(!confirm_totp(&conn, "admin", &code(6), check).unwrap());
        // Off needs the password and a fresh code.
        assert!(!disable_totp(&conn, "admin", "wrong", &code(7), check).unwrap());
        assert!(!disable_totp(&conn, "admin", "admin", &code(5), check).unwrap());
        assert!(totp_state(&conn, "admin").unwrap().enabled);
        assert!(disable_totp(&conn, "admin", "admin", &code(7), check).unwrap());
        assert_eq!(totp_state(&conn, "admin").unwrap(), TotpState::default());
        assert!(!disable_totp(&conn, "admin", "admin", &code(8), check).unwrap());
        assert_eq!(
            verify_login(&conn, "admin", "admin", check).unwrap(),
            Some(LoginOk {
                default_password: true
            })
        );
    }
}
