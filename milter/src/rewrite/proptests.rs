//! Property test over generated multipart messages: random text parts, an HTML part with or
//! without `<body>`/`</body>`, random transfer encodings, random nesting and line endings. The
//! generator records where the HTML body lies, so the properties need no parser of their own.

use std::ops::Range;

use base64::Engine as _;
use mail_parser::MessageParser;
use proptest::prelude::*;

use super::encoding::{Cte, Eol};
use super::*;

#[derive(Debug, Clone)]
enum Node {
    Text(String, Cte),
    /// An HTML attachment: never the target.
    AttachedHtml(String),
    /// The one HTML part that must get the pixel.
    Html(Html),
    Multi(&'static str, Vec<Node>),
}

#[derive(Debug, Clone)]
struct Html {
    text: String,
    has_body_end: bool,
    cte: Cte,
}

/// Lines of words; no `-`, so nothing can look like a boundary delimiter. 8-bit text only where
/// the transfer encoding allows it.
fn lines(ascii_only: bool) -> impl Strategy<Value = String> {
    let chars = if ascii_only {
        "[a-zA-Z0-9=&.;:!?]{1,12}"
    } else {
        "[a-zA-Z0-9=&.;:!?éü€😀]{1,12}"
    };
    // Only harmless tags: `<xmp>` or `<plaintext>` would hide the `</body>` from the model.
    let word = prop_oneof![
        6 => chars.prop_map(String::from),
        1 => prop::sample::select(vec!["<p>", "</p>", "<br>", "<b class=\"x\">", "&amp;"])
            .prop_map(String::from),
    ];
    prop::collection::vec(prop::collection::vec(word, 0..40), 0..6).prop_map(|lines| {
        lines
            .iter()
            .map(|l| l.join(" "))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

fn cte() -> impl Strategy<Value = Cte> {
    prop_oneof![
        Just(Cte::Identity),
        Just(Cte::QuotedPrintable),
        Just(Cte::Base64)
    ]
}

fn html() -> impl Strategy<Value = Html> {
    (cte(), any::<bool>(), any::<bool>(), any::<bool>()).prop_flat_map(
        |(cte, has_body, has_body_end, trailing_newline)| {
            let ascii = cte == Cte::Identity;
            (lines(ascii), lines(ascii)).prop_map(move |(content, tail)| {
                let mut text = String::new();
                if has_body {
                    text.push_str("<html><body class=\"x\">\n");
                }
                text.push_str(&content.replace("body", "bod"));
                if has_body && has_body_end {
                    text.push_str("\n</body></html>");
                    text.push_str(&tail.replace("body", "bod"));
                }
                if trailing_newline {
                    text.push('\n');
                }
                Html {
                    text,
                    has_body_end: has_body && has_body_end,
                    cte,
                }
            })
        },
    )
}

fn sibling() -> impl Strategy<Value = Node> {
    prop_oneof![
        3 => cte().prop_flat_map(|cte| lines(cte == Cte::Identity).prop_map(move |t| Node::Text(t, cte))),
        1 => lines(true).prop_map(Node::AttachedHtml),
    ]
}

/// An HTML leaf wrapped in 0 to 3 multiparts, each with random siblings around it.
fn tree() -> impl Strategy<Value = Node> {
    html()
        .prop_map(Node::Html)
        .prop_recursive(3, 24, 4, |inner| {
            (
                prop::sample::select(vec!["mixed", "alternative", "related"]),
                prop::collection::vec(sibling(), 0..3),
                inner,
                prop::collection::vec(sibling(), 0..3),
            )
                .prop_map(|(sub, before, inner, after)| {
                    Node::Multi(
                        sub,
                        before.into_iter().chain([inner]).chain(after).collect(),
                    )
                })
        })
}

/// The decoded form of a text as the rewrite sees it.
fn decoded(text: &str, cte: Cte, eol: Eol) -> Vec<u8> {
    match cte {
        Cte::Identity => text.replace('\n', eol.as_str()).into_bytes(),
        // QP hard line breaks decode to CRLF; base64 carries whatever was encoded.
        Cte::QuotedPrintable | Cte::Base64 => text.replace('\n', "\r\n").into_bytes(),
    }
}

fn encoded(text: &str, cte: Cte, eol: Eol) -> Vec<u8> {
    let plain = decoded(text, cte, eol);
    match cte {
        Cte::Identity => plain,
        Cte::QuotedPrintable => String::from_utf8(quoted_printable::encode(&plain))
            .unwrap()
            .replace("\r\n", eol.as_str())
            .into_bytes(),
        Cte::Base64 => base64::engine::general_purpose::STANDARD
            .encode(&plain)
            .as_bytes()
            .chunks(76)
            .collect::<Vec<_>>()
            .join(eol.as_str().as_bytes()),
    }
}

fn cte_name(cte: Cte) -> &'static str {
    match cte {
        Cte::Identity => "7bit",
        Cte::QuotedPrintable => "quoted-printable",
        Cte::Base64 => "base64",
    }
}

struct Built {
    raw: Vec<u8>,
    /// The HTML body inside `raw`.
    range: Range<usize>,
    html: Html,
}

fn build(root: &Node, eol: Eol) -> Built {
    fn leaf(out: &mut Vec<u8>, headers: &str, body: &[u8], eol: &str) -> Range<usize> {
        out.extend_from_slice(headers.replace('\n', eol).as_bytes());
        out.extend_from_slice(eol.as_bytes());
        let start = out.len();
        out.extend_from_slice(body);
        start..out.len()
    }
    fn render(
        node: &Node,
        eol: &str,
        n: &mut usize,
        out: &mut Vec<u8>,
        found: &mut Option<(Range<usize>, Html)>,
    ) {
        let e = Eol::detect(eol.as_bytes()).unwrap();
        match node {
            Node::Text(text, cte) => {
                let headers = format!(
                    "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: {}\n",
                    cte_name(*cte)
                );
                leaf(out, &headers, &encoded(text, *cte, e), eol);
            }
            Node::AttachedHtml(text) => {
                let headers =
                    "Content-Type: text/html\nContent-Disposition: attachment; filename=a.html\n";
                leaf(out, headers, &encoded(text, Cte::Identity, e), eol);
            }
            Node::Html(html) => {
                let headers = format!(
                    "Content-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: {}\n",
                    cte_name(html.cte)
                );
                let range = leaf(out, &headers, &encoded(&html.text, html.cte, e), eol);
                *found = Some((range, html.clone()));
            }
            Node::Multi(sub, children) => {
                let boundary = format!("=_b{n:03}_=");
                *n += 1;
                out.extend_from_slice(
                    format!("Content-Type: multipart/{sub}; boundary=\"{boundary}\"{eol}{eol}")
                        .as_bytes(),
                );
                for child in children {
                    out.extend_from_slice(format!("--{boundary}{eol}").as_bytes());
                    render(child, eol, n, out, found);
                    out.extend_from_slice(eol.as_bytes());
                }
                out.extend_from_slice(format!("--{boundary}--").as_bytes());
            }
        }
    }
    let eol_str = eol.as_str();
    let mut raw = format!(
        "From: a@example.test{eol_str}Subject: generated{eol_str}MIME-Version: 1.0{eol_str}"
    )
    .into_bytes();
    let mut found = None;
    render(root, eol_str, &mut 0, &mut raw, &mut found);
    raw.extend_from_slice(eol_str.as_bytes());
    let (mut range, mut html) = found.unwrap();
    if matches!(root, Node::Html(_)) {
        // A single-part body runs to the end of the message, final line break included; that
        // line break is content unless it is only a base64 line break.
        range.end = raw.len();
        if html.cte != Cte::Base64 {
            html.text.push('\n');
        }
    }
    Built { raw, range, html }
}

/// What the decoded HTML must be after the rewrite.
fn model(html: &Html, eol: Eol) -> Vec<u8> {
    let original = decoded(&html.text, html.cte, eol);
    let html_eol = match html.cte {
        Cte::Identity => eol,
        Cte::QuotedPrintable => Eol::Crlf,
        Cte::Base64 => Eol::detect(&original).unwrap_or(eol),
    }
    .as_str();
    let tag = super::tests::pixel().img_tag();
    let original = String::from_utf8(original).unwrap();
    let out = if html.has_body_end {
        original.replacen("</body>", &format!("{html_eol}{tag}{html_eol}</body>"), 1)
    } else if original.ends_with('\n') {
        format!("{original}{tag}{html_eol}")
    } else {
        format!("{original}{html_eol}{tag}{html_eol}")
    };
    out.into_bytes()
}

proptest! {
    // No regression files outside this module: failures found here become unit tests.
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn rewrite_touches_only_the_html_body(root in tree(), crlf in any::<bool>()) {
        let eol = if crlf { Eol::Crlf } else { Eol::Lf };
        let Built { raw, range, html } = build(&root, eol);
        let pixel = super::tests::pixel();
        super::oracle::assert_same_choice("generated", &raw, true);
        let out = match inject_message(&raw, &pixel) {
            Ok(Outcome::Rewritten(out)) => out,
            other => panic!("{other:?} for\n{}", String::from_utf8_lossy(&raw)),
        };

        // Everything outside the html body is byte-identical.
        let suffix = &raw[range.end..];
        prop_assert_eq!(&out[..range.start], &raw[..range.start]);
        prop_assert!(out.ends_with(suffix));
        let new_body = &out[range.start..out.len() - suffix.len()];

        // The new body decodes to the original plus the pixel, exactly once.
        let got = html.cte.decode(new_body).unwrap();
        let want = model(&html, eol);
        prop_assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&want));

        // Legal lines, in the message's line ending.
        let limit = if html.cte == Cte::Identity { 998 } else { 76 };
        for line in new_body.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            prop_assert!(line.len() <= limit, "line of {}", line.len());
            prop_assert!(!line.contains(&b'\r'));
        }
        prop_assert_eq!(eol == Eol::Lf, !new_body.contains(&b'\r'));

        // Still the same MIME structure for an independent parser.
        let before = MessageParser::default().parse(&raw).unwrap();
        let after = MessageParser::default().parse(&out).unwrap();
        prop_assert_eq!(before.parts.len(), after.parts.len());

        // Running again changes the same part only.
        let again = match inject_message(&out, &pixel) {
            Ok(Outcome::Rewritten(again)) => again,
            other => panic!("second run: {other:?}"),
        };
        prop_assert_eq!(&again[..range.start], &raw[..range.start]);
        prop_assert!(again.ends_with(suffix));
    }
}
