//! Calendar days (UTC) without a date library: parsing `YYYY-MM-DD`, today, and day arithmetic.
//!
//! The database stores times as UTC text (`YYYY-MM-DD HH:MM:SS`, SQLite's `datetime('now')`), so a
//! day is both what a filter compares against (the text sorts like the time) and what a chart counts
//! by. It lives in the library because the queries that take days as bounds live here
//! ([`crate::store::tracking::report`]); the dashboard parses its form input with the same type.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// A calendar day, counted from 1970-01-01. Prints as `YYYY-MM-DD`, the prefix of a stored time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Day(i64);

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = (if y >= 0 { y } else { y - 399 }) / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = (if z >= 0 { z } else { z - 146_096 }) / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

impl Day {
    /// A strict `YYYY-MM-DD` between 1970 and 9999 that exists in the calendar.
    pub fn parse(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<i64> {
            let part = &s[r];
            part.bytes()
                .all(|c| c.is_ascii_digit())
                .then(|| part.parse().ok())
                .flatten()
        };
        let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
            return None;
        }
        let day = days_from_civil(y, m, d);
        (civil_from_days(day) == (y, m, d)).then_some(Self(day))
    }

    /// Today in UTC (the day of the stored times).
    pub fn today() -> Self {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        Self(secs.div_euclid(86_400))
    }

    /// The day `days` later (earlier when negative).
    pub fn plus(self, days: i64) -> Self {
        Self(self.0 + days)
    }

    /// Days from `self` to `later` (negative when `later` is earlier).
    pub fn until(self, later: Self) -> i64 {
        later.0 - self.0
    }

    /// A short label such as `Mar 7`.
    pub fn short(self) -> String {
        let (_, m, d) = civil_from_days(self.0);
        format!("{} {d}", MONTHS[(m - 1) as usize])
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = civil_from_days(self.0);
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for ok in [
            "1970-01-01",
            "2024-02-29",
            "2025-12-31",
            "2000-02-29",
            "9999-12-31",
        ] {
            assert_eq!(Day::parse(ok).unwrap().to_string(), ok);
        }
        assert_eq!(Day::parse("1970-01-01"), Some(Day(0)));
        for bad in [
            "",
            "2025-02-29",
            "1900-02-29",
            "2025-13-01",
            "2025-00-10",
            "2025-04-31",
            "25-01-01",
            "2025-1-01",
            "2025/01/01",
            "+025-01-01",
            "2025-01-0a",
            "1969-12-31",
            "2025-01-01 ",
        ] {
            assert_eq!(Day::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn arithmetic() {
        let d = Day::parse("2024-02-28").unwrap();
        assert_eq!(d.plus(1).to_string(), "2024-02-29");
        assert_eq!(d.plus(2).to_string(), "2024-03-01");
        assert_eq!(d.plus(-59).to_string(), "2023-12-31");
        assert_eq!(d.until(Day::parse("2024-03-01").unwrap()), 2);
        assert_eq!(d.short(), "Feb 28");
        assert!(Day::today() > Day::parse("2024-01-01").unwrap());
    }
}
