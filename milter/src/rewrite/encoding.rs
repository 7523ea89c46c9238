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

/// The bytes that make one full base64 line.
const BASE64_INPUT_LINE: usize = BASE64_LINE / 4 * 3;

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
            Cte::Base64 => LENIENT_BASE64
                .decode(without_blanks(encoded))
                .map(Cow::Owned)
                .map_err(|e| InjectError::Encoding(format!("base64: {e}"))),
        }
    }

    /// Encodes `decoded` the same way the `original` body was, with line ending `eol`.
    #[cfg(test)]
    pub(super) fn encode(self, decoded: &[u8], original: &[u8], eol: Eol) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(decoded, original, eol, &mut out);
        out
    }

    /// [`Cte::encode`], appending to `out` (the new message, so nothing is copied twice).
    pub(super) fn encode_into(self, decoded: &[u8], original: &[u8], eol: Eol, out: &mut Vec<u8>) {
        match self {
            Cte::Identity => out.extend_from_slice(decoded),
            Cte::QuotedPrintable => encode_qp(decoded, eol, out),
            Cte::Base64 => {
                let eol = eol.as_str().as_bytes();
                let lines = decoded.len().div_ceil(BASE64_INPUT_LINE);
                out.reserve(lines * (BASE64_LINE + eol.len()) + original.len().min(8));
                // Encoded 64 lines at a time (the engine is fastest on long input), then split.
                let mut text = [0u8; BASE64_LINE * 64];
                for (i, block) in decoded.chunks(BASE64_INPUT_LINE * 64).enumerate() {
                    // 76 characters per 57 bytes: the buffer is big enough, this cannot fail.
                    let n = STANDARD.encode_slice(block, &mut text).unwrap_or(0);
                    for (j, line) in text
                        .get(..n)
                        .unwrap_or_default()
                        .chunks(BASE64_LINE)
                        .enumerate()
                    {
                        if i + j > 0 {
                            out.extend_from_slice(eol);
                        }
                        out.extend_from_slice(line);
                    }
                }
                // Keep whatever line breaks closed the original body (e.g. the final CRLF of a
                // single-part message), so the bytes around the part stay as they were.
                out.extend_from_slice(trailing_space(original));
            }
        }
    }
}

/// The base64 text of a body without its line breaks and blanks, copied a line at a time.
fn without_blanks(encoded: &[u8]) -> Vec<u8> {
    let blank = |b: &u8| matches!(b, b'\r' | b'\n' | b' ' | b'\t');
    let mut out = Vec::with_capacity(encoded.len());
    for line in encoded.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        // `fold`, not `any`: no early exit, so the check over a 76-byte line vectorises.
        if line.iter().fold(false, |seen, b| seen | blank(b)) {
            out.extend(line.iter().filter(|b| !blank(b)));
        } else {
            out.extend_from_slice(line);
        }
    }
    out
}

/// QP line length limit, without the line ending (RFC 2045 section 6.7 rule 5).
const QP_LINE: usize = 76;

/// Quoted-printable encoding of text, byte for byte what `quoted_printable::encode` gives
/// (tested), except that its CRLFs are written as `eol`. CRLF in the input is a hard line break;
/// any other CR or LF is escaped, as are `=`, control and 8-bit bytes, and a blank before a
/// line break. Lines get soft breaks to stay within 76 characters.
///
/// The crate's algorithm, kept exactly so output does not change, one byte at a time: plain
/// bytes are copied while at least 3 columns are left; anything else is appended as an item, and
/// an item that arrives on a full line moves the previous item to the next line with it
/// (`backup`).
fn encode_qp(input: &[u8], eol: Eol, out: &mut Vec<u8>) {
    let eol = eol.as_str().as_bytes();
    let start = out.len();
    out.reserve(input.len() + input.len() / 4);
    let mut line = QpLine {
        eol,
        start,
        column: 0,
        backup: start,
    };
    let mut was_cr = false;
    for &byte in input {
        if std::mem::take(&mut was_cr) {
            if byte == b'\n' {
                line.escape_trailing_blank(out);
                out.extend_from_slice(eol);
                line.column = 0;
                continue;
            }
            line.append(out, b"=0D");
        }
        if byte == b'\r' {
            was_cr = true;
        } else if line.column <= QP_LINE - 3 && !qp_escaped(byte) {
            out.push(byte);
            line.column += 1;
            line.backup = out.len();
        } else if byte == b'=' {
            line.append(out, b"=3D");
        } else if qp_escaped(byte) {
            line.append(out, &hex_escape(byte));
        } else {
            line.append(out, &[byte]);
        }
    }
    if was_cr {
        line.append(out, b"=0D");
    } else {
        line.escape_trailing_blank(out);
    }
}

/// Where the QP encoder is on the current output line.
struct QpLine<'e> {
    eol: &'e [u8],
    /// Where the encoded part begins in `out`.
    start: usize,
    column: usize,
    /// Where the last item appended begins in `out`.
    backup: usize,
}

impl QpLine<'_> {
    #[inline(always)]
    fn append(&mut self, out: &mut Vec<u8>, item: &[u8]) {
        if self.column + item.len() > QP_LINE {
            if self.column == QP_LINE {
                // No room for the `=` of a soft break: break before the previous item instead.
                self.column = out.len() - self.backup;
                out.push(b'=');
                out.extend_from_slice(self.eol);
                if let Some(moved) = out.get_mut(self.backup..) {
                    moved.rotate_right(1 + self.eol.len());
                }
            } else {
                out.push(b'=');
                out.extend_from_slice(self.eol);
                self.column = 0;
            }
        }
        out.extend_from_slice(item);
        self.column += item.len();
        self.backup = out.len() - item.len();
    }

    /// A space or tab must not end a line (rule 3): re-append the last one escaped.
    fn escape_trailing_blank(&mut self, out: &mut Vec<u8>) {
        let escaped: &[u8] = match out.get(self.start..).and_then(<[u8]>::last) {
            Some(b' ') => b"=20",
            Some(b'\t') => b"=09",
            _ => return,
        };
        out.pop();
        self.column = self.column.saturating_sub(1);
        self.append(out, escaped);
    }
}

#[inline(always)]
fn qp_escaped(b: u8) -> bool {
    !matches!(b, b'\t' | b' '..=b'<' | b'>'..=b'~')
}

fn hex_escape(b: u8) -> [u8; 3] {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let digit = |n: u8| HEX.get(usize::from(n & 0x0f)).copied().unwrap_or(b'0');
    [b'=', digit(b >> 4), digit(b)]
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
        let (mut line, soft_break) = match line.strip_suffix(b"=") {
            Some(rest) => (rest, true),
            None => (line, false),
        };
        // Copy the runs between `=`s whole.
        while !line.is_empty() {
            let eq = line.iter().position(|&b| b == b'=').unwrap_or(line.len());
            let (plain, rest) = line.split_at(eq);
            out.extend_from_slice(plain);
            let Some(escape) = rest.get(1..3) else {
                out.extend_from_slice(rest);
                break;
            };
            match (
                escape.first().and_then(|&h| hex(h)),
                escape.get(1).and_then(|&l| hex(l)),
            ) {
                (Some(high), Some(low)) => {
                    out.push((high << 4) | low);
                    line = rest.get(3..).unwrap_or_default();
                }
                _ => {
                    out.push(b'=');
                    line = rest.get(1..).unwrap_or_default();
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
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
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

    /// The encoder is the crate's algorithm, rewritten for speed: same bytes, for any input.
    fn check_qp_like_crate(input: &[u8]) {
        let crate_crlf = quoted_printable::encode(input);
        let crate_lf = String::from_utf8(crate_crlf.clone())
            .unwrap()
            .replace("\r\n", "\n");
        assert_eq!(
            Cte::QuotedPrintable.encode(input, b"", Eol::Crlf),
            crate_crlf,
            "{input:?}"
        );
        assert_eq!(
            Cte::QuotedPrintable.encode(input, b"", Eol::Lf),
            crate_lf.as_bytes(),
            "{input:?}"
        );
    }

    #[test]
    fn qp_encoding_matches_the_crate() {
        let mut inputs: Vec<Vec<u8>> = [
            "",
            " ",
            "\t",
            "a ",
            "a\t\r\n",
            "\r",
            "\r\r\n",
            "\n",
            "=",
            "caf\u{e9} \r\n",
            "a \r\nb\t\r\n \r\n",
            "x\r",
            "x \r",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        // Every column where a line fills up, with every kind of item there.
        for n in 70..80 {
            for tail in [
                &b"="[..],
                b" ",
                b"\t",
                b"\xe9",
                b"ab",
                b" \r\n",
                b"\t\r\nx",
                b"\r",
                b"\n",
            ] {
                let mut v = vec![b'x'; n];
                v.extend_from_slice(tail);
                v.extend_from_slice(&v.clone());
                inputs.push(v);
                let mut escaped = b"=".repeat(n / 3);
                escaped.extend_from_slice(tail);
                escaped.extend(std::iter::repeat_n(b' ', n % 5));
                inputs.push(escaped);
            }
        }
        for input in inputs {
            check_qp_like_crate(&input);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 2048, failure_persistence: None, ..Default::default() })]
        #[test]
        fn qp_encoding_matches_the_crate_on_anything(
            input in proptest::collection::vec(proptest::sample::select(
                [&[b'a'; 40][..], b"b =\t\r\n\xe9\x00~"].concat()), 0..600)
        ) {
            check_qp_like_crate(&input);
        }

        #[test]
        fn qp_decoding_matches_the_byte_loop(
            input in proptest::collection::vec(proptest::sample::select(
                b"aF3 =\t\r\nz".to_vec()), 0..200)
        ) {
            proptest::prop_assert_eq!(decode_qp(&input), decode_qp_bytewise(&input));
        }
    }

    /// The decoder as first written, a byte at a time: the reference for the faster one.
    fn decode_qp_bytewise(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut lines = input.split(|&b| b == b'\n').peekable();
        while let Some(line) = lines.next() {
            let is_last = lines.peek().is_none();
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let end = line
                .iter()
                .rposition(|&b| b != b' ' && b != b'\t')
                .map_or(0, |i| i + 1);
            let line = &line[..end];
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

    /// Encoding is done in blocks of 64 lines: the seams must not show.
    #[test]
    fn base64_blocks_match_one_pass_encoding() {
        let block = BASE64_INPUT_LINE * 64;
        for len in [
            0,
            1,
            56,
            57,
            58,
            block - 1,
            block,
            block + 1,
            2 * block + 57,
            3 * block + 2,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let text = STANDARD.encode(&data);
            let want = text
                .as_bytes()
                .chunks(BASE64_LINE)
                .collect::<Vec<_>>()
                .join(&b"\r\n"[..]);
            assert_eq!(Cte::Base64.encode(&data, b"", Eol::Crlf), want, "{len}");
        }
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
