//! Who is logged in, what the dashboard keeps in memory about it, and TOTP codes.
//!
//! Sessions and the failed-login limiter are in the database (`mailserver::store::sessions` and
//! `mailserver::store::login_limiter`), where `mailserver admin reset-password` can end and clear
//! them; [`crate::login`] uses them. What stays here, in the process:
//! - the cap on concurrent password checks: each takes an Argon2 hash, tens of milliseconds of a
//!   core, so at most as many run at once as there are cores, and a login beyond that is answered
//!   429 at once without hashing (a flood must not starve Postfix and Dovecot of CPU);
//! - flash messages, one line for a session's next page (a restart may lose one, which is fine).
//!
//! The TOTP arithmetic (RFC 6238 through `totp-rs`, a dependency of this crate only) is here too; the
//! rules around it (the code appended to the password, the replay guard) are the library's, in
//! `mailserver::store::admins`, which takes [`totp_step`] as its code check.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mailserver::store::admins::CODE_DIGITS;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::flash::Flash;

/// A flash message not shown within this long is dropped.
const FLASH_TTL: Duration = Duration::from_secs(600);
/// The most flash messages kept (one per session at most).
const MAX_FLASHES: usize = 1000;

/// The logged-in admin, put into request extensions by [`crate::login::require_admin`].
#[derive(Debug, Clone)]
pub struct Admin {
    pub username: String,
    /// The session's CSRF token, which every form carries.
    pub csrf: String,
    /// The session id from the cookie (the database keeps only its hash).
    pub session_id: String,
}

/// The dashboard's in-memory login state: the password-check slots and the flash messages.
pub struct Auth {
    verifier_slots: Arc<Semaphore>,
    verifications: AtomicU64,
    flashes: Mutex<HashMap<String, (Instant, Flash)>>,
}

impl Default for Auth {
    /// As many password-check slots as the machine has cores.
    fn default() -> Self {
        Self::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }
}

impl Auth {
    /// With `verifier_slots` password checks allowed at once.
    pub fn new(verifier_slots: usize) -> Self {
        Self {
            verifier_slots: Arc::new(Semaphore::new(verifier_slots.max(1))),
            verifications: AtomicU64::new(0),
            flashes: Mutex::new(HashMap::new()),
        }
    }

    /// A slot to check a password in, or `None` when every slot is busy (answer 429, do not wait).
    pub(crate) fn try_verifier_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.verifier_slots.clone().try_acquire_owned().ok()
    }

    /// Counts one password check (Argon2 verification).
    pub(crate) fn count_verification(&self) {
        self.verifications.fetch_add(1, Ordering::Relaxed);
    }

    /// How many passwords were checked since start: what a flood of logins cost.
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// Leaves a message for the session's next page (post/redirect/get).
    pub fn set_flash(&self, session_id: &str, flash: Flash) {
        let mut flashes = self.flashes.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        flashes.retain(|_, (at, _)| now.duration_since(*at) < FLASH_TTL);
        if flashes.len() >= MAX_FLASHES {
            flashes.clear();
        }
        flashes.insert(session_id.to_string(), (now, flash));
    }

    pub fn take_flash(&self, session_id: &str) -> Option<Flash> {
        let mut flashes = self.flashes.lock().unwrap_or_else(|p| p.into_inner());
        flashes.remove(session_id).map(|(_, f)| f)
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
    fn the_verifier_slots_are_never_more_than_given() {
        let auth = Auth::new(2);
        let a = auth.try_verifier_slot();
        let b = auth.try_verifier_slot();
        assert!(a.is_some() && b.is_some());
        assert!(auth.try_verifier_slot().is_none());
        drop(a);
        assert!(auth.try_verifier_slot().is_some());
    }

    #[test]
    fn a_flash_is_shown_once() {
        let auth = Auth::default();
        auth.set_flash("s1", Flash::ok("done"));
        assert_eq!(auth.take_flash("s1").map(|f| f.text), Some("done".into()));
        assert!(auth.take_flash("s1").is_none());
        assert!(auth.take_flash("s2").is_none());
    }
}
