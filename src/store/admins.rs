//! Dashboard administrators: their passwords and two-factor authentication (TOTP), and the login check.
//!
//! There is no default password: `mailserver init` creates the first admin, `admin`, with a random
//! password that it prints once (or with the one in `ADMIN_PASSWORD_FILE`, a Docker secret), see
//! [`ensure_admin`]. An install from before this rule, whose admin still has the password `admin`,
//! gets a random one the same way at its next start. Every new password a person chooses passes the
//! [`password_policy`] (at least 12 characters, not easy to guess).
//!
//! The login logic lives here rather than in the dashboard so that every rule about the `admins`
//! table (the dummy hash for unknown users, the code appended to the password, the replay guard)
//! sits beside the statements it depends on. Only the TOTP arithmetic stays with the dashboard, which
//! owns the TOTP crate: the functions that check a code take it as a [`CodeCheck`].
//!
//! 2FA has three states: off (no secret), pending (a secret shown to the admin, not yet confirmed with
//! a code; the login ignores it) and on. Each accepted code's time step is stored, and a code is only
//! accepted for a later step than the last one, so a code (or an older one) cannot be replayed.

use std::path::PathBuf;

use rusqlite::{Connection, OptionalExtension as _};
use thiserror::Error;

use super::{StoreError, expect_changed, login_limiter, not_found, sessions};
use crate::password::{self, PasswordError};
use crate::password_policy;

pub const DEFAULT_USERNAME: &str = "admin";
/// The password `init` used to give every new install; it is replaced at the next `init` and
/// refused as a new password.
const OLD_DEFAULT_PASSWORD: &str = "admin";
/// The length of the password `init` generates.
pub const GENERATED_PASSWORD_LEN: usize = 24;
/// The environment variable naming a file with the first admin's password (a Docker secret).
pub const PASSWORD_FILE_VAR: &str = "ADMIN_PASSWORD_FILE";

/// The digits of a TOTP code, appended to the password at login when 2FA is on.
pub const CODE_DIGITS: usize = 6;

/// Why a new admin password is refused.
#[derive(Debug, Error)]
pub enum AdminPasswordError {
    #[error("could not read {PASSWORD_FILE_VAR} ({path}): {source}")]
    ReadFile {
        path: String,
        source: std::io::Error,
    },
    #[error("{PASSWORD_FILE_VAR} ({path}): {reason}")]
    BadFile { path: String, reason: String },
}

/// Checks a new password for the admin `username` against the [`password_policy`] (the hash checks
/// the characters).
pub fn check_new_password(
    username: &str,
    password: &str,
) -> Result<(), password_policy::WeakPassword> {
    password_policy::check(password, &password_policy::admin_inputs(username))
}

/// Checks a TOTP code against a base32 secret at the current time: the time step the code is valid
/// for, or `None` when it is not valid now. The dashboard passes its TOTP implementation.
pub trait CodeCheck: Fn(&str, &str) -> Option<u64> {}
impl<F: Fn(&str, &str) -> Option<u64>> CodeCheck for F {}

/// A hash to burn the same time on when the user does not exist (no user enumeration by timing).
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0G6XVWwRVchmqAqeGz1LmA2zdDP5dxoxl4pdRYQeygA";

/// Where the first admin's password comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitialPassword {
    /// Generated, and shown once ([`CreatedAdmin::generated_password`]).
    Random,
    /// Read from this file (`ADMIN_PASSWORD_FILE`) when, and only when, the admin is created.
    File(PathBuf),
}

impl InitialPassword {
    /// From the environment: a file when [`PASSWORD_FILE_VAR`] is set and not empty.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Self {
        match env(PASSWORD_FILE_VAR) {
            Some(path) if !path.trim().is_empty() => Self::File(PathBuf::from(path.trim())),
            _ => Self::Random,
        }
    }

    /// The password: generated, or the file's first line (one trailing newline stripped).
    fn read(&self) -> Result<String, StoreError> {
        let Self::File(path) = self else {
            return Ok(password::random(GENERATED_PASSWORD_LEN));
        };
        let shown = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|source| AdminPasswordError::ReadFile {
                path: shown.clone(),
                source,
            })?;
        let pw = text
            .strip_suffix("\r\n")
            .or_else(|| text.strip_suffix('\n'))
            .unwrap_or(&text);
        if pw.contains(['\r', '\n', '\0']) {
            return Err(AdminPasswordError::BadFile {
                path: shown,
                reason: "the password must be one line".into(),
            }
            .into());
        }
        if let Err(weak) = check_new_password(DEFAULT_USERNAME, pw) {
            return Err(AdminPasswordError::BadFile {
                path: shown,
                reason: weak.to_string(),
            }
            .into());
        }
        Ok(pw.to_string())
    }
}

/// An admin `init` created, or whose old default password it replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedAdmin {
    pub username: String,
    /// The generated password, to be shown once; `None` when it came from `ADMIN_PASSWORD_FILE`.
    pub generated_password: Option<String>,
    /// True when the admin existed with the old default password `admin` (an upgrade).
    pub replaced_default: bool,
}

/// Makes sure there is an admin that cannot be logged into with `admin`/`admin`: creates
/// [`DEFAULT_USERNAME`] with the `initial` password when there is no admin, and replaces the
/// password of an admin [`DEFAULT_USERNAME`] that is still `admin`. Returns what it did, `None`
/// when nothing. `initial` is read only then: a password file is not needed afterwards, and a
/// later change of it does nothing (`mailserver admin reset-password` changes the password).
pub fn ensure_admin(
    conn: &Connection,
    initial: &InitialPassword,
) -> Result<Option<CreatedAdmin>, StoreError> {
    let any: bool = conn.query_row("SELECT EXISTS (SELECT 1 FROM admins)", [], |r| r.get(0))?;
    let replaced_default = any && check_password(conn, DEFAULT_USERNAME, OLD_DEFAULT_PASSWORD)?;
    if any && !replaced_default {
        return Ok(None);
    }
    let pw = initial.read()?;
    let hash = password::hash(&pw)?;
    conn.execute(
        "INSERT INTO admins (username, password_hash) VALUES (?1, ?2)
         ON CONFLICT (username) DO UPDATE SET password_hash = excluded.password_hash,
             updated_at = datetime('now')",
        (DEFAULT_USERNAME, hash),
    )?;
    Ok(Some(CreatedAdmin {
        username: DEFAULT_USERNAME.to_string(),
        generated_password: (*initial == InitialPassword::Random).then_some(pw),
        replaced_default,
    }))
}

/// What [`reset_password`] ended besides the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResetReport {
    /// Sessions ended (of every admin).
    pub sessions_ended: usize,
    /// Login lockouts lifted (of every client).
    pub lockouts_cleared: usize,
}

/// Sets an admin's password and turns 2FA off (the recovery path when the admin is locked out);
/// creates the admin if it does not exist. Also ends every session and lifts every login lockout
/// (at `now`, Unix seconds): whoever knew the old password is out, and the admin can log in at once.
pub fn reset_password(
    conn: &Connection,
    username: &str,
    new_password: &str,
    now: i64,
) -> Result<ResetReport, StoreError> {
    let username = crate::names::LocalPart::parse(username)?;
    check_new_password(username.as_str(), new_password).map_err(PasswordError::from)?;
    let hash = password::hash(new_password)?;
    let tx = conn.unchecked_transaction()?;
    tx.execute(
        "INSERT INTO admins (username, password_hash) VALUES (?1, ?2)
         ON CONFLICT (username) DO UPDATE SET password_hash = excluded.password_hash,
             totp_enabled = 0, totp_secret = NULL, updated_at = datetime('now')",
        (username.as_str(), hash),
    )?;
    let report = ResetReport {
        sessions_ended: sessions::end_all(&tx, now)?,
        lockouts_cleared: login_limiter::clear_all(&tx, now)?,
    };
    tx.commit()?;
    Ok(report)
}

/// Changes an existing admin's password (2FA stays as it is).
pub fn set_password(
    conn: &Connection,
    username: &str,
    new_password: &str,
) -> Result<(), StoreError> {
    check_new_password(username, new_password).map_err(PasswordError::from)?;
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

/// Verifies a login: `password` is the admin's password, followed by the current
/// [`CODE_DIGITS`]-digit code when 2FA is on. An accepted code is used up (see [`consume_totp_step`]).
/// False for a wrong password or code, a replayed code, or an unknown admin, in about the same time
/// (an unknown admin costs one Argon2 verification too). Blocking: Argon2 takes tens of milliseconds.
pub fn verify_login(
    conn: &Connection,
    username: &str,
    password: &str,
    check_code: impl CodeCheck,
) -> Result<bool, StoreError> {
    let Some(creds) = credentials(conn, username)? else {
        let _ = password::verify(password, DUMMY_HASH);
        return Ok(false);
    };
    if !creds.totp_enabled {
        return Ok(password::verify(password, &creds.password_hash));
    }
    let Some(split) = password
        .len()
        .checked_sub(CODE_DIGITS)
        .filter(|&i| password.is_char_boundary(i))
    else {
        let _ = password::verify(password, DUMMY_HASH);
        return Ok(false);
    };
    let (pw, code) = password.split_at(split);
    let pw_ok = password::verify(pw, &creds.password_hash);
    let step = creds
        .totp_secret
        .as_deref()
        .and_then(|secret| check_code(secret, code));
    match (pw_ok, step) {
        (true, Some(step)) => consume_totp_step(conn, username, step),
        _ => Ok(false),
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
    /// The admin's password in these tests.
    const PW: &str = "a-test-password-Kq7vZ";
    const T0: i64 = 1_800_000_000;

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

    /// The admin `admin` with the password [`PW`].
    fn admin(conn: &Connection) {
        reset_password(conn, "admin", PW, T0).unwrap();
    }

    /// The admin with 2FA on (secret [`SECRET`]), as the dashboard's two steps leave it.
    fn admin_with_2fa(conn: &Connection) {
        admin(conn);
        assert!(start_totp(conn, "admin", SECRET).unwrap());
        assert!(confirm_totp(conn, "admin", &code(10), check).unwrap());
    }

    fn password_file(dir: &tempfile::TempDir, text: &str) -> InitialPassword {
        let path = dir.path().join("admin_password");
        std::fs::write(&path, text).unwrap();
        InitialPassword::File(path)
    }

    #[test]
    fn the_first_admin_gets_a_random_password_shown_once_never_admin() {
        let (_dir, conn) = testutil::conn();
        let created = ensure_admin(&conn, &InitialPassword::Random)
            .unwrap()
            .unwrap();
        assert_eq!(created.username, "admin");
        assert!(!created.replaced_default);
        let pw = created.generated_password.unwrap();
        assert!(
            pw.len() >= 20 && pw.bytes().all(|b| b.is_ascii_alphanumeric()),
            "{pw}"
        );
        assert!(check_password(&conn, "admin", &pw).unwrap());
        assert!(!check_password(&conn, "admin", "admin").unwrap());
        // Only the hash is stored.
        let stored: String = conn
            .query_row("SELECT password_hash FROM admins", [], |r| r.get(0))
            .unwrap();
        assert!(stored.starts_with("$argon2id$") && !stored.contains(&pw));
        // Nothing to do the second time.
        assert_eq!(ensure_admin(&conn, &InitialPassword::Random).unwrap(), None);
        assert!(check_password(&conn, "admin", &pw).unwrap());
    }

    #[test]
    fn the_password_file_sets_the_first_password_only() {
        let (dir, conn) = testutil::conn();
        let file = password_file(&dir, "from-the-secret-file-Wx4q\n");
        let created = ensure_admin(&conn, &file).unwrap().unwrap();
        assert_eq!(
            created.generated_password, None,
            "a given password is not printed"
        );
        assert!(check_password(&conn, "admin", "from-the-secret-file-Wx4q").unwrap());
        // Once the admin exists the file is not read: it may change, or go away.
        let later = password_file(&dir, "changed-in-the-file-Jm8t\n");
        assert_eq!(ensure_admin(&conn, &later).unwrap(), None);
        std::fs::remove_file(dir.path().join("admin_password")).unwrap();
        assert_eq!(ensure_admin(&conn, &later).unwrap(), None);
        assert!(check_password(&conn, "admin", "from-the-secret-file-Wx4q").unwrap());
    }

    #[test]
    fn a_bad_password_file_is_refused_with_a_clear_error() {
        for (text, why) in [
            ("short\n", "too short: at least 12 characters"),
            ("eleven-char", "too short: at least 12 characters"),
            ("password123456\n", "too easy to guess"),
            ("mailserver2024\n", "too easy to guess"),
            ("two\nlines-of-password\n", "one line"),
        ] {
            let (dir, conn) = testutil::conn();
            let err = ensure_admin(&conn, &password_file(&dir, text)).unwrap_err();
            assert!(err.to_string().contains("ADMIN_PASSWORD_FILE"), "{err}");
            assert!(err.to_string().contains(why), "{err}");
            let n: i64 = conn
                .query_row("SELECT count(*) FROM admins", [], |r| r.get(0))
                .unwrap();
            assert_eq!(n, 0);
        }
        let (dir, conn) = testutil::conn();
        let missing = InitialPassword::File(dir.path().join("nope"));
        assert!(
            ensure_admin(&conn, &missing)
                .unwrap_err()
                .to_string()
                .contains("could not read")
        );
        // Exactly one trailing newline is stripped (CRLF too); twelve characters are enough.
        let created = ensure_admin(&conn, &password_file(&dir, "Tq8wLz4nRv2k\r\n")).unwrap();
        assert!(created.is_some());
        assert!(check_password(&conn, "admin", "Tq8wLz4nRv2k").unwrap());
    }

    #[test]
    fn an_upgraded_install_with_admin_admin_gets_a_random_password() {
        let (_dir, conn) = testutil::conn();
        // What `init` did before: admin/admin.
        conn.execute(
            "INSERT INTO admins (username, password_hash) VALUES ('admin', ?1)",
            [password::hash("admin").unwrap()],
        )
        .unwrap();
        let created = ensure_admin(&conn, &InitialPassword::Random)
            .unwrap()
            .unwrap();
        assert!(created.replaced_default);
        let pw = created.generated_password.unwrap();
        assert!(check_password(&conn, "admin", &pw).unwrap());
        assert!(!check_password(&conn, "admin", "admin").unwrap());
        assert_eq!(ensure_admin(&conn, &InitialPassword::Random).unwrap(), None);
    }

    #[test]
    fn new_passwords_pass_the_policy() {
        use crate::password_policy::WeakPassword;
        let (_dir, conn) = testutil::conn();
        let weak = |r: Result<(), StoreError>| match r {
            Err(StoreError::Password(PasswordError::Weak(w))) => w,
            other => panic!("{other:?}"),
        };
        let reset = |pw: &str| reset_password(&conn, "admin", pw, T0).map(|_| ());
        for short in ["admin", "", "eleven-char"] {
            assert_eq!(weak(reset(short)), WeakPassword::TooShort);
        }
        for guessable in ["password123456", "admin-admin-admin", "mailserver2024"] {
            assert!(matches!(weak(reset(guessable)), WeakPassword::Guessable(_)));
        }
        let n: i64 = conn
            .query_row("SELECT count(*) FROM admins", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0, "a refused reset creates no admin");
        admin(&conn);
        assert_eq!(
            weak(set_password(&conn, "admin", "admin")),
            WeakPassword::TooShort
        );
        assert!(matches!(
            weak(set_password(&conn, "admin", "qwertyuiop123")),
            WeakPassword::Guessable(_)
        ));
        assert!(check_password(&conn, "admin", PW).unwrap());
        // What `admin reset-password` generates passes.
        reset(&password::random(GENERATED_PASSWORD_LEN)).unwrap();
    }

    #[test]
    fn reset_sets_the_password_turns_2fa_off_and_ends_sessions_and_lockouts() {
        let (_dir, mut conn) = testutil::conn();
        admin_with_2fa(&conn);
        sessions::create(&conn, "admin", T0).unwrap();
        sessions::create(&conn, "admin", T0).unwrap();
        let keys = login_limiter::LimitKeys::new(Some("192.0.2.1".parse().unwrap()), "admin");
        for _ in 0..=login_limiter::FREE_ATTEMPTS {
            login_limiter::begin_attempt(&mut conn, &keys, T0).unwrap();
        }
        let report = reset_password(&conn, "admin", "n3w-password-ok-Rb5y", T0).unwrap();
        assert_eq!(
            report,
            ResetReport {
                sessions_ended: 2,
                lockouts_cleared: 2
            }
        );
        assert!(check_password(&conn, "admin", "n3w-password-ok-Rb5y").unwrap());
        assert!(!check_password(&conn, "admin", PW).unwrap());
        assert_eq!(totp_state(&conn, "admin").unwrap(), TotpState::default());
        assert_eq!(
            login_limiter::begin_attempt(&mut conn, &keys, T0).unwrap(),
            login_limiter::Attempt::Allowed
        );
    }

    #[test]
    fn set_password_changes_only_an_existing_admin() {
        let (_dir, conn) = testutil::conn();
        admin(&conn);
        set_password(&conn, "admin", "a-long-new-password-Hz2c").unwrap();
        assert!(check_password(&conn, "admin", "a-long-new-password-Hz2c").unwrap());
        assert!(!check_password(&conn, "admin", PW).unwrap());
        assert!(!check_password(&conn, "nobody", PW).unwrap());
        assert!(matches!(
            set_password(&conn, "nobody", "a-long-new-password-Hz2c"),
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            set_password(&conn, "admin", "a-long-new-password-Hz2c\n"),
            Err(StoreError::Password(_))
        ));
    }

    #[test]
    fn login_without_2fa() {
        let (_dir, conn) = testutil::conn();
        admin(&conn);
        let login = |user: &str, pw: &str| verify_login(&conn, user, pw, check).unwrap();
        assert!(login("admin", PW));
        assert!(!login("admin", "wrong"));
        assert!(!login("admin", "admin"));
        assert!(!login("nobody", PW));
        // A pending secret changes nothing until it is confirmed.
        assert!(start_totp(&conn, "admin", SECRET).unwrap());
        assert!(login("admin", PW));
    }

    #[test]
    fn login_with_2fa_needs_the_code_once() {
        let (_dir, conn) = testutil::conn();
        admin_with_2fa(&conn);
        let login = |pw: &str| verify_login(&conn, "admin", pw, check).unwrap();
        assert!(!login(PW), "the password alone");
        assert!(!login(&code(20)), "the code alone");
        assert!(!login(&format!("wrong{}", code(20))), "a wrong password");
        assert!(login(&format!("{PW}{}", code(20))));
        assert!(!login(&format!("{PW}{}", code(20))), "a replay");
        assert!(!login(&format!("{PW}{}", code(19))), "an older code");
        assert!(login(&format!("{PW}{}", code(21))));
        // Non-ASCII right where the code starts: refused, not a panic.
        assert!(!login("adminé12345"));
    }

    #[test]
    fn the_replay_guard_accepts_each_step_once_and_only_forward() {
        let (_dir, conn) = testutil::conn();
        admin(&conn);
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
        admin(&conn);
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
        assert!(!disable_totp(&conn, "admin", PW, &code(5), check).unwrap());
        assert!(totp_state(&conn, "admin").unwrap().enabled);
        assert!(disable_totp(&conn, "admin", PW, &code(7), check).unwrap());
        assert_eq!(totp_state(&conn, "admin").unwrap(), TotpState::default());
        assert!(!disable_totp(&conn, "admin", PW, &code(8), check).unwrap());
        assert!(verify_login(&conn, "admin", PW, check).unwrap());
    }
}
