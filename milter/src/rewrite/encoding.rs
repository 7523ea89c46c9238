//! Content-Transfer-Encodings: decode a part body, and encode it again the same way.
//!
//! Decoding is lenient where RFC 2045 asks receivers to be (QP trailing whitespace, lower-case hex,
//! base64 line breaks and missing padding); the caller then compares the result with what
//! mail-parser decoded, so a disagreement leaves the message alone instead of guessing.
//! Encoding always produces legal lines: QP at most 76 characters with soft breaks, base64 in
//! lines of 76, both with the line ending the part already used.

use std::borrow::Cow;
use std::ops::Range;

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
    pub(super) fn decode(self, encoded: &[u8]) -> Result<Decoded<'_>, InjectError> {
        Ok(match self {
            Cte::Identity => Decoded {
                bytes: Cow::Borrowed(encoded),
                cuts: Vec::new(),
            },
            Cte::QuotedPrintable => Decoded {
                bytes: Cow::Owned(decode_qp(encoded)),
                cuts: Vec::new(),
            },
            Cte::Base64 => decode_base64(encoded)?,
        })
    }

    /// Writes `encoded` to `out` with `text` inserted at offset `at` of its decoding, re-encoding
    /// as little as the encoding allows: nothing for 7bit and 8bit, the one encoded line `at`
    /// falls in for quoted-printable (text around it keeps its line breaks), and for base64
    /// everything from the last line start before `at` that begins a 4-character group (the
    /// insertion shifts every group after it). Returns where the new bytes lie in the part as
    /// written (offsets from where it starts in `out`); every byte around them is `encoded`'s.
    pub(super) fn splice_into(
        self,
        encoded: &[u8],
        decoded: &Decoded<'_>,
        at: usize,
        text: &[u8],
        eol: Eol,
        out: &mut Vec<u8>,
    ) -> Result<Range<usize>, InjectError> {
        let base = out.len();
        let cut = |n: usize| {
            encoded
                .split_at_checked(n)
                .ok_or_else(|| InjectError::Encoding("insertion point outside the part".into()))
        };
        match self {
            Cte::Identity => {
                let (head, tail) = cut(at)?;
                out.extend_from_slice(head);
                out.extend_from_slice(text);
                out.extend_from_slice(tail);
                Ok(at..at + text.len())
            }
            Cte::QuotedPrintable => {
                let line = qp_line_at(encoded, decoded.bytes.len(), at)?;
                let (head, _) = cut(line.range.start)?;
                let (_, tail) = cut(line.range.end)?;
                let split = at - line.decoded_start;
                let (before, after) = line
                    .decoded
                    .split_at_checked(split)
                    .ok_or_else(|| InjectError::Encoding("quoted-printable line".into()))?;
                out.extend_from_slice(head);
                let start = out.len();
                encode_qp(&[before, text, after].concat(), eol, out);
                if line.soft_break {
                    soft_break_after(out, start, eol, line.has_line_break);
                }
                let end = out.len();
                out.extend_from_slice(tail);
                Ok(start - base..end - base)
            }
            Cte::Base64 => {
                // The last cut at or before `at`; the first is always (0, 0).
                let i = decoded.cuts.partition_point(|&(_, d)| d <= at);
                let &(enc_cut, dec_cut) = decoded
                    .cuts
                    .get(i.wrapping_sub(1))
                    .ok_or_else(|| InjectError::Encoding("base64 cut points".into()))?;
                let bytes = &decoded.bytes;
                let (Some(before), Some(after)) = (bytes.get(dec_cut..at), bytes.get(at..)) else {
                    return Err(InjectError::Encoding(
                        "insertion point outside the part".into(),
                    ));
                };
                let (head, _) = cut(enc_cut)?;
                out.extend_from_slice(head);
                let start = out.len();
                encode_base64_lines(&[before, text, after].concat(), eol, out);
                // Keep whatever line breaks closed the original body (e.g. the final CRLF of a
                // single-part message), so the bytes around the part stay as they were.
                out.extend_from_slice(trailing_space(encoded));
                Ok(start - base..out.len() - base)
            }
        }
    }

    /// Encodes `decoded` the way a part of this encoding is written from scratch, with line
    /// ending `eol` (the tests' reference encoder).
    #[cfg(test)]
    pub(super) fn encode(self, decoded: &[u8], original: &[u8], eol: Eol) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Cte::Identity => out.extend_from_slice(decoded),
            Cte::QuotedPrintable => encode_qp(decoded, eol, &mut out),
            Cte::Base64 => {
                encode_base64_lines(decoded, eol, &mut out);
                out.extend_from_slice(trailing_space(original));
            }
        }
        out
    }
}

/// A decoded part body.
pub(super) struct Decoded<'a> {
    pub(super) bytes: Cow<'a, [u8]>,
    /// Base64 only: places where the encoded text may be cut and re-encoded from, as (offset in
    /// the encoded text, offset in `bytes`), ascending, starting with (0, 0). Each is a line start
    /// where a 4-character group begins.
    cuts: Vec<(usize, usize)>,
}

impl std::ops::Deref for Decoded<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Base64 text decoded in blocks of about this many characters (at line starts, so each block is
/// a cut point), without copying the whole text to strip its line breaks first.
const BASE64_BLOCK: usize = 64 * BASE64_LINE;

fn decode_base64(encoded: &[u8]) -> Result<Decoded<'static>, InjectError> {
    let blank = |b: &u8| matches!(b, b'\r' | b'\n' | b' ' | b'\t');
    let error = |e: base64::DecodeError| InjectError::Encoding(format!("base64: {e}"));
    // Cuts are only taken before the closing line breaks, which a splice keeps as they are.
    let content_end = encoded.len() - trailing_space(encoded).len();
    let mut bytes = Vec::with_capacity(encoded.len() / 4 * 3 + 3);
    let mut cuts = vec![(0, 0)];
    let mut block = Vec::with_capacity(BASE64_BLOCK + 2 * BASE64_LINE);
    let mut line_start = 0;
    for line_end in memchr::memchr_iter(b'\n', encoded).chain([encoded.len()]) {
        let Some(line) = encoded.get(line_start..line_end) else {
            break;
        };
        if block.len() >= BASE64_BLOCK && block.len() % 4 == 0 && line_start < content_end {
            // Padding may only end the text: a block that ends in it is not followed by more.
            if block.last() == Some(&b'=') {
                return Err(InjectError::Encoding(
                    "base64: padding before the end".into(),
                ));
            }
            LENIENT_BASE64
                .decode_vec(&block, &mut bytes)
                .map_err(error)?;
            block.clear();
            cuts.push((line_start, bytes.len()));
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if memchr::memchr3(b' ', b'\t', b'\r', line).is_some() {
            block.extend(line.iter().filter(|b| !blank(b)));
        } else {
            block.extend_from_slice(line);
        }
        line_start = line_end + 1;
    }
    if !block.is_empty() && cuts.len() > 1 && block.iter().all(|&b| b == b'=') {
        return Err(InjectError::Encoding(
            "base64: padding before the end".into(),
        ));
    }
    LENIENT_BASE64
        .decode_vec(&block, &mut bytes)
        .map_err(error)?;
    Ok(Decoded {
        bytes: Cow::Owned(bytes),
        cuts,
    })
}

/// `decoded` in base64 lines of 76 characters separated by `eol`, without a final line break.
fn encode_base64_lines(decoded: &[u8], eol: Eol, out: &mut Vec<u8>) {
    let eol = eol.as_str().as_bytes();
    let lines = decoded.len().div_ceil(BASE64_INPUT_LINE);
    out.reserve(lines * (BASE64_LINE + eol.len()));
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
/// The decoding of the whole text is the decodings of its lines ([`decode_qp_line`]) one after
/// the other, which is what lets [`qp_line_at`] find a line without decoding everything again.
fn decode_qp(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut start = 0;
    for lf in memchr::memchr_iter(b'\n', input) {
        decode_qp_line(input.get(start..lf).unwrap_or_default(), true, &mut out);
        start = lf + 1;
    }
    decode_qp_line(input.get(start..).unwrap_or_default(), false, &mut out);
    out
}

/// Decodes one line (without its `\n`); `hard_break_after` unless it is the text's last line.
/// Returns whether it ended with a soft line break.
fn decode_qp_line(line: &[u8], hard_break_after: bool, out: &mut Vec<u8>) -> bool {
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
    // Copy the runs between `=`s whole; escapes often come in runs (`=C3=BC`), decoded in a row.
    while let Some(eq) = memchr::memchr(b'=', line) {
        let (plain, mut rest) = line.split_at(eq);
        out.extend_from_slice(plain);
        while let [b'=', high, low, tail @ ..] = rest {
            let (Some(high), Some(low)) = (hex(*high), hex(*low)) else {
                break;
            };
            out.push((high << 4) | low);
            rest = tail;
        }
        line = match rest {
            // Not an escape: the `=` stays as it is.
            [b'=', tail @ ..] => {
                out.push(b'=');
                tail
            }
            _ => rest,
        };
    }
    out.extend_from_slice(line);
    if !soft_break && hard_break_after {
        out.extend_from_slice(b"\r\n");
    }
    soft_break
}

/// Ends quoted-printable text written at `out[start..]` with a soft line break (and `eol` if
/// `line_break`), as the line it replaced did. The encoder fills lines up to 76 characters, so the
/// `=` may need a line of its own: the last item (a character or an `=XX` escape) then moves to
/// a new line with it.
fn soft_break_after(out: &mut Vec<u8>, start: usize, eol: Eol, line_break: bool) {
    let eol = eol.as_str().as_bytes();
    let written = out.get(start..).unwrap_or_default();
    let last_line =
        memchr::memrchr(b'\n', written).map_or(written.len(), |lf| written.len() - lf - 1);
    if last_line + 1 > QP_LINE {
        // An `=` in encoded text always starts an escape.
        let item = if out.len() >= 3 && out.get(out.len() - 3) == Some(&b'=') {
            3
        } else {
            1
        };
        let at = out.len() - item;
        out.splice(at..at, [&b"="[..], eol].concat());
    }
    out.push(b'=');
    if line_break {
        out.extend_from_slice(eol);
    }
}

/// One encoded quoted-printable line, found by [`qp_line_at`].
struct EncodedQpLine {
    /// The line in the encoded text, with its line break if it has one.
    range: Range<usize>,
    has_line_break: bool,
    soft_break: bool,
    /// Its decoding, and where that starts in the decoding of the whole text.
    decoded: Vec<u8>,
    decoded_start: usize,
}

/// The encoded line whose decoding holds offset `at` of the decoded text (`total` bytes long); at
/// a line boundary, the line that starts there. Lines are decoded from the end, where the pixel
/// usually goes, so this costs a few lines, not a second pass.
fn qp_line_at(encoded: &[u8], total: usize, at: usize) -> Result<EncodedQpLine, InjectError> {
    let mismatch = || InjectError::Encoding("quoted-printable line offsets".into());
    let mut after = 0; // decoded bytes after the current line
    let mut end = encoded.len(); // where the current line ends, its line break included
    let mut has_line_break = false;
    let mut decoded = Vec::new();
    loop {
        let content_end = end - usize::from(has_line_break);
        let start = memchr::memrchr(b'\n', encoded.get(..content_end).ok_or_else(mismatch)?)
            .map_or(0, |lf| lf + 1);
        decoded.clear();
        let line = encoded.get(start..content_end).ok_or_else(mismatch)?;
        let soft_break = decode_qp_line(line, has_line_break, &mut decoded);
        let decoded_start = total
            .checked_sub(after + decoded.len())
            .ok_or_else(mismatch)?;
        if decoded_start <= at {
            return Ok(EncodedQpLine {
                range: start..end,
                has_line_break,
                soft_break,
                decoded,
                decoded_start,
            });
        }
        if start == 0 {
            return Err(mismatch());
        }
        after += decoded.len();
        end = start;
        has_line_break = true;
    }
}

/// The value of a hex digit (either case), from a table: no branches in the decoder's inner loop.
fn hex(b: u8) -> Option<u8> {
    const INVALID: u8 = 0xff;
    const TABLE: [u8; 256] = {
        let mut table = [INVALID; 256];
        let mut i = 0;
        while i < 10 {
            table[b'0' as usize + i] = i as u8;
            i += 1;
        }
        let mut i = 0;
        while i < 6 {
            table[b'a' as usize + i] = 10 + i as u8;
            table[b'A' as usize + i] = 10 + i as u8;
            i += 1;
        }
        table
    };
    Some(TABLE[usize::from(b)]).filter(|&v| v != INVALID)
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

    /// Splices `text` at every offset in `at` and checks what a splice promises: the new body
    /// decodes to the old one with `text` inserted, lines are legal, and the encoded bytes before
    /// the re-encoded region are the original's.
    #[track_caller]
    fn check_splices(cte: Cte, encoded: &[u8], text: &[u8], at: impl Iterator<Item = usize>) {
        let decoded = cte.decode(encoded).unwrap();
        for at in at {
            let mut out = b"head".to_vec();
            let new = cte
                .splice_into(encoded, &decoded, at, text, Eol::Crlf, &mut out)
                .unwrap();
            let body = &out[4..];
            let want = [&decoded[..at], text, &decoded[at..]].concat();
            assert_eq!(
                String::from_utf8_lossy(&cte.decode(body).unwrap()),
                String::from_utf8_lossy(&want),
                "{cte:?} at {at}"
            );
            assert_eq!(&body[..new.start], &encoded[..new.start], "{cte:?} at {at}");
            // The lines written; the sender's are kept as they were, legal or not.
            for line in body[new.start..new.end].split(|&b| b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                assert!(
                    line.len() <= 76,
                    "{cte:?} at {at}: {} {}",
                    line.len(),
                    String::from_utf8_lossy(line)
                );
                assert!(!line.contains(&b'\r'));
            }
        }
    }

    #[test]
    fn qp_splices_at_every_offset() {
        let text = "Grüße aus Zürich, a = b, tab\there. ".repeat(12);
        let html = format!("<p>{text}</p>\r\n<p>{text} </p>\r\n\r\n<p>x</p>");
        let encoded = quoted_printable::encode(html.as_bytes());
        let total = Cte::QuotedPrintable.decode(&encoded).unwrap().len();
        check_splices(
            Cte::QuotedPrintable,
            &encoded,
            b"\r\n<img src=\"x\">\r\n",
            0..=total,
        );
        check_splices(
            Cte::QuotedPrintable,
            &encoded,
            "café ".repeat(30).as_bytes(),
            0..=total,
        );
    }

    #[test]
    fn base64_splices_across_blocks() {
        let data: Vec<u8> = (0..3 * BASE64_BLOCK).map(|i| (i * 7 % 251) as u8).collect();
        let text = STANDARD.encode(&data);
        for width in [76, 72, 60, 74, 1000] {
            let mut encoded = text
                .as_bytes()
                .chunks(width)
                .collect::<Vec<_>>()
                .join(&b"\r\n"[..]);
            encoded.extend_from_slice(b"\r\n");
            let total = data.len();
            let block = BASE64_BLOCK / 4 * 3;
            let offsets = [
                0,
                1,
                2,
                3,
                56,
                57,
                58,
                block - 1,
                block,
                block + 1,
                2 * block + 5,
            ];
            let offsets = offsets.into_iter().chain(total - 3..=total);
            check_splices(Cte::Base64, &encoded, b"\r\n<img src=\"x\">\r\n", offsets);
            let decoded = Cte::Base64.decode(&encoded).unwrap();
            assert_eq!(&decoded[..], &data[..], "width {width}");
            if width % 4 == 0 && width <= 76 {
                assert!(decoded.cuts.len() > 2, "width {width}: {:?}", decoded.cuts);
            }
        }
    }

    #[test]
    fn base64_padding_only_at_the_end() {
        let mut encoded = b"QUJD\r\n".repeat(BASE64_BLOCK / 4);
        encoded.extend_from_slice(b"QQ==\r\n");
        let with_more = [&encoded[..], b"QUJD\r\n"].concat();
        assert_eq!(Cte::Base64.decode(&encoded).unwrap().last(), Some(&b'A'));
        assert!(Cte::Base64.decode(&with_more).is_err());
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
