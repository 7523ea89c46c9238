//! The tracking rewrite: adds a 1x1 pixel to the main HTML part of a message.
//!
//! Pure and synchronous: bytes in, bytes out, no I/O, nothing about milters. The milter calls it
//! at end-of-message and passes the message through unchanged on anything but
//! [`Outcome::Rewritten`].
//!
//! The message is never re-serialized. [`structure`] reads the MIME tree without decoding any body,
//! [`mime`] picks the first eligible `text/html` part and the exact byte range of its body,
//! [`encoding`] decodes that body, and [`html`] finds where in it the pixel goes. The pixel line
//! is then spliced into the encoded body, re-encoding only what the insertion changes (one
//! quoted-printable line; base64 from the insertion on). Every other byte stays identical, which
//! is what keeps other parts, attachments and the structure safe.

mod encoding;
mod html;
mod mime;
mod structure;

use std::fmt;

use mail_parser::Message;
pub use mailserver::tracking::PixelUrl;

use self::encoding::{Cte, Eol};
use self::mime::Located;

/// Largest body (or whole message) we rewrite; bigger ones are passed through.
pub const MAX_SIZE: usize = 64 * 1024 * 1024;

/// Largest top-level header block accepted by [`inject_body`] (Postfix's default is 100 kB).
const MAX_HEADERS: usize = 1024 * 1024;

/// Why a message could not be rewritten. The caller passes such messages through unchanged.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("bad transfer encoding: {0}")]
    Encoding(String),
    #[error("HTML rewrite failed: {0}")]
    Html(String),
    #[error("message larger than {} MiB", MAX_SIZE / 1024 / 1024)]
    TooLarge,
}

/// The result of a rewrite that did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The new body ([`inject_body`]) or message ([`inject_message`]).
    Rewritten(Vec<u8>),
    /// Left alone on purpose; the reason is for logging.
    Unchanged(Skip),
}

/// Why a message was left alone on purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// No `text/html` part outside attachments and attached messages.
    NoHtmlPart,
    /// A `multipart/signed`, `multipart/encrypted` or S/MIME part: any change would break it.
    Signed,
    /// Already DKIM-signed upstream: any change would break the signature.
    HasDkimSignature,
    /// The only HTML parts use a charset lol_html cannot parse safely (UTF-16, ISO-2022-JP...).
    UnsupportedCharset(String),
    /// The only HTML parts use a transfer encoding we cannot re-encode (e.g. x-uuencode).
    UnsupportedTransferEncoding(String),
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skip::NoHtmlPart => f.write_str("no HTML part"),
            Skip::Signed => f.write_str("signed or encrypted"),
            Skip::HasDkimSignature => f.write_str("already DKIM-signed"),
            Skip::UnsupportedCharset(c) => write!(f, "unsupported charset {c:?}"),
            Skip::UnsupportedTransferEncoding(e) => {
                write!(f, "unsupported transfer encoding {e:?}")
            }
        }
    }
}

/// Rewrites a message BODY given its top-level header block (raw `Name: value` lines, without the
/// blank separator line; folded continuation lines allowed; LF or CRLF). Returns the new body,
/// with the line ending the body uses.
pub fn inject_body(headers: &[u8], body: &[u8], pixel: &PixelUrl) -> Result<Outcome, InjectError> {
    if body.len() > MAX_SIZE || headers.len() > MAX_HEADERS {
        return Err(InjectError::TooLarge);
    }
    let eol = Eol::detect(body)
        .or_else(|| Eol::detect(headers))
        .unwrap_or(Eol::Crlf)
        .as_str()
        .as_bytes();
    let mut raw = Vec::with_capacity(headers.len() + body.len() + 4);
    raw.extend_from_slice(headers);
    if !headers.is_empty() && !headers.ends_with(b"\n") {
        raw.extend_from_slice(eol);
    }
    raw.extend_from_slice(eol);
    let body_start = raw.len();
    raw.extend_from_slice(body);
    Ok(match rewrite(&raw, Some(body_start), pixel)? {
        Outcome::Rewritten(message) => Outcome::Rewritten(
            message
                .get(body_start..)
                .ok_or_else(|| InjectError::Malformed("rewritten message lost its body".into()))?
                .to_vec(),
        ),
        unchanged => unchanged,
    })
}

/// The same as [`inject_body`] for a whole message (headers, blank line, body); returns the
/// whole new message.
pub fn inject_message(raw: &[u8], pixel: &PixelUrl) -> Result<Outcome, InjectError> {
    if raw.len() > MAX_SIZE {
        return Err(InjectError::TooLarge);
    }
    rewrite(raw, None, pixel)
}

fn rewrite(
    raw: &[u8],
    body_start: Option<usize>,
    pixel: &PixelUrl,
) -> Result<Outcome, InjectError> {
    let tree = parse(raw, body_start)?;
    let target = match mime::locate(&tree, raw, body_start)? {
        Located::Part(target) => target,
        Located::Skip(skip) => return Ok(Outcome::Unchanged(skip)),
    };
    let outside = || InjectError::Malformed("part offsets outside the message".into());
    let (before, rest) = raw
        .split_at_checked(target.range.start)
        .ok_or_else(outside)?;
    let (encoded, after) = rest
        .split_at_checked(target.range.len())
        .ok_or_else(outside)?;

    let decoded = target.cte.decode(encoded)?;
    let part_eol = Eol::detect(encoded)
        .or_else(|| Eol::detect(raw))
        .unwrap_or(Eol::Crlf);
    let html_eol = match target.cte {
        Cte::Identity => part_eol,
        // Decoded QP hard breaks are CRLF; a lone LF would be encoded as =0A, not as a line.
        Cte::QuotedPrintable => Eol::Crlf,
        Cte::Base64 => Eol::detect(&decoded.bytes).unwrap_or(part_eol),
    };
    let tag = pixel.img_tag();
    let insertion = html::insertion(&decoded.bytes, target.encoding, &tag, html_eol)?;
    // One output buffer: the bytes before the part, the new part, the bytes after it.
    let mut out = Vec::with_capacity(raw.len() + 2 * tag.len() + 256);
    out.extend_from_slice(before);
    let new = target.cte.splice_into(
        encoded,
        &decoded,
        insertion.at,
        insertion.text.as_bytes(),
        part_eol,
        &mut out,
    )?;
    mime::check_new_bytes(&target, out.get(before.len()..).unwrap_or_default(), new)?;
    out.extend_from_slice(after);
    Ok(Outcome::Rewritten(out))
}

/// The MIME tree, without decoding bodies. mail-parser's header parser has `debug_assert!`s
/// that fire on some malformed input in builds with debug assertions (found by fuzzing its full
/// parse); release builds carry on. Either way such a message is not one to rewrite, and a
/// third-party panic should not take the milter down.
fn parse(raw: &[u8], body_start: Option<usize>) -> Result<Message<'_>, InjectError> {
    std::panic::catch_unwind(|| structure::parse(raw, body_start))
        .map_err(|_| InjectError::Malformed("the MIME parser gave up".into()))?
}

#[cfg(test)]
mod oracle;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
