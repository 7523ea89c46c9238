//! Password hashing: Argon2id for every stored password (admins and mail accounts).
//!
//! Hashes are PHC strings (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`). Dovecot 2.3 verifies the same
//! string when it is prefixed with `{ARGON2ID}`, which is how account hashes reach its user database.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use thiserror::Error;

/// The longest password we accept; Argon2 takes any length, but a megabyte "password" is an attack.
pub const MAX_LEN: usize = 1024;

#[derive(Debug, Error)]
pub enum PasswordError {
    #[error("the password is empty")]
    Empty,
    #[error("the password is too long (at most {MAX_LEN} bytes)")]
    TooLong,
    #[error("the password contains a line break or NUL")]
    BadChar,
    #[error("could not hash the password: {0}")]
    Hash(String),
    /// A new password that fails the [`crate::password_policy`].
    #[error(transparent)]
    Weak(#[from] crate::password_policy::WeakPassword),
}

/// What every stored password must be: not empty, at most [`MAX_LEN`] bytes, one line.
pub fn check(password: &str) -> Result<(), PasswordError> {
    if password.is_empty() {
        return Err(PasswordError::Empty);
    }
    if password.len() > MAX_LEN {
        return Err(PasswordError::TooLong);
    }
    if password.contains(['\r', '\n', '\0']) {
        return Err(PasswordError::BadChar);
    }
    Ok(())
}

/// Hashes `password` with Argon2id and a fresh random salt.
pub fn hash(password: &str) -> Result<String, PasswordError> {
    check(password)?;
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// True when `password` matches the PHC string `hash` (as made by [`hash`] or by Dovecot).
pub fn verify(password: &str, hash: &str) -> bool {
    let hash = hash.strip_prefix("{ARGON2ID}").unwrap_or(hash);
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// The form Dovecot's passdb expects: the PHC string with its scheme prefix.
pub fn dovecot_form(hash: &str) -> String {
    format!("{{ARGON2ID}}{hash}")
}

/// A random password of `len` characters from an unambiguous alphabet (for `admin reset-password`).
/// From 24 characters on it passes the [`crate::password_policy`] (tested there).
pub fn random(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    // 256 % 56 != 0 gives a tiny bias; irrelevant for a one-time password shown to the admin.
    bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let h = hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$"));
        assert!(verify("correct horse", &h));
        assert!(verify("correct horse", &dovecot_form(&h)));
        assert!(!verify("wrong", &h));
        assert!(!verify("correct horse", "not a hash"));
    }

    #[test]
    fn rejects_bad_passwords() {
        assert!(matches!(hash(""), Err(PasswordError::Empty)));
        assert!(matches!(hash("a\nb"), Err(PasswordError::BadChar)));
        assert!(matches!(
            hash(&"x".repeat(MAX_LEN + 1)),
            Err(PasswordError::TooLong)
        ));
    }

    #[test]
    fn random_passwords() {
        let a = random(20);
        assert_eq!(a.len(), 20);
        assert_ne!(a, random(20));
    }
}
