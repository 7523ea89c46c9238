//! Settings: password change and the 2FA life cycle, through the real router.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::{ADMIN_PASSWORD, TestApp, basic};

fn secret_from(page: &str) -> String {
    page.split("id=\"totp-secret\">")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .expect("the secret is shown as text")
        .to_string()
}

#[tokio::test]
async fn password_change_validates_then_applies() {
    let mut app = TestApp::new().await;
    app.login("admin", ADMIN_PASSWORD).await;
    for (fields, error) in [
        (
            [
                ("current", "wrong"),
                ("new", "a-long-new-password-Hz2c"),
                ("confirm", "a-long-new-password-Hz2c"),
            ],
            "not your current password",
        ),
        (
            [
                ("current", ADMIN_PASSWORD),
                ("new", "short"),
                ("confirm", "short"),
            ],
            "password too short: at least 12 characters",
        ),
        (
            [
                ("current", ADMIN_PASSWORD),
                ("new", "password123456"),
                ("confirm", "password123456"),
            ],
            "password too easy to guess: This is similar to a commonly used password.",
        ),
        (
            [
                ("current", ADMIN_PASSWORD),
                ("new", "mailserver2024"),
                ("confirm", "mailserver2024"),
            ],
            "password too easy to guess",
        ),
        (
            [
                ("current", ADMIN_PASSWORD),
                ("new", "a-long-new-password-Hz2c"),
                ("confirm", "different-password"),
            ],
            "differ",
        ),
    ] {
        let r = app.post("/settings/password", &fields).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
        assert!(r.body.contains(error), "{error} not in the page");
    }
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
    let page = app.get("/settings").await;
    assert!(page.body.contains("Password changed"));
    let req = Request::get("/")
        .header(
            header::AUTHORIZATION,
            basic("admin", "a-long-new-password-Hz2c"),
        )
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.send(req).await.status, StatusCode::OK);
}

#[tokio::test]
async fn two_factor_is_enabled_only_after_a_correct_code_and_then_required() {
    let mut app = TestApp::new().await;
    app.login("admin", ADMIN_PASSWORD).await;
    assert_eq!(
        app.post("/settings/2fa/start", &[]).await.status,
        StatusCode::SEE_OTHER
    );
    let page = app.get("/settings").await.body;
    assert!(page.contains("<svg"), "QR code shown");
    let secret = secret_from(&page);
    // Not on yet: the plain password still logs in.
    let req = Request::get("/")
        .header(header::AUTHORIZATION, basic("admin", ADMIN_PASSWORD))
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.send(req).await.status, StatusCode::OK);
    let r = app
        .post("/settings/2fa/confirm", &[("code", "000000")])
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let totp = mailserver_web::auth::totp(&secret).unwrap();
    let code = totp.generate_current().to_string();
    assert_eq!(
        app.post("/settings/2fa/confirm", &[("code", &code)])
            .await
            .status,
        StatusCode::SEE_OTHER
    );
    assert!(app.get("/settings").await.body.contains("Turn off 2FA"));
    // Now the password alone fails; the confirming code cannot be replayed; the session still works.
    let req = Request::get("/")
        .header(header::AUTHORIZATION, basic("admin", ADMIN_PASSWORD))
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.send(req).await.status, StatusCode::UNAUTHORIZED);
    let req = Request::get("/")
        .header(
            header::AUTHORIZATION,
            basic("admin", &format!("{ADMIN_PASSWORD}{code}")),
        )
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.send(req).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.get("/").await.status, StatusCode::OK);
    // Disabling needs the password and a fresh code: a wrong password is refused.
    let r = app
        .post(
            "/settings/2fa/disable",
            &[("password", "wrong"), ("code", "123456")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
}
