//! The tracking contract between the milter, which puts pixels into mail, and the dashboard, which
//! serves them: the format of a tracking id, the pixel's path, and how its URL is built.
//!
//! Both sides must agree on every byte of this, and both are ours, so it is defined once, here. A
//! [`TrackingId`] is 128 random bits in base64url without padding (22 characters); the milter makes
//! them with [`TrackingId::generate`] and the pixel endpoint accepts nothing else
//! ([`TrackingId::parse`]). A [`PixelUrl`] can only be built from a validated [`BaseUrl`] and a
//! `TrackingId`, so every character of it is safe inside an HTML attribute and in a mail line.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use thiserror::Error;

/// The path the dashboard serves the pixel on; the id goes in the `id` query parameter.
pub const PIXEL_PATH: &str = "/pixel";

/// Bytes of randomness in a tracking id.
const ID_BYTES: usize = 16;
/// Its length in base64url without padding.
pub const ID_LEN: usize = 22;
/// The longest base URL accepted: the pixel tag must fit on one RFC 5322 line (998 octets) with
/// room to spare.
const MAX_BASE_URL: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TrackingError {
    #[error("a tracking id is {ID_LEN} characters of base64url (A-Z a-z 0-9 - _) for 128 bits")]
    BadId,
    #[error(
        "expected http(s)://host[:port][/path] of letters, digits and . - : / _ [ ] (got {0:?})"
    )]
    BadBaseUrl(String),
    #[error("the base URL is longer than {MAX_BASE_URL} characters")]
    BaseUrlTooLong,
}

/// The id in a pixel URL: 128 random bits, base64url without padding.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrackingId(String);

impl TrackingId {
    /// A fresh id from the operating system's random source.
    pub fn generate() -> Self {
        let mut bytes = [0u8; ID_BYTES];
        getrandom::fill(&mut bytes).expect("the operating system's random source failed");
        Self(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Accepts exactly what [`generate`](Self::generate) makes: 22 base64url characters that decode
    /// to 16 bytes (the canonical encoding, so one id has one spelling).
    pub fn parse(s: &str) -> Result<Self, TrackingError> {
        if s.len() != ID_LEN {
            return Err(TrackingError::BadId);
        }
        match base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s) {
            Ok(bytes) if bytes.len() == ID_BYTES => Ok(Self(s.to_string())),
            _ => Err(TrackingError::BadId),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TrackingId {
    type Err = TrackingError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for TrackingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TrackingId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Where the pixel is served from: `http(s)://host[:port][/path]`, without a trailing `/`, query or
/// fragment (`PIXEL_BASE_URL`, by default `https://HOSTNAME`). The one URL validator: it admits
/// only characters that need no escaping in an HTML attribute, a header or a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl(String);

impl BaseUrl {
    pub fn parse(s: &str) -> Result<Self, TrackingError> {
        let t = s.trim().trim_end_matches('/');
        let rest = t
            .strip_prefix("https://")
            .or_else(|| t.strip_prefix("http://"));
        let ok = rest.is_some_and(|r| {
            !r.is_empty()
                && !r.starts_with(['/', ':'])
                && r.chars().all(|c| {
                    c.is_ascii_alphanumeric()
                        || matches!(c, '.' | '-' | ':' | '/' | '_' | '[' | ']')
                })
        });
        if !ok {
            return Err(TrackingError::BadBaseUrl(s.to_string()));
        }
        if t.len() > MAX_BASE_URL {
            return Err(TrackingError::BaseUrlTooLong);
        }
        Ok(Self(t.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The full URL of one message's pixel, `{base}/pixel?id={id}`. Only [`pixel_url`] makes one, so it
/// is valid by construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PixelUrl(String);

/// The URL of the pixel for `id`, served under `base`.
pub fn pixel_url(base: &BaseUrl, id: &TrackingId) -> PixelUrl {
    PixelUrl(format!("{base}{PIXEL_PATH}?id={id}"))
}

impl PixelUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `<img>` tag put into HTML. Every character of the URL is safe in an attribute (see
    /// [`BaseUrl`] and [`TrackingId`]).
    pub fn img_tag(&self) -> String {
        format!(
            "<img src=\"{}\" width=\"1\" height=\"1\" alt=\"\" style=\"display:none;border:0;width:1px;height:1px\">",
            self.0
        )
    }
}

impl fmt::Display for PixelUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for PixelUrl {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_and_differ() {
        let a = TrackingId::generate();
        assert_eq!(a.as_str().len(), ID_LEN);
        assert_eq!(TrackingId::parse(a.as_str()), Ok(a.clone()));
        assert_ne!(a, TrackingId::generate());
    }

    #[test]
    fn ids() {
        for ok in [
            "VQx3An5C4mtsOVsTUQiGHQ",
            "TrackingIdForTestsAAAA",
            "-_-_-_-_-_-_-_-_-_-_-w",
        ] {
            assert!(TrackingId::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "VQx3An5C4mtsOVsTUQiGH",   // 21
            "VQx3An5C4mtsOVsTUQiGHQQ", // 23
            "VQx3An5C4mtsOVsTUQiGHR",  // non-canonical last character
            "VQx3An5C4mtsOVsTUQiGH=",
            "VQx3An5C4mtsOVsTUQiG+Q",
            "VQx3An5C4mtsOVsTUQi GQ",
            "x';--DROP TABLE xx_QQQ",
            "ÀQx3An5C4mtsOVsTUQiGQ",
        ] {
            assert_eq!(TrackingId::parse(bad), Err(TrackingError::BadId), "{bad:?}");
        }
    }

    #[test]
    fn base_urls() {
        for (input, want) in [
            ("https://mail.example.com", "https://mail.example.com"),
            ("https://mail.example.com/", "https://mail.example.com"),
            ("http://127.0.0.1:8080/t", "http://127.0.0.1:8080/t"),
            ("https://[2001:db8::1]:8443", "https://[2001:db8::1]:8443"),
            (" https://x.example ", "https://x.example"),
        ] {
            assert_eq!(BaseUrl::parse(input).unwrap().as_str(), want, "{input:?}");
        }
        for bad in [
            "",
            "mail.example.com",
            "https://",
            "https:///path",
            "ftp://x.example",
            "javascript:alert(1)",
            "https://x.example/\"onerror",
            "https://x.example/a b",
            "https://x.example/p?a=1",
            "https://x.example/#f",
            "https://x.example/<",
            "https://x.example\nHeader: x",
            "https://x.example/'",
        ] {
            assert!(BaseUrl::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let long = format!("https://x.example/{}", "a".repeat(300));
        assert_eq!(BaseUrl::parse(&long), Err(TrackingError::BaseUrlTooLong));
    }

    #[test]
    fn pixel_urls() {
        let base = BaseUrl::parse("https://mail.example.com/").unwrap();
        let id = TrackingId::parse("TrackingIdForTestsAAAA").unwrap();
        let url = pixel_url(&base, &id);
        assert_eq!(
            url.as_str(),
            "https://mail.example.com/pixel?id=TrackingIdForTestsAAAA"
        );
        assert_eq!(
            url.img_tag(),
            "<img src=\"https://mail.example.com/pixel?id=TrackingIdForTestsAAAA\" width=\"1\" height=\"1\" alt=\"\" style=\"display:none;border:0;width:1px;height:1px\">"
        );
    }
}
