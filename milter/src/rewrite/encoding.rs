//! Content-Transfer-Encodings: decode a part body, and encode it again the same way.
//!
//! Decoding is lenient where RFC 2045 asks receivers to be (QP trailing whitespace, lower-case hex,
//! base64 line breaks and missing padding); the caller then compares the result with what
//! mail-parser decoded, so a disagreement leaves the message alone instead of guessing.
//! Encoding always produces legal lines: QP at most 76 characters with soft breaks, base64 in
//! lines of 76, both with the line ending the part already used.

use std::borrow::Cow;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose::STANDARD};

use super::InjectError;

/// Base64 line length (RFC 2045 section 6.8 allows at most 76).
const BASE64_LINE: usize = 76;

/// Accepts what real mailers send: padding optional, non-zero trailing bits tolerated.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// A line ending. Postfix hands milters CRLF; `.eml` files on disk often use LF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Eol {
    Crlf,
    Lf,
}

impl Eol {
    /// The ending of the first line in `bytes`, if there is a line break at all.
    pub(super) fn detect(bytes: &[u8]) -> Option<Eol> {
        let lf = bytes.iter().position(|&b| b == b'\n')?;
        Some(if lf > 0 && bytes.get(lf - 1) == Some(&b'\r') {
            Eol::Crlf
        } else {
            Eol::Lf
        })
    }

    pub(super) fn as_str(self) -> &'static str {
        match self {
            Eol::Crlf => "\r\n",
            Eol::Lf => "\n",
        }
    }
}

/// The transfer encodings we can round-trip. 7bit, 8bit and binary need no transformation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cte {
    Identity,
    QuotedPrintable,
    Base64,
}

impl Cte {
    /// Maps a Content-Transfer-Encoding value; `None` for encodings we do not handle.
    pub(super) fn from_header(value: Option<&str>) -> Option<Cte> {
        let Some(value) = value else {
            return Some(Cte::Identity); // RFC 2045: 7bit
        };
        match value.trim().to_ascii_lowercase().as_str() {
            "7bit" | "8bit" | "binary" => Some(Cte::Identity),
            "quoted-printable" => Some(Cte::QuotedPrintable),
            "base64" => Some(Cte::Base64),
            _ => None,
        }
    }

    /// Decodes a part body. QP hard line breaks come out as CRLF, the canonical form of text.
    pub(super) fn decode(self, encoded: &[u8]) -> Result<Cow<'_, [u8]>, InjectError> {
        match self {
            Cte::Identity => Ok(Cow::Borrowed(encoded)),
            Cte::QuotedPrintable => Ok(Cow::Owned(decode_qp(encoded))),
            Cte::Base64 => {
                let compact: Vec<u8> = encoded
                    .iter()
                    .copied()
                    .filter(|b| !matches!(b, b'\r' | b'\n' | b' ' | b'\t'))
                    .collect();
                LENIENT_BASE64
                    .decode(compact)
                    .map(Cow::Owned)
                    .map_err(|e| InjectError::Encoding(format!("base64: {e}")))
            }
        }
    }

    /// Encodes `decoded` the same way the `original` body was, with line ending `eol`.
    pub(super) fn encode(self, decoded: &[u8], original: &[u8], eol: Eol) -> Vec<u8> {
        match self {
            Cte::Identity => decoded.to_vec(),
            Cte::QuotedPrintable => {
                // The crate treats CRLF as a hard break and writes CRLF everywhere; any other CR
                // or LF comes out as =0D / =0A, so every CRLF in the output is a line break.
                let qp = quoted_printable::encode(decoded);
                match eol {
                    Eol::Crlf => qp,
                    Eol::Lf => crlf_to_lf(&qp),
                }
            }
            Cte::Base64 => {
                let text = STANDARD.encode(decoded);
                let mut out = Vec::with_capacity(text.len() + text.len() / BASE64_LINE * 2 + 8);
                for (i, line) in text.as_bytes().chunks(BASE64_LINE).enumerate() {
                    if i > 0 {
                        out.extend_from_slice(eol.as_str().as_bytes());
                    }
                    out.extend_from_slice(line);
                }
                // Keep whatever line breaks closed the original body (e.g. the final CRLF of a
                // single-part message), so the bytes around the part stay as they were.
                out.extend_from_slice(trailing_space(original));
                out
            }
        }
    }
}

/// RFC 2045 section 6.7 quoted-printable decoding, robust as its note (3) suggests: an `=` that does
/// not start a valid escape is kept as it is, and so are bytes that should have been escaped.
fn decode_qp(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut lines = input.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let is_last = lines.peek().is_none();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        // Trailing blanks were added in transport and must be dropped (rule 3).
        let end = line
            .iter()
            .rposition(|&b| b != b' ' && b != b'\t')
            .map_or(0, |i| i + 1);
        let line = line.get(..end).unwrap_or_default();
        let (line, soft_break) = match line.strip_suffix(b"=") {
            Some(rest) => (rest, true),
            None => (line, false),
        };
        let mut i = 0;
        while let Some(&b) = line.get(i) {
            let escaped = (b == b'=')
                .then(|| Some((hex(*line.get(i + 1)?)? << 4) | hex(*line.get(i + 2)?)?))
                .flatten();
            match escaped {
                Some(byte) => {
                    out.push(byte);
                    i += 3;
                }
                None => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        if !soft_break && !is_last {
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

fn crlf_to_lf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'\r' && tail.first() == Some(&b'\n') {
            out.push(b'\n');
            rest = tail.get(1..).unwrap_or_default();
        } else {
            out.push(b);
            rest = tail;
        }
    }
    out
}

/// The run of line breaks and blanks at the end of `bytes`.
fn trailing_space(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .rposition(|b| !matches!(b, b'\r' | b'\n' | b' ' | b'\t'))
        .map_or(0, |i| i + 1);
    bytes.get(start..).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_qp(encoded: &str, want: &str) {
        let got = Cte::QuotedPrintable.decode(encoded.as_bytes()).unwrap();
        assert_eq!(String::from_utf8_lossy(&got), want, "decoding {encoded:?}");
    }

    #[test]
    fn qp_decoding() {
        for (encoded, want) in [
            ("a=3Db", "a=b"),
            ("soft=\r\nbreak", "softbreak"),
            ("soft=\nbreak", "softbreak"),
            ("hard\r\nbreak\r\n", "hard\r\nbreak\r\n"),
            ("hard\nbreak", "hard\r\nbreak"),
            ("trailing  \t\r\nblank", "trailing\r\nblank"),
            ("kept=20\r\n", "kept \r\n"),
            ("lower=c3=a9", "lower\u{e9}"),
            ("bad=ZZescape", "bad=ZZescape"),
            ("end=", "end"),
            ("end=4", "end=4"),
            ("", ""),
            ("space before soft = \r\nx", "space before soft x"),
        ] {
            check_qp(encoded, want);
        }
    }

    #[test]
    fn qp_encoding_keeps_line_endings_and_lengths() {
        let long = format!("{}\r\n=end\r\n", "x".repeat(200));
        for eol in [Eol::Crlf, Eol::Lf] {
            let enc = Cte::QuotedPrintable.encode(long.as_bytes(), b"", eol);
            let text = String::from_utf8(enc.clone()).unwrap();
            assert!(
                text.lines().all(|l| l.trim_end_matches('\r').len() <= 76),
                "{text}"
            );
            assert_eq!(text.contains('\r'), eol == Eol::Crlf, "{text:?}");
            let back = Cte::QuotedPrintable.decode(&enc).unwrap();
            assert_eq!(back.as_ref(), long.as_bytes());
        }
    }

    #[test]
    fn base64_round_trip_keeps_trailing_break() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let original = b"AAAA\r\n";
        let enc = Cte::Base64.encode(&data, original, Eol::Crlf);
        let text = String::from_utf8(enc.clone()).unwrap();
        assert!(text.ends_with("\r\n") && !text.ends_with("\r\n\r\n"));
        assert!(text.split("\r\n").all(|l| l.len() <= 76));
        assert_eq!(text.split("\r\n").next().map(str::len), Some(76));
        assert_eq!(Cte::Base64.decode(&enc).unwrap().as_ref(), &data[..]);
        let lf = Cte::Base64.encode(&data, b"AAAA", Eol::Lf);
        assert!(!lf.contains(&b'\r') && !lf.ends_with(b"\n"));
    }

    #[test]
    fn base64_is_lenient_but_not_blind() {
        assert_eq!(Cte::Base64.decode(b"aGk\r\n").unwrap().as_ref(), b"hi");
        assert_eq!(Cte::Base64.decode(b"aG\r\n k=").unwrap().as_ref(), b"hi");
        assert!(Cte::Base64.decode(b"a*Gk=").is_err());
    }

    #[test]
    fn transfer_encoding_names() {
        for (value, want) in [
            (None, Some(Cte::Identity)),
            (Some(" 7BIT "), Some(Cte::Identity)),
            (Some("8bit"), Some(Cte::Identity)),
            (Some("binary"), Some(Cte::Identity)),
            (Some("Quoted-Printable"), Some(Cte::QuotedPrintable)),
            (Some("base64"), Some(Cte::Base64)),
            (Some("x-uuencode"), None),
        ] {
            assert_eq!(Cte::from_header(value), want, "{value:?}");
        }
    }

    #[test]
    fn eol_detection() {
        assert_eq!(Eol::detect(b"a\r\nb\n"), Some(Eol::Crlf));
        assert_eq!(Eol::detect(b"a\nb\r\n"), Some(Eol::Lf));
        assert_eq!(Eol::detect(b"\n"), Some(Eol::Lf));
        assert_eq!(Eol::detect(b"abc"), None);
    }
}
