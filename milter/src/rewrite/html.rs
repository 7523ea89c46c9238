//! Inserts the pixel line into one decoded HTML document with lol_html.
//!
//! lol_html streams the input and copies every byte it does not touch, so the only change is the
//! inserted line. It works on the raw bytes in the part's own charset (ASCII-compatible ones only,
//! which the caller has checked), so nothing is transcoded.

use std::cell::Cell;
use std::rc::Rc;

use lol_html::html_content::ContentType;
use lol_html::{AsciiCompatibleEncoding, HtmlRewriter, Settings, element, end, end_tag};

use super::InjectError;
use super::encoding::Eol;

/// How much input is handed to lol_html per `write()`. The result does not depend on it (tested).
const CHUNK: usize = 64 * 1024;

/// Inserts `tag` on a line of its own just before the first `<body>`'s end tag, or at the end of
/// the document when that end tag never comes (no `</body>`, no `<body>` at all).
pub(super) fn insert_pixel(
    html: &[u8],
    encoding: AsciiCompatibleEncoding,
    tag: &str,
    eol: Eol,
) -> Result<Vec<u8>, InjectError> {
    let mut out = Vec::with_capacity(html.len() + 2 * tag.len());
    insert_pixel_into(html, encoding, tag, eol, &mut out)?;
    Ok(out)
}

/// [`insert_pixel`], appending to `out`: lets the caller write an unencoded part straight into
/// the new message.
pub(super) fn insert_pixel_into(
    html: &[u8],
    encoding: AsciiCompatibleEncoding,
    tag: &str,
    eol: Eol,
    out: &mut Vec<u8>,
) -> Result<(), InjectError> {
    write_chunked(html, encoding, tag, eol, CHUNK, out)
}

#[cfg(test)]
pub(super) fn insert_pixel_chunked(
    html: &[u8],
    encoding: AsciiCompatibleEncoding,
    tag: &str,
    eol: Eol,
    chunk: usize,
) -> Result<Vec<u8>, InjectError> {
    let mut out = Vec::new();
    write_chunked(html, encoding, tag, eol, chunk, &mut out)?;
    Ok(out)
}

fn write_chunked(
    html: &[u8],
    encoding: AsciiCompatibleEncoding,
    tag: &str,
    eol: Eol,
    chunk: usize,
    out: &mut Vec<u8>,
) -> Result<(), InjectError> {
    let eol = eol.as_str();
    let line = format!("{eol}{tag}{eol}");
    // At the document end we know what precedes the tag: no empty line if a line just ended.
    let tail = if html.ends_with(b"\n") {
        format!("{tag}{eol}")
    } else {
        line.clone()
    };
    // Shared with the end-tag handler, which lol_html requires to be 'static.
    let inserted = Rc::new(Cell::new(false));
    let seen_body = Cell::new(false);

    out.reserve(html.len() + line.len());
    let settings = Settings::new()
        .with_encoding(encoding)
        .append_element_content_handler(element!("body", |el| {
            if seen_body.replace(true) {
                return Ok(()); // only the first <body> counts
            }
            let inserted = Rc::clone(&inserted);
            let line = line.clone();
            // Fails only for a body that cannot have content (foreign content such as
            // `<svg><body/>`); the document-end fallback then takes over.
            let _ = el.on_end_tag(end_tag!(move |end| {
                if !inserted.replace(true) {
                    end.before(&line, ContentType::Html);
                }
                Ok(())
            }));
            Ok(())
        }))
        .append_document_content_handler(end!(|end| {
            if !inserted.replace(true) {
                end.append(&tail, ContentType::Html);
            }
            Ok(())
        }));
    let mut rewriter = HtmlRewriter::new(settings, |c: &[u8]| out.extend_from_slice(c));
    for piece in html.chunks(chunk.max(1)) {
        rewriter.write(piece).map_err(html_error)?;
    }
    rewriter.end().map_err(html_error)?;
    Ok(())
}

fn html_error(e: lol_html::errors::RewritingError) -> InjectError {
    InjectError::Html(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAG: &str = "<img src=\"x\">";

    #[track_caller]
    fn check(html: &str, want: &str) {
        let got = insert_pixel(
            html.as_bytes(),
            AsciiCompatibleEncoding::utf_8(),
            TAG,
            Eol::Lf,
        )
        .unwrap();
        assert_eq!(String::from_utf8(got).unwrap(), want, "input {html:?}");
    }

    #[test]
    fn placement() {
        for (html, want) in [
            (
                "<html><body><p>Hi</p></body></html>",
                "<html><body><p>Hi</p>\n<img src=\"x\">\n</body></html>",
            ),
            ("<BODY>x</BODY>", "<BODY>x\n<img src=\"x\">\n</BODY>"),
            ("<body><p>Hi</p>", "<body><p>Hi</p>\n<img src=\"x\">\n"),
            ("<p>Hi</p>\n", "<p>Hi</p>\n<img src=\"x\">\n"),
            ("", "\n<img src=\"x\">\n"),
            // The first body only, and never twice.
            (
                "<body>a</body><body>b</body>",
                "<body>a\n<img src=\"x\">\n</body><body>b</body>",
            ),
            // `</body>` inside a comment, a script or an attribute is not the end tag.
            (
                "<body><!-- </body> --><script>'</body>'</script><a title=\"</body>\">x</a></body>",
                "<body><!-- </body> --><script>'</body>'</script><a title=\"</body>\">x</a>\n<img src=\"x\">\n</body>",
            ),
            // `</html>` closes the body too: lol_html runs the body's handler there.
            (
                "<html><body><p>x</p></html>",
                "<html><body><p>x</p>\n<img src=\"x\">\n</html>",
            ),
            // An end tag without a matching start tag: append at the end instead.
            ("<p>x</p></body>", "<p>x</p></body>\n<img src=\"x\">\n"),
        ] {
            check(html, want);
        }
    }

    #[test]
    fn non_utf8_bytes_pass_through() {
        let latin1 = b"<body>caf\xe9</body>";
        let enc = AsciiCompatibleEncoding::new(encoding_rs::WINDOWS_1252).unwrap();
        let got = insert_pixel(latin1, enc, TAG, Eol::Crlf).unwrap();
        assert_eq!(got, b"<body>caf\xe9\r\n<img src=\"x\">\r\n</body>");
    }

    /// Stalwart and mox sweep chunk sizes: a tag split across `write()` calls must not matter.
    #[test]
    fn output_does_not_depend_on_chunking() {
        let docs = [
            "<!DOCTYPE html><html><head><title>t</title></head><body class=\"x\">\r\n<p>Hello &amp; bye</p>\r\n</body>\r\n</html>\r\n",
            "<html><BODY><table><tr><td>cell</td></tr></table><!-- </body> --></Body ></html>",
            "<p>no body at all, just a fragment with a very long line ........................</p>",
            "<body><script>if (a</body>) {}</script><textarea></body></textarea>x</body>",
            "<body>caf\u{e9} \u{1F600} <svg><body/></svg></body>",
            "<body>a</body><body>b</body>",
            "",
        ];
        for doc in docs {
            let whole = insert_pixel_chunked(
                doc.as_bytes(),
                AsciiCompatibleEncoding::utf_8(),
                TAG,
                Eol::Crlf,
                usize::MAX,
            )
            .unwrap();
            assert_eq!(
                String::from_utf8_lossy(&whole).matches(TAG).count(),
                1,
                "{doc}"
            );
            for size in 1..=64 {
                let chunked = insert_pixel_chunked(
                    doc.as_bytes(),
                    AsciiCompatibleEncoding::utf_8(),
                    TAG,
                    Eol::Crlf,
                    size,
                )
                .unwrap();
                assert_eq!(chunked, whole, "chunk size {size} for {doc:?}");
            }
        }
    }
}
