//! Reading the tracking tables for the dashboard: the list, the chart, the CSV and one message.
//!
//! The library owns the tables, so the dashboard asks these typed questions instead of writing SQL;
//! the queries sit here next to the test that reads their plans, so a change to a query is checked
//! against the indexes it must use.
//!
//! Every query goes through an index: the list walks `tracked_messages (created_at)` (or
//! `(alias_id, created_at)` with an alias filter) in order and stops after the page; open counts are
//! correlated subqueries on `pixel_opens (tracking_id, opened_at)` for the rows of the page only; the
//! chart reads `pixel_opens (opened_at)`, or the alias's messages and then their opens. Times are UTC
//! text, as stored, so a day bound is a text comparison on the indexed column.

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension as _, params_from_iter};

use crate::day::Day;
use crate::store::StoreError;
use crate::tracking::TrackingId;

/// Which tracked messages to count and list. Only the filters that are set become conditions, so the
/// planner can pick the index that fits.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Filters {
    /// Sent as this alias (`aliases.id`).
    pub alias: Option<i64>,
    /// Sent on or after this day.
    pub from: Option<Day>,
    /// Sent on or before this day.
    pub to: Option<Day>,
}

impl Filters {
    /// True when no filter is set (every tracked message).
    pub fn is_empty(&self) -> bool {
        self.alias.is_none() && self.from.is_none() && self.to.is_none()
    }

    /// The WHERE clause on `tracked_messages m` and its parameters.
    fn where_sql(&self) -> (String, Vec<Value>) {
        let mut conds = Vec::new();
        let mut params = Vec::new();
        if let Some(a) = self.alias {
            params.push(Value::Integer(a));
            conds.push(format!("m.alias_id = ?{}", params.len()));
        }
        if let Some(d) = self.from {
            params.push(Value::Text(d.to_string()));
            conds.push(format!("m.created_at >= ?{}", params.len()));
        }
        if let Some(d) = self.to {
            params.push(Value::Text(d.plus(1).to_string()));
            conds.push(format!("m.created_at < ?{}", params.len()));
        }
        let sql = if conds.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conds.join(" AND "))
        };
        (sql, params)
    }
}

/// One page of the list: the `number`-th (from 1) run of `size` rows, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub number: i64,
    pub size: i64,
}

impl Page {
    /// Rows skipped before this page (a number below 1 is the first page).
    fn offset(self) -> i64 {
        (self.number.max(1) - 1).saturating_mul(self.size.max(0))
    }
}

/// An alias the filter can offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasOption {
    /// `aliases.id`, the value of [`Filters::alias`].
    pub id: i64,
    /// The alias's address (or `@domain`), as stored.
    pub source: String,
}

/// One tracked message with its opens, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRow {
    /// The random id in the message's pixel URL.
    pub tracking_id: String,
    /// When the milter recorded the message (UTC, `YYYY-MM-DD HH:MM:SS`).
    pub sent_at: String,
    /// The envelope sender.
    pub sender: String,
    /// Every envelope recipient, comma-separated.
    pub recipients: String,
    pub subject: String,
    /// The alias it was sent as; `None` once that alias is deleted.
    pub alias: Option<String>,
    /// How many times its pixel was fetched.
    pub opens: i64,
    pub first_open: Option<String>,
    pub last_open: Option<String>,
}

/// One fetch of a message's pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// UTC, `YYYY-MM-DD HH:MM:SS`.
    pub opened_at: String,
    /// Empty when unknown.
    pub client_ip: String,
    /// Empty when the client sent none.
    pub user_agent: String,
}

/// One tracked message and its opens, for its own page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageDetail {
    pub tracking_id: String,
    pub sent_at: String,
    pub sender: String,
    pub recipients: String,
    pub subject: String,
    /// The alias it was sent as; `None` once that alias is deleted.
    pub alias: Option<AliasOption>,
    /// How many times its pixel was fetched, in all.
    pub opens: i64,
    /// The opens, oldest first, at most as many as asked for (so fewer than `opens` can be listed).
    pub listed: Vec<Open>,
}

/// The aliases the filter offers, by address: those tracking now, and those with tracked messages.
pub fn alias_options(conn: &Connection) -> Result<Vec<AliasOption>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT a.id, a.source FROM aliases a
         WHERE a.tracking_enabled = 1
            OR EXISTS (SELECT 1 FROM tracked_messages m WHERE m.alias_id = a.id)
         ORDER BY a.source",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(AliasOption {
            id: r.get(0)?,
            source: r.get(1)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// How many tracked messages match `filters`.
pub fn count_messages(conn: &Connection, filters: &Filters) -> Result<i64, StoreError> {
    let (cond, params) = filters.where_sql();
    Ok(conn.query_row(
        &format!("SELECT count(*) FROM tracked_messages m {cond}"),
        params_from_iter(params),
        |r| r.get(0),
    )?)
}

/// The SQL of the list, newest first, with the open counts of each row (for a page, or all rows).
fn rows_sql(filters: &Filters, page: Option<Page>) -> (String, Vec<Value>) {
    let (cond, mut params) = filters.where_sql();
    let mut sql = format!(
        "SELECT m.tracking_id, m.created_at, m.sender, m.recipients, m.subject, a.source,
                (SELECT count(*) FROM pixel_opens o WHERE o.tracking_id = m.tracking_id),
                (SELECT min(o.opened_at) FROM pixel_opens o WHERE o.tracking_id = m.tracking_id),
                (SELECT max(o.opened_at) FROM pixel_opens o WHERE o.tracking_id = m.tracking_id)
         FROM tracked_messages m LEFT JOIN aliases a ON a.id = m.alias_id
         {cond}
         ORDER BY m.created_at DESC, m.id DESC"
    );
    if let Some(page) = page {
        params.push(Value::Integer(page.size));
        params.push(Value::Integer(page.offset()));
        sql.push_str(&format!(
            " LIMIT ?{} OFFSET ?{}",
            params.len() - 1,
            params.len()
        ));
    }
    (sql, params)
}

/// Calls `each` with the messages that match `filters`, newest first: one page, or all of them
/// (`None`, for the CSV export, without collecting them first).
pub fn for_each_row(
    conn: &Connection,
    filters: &Filters,
    page: Option<Page>,
    mut each: impl FnMut(MessageRow),
) -> Result<(), StoreError> {
    let (sql, params) = rows_sql(filters, page);
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query(params_from_iter(params))?;
    while let Some(r) = rows.next()? {
        each(MessageRow {
            tracking_id: r.get(0)?,
            sent_at: r.get(1)?,
            sender: r.get(2)?,
            recipients: r.get(3)?,
            subject: r.get(4)?,
            alias: r.get(5)?,
            opens: r.get(6)?,
            first_open: r.get(7)?,
            last_open: r.get(8)?,
        });
    }
    Ok(())
}

/// The messages that match `filters`, newest first: one page, or all of them.
pub fn list(
    conn: &Connection,
    filters: &Filters,
    page: Option<Page>,
) -> Result<Vec<MessageRow>, StoreError> {
    let mut rows = Vec::new();
    for_each_row(conn, filters, page, |r| rows.push(r))?;
    Ok(rows)
}

const OPENS_PER_DAY: &str = "SELECT substr(o.opened_at, 1, 10), count(*) FROM pixel_opens o
     WHERE o.opened_at >= ?1 AND o.opened_at < ?2 GROUP BY 1";
const OPENS_PER_DAY_OF_ALIAS: &str = "SELECT substr(o.opened_at, 1, 10), count(*)
     FROM tracked_messages m JOIN pixel_opens o ON o.tracking_id = m.tracking_id
     WHERE m.alias_id = ?3 AND o.opened_at >= ?1 AND o.opened_at < ?2 GROUP BY 1";

/// Opens per day from `start` to `end` (both included), of the messages of `alias` if given, by the
/// day of the open: element `i` counts day `start + i`. Empty when `end` is before `start`.
pub fn opens_per_day(
    conn: &Connection,
    alias: Option<i64>,
    start: Day,
    end: Day,
) -> Result<Vec<i64>, StoreError> {
    let mut counts = vec![0i64; (start.until(end) + 1).max(0) as usize];
    let lo = Value::Text(start.to_string());
    let hi = Value::Text(end.plus(1).to_string());
    let (sql, params) = match alias {
        None => (OPENS_PER_DAY, vec![lo, hi]),
        Some(a) => (OPENS_PER_DAY_OF_ALIAS, vec![lo, hi, Value::Integer(a)]),
    };
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params_from_iter(params), |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })?;
    for row in rows {
        let (day, n) = row?;
        if let Some(d) = Day::parse(&day) {
            let i = start.until(d);
            if (0..counts.len() as i64).contains(&i) {
                counts[i as usize] += n;
            }
        }
    }
    Ok(counts)
}

const MESSAGE: &str =
    "SELECT m.tracking_id, m.created_at, m.sender, m.recipients, m.subject, a.id, a.source,
            (SELECT count(*) FROM pixel_opens o WHERE o.tracking_id = m.tracking_id)
     FROM tracked_messages m LEFT JOIN aliases a ON a.id = m.alias_id
     WHERE m.tracking_id = ?1";
const OPENS_OF_MESSAGE: &str = "SELECT opened_at, client_ip, user_agent FROM pixel_opens
     WHERE tracking_id = ?1 ORDER BY opened_at, id LIMIT ?2";

/// The message whose pixel has id `id`, with its first `max_listed` opens; `None` when no message
/// has that id.
pub fn message(
    conn: &Connection,
    id: &TrackingId,
    max_listed: usize,
) -> Result<Option<MessageDetail>, StoreError> {
    let found = conn
        .query_row(MESSAGE, [id.as_str()], |r| {
            let alias = match (r.get::<_, Option<i64>>(5)?, r.get::<_, Option<String>>(6)?) {
                (Some(id), Some(source)) => Some(AliasOption { id, source }),
                _ => None,
            };
            Ok(MessageDetail {
                tracking_id: r.get(0)?,
                sent_at: r.get(1)?,
                sender: r.get(2)?,
                recipients: r.get(3)?,
                subject: r.get(4)?,
                alias,
                opens: r.get(7)?,
                listed: Vec::new(),
            })
        })
        .optional()?;
    let Some(mut detail) = found else {
        return Ok(None);
    };
    let limit = i64::try_from(max_listed).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(OPENS_OF_MESSAGE)?;
    let opens = stmt.query_map((id.as_str(), limit), |r| {
        Ok(Open {
            opened_at: r.get(0)?,
            client_ip: r.get(1)?,
            user_agent: r.get(2)?,
        })
    })?;
    detail.listed = opens.collect::<rusqlite::Result<_>>()?;
    Ok(Some(detail))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testutil;

    fn plan(conn: &Connection, sql: &str, params: Vec<Value>) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = stmt
            .query_map(params_from_iter(params), |r| r.get::<_, String>(3))
            .unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn queries_use_the_indexes() {
        let (_dir, conn) = testutil::conn();
        let day = Day::parse("2024-05-01");
        let page = Some(Page {
            number: 2,
            size: 50,
        });
        for (filters, index) in [
            (Filters::default(), "tracked_messages_created"),
            (
                Filters {
                    alias: None,
                    from: day,
                    to: day,
                },
                "tracked_messages_created",
            ),
            (
                Filters {
                    alias: Some(1),
                    from: day,
                    to: None,
                },
                "tracked_messages_alias",
            ),
        ] {
            let (sql, params) = rows_sql(&filters, page);
            let p = plan(&conn, &sql, params);
            assert!(p.contains(index), "{p}");
            assert!(p.contains("pixel_opens_message"), "{p}");
            assert!(!p.contains("TEMP B-TREE"), "{p}");
            assert!(!p.contains("SCAN o"), "{p}");
        }
        let range = || {
            vec![
                Value::Text("2024-05-01".into()),
                Value::Text("2024-05-02".into()),
            ]
        };
        let p = plan(&conn, OPENS_PER_DAY, range());
        assert!(
            p.contains("USING COVERING INDEX pixel_opens_opened")
                || p.contains("USING INDEX pixel_opens_opened"),
            "{p}"
        );
        let mut params = range();
        params.push(Value::Integer(1));
        let p = plan(&conn, OPENS_PER_DAY_OF_ALIAS, params);
        assert!(
            p.contains("tracked_messages_alias") && p.contains("pixel_opens_message"),
            "{p}"
        );
        // One message: its row by the unique tracking id, its opens in order from the index.
        let id = || vec![Value::Text("TrackingIdForTestsAAAA".into())];
        let p = plan(&conn, MESSAGE, id());
        assert!(p.contains("SEARCH m USING INDEX"), "{p}");
        assert!(p.contains("pixel_opens_message"), "{p}");
        let mut params = id();
        params.push(Value::Integer(1000));
        let p = plan(&conn, OPENS_OF_MESSAGE, params);
        assert!(p.contains("pixel_opens_message"), "{p}");
        assert!(!p.contains("TEMP B-TREE"), "{p}");
    }

    #[test]
    fn pages() {
        let p = |number| Page { number, size: 50 };
        assert_eq!(p(1).offset(), 0);
        assert_eq!(p(3).offset(), 100);
        assert_eq!(p(0).offset(), 0);
        assert_eq!(p(i64::MAX).offset(), i64::MAX);
        assert!(Filters::default().is_empty());
        assert!(
            !Filters {
                alias: Some(1),
                ..Filters::default()
            }
            .is_empty()
        );
    }

    /// A tracking id for message `i` of the test data.
    fn tid(i: usize) -> String {
        format!("TrackingIdForTests{i:03}A")
    }

    /// Aliases: news (tracking), old (not tracking any more, with messages), quiet (neither: never
    /// offered), gone (deleted after sending). Five messages: 0..=2 of news on 2024-05-01..03, 3 of old
    /// on 2024-05-03, 4 of gone on 2024-05-04. Message `i` has `i` opens, the k-th on the day after it
    /// was sent, at k:00.
    fn seed(conn: &Connection) -> (i64, i64) {
        conn.execute_batch(
            "INSERT INTO domains (domain) VALUES ('example.test');
             INSERT INTO aliases (id, domain_id, source, destination, tracking_enabled)
                 VALUES (1, 1, 'news@example.test', 'a@example.test', 1),
                        (2, 1, 'old@example.test', 'a@example.test', 0),
                        (3, 1, 'quiet@example.test', 'a@example.test', 0),
                        (4, 1, 'gone@example.test', 'a@example.test', 1);",
        )
        .unwrap();
        let (news, old, gone) = (1, 2, 4);
        for (i, alias) in [news, news, news, old, gone].into_iter().enumerate() {
            let day = [1, 2, 3, 3, 4][i];
            conn.execute(
                "INSERT INTO tracked_messages (tracking_id, sender, recipients, subject, alias_id, created_at)
                 VALUES (?1, 's@example.test', ?2, ?3, ?4, ?5)",
                rusqlite::params![
                    tid(i),
                    format!("r{i}@x.test,q{i}@y.test"),
                    format!("Subject {i}"),
                    alias,
                    format!("2024-05-{day:02} 12:{i:02}:00"),
                ],
            )
            .unwrap();
            for k in 0..i {
                conn.execute(
                    "INSERT INTO pixel_opens (tracking_id, client_ip, user_agent, opened_at)
                     VALUES (?1, ?2, ?3, ?4)",
                    rusqlite::params![
                        tid(i),
                        format!("192.0.2.{k}"),
                        format!("agent {k}"),
                        format!("2024-05-{:02} {k:02}:00:00", day + 1),
                    ],
                )
                .unwrap();
            }
        }
        conn.execute("DELETE FROM aliases WHERE id = ?1", [gone])
            .unwrap();
        (news, old)
    }

    #[test]
    fn lists_counts_and_charts_a_small_data_set() {
        let (_dir, conn) = testutil::conn();
        let all = Filters::default();
        assert_eq!(count_messages(&conn, &all).unwrap(), 0);
        assert!(list(&conn, &all, None).unwrap().is_empty());
        let (news, old) = seed(&conn);

        let options = alias_options(&conn).unwrap();
        assert_eq!(
            options,
            [
                AliasOption {
                    id: news,
                    source: "news@example.test".into()
                },
                AliasOption {
                    id: old,
                    source: "old@example.test".into()
                },
            ]
        );

        // Newest first, every column.
        let rows = list(&conn, &all, None).unwrap();
        let ids: Vec<_> = rows.iter().map(|r| r.tracking_id.clone()).collect();
        assert_eq!(ids, [tid(4), tid(3), tid(2), tid(1), tid(0)]);
        assert_eq!(
            rows[1],
            MessageRow {
                tracking_id: tid(3),
                sent_at: "2024-05-03 12:03:00".into(),
                sender: "s@example.test".into(),
                recipients: "r3@x.test,q3@y.test".into(),
                subject: "Subject 3".into(),
                alias: Some("old@example.test".into()),
                opens: 3,
                first_open: Some("2024-05-04 00:00:00".into()),
                last_open: Some("2024-05-04 02:00:00".into()),
            }
        );
        assert_eq!(rows[0].alias, None, "deleted alias");
        assert_eq!((rows[4].opens, rows[4].first_open.as_deref()), (0, None));
        assert_eq!(count_messages(&conn, &all).unwrap(), 5);

        // Pages.
        let page = |number| Some(Page { number, size: 2 });
        let ids_of = |f: &Filters, p| {
            list(&conn, f, p)
                .unwrap()
                .into_iter()
                .map(|r| r.tracking_id)
                .collect::<Vec<_>>()
        };
        assert_eq!(ids_of(&all, page(1)), [tid(4), tid(3)]);
        assert_eq!(ids_of(&all, page(3)), [tid(0)]);
        assert!(ids_of(&all, page(4)).is_empty());

        // Filters: alias, days (both included), and both.
        let by_news = Filters {
            alias: Some(news),
            ..Filters::default()
        };
        assert_eq!(ids_of(&by_news, None), [tid(2), tid(1), tid(0)]);
        assert_eq!(count_messages(&conn, &by_news).unwrap(), 3);
        let days = Filters {
            alias: None,
            from: Day::parse("2024-05-02"),
            to: Day::parse("2024-05-03"),
        };
        assert_eq!(ids_of(&days, None), [tid(3), tid(2), tid(1)]);
        assert_eq!(count_messages(&conn, &days).unwrap(), 3);
        let both = Filters {
            alias: Some(news),
            ..days
        };
        assert_eq!(ids_of(&both, None), [tid(2), tid(1)]);
        let mut streamed = Vec::new();
        for_each_row(&conn, &both, None, |r| streamed.push(r.tracking_id)).unwrap();
        assert_eq!(streamed, [tid(2), tid(1)]);

        // Opens per day: message i's opens fall on the day after it was sent.
        let d = |s| Day::parse(s).unwrap();
        assert_eq!(
            opens_per_day(&conn, None, d("2024-05-01"), d("2024-05-06")).unwrap(),
            [0, 0, 1, 2 + 3, 4, 0]
        );
        assert_eq!(
            opens_per_day(&conn, Some(news), d("2024-05-02"), d("2024-05-04")).unwrap(),
            [0, 1, 2]
        );
        assert_eq!(
            opens_per_day(&conn, Some(old), d("2024-05-04"), d("2024-05-04")).unwrap(),
            [3]
        );
        assert!(
            opens_per_day(&conn, None, d("2024-05-04"), d("2024-05-03"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn one_message_with_its_opens() {
        let (_dir, conn) = testutil::conn();
        let (news, _) = seed(&conn);
        let id = |i| TrackingId::parse(&tid(i)).unwrap();
        let m = message(&conn, &id(2), 1000).unwrap().unwrap();
        assert_eq!(m.tracking_id, tid(2));
        assert_eq!(m.sent_at, "2024-05-03 12:02:00");
        assert_eq!(m.recipients, "r2@x.test,q2@y.test");
        assert_eq!(m.subject, "Subject 2");
        assert_eq!(
            m.alias,
            Some(AliasOption {
                id: news,
                source: "news@example.test".into()
            })
        );
        assert_eq!(m.opens, 2);
        assert_eq!(
            m.listed,
            [
                Open {
                    opened_at: "2024-05-04 00:00:00".into(),
                    client_ip: "192.0.2.0".into(),
                    user_agent: "agent 0".into(),
                },
                Open {
                    opened_at: "2024-05-04 01:00:00".into(),
                    client_ip: "192.0.2.1".into(),
                    user_agent: "agent 1".into(),
                },
            ]
        );
        // At most `max_listed`, oldest first; the count is of all of them.
        let m = message(&conn, &id(4), 3).unwrap().unwrap();
        assert_eq!((m.opens, m.listed.len()), (4, 3));
        assert_eq!(m.listed[2].opened_at, "2024-05-05 02:00:00");
        assert_eq!(m.alias, None, "deleted alias");
        assert!(
            message(&conn, &id(0), 10)
                .unwrap()
                .unwrap()
                .listed
                .is_empty()
        );
        assert!(message(&conn, &id(9), 10).unwrap().is_none());
    }
}
