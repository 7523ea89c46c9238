//! The Domains and Accounts pages, through the real router: listing, adding, editing, deleting, DKIM
//! rotation, the DNS page, and refusal of bad input (422, the error next to the field, the input kept
//! and escaped, nothing changed). Apply runs for real and writes under the temp data dir.

mod common;

use axum::http::{StatusCode, header};
use common::{ADMIN_PASSWORD, Reply, TestApp};
use rusqlite::OptionalExtension as _;

const HOST: &str = "mx.example.test";
/// A mailbox password that passes the policy.
const PW: &str = "Tq8wLz4nRv2k-pw";

/// The bad values every name field must refuse.
fn bad_values() -> Vec<(&'static str, String)> {
    vec![
        ("empty", String::new()),
        ("too long", "a".repeat(300)),
        ("CR/LF", "a\r\nb.test".to_string()),
        ("colon", "a:b.test".to_string()),
        ("comma", "a,b.test".to_string()),
        ("look-alike", "еxample.test".to_string()), // Cyrillic е
        ("SQL", "x'); DROP TABLE domains;--".to_string()),
        ("HTML", "<script>alert(1)</script>".to_string()),
    ]
}

/// What maud makes of `s` in HTML.
fn escaped(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A logged-in app with the CSRF token taken from one of our own forms.
async fn app() -> TestApp {
    let mut app = TestApp::new().await;
    let r = app.login("admin", ADMIN_PASSWORD).await;
    assert_eq!(r.status, StatusCode::OK);
    let page = app.get("/domains").await.body;
    app.csrf = page
        .split("name=\"_csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .map(str::to_string);
    assert!(app.csrf.is_some(), "no CSRF token on /domains");
    app
}

#[track_caller]
fn assert_redirect(r: &Reply, to: &str) {
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(r.headers[header::LOCATION], to);
}

/// Follows a redirect and checks the flash message says `ok` (and that apply did not fail).
async fn follow(app: &TestApp, r: &Reply, ok: &str) -> Reply {
    let to = r.headers[header::LOCATION].to_str().unwrap().to_string();
    let page = app.get(&to).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        !page.body.contains("banner error"),
        "apply failed: {}",
        page.body
    );
    assert!(
        page.body.contains(&escaped(ok)),
        "no {ok:?} on {to}: {}",
        page.body
    );
    page
}

async fn add_domain(app: &TestApp, domain: &str) {
    let r = app.post("/domains", &[("domain", domain)]).await;
    assert_redirect(&r, "/domains");
    follow(app, &r, &format!("Domain {domain} added")).await;
}

async fn add_account(app: &TestApp, local: &str, domain: &str, password: &str) {
    let r = app
        .post(
            "/accounts",
            &[
                ("local", local),
                ("domain", domain),
                ("password", password),
                ("name", ""),
                ("quota", "0"),
            ],
        )
        .await;
    assert_redirect(&r, "/accounts");
}

fn count(app: &TestApp, table: &str) -> i64 {
    app.conn()
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

fn selector(app: &TestApp, domain: &str) -> Option<String> {
    app.conn()
        .query_row(
            "SELECT dkim_selector FROM domains WHERE domain = ?1",
            [domain],
            |r| r.get(0),
        )
        .optional()
        .unwrap()
        .flatten()
}

fn key_table(app: &TestApp) -> String {
    std::fs::read_to_string(app.state.paths.config_dir().join("opendkim/KeyTable")).unwrap()
}

fn maps_has(app: &TestApp, sql: &str, key: &str) -> bool {
    let maps = rusqlite::Connection::open(app.state.paths.maps_db()).unwrap();
    maps.query_row(sql, [key], |r| r.get::<_, i64>(0)).unwrap() > 0
}

fn mailbox_in_maps(app: &TestApp, address: &str) -> bool {
    maps_has(
        app,
        "SELECT count(*) FROM mailboxes WHERE email = ?1",
        address,
    )
}

#[tokio::test]
async fn every_page_renders() {
    let app = app().await;
    let r = app.get("/domains").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("No domains yet"));
    assert!(r.body.contains("Add a domain"));
    assert!(r.body.contains(r#"name="domain""#));
    let r = app.get("/accounts").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("Add a domain first"));

    add_domain(&app, "example.test").await;
    add_account(&app, "alice", "example.test", "pw-one-Vq9xLm2rTz7k").await;
    for (uri, text) in [
        ("/domains", "example.test"),
        ("/domains/example.test/dns", "DNS records for example.test"),
        ("/accounts", "alice@example.test"),
        ("/accounts/alice@example.test", "Account alice@example.test"),
    ] {
        let r = app.get(uri).await;
        assert_eq!(r.status, StatusCode::OK, "{uri}");
        assert!(r.body.contains(text), "{uri} lacks {text:?}");
        assert!(r.body.contains(r#"name="_csrf""#), "{uri} has no form");
    }

    // Unknown or malformed names in URLs are 404s, for pages and for actions.
    for uri in [
        "/domains/nope.test/dns",
        "/domains/bad%20name/dns",
        "/domains/%3Cscript%3E/dns",
        "/accounts/bob@example.test",
        "/accounts/alice@nope.test",
        "/accounts/not-an-address",
    ] {
        assert_eq!(app.get(uri).await.status, StatusCode::NOT_FOUND, "{uri}");
    }
    for uri in [
        "/domains/nope.test/delete",
        "/domains/nope.test/dkim",
        "/domains/nope.test/activate",
        "/domains/a%0D%0Ab.test/deactivate",
        "/accounts/bob@example.test/delete",
        "/accounts/bob@example.test/password",
        "/accounts/bob@example.test",
    ] {
        let r = app
            .post(uri, &[("password", "x"), ("name", "x"), ("quota", "1")])
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{uri}");
    }
}

#[tokio::test]
async fn get_never_changes_anything() {
    let app = app().await;
    add_domain(&app, "example.test").await;
    add_account(&app, "alice", "example.test", PW).await;
    for uri in [
        "/domains/example.test/delete",
        "/domains/example.test/dkim",
        "/domains/example.test/deactivate",
        "/accounts/alice@example.test/delete",
        "/accounts/alice@example.test/password",
    ] {
        assert_eq!(
            app.get(uri).await.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{uri}"
        );
    }
    assert_eq!(count(&app, "domains"), 1);
    assert_eq!(count(&app, "accounts"), 1);
    assert_eq!(selector(&app, "example.test").as_deref(), Some("mail"));
}

#[tokio::test]
async fn adding_a_domain_makes_its_dkim_key_and_dns_records() {
    let app = app().await;
    let r = app.post("/domains", &[("domain", " Example.TEST ")]).await;
    assert_redirect(&r, "/domains");
    let page = follow(&app, &r, "Domain example.test added").await;
    assert!(page.body.contains("<strong>example.test</strong>"));
    assert!(page.body.contains("<code>mail</code>"));

    let (private, public): (Option<String>, String) = app
        .conn()
        .query_row(
            "SELECT dkim_private_key, dkim_public_key FROM domains WHERE domain = 'example.test'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    // The private key is only in its file, made by the apply (root's, in process here): the
    // database the dashboard reads never holds it.
    assert_eq!(private, None);
    let key_file = app.dir.path().join("dkim/example.test/mail.private");
    let pem = std::fs::read_to_string(&key_file).unwrap();
    assert_eq!(mailserver::dkim::public_of(&pem).unwrap(), public);
    assert!(key_table(&app).contains("mail._domainkey.example.test"));
    assert!(maps_has(
        &app,
        "SELECT count(*) FROM domains WHERE domain = ?1",
        "example.test"
    ));

    // Adding it again is a field error, not a 500.
    let r = app.post("/domains", &[("domain", "example.test")]).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("already exists"));
    assert_eq!(count(&app, "domains"), 1);

    // The DNS page: every record, its zone line, the DKIM value whole and split, copy buttons.
    let r = app.get("/domains/example.test/dns").await;
    assert_eq!(r.status, StatusCode::OK);
    let body = &r.body;
    for text in ["MX", "SPF", "DKIM", "DMARC", "Zone-file line"] {
        assert!(body.contains(text), "DNS page lacks {text}");
    }
    assert!(body.contains(&format!("10 {HOST}.")));
    assert!(body.contains("v=spf1 mx -all"));
    assert!(body.contains("mail._domainkey.example.test."));
    assert!(body.contains("_dmarc.example.test."));
    let dkim_value = format!("v=DKIM1; k=rsa; p={public}");
    assert!(dkim_value.len() > 255);
    assert!(body.contains(&dkim_value), "whole DKIM value");
    let chunks = mailserver::dns::split_txt(&dkim_value);
    assert!(chunks.len() >= 2);
    let split = chunks
        .iter()
        .map(|c| format!("&quot;{c}&quot;"))
        .collect::<Vec<_>>()
        .join(" ");
    assert!(body.contains(&split), "the 255-character split");
    assert!(body.contains(&escaped(&format!(
        "mail._domainkey.example.test.\t3600\tIN\tTXT\t{}",
        chunks
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(" ")
    ))));
    assert!(body.contains("example.test.\t3600\tIN\tMX\t10 mx.example.test."));
    // Every copy button points at an element that exists.
    let ids: Vec<&str> = body
        .split(r#"data-copy=""#)
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap())
        .collect();
    // Name, value and zone line of four records, and the split DKIM value.
    assert_eq!(ids.len(), 4 * 3 + 1, "copy buttons");
    for id in &ids {
        assert!(body.contains(&format!(r#"id="{id}""#)), "no element {id}");
        assert!(
            body.contains(&format!(
                r#"<button class="secondary" type="button" data-copy="{id}">Copy</button>"#
            )),
            "{id}"
        );
    }
    assert!(!body.contains("<script>"), "no inline script");
}

#[tokio::test]
async fn rotating_the_dkim_key_changes_the_selector() {
    let app = app().await;
    add_domain(&app, "example.test").await;
    assert_eq!(selector(&app, "example.test").as_deref(), Some("mail"));
    let r = app.post("/domains/example.test/dkim", &[]).await;
    assert_redirect(&r, "/domains/example.test/dns");
    let page = follow(&app, &r, "New DKIM key for example.test").await;
    let new = selector(&app, "example.test").unwrap();
    assert!(new.starts_with("mail-"), "{new}");
    assert!(
        page.body
            .contains(&format!("{new}._domainkey.example.test."))
    );
    let table = key_table(&app);
    assert!(table.contains(&format!("{new}._domainkey.example.test")));
    assert!(!table.contains("mail._domainkey.example.test"));
    // The new key has its file; the old one is gone.
    let dkim = app.dir.path().join("dkim/example.test");
    assert!(dkim.join(format!("{new}.private")).exists());
    assert!(!dkim.join("mail.private").exists());
    // Again: yet another selector.
    let r = app.post("/domains/example.test/dkim", &[]).await;
    assert_redirect(&r, "/domains/example.test/dns");
    assert_ne!(selector(&app, "example.test").unwrap(), new);
}

/// Until apply has made a key (the applier is slow, or failed), the DNS page says so and shows no
/// DKIM record; the next apply makes it.
#[tokio::test]
async fn a_key_still_being_made_is_shown_as_pending() {
    let app = app().await;
    add_domain(&app, "example.test").await;
    app.conn()
        .execute(
            "UPDATE domains SET dkim_selector = 'next', dkim_public_key = NULL",
            [],
        )
        .unwrap();
    let page = app.get("/domains/example.test/dns").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("still being generated"), "{}", page.body);
    assert!(
        !page.body.contains("_domainkey"),
        "a record for a key that is not made yet"
    );
    mailserver::apply::apply(&app.state.paths, &mut app.conn()).unwrap();
    let page = app.get("/domains/example.test/dns").await;
    assert!(!page.body.contains("still being generated"));
    assert!(page.body.contains("next._domainkey.example.test."));
}

#[tokio::test]
async fn domains_can_be_deactivated_and_activated() {
    let app = app().await;
    add_domain(&app, "example.test").await;
    let active = |app: &TestApp| -> bool {
        app.conn()
            .query_row(
                "SELECT active FROM domains WHERE domain = 'example.test'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    let in_maps = |app: &TestApp| {
        maps_has(
            app,
            "SELECT count(*) FROM domains WHERE domain = ?1",
            "example.test",
        )
    };
    let r = app.post("/domains/example.test/deactivate", &[]).await;
    assert_redirect(&r, "/domains");
    let page = follow(&app, &r, "Domain example.test deactivated").await;
    assert!(page.body.contains("inactive"));
    assert!(page.body.contains(">Activate<"));
    assert!(!active(&app));
    assert!(!in_maps(&app));
    let r = app.post("/domains/example.test/activate", &[]).await;
    assert_redirect(&r, "/domains");
    follow(&app, &r, "Domain example.test activated").await;
    assert!(active(&app));
    assert!(in_maps(&app));
}

#[tokio::test]
async fn deleting_a_domain_in_use_needs_the_cascade_box() {
    let app = app().await;
    add_domain(&app, "example.test").await;
    add_domain(&app, "empty.test").await;
    add_account(&app, "alice", "example.test", PW).await;

    let list = app.get("/domains").await.body;
    assert!(list.contains("also delete its 1 account and 0 aliases"));
    assert!(list.contains(r#"name="cascade""#));

    let r = app.post("/domains/example.test/delete", &[]).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.body.contains("Domain example.test was not deleted"));
    assert!(r.body.contains("1 account and 0 aliases still use it"));
    assert!(r.body.contains("<strong>example.test</strong>"));
    assert_eq!(count(&app, "domains"), 2);
    assert_eq!(count(&app, "accounts"), 1);

    // An unticked box (empty value) is no confirmation either.
    let r = app
        .post("/domains/example.test/delete", &[("cascade", "")])
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);

    let r = app
        .post("/domains/example.test/delete", &[("cascade", "1")])
        .await;
    assert_redirect(&r, "/domains");
    let page = follow(
        &app,
        &r,
        "Domain example.test deleted, with its 1 account and 0 aliases",
    )
    .await;
    assert!(!page.body.contains("<strong>example.test</strong>"));
    assert_eq!(count(&app, "domains"), 1);
    assert_eq!(count(&app, "accounts"), 0);
    assert!(!key_table(&app).contains("example.test "));
    assert!(!mailbox_in_maps(&app, "alice@example.test"));

    // A domain nobody uses goes without the box.
    let r = app.post("/domains/empty.test/delete", &[]).await;
    assert_redirect(&r, "/domains");
    follow(&app, &r, "Domain empty.test deleted").await;
    assert_eq!(count(&app, "domains"), 0);
}

fn account_row(app: &TestApp, address: &str) -> Option<(String, i64, bool, String)> {
    let (local, domain) = address.split_once('@').unwrap();
    app.conn()
        .query_row(
            "SELECT a.name, a.quota, a.active, a.password_hash FROM accounts a
             JOIN domains d ON d.id = a.domain_id WHERE a.username = ?1 AND d.domain = ?2",
            [local, domain],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()
        .unwrap()
}

#[tokio::test]
async fn account_lifecycle() {
    let app = app().await;
    add_domain(&app, "example.test").await;
    let page = app.get("/accounts").await.body;
    assert!(page.contains(r#"<option value="example.test">example.test</option>"#));

    let r = app
        .post(
            "/accounts",
            &[
                ("local", "Alice"),
                ("domain", "example.test"),
                ("password", "correct horse battery staple"),
                ("name", "Alice Smith"),
                ("quota", "100"),
            ],
        )
        .await;
    assert_redirect(&r, "/accounts");
    let page = follow(&app, &r, "Account alice@example.test added").await;
    for text in [
        "alice@example.test",
        "<td>example.test",
        "Alice Smith",
        "100 MiB",
        "active",
    ] {
        assert!(page.body.contains(text), "list lacks {text}");
    }
    let (name, quota, active, hash) = account_row(&app, "alice@example.test").unwrap();
    assert_eq!((name.as_str(), quota, active), ("Alice Smith", 100, true));
    assert!(mailserver::password::verify(
        "correct horse battery staple",
        &hash
    ));
    assert!(!mailserver::password::verify("wrong", &hash));
    assert!(mailbox_in_maps(&app, "alice@example.test"));

    // The same address again: a field error.
    let r = app
        .post(
            "/accounts",
            &[
                ("local", "alice"),
                ("domain", "example.test"),
                ("password", PW),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("account alice@example.test already exists"));
    assert_eq!(count(&app, "accounts"), 1);

    // A weak password: a field error with the policy's reason; the other fields are kept.
    for (weak, error) in [
        ("short-pw", "password too short: at least 12 characters"),
        ("password123456", "password too easy to guess"),
        (
            "bob@example.test1",
            "It contains the user name, address or domain.",
        ),
    ] {
        let r = app
            .post(
                "/accounts",
                &[
                    ("local", "bob"),
                    ("domain", "example.test"),
                    ("password", weak),
                    ("name", "Bob"),
                ],
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{weak}");
        assert!(r.body.contains(error), "{weak}: {}", r.body);
        assert!(r.body.contains(r#"value="bob""#), "{weak}");
        assert!(!r.body.contains(weak), "{weak}: password echoed");
    }
    assert_eq!(count(&app, "accounts"), 1);

    // Edit: name, quota, and (unticked) active.
    let edit = app.get("/accounts/alice@example.test").await.body;
    assert!(edit.contains(r#"value="Alice Smith""#));
    assert!(edit.contains(r#"value="100""#));
    assert!(edit.contains("checked"));
    let r = app
        .post(
            "/accounts/alice@example.test",
            &[("name", "Alice B"), ("quota", "0")],
        )
        .await;
    assert_redirect(&r, "/accounts");
    let page = follow(&app, &r, "Account alice@example.test saved").await;
    assert!(page.body.contains("unlimited"));
    assert!(page.body.contains("Alice B"));
    let (name, quota, active, _) = account_row(&app, "alice@example.test").unwrap();
    assert_eq!((name.as_str(), quota, active), ("Alice B", 0, false));
    assert!(!mailbox_in_maps(&app, "alice@example.test"));
    let r = app
        .post(
            "/accounts/alice@example.test",
            &[("name", "Alice B"), ("quota", "250"), ("active", "1")],
        )
        .await;
    assert_redirect(&r, "/accounts");
    let (_, quota, active, _) = account_row(&app, "alice@example.test").unwrap();
    assert_eq!((quota, active), (250, true));
    assert!(mailbox_in_maps(&app, "alice@example.test"));

    // Bad edits: 422, the input kept, nothing changed.
    for (name, quota, error) in [
        (
            "a\r\nb",
            "1",
            "name contains a character that is not allowed",
        ),
        ("a:b", "1", "name contains a character that is not allowed"),
        ("ok", "lots", "the quota must be a whole number"),
        ("ok", "-5", "the quota must be a whole number"),
        ("ok", "99999999999", "the quota is too large"),
    ] {
        let r = app
            .post(
                "/accounts/alice@example.test",
                &[("name", name), ("quota", quota), ("active", "1")],
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{name:?} {quota:?}"
        );
        assert!(r.body.contains(error), "{name:?} {quota:?}: {}", r.body);
        assert!(r.body.contains(&format!(r#"value="{}""#, escaped(name))));
        assert!(r.body.contains(r#"aria-invalid="true""#));
    }
    let (name, quota, _, _) = account_row(&app, "alice@example.test").unwrap();
    assert_eq!((name.as_str(), quota), ("Alice B", 250));

    // Set the password; an empty one is refused.
    let r = app
        .post(
            "/accounts/alice@example.test/password",
            &[("password", "battery-staple-Hz2c-Wx4q")],
        )
        .await;
    assert_redirect(&r, "/accounts/alice@example.test");
    follow(&app, &r, "New password set for alice@example.test").await;
    let (_, _, _, hash) = account_row(&app, "alice@example.test").unwrap();
    assert!(mailserver::password::verify(
        "battery-staple-Hz2c-Wx4q",
        &hash
    ));
    let r = app
        .post("/accounts/alice@example.test/password", &[("password", "")])
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("the password is empty"));
    let r = app
        .post(
            "/accounts/alice@example.test/password",
            &[("password", "new\r\nline")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("line break"));
    let (_, _, _, hash) = account_row(&app, "alice@example.test").unwrap();
    assert!(mailserver::password::verify(
        "battery-staple-Hz2c-Wx4q",
        &hash
    ));
    // Weak passwords: the policy's message on the form, the password unchanged.
    for (weak, error) in [
        ("x", "password too short: at least 12 characters"),
        (
            "password123456",
            "password too easy to guess: This is similar to a commonly used password.",
        ),
        (
            "alice@example.test2024",
            "It contains the user name, address or domain.",
        ),
    ] {
        let r = app
            .post(
                "/accounts/alice@example.test/password",
                &[("password", weak)],
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{weak}");
        assert!(r.body.contains(error), "{weak}: {}", r.body);
        assert!(r.body.contains(r#"aria-invalid="true""#), "{weak}");
        if weak.len() > 1 {
            assert!(!r.body.contains(weak), "{weak}: password echoed");
        }
    }
    let (_, _, _, hash) = account_row(&app, "alice@example.test").unwrap();
    assert!(mailserver::password::verify(
        "battery-staple-Hz2c-Wx4q",
        &hash
    ));

    // Delete.
    let edit = app.get("/accounts/alice@example.test").await.body;
    assert!(edit.contains("data-confirm=\"Delete the account alice@example.test?"));
    let r = app.post("/accounts/alice@example.test/delete", &[]).await;
    assert_redirect(&r, "/accounts");
    let page = follow(&app, &r, "Account alice@example.test deleted").await;
    assert!(page.body.contains("No accounts yet"));
    assert!(account_row(&app, "alice@example.test").is_none());
    assert!(!mailbox_in_maps(&app, "alice@example.test"));
    assert_eq!(
        app.get("/accounts/alice@example.test").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn display_names_are_escaped_on_output() {
    let app = app().await;
    add_domain(&app, "example.test").await;
    let r = app
        .post(
            "/accounts",
            &[
                ("local", "bob"),
                ("domain", "example.test"),
                ("password", PW),
                ("name", "<script>alert(1)</script>"),
            ],
        )
        .await;
    assert_redirect(&r, "/accounts");
    for uri in ["/accounts", "/accounts/bob@example.test"] {
        let body = app.get(uri).await.body;
        assert!(!body.contains("<script>alert(1)"), "{uri}");
        assert!(
            body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{uri}"
        );
    }
}

#[track_caller]
fn assert_refused(r: &Reply, what: &str, value: &str) {
    assert_eq!(
        r.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{what}: {}",
        r.body
    );
    assert!(
        r.body.contains(r#"aria-invalid="true""#),
        "{what}: no field marked"
    );
    assert!(
        r.body.contains(r#"<span class="error">"#),
        "{what}: no field error"
    );
    assert!(!r.body.contains("<script>alert"), "{what}: raw HTML echoed");
    assert!(!r.body.contains("banner ok"), "{what}: claimed success");
    assert!(
        r.body.contains(&format!(r#"value="{}""#, escaped(value))),
        "{what}: input not kept"
    );
}

#[tokio::test]
async fn bad_domains_are_refused_and_nothing_changes() {
    let app = app().await;
    add_domain(&app, "kept.test").await;
    let before = key_table(&app);
    for (what, value) in bad_values() {
        let r = app.post("/domains", &[("domain", &value)]).await;
        assert_refused(&r, what, &value);
        assert!(r.body.contains("domain"), "{what}");
        assert_eq!(count(&app, "domains"), 1, "{what}");
        assert_eq!(count(&app, "accounts"), 0, "{what}");
    }
    let r = app
        .post("/domains", &[("domain", "<script>alert(1)</script>")])
        .await;
    assert!(r.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    // The list is still there next to the error.
    assert!(r.body.contains("<strong>kept.test</strong>"));
    assert_eq!(key_table(&app), before);
}

#[tokio::test]
async fn bad_accounts_are_refused_and_nothing_changes() {
    let app = app().await;
    add_domain(&app, "example.test").await;
    add_account(&app, "kept", "example.test", PW).await;
    let post = |local: String, domain: String, name: String, quota: String| {
        let app = &app;
        async move {
            app.post(
                "/accounts",
                &[
                    ("local", local.as_str()),
                    ("domain", domain.as_str()),
                    ("password", "hunter2-secret-Vq9xLm"),
                    ("name", name.as_str()),
                    ("quota", quota.as_str()),
                ],
            )
            .await
        }
    };
    // The user name.
    for (what, value) in bad_values() {
        let r = post(value.clone(), "example.test".into(), "N".into(), "5".into()).await;
        assert_refused(&r, what, &value);
        assert!(r.body.contains("user name"), "{what}: {}", r.body);
        assert!(!r.body.contains("hunter2"), "{what}: password echoed");
        // The other fields are kept.
        assert!(r.body.contains(r#"value="5""#), "{what}");
        assert!(r.body.contains(r#"<option value="example.test" selected>"#));
        assert_eq!(count(&app, "accounts"), 1, "{what}");
    }
    // The domain: only managed ones.
    for (what, value) in bad_values()
        .into_iter()
        .chain([("unknown", "nope.test".to_string())])
    {
        let r = post("bob".into(), value.clone(), "".into(), "0".into()).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{what}");
        assert!(r.body.contains(r#"<span class="error">"#), "{what}");
        assert!(!r.body.contains("<script>alert"), "{what}");
        assert!(r.body.contains(r#"value="bob""#), "{what}");
        assert_eq!(count(&app, "accounts"), 1, "{what}");
    }
    // The display name and the quota.
    for (what, name, quota) in [
        ("name CR/LF", "a\r\nb", "0"),
        ("name colon", "a:b", "0"),
        ("name too long", &*"n".repeat(300), "0"),
        ("quota text", "", "lots"),
        ("quota negative", "", "-1"),
        ("quota huge", "", "4294967296"),
        ("quota over the limit", "", "1048577"),
    ] {
        let r = post(
            "bob".into(),
            "example.test".into(),
            name.into(),
            quota.into(),
        )
        .await;
        assert_refused(&r, what, if name.is_empty() { quota } else { name });
        assert_eq!(count(&app, "accounts"), 1, "{what}");
    }
    // The password.
    let r = app
        .post(
            "/accounts",
            &[
                ("local", "bob"),
                ("domain", "example.test"),
                ("password", ""),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.body.contains("the password is empty"));
    assert_eq!(count(&app, "accounts"), 1);
    assert_eq!(count(&app, "domains"), 1);
}

#[tokio::test]
async fn posts_without_the_csrf_token_change_nothing() {
    let app = app().await;
    add_domain(&app, "example.test").await;
    add_account(&app, "alice", "example.test", PW).await;
    for (uri, fields) in [
        ("/domains", vec![("domain", "other.test")]),
        ("/domains/example.test/delete", vec![("cascade", "1")]),
        ("/domains/example.test/dkim", vec![]),
        ("/domains/example.test/deactivate", vec![]),
        (
            "/accounts",
            vec![
                ("local", "bob"),
                ("domain", "example.test"),
                ("password", PW),
            ],
        ),
        (
            "/accounts/alice@example.test",
            vec![("name", "x"), ("quota", "5")],
        ),
        (
            "/accounts/alice@example.test/password",
            vec![("password", "x")],
        ),
        ("/accounts/alice@example.test/delete", vec![]),
    ] {
        let mut forged = fields.clone();
        forged.push(("_csrf", "forged"));
        assert_eq!(
            app.post(uri, &forged).await.status,
            StatusCode::FORBIDDEN,
            "{uri}"
        );
    }
    assert_eq!(count(&app, "domains"), 1);
    assert_eq!(count(&app, "accounts"), 1);
    assert_eq!(selector(&app, "example.test").as_deref(), Some("mail"));
    let (name, quota, active, hash) = account_row(&app, "alice@example.test").unwrap();
    assert_eq!((name.as_str(), quota, active), ("", 0, true));
    assert!(mailserver::password::verify(PW, &hash));
}
