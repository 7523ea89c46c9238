//! Fixture pairs (`testdata/NAME.eml` → `NAME.expected.eml`), one test per skip reason, and pins
//! for the edge cases the splice depends on. `REWRITE_BLESS=1 cargo test` rewrites the expected
//! files; read the diff before committing it.

use std::path::PathBuf;

use mail_parser::{MessageParser, PartType};

use super::*;

/// A short base URL: the pixel URL is as long as the one the fixtures were first made with, so the
/// quoted-printable fixtures keep their line breaks.
const BASE_URL: &str = "https://x";
const TRACKING_ID: &str = "TrackingIdForTestsAAAA";
const TAG: &str = "<img src=\"https://x/pixel?id=TrackingIdForTestsAAAA\" width=\"1\" height=\"1\" alt=\"\" style=\"display:none;border:0;width:1px;height:1px\">";

pub(super) fn pixel() -> PixelUrl {
    use mailserver::tracking::{BaseUrl, TrackingId, pixel_url};
    pixel_url(
        &BaseUrl::parse(BASE_URL).unwrap(),
        &TrackingId::parse(TRACKING_ID).unwrap(),
    )
}

fn testdata(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/rewrite/testdata")
        .join(file)
}

fn read(file: &str) -> Vec<u8> {
    std::fs::read(testdata(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

#[derive(Debug)]
enum Want {
    Rewritten,
    Unchanged(Skip),
    Malformed,
}

/// Runs one fixture through both entry points and compares with what it should give.
#[track_caller]
fn check(name: &str, want: Want) {
    let input = read(&format!("{name}.eml"));
    let expected_path = testdata(&format!("{name}.expected.eml"));
    oracle::assert_same_choice(name, &input, true);
    let got = inject_message(&input, &pixel());
    match want {
        Want::Rewritten => {
            let Ok(Outcome::Rewritten(output)) = got else {
                panic!("{name}: expected a rewrite, got {got:?}");
            };
            if std::env::var_os("REWRITE_BLESS").is_some() {
                std::fs::write(&expected_path, &output).unwrap();
            }
            let expected = read(&format!("{name}.expected.eml"));
            assert_eq!(
                String::from_utf8_lossy(&output),
                String::from_utf8_lossy(&expected),
                "{name}: output differs from {name}.expected.eml"
            );
            assert_eq!(output, expected, "{name}: bytes differ");
            // The body entry point gives the same body.
            let (headers, body) = split_message(&input);
            let (_, expected_body) = split_message(&expected);
            assert_eq!(
                inject_body(headers, body, &pixel()).unwrap(),
                Outcome::Rewritten(expected_body.to_vec()),
                "{name}: inject_body"
            );
            assert_well_formed(name, &input, &output);
        }
        Want::Unchanged(skip) => {
            assert!(!expected_path.exists(), "{name}: stray expected file");
            assert_eq!(got.unwrap(), Outcome::Unchanged(skip.clone()), "{name}");
            let (headers, body) = split_message(&input);
            assert_eq!(
                inject_body(headers, body, &pixel()).unwrap(),
                Outcome::Unchanged(skip),
                "{name}: inject_body"
            );
        }
        Want::Malformed => {
            assert!(!expected_path.exists(), "{name}: stray expected file");
            assert!(
                matches!(got, Err(InjectError::Malformed(_))),
                "{name}: {got:?}"
            );
        }
    }
}

/// Splits at the blank line: the header block keeps its last line ending, as Postfix gives it.
fn split_message(raw: &[u8]) -> (&[u8], &[u8]) {
    for sep in [&b"\r\n\r\n"[..], b"\n\n"] {
        if let Some(i) = raw.windows(sep.len()).position(|w| w == sep) {
            let half = sep.len() / 2;
            return (&raw[..i + half], &raw[i + sep.len()..]);
        }
    }
    panic!("no blank line")
}

/// What every rewrite must satisfy: one changed region, parseable, the pixel exactly once.
#[track_caller]
fn assert_well_formed(name: &str, input: &[u8], output: &[u8]) {
    let prefix = input.iter().zip(output).take_while(|(a, b)| a == b).count();
    let suffix = input
        .iter()
        .rev()
        .zip(output.iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let before = MessageParser::default().parse(input).unwrap();
    let after = MessageParser::default().parse(output).unwrap();
    assert_eq!(before.parts.len(), after.parts.len(), "{name}: part count");
    // The changed bytes lie inside exactly one html part body.
    let changed = after.parts.iter().filter(|p| {
        let (start, end) = (p.offset_body as usize, p.offset_end as usize);
        matches!(p.body, PartType::Html(_)) && start <= prefix && end + suffix >= output.len()
    });
    assert_eq!(
        changed.count(),
        1,
        "{name}: changed region not one html body"
    );
    let pixels: usize = after
        .parts
        .iter()
        .filter_map(|p| match &p.body {
            PartType::Html(t) => Some(t.matches(TAG).count()),
            _ => None,
        })
        .sum();
    assert_eq!(pixels, 1, "{name}: pixel count after decoding");
}

#[test]
fn fixtures() {
    use Want::*;
    for (name, want) in [
        ("plain_html", Rewritten),
        ("no_body_end", Rewritten),
        ("no_body_tag", Rewritten),
        ("alternative", Rewritten),
        ("mixed_related_pdf", Rewritten),
        ("nested_three_levels", Rewritten),
        ("qp_long_lines", Rewritten),
        ("base64_html", Rewritten),
        ("latin1_qp", Rewritten),
        ("utf8_8bit", Rewritten),
        ("lf_only", Rewritten),
        ("rfc822_attachment", Rewritten),
        ("text_only", Unchanged(Skip::NoHtmlPart)),
        ("html_attachment_only", Unchanged(Skip::NoHtmlPart)),
        ("rfc822_only", Unchanged(Skip::NoHtmlPart)),
        ("signed", Unchanged(Skip::Signed)),
        ("dkim_signed", Unchanged(Skip::HasDkimSignature)),
        (
            "utf16_charset",
            Unchanged(Skip::UnsupportedCharset("utf-16".into())),
        ),
        ("broken_unterminated", Malformed),
    ] {
        check(name, want);
    }
}

/// Every fixture on disk is listed above, so none is silently ignored.
#[test]
fn every_fixture_is_checked() {
    let listed = "plain_html no_body_end no_body_tag alternative mixed_related_pdf \
        nested_three_levels qp_long_lines base64_html latin1_qp utf8_8bit lf_only \
        rfc822_attachment text_only html_attachment_only rfc822_only signed dkim_signed \
        utf16_charset broken_unterminated";
    for entry in std::fs::read_dir(testdata("")).unwrap() {
        let file = entry.unwrap().file_name().into_string().unwrap();
        let stem = file.split('.').next().unwrap();
        let checked = listed.split_whitespace().any(|l| l == stem) || stem.starts_with("fuzz_");
        assert!(checked, "{file} is not checked");
    }
}

/// Inputs the fuzzer found (`testdata/fuzz_*.eml`): no panic, and a rewrite still parses.
#[test]
fn fuzz_regressions() {
    for entry in std::fs::read_dir(testdata("")).unwrap() {
        let path = entry.unwrap().path();
        if !path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("fuzz_")
        {
            continue;
        }
        let raw = std::fs::read(&path).unwrap();
        oracle::assert_same_choice(&path.display().to_string(), &raw, false);
        // mail-parser's debug assertions fire on some of these inputs; where they fire on the
        // input too, its reading of the output says nothing.
        let parses = |m: &[u8]| {
            std::panic::catch_unwind(|| MessageParser::default().parse(m).is_some()).ok()
        };
        if let Ok(Outcome::Rewritten(out)) = inject_message(&raw, &pixel())
            && parses(&raw).is_some()
        {
            assert_eq!(parses(&out), Some(true), "{}", path.display());
        }
    }
}

/// Decodes the rewritten HTML with mail-parser (an independent decoder) and compares it with
/// the original HTML plus the pixel line before `</body>`.
#[test]
fn encoded_parts_decode_to_original_plus_pixel() {
    for name in [
        "qp_long_lines",
        "base64_html",
        "latin1_qp",
        "lf_only",
        "mixed_related_pdf",
    ] {
        let input = read(&format!("{name}.eml"));
        let Outcome::Rewritten(output) = inject_message(&input, &pixel()).unwrap() else {
            panic!("{name} not rewritten");
        };
        let html = |raw: &[u8]| -> String {
            let msg = MessageParser::default().parse(raw).unwrap();
            let text = msg
                .parts
                .iter()
                .find_map(|p| match &p.body {
                    PartType::Html(t) => Some(t.to_string()),
                    _ => None,
                })
                .unwrap();
            text.replace('\r', "")
        };
        let want = html(&input).replacen("</body>", &format!("\n{TAG}\n</body>"), 1);
        assert_eq!(html(&output), want, "{name}");
    }
}

/// The chunk sweep of `html.rs`, on the HTML of every rewritten fixture.
#[test]
fn fixture_html_does_not_depend_on_chunking() {
    for name in [
        "plain_html",
        "no_body_end",
        "no_body_tag",
        "qp_long_lines",
        "base64_html",
        "utf8_8bit",
        "nested_three_levels",
    ] {
        let raw = read(&format!("{name}.eml"));
        let msg = MessageParser::default().parse(&raw).unwrap();
        let html = msg
            .parts
            .iter()
            .find_map(|p| match &p.body {
                PartType::Html(t) => Some(t.as_bytes()),
                _ => None,
            })
            .unwrap();
        let utf8 = lol_html::AsciiCompatibleEncoding::utf_8();
        let sweep = |chunk| html::insert_pixel_chunked(html, utf8, TAG, Eol::Crlf, chunk).unwrap();
        let whole = sweep(usize::MAX);
        for chunk in 1..=64 {
            assert_eq!(sweep(chunk), whole, "{name}, chunks of {chunk}");
        }
    }
}

/// Encoded lines stay legal: QP and base64 at most 76 characters, everything at most 998.
#[test]
fn rewritten_fixture_lines_are_legal() {
    for name in [
        "qp_long_lines",
        "base64_html",
        "latin1_qp",
        "lf_only",
        "plain_html",
    ] {
        let input = read(&format!("{name}.eml"));
        let Outcome::Rewritten(output) = inject_message(&input, &pixel()).unwrap() else {
            panic!("{name} not rewritten");
        };
        let limit = if name == "plain_html" { 998 } else { 76 };
        let (_, body) = split_message(&output);
        for line in body.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            assert!(
                line.len() <= limit,
                "{name}: {}",
                String::from_utf8_lossy(line)
            );
        }
    }
}

fn message(content_type: &str, extra_headers: &str, body: &str) -> Vec<u8> {
    format!(
        "From: a@example.test\r\nTo: b@example.test\r\nSubject: t\r\nMIME-Version: 1.0\r\n{extra_headers}Content-Type: {content_type}\r\n\r\n{body}"
    )
    .into_bytes()
}

#[track_caller]
fn assert_skip(raw: &[u8], skip: Skip) {
    oracle::assert_same_choice("assert_skip", raw, true);
    assert_eq!(
        inject_message(raw, &pixel()).unwrap(),
        Outcome::Unchanged(skip)
    );
}

#[test]
fn skip_no_html_part() {
    assert_skip(&message("text/plain", "", "hi\r\n"), Skip::NoHtmlPart);
    // Without Content-Type a message is text/plain.
    assert_skip(
        b"From: a@example.test\r\nSubject: t\r\n\r\n<html><body>x</body></html>\r\n",
        Skip::NoHtmlPart,
    );
}

#[test]
fn skip_signed_and_encrypted_anywhere() {
    let html = "--o\r\nContent-Type: text/html\r\n\r\n<body>x</body>\r\n";
    for inner in [
        "multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=\"i\"",
        "multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"i\"",
    ] {
        // Top level.
        assert_skip(
            &message(
                inner,
                "",
                "--i\r\nContent-Type: text/html\r\n\r\n<body>x</body>\r\n--i--\r\n",
            ),
            Skip::Signed,
        );
        // Nested beside an html part that could otherwise be rewritten.
        let body = format!(
            "{html}--o\r\nContent-Type: {inner}\r\n\r\n--i\r\nContent-Type: text/plain\r\n\r\nx\r\n--i--\r\n--o--\r\n"
        );
        assert_skip(
            &message("multipart/mixed; boundary=\"o\"", "", &body),
            Skip::Signed,
        );
        // Inside an attached message.
        let body = format!(
            "{html}--o\r\nContent-Type: message/rfc822\r\n\r\nSubject: fwd\r\nContent-Type: {inner}\r\n\r\n--i\r\nContent-Type: text/plain\r\n\r\nx\r\n--i--\r\n--o--\r\n"
        );
        assert_skip(
            &message("multipart/mixed; boundary=\"o\"", "", &body),
            Skip::Signed,
        );
    }
    assert_skip(
        &message(
            "application/pkcs7-mime; smime-type=enveloped-data",
            "",
            "MIAGCSqGSIb3DQEHA6CAMIACAQAx\r\n",
        ),
        Skip::Signed,
    );
}

#[test]
fn skip_dkim_signature() {
    assert_skip(
        &message(
            "text/html",
            "dkim-signature: v=1; d=example.test; b=x\r\n",
            "<body>x</body>\r\n",
        ),
        Skip::HasDkimSignature,
    );
}

#[test]
fn skip_unsupported_charsets() {
    for label in [
        "utf-16",
        "UTF-16LE",
        "utf-32",
        "ISO-2022-JP",
        "iso-2022-kr",
        "utf-7",
        "x-unknown",
    ] {
        assert_skip(
            &message(
                &format!("text/html; charset={label}"),
                "",
                "<body>x</body>\r\n",
            ),
            Skip::UnsupportedCharset(label.into()),
        );
    }
    for label in [
        "shift_jis",
        "EUC-KR",
        "gb18030",
        "big5",
        "koi8-r",
        "windows-1251",
        "iso-8859-15",
        "us-ascii",
    ] {
        let got = inject_message(
            &message(
                &format!("text/html; charset={label}"),
                "",
                "<body>x</body>\r\n",
            ),
            &pixel(),
        );
        assert!(matches!(got, Ok(Outcome::Rewritten(_))), "{label}: {got:?}");
    }
}

#[test]
fn skip_unsupported_transfer_encoding() {
    assert_skip(
        &message(
            "text/html",
            "Content-Transfer-Encoding: x-uuencode\r\n",
            "begin 644 x\r\n",
        ),
        Skip::UnsupportedTransferEncoding("x-uuencode".into()),
    );
}

/// The first *eligible* html part gets the pixel, even when an earlier one is not eligible.
#[test]
fn first_eligible_html_part_wins() {
    let body = "--o\r\nContent-Type: text/html; charset=utf-16\r\n\r\n<body>a</body>\r\n\
                --o\r\nContent-Type: text/html\r\n\r\n<body>b</body>\r\n\
                --o\r\nContent-Type: text/html\r\n\r\n<body>c</body>\r\n--o--\r\n";
    let Outcome::Rewritten(out) =
        inject_message(&message("multipart/mixed; boundary=o", "", body), &pixel()).unwrap()
    else {
        panic!("not rewritten");
    };
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.contains(&format!("<body>b\r\n{TAG}\r\n</body>")),
        "{out}"
    );
    assert_eq!(out.matches(TAG).count(), 1);
}

/// mail-parser's `offset_end` stops before the line break that precedes a boundary: RFC 2046
/// makes that line break part of the delimiter. The splice must leave it where it was, for both
/// line endings and for a body that ends with an empty line of its own.
#[test]
fn line_break_before_boundary_is_kept() {
    for (eol, body_end) in [("\r\n", ""), ("\n", ""), ("\r\n", "\r\n"), ("\n", "\n")] {
        let raw = format!(
            "Content-Type: multipart/alternative; boundary=b{eol}{eol}--b{eol}Content-Type: text/html{eol}{eol}<p>x</p>{body_end}{eol}--b--{eol}"
        );
        let msg = MessageParser::default().parse(raw.as_bytes()).unwrap();
        let part = &msg.parts[1];
        let after = &raw[part.offset_end as usize..];
        assert!(
            after.starts_with(&format!("{eol}--b--")),
            "{eol:?} {body_end:?}: {after:?}"
        );
        assert_eq!(
            &raw[part.offset_body as usize..part.offset_end as usize],
            format!("<p>x</p>{body_end}")
        );

        let Outcome::Rewritten(out) = inject_message(raw.as_bytes(), &pixel()).unwrap() else {
            panic!("not rewritten");
        };
        let want_sep = if body_end.is_empty() { eol } else { "" };
        let want = raw.replace(
            &format!("<p>x</p>{body_end}{eol}--b--"),
            &format!("<p>x</p>{body_end}{want_sep}{TAG}{eol}{eol}--b--"),
        );
        assert_eq!(String::from_utf8(out).unwrap(), want);
    }
}

/// A boundary that is only hidden by QP encoding (`=2D-b`) would appear in clear text if its
/// line were re-encoded, and cut the message in two: refused. On a line the rewrite does not
/// touch it stays as the sender encoded it.
#[test]
fn refuses_to_reveal_a_boundary() {
    let part = |html: &str| {
        let body = format!(
            "--b\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
             {html}\r\n--b--\r\n"
        );
        inject_message(
            &message("multipart/alternative; boundary=b", "", &body),
            &pixel(),
        )
    };
    let got = part("<body>\r\n=2D-b</body>");
    assert!(matches!(got, Err(InjectError::Malformed(_))), "{got:?}");
    let Ok(Outcome::Rewritten(out)) = part("<body>\r\n=2D-b\r\n</body>") else {
        panic!("not rewritten");
    };
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("\r\n=2D-b\r\n\r\n<img "), "{out}");
    assert_eq!(out.matches("--b").count(), 2, "{out}");
}

/// The pixel goes on its own line, so a long 7bit line does not grow past 998 octets.
#[test]
fn long_lines_do_not_grow() {
    let long = "x".repeat(990);
    let raw = message(
        "text/html",
        "",
        &format!("<body><p>{long}</p></body></html>\r\n"),
    );
    let Outcome::Rewritten(out) = inject_message(&raw, &pixel()).unwrap() else {
        panic!("not rewritten");
    };
    let longest = |b: &[u8]| b.split(|&c| c == b'\n').map(<[u8]>::len).max().unwrap_or(0);
    assert!(longest(&out) <= longest(&raw));
}

#[test]
fn inject_body_handles_header_shapes() {
    let body = b"<body>x</body>\r\n";
    let want = Outcome::Rewritten(format!("<body>x\r\n{TAG}\r\n</body>\r\n").into_bytes());
    for headers in [
        &b"Content-Type: text/html\r\n"[..],
        b"Content-Type: text/html",
        b"Subject: folded\r\n continuation\r\nContent-Type:\r\n\ttext/html\r\n",
        b"Subject: lf\nContent-Type: text/html\n",
    ] {
        assert_eq!(
            inject_body(headers, body, &pixel()).unwrap(),
            want,
            "{}",
            String::from_utf8_lossy(headers)
        );
    }
    // A blank line inside the header block would move the body: refused.
    let got = inject_body(
        b"Subject: x\r\n\r\nContent-Type: text/html\r\n",
        body,
        &pixel(),
    );
    assert!(matches!(got, Err(InjectError::Malformed(_))), "{got:?}");
}

#[test]
fn too_large() {
    let big = vec![b'a'; MAX_SIZE + 1];
    assert!(matches!(
        inject_body(b"Content-Type: text/html\r\n", &big, &pixel()),
        Err(InjectError::TooLarge)
    ));
    assert!(matches!(
        inject_message(&big, &pixel()),
        Err(InjectError::TooLarge)
    ));
}

/// The bytes `output` has beyond `input`, when it is `input` with one run of bytes inserted.
fn single_insertion<'a>(input: &[u8], output: &'a [u8]) -> Option<&'a [u8]> {
    let extra = output.len().checked_sub(input.len())?;
    let prefix = input.iter().zip(output).take_while(|(a, b)| a == b).count();
    let (head, rest) = output.split_at(prefix);
    let (inserted, tail) = rest.split_at_checked(extra)?;
    (head == &input[..prefix] && tail == &input[prefix..]).then_some(inserted)
}

/// Garbage never panics, and nothing half-rewritten escapes: each input is refused, left alone,
/// or comes back as exactly the input with one insertion that holds the pixel tag once (decoded
/// from quoted-printable where the part is encoded so) and nothing else of substance.
#[test]
fn broken_input_does_not_panic() {
    use Want::{Malformed, Rewritten, Unchanged};
    let no_html = || Unchanged(Skip::NoHtmlPart);
    // (input, inject_message, inject_body with the input as both headers and body)
    let cases: [(&[u8], Want, Want); 12] = [
        (b"", no_html(), no_html()),
        (b"\r\n\r\n", no_html(), Malformed),
        (b"garbage without headers", no_html(), no_html()),
        (
            b"Content-Type: multipart/mixed\r\n\r\n--x\r\nContent-Type: text/html\r\n\r\n<body>",
            Malformed,
            Malformed,
        ),
        (
            b"Content-Type: multipart/mixed; boundary=\"\"\r\n\r\n----\r\n\r\n<body>\r\n------\r\n",
            Malformed,
            Malformed,
        ),
        (
            b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/html\r\n\r\n<body>--x--",
            Malformed,
            Malformed,
        ),
        (
            b"Content-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!!\r\n",
            Malformed, // a base64 decoding error
            Malformed,
        ),
        (
            b"Content-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n==\r\n",
            Rewritten,
            Malformed,
        ),
        (
            b"Content-Type: text/html; charset=\"\r\n\r\n<body>",
            Rewritten,
            Malformed,
        ),
        (
            b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n--x\r\n--x--\r\n",
            no_html(),
            Malformed,
        ),
        (
            b"Content-Type: message/rfc822\r\n\r\nContent-Type: text/html\r\n\r\n<body>x</body>",
            no_html(),
            Malformed,
        ),
        (
            b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nContent-Type: text/html\r\n\r\n<b>\r\n--d--\r\n",
            no_html(),
            Malformed,
        ),
    ];
    for (raw, want_message, want_body) in cases {
        let shown = String::from_utf8_lossy(raw);
        for (entry, got, want) in [
            (
                "inject_message",
                inject_message(raw, &pixel()),
                want_message,
            ),
            ("inject_body", inject_body(raw, raw, &pixel()), want_body),
        ] {
            match (got, want) {
                (Ok(Outcome::Rewritten(out)), Rewritten) => {
                    let inserted = single_insertion(raw, &out).unwrap_or_else(|| {
                        panic!("{entry}({shown:?}): not the input plus one insertion")
                    });
                    // Undo quoted-printable (soft breaks, =3D) where the part uses it.
                    let text = String::from_utf8_lossy(inserted)
                        .replace("=\r\n", "")
                        .replace("=3D", "=");
                    assert_eq!(text.matches(TAG).count(), 1, "{entry}({shown:?}): {text:?}");
                    assert!(
                        text.replacen(TAG, "", 1).trim().is_empty(),
                        "{entry}({shown:?}): more than the tag was inserted: {text:?}"
                    );
                }
                (Ok(Outcome::Unchanged(got)), Unchanged(want)) => {
                    assert_eq!(got, want, "{entry}({shown:?})")
                }
                (Err(InjectError::Malformed(_) | InjectError::Encoding(_)), Malformed) => {}
                (got, want) => panic!("{entry}({shown:?}): expected {want:?}, got {got:?}"),
            }
        }
    }
}

/// 50,000 attached messages one inside the other (1.6 MB of headers): refused at the nesting
/// limit, without recursing 50,000 levels deep (the test thread has a 2 MiB stack).
#[test]
fn deeply_nested_messages_do_not_overflow_the_stack() {
    let mut raw = "Content-Type: message/rfc822\r\n\r\n".repeat(50_000);
    raw.push_str("Content-Type: text/html\r\n\r\n<body>x</body>\r\n");
    let got = inject_message(raw.as_bytes(), &pixel());
    assert!(matches!(got, Err(InjectError::Malformed(_))), "{got:?}");
}

/// Each enclosing multipart costs a scan of the part, so the depth is bounded.
#[test]
fn multipart_depth_is_bounded() {
    let nested = |depth: usize| {
        let mut raw = String::new();
        for i in 0..depth {
            raw.push_str(&format!(
                "Content-Type: multipart/mixed; boundary=b{i}x\r\n\r\n--b{i}x\r\n"
            ));
        }
        raw.push_str("Content-Type: text/html\r\n\r\n<body>x</body>\r\n");
        for i in (0..depth).rev() {
            raw.push_str(&format!("--b{i}x--\r\n"));
        }
        inject_message(raw.as_bytes(), &pixel())
    };
    assert!(matches!(nested(32), Ok(Outcome::Rewritten(_))));
    assert!(matches!(nested(33), Err(InjectError::Malformed(_))));
    assert!(matches!(nested(5000), Err(InjectError::Malformed(_))));
}

/// Bodies far over the sizes the fixtures and property tests use (base64 is decoded in blocks of
/// 64 lines, and cut points exist only between blocks): the rewrite still decodes, for
/// mail-parser, to the original HTML plus the pixel, and only the bytes near the pixel change.
#[test]
fn large_encoded_parts() {
    use base64::Engine as _;
    let row = "<tr><td style=\"color:#333\">Gr\u{fc}\u{df}e aus Z\u{fc}rich &amp; caf\u{e9} \u{1F600}</td></tr>\r\n";
    let html = format!(
        "<html><body><table>\r\n{}</table></body></html>\r\n",
        row.repeat(4000)
    );
    let b64 = base64::engine::general_purpose::STANDARD.encode(&html);
    let b64_lines = b64
        .as_bytes()
        .chunks(76)
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect::<Vec<_>>();
    let qp = String::from_utf8(quoted_printable::encode(html.as_bytes())).unwrap();
    for (cte, body) in [("base64", b64_lines.join("\r\n")), ("quoted-printable", qp)] {
        let raw = message(
            "multipart/alternative; boundary=\"=_b\"",
            "",
            &format!(
                "--=_b\r\nContent-Type: text/plain\r\n\r\nplain\r\n--=_b\r\nContent-Type: text/html; charset=utf-8\r\n\
                 Content-Transfer-Encoding: {cte}\r\n\r\n{body}\r\n--=_b--\r\n"
            ),
        );
        oracle::assert_same_choice(cte, &raw, true);
        let Outcome::Rewritten(out) = inject_message(&raw, &pixel()).unwrap() else {
            panic!("{cte}: not rewritten");
        };
        let parsed = MessageParser::default().parse(&out).unwrap();
        let got = parsed.body_html(0).unwrap().replace('\r', "");
        let want = html
            .replacen("</body>", &format!("\r\n{TAG}\r\n</body>"), 1)
            .replace('\r', "");
        assert_eq!(got, want, "{cte}");
        let same_prefix = raw.iter().zip(&out).take_while(|(a, b)| a == b).count();
        let same_suffix = raw
            .iter()
            .rev()
            .zip(out.iter().rev())
            .take_while(|(a, b)| a == b)
            .count();
        let rewritten = out.len() - same_prefix - same_suffix;
        // The pixel sits at the end of the body: a few lines change, not the 600 KB before them.
        assert!(rewritten < 5000, "{cte}: {rewritten} bytes rewritten");
        assert!(
            same_prefix > raw.len() * 9 / 10,
            "{cte}: prefix {same_prefix}"
        );
    }
}
