//! The password policy: what a password a person chooses must be (mailbox passwords and the
//! dashboard admin's, from the CLI, the dashboard and `ADMIN_PASSWORD_FILE`).
//!
//! Mailbox passwords guard SMTP AUTH, IMAP and POP3 on the open internet, where they are guessed
//! around the clock; a length rule alone lets `password1234` through. So a new password needs
//! [`MIN_LEN`] characters *and* a [`zxcvbn`] score of at least [`MIN_SCORE`] (about 10^8 guesses:
//! no common password, keyboard walk, date or dictionary word with digits), with the account's own
//! names (address, user name, domain) counted as known words, so `alice@example.test2024` fails for
//! alice. Passwords from [`crate::password::random`] pass by construction (tested below).
//!
//! The store's `add`/`set_password` functions call [`check`], so every way in (CLI, dashboard,
//! password file) gets the same rule and the same message. Only new passwords are checked: a login
//! with an older, weaker password still works.
//!
//! zxcvbn's time grows with the length (it scores at most the first 100 characters itself); we also
//! refuse more than [`MAX_LEN`] characters, so the work per check stays a few milliseconds.

use thiserror::Error;
use zxcvbn::Score;

/// The fewest characters (Unicode scalar values) a new password may have.
pub const MIN_LEN: usize = 12;
/// The most characters a new password may have: bounds the scoring work (and no one types more).
pub const MAX_LEN: usize = 128;
/// The lowest zxcvbn score accepted: 3 is "safely unguessable: moderate protection from an offline
/// slow-hash scenario" (at least 10^8 guesses); 0-2 are what online guessing finds.
pub const MIN_SCORE: Score = Score::Three;

/// Why a new password is refused; the message says what is wrong and what is needed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WeakPassword {
    #[error("password too short: at least {MIN_LEN} characters")]
    TooShort,
    #[error("password too long: at most {MAX_LEN} characters")]
    TooLong,
    /// The reason, from zxcvbn's warning and suggestions.
    #[error("password too easy to guess: {0}")]
    Guessable(String),
}

/// Checks a new password against the policy. `user_inputs` are words an attacker would try first
/// for this user (address, user name, domain, display name); see [`account_inputs`].
pub fn check(password: &str, user_inputs: &[&str]) -> Result<(), WeakPassword> {
    let len = password.chars().count();
    if len < MIN_LEN {
        return Err(WeakPassword::TooShort);
    }
    if len > MAX_LEN {
        return Err(WeakPassword::TooLong);
    }
    let entropy = zxcvbn::zxcvbn(password, user_inputs);
    if entropy.score() >= MIN_SCORE {
        return Ok(());
    }
    Err(WeakPassword::Guessable(reason(
        password,
        user_inputs,
        entropy.feedback(),
    )))
}

/// A sentence or two on why zxcvbn scored the password low and what helps.
fn reason(
    password: &str,
    user_inputs: &[&str],
    feedback: Option<&zxcvbn::feedback::Feedback>,
) -> String {
    let mut parts: Vec<String> = Vec::new();
    let lower = password.to_lowercase();
    let has_input = user_inputs
        .iter()
        .any(|w| w.chars().count() >= 3 && lower.contains(&w.to_lowercase()));
    match feedback.and_then(|f| f.warning()) {
        Some(warning) => parts.push(warning.to_string()),
        None if has_input => {
            parts.push("It contains the user name, address or domain.".to_string())
        }
        None => {}
    }
    if let Some(f) = feedback {
        parts.extend(f.suggestions().iter().map(|s| s.to_string()));
    }
    if parts.is_empty() {
        parts.push("Add another word or two, or use a generated password.".to_string());
    }
    parts.join(" ")
}

/// The words a guesser knows about a mailbox: the address, its user name and domain, the domain's
/// labels, and the words of the display name.
pub fn account_inputs<'a>(address: &'a str, name: &'a str) -> Vec<&'a str> {
    let mut words = vec![address];
    if let Some((local, domain)) = address.split_once('@') {
        words.push(local);
        words.push(domain);
        words.extend(domain.split('.'));
    }
    words.extend(name.split_whitespace());
    words.retain(|w| !w.is_empty());
    words
}

/// The words a guesser knows about a dashboard admin: the user name and the product.
pub fn admin_inputs(username: &str) -> Vec<&str> {
    vec![username, "mailserver", "dashboard"]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn refused(password: &str, inputs: &[&str], want: &str) {
        let err = check(password, inputs).expect_err(password);
        assert!(err.to_string().contains(want), "{password}: {err}");
    }

    #[test]
    fn short_and_long_passwords_are_refused() {
        for pw in ["", "x", "Zq8#vL1m!pT", "ÿÿÿÿÿÿÿÿÿÿÿ"] {
            assert_eq!(check(pw, &[]), Err(WeakPassword::TooShort), "{pw}");
        }
        assert_eq!(
            WeakPassword::TooShort.to_string(),
            "password too short: at least 12 characters"
        );
        let long = crate::password::random(MAX_LEN + 1);
        assert_eq!(check(&long, &[]), Err(WeakPassword::TooLong));
        // Multi-byte characters count once: 12 of them are enough for the length rule.
        assert_ne!(check("ÿÿÿÿÿÿÿÿÿÿÿÿ", &[]), Err(WeakPassword::TooShort));
        check(&crate::password::random(MAX_LEN), &[]).unwrap();
    }

    #[test]
    fn common_and_patterned_passwords_are_refused() {
        let alice = account_inputs("alice@example.test", "Alice Liddell");
        for (pw, why) in [
            ("password123456", "too easy to guess"),
            ("passwordpassword", "too easy to guess"),
            ("qwertyuiopasdf", "similar to a commonly used password"),
            ("aaaaaaaaaaaaaaaa", "Repeats like"),
            ("123456789012", "too easy to guess"),
            ("abcdefghijklmnop", "Sequences like abc"),
            ("iloveyou2024!", "too easy to guess"),
            ("passw0rd2024!", "Predictable substitutions"),
            (
                "alice@example.test1",
                "It contains the user name, address or domain.",
            ),
        ] {
            refused(pw, &alice, why);
        }
        assert_eq!(
            check("password123456", &[]).unwrap_err().to_string(),
            "password too easy to guess: This is similar to a commonly used password. \
             Add another word or two. Uncommon words are better."
        );
    }

    #[test]
    fn the_users_own_names_count_as_known_words() {
        let alice = account_inputs("alice@example.test", "");
        for pw in [
            "alice@example.test2024",
            "alice@example.test",
            "alice@example.test!",
            "Alice@Example.Test1",
        ] {
            refused(pw, &alice, "too easy to guess");
        }
        // The same text is not known for another user.
        check(
            "alice@example.test2024",
            &account_inputs("bob@other.test", ""),
        )
        .unwrap();
        refused(
            "mailserver2024",
            &admin_inputs("admin"),
            "too easy to guess",
        );
    }

    #[test]
    fn strong_passwords_pass() {
        let alice = account_inputs("alice@example.test", "Alice");
        for pw in [
            "correct horse battery staple",
            "Tq8wLz4nRv2k",
            "alice-pw-Vq9xLm2rTz7k",
            "vexing-quartz-ladle-91",
        ] {
            check(pw, &alice).unwrap_or_else(|e| panic!("{pw}: {e}"));
        }
    }

    #[test]
    fn generated_passwords_always_pass() {
        for _ in 0..500 {
            let pw = crate::password::random(24);
            check(&pw, &admin_inputs("admin")).unwrap_or_else(|e| panic!("{pw}: {e}"));
        }
    }

    #[test]
    fn inputs_of_an_account() {
        assert_eq!(
            account_inputs("alice@mail.example.test", " Alice  B "),
            [
                "alice@mail.example.test",
                "alice",
                "mail.example.test",
                "mail",
                "example",
                "test",
                "Alice",
                "B"
            ]
        );
    }

    /// The bound: the worst case zxcvbn sees is a MAX_LEN-character input; it stays fast. Prints the
    /// time (`cargo test --release password_policy -- --nocapture`).
    #[test]
    fn scoring_the_longest_password_is_fast() {
        let inputs = account_inputs("alice@example.test", "Alice Liddell");
        let samples = [
            crate::password::random(MAX_LEN),
            "a".repeat(MAX_LEN),
            "password".repeat(MAX_LEN / 8),
            "1qaz2wsx3edc4rfv".repeat(MAX_LEN / 16),
            "alice@example.test".repeat(8)[..MAX_LEN].to_string(),
        ];
        for pw in &samples {
            let start = std::time::Instant::now();
            let _ = check(pw, &inputs);
            let took = start.elapsed();
            eprintln!("zxcvbn on {} chars ({}...): {took:?}", pw.len(), &pw[..12]);
            assert!(took < std::time::Duration::from_secs(2), "{took:?}");
        }
    }
}
