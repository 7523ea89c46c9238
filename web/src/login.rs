//! Dashboard login: HTTP Basic (the browser's own prompt), with the 6-digit TOTP code appended to the
//! password when 2FA is on, then a session cookie.
//!
//! Why the cookie: browsers resend the same Basic header on every request, so with a TOTP suffix the
//! login would break as soon as the code changes (30 s) and, with replay protection, at once. A
//! successful Basic login therefore starts a server-side session (`mailserver::store::sessions`:
//! idle timeout, absolute lifetime) whose id travels in a `__Host-` cookie (Secure, HttpOnly,
//! SameSite=Strict, Path=/, no Max-Age: it ends with the browser); the Basic header is only looked at
//! when there is no live session.
//!
//! A Basic login is checked in this order, so that nothing an outsider sends costs a hash unless it
//! may: (1) a free password-check slot ([`crate::auth::Auth`], as many as cores), else 429 at once;
//! (2) the attempt is counted by `mailserver::store::login_limiter` before the check, and a locked
//! client address gets 429 with `Retry-After`; (3) only then the Argon2 check
//! (`mailserver::store::admins::verify_login`). A success clears the address's failures.
//!
//! Logout and cached credentials: browsers keep Basic credentials until they are closed and send
//! them unasked, so after a logout the next visit would log straight back in. Logging out
//! ([`crate::logout`]) therefore also sets a marker cookie; a Basic login that comes with it is
//! refused once with a 401 (the marker is removed), which makes the browser drop the cached
//! credentials and ask again. The logged-out page also says to close the browser.
//!
//! A module of its own, apart from [`crate::auth`], because this middleware needs the whole
//! [`AppState`] while the state holds the [`crate::auth::Auth`]: kept together they would import
//! each other.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use mailserver::store::login_limiter::{self, Attempt, LimitKeys};
use mailserver::store::{admins, sessions, unix_now};

use crate::auth::{Admin, totp_step};
use crate::client_ip::{client_ip, peer_ip};
use crate::error::WebError;
use crate::state::AppState;

/// The session cookie's name. `__Host-`: the browser accepts it only from this origin over HTTPS,
/// with `Path=/` and no `Domain`, so no sibling host can plant or shadow it.
pub const COOKIE: &str = "__Host-ms_session";
/// Set by a logout: the next Basic login is refused once, so the browser forgets its cached password.
pub const LOGGED_OUT_COOKIE: &str = "__Host-ms_logged_out";

/// The value of cookie `name`, if the request has it.
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_string(), pass.to_string()))
}

/// A strict cookie `name=value` that ends with the browser (no Max-Age, no Expires).
pub fn cookie(name: &str, value: &str) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Secure; HttpOnly; SameSite=Strict"
    ))
    .expect("cookie names and tokens are ASCII")
}

/// Tells the browser to drop cookie `name`.
pub fn removed_cookie(name: &str) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{name}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0"
    ))
    .expect("cookie names are ASCII")
}

/// How a Basic login went.
enum Login {
    Ok(sessions::NewSession),
    Failed,
    Locked(u64),
}

/// Middleware for every dashboard route: a live session, or a valid Basic login that starts one.
pub async fn require_admin(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    if let Some(id) = cookie_value(req.headers(), COOKIE) {
        let id = id.to_string();
        let lookup = id.clone();
        let found = state
            .db
            .call(move |conn| Ok(sessions::find(conn, &lookup, unix_now())?))
            .await;
        match found {
            Ok(Some(session)) => {
                req.extensions_mut().insert(Admin {
                    username: session.username,
                    csrf: session.csrf,
                    session_id: id,
                });
                return next.run(req).await;
            }
            Ok(None) => {}
            Err(e) => return e.into_response(),
        }
    }
    let Some((username, password)) = basic_credentials(req.headers()) else {
        return WebError::Unauthorized.into_response();
    };
    if cookie_value(req.headers(), LOGGED_OUT_COOKIE).is_some() {
        // Just logged out, and the browser sent its cached credentials unasked: refuse them once.
        let mut resp = WebError::Unauthorized.into_response();
        resp.headers_mut()
            .append(header::SET_COOKIE, removed_cookie(LOGGED_OUT_COOKIE));
        return resp;
    }
    let ip = client_ip(req.headers(), peer_ip(&req), &state.trusted_proxies);
    let Some(slot) = state.auth.try_verifier_slot() else {
        tracing::debug!(?ip, "login refused: every password-check slot is busy");
        return WebError::TooManyRequests(1).into_response();
    };
    let keys = LimitKeys::new(ip, &username);
    let auth = state.auth.clone();
    let user = username.clone();
    let outcome = state
        .db
        .call(move |conn| {
            let now = unix_now();
            if let Attempt::Locked { retry_after } = login_limiter::begin_attempt(conn, &keys, now)?
            {
                return Ok(Login::Locked(retry_after));
            }
            auth.count_verification();
            if !admins::verify_login(conn, &user, &password, totp_step)? {
                return Ok(Login::Failed);
            }
            login_limiter::succeed(conn, &keys)?;
            Ok(Login::Ok(sessions::create(conn, &user, now)?))
        })
        .await;
    drop(slot);
    match outcome {
        Ok(Login::Ok(session)) => {
            tracing::info!(username, ?ip, "admin logged in");
            let set_cookie = cookie(COOKIE, &session.id);
            req.extensions_mut().insert(Admin {
                username,
                csrf: session.csrf,
                session_id: session.id,
            });
            let mut resp = next.run(req).await;
            resp.headers_mut().append(header::SET_COOKIE, set_cookie);
            resp
        }
        Ok(Login::Failed) => {
            tracing::warn!(username, ?ip, "failed admin login");
            WebError::Unauthorized.into_response()
        }
        Ok(Login::Locked(secs)) => {
            tracing::debug!(username, ?ip, secs, "login refused: locked out");
            WebError::TooManyRequests(secs).into_response()
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cookies_and_basic() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-ms_session=xyz; b=2"),
        );
        assert_eq!(cookie_value(&h, COOKIE), Some("xyz"));
        assert_eq!(cookie_value(&h, LOGGED_OUT_COOKIE), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic YWRtaW46cGE6c3M="),
        );
        assert_eq!(
            basic_credentials(&h),
            Some(("admin".into(), "pa:ss".into()))
        );
    }
}
