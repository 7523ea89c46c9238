//! Open tracking: the tracked messages (newest first, 50 a page) with their open counts, filtered by
//! alias and by the day they were sent; a chart of opens per day; a CSV export with the same filters;
//! and a page per message listing each open, labelled when an image proxy or a scanner made it.
//!
//! The queries are the library's ([`mailserver::store::tracking::report`], where their index use is
//! described and tested): the library owns the tables, so this module holds no SQL. It turns the form
//! into [`Filters`] (with the errors to show), decides what the chart covers, and renders. Times are
//! UTC, as stored.

mod chart;
mod csv;
mod proxies;

use axum::Router;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use mailserver::day::Day;
use mailserver::settings::RetentionDays;
use mailserver::store::tracking::MAX_OPENS_PER_MESSAGE;
use mailserver::store::tracking::report::{
    self, AliasOption, Filters, MessageDetail, MessageRow, Page,
};
use mailserver::tracking::TrackingId;
use maud::{Markup, html};
use serde::Deserialize;

use self::proxies::Kind;
use crate::auth::Admin;
use crate::error::WebError;
use crate::state::AppState;
use crate::views;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/tracking", get(list))
        .route("/tracking.csv", get(export))
        .route("/tracking/{tracking_id}", get(message))
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
fn parse_filters(q: &FilterQuery, aliases: &[AliasOption]) -> (Filters, FilterErrors) {
    let mut f = Filters::default();
    let mut e = FilterErrors::default();
    if let Some(a) = non_empty(&q.alias) {
        match a.parse::<i64>() {
            Ok(id) if aliases.iter().any(|a| a.id == id) => f.alias = Some(id),
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

/// `alias=..&from=..&to=..` (only what is set), plus `page` when given.
fn query_string(f: &Filters, page: Option<i64>) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    if let Some(a) = f.alias {
        s.append_pair("alias", &a.to_string());
    }
    if let Some(d) = f.from {
        s.append_pair("from", &d.to_string());
    }
    if let Some(d) = f.to {
        s.append_pair("to", &d.to_string());
    }
    if let Some(p) = page {
        s.append_pair("page", &p.to_string());
    }
    s.finish()
}

/// The days the chart covers, and whether the range was cut to [`CHART_MAX_DAYS`].
fn chart_range(f: &Filters, today: Day) -> (Day, Day, bool) {
    let end =
        f.to.unwrap_or_else(|| f.from.map_or(today, |from| from.max(today)));
    let start = f.from.unwrap_or_else(|| end.plus(1 - CHART_DEFAULT_DAYS));
    if start.until(end) >= CHART_MAX_DAYS {
        (end.plus(1 - CHART_MAX_DAYS), end, true)
    } else {
        (start, end, false)
    }
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

/// A tracking id as one URL path segment (stored ids are base64url and pass unchanged; anything else
/// is percent-encoded rather than trusted).
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
    aliases: Vec<AliasOption>,
    filters: Filters,
    errors: FilterErrors,
    total: i64,
    page: i64,
    rows: Vec<MessageRow>,
    chart: (Day, Day, bool, Vec<i64>),
    /// `TRACKING_RETENTION_DAYS`.
    retention: RetentionDays,
}

fn render_list(q: &FilterQuery, d: &ListData) -> Markup {
    let f = &d.filters;
    let pages = ((d.total + PAGE_SIZE - 1) / PAGE_SIZE).max(1);
    let filtered = !f.is_empty();
    let csv_href = {
        let qs = query_string(f, None);
        if qs.is_empty() {
            "/tracking.csv".to_string()
        } else {
            format!("/tracking.csv?{qs}")
        }
    };
    let page_href = |p: i64| format!("/tracking?{}", query_string(f, Some(p)));
    let (start, end, cut, counts) = &d.chart;
    html! {
        form.box method="get" action="/tracking" {
            label.field {
                span { "Alias" }
                select name="alias" aria-invalid=[d.errors.alias.as_ref().map(|_| "true")] {
                    option value="" { "All aliases" }
                    @for a in &d.aliases {
                        option value=(a.id) selected[f.alias == Some(a.id)] { (a.source) }
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
        p.muted.retention {
            "Tracked messages and opens older than " (d.retention) " days are deleted daily "
            "(TRACKING_RETENTION_DAYS). A message keeps at most " (MAX_OPENS_PER_MESSAGE)
            " opens, and repeated opens from the same address and browser within an hour count once."
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
                        tr data-message=(r.tracking_id) {
                            (time_td(Some(&r.sent_at)))
                            td title=[r.alias.as_ref().map(|a| format!("alias {a}"))] { (breakable(&r.sender)) }
                            td { (recipients_cell(&r.recipients)) }
                            td {
                                a href={ "/tracking/" (path_segment(&r.tracking_id)) } {
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
            let aliases = report::alias_options(conn)?;
            let (filters, errors) = parse_filters(&query, &aliases);
            let total = report::count_messages(conn, &filters)?;
            let rows = report::list(
                conn,
                &filters,
                Some(Page {
                    number: page,
                    size: PAGE_SIZE,
                }),
            )?;
            let (start, end, cut) = chart_range(&filters, today);
            let counts = report::opens_per_day(conn, filters.alias, start, end)?;
            let retention = mailserver::store::settings::load(conn)
                .map_err(mailserver::store::StoreError::from)?
                .tracking_retention;
            Ok(ListData {
                aliases,
                filters,
                errors,
                total,
                page,
                rows,
                chart: (start, end, cut, counts),
                retention,
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
            let aliases = report::alias_options(conn)?;
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
                    "Tracking ID",
                ],
            );
            report::for_each_row(conn, &filters, None, |r| {
                csv::push_row(
                    &mut out,
                    &[
                        r.sent_at.as_str(),
                        &r.sender,
                        &r.recipients,
                        &r.subject,
                        r.alias.as_deref().unwrap_or(""),
                        &r.opens.to_string(),
                        r.first_open.as_deref().unwrap_or(""),
                        r.last_open.as_deref().unwrap_or(""),
                        &r.tracking_id,
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

fn render_message(d: &MessageDetail) -> Markup {
    let labels: Vec<_> = d
        .listed
        .iter()
        .map(|o| proxies::classify(&o.user_agent, &o.client_ip))
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
                tr { th { "Subject" } td { @if d.subject.trim().is_empty() { span.muted { "(no subject)" } } @else { (breakable(&d.subject)) } } }
                tr { th { "Sent (UTC)" } td { (d.sent_at) } }
                tr { th { "Sender" } td { (breakable(&d.sender)) } }
                tr { th { "Recipients" } td {
                    @for (i, rcpt) in d.recipients.split(',').map(str::trim).filter(|s| !s.is_empty()).enumerate() {
                        @if i > 0 { ", " }
                        (breakable(rcpt))
                    }
                } }
                tr { th { "Alias" } td {
                    @match &d.alias {
                        Some(a) => a href={ "/tracking?alias=" (a.id) } { (a.source) },
                        None => span.muted { "(alias deleted)" },
                    }
                } }
                tr { th { "Tracking id" } td { code { (d.tracking_id) } } }
            }
        }
        h2 { "Opens" }
        @if d.listed.is_empty() {
            p.muted { "Not opened yet (or images were blocked)." }
        } @else {
            p {
                (d.opens) @if d.opens == 1 { " open" } @else { " opens" }
                @if automated > 0 {
                    ", " (automated) " of them by an image proxy or a scanner (those may happen without anyone reading the message)"
                }
                "."
                @if d.opens > d.listed.len() as i64 { " The first " (d.listed.len()) " are listed." }
            }
            table {
                thead { tr { th { "Time (UTC)" } th { "Client IP" } th { "User agent" } th { "Fetched by" } } }
                tbody {
                    @for (o, label) in d.listed.iter().zip(&labels) {
                        tr {
                            (time_td(Some(&o.opened_at)))
                            td { @if o.client_ip.is_empty() { span.muted { "–" } } @else { code { (o.client_ip) } } }
                            td { @if o.user_agent.is_empty() { span.muted { "(none)" } } @else { (breakable(&o.user_agent)) } }
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
    Path(tracking_id): Path<String>,
) -> Result<Response, WebError> {
    // Only a well-formed id can name a message; anything else is not found, without a query.
    let tracking_id = TrackingId::parse(&tracking_id).map_err(|_| WebError::NotFound)?;
    let data = state
        .db
        .call(move |conn| {
            report::message(conn, &tracking_id, MAX_OPENS_LISTED)?.ok_or(WebError::NotFound)
        })
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

    /// The list says how long tracked data is kept, with the configured number of days.
    #[test]
    fn the_list_states_the_retention() {
        let day = Day::parse("2024-05-01").unwrap();
        let data = ListData {
            aliases: vec![],
            filters: Filters::default(),
            errors: FilterErrors::default(),
            total: 0,
            page: 1,
            rows: vec![],
            chart: (day, day, false, vec![0]),
            retention: RetentionDays::new(30).unwrap(),
        };
        let html = render_list(&FilterQuery::default(), &data).into_string();
        assert!(
            html.contains("Tracked messages and opens older than 30 days are deleted daily"),
            "{html}"
        );
    }

    #[test]
    fn filters() {
        let aliases = vec![AliasOption {
            id: 3,
            source: "a@example.test".to_string(),
        }];
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
            query_string(&f, Some(2)),
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
        assert_eq!(chart_range(&f, today), (d("2024-05-02"), today, false));
        let f = Filters {
            from: Some(d("2024-05-20")),
            ..Filters::default()
        };
        assert_eq!(chart_range(&f, today), (d("2024-05-20"), today, false));
        let f = Filters {
            to: Some(d("2024-04-30")),
            ..Filters::default()
        };
        assert_eq!(
            chart_range(&f, today),
            (d("2024-04-01"), d("2024-04-30"), false)
        );
        let f = Filters {
            from: Some(d("2020-01-01")),
            ..Filters::default()
        };
        assert_eq!(chart_range(&f, today), (d("2023-06-01"), today, true));
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
