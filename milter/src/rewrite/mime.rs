//! Finds the HTML part to rewrite and the exact byte range of its body.
//!
//! It reads a MIME tree as mail-parser represents it: the one [`super::structure`] builds without
//! decoding bodies, or in the tests mail-parser's own full parse, which must give the same answer.
//! The offsets are re-checked against the raw bytes before we trust them for a splice: the range
//! must start on a fresh line and end right before the line break of its parent's boundary, no
//! enclosing boundary may occur inside it, and every enclosing multipart must be closed. A
//! message that fails any check is left alone.

use std::ops::Range;

use encoding_rs::Encoding;
use lol_html::AsciiCompatibleEncoding;
use mail_parser::{HeaderName, Message, MessagePart, MimeHeaders, PartType};

use super::encoding::Cte;
use super::{InjectError, Skip};

/// RFC 2046 caps boundaries at 70 characters; allow some slack, but not unbounded work.
pub(super) const MAX_BOUNDARY: usize = 200;

/// Real mail nests multiparts a handful of levels deep. Each level costs a scan of the part body,
/// so the depth is bounded.
const MAX_DEPTH: usize = 32;

/// What [`locate`] found.
pub(super) enum Located<'m> {
    Part(Target<'m>),
    Skip(Skip),
}

/// The part to rewrite.
pub(super) struct Target<'m> {
    /// The body bytes of the part in the raw message, without the line break before the next
    /// boundary (RFC 2046 makes that line break part of the boundary delimiter).
    pub(super) range: Range<usize>,
    pub(super) cte: Cte,
    pub(super) encoding: AsciiCompatibleEncoding,
    /// Boundaries of the enclosing multiparts, innermost first.
    pub(super) boundaries: Vec<&'m str>,
}

/// Picks the first eligible `text/html` part in depth-first order, or says why there is none.
/// `body_start`, when given, is where the caller knows the top-level body begins.
pub(super) fn locate<'m>(
    msg: &'m Message<'_>,
    raw: &[u8],
    body_start: Option<usize>,
) -> Result<Located<'m>, InjectError> {
    let root = msg
        .parts
        .first()
        .ok_or_else(|| malformed("no MIME structure"))?;
    let root_body = root.offset_body as usize;
    if body_start.is_some_and(|start| start != root_body) {
        return Err(malformed("the header block does not end where it should"));
    }
    if root
        .headers
        .iter()
        .any(|h| h.name == HeaderName::DkimSignature)
    {
        return Ok(Located::Skip(Skip::HasDkimSignature));
    }
    if has_signed_part(msg) {
        return Ok(Located::Skip(Skip::Signed));
    }

    let mut parent: Vec<Option<usize>> = vec![None; msg.parts.len()];
    let mut stack = vec![0];
    let mut skipped = None;
    while let Some(id) = stack.pop() {
        let part = msg
            .parts
            .get(id)
            .ok_or_else(|| malformed("dangling part id"))?;
        if is_attachment(part) {
            continue;
        }
        let (ctype, subtype) = content_type(part);
        match &part.body {
            PartType::Multipart(children) => {
                for &child in children.iter().rev() {
                    let child = child as usize;
                    // Children are parsed after their parent: anything else would loop.
                    let slot = parent
                        .get_mut(child)
                        .filter(|_| child > id)
                        .ok_or_else(|| malformed("inconsistent part tree"))?;
                    *slot = Some(id);
                    stack.push(child);
                }
            }
            PartType::Message(_) => {}
            _ if ctype.eq_ignore_ascii_case("multipart") => {
                return Err(malformed("multipart without a usable boundary"));
            }
            _ if ctype.eq_ignore_ascii_case("text") && subtype.eq_ignore_ascii_case("html") => {
                match eligible(part) {
                    Ok((cte, encoding)) => {
                        let target = Target {
                            range: part.offset_body as usize..part.offset_end as usize,
                            cte,
                            encoding,
                            boundaries: boundaries(msg, &parent, id)?,
                        };
                        check_range(raw, &target, root_body)?;
                        return Ok(Located::Part(target));
                    }
                    Err(skip) => {
                        skipped.get_or_insert(skip);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(Located::Skip(skipped.unwrap_or(Skip::NoHtmlPart)))
}

/// Checks that the bytes written at `new` in the new part body `body` cannot be mistaken for a
/// boundary delimiter by any parser. The rest of the body is the original's, which [`locate`]
/// checked, so only delimiters overlapping `new` are looked for.
pub(super) fn check_new_bytes(
    target: &Target<'_>,
    body: &[u8],
    new: Range<usize>,
) -> Result<(), InjectError> {
    let found = target.boundaries.iter().any(|b| {
        let delimiter = delimiter(b);
        let start = new.start.saturating_sub(delimiter.len());
        let end = (new.end + delimiter.len()).min(body.len());
        body.get(start..end)
            .is_some_and(|window| find(window, &delimiter).is_some())
    });
    if found {
        return Err(malformed("the rewritten part would contain a boundary"));
    }
    Ok(())
}

fn check_range(raw: &[u8], target: &Target<'_>, root_body: usize) -> Result<(), InjectError> {
    let Range { start, end } = target.range;
    let body = raw
        .get(start..end)
        .filter(|_| start >= root_body)
        .ok_or_else(|| malformed("part offsets outside the message"))?;
    if start > 0 && raw.get(start - 1) != Some(&b'\n') {
        return Err(malformed("part body does not start on a new line"));
    }
    let after = raw.get(end..).unwrap_or_default();
    let Some(parent_boundary) = target.boundaries.first() else {
        return if after.is_empty() {
            Ok(())
        } else {
            Err(malformed("single-part body does not end with the message"))
        };
    };
    let next_line = after
        .strip_prefix(b"\r\n")
        .or_else(|| after.strip_prefix(b"\n"))
        .ok_or_else(|| malformed("part body is not followed by a line break"))?;
    if !next_line.starts_with(&delimiter(parent_boundary)) {
        return Err(malformed("part body is not followed by its boundary"));
    }
    // Innermost first, so each multipart's closing delimiter follows the previous one.
    let mut rest = after;
    for boundary in &target.boundaries {
        if boundary.len() > MAX_BOUNDARY {
            return Err(malformed("boundary too long"));
        }
        if find(body, &delimiter(boundary)).is_some() {
            return Err(malformed("boundary inside the part body"));
        }
        let close = [b"\n--", boundary.as_bytes(), b"--"].concat();
        let at = find(rest, &close).ok_or_else(|| malformed("unterminated multipart"))?;
        rest = rest.get(at + close.len()..).unwrap_or_default();
    }
    Ok(())
}

/// The boundaries of the multiparts around part `id`, innermost first.
fn boundaries<'m>(
    msg: &'m Message<'_>,
    parent: &[Option<usize>],
    id: usize,
) -> Result<Vec<&'m str>, InjectError> {
    let mut boundaries = Vec::new();
    let mut up = parent.get(id).copied().flatten();
    while let Some(p) = up {
        let boundary = msg
            .parts
            .get(p)
            .and_then(|p| p.content_type()?.attribute("boundary"))
            .ok_or_else(|| malformed("multipart without a boundary"))?;
        boundaries.push(boundary);
        if boundaries.len() > MAX_DEPTH {
            return Err(malformed("multiparts nested too deep"));
        }
        up = parent.get(p).copied().flatten();
    }
    Ok(boundaries)
}

/// Whether the part may be rewritten: transfer encoding and charset we can round-trip.
fn eligible(part: &MessagePart<'_>) -> Result<(Cte, AsciiCompatibleEncoding), Skip> {
    let cte_value = part.content_transfer_encoding();
    let cte = Cte::from_header(cte_value).ok_or_else(|| {
        Skip::UnsupportedTransferEncoding(cte_value.unwrap_or_default().to_owned())
    })?;
    let charset = part.content_type().and_then(|ct| ct.attribute("charset"));
    let encoding = match charset {
        // RFC 2045 says us-ascii; UTF-8 parses ASCII identically and tolerates 8-bit bytes.
        None => AsciiCompatibleEncoding::utf_8(),
        // UTF-16/32, UTF-7, ISO-2022-* and unknown labels end here: lol_html could misparse them.
        Some(label) => Encoding::for_label_no_replacement(label.trim().as_bytes())
            .and_then(AsciiCompatibleEncoding::new)
            .ok_or_else(|| Skip::UnsupportedCharset(label.to_owned()))?,
    };
    Ok((cte, encoding))
}

fn content_type<'m>(part: &'m MessagePart<'_>) -> (&'m str, &'m str) {
    part.content_type().map_or(("text", "plain"), |ct| {
        (ct.ctype(), ct.subtype().unwrap_or_default())
    })
}

fn is_attachment(part: &MessagePart<'_>) -> bool {
    part.content_disposition()
        .is_some_and(|d| d.is_attachment())
}

/// Any signed or encrypted part, attached messages included. Those would stay byte-identical,
/// but "never near a signature" is the simpler rule to trust.
fn has_signed_part(msg: &Message<'_>) -> bool {
    let mut messages = vec![msg];
    while let Some(msg) = messages.pop() {
        for part in &msg.parts {
            if is_signed_or_encrypted(part) {
                return true;
            }
            if let PartType::Message(inner) = &part.body {
                messages.push(inner);
            }
        }
    }
    false
}

fn is_signed_or_encrypted(part: &MessagePart<'_>) -> bool {
    let (ctype, subtype) = content_type(part);
    let is = |t: &str, s: &str| ctype.eq_ignore_ascii_case(t) && subtype.eq_ignore_ascii_case(s);
    is("multipart", "signed")
        || is("multipart", "encrypted")
        || is("application", "pkcs7-mime")
        || is("application", "x-pkcs7-mime")
}

fn delimiter(boundary: &str) -> Vec<u8> {
    [b"--", boundary.as_bytes()].concat()
}

fn malformed(why: &str) -> InjectError {
    InjectError::Malformed(why.to_owned())
}

/// The first occurrence of `needle` in `haystack`: memchr's SIMD substring search, linear in the
/// worst case (a hostile message full of near-matches cannot make it quadratic; tested below).
pub(super) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_matches_naive_search() {
        for (hay, needle) in [
            ("", "--b"),
            ("--b", "--b"),
            ("x---b", "--b"),
            ("aaaaab", "aab"),
            ("abababc", "ababc"),
            ("abc", "abcd"),
            ("--=_b1--=_b", "--=_b2"),
        ] {
            let naive = hay
                .as_bytes()
                .windows(needle.len())
                .position(|w| w == needle.as_bytes());
            assert_eq!(
                find(hay.as_bytes(), needle.as_bytes()),
                naive,
                "{hay:?} {needle:?}"
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 1024, failure_persistence: None, ..Default::default() })]
        /// Small alphabets make near-matches common.
        #[test]
        fn find_matches_naive_search_on_anything(
            hay in proptest::collection::vec(proptest::sample::select(b"-ab".to_vec()), 0..300),
            needle in proptest::collection::vec(proptest::sample::select(b"-ab".to_vec()), 1..12),
        ) {
            let naive = hay.windows(needle.len()).position(|w| w == needle.as_slice());
            proptest::prop_assert_eq!(find(&hay, &needle), naive);
        }
    }

    #[test]
    fn find_stays_linear_on_near_matches() {
        let hay = vec![b'-'; 4 << 20];
        let needle = [&b"-".repeat(150)[..], b"x-"].concat();
        let t = std::time::Instant::now();
        assert_eq!(find(&hay, &needle), None);
        // Quadratic would be ~600M compares; linear is a few ms even unoptimised.
        assert!(
            t.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            t.elapsed()
        );
    }
}
