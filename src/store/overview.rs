//! Counts for the dashboard's overview.
//!
//! The library owns the tables, so the overview asks for its numbers here instead of writing SQL. They
//! are read in one statement, so they come from one snapshot of the database.

use rusqlite::Connection;

use super::StoreError;

/// How much the server manages, and how much tracking saw lately.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub domains: i64,
    pub accounts: i64,
    pub aliases: i64,
    pub tracked_messages: i64,
    /// Pixel fetches in the last 7 days (7 × 24 hours back from now, UTC).
    pub opens_last_7_days: i64,
}

/// The overview's numbers. Each count is over a whole table (SQLite counts it from the smallest
/// index), except the recent opens, a range on `pixel_opens (opened_at)`.
pub fn counts(conn: &Connection) -> Result<Counts, StoreError> {
    Ok(conn.query_row(
        "SELECT (SELECT count(*) FROM domains), (SELECT count(*) FROM accounts),
                (SELECT count(*) FROM aliases), (SELECT count(*) FROM tracked_messages),
                (SELECT count(*) FROM pixel_opens WHERE opened_at >= datetime('now', '-7 days'))",
        [],
        |r| {
            Ok(Counts {
                domains: r.get(0)?,
                accounts: r.get(1)?,
                aliases: r.get(2)?,
                tracked_messages: r.get(3)?,
                opens_last_7_days: r.get(4)?,
            })
        },
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testutil;

    #[test]
    fn counts_each_table_and_the_recent_opens() {
        let (_dir, conn) = testutil::conn();
        assert_eq!(counts(&conn).unwrap(), Counts::default());
        conn.execute_batch(
            "INSERT INTO domains (domain) VALUES ('a.test'), ('b.test');
             INSERT INTO accounts (domain_id, username, password_hash)
                 VALUES (1, 'alice', 'x'), (1, 'bob', 'x'), (2, 'carol', 'x');
             INSERT INTO aliases (domain_id, source, destination)
                 VALUES (1, 'news@a.test', 'alice@a.test');
             INSERT INTO tracked_messages (tracking_id, sender, recipients)
                 VALUES ('TrackingIdForTestsAAAA', 'news@a.test', 'x@y.test'),
                        ('VQx3An5C4mtsOVsTUQiGHQ', 'news@a.test', 'x@y.test');
             INSERT INTO pixel_opens (tracking_id, opened_at)
                 VALUES ('TrackingIdForTestsAAAA', datetime('now')),
                        ('TrackingIdForTestsAAAA', datetime('now', '-6 days', '-23 hours')),
                        ('VQx3An5C4mtsOVsTUQiGHQ', datetime('now', '-1 days')),
                        ('VQx3An5C4mtsOVsTUQiGHQ', datetime('now', '-7 days', '-1 hours')),
                        ('VQx3An5C4mtsOVsTUQiGHQ', '2020-01-01 00:00:00');",
        )
        .unwrap();
        assert_eq!(
            counts(&conn).unwrap(),
            Counts {
                domains: 2,
                accounts: 3,
                aliases: 1,
                tracked_messages: 2,
                opens_last_7_days: 3,
            }
        );
    }
}
