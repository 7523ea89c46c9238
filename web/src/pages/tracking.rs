//! Open tracking: the tracked messages (newest first, 50 a page) with their open counts, filtered by
//! alias and by the day they were sent; a chart of opens per day; a CSV export with the same filters;
//! and a page per message listing each open, labelled when an image proxy or a scanner made it.
//!
//! Every query goes through an index: the list walks `tracked_messages (created_at)` (or
//! `(alias_id, created_at)` with an alias filter) in order and stops after the page; open counts are
//! correlated subqueries on `pixel_opens (message_id, opened_at)` for the rows of the page only.
//! Times are UTC, as stored.

mod chart;
mod csv;
mod dates;
mod proxies;

use axum::Router;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::{Markup, html};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension as _, params_from_iter};
use serde::Deserialize;

use self::dates::Day;
use self::proxies::Kind;
use crate::auth::Admin;
use crate::error::WebError;
use crate::state::AppState;
use crate::views;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/tracking", get(list))
        .route("/tracking.csv", get(export))
        .route("/tracking/{message_id}", get(message))
}

const PAGE_SIZE: i64 = 50;
/// The chart's range when no dates are given: the last 30 days, today included.
const CHART_DEFAULT_DAYS: i64 = 30;
/// The chart never draws more bars than this; a longer range shows its last year.
const CHART_MAX_DAYS: i64 = 366;
/// Opens listed on a message page, at most.
const MAX_OPENS_LISTED: usize = 1000;
/// Recipients shown in a list cell before "and N more".
const RECIPIENTS_SHOWN: usize = 3;

/// The query string of the list and of the CSV export, as typed (kept to refill the form).
#[derive(Debug, Default, Clone, Deserialize)]
struct FilterQuery {
    #[serde(default)]
    alias: Option<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    page: Option<String>,
}

/// The valid filters.
#[derive(Debug, Default, Clone)]
struct Filters {
    alias: Option<i64>,
    /// Sent on or after this day.
    from: Option<Day>,
    /// Sent on or before this day.
    to: Option<Day>,
}

#[derive(Debug, Default)]
struct FilterErrors {
    alias: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

impl FilterErrors {
    fn messages(&self) -> Vec<&str> {
        [&self.alias, &self.from, &self.to]
            .into_iter()
            .filter_map(|e| e.as_deref())
            .collect()
    }
}

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// Checks the filters against the aliases that can be chosen. Invalid ones are dropped (and reported).
fn parse_filters(q: &FilterQuery, aliases: &[(i64, String)]) -> (Filters, FilterErrors) {
    let mut f = Filters::default();
    let mut e = FilterErrors::default();
    if let Some(a) = non_empty(&q.alias) {
        match a.parse::<i64>() {
            Ok(id) if aliases.iter().any(|(i, _)| *i == id) => f.alias = Some(id),
            _ => e.alias = Some("Choose an alias from the list.".into()),
        }
    }
    for (raw, slot, err) in [
        (&q.from, &mut f.from, &mut e.from),
        (&q.to, &mut f.to, &mut e.to),
    ] {
        if let Some(s) = non_empty(raw) {
            match Day::parse(s) {
                Some(d) => *slot = Some(d),
                None => *err = Some("Enter a date as YYYY-MM-DD.".into()),
            }
        }
    }
    if let (Some(from), Some(to)) = (f.from, f.to)
        && to < from
    {
        e.to = Some("The end date is before the start date.".into());
        f.to = None;
    }
    (f, e)
}

impl Filters {
    /// The WHERE clause on `tracked_messages m` and its parameters (only the filters that are set, so
    /// the planner can use the indexes).
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

    /// `alias=..&from=..&to=..` (only what is set), plus `page` when given.
    fn query_string(&self, page: Option<i64>) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        if let Some(a) = self.alias {
            s.append_pair("alias", &a.to_string());
        }
        if let Some(d) = self.from {
            s.append_pair("from", &d.to_string());
        }
        if let Some(d) = self.to {
            s.append_pair("to", &d.to_string());
        }
        if let Some(p) = page {
            s.append_pair("page", &p.to_string());
        }
        s.finish()
    }

    /// The days the chart covers, and whether the range was cut to [`CHART_MAX_DAYS`].
    fn chart_range(&self, today: Day) -> (Day, Day, bool) {
        let end = self
            .to
            .unwrap_or_else(|| self.from.map_or(today, |from| from.max(today)));
        let start = self
            .from
            .unwrap_or_else(|| end.plus(1 - CHART_DEFAULT_DAYS));
        if start.until(end) >= CHART_MAX_DAYS {
            (end.plus(1 - CHART_MAX_DAYS), end, true)
        } else {
            (start, end, false)
        }
    }
}

/// One tracked message with its opens, as listed.
#[derive(Debug, Clone)]
struct Row {
    message_id: String,
    sent: String,
    sender: String,
    recipients: String,
    subject: String,
    alias: Option<String>,
    opens: i64,
    first_open: Option<String>,
    last_open: Option<String>,
}

/// The aliases the filter offers: those tracking now, and those with tracked messages.
fn alias_options(conn: &Connection) -> rusqlite::Result<Vec<(i64, String)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT a.id, a.source FROM aliases a
         WHERE a.tracking_enabled = 1
            OR EXISTS (SELECT 1 FROM tracked_messages m WHERE m.alias_id = a.id)
         ORDER BY a.source",
    )?;
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect()
}

fn count_messages(conn: &Connection, f: &Filters) -> rusqlite::Result<i64> {
    let (cond, params) = f.where_sql();
    conn.query_row(
        &format!("SELECT count(*) FROM tracked_messages m {cond}"),
        params_from_iter(params),
        |r| r.get(0),
    )
}

/// The SQL of the list, newest first, with the open counts of each row (for a page, or all rows).
fn rows_sql(f: &Filters, page: Option<i64>) -> (String, Vec<Value>) {
    let (cond, mut params) = f.where_sql();
    let mut sql = format!(
        "SELECT m.message_id, m.created_at, m.sender, m.recipient, m.subject, a.source,
                (SELECT count(*) FROM pixel_opens o WHERE o.message_id = m.message_id),
                (SELECT min(o.opened_at) FROM pixel_opens o WHERE o.message_id = m.message_id),
                (SELECT max(o.opened_at) FROM pixel_opens o WHERE o.message_id = m.message_id)
         FROM tracked_messages m LEFT JOIN aliases a ON a.id = m.alias_id
         {cond}
         ORDER BY m.created_at DESC, m.id DESC"
    );
    if let Some(page) = page {
        params.push(Value::Integer(PAGE_SIZE));
        params.push(Value::Integer((page - 1) * PAGE_SIZE));
        sql.push_str(&format!(
            " LIMIT ?{} OFFSET ?{}",
            params.len() - 1,
            params.len()
        ));
    }
    (sql, params)
}

fn for_each_row(
    conn: &Connection,
    f: &Filters,
    page: Option<i64>,
    mut each: impl FnMut(Row),
) -> rusqlite::Result<()> {
    let (sql, params) = rows_sql(f, page);
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query(params_from_iter(params))?;
    while let Some(r) = rows.next()? {
        each(Row {
            message_id: r.get(0)?,
            sent: r.get(1)?,
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

const OPENS_PER_DAY: &str = "SELECT substr(o.opened_at, 1, 10), count(*) FROM pixel_opens o
     WHERE o.opened_at >= ?1 AND o.opened_at < ?2 GROUP BY 1";
const OPENS_PER_DAY_OF_ALIAS: &str = "SELECT substr(o.opened_at, 1, 10), count(*)
     FROM tracked_messages m JOIN pixel_opens o ON o.message_id = m.message_id
     WHERE m.alias_id = ?3 AND o.opened_at >= ?1 AND o.opened_at < ?2 GROUP BY 1";

/// Opens per day from `start` to `end` (inclusive), of the messages of `alias` if given.
fn opens_per_day(
    conn: &Connection,
    alias: Option<i64>,
    start: Day,
    end: Day,
) -> rusqlite::Result<Vec<i64>> {
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

/// Text that may hold long unbroken runs (addresses, user agents): a line-break opportunity (`wbr`)
/// after `@`, `.`, `/` and the like, and every 24 characters, inside runs longer than 24 characters.
/// Keeps wide values from pushing the table past the page without any CSS.
fn breakable(text: &str) -> Markup {
    const RUN: usize = 24;
    let mut pieces: Vec<String> = Vec::new();
    let mut current = String::new();
    for word in text.split_inclusive(char::is_whitespace) {
        if word.chars().count() <= RUN {
            current.push_str(word);
            continue;
        }
        let mut since = 0;
        for c in word.chars() {
            current.push(c);
            since += 1;
            if since >= RUN
                || (since > 1 && matches!(c, '@' | '.' | '/' | ',' | ';' | '-' | '_' | '=' | '&'))
            {
                pieces.push(std::mem::take(&mut current));
                since = 0;
            }
        }
    }
    pieces.push(current);
    html! {
        @for (i, p) in pieces.iter().enumerate() {
            @if i > 0 { wbr; }
            (p)
        }
    }
}

/// A message id as one URL path segment.
fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A table cell with a stored time: the date, and the time below it in grey. `nowrap` (a
/// presentational attribute, allowed by the CSP where an inline style is not) keeps the browser from
/// breaking the date at its hyphens when the table is tight.
fn time_td(t: Option<&str>) -> Markup {
    html! {
        td nowrap {
            @match t {
                Some(t) => {
                    @let (date, time) = t.split_once(' ').unwrap_or((t, ""));
                    span { (date) } br; span.muted { (time) }
                }
                None => span.muted { "–" },
            }
        }
    }
}

fn recipients_cell(recipients: &str) -> Markup {
    let all: Vec<&str> = recipients
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    html! {
        @for (i, r) in all.iter().take(RECIPIENTS_SHOWN).enumerate() {
            @if i > 0 { br; }
            (breakable(r))
        }
        @if all.len() > RECIPIENTS_SHOWN {
            br;
            span.muted title=(all.join(", ")) { "and " (all.len() - RECIPIENTS_SHOWN) " more" }
        }
    }
}

struct ListData {
    aliases: Vec<(i64, String)>,
    filters: Filters,
    errors: FilterErrors,
    total: i64,
    page: i64,
    rows: Vec<Row>,
    chart: (Day, Day, bool, Vec<i64>),
}

fn render_list(q: &FilterQuery, d: &ListData) -> Markup {
    let f = &d.filters;
    let pages = ((d.total + PAGE_SIZE - 1) / PAGE_SIZE).max(1);
    let filtered = f.alias.is_some() || f.from.is_some() || f.to.is_some();
    let csv_href = {
        let qs = f.query_string(None);
        if qs.is_empty() {
            "/tracking.csv".to_string()
        } else {
            format!("/tracking.csv?{qs}")
        }
    };
    let page_href = |p: i64| format!("/tracking?{}", f.query_string(Some(p)));
    let (start, end, cut, counts) = &d.chart;
    html! {
        form.box method="get" action="/tracking" {
            label.field {
                span { "Alias" }
                select name="alias" aria-invalid=[d.errors.alias.as_ref().map(|_| "true")] {
                    option value="" { "All aliases" }
                    @for (id, source) in &d.aliases {
                        option value=(id) selected[f.alias == Some(*id)] { (source) }
                    }
                }
                @if let Some(e) = &d.errors.alias { span.error { (e) } }
            }
            (views::field("Sent from (YYYY-MM-DD)", "from", "date", q.from.as_deref().unwrap_or(""), d.errors.from.as_deref()))
            (views::field("Sent until (YYYY-MM-DD)", "to", "date", q.to.as_deref().unwrap_or(""), d.errors.to.as_deref()))
            button type="submit" { "Filter" }
            @if filtered { a href="/tracking" { "Clear filters" } }
        }
        h2 { "Opens per day" }
        p.muted {
            (start) " to " (end) " (UTC), by the day of the open"
            @if f.alias.is_some() { ", for the chosen alias" }
            "."
            @if *cut { " The range is long: the chart shows its last " (CHART_MAX_DAYS) " days." }
        }
        (chart::svg(*start, counts))
        h2 { "Messages" }
        p {
            (d.total) @if d.total == 1 { " tracked message" } @else { " tracked messages" }
            @if filtered { " match the filters" }
            ". "
            a href=(csv_href) download { "Download CSV" }
        }
        @if d.rows.is_empty() {
            p.muted {
                @if d.total > 0 { "No messages on this page." }
                @else if filtered { "No tracked messages match the filters." }
                @else { "No tracked messages yet. Turn on tracking for an alias on the " a href="/aliases" { "Aliases" } " page." }
            }
        } @else {
            table {
                thead { tr {
                    th { "Sent (UTC)" } th { "Sender" } th { "Recipients" } th { "Subject" }
                    th { "Opens" } th { "First open" } th { "Last open" }
                } }
                tbody {
                    @for r in &d.rows {
                        tr data-message=(r.message_id) {
                            (time_td(Some(&r.sent)))
                            td title=[r.alias.as_ref().map(|a| format!("alias {a}"))] { (breakable(&r.sender)) }
                            td { (recipients_cell(&r.recipients)) }
                            td {
                                a href={ "/tracking/" (path_segment(&r.message_id)) } {
                                    @if r.subject.trim().is_empty() { "(no subject)" } @else { (breakable(&r.subject)) }
                                }
                            }
                            td.opens { @if r.opens > 0 { strong { (r.opens) } } @else { span.muted { "0" } } }
                            (time_td(r.first_open.as_deref()))
                            (time_td(r.last_open.as_deref()))
                        }
                    }
                }
            }
        }
        @if pages > 1 {
            p {
                @if d.page > 1 { a.button href=(page_href(d.page - 1)) rel="prev" { "← Newer" } " " }
                span.muted { "Page " (d.page) " of " (pages) }
                @if d.page < pages { " " a.button href=(page_href(d.page + 1)) rel="next" { "Older →" } }
            }
        }
    }
}

async fn list(
    State(state): State<AppState>,
    Extension(admin): Extension<Admin>,
    Query(q): Query<FilterQuery>,
) -> Result<Response, WebError> {
    let page = non_empty(&q.page)
        .and_then(|p| p.parse::<u32>().ok())
        .filter(|p| *p >= 1)
        .map_or(1, i64::from);
    let query = q.clone();
    let today = Day::today();
    let data = state
        .db
        .call(move |conn| {
            let aliases = alias_options(conn)?;
            let (filters, errors) = parse_filters(&query, &aliases);
            let total = count_messages(conn, &filters)?;
            let mut rows = Vec::new();
            for_each_row(conn, &filters, Some(page), |r| rows.push(r))?;
            let (start, end, cut) = filters.chart_range(today);
            let counts = opens_per_day(conn, filters.alias, start, end)?;
            Ok(ListData {
                aliases,
                filters,
                errors,
                total,
                page,
                rows,
                chart: (start, end, cut, counts),
            })
        })
        .await?;
    let status = if !data.errors.messages().is_empty() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let flash = state.auth.take_flash(&admin.session_id);
    let content = render_list(&q, &data);
    Ok((
        status,
        views::page("Tracking", &admin, "/tracking", flash.as_ref(), content),
    )
        .into_response())
}

async fn export(
    State(state): State<AppState>,
    Extension(_admin): Extension<Admin>,
    Query(q): Query<FilterQuery>,
) -> Result<Response, WebError> {
    let body = state
        .db
        .call(move |conn| {
            let aliases = alias_options(conn)?;
            let (filters, errors) = parse_filters(&q, &aliases);
            let problems = errors.messages();
            if !problems.is_empty() {
                return Err(WebError::BadRequest(problems.join(" ")));
            }
            let mut out = String::new();
            csv::push_row(
                &mut out,
                &[
                    "Sent (UTC)",
                    "Sender",
                    "Recipients",
                    "Subject",
                    "Alias",
                    "Opens",
                    "First open (UTC)",
                    "Last open (UTC)",
                    "Message ID",
                ],
            );
            for_each_row(conn, &filters, None, |r| {
                csv::push_row(
                    &mut out,
                    &[
                        r.sent.as_str(),
                        &r.sender,
                        &r.recipients,
                        &r.subject,
                        r.alias.as_deref().unwrap_or(""),
                        &r.opens.to_string(),
                        r.first_open.as_deref().unwrap_or(""),
                        r.last_open.as_deref().unwrap_or(""),
                        &r.message_id,
                    ],
                );
            })?;
            Ok(out)
        })
        .await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"tracking.csv\"",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response())
}

/// One tracked message and its opens.
struct MessageData {
    row: Row,
    alias_id: Option<i64>,
    opens: Vec<(String, String, String)>,
}

fn load_message(conn: &Connection, id: &str) -> Result<MessageData, WebError> {
    let found = conn
        .query_row(
            "SELECT m.message_id, m.created_at, m.sender, m.recipient, m.subject, a.source, a.id,
                    (SELECT count(*) FROM pixel_opens o WHERE o.message_id = m.message_id)
             FROM tracked_messages m LEFT JOIN aliases a ON a.id = m.alias_id
             WHERE m.message_id = ?1",
            [id],
            |r| {
                Ok((
                    Row {
                        message_id: r.get(0)?,
                        sent: r.get(1)?,
                        sender: r.get(2)?,
                        recipients: r.get(3)?,
                        subject: r.get(4)?,
                        alias: r.get(5)?,
                        opens: r.get(7)?,
                        first_open: None,
                        last_open: None,
                    },
                    r.get::<_, Option<i64>>(6)?,
                ))
            },
        )
        .optional()?;
    let (row, alias_id) = found.ok_or(WebError::NotFound)?;
    let mut stmt = conn.prepare_cached(
        "SELECT opened_at, client_ip, user_agent FROM pixel_opens
         WHERE message_id = ?1 ORDER BY opened_at, id LIMIT ?2",
    )?;
    let opens = stmt
        .query_map((id, MAX_OPENS_LISTED as i64), |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<rusqlite::Result<Vec<(String, String, String)>>>()?;
    Ok(MessageData {
        row,
        alias_id,
        opens,
    })
}

fn render_message(d: &MessageData) -> Markup {
    let r = &d.row;
    let labels: Vec<_> = d
        .opens
        .iter()
        .map(|(_, ip, ua)| proxies::classify(ua, ip))
        .collect();
    let automated = labels
        .iter()
        .flatten()
        .filter(|l| matches!(l.kind, Kind::Proxy | Kind::Scanner))
        .count();
    html! {
        p { a href="/tracking" { "← All tracked messages" } }
        table {
            tbody {
                tr { th { "Subject" } td { @if r.subject.trim().is_empty() { span.muted { "(no subject)" } } @else { (breakable(&r.subject)) } } }
                tr { th { "Sent (UTC)" } td { (r.sent) } }
                tr { th { "Sender" } td { (breakable(&r.sender)) } }
                tr { th { "Recipients" } td {
                    @for (i, rcpt) in r.recipients.split(',').map(str::trim).filter(|s| !s.is_empty()).enumerate() {
                        @if i > 0 { ", " }
                        (breakable(rcpt))
                    }
                } }
                tr { th { "Alias" } td {
                    @match (&r.alias, d.alias_id) {
                        (Some(a), Some(id)) => a href={ "/tracking?alias=" (id) } { (a) },
                        _ => span.muted { "(alias deleted)" },
                    }
                } }
                tr { th { "Tracking id" } td { code { (r.message_id) } } }
            }
        }
        h2 { "Opens" }
        @if d.opens.is_empty() {
            p.muted { "Not opened yet (or images were blocked)." }
        } @else {
            p {
                (r.opens) @if r.opens == 1 { " open" } @else { " opens" }
                @if automated > 0 {
                    ", " (automated) " of them by an image proxy or a scanner (those may happen without anyone reading the message)"
                }
                "."
                @if r.opens > d.opens.len() as i64 { " The first " (d.opens.len()) " are listed." }
            }
            table {
                thead { tr { th { "Time (UTC)" } th { "Client IP" } th { "User agent" } th { "Fetched by" } } }
                tbody {
                    @for ((at, ip, ua), label) in d.opens.iter().zip(&labels) {
                        tr {
                            (time_td(Some(at)))
                            td { @if ip.is_empty() { span.muted { "–" } } @else { code { (ip) } } }
                            td { @if ua.is_empty() { span.muted { "(none)" } } @else { (breakable(ua)) } }
                            td {
                                @if let Some(l) = label {
                                    span class={ "pill label " (if l.kind == Kind::Client { "on" } else { "off" }) }
                                        title=(l.kind.word()) { (l.text) }
                                } @else {
                                    span.muted { "–" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

async fn message(
    State(state): State<AppState>,
    Extension(admin): Extension<Admin>,
    Path(message_id): Path<String>,
) -> Result<Response, WebError> {
    let data = state
        .db
        .call(move |conn| load_message(conn, &message_id))
        .await?;
    let flash = state.auth.take_flash(&admin.session_id);
    Ok(views::page(
        "Tracked message",
        &admin,
        "/tracking",
        flash.as_ref(),
        render_message(&data),
    )
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(conn: &Connection, sql: &str, params: Vec<Value>) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = stmt
            .query_map(params_from_iter(params), |r| r.get::<_, String>(3))
            .unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn queries_use_the_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let pool = mailserver::db::open(&dir.path().join("t.db"), 1).unwrap();
        let conn = pool.get().unwrap();
        let day = Day::parse("2024-05-01");
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
            let (sql, params) = rows_sql(&filters, Some(2));
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
    }

    #[test]
    fn filters() {
        let aliases = vec![(3, "a@example.test".to_string())];
        let q = |alias: &str, from: &str, to: &str| FilterQuery {
            alias: Some(alias.into()),
            from: Some(from.into()),
            to: Some(to.into()),
            page: None,
        };
        let (f, e) = parse_filters(&q("3", "2024-05-01", "2024-05-03"), &aliases);
        assert_eq!(f.alias, Some(3));
        assert!(e.messages().is_empty());
        assert_eq!(
            f.query_string(Some(2)),
            "alias=3&from=2024-05-01&to=2024-05-03&page=2"
        );
        let (f, e) = parse_filters(&q("4", "2024-02-30", "x"), &aliases);
        assert!(f.alias.is_none() && f.from.is_none() && f.to.is_none());
        assert_eq!(e.messages().len(), 3);
        let (f, e) = parse_filters(&q("", "2024-05-03", "2024-05-01"), &aliases);
        assert_eq!(f.from, Day::parse("2024-05-03"));
        assert!(f.to.is_none() && e.to.is_some());
    }

    #[test]
    fn chart_ranges() {
        let today = Day::parse("2024-05-31").unwrap();
        let d = |s| Day::parse(s).unwrap();
        let f = Filters::default();
        assert_eq!(f.chart_range(today), (d("2024-05-02"), today, false));
        let f = Filters {
            from: Some(d("2024-05-20")),
            ..Filters::default()
        };
        assert_eq!(f.chart_range(today), (d("2024-05-20"), today, false));
        let f = Filters {
            to: Some(d("2024-04-30")),
            ..Filters::default()
        };
        assert_eq!(
            f.chart_range(today),
            (d("2024-04-01"), d("2024-04-30"), false)
        );
        let f = Filters {
            from: Some(d("2020-01-01")),
            ..Filters::default()
        };
        assert_eq!(f.chart_range(today), (d("2023-06-01"), today, true));
    }

    #[test]
    fn long_values_get_break_opportunities() {
        assert_eq!(
            breakable("alice@example.test").into_string(),
            "alice@example.test"
        );
        let long = breakable("someone.with.a.very.long.name@subdomain.example.test").into_string();
        assert!(long.contains("<wbr>"), "{long}");
        assert_eq!(
            long.replace("<wbr>", ""),
            "someone.with.a.very.long.name@subdomain.example.test"
        );
        assert_eq!(breakable("<b>").into_string(), "&lt;b&gt;");
        assert_eq!(path_segment("ab-_9"), "ab-_9");
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
    }
}
