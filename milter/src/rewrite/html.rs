//! Finds where the pixel line goes in one decoded HTML document, with lol_html.
//!
//! lol_html parses the raw bytes in the part's own charset (ASCII-compatible ones only, which the
//! caller has checked), so nothing is transcoded, and it reports where in those bytes the end tag
//! is. The caller inserts the line there: the only change to the document is that line.

use std::cell::Cell;
use std::rc::Rc;

use lol_html::{AsciiCompatibleEncoding, HtmlRewriter, Settings, element, end_tag};

use super::InjectError;
use super::encoding::Eol;

/// How much input is handed to lol_html per `write()`. The result does not depend on it (tested).
const CHUNK: usize = 64 * 1024;

/// Where the pixel goes in a decoded HTML document, and the text that goes there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Insertion {
    /// Byte offset in the document.
    pub(super) at: usize,
    pub(super) text: String,
}

impl Insertion {
    /// The document with the pixel inserted.
    #[cfg(test)]
    pub(super) fn apply(&self, html: &[u8]) -> Vec<u8> {
        let (head, tail) = html.split_at(self.at);
        [head, self.text.as_bytes(), tail].concat()
    }
}

/// Finds where `tag` goes, on a line of its own: just before the first `<body>`'s end tag, or
/// at the end of the document when that end tag never comes (no `</body>`, no `<body>` at all).
///
/// lol_html parses the whole document (a `</body>` in a comment, a script or an attribute is not
/// the end tag) and reports the end tag's position in its input; nothing is written, so the caller
/// can splice the line into the original bytes and re-encode only what it must.
pub(super) fn insertion(
    html: &[u8],
    encoding: AsciiCompatibleEncoding,
    tag: &str,
    eol: Eol,
) -> Result<Insertion, InjectError> {
    insertion_chunked(html, encoding, tag, eol, CHUNK)
}

pub(super) fn insertion_chunked(
    html: &[u8],
    encoding: AsciiCompatibleEncoding,
    tag: &str,
    eol: Eol,
    chunk: usize,
) -> Result<Insertion, InjectError> {
    let eol = eol.as_str();
    // Shared with the end-tag handler, which lol_html requires to be 'static.
    let end_tag_at = Rc::new(Cell::new(None));
    let seen_body = Cell::new(false);
    let settings = Settings::new()
        .with_encoding(encoding)
        .append_element_content_handler(element!("body", |el| {
            if seen_body.replace(true) {
                return Ok(()); // only the first <body> counts
            }
            let end_tag_at = Rc::clone(&end_tag_at);
            // Fails only for a body that cannot have content (foreign content such as
            // `<svg><body/>`); the document-end fallback then takes over.
            let _ = el.on_end_tag(end_tag!(move |end| {
                if end_tag_at.get().is_none() {
                    end_tag_at.set(Some(end.source_location().bytes().start));
                }
                Ok(())
            }));
            Ok(())
        }));
    let mut rewriter = HtmlRewriter::new(settings, |_: &[u8]| {});
    for piece in html.chunks(chunk.max(1)) {
        rewriter.write(piece).map_err(html_error)?;
    }
    rewriter.end().map_err(html_error)?;
    Ok(match end_tag_at.get() {
        Some(at) => {
            // An end tag starts with `</` (`</body>`, or `</html>` closing the body).
            if html.get(at..at + 2) != Some(b"</") {
                return Err(InjectError::Html(format!("no end tag at offset {at}")));
            }
            Insertion {
                at,
                text: format!("{eol}{tag}{eol}"),
            }
        }
        // At the document end we know what precedes the tag: no empty line if a line just ended.
        None if html.ends_with(b"\n") => Insertion {
            at: html.len(),
            text: format!("{tag}{eol}"),
        },
        None => Insertion {
            at: html.len(),
            text: format!("{eol}{tag}{eol}"),
        },
    })
}

/// The pixel inserted by lol_html itself (`before()` on the end tag, `append()` at the document
/// end), into its own output: the reference [`insertion`] is tested against.
#[cfg(test)]
pub(super) fn insert_pixel_chunked(
    html: &[u8],
    encoding: AsciiCompatibleEncoding,
    tag: &str,
    eol: Eol,
    chunk: usize,
) -> Result<Vec<u8>, InjectError> {
    use lol_html::end;
    use lol_html::html_content::ContentType;

    let eol = eol.as_str();
    let line = format!("{eol}{tag}{eol}");
    let tail = if html.ends_with(b"\n") {
        format!("{tag}{eol}")
    } else {
        line.clone()
    };
    let inserted = Rc::new(Cell::new(false));
    let seen_body = Cell::new(false);
    let mut out = Vec::new();
    let settings = Settings::new()
        .with_encoding(encoding)
        .append_element_content_handler(element!("body", |el| {
            if seen_body.replace(true) {
                return Ok(());
            }
            let inserted = Rc::clone(&inserted);
            let line = line.clone();
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
    Ok(out)
}

fn html_error(e: lol_html::errors::RewritingError) -> InjectError {
    InjectError::Html(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAG: &str = "<img src=\"x\">";

    /// The pixel inserted at [`insertion`]'s offset, checked against lol_html's own insertion.
    #[track_caller]
    fn insert_pixel(
        html: &[u8],
        encoding: AsciiCompatibleEncoding,
        tag: &str,
        eol: Eol,
    ) -> Result<Vec<u8>, InjectError> {
        let spliced = insertion(html, encoding, tag, eol)?.apply(html);
        let by_lol_html = insert_pixel_chunked(html, encoding, tag, eol, CHUNK)?;
        assert_eq!(
            String::from_utf8_lossy(&spliced),
            String::from_utf8_lossy(&by_lol_html)
        );
        Ok(spliced)
    }

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

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 2048, failure_persistence: None, ..Default::default() })]
        /// lol_html's reported end-tag position is where its own `before()` inserts, for any soup
        /// of the tags that decide placement.
        #[test]
        fn insertion_matches_lol_html_output(
            pieces in proptest::collection::vec(proptest::sample::select(vec![
                "<body>", "</body>", "<BODY class=x>", "</Body >", "<html>", "</html>", "<head>",
                "</head>", "<p>", "</p>", "text", " ", "\r\n", "\n", "<!-- ", " -->", "<script>",
                "</script>", "<svg>", "</svg>", "<body/>", "<textarea>", "</textarea>", "<table>",
                "<td>", "</table>", "<frameset>", "<template>", "</template>", "<a title=\"",
                "\">", "&amp;", "caf\u{e9}", "<", ">", "</", "<![CDATA[", "]]>", "<noscript>",
                "</noscript>", "<xmp>", "</xmp>", "<plaintext>",
            ]), 0..40),
            chunk in 1usize..50,
        ) {
            let doc = pieces.concat();
            let utf8 = AsciiCompatibleEncoding::utf_8();
            let by_lol_html = insert_pixel_chunked(doc.as_bytes(), utf8, TAG, Eol::Crlf, chunk);
            match insertion_chunked(doc.as_bytes(), utf8, TAG, Eol::Crlf, chunk) {
                Ok(at) => proptest::prop_assert_eq!(
                    String::from_utf8_lossy(&at.apply(doc.as_bytes())).into_owned(),
                    String::from_utf8_lossy(&by_lol_html.unwrap()).into_owned()
                ),
                // Refusing is allowed (the message then passes untracked), a wrong place is not.
                Err(InjectError::Html(_)) => {}
                Err(e) => proptest::prop_assert!(false, "{e}"),
            }
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
            let utf8 = AsciiCompatibleEncoding::utf_8();
            let at_whole =
                insertion_chunked(doc.as_bytes(), utf8, TAG, Eol::Crlf, usize::MAX).unwrap();
            assert_eq!(at_whole.apply(doc.as_bytes()), whole, "{doc}");
            for size in 1..=64 {
                let chunked =
                    insert_pixel_chunked(doc.as_bytes(), utf8, TAG, Eol::Crlf, size).unwrap();
                assert_eq!(chunked, whole, "chunk size {size} for {doc:?}");
                let at = insertion_chunked(doc.as_bytes(), utf8, TAG, Eol::Crlf, size).unwrap();
                assert_eq!(at, at_whole, "chunk size {size} for {doc:?}");
            }
        }
    }
}
