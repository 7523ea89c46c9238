//! Login, sessions, rate limiting, CSRF and security headers, through the real router.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use common::{ADMIN_PASSWORD, TestApp, basic};
use mailserver::store::login_limiter::FREE_ATTEMPTS;
use mailserver_web::auth::Auth;
use tower::ServiceExt as _;

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
async fn login_sets_a_strict_host_only_session_cookie_that_ends_with_the_browser() {
    let mut app = TestApp::new().await;
    let r = app.login("admin", ADMIN_PASSWORD).await;
    assert_eq!(r.status, StatusCode::OK);
    let cookie = r.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(cookie.starts_with("__Host-ms_session="), "{cookie}");
    for attr in ["Path=/", "HttpOnly", "Secure", "SameSite=Strict"] {
        assert!(
            cookie.split("; ").any(|a| a == attr),
            "cookie lacks {attr}: {cookie}"
        );
    }
    for attr in ["Max-Age", "Expires", "Domain"] {
        assert!(!cookie.contains(attr), "cookie has {attr}: {cookie}");
    }
    // No banner about a default password: there is none.
    assert!(!r.body.contains("default password"));
    // The cookie alone authenticates later requests.
    assert_eq!(app.get("/").await.status, StatusCode::OK);
}

#[tokio::test]
async fn admin_admin_does_not_log_in() {
    let app = TestApp::new().await;
    assert_eq!(
        app.send(login_request("admin", "admin")).await.status,
        StatusCode::UNAUTHORIZED
    );
}

fn login_request(user: &str, pass: &str) -> Request<Body> {
    Request::get("/")
        .header(header::AUTHORIZATION, basic(user, pass))
        .body(Body::empty())
        .unwrap()
}

fn peer(ip: &str) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), 40000)
}

#[tokio::test]
async fn wrong_passwords_are_refused_then_the_address_is_locked_out() {
    let app = TestApp::new().await;
    // The free attempts, and one more (checked, and it starts the lockout).
    for _ in 0..=FREE_ATTEMPTS {
        assert_eq!(
            app.send(login_request("admin", "nope")).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    // Locked now, even with the right password, and told when to retry.
    let r = app.send(login_request("admin", ADMIN_PASSWORD)).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let retry = r.headers[header::RETRY_AFTER].to_str().unwrap();
    assert!(retry == "2" || retry == "1", "Retry-After: {retry}");
    assert_eq!(app.state.auth.verifications(), FREE_ATTEMPTS as u64 + 1);
}

/// Fires `n` concurrent logins with a wrong password from `ip` and returns the status codes.
async fn burst(app: &TestApp, ip: &str, n: usize) -> Vec<StatusCode> {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let router = app.router.clone();
        let mut req = login_request("admin", &format!("wrong-{i}"));
        req.extensions_mut().insert(ConnectInfo(peer(ip)));
        tasks.spawn(async move { router.oneshot(req).await.unwrap().status() });
    }
    tasks.join_all().await
}

fn count(statuses: &[StatusCode], status: StatusCode) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

/// The attack from the issue: 100 concurrent wrong passwords from one address. Each attempt is
/// counted before the hash, and only as many hashes run at once as there are cores: at most 10
/// are checked (each checked one is a 401), the rest get 429 without hashing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_concurrent_burst_from_one_address_gets_at_most_ten_checks() {
    let app = TestApp::new().await;
    let started = Instant::now();
    let statuses = burst(&app, "198.51.100.7", 100).await;
    let elapsed = started.elapsed();
    let checked = app.state.auth.verifications();
    println!(
        "burst of 100: {} x 401, {} x 429, {checked} password checks, in {elapsed:?}",
        count(&statuses, StatusCode::UNAUTHORIZED),
        count(&statuses, StatusCode::TOO_MANY_REQUESTS),
    );
    assert!(checked <= 10, "{checked} passwords were checked");
    assert_eq!(count(&statuses, StatusCode::UNAUTHORIZED) as u64, checked);
    assert_eq!(
        count(&statuses, StatusCode::TOO_MANY_REQUESTS),
        100 - checked as usize,
        "{statuses:?}"
    );
    assert!(checked >= 1);
}

/// The same burst with more check slots than the attempts allowed: the database count alone stops
/// it, so it cannot be raced (at most the free attempts plus the one that starts the lockout).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_attempt_count_alone_cannot_be_raced() {
    let mut app = TestApp::new().await;
    app.state.auth = Arc::new(Auth::new(128));
    app.router = mailserver_web::app(app.state.clone());
    let statuses = burst(&app, "198.51.100.7", 100).await;
    let checked = app.state.auth.verifications();
    assert_eq!(checked, FREE_ATTEMPTS as u64 + 1, "{statuses:?}");
    assert_eq!(count(&statuses, StatusCode::UNAUTHORIZED) as u64, checked);
    assert_eq!(
        count(&statuses, StatusCode::TOO_MANY_REQUESTS),
        100 - checked as usize
    );
}

/// Failing on purpose does not lock the admin out: the right password from another address works
/// during the lockout (the third attack), and only the failing address waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_right_password_from_another_address_works_during_a_lockout() {
    let app = TestApp::new().await;
    burst(&app, "198.51.100.7", 100).await;
    // Then one by one, as fast as answered, until the address is locked out.
    for _ in 0..=FREE_ATTEMPTS {
        let r = app
            .send_from(peer("198.51.100.7"), login_request("admin", "nope"))
            .await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
    }
    let r = app
        .send_from(peer("198.51.100.7"), login_request("admin", ADMIN_PASSWORD))
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=900).contains(&retry), "{retry}");
    let r = app
        .send_from(peer("203.0.113.9"), login_request("admin", ADMIN_PASSWORD))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(common::session_cookie(&r.headers).is_some());
    // IPv6: the attacker's /64 is one client, another /64 is not.
    for i in 0..=FREE_ATTEMPTS {
        app.send_from(
            peer(&format!("2001:db8:1:2::{i:x}")),
            login_request("admin", "nope"),
        )
        .await;
    }
    let locked = app
        .send_from(
            peer("2001:db8:1:2::99"),
            login_request("admin", ADMIN_PASSWORD),
        )
        .await;
    assert_eq!(locked.status, StatusCode::TOO_MANY_REQUESTS);
    let other = app
        .send_from(
            peer("2001:db8:1:3::1"),
            login_request("admin", ADMIN_PASSWORD),
        )
        .await;
    assert_eq!(other.status, StatusCode::OK);
}

/// The address + user key: logging into one's own account resets the address's count, but not the
/// count of guesses against another admin from that address.
#[tokio::test]
async fn guesses_against_one_admin_stay_counted_across_logins_as_another() {
    let app = TestApp::new().await;
    mailserver::store::admins::reset_password(
        &app.conn(),
        "mallory",
        "mallory-own-password-Jm8t",
        mailserver::store::unix_now(),
    )
    .unwrap();
    for _ in 0..FREE_ATTEMPTS {
        assert_eq!(
            app.send(login_request("admin", "guess")).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        app.send(login_request("mallory", "mallory-own-password-Jm8t"))
            .await
            .status,
        StatusCode::OK
    );
    // One more guess is checked (and locks the address + admin key)...
    assert_eq!(
        app.send(login_request("admin", "guess")).await.status,
        StatusCode::UNAUTHORIZED
    );
    // ...then guesses against admin wait, while mallory from the same address still logs in.
    assert_eq!(
        app.send(login_request("admin", "guess")).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        app.send(login_request("mallory", "mallory-own-password-Jm8t"))
            .await
            .status,
        StatusCode::OK
    );
}

/// `mailserver admin reset-password` (this library function) lifts every lockout and ends every
/// session, though it runs in another process than the dashboard.
#[tokio::test]
async fn reset_password_clears_lockouts_and_ends_sessions() {
    let mut app = TestApp::new().await;
    app.login("admin", ADMIN_PASSWORD).await;
    assert_eq!(app.get("/").await.status, StatusCode::OK);
    for _ in 0..=FREE_ATTEMPTS {
        app.send_from(peer("198.51.100.7"), login_request("admin", "nope"))
            .await;
    }
    let attacker =
        |pw: &'static str| app.send_from(peer("198.51.100.7"), login_request("admin", pw));
    assert_eq!(
        attacker(ADMIN_PASSWORD).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );

    let report = mailserver::store::admins::reset_password(
        &app.conn(),
        "admin",
        "the-reset-password-Rb5y",
        mailserver::store::unix_now(),
    )
    .unwrap();
    assert_eq!(report.sessions_ended, 1);
    assert_eq!(report.lockouts_cleared, 2);
    assert_eq!(
        app.get("/").await.status,
        StatusCode::UNAUTHORIZED,
        "the old session still works"
    );
    assert_eq!(
        attacker("the-reset-password-Rb5y").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn sessions_end_when_idle_and_after_their_lifetime() {
    let mut app = TestApp::new().await;
    app.login("admin", ADMIN_PASSWORD).await;
    assert_eq!(app.get("/").await.status, StatusCode::OK);
    // An hour without a request.
    app.conn()
        .execute("UPDATE admin_sessions SET last_seen = last_seen - 3600", [])
        .unwrap();
    assert_eq!(app.get("/").await.status, StatusCode::UNAUTHORIZED);

    app.login("admin", ADMIN_PASSWORD).await;
    assert_eq!(app.get("/").await.status, StatusCode::OK);
    // Busy all along, but logged in twelve hours ago.
    app.conn()
        .execute(
            "UPDATE admin_sessions SET created_at = created_at - 12 * 3600",
            [],
        )
        .unwrap();
    assert_eq!(app.get("/").await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn every_page_has_a_logout_button_with_the_csrf_token() {
    let mut app = TestApp::new().await;
    app.login("admin", ADMIN_PASSWORD).await;
    let csrf = app.csrf.clone().unwrap();
    for page in ["/", "/domains", "/settings"] {
        let body = app.get(page).await.body;
        let form = body
            .split("<form class=\"logout\" method=\"post\" action=\"/logout\">")
            .nth(1)
            .and_then(|rest| rest.split("</form>").next())
            .unwrap_or_else(|| panic!("no logout form on {page}"));
        assert!(
            form.contains(&format!("name=\"_csrf\" value=\"{csrf}\"")),
            "{form}"
        );
        assert!(form.contains("Log out"));
    }
}

#[tokio::test]
async fn logout_needs_the_csrf_token_and_ends_the_session() {
    let mut app = TestApp::new().await;
    app.login("admin", ADMIN_PASSWORD).await;
    // A forged logout (no or a wrong token) is refused and changes nothing.
    let r = app.post("/logout", &[("_csrf", "forged")]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(app.get("/").await.status, StatusCode::OK);

    let r = app.post("/logout", &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.headers[header::LOCATION], "/logged-out");
    let cookies: Vec<&str> = r
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|c| c.to_str().unwrap())
        .collect();
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("__Host-ms_session=;") && c.contains("Max-Age=0")),
        "{cookies:?}"
    );
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("__Host-ms_logged_out=1;")),
        "{cookies:?}"
    );
    // The old cookie no longer works, and nothing of it is left in the database.
    assert_eq!(app.get("/").await.status, StatusCode::UNAUTHORIZED);
    let left: i64 = app
        .conn()
        .query_row("SELECT count(*) FROM admin_sessions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0);
    // The logged-out page is public and not cached.
    let page = app.get("/logged-out").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.headers[header::CACHE_CONTROL], "no-store");
    assert!(page.body.contains("close the browser"));
}

/// After a logout the browser still sends the Basic credentials it cached: the first such login
/// is refused (so the browser forgets them and asks), the next one, typed again, works.
#[tokio::test]
async fn after_logout_cached_basic_credentials_do_not_log_back_in_silently() {
    let mut app = TestApp::new().await;
    app.login("admin", ADMIN_PASSWORD).await;
    let r = app.post("/logout", &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let with_marker = || {
        Request::get("/")
            .header(header::AUTHORIZATION, basic("admin", ADMIN_PASSWORD))
            .header(header::COOKIE, "__Host-ms_logged_out=1")
            .body(Body::empty())
            .unwrap()
    };
    let r = app.send(with_marker()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.headers.contains_key(header::WWW_AUTHENTICATE));
    let removed = r.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(
        removed.starts_with("__Host-ms_logged_out=;") && removed.contains("Max-Age=0"),
        "{removed}"
    );
    assert_eq!(
        app.state.auth.verifications(),
        1,
        "the refused one was not even checked"
    );
    // The browser dropped the marker: the password typed again logs in.
    let r = app.send(login_request("admin", ADMIN_PASSWORD)).await;
    assert_eq!(r.status, StatusCode::OK);
}

/// A password change ends the admin's other sessions (whoever knew the old password is out) and
/// keeps the one that made it.
#[tokio::test]
async fn a_password_change_ends_the_other_sessions() {
    let mut app = TestApp::new().await;
    app.login("admin", ADMIN_PASSWORD).await;
    let other = app.cookie.clone();
    app.login("admin", ADMIN_PASSWORD).await;
    let this = app.cookie.clone();
    assert_ne!(other, this);
    let r = app
        .post(
            "/settings/password",
            &[
                ("current", ADMIN_PASSWORD),
                ("new", "a-long-new-password-Hz2c"),
                ("confirm", "a-long-new-password-Hz2c"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(app.get("/").await.status, StatusCode::OK);
    app.cookie = other;
    assert_eq!(app.get("/").await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn posts_without_the_csrf_token_are_refused() {
    let mut app = TestApp::new().await;
    app.login("admin", ADMIN_PASSWORD).await;
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
            format!("__Host-ms_session={}", app.cookie.clone().unwrap()),
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
    let r = app.login("admin", &format!("{ADMIN_PASSWORD}{code}")).await;
    assert_eq!(r.status, StatusCode::OK, "password+code");
    // The same code again (a new client, no cookie): refused as a replay.
    let r = app
        .send(login_request("admin", &format!("{ADMIN_PASSWORD}{code}")))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // The password alone is not enough.
    let r = app.send(login_request("admin", ADMIN_PASSWORD)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
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
    app.login("admin", ADMIN_PASSWORD).await;
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
