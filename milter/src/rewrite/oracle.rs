//! mail-parser's full parse as the reference for [`super::structure`]: the tests run both on the
//! same message and require the same choice of part (or the same reason to leave it alone), and
//! that our decoding of the chosen part says what mail-parser's says.

use mail_parser::decoders::charsets::map::charset_decoder;
use mail_parser::{MessageParser, MimeHeaders, PartType};

use super::encoding::Cte;
use super::mime::{self, Located};
use super::{InjectError, Skip};

/// What a locate gave, comparable across parsers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Choice {
    Part(std::ops::Range<usize>, Cte),
    Skip(Skip),
    Refused,
    /// mail-parser panicked (a `debug_assert!` on malformed input in test builds): no reference.
    NoReference,
}

/// The choice on our MIME tree.
pub(super) fn fast(raw: &[u8], body_start: Option<usize>) -> Choice {
    match super::parse(raw, body_start) {
        Ok(tree) => choice(mime::locate(&tree, raw, body_start)),
        Err(_) => Choice::Refused,
    }
}

/// The choice on mail-parser's full parse.
pub(super) fn full(raw: &[u8], body_start: Option<usize>) -> Choice {
    let msg = match std::panic::catch_unwind(|| MessageParser::default().parse(raw)) {
        Ok(Some(msg)) => msg,
        Ok(None) => return Choice::Refused,
        Err(_) => return Choice::NoReference,
    };
    let got = choice(mime::locate(&msg, raw, body_start));
    // The deep nesting some tests build would overflow the stack in mail-parser's recursive drop.
    std::mem::forget(msg);
    got
}

fn choice(located: Result<Located<'_>, InjectError>) -> Choice {
    match located {
        Ok(Located::Part(target)) => Choice::Part(target.range, target.cte),
        Ok(Located::Skip(skip)) => Choice::Skip(skip),
        Err(_) => Choice::Refused,
    }
}

/// Both parsers agree. `strict`: on everything; otherwise only that what we would rewrite,
/// mail-parser would rewrite too (our walk may refuse more, never choose differently).
#[track_caller]
pub(super) fn assert_same_choice(name: &str, raw: &[u8], strict: bool) {
    let (ours, theirs) = (fast(raw, None), full(raw, None));
    if theirs == Choice::NoReference {
        return;
    }
    if strict {
        assert_eq!(
            ours, theirs,
            "{name}: our MIME walk and mail-parser disagree"
        );
    } else if let Choice::Part(..) = ours {
        assert_eq!(
            ours, theirs,
            "{name}: our MIME walk chose a part mail-parser did not"
        );
    }
    if let Choice::Part(range, cte) = ours {
        assert_decodes_like_mail_parser(name, raw, range, cte);
    }
}

/// Our decoding of the part at `range` is the text mail-parser decoded for it (line endings
/// aside: mail-parser normalises them in quoted-printable).
#[track_caller]
fn assert_decodes_like_mail_parser(
    name: &str,
    raw: &[u8],
    range: std::ops::Range<usize>,
    cte: Cte,
) {
    let msg = MessageParser::default().parse(raw).unwrap();
    let part = msg
        .parts
        .iter()
        .find(|p| p.offset_body as usize == range.start && p.offset_end as usize == range.end)
        .unwrap_or_else(|| panic!("{name}: mail-parser has no part at {range:?}"));
    let PartType::Html(parser_text) = &part.body else {
        panic!("{name}: mail-parser's part at {range:?} is not html");
    };
    let decoded = cte.decode(&raw[range]).unwrap();
    let charset = part.content_type().and_then(|ct| ct.attribute("charset"));
    let ours = match charset.and_then(|c| charset_decoder(c.as_bytes())) {
        Some(decode) => decode(&decoded),
        None => String::from_utf8_lossy(&decoded).into_owned(),
    };
    assert_eq!(
        ours.replace('\r', ""),
        parser_text.replace('\r', ""),
        "{name}: decodings differ"
    );
}
