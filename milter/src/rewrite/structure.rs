//! The MIME tree of a message, without decoding any body.
//!
//! mail-parser's `parse` decodes every body while it parses (quoted-printable, base64, charsets)
//! and looks for boundaries a byte at a time: on an 18 MB quoted-printable newsletter that was
//! 65 ms of the rewrite's 161, to produce text the rewrite then threw away. The rewrite needs the
//! tree, the headers and the offsets of one part, so this module builds just that, as a
//! [`mail_parser::Message`] whose parts carry their headers and offsets and an empty body
//! (`Multipart` and `Message` parts carry their children), which [`super::mime::locate`] reads
//! exactly as it reads a full parse.
//!
//! Header blocks are still parsed by mail-parser (`parse_headers`), so Content-Type, its
//! parameters, folding and encoded words mean what they meant before. Only the boundary walk is
//! ours, and it is stricter than mail-parser's, which accepts a delimiter anywhere in a line:
//! here a delimiter must start a line and be followed by blanks or `--` only, every multipart must
//! be closed, and a header block must end in an empty line. A message that fails any of that is
//! [`InjectError::Malformed`] and is left alone. The tests run mail-parser's full parse beside
//! this one on every fixture and on generated messages, and both must pick the same part.

use std::borrow::Cow;
use std::ops::Range;

use mail_parser::{Encoding, Header, Message, MessageParser, MessagePart, MimeHeaders, PartType};

use super::InjectError;
use super::encoding::Cte;
use super::mime::{MAX_BOUNDARY, find};

/// Multiparts and attached messages nest at most this deep ([`super::mime`] allows 32
/// multiparts around the part it rewrites).
const MAX_DEPTH: usize = 64;

/// Parts in one message, all levels together: each costs a header parse.
const MAX_PARTS: usize = 10_000;

/// The tree of `raw`. `body_start`, when given, is where the caller knows the top-level body
/// begins (the milter gets the header block and the body separately).
pub(super) fn parse(raw: &[u8], body_start: Option<usize>) -> Result<Message<'_>, InjectError> {
    let mut walker = Walker {
        raw,
        parser: MessageParser::default(),
        parts: 0,
    };
    let mut parts = Vec::new();
    walker.part(0..raw.len(), body_start, false, 0, &mut parts)?;
    Ok(Message {
        parts,
        raw_message: Cow::Borrowed(raw),
        ..Message::default()
    })
}

struct Walker<'x> {
    raw: &'x [u8],
    parser: MessageParser,
    /// Parts seen so far, in every message.
    parts: usize,
}

impl<'x> Walker<'x> {
    /// Adds the part spanning `range` (headers and body) and its descendants to `parts`, parent
    /// first, as mail-parser numbers them; returns its id.
    fn part(
        &mut self,
        range: Range<usize>,
        body_start: Option<usize>,
        in_digest: bool,
        depth: usize,
        parts: &mut Vec<MessagePart<'x>>,
    ) -> Result<u32, InjectError> {
        self.parts += 1;
        if depth > MAX_DEPTH || self.parts > MAX_PARTS {
            return Err(malformed("too many or too deeply nested parts"));
        }
        let raw = self.raw;
        let block = raw.get(range.clone()).ok_or_else(outside)?;
        let header_len = header_block_len(block)?;
        // The caller's header block must end where its first empty line says it does.
        if body_start.is_some_and(|start| start.checked_sub(range.start) != Some(header_len)) {
            return Err(malformed("the header block does not end where it should"));
        }
        let body = range.start + header_len..range.end;
        let headers = self.headers(block.get(..header_len).ok_or_else(outside)?);
        let id = parts.len();
        parts.push(MessagePart {
            headers,
            is_encoding_problem: false,
            body: PartType::Text(Cow::Borrowed("")),
            encoding: Encoding::None,
            offset_header: offset(range.start)?,
            offset_body: offset(body.start)?,
            offset_end: offset(body.end)?,
        });
        let part = parts.last().ok_or_else(outside)?;
        // RFC 2046 5.2.1: an attached message is 7bit, 8bit or binary. mail-parser would decode
        // an encoded one first; we leave such a message alone.
        let message = || Kind::Message {
            encoded: Cte::from_header(part.content_transfer_encoding()) != Some(Cte::Identity),
        };
        let kind = match part.content_type() {
            Some(ct) if ct.ctype().eq_ignore_ascii_case("multipart") => {
                match ct.attribute("boundary").filter(|b| !b.is_empty()) {
                    Some(boundary) => Kind::Multipart {
                        boundary: boundary.to_owned(),
                        digest: ct
                            .subtype()
                            .is_some_and(|s| s.eq_ignore_ascii_case("digest")),
                    },
                    None => Kind::Leaf,
                }
            }
            Some(ct)
                if ct.ctype().eq_ignore_ascii_case("message")
                    && ct.subtype().is_some_and(|s| {
                        s.eq_ignore_ascii_case("rfc822") || s.eq_ignore_ascii_case("global")
                    }) =>
            {
                message()
            }
            None if in_digest => message(),
            _ => Kind::Leaf,
        };
        let body_type = match kind {
            Kind::Leaf => return Ok(id as u32),
            Kind::Multipart { boundary, digest } => {
                match self.multipart(body, &boundary, digest, depth, parts)? {
                    Some(children) => PartType::Multipart(children),
                    // mail-parser too reads a multipart without any delimiter as a leaf.
                    None => return Ok(id as u32),
                }
            }
            Kind::Message { encoded: true } => {
                return Err(malformed("encoded message/rfc822 part"));
            }
            Kind::Message { encoded: false } => {
                let mut inner = Vec::new();
                self.part(body, None, false, depth + 1, &mut inner)?;
                PartType::Message(Message {
                    parts: inner,
                    ..Message::default()
                })
            }
        };
        let slot = parts.get_mut(id).ok_or_else(outside)?;
        slot.body = body_type;
        Ok(id as u32)
    }

    /// Walks the parts of a multipart body; `None` when it has no delimiter at all.
    fn multipart(
        &mut self,
        body: Range<usize>,
        boundary: &str,
        digest: bool,
        depth: usize,
        parts: &mut Vec<MessagePart<'x>>,
    ) -> Result<Option<Vec<u32>>, InjectError> {
        if boundary.len() > MAX_BOUNDARY {
            return Err(malformed("boundary too long"));
        }
        let raw = self.raw;
        let delimiter = [b"--", boundary.as_bytes()].concat();
        let within = |from: usize| raw.get(from..body.end).ok_or_else(outside);
        let Some(first) = find(within(body.start)?, &delimiter) else {
            return Ok(None);
        };
        let mut at = body.start + first;
        let mut children = Vec::new();
        loop {
            if at > 0 && raw.get(at - 1) != Some(&b'\n') {
                return Err(malformed("boundary delimiter inside a line"));
            }
            let after = within(at + delimiter.len())?;
            if after.starts_with(b"--") {
                return Ok(Some(children));
            }
            // The rest of the delimiter line may only be transport padding.
            let line_len = after
                .iter()
                .position(|&b| b == b'\n')
                .ok_or_else(|| malformed("unterminated multipart"))?;
            let padding = after.get(..line_len).unwrap_or_default();
            if !padding.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r')) {
                return Err(malformed("text after a boundary delimiter"));
            }
            let start = at + delimiter.len() + line_len + 1;
            let next = find(within(start)?, &delimiter)
                .ok_or_else(|| malformed("unterminated multipart"))?
                + start;
            // The line break before the next delimiter belongs to the delimiter (RFC 2046).
            let end = if next == start {
                start
            } else if raw.get(next - 1) != Some(&b'\n') {
                return Err(malformed("boundary delimiter inside a line"));
            } else if next - 1 > start && raw.get(next - 2) == Some(&b'\r') {
                next - 2
            } else {
                next - 1
            };
            children.push(self.part(start..end, None, digest, depth + 1, parts)?);
            at = next;
        }
    }

    /// mail-parser's reading of one header block (which ends with its empty line).
    fn headers(&self, block: &'x [u8]) -> Vec<Header<'x>> {
        self.parser
            .parse_headers(block)
            .and_then(|msg| msg.parts.into_iter().next())
            .map(|part| part.headers)
            .unwrap_or_default()
    }
}

enum Kind {
    Leaf,
    Multipart { boundary: String, digest: bool },
    Message { encoded: bool },
}

/// The length of the header block at the start of `part`, its empty line included; the whole
/// part when it has no empty line (a part that is all headers). A line of blanks only is
/// refused: mail-parser ends the block there, RFC 5322 would read a folded line.
fn header_block_len(part: &[u8]) -> Result<usize, InjectError> {
    let mut at = 0;
    while let Some(rest) = part.get(at..).filter(|r| !r.is_empty()) {
        let line_len = rest.iter().position(|&b| b == b'\n').map(|i| i + 1);
        let line = rest
            .get(..line_len.unwrap_or(rest.len()))
            .unwrap_or_default();
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        if content.is_empty() && line_len.is_some() {
            return Ok(at + line.len());
        }
        if content.iter().all(u8::is_ascii_whitespace) {
            return Err(malformed("a header line of blanks only"));
        }
        at += line.len();
    }
    Ok(part.len())
}

fn offset(at: usize) -> Result<u32, InjectError> {
    u32::try_from(at).map_err(|_| InjectError::TooLarge)
}

fn outside() -> InjectError {
    malformed("part offsets outside the message")
}

fn malformed(why: &str) -> InjectError {
    InjectError::Malformed(why.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn multipart(body: &str) -> Vec<u8> {
        format!("Subject: t\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n{body}")
            .into_bytes()
    }

    #[track_caller]
    fn refused(raw: &[u8], why: &str) {
        match parse(raw, None) {
            Err(InjectError::Malformed(got)) => assert!(got.contains(why), "{got:?}, want {why:?}"),
            other => panic!(
                "want Malformed({why:?}), got {:?}",
                other.map(|m| m.parts.len())
            ),
        }
    }

    #[test]
    fn parts_and_offsets() {
        let raw = multipart(
            "preamble\r\n--b1 \t\r\nContent-Type: text/html\r\n\r\n<p>x</p>\r\n--b1\r\n\r\nplain\r\n--b1--\r\nepilogue",
        );
        let msg = parse(&raw, None).unwrap();
        assert_eq!(msg.parts.len(), 3);
        assert!(matches!(&msg.parts[0].body, PartType::Multipart(c) if c == &[1, 2]));
        let body = |i: usize| {
            let p = &msg.parts[i];
            std::str::from_utf8(&raw[p.offset_body as usize..p.offset_end as usize]).unwrap()
        };
        // The line break before a delimiter belongs to the delimiter.
        assert_eq!(body(1), "<p>x</p>");
        assert_eq!(body(2), "plain");
        assert_eq!(msg.parts[1].content_type().unwrap().subtype(), Some("html"));
        // A part without headers starts with its empty line.
        assert!(msg.parts[2].headers.is_empty());
    }

    #[test]
    fn ambiguous_delimiters_are_refused() {
        refused(
            &multipart("--b1\r\n\r\nx --b1\r\n--b1--\r\n"),
            "inside a line",
        );
        // `--b10` is not b1's delimiter by RFC 2046, but mail-parser would take it for one.
        refused(
            &multipart("--b1\r\n\r\nx\r\n--b10\r\n--b1--\r\n"),
            "text after",
        );
        refused(&multipart("--b1\r\n\r\nx\r\n"), "unterminated");
        refused(
            b"Subject: x\r\n \r\nContent-Type: text/html\r\n\r\n<p>",
            "blanks only",
        );
        refused(
            &multipart(
                "--b1\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\nU3ViamVjdDogeA==\r\n--b1--\r\n",
            ),
            "encoded message/rfc822",
        );
    }

    #[test]
    fn a_multipart_without_delimiters_is_a_leaf() {
        let raw = multipart("no delimiter at all\r\n");
        let msg = parse(&raw, None).unwrap();
        assert_eq!(msg.parts.len(), 1);
        assert!(matches!(msg.parts[0].body, PartType::Text(_)));
    }

    #[test]
    fn digest_parts_default_to_messages() {
        let raw = b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nSubject: inner\r\n\r\nhi\r\n--d--\r\n";
        let msg = parse(raw, None).unwrap();
        let PartType::Message(inner) = &msg.parts[1].body else {
            panic!("{:?}", msg.parts[1].body);
        };
        assert_eq!(inner.parts[0].headers.len(), 1);
    }

    #[test]
    fn the_callers_header_block_must_end_at_its_empty_line() {
        let raw = b"Subject: x\r\n\r\nContent-Type: text/html\r\n\r\n<p>";
        assert!(parse(raw, Some(14)).is_ok());
        assert!(matches!(
            parse(raw, Some(41)),
            Err(InjectError::Malformed(_))
        ));
    }
}
