//! Who is logged in: the dashboard's sessions, the failed-login limiter, and TOTP codes.
//!
//! Sessions are server-side (a random id in a cookie, see [`crate::login`]) and last 8 hours. Failed
//! logins are limited per client IP and per user name with growing lockouts, capped at 15 minutes so
//! the admin is never locked out for good (`mailserver admin reset-password` is the last resort). Both
//! live in memory: a restart logs everyone out, which is fine.
//!
//! The TOTP arithmetic (RFC 6238 through `totp-rs`, a dependency of this crate only) is here too; the
//! rules around it (the code appended to the password, the replay guard) are the library's, in
//! `mailserver::store::admins`, which takes [`totp_step`] as its code check.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use mailserver::store::admins::CODE_DIGITS;

use crate::flash::Flash;

pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// Failures allowed before lockouts start.
const FREE_FAILURES: u32 = 5;
const MAX_LOCKOUT: Duration = Duration::from_secs(15 * 60);
/// A key's failures are forgotten after this long without a new one.
const FAILURE_MEMORY: Duration = Duration::from_secs(3600);

/// The logged-in admin, put into request extensions by [`crate::login::require_admin`].
#[derive(Debug, Clone)]
pub struct Admin {
    pub username: String,
    pub csrf: String,
    pub session_id: String,
    /// Still the default `admin`/`admin`: the dashboard shows a banner.
    pub default_password: bool,
}

#[derive(Debug, Clone)]
struct Session {
    admin: Admin,
    expires: Instant,
    flash: Option<Flash>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

/// What failed logins are counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum LimitKey {
    Ip(IpAddr),
    User(String),
}

/// Sessions and the failed-login limiter (in memory: a restart logs everyone out, which is fine).
#[derive(Default)]
pub struct Auth {
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<LimitKey, Failures>>,
}

pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Auth {
    /// The admin of a live session.
    pub(crate) fn session(&self, id: &str) -> Option<Admin> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        sessions.get(id).map(|s| s.admin.clone())
    }

    pub(crate) fn create_session(&self, username: &str, default_password: bool) -> Admin {
        let admin = Admin {
            username: username.to_string(),
            csrf: random_token(),
            session_id: random_token(),
            default_password,
        };
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.insert(
            admin.session_id.clone(),
            Session {
                admin: admin.clone(),
                expires: Instant::now() + SESSION_TTL,
                flash: None,
            },
        );
        admin
    }

    /// Leaves a message for the session's next page (post/redirect/get).
    pub fn set_flash(&self, session_id: &str, flash: Flash) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = sessions.get_mut(session_id) {
            s.flash = Some(flash);
        }
    }

    pub fn take_flash(&self, session_id: &str) -> Option<Flash> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.get_mut(session_id).and_then(|s| s.flash.take())
    }

    /// Updates the banner flag of every session of `username` (after a password change).
    pub fn set_default_password(&self, username: &str, default_password: bool) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        for s in sessions
            .values_mut()
            .filter(|s| s.admin.username == username)
        {
            s.admin.default_password = default_password;
        }
    }

    /// Ends every session of `username` except `keep` (after a password or 2FA change).
    pub fn end_other_sessions(&self, username: &str, keep: &str) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.retain(|id, s| s.admin.username != username || id == keep);
    }

    /// Seconds until `keys` may try again, if any of them is locked out.
    pub(crate) fn locked(&self, keys: &[LimitKey]) -> Option<u64> {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        keys.iter()
            .filter_map(|k| failures.get(k)?.locked_until)
            .filter(|until| *until > now)
            .map(|until| (until - now).as_secs().max(1))
            .max()
    }

    /// Counts a failed login against each of `keys`, locking them out after [`FREE_FAILURES`].
    pub(crate) fn fail(&self, keys: &[LimitKey]) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        failures.retain(|_, f| now.duration_since(f.last) < FAILURE_MEMORY);
        for key in keys {
            let f = failures.entry(key.clone()).or_insert(Failures {
                count: 0,
                last: now,
                locked_until: None,
            });
            f.count += 1;
            f.last = now;
            if f.count >= FREE_FAILURES {
                let exp = (f.count - FREE_FAILURES).min(10);
                let lock = Duration::from_secs(1u64 << exp).min(MAX_LOCKOUT);
                f.locked_until = Some(now + lock);
            }
        }
    }

    /// Forgets the failures of `keys` after a successful login.
    pub(crate) fn succeed(&self, keys: &[LimitKey]) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        for key in keys {
            failures.remove(key);
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A TOTP for `secret_b32` with the standard parameters (SHA-1, 6 digits, 30 s, one step of skew).
pub fn totp(secret_b32: &str) -> Option<totp_rs::Totp> {
    let secret = totp_rs::Secret::try_from_base32(secret_b32).ok()?;
    totp_rs::Builder::new().with_secret(secret).build().ok()
}

/// The matching time step for `code` now, if it is valid: the code check the library's 2FA functions
/// take (`mailserver::store::admins::CodeCheck`).
pub fn totp_step(secret_b32: &str, code: &str) -> Option<u64> {
    if code.len() != CODE_DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    totp(secret_b32)?.check(code, now_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockouts_grow_and_are_capped() {
        let auth = Auth::default();
        let keys = [LimitKey::User("admin".into())];
        for _ in 0..FREE_FAILURES - 1 {
            auth.fail(&keys);
        }
        assert!(auth.locked(&keys).is_none());
        auth.fail(&keys);
        assert_eq!(auth.locked(&keys), Some(1));
        for _ in 0..30 {
            auth.fail(&keys);
        }
        assert!(auth.locked(&keys).unwrap() <= MAX_LOCKOUT.as_secs());
        auth.succeed(&keys);
        assert!(auth.locked(&keys).is_none());
    }
}
