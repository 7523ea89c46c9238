//! Settings: the admin's own password and two-factor authentication (TOTP).
//!
//! 2FA is enabled in two steps: a secret is generated and shown (QR code and text) while 2FA stays
//! off; only a correct code from the authenticator turns it on. Disabling needs the password and a
//! current code. Each change ends the admin's other sessions. The checks and the statements are
//! `mailserver::store::admins`' (the password policy is `mailserver::password_policy`); this page adds
//! the secret and the QR code.

use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use mailserver::store::admins::{self, TotpState};
use mailserver::store::sessions;
use maud::{Markup, PreEscaped, html};
use serde::Deserialize;

use crate::auth::{Admin, totp_step};
use crate::error::WebError;
use crate::flash::Flash;
use crate::pages::redirect_with;
use crate::state::AppState;
use crate::views;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/settings", get(show))
        .route("/settings/password", post(change_password))
        .route("/settings/2fa/start", post(start_2fa))
        .route("/settings/2fa/confirm", post(confirm_2fa))
        .route("/settings/2fa/disable", post(disable_2fa))
}

const ISSUER: &str = "mailserver";

/// Errors shown next to the fields of one form.
#[derive(Debug, Default)]
struct Errors {
    current: Option<String>,
    new: Option<String>,
    confirm: Option<String>,
    code: Option<String>,
    disable: Option<String>,
}

fn otpauth_url(username: &str, secret: &str) -> String {
    format!(
        "otpauth://totp/{ISSUER}:{username}?secret={secret}&issuer={ISSUER}&algorithm=SHA1&digits=6&period=30"
    )
}

fn qr_svg(data: &str) -> Option<String> {
    let code = qrcode::QrCode::new(data.as_bytes()).ok()?;
    Some(
        code.render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(200, 200)
            .quiet_zone(true)
            .build(),
    )
}

fn render(admin: &Admin, totp: &TotpState, errors: &Errors, flash: Option<&Flash>) -> Markup {
    let content = html! {
        h2 { "Password" }
        form.box method="post" action="/settings/password" {
            (views::csrf_field(admin))
            (views::field("Current password", "current", "password", "", errors.current.as_deref()))
            (views::field("New password", "new", "password", "", errors.new.as_deref()))
            (views::field("Repeat the new password", "confirm", "password", "", errors.confirm.as_deref()))
            button type="submit" { "Change password" }
        }
        h2 { "Two-factor authentication" }
        @if totp.enabled {
            p { span.pill.on { "on" } " Log in with your password followed by the 6-digit code from your authenticator app." }
            form.box method="post" action="/settings/2fa/disable" {
                (views::csrf_field(admin))
                (views::field("Password", "password", "password", "", None))
                (views::field("Current code", "code", "text", "", errors.disable.as_deref()))
                button.danger type="submit" { "Turn off 2FA" }
            }
        } @else if let Some(secret) = &totp.pending {
            p { "Scan this code with an authenticator app (or type the secret), then enter the code it shows. 2FA is on only after that." }
            div.qr { @if let Some(svg) = qr_svg(&otpauth_url(&admin.username, secret)) { (PreEscaped(svg)) } }
            p { "Secret: " code #totp-secret { (secret) } " " button.secondary type="button" data-copy="totp-secret" { "Copy" } }
            form.box method="post" action="/settings/2fa/confirm" {
                (views::csrf_field(admin))
                (views::field("Code from the app", "code", "text", "", errors.code.as_deref()))
                button type="submit" { "Turn on 2FA" }
            }
        } @else {
            p { span.pill.off { "off" } " Protect the dashboard with a time-based code (TOTP) in addition to the password." }
            form.box method="post" action="/settings/2fa/start" {
                (views::csrf_field(admin))
                button type="submit" { "Set up 2FA" }
            }
        }
    };
    views::page("Settings", admin, "/settings", flash, content)
}

async fn page(
    state: &AppState,
    admin: &Admin,
    errors: Errors,
    status: StatusCode,
) -> Result<Response, WebError> {
    let user = admin.username.clone();
    let totp = state
        .db
        .call(move |conn| Ok(admins::totp_state(conn, &user)?))
        .await?;
    let flash = state.auth.take_flash(&admin.session_id);
    Ok((status, render(admin, &totp, &errors, flash.as_ref())).into_response())
}

async fn show(
    State(state): State<AppState>,
    Extension(admin): Extension<Admin>,
) -> Result<Response, WebError> {
    page(&state, &admin, Errors::default(), StatusCode::OK).await
}

#[derive(Deserialize)]
struct PasswordPost {
    current: String,
    new: String,
    confirm: String,
}

async fn change_password(
    State(state): State<AppState>,
    Extension(admin): Extension<Admin>,
    Form(form): Form<PasswordPost>,
) -> Result<Response, WebError> {
    let mut errors = Errors::default();
    if let Err(weak) = admins::check_new_password(&admin.username, &form.new) {
        errors.new = Some(weak.to_string());
    } else if form.new.contains(['\r', '\n', '\0']) {
        errors.new = Some("The password cannot contain line breaks.".into());
    }
    if form.confirm != form.new {
        errors.confirm = Some("The two new passwords differ.".into());
    }
    let user = admin.username.clone();
    let current = form.current.clone();
    let current_ok = state
        .db
        .call(move |conn| Ok(admins::check_password(conn, &user, &current)?))
        .await?;
    if !current_ok {
        errors.current = Some("That is not your current password.".into());
    }
    if errors.current.is_some() || errors.new.is_some() || errors.confirm.is_some() {
        return page(&state, &admin, errors, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    let user = admin.username.clone();
    state
        .db
        .call(move |conn| Ok(admins::set_password(conn, &user, &form.new)?))
        .await?;
    end_other_sessions(&state, &admin).await?;
    tracing::info!(username = admin.username, "admin password changed");
    Ok(redirect_with(
        &state,
        &admin,
        "/settings",
        Flash::ok("Password changed."),
    ))
}

/// Ends the admin's sessions other than this one (after a password or 2FA change): whoever had the
/// old credentials is logged out.
async fn end_other_sessions(state: &AppState, admin: &Admin) -> Result<(), WebError> {
    let user = admin.username.clone();
    let keep = admin.session_id.clone();
    let ended = state
        .db
        .call(move |conn| Ok(sessions::end_others(conn, &user, &keep)?))
        .await?;
    tracing::info!(
        username = admin.username,
        ended,
        "ended the admin's other sessions"
    );
    Ok(())
}

fn new_secret() -> String {
    let mut bytes = [0u8; 20];
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    totp_rs::Secret::from(bytes.to_vec()).to_base32()
}

async fn start_2fa(
    State(state): State<AppState>,
    Extension(admin): Extension<Admin>,
) -> Result<Response, WebError> {
    let user = admin.username.clone();
    // Refused (false) when 2FA is on already: the page then simply shows it on.
    state
        .db
        .call(move |conn| Ok(admins::start_totp(conn, &user, &new_secret())?))
        .await?;
    Ok(redirect_with(
        &state,
        &admin,
        "/settings",
        Flash::ok("Scan the code, then confirm with a code from the app."),
    ))
}

#[derive(Deserialize)]
struct CodePost {
    code: String,
}

async fn confirm_2fa(
    State(state): State<AppState>,
    Extension(admin): Extension<Admin>,
    Form(form): Form<CodePost>,
) -> Result<Response, WebError> {
    let user = admin.username.clone();
    let code = form.code.trim().to_string();
    let enabled = state
        .db
        .call(move |conn| Ok(admins::confirm_totp(conn, &user, &code, totp_step)?))
        .await?;
    if !enabled {
        let errors = Errors {
            code: Some(
                "That code is not valid (or was used already). Check the time on your phone."
                    .into(),
            ),
            ..Errors::default()
        };
        return page(&state, &admin, errors, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    end_other_sessions(&state, &admin).await?;
    tracing::info!(username = admin.username, "2FA enabled");
    Ok(redirect_with(
        &state,
        &admin,
        "/settings",
        Flash::ok("2FA is on. From now on, log in with your password followed by the code."),
    ))
}

#[derive(Deserialize)]
struct DisablePost {
    password: String,
    code: String,
}

async fn disable_2fa(
    State(state): State<AppState>,
    Extension(admin): Extension<Admin>,
    Form(form): Form<DisablePost>,
) -> Result<Response, WebError> {
    let user = admin.username.clone();
    let disabled = state
        .db
        .call(move |conn| {
            let code = form.code.trim();
            Ok(admins::disable_totp(
                conn,
                &user,
                &form.password,
                code,
                totp_step,
            )?)
        })
        .await?;
    if !disabled {
        let errors = Errors {
            disable: Some("The password or the code is wrong.".into()),
            ..Errors::default()
        };
        return page(&state, &admin, errors, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    end_other_sessions(&state, &admin).await?;
    tracing::info!(username = admin.username, "2FA disabled");
    Ok(redirect_with(
        &state,
        &admin,
        "/settings",
        Flash::ok("2FA is off."),
    ))
}
