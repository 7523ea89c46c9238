//! Throughput of the tracking rewrite on large HTML messages, next to lol_html alone.
//!
//! ```text
//! cargo bench -p mailserver-milter --bench rewrite                  # the benchmark
//! cargo bench -p mailserver-milter --bench rewrite -- --emit DIR MB # write test messages, no timing
//! ```
//! Builds ~`BENCH_MB` (default 10) MB of newsletter-like HTML (nested tables, paragraphs, links,
//! entities, non-ASCII text) in memory and wraps it three ways: 8bit `text/html`, quoted-printable
//! inside `multipart/alternative`, base64 inside `multipart/related`. For each, `inject_message`
//! is timed `BENCH_ITERS` (default 7) times and the median reported as MB/s of message input.
//! Beside it, lol_html alone runs on the same decoded HTML with the same kind of handler (append
//! before the `<body>` end tag, 64 KiB writes into a `Vec` sink). `ratio` is rewrite MB/s (of the
//! message) / lol_html MB/s (of the HTML), goal >= 0.5; `time ratio` is time(lol_html) /
//! time(rewrite), i.e. per HTML handled, which is lower where the encoded message is larger than
//! its HTML. Prints numbers only; nothing here passes or fails.
//!
//! `--emit DIR MB` writes `html-8bit.eml`, `html-qp.eml` and `html-base64.eml` with about MB MB of
//! HTML each (CRLF line endings), for scripts/bench-milter.sh.

use std::hint::black_box;
use std::time::{Duration, Instant};

use base64::Engine as _;
use lol_html::html_content::ContentType;
use lol_html::{AsciiCompatibleEncoding, HtmlRewriter, Settings, element, end_tag};
use mailserver::tracking::{BaseUrl, TrackingId, pixel_url};
use mailserver_milter::rewrite::{Outcome, inject_message};

const MB: f64 = 1_000_000.0;
const CHUNK: usize = 64 * 1024;
const BASE_URL: &str = "https://mx.example.test";
const TRACKING_ID: &str = "AAAAAAAAAAAAAAAAAAAAAA";

/// xorshift64*: deterministic, so every run benchmarks the same bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap_or(0)
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items.get(self.below(items.len())).copied().unwrap_or("")
    }
}

const WORDS: &[&str] = &[
    "the",
    "newsletter",
    "offer",
    "customer",
    "update",
    "account",
    "summer",
    "product",
    "team",
    "new",
    "features",
    "release",
    "discount",
    "shipping",
    "order",
    "community",
    "event",
    "ticket",
    "schedule",
    "report",
    "welcome",
    "privacy",
    "settings",
    "weekly",
    "digest",
    "story",
    "guide",
    "and",
    "with",
    "for",
    "from",
    "your",
    "our",
    "this",
    "that",
    "more",
    "about",
    "today",
    "Grüße",
    "Straße",
    "Übersicht",
    "café",
    "naïve",
    "façade",
    "déjà",
    "crème",
    "Zürich",
    "München",
    "€29,99",
    "—",
    "“Angebot”",
    "¡Hola!",
    "Привет",
    "новости",
    "日本語",
    "東京",
    "お知らせ",
    "ニュース",
    "Ελλάδα",
    "😀",
    "🎉",
    "&amp;",
    "&nbsp;",
    "&copy;",
    "&eacute;",
];
const COLORS: &[&str] = &[
    "#333333", "#1a73e8", "#555555", "#0b8043", "#d93025", "#202124",
];
const FONTS: &[&str] = &[
    "Arial,Helvetica,sans-serif",
    "Georgia,'Times New Roman',serif",
    "'Segoe UI',Roboto,sans-serif",
];

/// `min` to `min + spread - 1` words.
fn sentence(rng: &mut Rng, out: &mut String, min: usize, spread: usize) {
    let words = min + rng.below(spread.max(1));
    for i in 0..words {
        if i > 0 {
            // Break lines now and then: 8bit mail must keep lines under 998 octets.
            out.push_str(if i % 14 == 0 { "\r\n" } else { " " });
        }
        out.push_str(rng.pick(WORDS));
    }
    out.push('.');
}

fn link(rng: &mut Rng, out: &mut String) {
    let id = rng.next();
    out.push_str(&format!(
        "<a href=\"https://news.example.test/r/{id:016x}?utm_source=newsletter&amp;utm_medium=email&amp;utm_campaign=w{}\" style=\"color:{};text-decoration:underline\">",
        rng.below(52),
        rng.pick(COLORS)
    ));
    sentence(rng, out, 2, 4);
    out.push_str("</a>");
}

fn paragraph(rng: &mut Rng, out: &mut String) {
    out.push_str(&format!(
        "<p style=\"margin:0 0 12px 0;font-family:{};font-size:15px;line-height:22px;color:{}\">",
        rng.pick(FONTS),
        rng.pick(COLORS)
    ));
    for _ in 0..1 + rng.below(3) {
        sentence(rng, out, 8, 20);
        out.push(' ');
        match rng.below(4) {
            0 => link(rng, out),
            1 => {
                out.push_str("<strong>");
                sentence(rng, out, 2, 1);
                out.push_str("</strong>");
            }
            2 => {
                out.push_str("<em>");
                sentence(rng, out, 3, 1);
                out.push_str("</em>");
            }
            _ => {}
        }
        out.push_str("\r\n");
    }
    out.push_str("</p>\r\n");
}

fn article(rng: &mut Rng, out: &mut String, n: usize) {
    out.push_str(
        "<table role=\"presentation\" class=\"card\" width=\"600\" cellpadding=\"0\" cellspacing=\"0\" border=\"0\" style=\"background:#ffffff;border-radius:4px\">\r\n<tr>\r\n<td style=\"padding:24px 32px\">\r\n",
    );
    out.push_str(&format!(
        "<!-- article {n} -->\r\n<h2 style=\"margin:0 0 16px 0;font-family:{};font-size:22px;color:#202124\">",
        rng.pick(FONTS)
    ));
    sentence(rng, out, 3, 6);
    out.push_str("</h2>\r\n");
    for _ in 0..1 + rng.below(3) {
        paragraph(rng, out);
    }
    // A nested two-column table with an image, as newsletter templates do.
    out.push_str(&format!(
        "<table role=\"presentation\" width=\"100%\" cellpadding=\"0\" cellspacing=\"0\" border=\"0\">\r\n<tr>\r\n<td width=\"160\" valign=\"top\" style=\"padding:0 16px 0 0\"><img src=\"https://cdn.example.test/img/{:012x}.jpg\" width=\"160\" height=\"120\" alt=\"Bild {n}\" style=\"display:block;border:0\"></td>\r\n<td valign=\"top\">\r\n",
        rng.next() & 0xffff_ffff_ffff
    ));
    paragraph(rng, out);
    out.push_str("<ul style=\"margin:0;padding:0 0 0 20px\">\r\n");
    for _ in 0..2 + rng.below(3) {
        out.push_str("<li style=\"margin:0 0 6px 0\">");
        sentence(rng, out, 4, 8);
        out.push_str("</li>\r\n");
    }
    out.push_str("</ul>\r\n</td>\r\n</tr>\r\n</table>\r\n");
    out.push_str("<table role=\"presentation\" cellpadding=\"0\" cellspacing=\"0\" border=\"0\"><tr><td style=\"background:#1a73e8;border-radius:3px;padding:10px 18px\">");
    link(rng, out);
    out.push_str("</td></tr></table>\r\n</td>\r\n</tr>\r\n</table>\r\n<div style=\"height:16px;line-height:16px\">&nbsp;</div>\r\n");
}

/// About `size` bytes of newsletter HTML, CRLF line endings, ending in `</body></html>`.
fn make_html(size: usize, seed: u64) -> String {
    let mut rng = Rng(seed | 1);
    let mut out = String::with_capacity(size + 64 * 1024);
    out.push_str("<!DOCTYPE html>\r\n<html lang=\"de\">\r\n<head>\r\n<meta charset=\"utf-8\">\r\n<meta name=\"viewport\" content=\"width=device-width\">\r\n<title>Wöchentliche Übersicht — News</title>\r\n<style type=\"text/css\">\r\nbody{margin:0;padding:0}\r\ntable{border-collapse:collapse}\r\n.card td{font-family:Arial,sans-serif}\r\n@media (max-width:620px){.card{width:100%!important}}\r\n</style>\r\n</head>\r\n<body style=\"margin:0;padding:0;background:#f4f4f4\">\r\n");
    out.push_str("<div style=\"display:none;max-height:0;overflow:hidden\">Diese Woche: Neuigkeiten, Angebote &amp; mehr …</div>\r\n");
    out.push_str("<table role=\"presentation\" width=\"100%\" cellpadding=\"0\" cellspacing=\"0\" border=\"0\" style=\"background:#f4f4f4\">\r\n<tr>\r\n<td align=\"center\" style=\"padding:24px 0\">\r\n");
    let mut n = 0;
    while out.len() < size.saturating_sub(1024) {
        article(&mut rng, &mut out, n);
        n += 1;
    }
    out.push_str("</td>\r\n</tr>\r\n</table>\r\n<p style=\"font-family:Arial,sans-serif;font-size:12px;color:#888888;text-align:center\">Sie erhalten diese E-Mail, weil Sie sich angemeldet haben. <a href=\"https://news.example.test/unsubscribe?u=42&amp;l=de\">Abmelden</a> · <a href=\"https://news.example.test/privacy\">Datenschutz</a><br>\r\nExample GmbH, Musterstraße 1, 80331 München</p>\r\n</body>\r\n</html>\r\n");
    out
}

fn headers(content_type: &str, cte: Option<&str>) -> String {
    let mut h = String::from(
        "From: Example News <news@example.test>\r\nTo: rcpt@sink.test\r\nSubject: =?utf-8?q?W=C3=B6chentliche_=C3=9Cbersicht?=\r\nDate: Mon, 23 Nov 2026 10:00:00 +0100\r\nMessage-ID: <bench.1@example.test>\r\nMIME-Version: 1.0\r\n",
    );
    h.push_str(&format!("Content-Type: {content_type}\r\n"));
    if let Some(cte) = cte {
        h.push_str(&format!("Content-Transfer-Encoding: {cte}\r\n"));
    }
    h.push_str("\r\n");
    h
}

fn base64_lines(data: &[u8]) -> Vec<u8> {
    let text = base64::engine::general_purpose::STANDARD.encode(data);
    let mut out = Vec::with_capacity(text.len() + text.len() / 76 * 2 + 2);
    for line in text.as_bytes().chunks(76) {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The plain-text alternative: the text of the HTML, tags dropped (about a third of its size).
fn plain_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 3);
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

struct Case {
    name: &'static str,
    key: &'static str,
    message: Vec<u8>,
}

fn cases(html: &str) -> Vec<Case> {
    let mut eightbit = headers("text/html; charset=utf-8", Some("8bit")).into_bytes();
    eightbit.extend_from_slice(html.as_bytes());

    let mut qp = headers("multipart/alternative; boundary=\"=_alt_7f3a9c\"", None).into_bytes();
    qp.extend_from_slice(b"This is a multi-part message in MIME format.\r\n\r\n--=_alt_7f3a9c\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n");
    qp.extend_from_slice(&quoted_printable::encode(plain_text(html)));
    qp.extend_from_slice(b"\r\n--=_alt_7f3a9c\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n");
    qp.extend_from_slice(&quoted_printable::encode(html));
    qp.extend_from_slice(b"\r\n--=_alt_7f3a9c--\r\n");

    let mut b64 = headers(
        "multipart/related; type=\"text/html\"; boundary=\"=_rel_51be02\"",
        None,
    )
    .into_bytes();
    b64.extend_from_slice(b"--=_rel_51be02\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n");
    b64.extend_from_slice(&base64_lines(html.as_bytes()));
    b64.extend_from_slice(b"--=_rel_51be02\r\nContent-Type: image/png; name=\"logo.png\"\r\nContent-Transfer-Encoding: base64\r\nContent-ID: <logo@example.test>\r\nContent-Disposition: inline; filename=\"logo.png\"\r\n\r\n");
    let mut rng = Rng(0x5eed);
    let image: Vec<u8> = (0..200_000).map(|_| rng.next().to_le_bytes()[0]).collect();
    b64.extend_from_slice(&base64_lines(&image));
    b64.extend_from_slice(b"--=_rel_51be02--\r\n");

    vec![
        Case {
            name: "8bit text/html",
            key: "8bit",
            message: eightbit,
        },
        Case {
            name: "QP in multipart/alternative",
            key: "qp",
            message: qp,
        },
        Case {
            name: "base64 in multipart/related",
            key: "base64",
            message: b64,
        },
    ]
}

/// lol_html alone: the same kind of handler as the rewrite (insert before the `<body>` end tag),
/// 64 KiB writes, output collected in a `Vec`.
fn lol_html_alone(html: &[u8], tag: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(html.len() + tag.len() + 4);
    let line = format!("\r\n{tag}\r\n");
    let settings = Settings::new()
        .with_encoding(AsciiCompatibleEncoding::utf_8())
        .append_element_content_handler(element!("body", |el| {
            let line = line.clone();
            let _ = el.on_end_tag(end_tag!(move |end| {
                end.before(&line, ContentType::Html);
                Ok(())
            }));
            Ok(())
        }));
    let mut rewriter = HtmlRewriter::new(settings, |c: &[u8]| out.extend_from_slice(c));
    for piece in html.chunks(CHUNK) {
        if let Err(e) = rewriter.write(piece) {
            panic!("lol_html failed: {e}");
        }
    }
    if let Err(e) = rewriter.end() {
        panic!("lol_html failed: {e}");
    }
    out
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times.get(times.len() / 2).copied().unwrap_or_default()
}

fn time<R>(iters: usize, mut f: impl FnMut() -> R) -> Duration {
    black_box(f()); // warm-up: page faults, allocator
    median(
        (0..iters)
            .map(|_| {
                let t = Instant::now();
                black_box(f());
                t.elapsed()
            })
            .collect(),
    )
}

fn mbps(bytes: usize, t: Duration) -> f64 {
    bytes as f64 / MB / t.as_secs_f64().max(1e-9)
}

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn emit(dir: &str, mb: f64) {
    let html = make_html((mb * MB) as usize, 0xC0FF_EE00);
    for (file, case) in ["html-8bit.eml", "html-qp.eml", "html-base64.eml"]
        .iter()
        .zip(cases(&html))
    {
        let path = std::path::Path::new(dir).join(file);
        if let Err(e) = std::fs::write(&path, &case.message) {
            panic!("could not write {}: {e}", path.display());
        }
        println!(
            "{}\t{}\t{} bytes, {} bytes of HTML",
            path.display(),
            case.name,
            case.message.len(),
            html.len()
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if let [flag, dir, mb] = args.as_slice()
        && flag == "--emit"
    {
        emit(dir, mb.parse().unwrap_or(20.0));
        return;
    }
    let size_mb: f64 = env_num("BENCH_MB", 10.0);
    let iters: usize = env_num("BENCH_ITERS", 7).max(1);
    let pixel = match (BaseUrl::parse(BASE_URL), TrackingId::parse(TRACKING_ID)) {
        (Ok(base), Ok(id)) => pixel_url(&base, &id),
        _ => panic!("bad pixel URL"),
    };
    let tag = pixel.img_tag();
    let html = make_html((size_mb * MB) as usize, 0xC0FF_EE00);
    println!(
        "rewrite bench: {:.1} MB of HTML (non-ASCII: {} chars), median of {iters} runs each; MB = 10^6 bytes",
        html.len() as f64 / MB,
        html.chars().filter(|c| !c.is_ascii()).count()
    );
    println!(
        "{:<29} {:>7} {:>10} {:>12} {:>11} {:>13} {:>7} {:>10}",
        "case",
        "msg MB",
        "rewrite ms",
        "rewrite MB/s",
        "lol_html ms",
        "lol_html MB/s",
        "ratio",
        "time ratio"
    );
    // BENCH_CASES=8bit,qp,base64 picks cases (e.g. for perf); BENCH_REFERENCE=0 skips the last line.
    let only = std::env::var("BENCH_CASES").unwrap_or_default();
    for case in cases(&html) {
        if !only.is_empty() && !only.split(',').any(|k| k == case.key) {
            continue;
        }
        // Check once that the rewrite really did its job on this input.
        match inject_message(&case.message, &pixel) {
            Ok(Outcome::Rewritten(out)) if out.len() > case.message.len() => {}
            other => {
                let what = match other {
                    Ok(Outcome::Rewritten(_)) => "rewritten but not longer".to_string(),
                    Ok(Outcome::Unchanged(why)) => format!("left unchanged: {why}"),
                    Err(e) => format!("error: {e}"),
                };
                println!("{:<29} NOT REWRITTEN ({what})", case.name);
                continue;
            }
        }
        // Side by side: lol_html alone on the same decoded HTML, then the whole rewrite.
        let lol = time(iters, || lol_html_alone(black_box(html.as_bytes()), &tag));
        let t = time(iters, || inject_message(black_box(&case.message), &pixel));
        println!(
            "{:<29} {:>7.2} {:>10.1} {:>12.1} {:>11.1} {:>13.1} {:>7.2} {:>10.2}",
            case.name,
            case.message.len() as f64 / MB,
            t.as_secs_f64() * 1e3,
            mbps(case.message.len(), t),
            lol.as_secs_f64() * 1e3,
            mbps(html.len(), lol),
            mbps(case.message.len(), t) / mbps(html.len(), lol),
            lol.as_secs_f64() / t.as_secs_f64().max(1e-9),
        );
    }
    println!(
        "rewrite MB/s = message bytes in / time; lol_html MB/s = decoded HTML bytes / time;\nratio = rewrite MB/s / lol_html MB/s (goal >= 0.50); time ratio = lol_html time / rewrite time, the same HTML\nhandled (differs from ratio where the encoded message is larger than its HTML)"
    );

    if std::env::var("BENCH_REFERENCE").is_ok_and(|v| v == "0") {
        return;
    }
    // Where the rest of the time goes: the building blocks, timed alone on the same inputs.
    let parts = cases(&html);
    let parse: Vec<String> = parts
        .iter()
        .map(|c| {
            let t = time(iters, || {
                mail_parser::MessageParser::default()
                    .parse(black_box(&c.message))
                    .map(|m| m.parts.len())
            });
            format!("{:.1} ms", t.as_secs_f64() * 1e3)
        })
        .collect();
    let qp = time(iters, || {
        quoted_printable::encode(black_box(html.as_bytes()))
    });
    let b64 = time(iters, || base64_lines(black_box(html.as_bytes())));
    let copy = time(iters, || black_box(html.as_bytes()).to_vec());
    println!(
        "reference, same inputs: mail-parser parse (8bit / QP / base64): {}; quoted_printable::encode {:.1} ms; base64 encode+wrap {:.1} ms; one copy of the HTML {:.1} ms",
        parse.join(" / "),
        qp.as_secs_f64() * 1e3,
        b64.as_secs_f64() * 1e3,
        copy.as_secs_f64() * 1e3,
    );
}
