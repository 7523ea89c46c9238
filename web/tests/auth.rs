//! Login, sessions, rate limiting, CSRF and security headers, through the real router.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{TestApp, basic};

#[tokio::test]
async fn anonymous_requests_get_a_basic_challenge() {
    let app = TestApp::new().await;
    let r = app.get("/").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.headers[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Basic realm=")
    );
    for h in [
        "content-security-policy",
        "x-frame-options",
        "x-content-type-options",
        "referrer-policy",
        "strict-transport-security",
    ] {
        assert!(r.headers.contains_key(h), "missing {h}");
    }
    assert!(
        !r.headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("unsafe-inline")
    );
}

#[tokio::test]
async fn default_login_sets_a_strict_session_cookie_and_shows_the_banner() {
    let mut app = TestApp::new().await;
    let r = app.login("admin", "admin").await;
    assert_eq!(r.status, StatusCode::OK);
    let cookie = r.headers[header::SET_COOKIE].to_str().unwrap();
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Max-Age="] {
        assert!(cookie.contains(attr), "cookie lacks {attr}: {cookie}");
    }
    assert!(r.body.contains("default password"));
    // The cookie alone authenticates later requests.
    assert_eq!(app.get("/").await.status, StatusCode::OK);
}

#[tokio::test]
async fn wrong_passwords_are_refused_and_rate_limited() {
    let app = TestApp::new().await;
    for _ in 0..5 {
        let req = Request::get("/")
            .header(header::AUTHORIZATION, basic("admin", "nope"))
            .body(Body::empty())
            .unwrap();
        assert_eq!(app.send(req).await.status, StatusCode::UNAUTHORIZED);
    }
    // Locked now, even with the right password, and told when to retry.
    let req = Request::get("/")
        .header(header::AUTHORIZATION, basic("admin", "admin"))
        .body(Body::empty())
        .unwrap();
    let r = app.send(req).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers.contains_key(header::RETRY_AFTER));
}

#[tokio::test]
async fn posts_without_the_csrf_token_are_refused() {
    let mut app = TestApp::new().await;
    app.login("admin", "admin").await;
    let r = app
        .post(
            "/domains",
            &[("_csrf", "forged"), ("domain", "example.test")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let req = Request::post("/domains")
        .header(
            header::COOKIE,
            format!("ms_session={}", app.cookie.clone().unwrap()),
        )
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("domain=example.test"))
        .unwrap();
    assert_eq!(app.send(req).await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn totp_login_works_once_per_code() {
    let mut app = TestApp::new().await;
    let secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
    app.conn()
        .execute(
            "UPDATE admins SET totp_enabled = 1, totp_secret = ?1",
            [secret],
        )
        .unwrap();
    let code = mailserver_web::auth::totp(secret)
        .unwrap()
        .generate_current()
        .to_string();
    let r = app.login("admin", &format!("admin{code}")).await;
    assert_eq!(r.status, StatusCode::OK, "password+code");
    // The same code again (a new client, no cookie): refused as a replay.
    let req = Request::get("/")
        .header(
            header::AUTHORIZATION,
            basic("admin", &format!("admin{code}")),
        )
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.send(req).await.status, StatusCode::UNAUTHORIZED);
    // The password alone is not enough.
    let req = Request::get("/")
        .header(header::AUTHORIZATION, basic("admin", "admin"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.send(req).await.status, StatusCode::UNAUTHORIZED);
    // But the session from the first login keeps working.
    assert_eq!(app.get("/").await.status, StatusCode::OK);
}

#[tokio::test]
async fn the_pixel_is_always_the_same_gif_and_records_known_ids() {
    let app = TestApp::new().await;
    app.conn()
        .execute("INSERT INTO tracked_messages (tracking_id, sender, recipients) VALUES ('VQx3An5C4mtsOVsTUQiGHQ', 's@x.test', 'r@y.test')", [])
        .unwrap();
    for uri in [
        "/pixel?id=VQx3An5C4mtsOVsTUQiGHQ",
        "/pixel?id=TrackingIdForTestsAAAA",
        "/pixel?id=known-but-not-an-id",
        "/pixel",
        "/pixel?id=%27%3B--",
    ] {
        let req = Request::get(uri)
            .header(header::USER_AGENT, "Mozilla/5.0 test")
            .header("x-forwarded-for", "203.0.113.5")
            .body(Body::empty())
            .unwrap();
        let r = app.send(req).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.headers[header::CONTENT_TYPE], "image/gif");
        assert!(
            r.headers[header::CACHE_CONTROL]
                .to_str()
                .unwrap()
                .contains("no-store")
        );
        assert_eq!(r.headers[header::CONTENT_LENGTH], "43");
    }
    // A clean shutdown drains the queue: every open is written.
    let rows = app.shut_down_and_read_opens().await;
    // X-Forwarded-For is ignored: the peer (192.0.2.10) is not a trusted proxy.
    assert_eq!(
        rows,
        vec![(
            "VQx3An5C4mtsOVsTUQiGHQ".to_string(),
            "192.0.2.10".to_string(),
            "Mozilla/5.0 test".to_string()
        )]
    );
}

/// Behind a trusted proxy, a client that writes its own `X-Forwarded-For` entries cannot choose the
/// address that is recorded: an entry that does not parse stops the walk at the proxy, instead of
/// being skipped so that the spoofed address left of it is believed.
#[tokio::test]
async fn a_spoofed_forwarded_for_behind_a_garbage_entry_is_not_believed() {
    let mut app = TestApp::new().await;
    app.peer = "10.0.0.1:40000".parse().unwrap(); // the harness's trusted proxy
    app.conn()
        .execute("INSERT INTO tracked_messages (tracking_id, sender, recipients) VALUES ('VQx3An5C4mtsOVsTUQiGHQ', 's@x.test', 'r@y.test')", [])
        .unwrap();
    for forwarded in [
        "198.51.100.66, unknown",
        "198.51.100.66, _hidden",
        "203.0.113.5, 192.0.2.7:4711",
    ] {
        // (Each its own User-Agent: one client's repeated opens within an hour count once.)
        let req = Request::get("/pixel?id=VQx3An5C4mtsOVsTUQiGHQ")
            .header(header::USER_AGENT, forwarded)
            .header("x-forwarded-for", forwarded)
            .body(Body::empty())
            .unwrap();
        assert_eq!(app.send(req).await.status, StatusCode::OK);
    }
    // (Keyed by User-Agent: the first opens of an id are recorded after its lookup, in any order.)
    let mut ips: Vec<(String, String)> = app
        .shut_down_and_read_opens()
        .await
        .into_iter()
        .map(|(_, ip, ua)| (ua, ip))
        .collect();
    ips.sort();
    assert_eq!(
        ips,
        [
            ("198.51.100.66, _hidden".into(), "10.0.0.1".into()),
            ("198.51.100.66, unknown".into(), "10.0.0.1".into()),
            ("203.0.113.5, 192.0.2.7:4711".into(), "192.0.2.7".into()),
        ]
    );
}

/// Every dashboard answer, the login challenge included, tells caches not to keep it.
#[tokio::test]
async fn dashboard_pages_are_never_cached() {
    let mut app = TestApp::new().await;
    let challenge = app.get("/").await;
    assert_eq!(challenge.status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenge.headers[header::CACHE_CONTROL], "no-store");
    app.login("admin", "admin").await;
    for page in [
        "/",
        "/domains",
        "/accounts",
        "/aliases",
        "/tracking",
        "/settings",
        "/tracking.csv",
    ] {
        let r = app.get(page).await;
        assert_eq!(r.status, StatusCode::OK, "{page}");
        assert_eq!(r.headers[header::CACHE_CONTROL], "no-store", "{page}");
    }
}
