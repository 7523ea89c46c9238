//! Fuzzes the tracking rewrite: any input must come back without a panic, and a rewritten
//! message must still parse.
#![no_main]

use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use mailserver::tracking::{BaseUrl, TrackingId, pixel_url};
use mailserver_milter::rewrite::{Outcome, inject_body, inject_message};

static PANIC_HOOK: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    // libfuzzer-sys aborts on every panic, even one that is caught. The rewrite deliberately
    // catches mail-parser's debug assertions (see `rewrite::parse`), and so does the check
    // below, so replace its hook: a panic that escapes still aborts in libfuzzer-sys' own
    // wrapper.
    PANIC_HOOK.call_once(|| {
        // mail-parser's caught assertions would print a backtrace per input; any other panic
        // is reported as usual.
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.location().is_some_and(|l| l.file().contains("mail-parser")) {
                default(info);
            }
        }));
    });

    let pixel = pixel_url(
        &BaseUrl::parse("https://x").expect("valid URL"),
        &TrackingId::parse("TrackingIdForTestsAAAA").expect("valid id"),
    );
    if let Ok(Outcome::Rewritten(out)) = inject_message(data, &pixel) {
        // mail-parser's own debug assertions fire on some malformed input: where they fire on
        // the input, its reading of the output says nothing.
        let parses = |m: &[u8]| {
            std::panic::catch_unwind(|| mail_parser::MessageParser::default().parse(m).is_some())
                .ok()
        };
        if parses(data).is_some() {
            assert_eq!(parses(&out), Some(true), "rewritten message does not parse");
        }
    }
    // The body entry point, with the header block cut at the first blank line if there is one.
    if let Some(i) = data.windows(2).position(|w| w == b"\n\n") {
        let _ = inject_body(&data[..=i], &data[i + 2..], &pixel);
    }
});
