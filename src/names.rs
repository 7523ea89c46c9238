//! Validated names: every value that ends up in a daemon's configuration passes through one of these.
//!
//! Postfix maps, Dovecot's user database and OpenDKIM's KeyTable/SigningTable each give meaning to
//! characters such as whitespace, `:`, `,`, `%`, `#` and line breaks. Rather than escaping for each
//! format, we accept only a conservative ASCII subset and reject everything else with a clear error,
//! so a renderer that takes these types can never be tricked into writing a second line or field.
//! Internationalised names are accepted only in their ASCII (punycode) form.

use std::fmt;

use thiserror::Error;

/// Why a name was refused. The message is safe to show to the user.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    #[error("{what} is empty")]
    Empty { what: &'static str },
    #[error("{what} is too long ({len} characters, at most {max})")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{what} contains a character that is not allowed: {found:?}")]
    BadChar { what: &'static str, found: char },
    #[error("{what} is malformed: {why}")]
    Malformed {
        what: &'static str,
        why: &'static str,
    },
}

fn check_len(what: &'static str, s: &str, max: usize) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty { what });
    }
    if s.len() > max {
        return Err(NameError::TooLong {
            what,
            len: s.chars().count(),
            max,
        });
    }
    Ok(())
}

fn first_bad(what: &'static str, s: &str, ok: impl Fn(char) -> bool) -> Result<(), NameError> {
    match s.chars().find(|&c| !ok(c)) {
        Some(found) => Err(NameError::BadChar { what, found }),
        None => Ok(()),
    }
}

macro_rules! string_newtype {
    ($name:ident) => {
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl std::str::FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::parse(s)
            }
        }
    };
}

/// A DNS domain name in lower case, e.g. `example.com`: LDH labels of 1-63 characters, at least two labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Domain(String);
string_newtype!(Domain);

impl Domain {
    pub fn parse(input: &str) -> Result<Self, NameError> {
        const WHAT: &str = "domain";
        let s = input.to_ascii_lowercase();
        check_len(WHAT, &s, 253)?;
        first_bad(WHAT, &s, |c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'
        })?;
        let labels: Vec<&str> = s.split('.').collect();
        if labels.len() < 2 {
            return Err(NameError::Malformed {
                what: WHAT,
                why: "it needs at least two labels, like example.com",
            });
        }
        for label in &labels {
            if label.is_empty() {
                return Err(NameError::Malformed {
                    what: WHAT,
                    why: "it has an empty label (two dots in a row, or a leading or trailing dot)",
                });
            }
            if label.len() > 63 {
                return Err(NameError::Malformed {
                    what: WHAT,
                    why: "a label is longer than 63 characters",
                });
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(NameError::Malformed {
                    what: WHAT,
                    why: "a label starts or ends with a hyphen",
                });
            }
        }
        if labels
            .last()
            .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
        {
            return Err(NameError::Malformed {
                what: WHAT,
                why: "the last label is numeric (an IP address is not a domain)",
            });
        }
        Ok(Self(s))
    }
}

/// The part of an address before `@`, in lower case: letters, digits and `.`, `_`, `-`, `+`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocalPart(String);
string_newtype!(LocalPart);

impl LocalPart {
    pub fn parse(input: &str) -> Result<Self, NameError> {
        const WHAT: &str = "user name";
        let s = input.to_ascii_lowercase();
        check_len(WHAT, &s, 64)?;
        first_bad(WHAT, &s, |c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-' | '+')
        })?;
        if s.starts_with('.') || s.ends_with('.') || s.contains("..") {
            return Err(NameError::Malformed {
                what: WHAT,
                why: "dots may not start or end it, or follow each other",
            });
        }
        Ok(Self(s))
    }
}

/// A mailbox address `local@domain`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    local: LocalPart,
    domain: Domain,
    full: String,
}

impl Address {
    pub fn parse(input: &str) -> Result<Self, NameError> {
        const WHAT: &str = "address";
        check_len(WHAT, input, 254)?;
        // Report a line break or other control character as such, before splitting at '@'.
        if let Some(found) = input.chars().find(|c| c.is_control() || c.is_whitespace()) {
            return Err(NameError::BadChar { what: WHAT, found });
        }
        let Some((local, domain)) = input.rsplit_once('@') else {
            return Err(NameError::Malformed {
                what: WHAT,
                why: "it has no @",
            });
        };
        Ok(Self::new(LocalPart::parse(local)?, Domain::parse(domain)?))
    }

    pub fn new(local: LocalPart, domain: Domain) -> Self {
        let full = format!("{local}@{domain}");
        Self {
            local,
            domain,
            full,
        }
    }

    pub fn local(&self) -> &LocalPart {
        &self.local
    }

    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    pub fn as_str(&self) -> &str {
        &self.full
    }
}

impl AsRef<str> for Address {
    fn as_ref(&self) -> &str {
        &self.full
    }
}
impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}
impl std::str::FromStr for Address {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        Self::parse(s)
    }
}

/// What an alias matches: one address, or every address of a domain (`@example.com`, a catch-all).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AliasSource {
    Address(Address),
    CatchAll(Domain),
}

impl AliasSource {
    pub fn parse(input: &str) -> Result<Self, NameError> {
        match input.strip_prefix('@') {
            Some(domain) => Ok(Self::CatchAll(Domain::parse(domain)?)),
            None => Ok(Self::Address(Address::parse(input)?)),
        }
    }

    pub fn domain(&self) -> &Domain {
        match self {
            Self::Address(a) => a.domain(),
            Self::CatchAll(d) => d,
        }
    }

    /// The key as Postfix looks it up in `virtual_alias_maps`.
    pub fn key(&self) -> String {
        match self {
            Self::Address(a) => a.to_string(),
            Self::CatchAll(d) => format!("@{d}"),
        }
    }
}

impl fmt::Display for AliasSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

/// One or more destination addresses, written comma-separated (`a@x.org, b@y.org`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destinations(Vec<Address>);

impl Destinations {
    pub const MAX: usize = 50;

    pub fn parse(input: &str) -> Result<Self, NameError> {
        const WHAT: &str = "destination";
        let mut out: Vec<Address> = Vec::new();
        for part in input.split(',') {
            let part = part.trim_matches(|c| c == ' ' || c == '\t');
            if part.is_empty() {
                continue;
            }
            let address = Address::parse(part)?;
            if !out.contains(&address) {
                out.push(address);
            }
        }
        if out.is_empty() {
            return Err(NameError::Empty { what: WHAT });
        }
        if out.len() > Self::MAX {
            return Err(NameError::TooLong {
                what: WHAT,
                len: out.len(),
                max: Self::MAX,
            });
        }
        Ok(Self(out))
    }

    pub fn addresses(&self) -> &[Address] {
        &self.0
    }
}

impl fmt::Display for Destinations {
    /// The canonical form stored in the database and handed to Postfix: `a@x.org,b@y.org`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(a.as_str())?;
        }
        Ok(())
    }
}

/// A DKIM selector: one DNS label of lower-case letters, digits and hyphens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Selector(String);
string_newtype!(Selector);

impl Selector {
    pub fn parse(input: &str) -> Result<Self, NameError> {
        const WHAT: &str = "DKIM selector";
        let s = input.to_ascii_lowercase();
        check_len(WHAT, &s, 63)?;
        first_bad(WHAT, &s, |c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
        })?;
        if s.starts_with('-') || s.ends_with('-') {
            return Err(NameError::Malformed {
                what: WHAT,
                why: "it starts or ends with a hyphen",
            });
        }
        Ok(Self(s))
    }
}

/// The server's own fully qualified host name (`mx.example.com`), as Postfix's `myhostname`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hostname(Domain);

impl Hostname {
    pub fn parse(input: &str) -> Result<Self, NameError> {
        Domain::parse(input)
            .map(Self)
            .map_err(|e| relabel(e, "host name"))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The parent domain (`example.com` for `mx.example.com`), or the name itself for a two-label name.
    pub fn parent(&self) -> &str {
        let s = self.0.as_str();
        match s.split_once('.') {
            Some((_, rest)) if rest.contains('.') => rest,
            _ => s,
        }
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn relabel(e: NameError, what: &'static str) -> NameError {
    match e {
        NameError::Empty { .. } => NameError::Empty { what },
        NameError::TooLong { len, max, .. } => NameError::TooLong { what, len, max },
        NameError::BadChar { found, .. } => NameError::BadChar { what, found },
        NameError::Malformed { why, .. } => NameError::Malformed { what, why },
    }
}

/// A human's display name for an account: printable, single line, no characters that matter to Dovecot.
pub fn display_name(input: &str) -> Result<String, NameError> {
    const WHAT: &str = "name";
    let s = input.trim();
    if s.chars().count() > 100 {
        return Err(NameError::TooLong {
            what: WHAT,
            len: s.chars().count(),
            max: 100,
        });
    }
    first_bad(WHAT, s, |c| !c.is_control() && c != ':')?;
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn bad_domain(input: &str) {
        assert!(Domain::parse(input).is_err(), "{input:?} was accepted");
    }

    #[test]
    fn domains() {
        assert_eq!(
            Domain::parse("Example.COM").unwrap().as_str(),
            "example.com"
        );
        assert_eq!(
            Domain::parse("a-b.c1.example").unwrap().as_str(),
            "a-b.c1.example"
        );
        assert_eq!(
            Domain::parse("xn--bcher-kva.example").unwrap().as_str(),
            "xn--bcher-kva.example"
        );
        for input in [
            "",
            "com",
            "example.com\n",
            "exa mple.com",
            "example..com",
            ".example.com",
            "example.com.",
            "-a.com",
            "a-.com",
            "ex%ample.com",
            "ex,ample.com",
            "ex:ample.com",
            "exämple.com",
            "еxample.com", // Cyrillic е
            "1.2.3.4",
            "a\0.com",
            "a\r.com",
            "a'.com",
            "a;drop.com",
        ] {
            bad_domain(input);
        }
        bad_domain(&format!("{}.com", "a".repeat(64)));
        bad_domain(&format!("{}com", "abcdefghi.".repeat(26)));
    }

    #[test]
    fn local_parts() {
        for ok in ["alice", "Alice.Smith", "a_b-c+tag", "x1"] {
            assert!(LocalPart::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "a b", "a:b", "a,b", "a%b", "a\nb", ".a", "a.", "a..b", "a@b", "\"a\"", "a'b", "ä",
        ] {
            assert!(LocalPart::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(LocalPart::parse(&"a".repeat(65)).is_err());
    }

    #[test]
    fn addresses() {
        let a = Address::parse("Alice@Example.com").unwrap();
        assert_eq!(a.as_str(), "alice@example.com");
        assert_eq!(a.local().as_str(), "alice");
        assert_eq!(a.domain().as_str(), "example.com");
        for bad in [
            "alice",
            "@example.com",
            "alice@",
            "a@b@c.com",
            "alice@example.com\r\nRCPT",
        ] {
            assert!(Address::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn alias_sources() {
        assert_eq!(
            AliasSource::parse("@Example.com").unwrap().key(),
            "@example.com"
        );
        assert_eq!(
            AliasSource::parse("sales@example.com").unwrap().key(),
            "sales@example.com"
        );
        assert!(AliasSource::parse("@").is_err());
        assert!(AliasSource::parse("@@example.com").is_err());
    }

    #[test]
    fn destinations() {
        let d = Destinations::parse(" a@x.org, b@y.org ,a@x.org,").unwrap();
        assert_eq!(d.to_string(), "a@x.org,b@y.org");
        assert!(Destinations::parse("").is_err());
        assert!(Destinations::parse(" , ").is_err());
        assert!(Destinations::parse("a@x.org\nb@y.org").is_err());
        assert!(Destinations::parse("a@x.org;b@y.org").is_err());
    }

    #[test]
    fn selectors_and_hostnames() {
        assert!(Selector::parse("mail-20261124").is_ok());
        assert!(Selector::parse("mail._domainkey").is_err());
        assert!(Selector::parse("-x").is_err());
        let h = Hostname::parse("mx.example.com").unwrap();
        assert_eq!(h.parent(), "example.com");
        assert_eq!(
            Hostname::parse("example.com").unwrap().parent(),
            "example.com"
        );
        assert!(Hostname::parse("localhost").is_err());
    }

    #[test]
    fn display_names() {
        assert_eq!(display_name("  Alice Smith ").unwrap(), "Alice Smith");
        assert_eq!(display_name("Zoë").unwrap(), "Zoë");
        assert!(display_name("a\nb").is_err());
        assert!(display_name("a:b").is_err());
    }
}
