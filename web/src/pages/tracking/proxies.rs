//! Which opens were made by an image proxy, a security scanner or a known mail client rather than
//! (or on behalf of) a person, judged from the user agent and, where the ranges are well known, the
//! client IP. A pure function so it can be tested with a table.
//!
//! These are hints: an Apple Mail Privacy Protection fetch happens when the message is delivered,
//! whether or not anyone reads it; scanners fetch every image of every message they check.

use std::net::IpAddr;

/// What kind of fetcher an open came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Fetches images on behalf of a mailbox (possibly before or without anyone reading).
    Proxy,
    /// Fetches links and images to check them for threats: not a read.
    Scanner,
    /// A known mail client fetching directly (a likely real open).
    Client,
}

impl Kind {
    pub(crate) fn word(self) -> &'static str {
        match self {
            Self::Proxy => "proxy",
            Self::Scanner => "scanner",
            Self::Client => "client",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Label {
    pub(crate) text: &'static str,
    pub(crate) kind: Kind,
}

enum Ua {
    /// The whole user agent, exactly.
    Exact(&'static str),
    /// A substring, compared without regard to ASCII case.
    Contains(&'static str),
}

const APPLE_MPP: &str = "Apple Mail Privacy Protection (likely)";
const MICROSOFT_EOP: &str = "Microsoft Exchange Online Protection (scanner)";

/// User agents of image proxies: checked first, as they are specific.
const PROXY_UAS: &[(Ua, &str, Kind)] = &[
    // Apple's proxy sends nothing but this; some other fetchers do too, hence "likely".
    (Ua::Exact("Mozilla/5.0"), APPLE_MPP, Kind::Proxy),
    (
        Ua::Contains("GoogleImageProxy"),
        "Google image proxy (Gmail)",
        Kind::Proxy,
    ),
    (
        Ua::Contains("YahooMailProxy"),
        "Yahoo Mail image proxy",
        Kind::Proxy,
    ),
    (
        Ua::Contains("OutlookProxy"),
        "Microsoft Outlook image proxy",
        Kind::Proxy,
    ),
];

/// Scanners, scripts and known clients: checked after the address ranges. First match wins, so the
/// named products come before generic words such as "bot".
const OTHER_UAS: &[(Ua, &str, Kind)] = &[
    (
        Ua::Contains("Barracuda"),
        "Barracuda link scanner",
        Kind::Scanner,
    ),
    (
        Ua::Contains("Proofpoint"),
        "Proofpoint link scanner",
        Kind::Scanner,
    ),
    (
        Ua::Contains("Mimecast"),
        "Mimecast link scanner",
        Kind::Scanner,
    ),
    (
        Ua::Contains("python-requests"),
        "Script (python-requests)",
        Kind::Scanner,
    ),
    (
        Ua::Contains("python-urllib"),
        "Script (Python urllib)",
        Kind::Scanner,
    ),
    (Ua::Contains("curl/"), "Script (curl)", Kind::Scanner),
    (Ua::Contains("Wget"), "Script (Wget)", Kind::Scanner),
    (Ua::Contains("Go-http-client"), "Script (Go)", Kind::Scanner),
    (
        Ua::Contains("HeadlessChrome"),
        "Headless browser (scanner)",
        Kind::Scanner,
    ),
    (Ua::Contains("crawler"), "Crawler", Kind::Scanner),
    (Ua::Contains("spider"), "Crawler", Kind::Scanner),
    (Ua::Contains("bot"), "Bot", Kind::Scanner),
    (
        Ua::Contains("Outlook-iOS"),
        "Microsoft Outlook (iOS)",
        Kind::Client,
    ),
    (
        Ua::Contains("Outlook-Android"),
        "Microsoft Outlook (Android)",
        Kind::Client,
    ),
    (
        Ua::Contains("Microsoft Outlook"),
        "Microsoft Outlook",
        Kind::Client,
    ),
    (
        Ua::Contains("Microsoft Office"),
        "Microsoft Outlook",
        Kind::Client,
    ),
    (Ua::Contains("ms-office"), "Microsoft Outlook", Kind::Client),
];

/// Published address ranges whose fetches are automated: Apple's own network (17.0.0.0/8, which
/// Mail Privacy Protection also uses) and Microsoft's Exchange Online Protection, which scans mail.
const IP_RULES: &[(&str, u8, &str, Kind)] = &[
    ("17.0.0.0", 8, "Apple Mail Privacy Protection", Kind::Proxy),
    ("40.92.0.0", 15, MICROSOFT_EOP, Kind::Scanner),
    ("40.107.0.0", 16, MICROSOFT_EOP, Kind::Scanner),
    ("52.100.0.0", 14, MICROSOFT_EOP, Kind::Scanner),
    ("104.47.0.0", 17, MICROSOFT_EOP, Kind::Scanner),
    ("2a01:111:f400::", 48, MICROSOFT_EOP, Kind::Scanner),
    ("2a01:111:f403::", 48, MICROSOFT_EOP, Kind::Scanner),
];

fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

fn in_range(ip: IpAddr, net: &str, prefix: u8) -> bool {
    let Ok(net) = net.parse::<IpAddr>() else {
        return false;
    };
    let (ip, net, bits) = match (ip.to_canonical(), net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => (u128::from(u32::from(a)), u128::from(u32::from(n)), 32),
        (IpAddr::V6(a), IpAddr::V6(n)) => (u128::from(a), u128::from(n), 128),
        _ => return false,
    };
    let shift = bits - u32::from(prefix.min(bits as u8));
    shift >= bits || (ip >> shift) == (net >> shift)
}

fn by_user_agent(rules: &[(Ua, &'static str, Kind)], ua: &str) -> Option<Label> {
    rules.iter().find_map(|(rule, text, kind)| {
        let hit = match rule {
            Ua::Exact(s) => ua == *s,
            Ua::Contains(s) => contains_ignore_case(ua, s),
        };
        hit.then_some(Label { text, kind: *kind })
    })
}

fn by_address(client_ip: &str) -> Option<Label> {
    let ip = client_ip.trim().parse::<IpAddr>().ok()?;
    IP_RULES
        .iter()
        .find(|(net, prefix, ..)| in_range(ip, net, *prefix))
        .map(|(_, _, text, kind)| Label { text, kind: *kind })
}

/// The label for an open, if its user agent or client IP is a known proxy, scanner or client.
pub(crate) fn classify(user_agent: &str, client_ip: &str) -> Option<Label> {
    let ua = user_agent.trim();
    by_user_agent(PROXY_UAS, ua)
        .or_else(|| by_address(client_ip))
        .or_else(|| {
            ua.is_empty().then_some(Label {
                text: "No user agent (automated, likely)",
                kind: Kind::Scanner,
            })
        })
        .or_else(|| by_user_agent(OTHER_UAS, ua))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        let chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36";
        type Case<'a> = (&'a str, &'a str, Option<(&'a str, Kind)>);
        let cases: &[Case<'_>] = &[
            ("Mozilla/5.0", "203.0.113.7", Some((APPLE_MPP, Kind::Proxy))),
            (" Mozilla/5.0 ", "", Some((APPLE_MPP, Kind::Proxy))),
            (
                "Mozilla/5.0 (Macintosh)",
                "17.58.1.2",
                Some(("Apple Mail Privacy Protection", Kind::Proxy)),
            ),
            (
                "Mozilla/5.0 (Macintosh)",
                "::ffff:17.1.2.3",
                Some(("Apple Mail Privacy Protection", Kind::Proxy)),
            ),
            ("Mozilla/5.0 (Macintosh)", "18.1.2.3", None),
            (
                "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
                "66.249.84.1",
                Some(("Google image proxy (Gmail)", Kind::Proxy)),
            ),
            (
                "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html",
                "",
                Some(("Yahoo Mail image proxy", Kind::Proxy)),
            ),
            (
                "Mozilla/5.0 (compatible; OutlookProxy)",
                "",
                Some(("Microsoft Outlook image proxy", Kind::Proxy)),
            ),
            (chrome, "40.107.22.1", Some((MICROSOFT_EOP, Kind::Scanner))),
            (
                chrome,
                "2a01:111:f400:7e1b::1",
                Some((MICROSOFT_EOP, Kind::Scanner)),
            ),
            (chrome, "2a01:111:f500::1", None),
            (
                "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17328; Pro)",
                "198.51.100.4",
                Some(("Microsoft Outlook", Kind::Client)),
            ),
            (
                "Mozilla/4.0 (compatible; ms-office; MSOffice 16)",
                "",
                Some(("Microsoft Outlook", Kind::Client)),
            ),
            (
                "Outlook-iOS/723.4027091.prod.iphone (4.2.0)",
                "",
                Some(("Microsoft Outlook (iOS)", Kind::Client)),
            ),
            (
                "Barracuda Sentinel (EE)",
                "",
                Some(("Barracuda link scanner", Kind::Scanner)),
            ),
            (
                "Mozilla/5.0 Proofpoint URL Defense",
                "",
                Some(("Proofpoint link scanner", Kind::Scanner)),
            ),
            (
                "mimecast-url-protect",
                "",
                Some(("Mimecast link scanner", Kind::Scanner)),
            ),
            (
                "python-requests/2.31.0",
                "",
                Some(("Script (python-requests)", Kind::Scanner)),
            ),
            ("curl/8.5.0", "", Some(("Script (curl)", Kind::Scanner))),
            (
                "Mozilla/5.0 (compatible; Googlebot/2.1)",
                "",
                Some(("Bot", Kind::Scanner)),
            ),
            ("SomeCrawler/1.0", "", Some(("Crawler", Kind::Scanner))),
            (
                "",
                "198.51.100.4",
                Some(("No user agent (automated, likely)", Kind::Scanner)),
            ),
            (chrome, "198.51.100.4", None),
            ("Thunderbird/115.0", "not an ip", None),
        ];
        for (ua, ip, want) in cases {
            let got = classify(ua, ip).map(|l| (l.text, l.kind));
            assert_eq!(got, *want, "{ua:?} from {ip:?}");
        }
    }

    #[test]
    fn ranges() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(in_range(ip("10.1.2.3"), "10.0.0.0", 8));
        assert!(!in_range(ip("11.0.0.0"), "10.0.0.0", 8));
        assert!(in_range(ip("1.2.3.4"), "0.0.0.0", 0));
        assert!(in_range(ip("1.2.3.4"), "1.2.3.4", 32));
        assert!(!in_range(ip("1.2.3.5"), "1.2.3.4", 32));
        assert!(!in_range(ip("::1"), "10.0.0.0", 8));
    }
}
