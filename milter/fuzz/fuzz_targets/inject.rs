//! Fuzzes the tracking rewrite: any input must come back without a panic, and a rewritten
//! message must still parse.
#![no_main]

use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use mailserver_milter::rewrite::{Outcome, PixelUrl, inject_body, inject_message};

static PANIC_HOOK: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    // libfuzzer-sys aborts on every panic, even one that is caught. The rewrite deliberately
    // catches mail-parser's debug assertions (see `rewrite::parse`), so restore the default
    // hook: a panic that escapes `inject_*` still aborts in libfuzzer-sys' own wrapper.
    PANIC_HOOK.call_once(|| drop(std::panic::take_hook()));

    let pixel = PixelUrl::parse("https://mail.example.test/pixel?id=TESTID").expect("valid URL");
    if let Ok(Outcome::Rewritten(out)) = inject_message(data, &pixel) {
        assert!(
            mail_parser::MessageParser::default().parse(&out).is_some(),
            "rewritten message does not parse"
        );
    }
    // The body entry point, with the header block cut at the first blank line if there is one.
    if let Some(i) = data.windows(2).position(|w| w == b"\n\n") {
        let _ = inject_body(&data[..=i], &data[i + 2..], &pixel);
    }
});
