//! The DNS records a domain needs: MX, SPF, DKIM and DMARC, in zone-file syntax.

use crate::names::{Domain, Hostname, Selector};

/// One record to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Fully qualified owner name with a trailing dot.
    pub name: String,
    pub kind: &'static str,
    /// The value as one string (for TXT: the unquoted text, however long).
    pub value: String,
}

impl Record {
    /// The value as it appears in a zone file: TXT text split into quoted strings of at most 255
    /// characters (RFC 1035 character-strings), other types verbatim.
    pub fn zone_value(&self) -> String {
        if self.kind == "TXT" {
            split_txt(&self.value)
                .iter()
                .map(|s| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(" ")
        } else {
            self.value.clone()
        }
    }

    /// `name TTL IN TYPE value`, one line.
    pub fn zone_line(&self) -> String {
        format!(
            "{}\t3600\tIN\t{}\t{}",
            self.name,
            self.kind,
            self.zone_value()
        )
    }
}

/// Splits TXT text into chunks of at most 255 characters (the text is ASCII).
pub fn split_txt(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while rest.len() > 255 {
        let (a, b) = rest.split_at(255);
        out.push(a);
        rest = b;
    }
    out.push(rest);
    out
}

/// The records for `domain`, whose mail is handled by `hostname`.
pub fn records(
    domain: &Domain,
    hostname: &Hostname,
    dkim: Option<(&Selector, &str)>,
) -> Vec<Record> {
    let mut out = vec![
        Record {
            name: format!("{domain}."),
            kind: "MX",
            value: format!("10 {hostname}."),
        },
        Record {
            name: format!("{domain}."),
            kind: "TXT",
            value: "v=spf1 mx -all".to_string(),
        },
    ];
    if let Some((selector, public_b64)) = dkim {
        out.push(Record {
            name: format!("{selector}._domainkey.{domain}."),
            kind: "TXT",
            value: format!("v=DKIM1; k=rsa; p={public_b64}"),
        });
    }
    out.push(Record {
        name: format!("_dmarc.{domain}."),
        kind: "TXT",
        value: format!("v=DMARC1; p=quarantine; rua=mailto:postmaster@{domain}; adkim=s; aspf=s"),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_long_txt() {
        let text = "a".repeat(600);
        let parts = split_txt(&text);
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            vec![255, 255, 90]
        );
        assert_eq!(split_txt("short"), vec!["short"]);
        assert_eq!(split_txt(&"b".repeat(255)).len(), 1);
    }

    #[test]
    fn record_set() {
        let d = Domain::parse("example.com").unwrap();
        let h = Hostname::parse("mx.example.com").unwrap();
        let sel = Selector::parse("mail").unwrap();
        let key = "K".repeat(392);
        let recs = records(&d, &h, Some((&sel, &key)));
        let kinds: Vec<_> = recs.iter().map(|r| (r.name.as_str(), r.kind)).collect();
        assert_eq!(
            kinds,
            vec![
                ("example.com.", "MX"),
                ("example.com.", "TXT"),
                ("mail._domainkey.example.com.", "TXT"),
                ("_dmarc.example.com.", "TXT"),
            ]
        );
        assert_eq!(
            recs[0].zone_line(),
            "example.com.\t3600\tIN\tMX\t10 mx.example.com."
        );
        let dkim = &recs[2];
        assert!(dkim.value.starts_with("v=DKIM1; k=rsa; p=KKK"));
        let zone = dkim.zone_value();
        assert_eq!(zone.matches('"').count(), 4, "{zone}");
        // Joining the strings gives back the whole value.
        assert_eq!(zone.replace("\" \"", "").trim_matches('"'), dkim.value);
    }
}
