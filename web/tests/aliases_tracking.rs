//! The aliases and tracking pages, through the real router, with render-and-apply against the temp
//! data directory.

mod common;

use axum::http::{StatusCode, header};
use common::{ADMIN_PASSWORD, Reply, TestApp};
use mailserver::names::{AliasSource, Destinations, Domain};
use rusqlite::OptionalExtension as _;

async fn logged_in() -> TestApp {
    let mut app = TestApp::new().await;
    app.login("admin", ADMIN_PASSWORD).await;
    mailserver::store::domains::add(&app.conn(), &Domain::parse("example.test").unwrap()).unwrap();
    app
}

/// The aliases Postfix sees.
fn maps_aliases(app: &TestApp) -> Vec<(String, String)> {
    let path = app.state.paths.maps_db();
    if !path.exists() {
        return Vec::new();
    }
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT source, destination FROM aliases ORDER BY source")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// (id, destination, active, tracking_enabled) of an alias in the main database.
fn alias_row(app: &TestApp, source: &str) -> Option<(i64, String, bool, bool)> {
    app.conn()
        .query_row(
            "SELECT id, destination, active, tracking_enabled FROM aliases WHERE source = ?1",
            [source],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()
        .unwrap()
}

fn alias_count(app: &TestApp) -> i64 {
    app.conn()
        .query_row("SELECT count(*) FROM aliases", [], |r| r.get(0))
        .unwrap()
}

/// Follows a 303 to its target and returns the page.
async fn follow(app: &TestApp, r: Reply) -> Reply {
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let to = r.headers[header::LOCATION].to_str().unwrap().to_string();
    app.get(&to).await
}

#[track_caller]
fn assert_ok_flash(page: &Reply, text: &str) {
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("class=\"banner ok\""),
        "no success banner (apply failed?): {}",
        page.body
    );
    assert!(page.body.contains(text), "flash lacks {text:?}");
}

#[tokio::test]
#[cfg_attr(not(feature = "system-tests"), ignore = "applies as root")]
async fn alias_lifecycle_is_applied_to_maps_db() {
    let app = logged_in().await;
    let page = app.get("/aliases").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("No aliases yet."));
    assert!(page.body.contains("name=\"_csrf\""));

    // Add, with tracking.
    let r = app
        .post(
            "/aliases",
            &[
                ("source", "Sales@Example.test"),
                ("destination", "alice@example.test, bob@outside.example"),
                ("tracking", "on"),
            ],
        )
        .await;
    assert_eq!(r.headers[header::LOCATION], "/aliases");
    let page = follow(&app, r).await;
    assert_ok_flash(&page, "Alias sales@example.test added with open tracking.");
    assert!(page.body.contains("sales@example.test"));
    assert!(page.body.contains("bob@outside.example"));
    let (id, dest, active, tracking) = alias_row(&app, "sales@example.test").unwrap();
    assert_eq!(dest, "alice@example.test,bob@outside.example");
    assert!(active && tracking);
    assert_eq!(
        maps_aliases(&app),
        vec![(
            "sales@example.test".to_string(),
            "alice@example.test,bob@outside.example".to_string()
        )]
    );

    // A catch-all.
    let r = app
        .post(
            "/aliases",
            &[
                ("source", "@example.test"),
                ("destination", "alice@example.test"),
            ],
        )
        .await;
    let page = follow(&app, r).await;
    assert_ok_flash(&page, "Alias @example.test added.");
    assert!(page.body.contains("catch-all"));
    let (all_id, _, _, all_tracking) = alias_row(&app, "@example.test").unwrap();
    assert!(!all_tracking);
    assert!(maps_aliases(&app).contains(&(
        "@example.test".to_string(),
        "alice@example.test".to_string()
    )));

    // The tracking switch, its own small form.
    let page = app.get("/aliases").await;
    assert!(
        page.body
            .contains(&format!("action=\"/aliases/{id}/tracking\""))
    );
    let r = app
        .post(&format!("/aliases/{id}/tracking"), &[("tracking", "off")])
        .await;
    let page = follow(&app, r).await;
    assert_ok_flash(&page, "Open tracking is off for sales@example.test.");
    assert!(!alias_row(&app, "sales@example.test").unwrap().3);
    let r = app
        .post(
            &format!("/aliases/{all_id}/tracking"),
            &[("tracking", "on")],
        )
        .await;
    follow(&app, r).await;
    assert!(alias_row(&app, "@example.test").unwrap().3);
    let r = app
        .post(&format!("/aliases/{id}/tracking"), &[("tracking", "maybe")])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // Edit: new destinations, and disabled (so Postfix no longer sees it).
    let page = app.get(&format!("/aliases/{id}/edit")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body
            .contains("value=\"alice@example.test, bob@outside.example\"")
    );
    assert!(page.body.contains("checked"));
    let r = app
        .post(
            &format!("/aliases/{id}/edit"),
            &[("destination", "carol@example.test")],
        )
        .await;
    let page = follow(&app, r).await;
    assert_ok_flash(&page, "Alias sales@example.test saved.");
    let (_, dest, active, _) = alias_row(&app, "sales@example.test").unwrap();
    assert_eq!(dest, "carol@example.test");
    assert!(!active);
    assert!(
        !maps_aliases(&app)
            .iter()
            .any(|(s, _)| s == "sales@example.test")
    );
    let r = app
        .post(
            &format!("/aliases/{id}/edit"),
            &[
                ("destination", "carol@example.test,dave@example.test"),
                ("active", "on"),
            ],
        )
        .await;
    follow(&app, r).await;
    assert!(maps_aliases(&app).contains(&(
        "sales@example.test".to_string(),
        "carol@example.test,dave@example.test".to_string()
    )));
    // A bad edit is refused in place, with the typed value kept.
    let r = app
        .post(
            &format!("/aliases/{id}/edit"),
            &[("destination", "carol@example.test\r\nx"), ("active", "on")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("class=\"error\""));
    let r = app
        .post(
            &format!("/aliases/{id}/edit"),
            &[("destination", "sales@example.test")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("cannot forward to itself"));
    assert_eq!(
        alias_row(&app, "sales@example.test").unwrap().1,
        "carol@example.test,dave@example.test"
    );

    // Delete (behind a confirmation in the browser).
    let page = app.get("/aliases").await;
    assert!(
        page.body
            .contains("data-confirm=\"Delete the alias sales@example.test?\"")
    );
    let r = app.post(&format!("/aliases/{id}/delete"), &[]).await;
    let page = follow(&app, r).await;
    assert_ok_flash(&page, "Alias sales@example.test deleted.");
    assert!(alias_row(&app, "sales@example.test").is_none());
    assert_eq!(
        maps_aliases(&app),
        vec![(
            "@example.test".to_string(),
            "alice@example.test".to_string()
        )]
    );

    // Unknown ids are 404s, for every route.
    for uri in [
        "/aliases/9999/edit",
        "/aliases/abc/edit",
        &format!("/aliases/{id}/edit"),
    ] {
        assert_eq!(app.get(uri).await.status, StatusCode::NOT_FOUND, "{uri}");
    }
    for (uri, fields) in [
        ("/aliases/9999/delete", vec![]),
        ("/aliases/9999/tracking", vec![("tracking", "on")]),
        (
            "/aliases/9999/edit",
            vec![("destination", "a@example.test")],
        ),
    ] {
        assert_eq!(
            app.post(uri, &fields).await.status,
            StatusCode::NOT_FOUND,
            "{uri}"
        );
    }
}

#[tokio::test]
async fn bad_alias_input_is_refused_next_to_the_field() {
    let app = logged_in().await;
    let long = format!("{}@example.test", "a".repeat(288));
    assert_eq!(long.chars().count(), 301);
    // (field, value): the other field gets a good value.
    let cases: Vec<(&str, &str)> = vec![
        ("source", ""),
        ("source", &long),
        ("source", "sales@example.test\r\nRCPT TO:<x@evil.test>"),
        ("source", "sales\n@example.test"),
        ("source", "sa:les@example.test"),
        ("source", "a,,b@example.test"),
        ("source", "sales@\u{435}xample.test"), // Cyrillic е
        ("source", "x'); DROP TABLE aliases;--@example.test"),
        ("source", "<script>alert(1)</script>@example.test"),
        ("source", "@"),
        ("source", "@@example.test"),
        ("destination", ""),
        ("destination", " , "),
        ("destination", &long),
        ("destination", "alice@example.test\r\nbob@example.test"),
        ("destination", "alice@example.test:bob@example.test"),
        ("destination", "alice@example.test,,bob@example.test"),
        ("destination", "alice@\u{435}xample.test"),
        ("destination", "x'); DROP TABLE aliases;--@example.test"),
        ("destination", "<script>alert(1)</script>@example.test"),
        ("destination", "alice@example.test; bob@example.test"),
    ];
    for (field, value) in cases {
        let (source, destination) = match field {
            "source" => (value, "alice@example.test"),
            _ => ("sales@example.test", value),
        };
        let r = app
            .post(
                "/aliases",
                &[
                    ("source", source),
                    ("destination", destination),
                    ("tracking", "on"),
                ],
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{field}={value:?}"
        );
        // The error sits right after its own input.
        let form = r.body.split("action=\"/aliases\"").nth(1).unwrap();
        let (before_dest, after_dest) = form.split_once("name=\"destination\"").unwrap();
        let after_dest = after_dest.split("</form>").next().unwrap();
        let own = if field == "source" {
            before_dest
        } else {
            after_dest
        };
        assert!(
            own.contains("class=\"error\""),
            "{field}={value:?}: no error next to the field"
        );
        assert!(
            own.contains("aria-invalid=\"true\""),
            "{field}={value:?}: field not marked invalid"
        );
        // Escaped echo of what was typed, never raw markup.
        assert!(
            !r.body.contains("<script>alert"),
            "{field}={value:?}: raw markup in the page"
        );
        if value.contains("<script>") {
            assert!(
                r.body
                    .contains("&lt;script&gt;alert(1)&lt;/script&gt;@example.test")
            );
        }
        if value.contains("DROP") {
            assert!(
                r.body
                    .contains("x&#39;); DROP TABLE aliases;--@example.test")
                    || r.body.contains("x'); DROP TABLE aliases;--@example.test")
            );
        }
        assert!(
            r.body.contains("checked"),
            "the tracking checkbox was not kept"
        );
        assert_eq!(alias_count(&app), 0, "{field}={value:?} changed something");
    }
    assert!(maps_aliases(&app).is_empty());
}

#[tokio::test]
async fn store_errors_are_form_errors() {
    let app = logged_in().await;
    mailserver::store::accounts::add(
        &app.conn(),
        &mailserver::names::Address::parse("alice@example.test").unwrap(),
        "a long password Kq7vZ",
        0,
        "",
    )
    .unwrap();
    let r = app
        .post(
            "/aliases",
            &[
                ("source", "sales@example.test"),
                ("destination", "alice@example.test"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    for (source, destination, message) in [
        (
            "sales@example.test",
            "bob@example.test",
            "An alias for sales@example.test exists already.",
        ),
        (
            "sales@unknown.test",
            "bob@example.test",
            "The domain unknown.test is not managed here",
        ),
        (
            "alice@example.test",
            "bob@example.test",
            "alice@example.test is an account",
        ),
        (
            "loop@example.test",
            "a@x.test, loop@example.test",
            "loop@example.test cannot forward to itself.",
        ),
    ] {
        let r = app
            .post(
                "/aliases",
                &[("source", source), ("destination", destination)],
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{source}");
        assert!(r.body.contains(message), "{source}: {message:?} not shown");
        assert!(r.body.contains(&format!("value=\"{source}\"")));
    }
    assert_eq!(alias_count(&app), 1);
}

#[tokio::test]
async fn alias_posts_need_the_csrf_token() {
    let app = logged_in().await;
    let source = AliasSource::parse("sales@example.test").unwrap();
    let dest = Destinations::parse("alice@example.test").unwrap();
    let id = mailserver::store::aliases::add(&app.conn(), &source, &dest, false)
        .unwrap()
        .id;
    for (uri, fields) in [
        (
            "/aliases".to_string(),
            vec![
                ("source", "x@example.test"),
                ("destination", "a@example.test"),
            ],
        ),
        (format!("/aliases/{id}/tracking"), vec![("tracking", "on")]),
        (
            format!("/aliases/{id}/edit"),
            vec![("destination", "b@example.test")],
        ),
        (format!("/aliases/{id}/delete"), vec![]),
    ] {
        let mut forged = fields.clone();
        forged.push(("_csrf", "forged"));
        assert_eq!(
            app.post(&uri, &forged).await.status,
            StatusCode::FORBIDDEN,
            "{uri}"
        );
    }
    assert_eq!(alias_count(&app), 1);
    let (_, dest, active, tracking) = alias_row(&app, "sales@example.test").unwrap();
    assert_eq!(dest, "alice@example.test");
    assert!(active && !tracking);
    // GET never changes anything.
    assert_eq!(
        app.get(&format!("/aliases/{id}/delete")).await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(alias_count(&app), 1);
}

// ---------------------------------------------------------------------------------------------
// Tracking

const AGENTS: &[(&str, &str)] = &[
    ("Mozilla/5.0", "Apple Mail Privacy Protection (likely)"),
    (
        "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
        "Google image proxy (Gmail)",
    ),
    (
        "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html",
        "Yahoo Mail image proxy",
    ),
    (
        "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17328; Pro)",
        "Microsoft Outlook",
    ),
    ("python-requests/2.31.0", "Script (python-requests)"),
    (
        "Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0",
        "",
    ),
];

struct Seeded {
    news: i64,
    promo: i64,
}

/// The tracking id of message `i`: 22 characters of canonical base64url, like the milter's.
fn msg_id(i: usize) -> String {
    format!("TrackingIdForTests{i:03}A")
}

/// Message `i` was sent on 2024-05-(1 + i/12) at (8 + i%12):00 UTC.
fn sent(i: usize) -> String {
    format!("2024-05-{:02} {:02}:00:00", 1 + i / 12, 8 + i % 12)
}

/// Message `i` was opened this many times, the k-th open k+1 hours after it was sent.
fn opens_of(i: usize) -> usize {
    (i * 7) % 5
}

fn subject_of(i: usize) -> String {
    match i {
        7 => "Hello, \"world\"\nline two".into(),
        8 => "=HYPERLINK(\"http://evil.test\",\"x\")".into(),
        9 => "+1 offer".into(),
        10 => "-10% off".into(),
        11 => "@everyone".into(),
        12 => "<script>alert(1)</script>".into(),
        _ => format!("Newsletter {i}"),
    }
}

/// 120 messages over ten days (12 a day) for two aliases and a deleted one, and their opens.
fn seed(app: &TestApp) -> Seeded {
    let conn = app.conn();
    let add = |source: &str, tracking| {
        mailserver::store::aliases::add(
            &conn,
            &AliasSource::parse(source).unwrap(),
            &Destinations::parse("alice@example.test").unwrap(),
            tracking,
        )
        .unwrap()
        .id
    };
    let news = add("news@example.test", true);
    let promo = add("promo@example.test", true);
    add("quiet@example.test", false);
    for i in 0..120 {
        let (alias, sender) = match i % 3 {
            0 => (Some(news), "news@example.test"),
            1 => (Some(promo), "promo@example.test"),
            _ => (None, "old@example.test"),
        };
        let recipients = if i % 5 == 0 {
            "a@x.test, b@y.test, c@z.test, d@w.test, e@v.test".to_string()
        } else {
            format!("r{i}@dest.test")
        };
        conn.execute(
            "INSERT INTO tracked_messages (tracking_id, sender, recipients, subject, alias_id, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            rusqlite::params![msg_id(i), sender, recipients, subject_of(i), alias, sent(i)],
        )
        .unwrap();
        for k in 0..opens_of(i) {
            let (ua, _) = AGENTS[(i + k) % AGENTS.len()];
            conn.execute(
                "INSERT INTO pixel_opens (tracking_id, client_ip, user_agent, opened_at)
                 VALUES (?1, ?2, ?3, datetime(?4, ?5))",
                rusqlite::params![
                    msg_id(i),
                    format!("198.51.100.{k}"),
                    ua,
                    sent(i),
                    format!("+{} hours", k + 1)
                ],
            )
            .unwrap();
        }
    }
    // One message opened by every kind of fetcher, one of them from Microsoft's scanning network.
    for (k, (ua, _)) in AGENTS.iter().enumerate() {
        conn.execute(
            "INSERT INTO pixel_opens (tracking_id, client_ip, user_agent, opened_at)
             VALUES (?4, ?1, ?2, datetime('2024-05-09 17:00:00', ?3))",
            rusqlite::params![
                format!("203.0.113.{k}"),
                ua,
                format!("+{} minutes", 10 * k + 1),
                msg_id(100)
            ],
        )
        .unwrap();
    }
    conn.execute(
        "INSERT INTO pixel_opens (tracking_id, client_ip, user_agent, opened_at)
         VALUES (?1, '40.107.22.1', 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/124.0', '2024-05-09 18:30:00')",
        [msg_id(100)],
    )
    .unwrap();
    Seeded { news, promo }
}

/// The message ids of the table rows, in page order.
fn listed(body: &str) -> Vec<String> {
    body.split("<tr data-message=\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap().to_string())
        .collect()
}

fn ids(range: impl Iterator<Item = usize>) -> Vec<String> {
    range.map(msg_id).collect()
}

/// The HTML of one table row.
fn row<'a>(body: &'a str, id: &str) -> &'a str {
    let start = body
        .find(&format!("<tr data-message=\"{id}\""))
        .unwrap_or_else(|| panic!("{id} not listed"));
    let rest = &body[start..];
    &rest[..rest.find("</tr>").unwrap()]
}

/// `data-day` → `data-count` of the chart's bars, in order.
fn bars(body: &str) -> Vec<(String, i64)> {
    body.split("class=\"bar\"")
        .skip(1)
        .map(|s| {
            let attr = |name: &str| {
                s.split(&format!("{name}=\""))
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap()
                    .to_string()
            };
            (attr("data-day"), attr("data-count").parse().unwrap())
        })
        .collect()
}

#[tokio::test]
async fn tracking_list_is_newest_first_paginated_and_filtered() {
    let app = logged_in().await;
    let empty = app.get("/tracking").await;
    assert_eq!(empty.status, StatusCode::OK);
    assert!(empty.body.contains("No tracked messages yet."));
    let s = seed(&app);
    let range = "from=2024-05-01&to=2024-05-10";

    // Newest first, 50 a page, filters kept in the page links.
    let p1 = app.get(&format!("/tracking?{range}")).await;
    assert_eq!(p1.status, StatusCode::OK);
    assert_eq!(listed(&p1.body), ids((70..120).rev()));
    assert!(p1.body.contains("120 tracked messages match the filters"));
    assert!(p1.body.contains("Page 1 of 3"));
    assert!(
        p1.body
            .contains("href=\"/tracking?from=2024-05-01&amp;to=2024-05-10&amp;page=2\"")
    );
    let p2 = app.get(&format!("/tracking?{range}&page=2")).await;
    assert_eq!(listed(&p2.body), ids((20..70).rev()));
    let p3 = app.get(&format!("/tracking?{range}&page=3")).await;
    assert_eq!(listed(&p3.body), ids((0..20).rev()));
    assert!(p3.body.contains("Page 3 of 3"));
    assert!(!p3.body.contains("<script>alert"));
    assert!(
        p3.body
            .replace("<wbr>", "")
            .contains("&lt;script&gt;alert(1)&lt;/script&gt;")
    );
    let beyond = app.get(&format!("/tracking?{range}&page=9")).await;
    assert!(listed(&beyond.body).is_empty());
    assert!(beyond.body.contains("No messages on this page."));
    // A nonsense page number is the first page.
    assert_eq!(
        listed(&app.get("/tracking?page=abc").await.body),
        ids((70..120).rev())
    );

    // The alias filter: a select of the tracked aliases only.
    assert!(p1.body.contains(&format!(
        "<option value=\"{}\">news@example.test</option>",
        s.news
    )));
    assert!(p1.body.contains("promo@example.test</option>"));
    assert!(!p1.body.contains("quiet@example.test</option>"));
    let news = app.get(&format!("/tracking?alias={}", s.news)).await;
    assert_eq!(
        listed(&news.body),
        ids((0..120).rev().filter(|i| i % 3 == 0))
    );
    assert!(news.body.contains("40 tracked messages match the filters"));
    assert!(
        news.body
            .contains(&format!("<option value=\"{}\" selected>", s.news))
    );

    // The date filter (inclusive days), alone and with the alias.
    let days = app.get("/tracking?from=2024-05-03&to=2024-05-04").await;
    assert_eq!(listed(&days.body), ids((24..48).rev()));
    let both = app
        .get(&format!(
            "/tracking?alias={}&from=2024-05-03&to=2024-05-04",
            s.promo
        ))
        .await;
    assert_eq!(
        listed(&both.body),
        ids((24..48).rev().filter(|i| i % 3 == 1))
    );
    let from_only = app.get("/tracking?from=2024-05-10").await;
    assert_eq!(listed(&from_only.body), ids((108..120).rev()));

    // Open counts, first and last open.
    for i in [5usize, 7, 33, 64, 100, 119] {
        let body = if i >= 70 { &p1.body } else { &p2.body };
        let body = if i < 20 { &p3.body } else { body };
        let html = row(body, &msg_id(i));
        let extra = if i == 100 { AGENTS.len() + 1 } else { 0 };
        let n = opens_of(i) + extra;
        if n == 0 {
            assert!(
                html.contains("<span class=\"muted\">0</span>"),
                "{i}: {html}"
            );
            assert_eq!(
                html.matches("–").count(),
                2,
                "{i}: first/last should be empty"
            );
        } else {
            assert!(
                html.contains(&format!("<strong>{n}</strong>")),
                "{i}: {html}"
            );
        }
        if opens_of(i) > 0 && i != 100 {
            let hour = 8 + i % 12;
            let first = format!("<span class=\"muted\">{:02}:00:00</span>", hour + 1);
            let last = format!(
                "<span class=\"muted\">{:02}:00:00</span>",
                hour + opens_of(i)
            );
            assert!(html.contains(&first), "{i}: first open {first} in {html}");
            assert!(html.contains(&last), "{i}: last open {last} in {html}");
        }
    }
    let html = row(&p1.body, &msg_id(100));
    assert!(
        html.contains("<span class=\"muted\">17:01:00</span>"),
        "{html}"
    );
    assert!(
        html.contains("<span class=\"muted\">18:30:00</span>"),
        "{html}"
    );
    // Many recipients are cut short.
    assert!(row(&p1.body, &msg_id(115)).contains("and 2 more"));

    // Bad filters: 422, the error next to the field, the typed value kept (escaped).
    let bad = app
        .get("/tracking?from=2024-02-30&to=%3Cscript%3E&alias=99999")
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad.body.matches("class=\"error\"").count(), 3);
    assert!(bad.body.contains("value=\"2024-02-30\""));
    assert!(!bad.body.contains("<script>"));
    assert!(bad.body.contains("value=\"&lt;script&gt;\""));
    let reversed = app.get("/tracking?from=2024-05-05&to=2024-05-01").await;
    assert_eq!(reversed.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        reversed
            .body
            .contains("The end date is before the start date.")
    );
}

#[tokio::test]
async fn tracking_chart_has_one_bar_per_day() {
    let app = logged_in().await;
    let s = seed(&app);
    let page = app.get("/tracking?from=2024-05-01&to=2024-05-10").await;
    assert!(page.body.contains("<svg"));
    assert!(
        !page.body.contains(" style="),
        "inline styles are blocked by the CSP"
    );
    let got = bars(&page.body);
    let want: Vec<(String, i64)> = (0..10)
        .map(|d| {
            let mut n: usize = (12 * d..12 * d + 12).map(opens_of).sum();
            if d == 8 {
                n += AGENTS.len() + 1; // message 100, on 2024-05-09
            }
            (format!("2024-05-{:02}", d + 1), n as i64)
        })
        .collect();
    assert_eq!(got, want);
    assert!(page.body.contains("May 10"), "axis labels");
    // By alias: only that alias's opens.
    let page = app
        .get(&format!(
            "/tracking?alias={}&from=2024-05-01&to=2024-05-03",
            s.news
        ))
        .await;
    let got = bars(&page.body);
    let want: Vec<i64> = (0..3)
        .map(|d| {
            (12 * d..12 * d + 12)
                .filter(|i| i % 3 == 0)
                .map(opens_of)
                .sum::<usize>() as i64
        })
        .collect();
    assert_eq!(got.iter().map(|b| b.1).collect::<Vec<_>>(), want);
    // Without dates: the last 30 days, ending today.
    let page = app.get("/tracking").await;
    let got = bars(&page.body);
    assert_eq!(got.len(), 30);
    let today: String = app
        .conn()
        .query_row("SELECT date('now')", [], |r| r.get(0))
        .unwrap();
    assert_eq!(got.last().unwrap().0, today);
    assert!(page.body.contains("No opens in this range"));
}

#[tokio::test]
async fn message_page_lists_each_open_with_proxy_labels() {
    let app = logged_in().await;
    seed(&app);
    let page = app.get(&format!("/tracking/{}", msg_id(100))).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Newsletter 100"));
    let opens = page
        .body
        .split("<h2>Opens</h2>")
        .nth(1)
        .unwrap()
        .replace("<wbr>", "");
    assert_eq!(
        opens.matches("<tr>").count(),
        1 + AGENTS.len() + 1,
        "header + opens"
    );
    for (ua, label) in AGENTS {
        assert!(opens.contains(ua), "{ua}");
        if !label.is_empty() {
            assert!(opens.contains(&format!(">{label}</span>")), "{label}");
        }
    }
    assert!(opens.contains("203.0.113.0"));
    assert!(opens.contains("Microsoft Exchange Online Protection (scanner)"));
    // Oldest first: 17:01, 17:11, ... then 18:30.
    let first = opens.find("17:01:00").unwrap();
    let second = opens.find("17:11:00").unwrap();
    let last = opens.find("18:30:00").unwrap();
    assert!(first < second && second < last);
    // The plain Firefox open is not labelled; 5 of the 7 were proxies or scanners.
    assert!(
        page.body
            .contains("7 opens, 5 of them by an image proxy or a scanner")
    );

    let escaped = app.get(&format!("/tracking/{}", msg_id(12))).await;
    assert!(!escaped.body.contains("<script>alert"));
    let none = app.get(&format!("/tracking/{}", msg_id(1))).await;
    assert_eq!(opens_of(1), 2);
    assert!(none.body.contains("2 opens"));
    assert!(none.body.contains(&format!("<code>{}</code>", msg_id(1))));
    // Not a tracking id at all, or a well-formed one that no message has: not found either way.
    for id in ["nope", "%27%3B--", "msg-001", "VQx3An5C4mtsOVsTUQiGHQ"] {
        assert_eq!(
            app.get(&format!("/tracking/{id}")).await.status,
            StatusCode::NOT_FOUND,
            "{id}"
        );
    }
}

/// A small RFC 4180 reader, to check the export from the outside.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, c) => field.push(c),
        }
    }
    assert!(field.is_empty() && record.is_empty(), "unterminated record");
    records
}

#[tokio::test]
async fn csv_export_is_quoted_and_safe_for_spreadsheets() {
    let app = logged_in().await;
    let s = seed(&app);
    let r = app.get("/tracking.csv?from=2024-05-01&to=2024-05-10").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let disposition = r.headers[header::CONTENT_DISPOSITION].to_str().unwrap();
    assert!(disposition.starts_with("attachment"), "{disposition}");
    assert!(disposition.contains("filename=\"tracking.csv\""));
    // Quoting survives commas, quotes and line breaks.
    assert!(r.body.contains("\"Hello, \"\"world\"\"\nline two\""));
    let records = parse_csv(&r.body);
    assert_eq!(
        records[0],
        [
            "Sent (UTC)",
            "Sender",
            "Recipients",
            "Subject",
            "Alias",
            "Opens",
            "First open (UTC)",
            "Last open (UTC)",
            "Tracking ID"
        ]
    );
    assert_eq!(records.len(), 121);
    assert!(records.iter().all(|r| r.len() == 9));
    let by_id = |id: &str| records.iter().find(|r| r[8] == id).unwrap().clone();
    assert_eq!(records[1][8], msg_id(119), "newest first");
    let m7 = by_id(&msg_id(7));
    assert_eq!(m7[0], sent(7));
    assert_eq!(m7[3], "Hello, \"world\"\nline two");
    assert_eq!(m7[4], "promo@example.test");
    assert_eq!(m7[5], opens_of(7).to_string());
    assert_eq!(m7[6], "2024-05-01 16:00:00");
    assert_eq!(m7[7], format!("2024-05-01 {}:00:00", 15 + opens_of(7)));
    assert_eq!(
        by_id(&msg_id(5))[2],
        "a@x.test, b@y.test, c@z.test, d@w.test, e@v.test"
    );
    assert_eq!(by_id(&msg_id(5))[4], "", "deleted alias");
    // Formula injection is neutralised.
    assert_eq!(
        by_id(&msg_id(8))[3],
        "'=HYPERLINK(\"http://evil.test\",\"x\")"
    );
    assert_eq!(by_id(&msg_id(9))[3], "'+1 offer");
    assert_eq!(by_id(&msg_id(10))[3], "'-10% off");
    assert_eq!(by_id(&msg_id(11))[3], "'@everyone");
    assert_eq!(by_id(&msg_id(12))[3], "<script>alert(1)</script>");

    // The same filters as the page.
    let r = app
        .get(&format!("/tracking.csv?alias={}&from=2024-05-03", s.news))
        .await;
    let records = parse_csv(&r.body);
    let want: Vec<String> = ids((24..120).rev().filter(|i| i % 3 == 0));
    assert_eq!(
        records[1..]
            .iter()
            .map(|r| r[8].clone())
            .collect::<Vec<_>>(),
        want
    );
    let page = app
        .get(&format!("/tracking?alias={}&from=2024-05-03", s.news))
        .await;
    assert!(page.body.contains(&format!(
        "href=\"/tracking.csv?alias={}&amp;from=2024-05-03\"",
        s.news
    )));
    assert_eq!(
        app.get("/tracking.csv?to=2024-13-01").await.status,
        StatusCode::BAD_REQUEST
    );
}

/// The tracking id of recent message `i`.
fn recent_id(i: usize) -> String {
    format!("TrackingIdRecent{i:05}A")
}

/// Recent traffic, so the default (last 30 days) chart has something to draw. With
/// `TRACKING_SNAPSHOT=/path.html`, also writes the page with the stylesheet inlined, to look at.
#[tokio::test]
async fn default_chart_shows_recent_opens() {
    let app = logged_in().await;
    let conn = app.conn();
    mailserver::store::aliases::add(
        &conn,
        &AliasSource::parse("newsletter@example.test").unwrap(),
        &Destinations::parse("alice@example.test").unwrap(),
        true,
    )
    .unwrap();
    for i in 0..80usize {
        let days = i % 20 + 1;
        conn.execute(
            "INSERT INTO tracked_messages (tracking_id, sender, recipients, subject, alias_id, created_at)
             VALUES (?1, 'newsletter@example.test', ?2, ?3, 1, datetime('now', ?4, ?5))",
            rusqlite::params![
                recent_id(i),
                if i % 4 == 0 {
                    "alice@customer.test, bob.with.a.rather.long.address@subdomain.customer-company.test, carol@x.test, dan@y.test".to_string()
                } else {
                    format!("reader{i}@customer.test")
                },
                if i % 7 == 0 {
                    "Our very long monthly newsletter subject line that goes on and on about many things".to_string()
                } else {
                    format!("Offer number {i}")
                },
                format!("-{days} days"),
                format!("-{} minutes", i * 7),
            ],
        )
        .unwrap();
        for k in 0..(i * 13 % 9) {
            let (ua, _) = AGENTS[(i + k) % AGENTS.len()];
            conn.execute(
                "INSERT INTO pixel_opens (tracking_id, client_ip, user_agent, opened_at)
                 SELECT tracking_id, '198.51.100.7', ?2, datetime(created_at, ?3)
                 FROM tracked_messages WHERE tracking_id = ?1",
                rusqlite::params![recent_id(i), ua, format!("+{} hours", k * 2 + 1)],
            )
            .unwrap();
        }
    }
    let want: Vec<(String, i64)> = conn
        .prepare(
            "SELECT substr(opened_at, 1, 10), count(*) FROM pixel_opens
             WHERE opened_at >= date('now', '-29 days') GROUP BY 1 ORDER BY 1",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    drop(conn);
    let page = app.get("/tracking").await;
    assert_eq!(page.status, StatusCode::OK);
    let got = bars(&page.body);
    assert_eq!(got.len(), 30);
    let nonzero: Vec<(String, i64)> = got.into_iter().filter(|b| b.1 > 0).collect();
    assert_eq!(nonzero, want);
    assert!(!want.is_empty());
    if let Ok(path) = std::env::var("TRACKING_SNAPSHOT") {
        let css = include_str!("../static/app.css");
        let inline = |body: &str| {
            body.replace(
                "<link rel=\"stylesheet\" href=\"/static/app.css\">",
                &format!("<style>{css}</style>"),
            )
        };
        std::fs::write(&path, inline(&page.body)).unwrap();
        let message = app.get(&format!("/tracking/{}", recent_id(4))).await;
        std::fs::write(
            path.replace(".html", "-message.html"),
            inline(&message.body),
        )
        .unwrap();
        let aliases = app.get("/aliases").await;
        std::fs::write(
            path.replace(".html", "-aliases.html"),
            inline(&aliases.body),
        )
        .unwrap();
    }
}
