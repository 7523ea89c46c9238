//! Dashboard login: HTTP Basic (the browser's own prompt), with the 6-digit TOTP code appended to the
//! password when 2FA is on, then a session cookie.
//!
//! Why the cookie: browsers resend the same Basic header on every request, so with a TOTP suffix the
//! login would break as soon as the code changes (30 s) and, with replay protection, at once. A
//! successful Basic login therefore creates a server-side session (HttpOnly, Secure, SameSite=Strict,
//! 8 hours) that authenticates later requests; the Basic header is only looked at when there is no
//! valid session. Failed logins count against the limiter in [`crate::auth`]. The check itself
//! (password, code, the replay guard) is `mailserver::store::admins::verify_login`.
//!
//! A module of its own, apart from the sessions in [`crate::auth`], because this middleware needs the
//! whole [`AppState`] while the state holds the sessions: kept together they would import each other.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use mailserver::store::admins;

use crate::auth::{LimitKey, SESSION_TTL, totp_step};
use crate::client_ip::{client_ip, peer_ip};
use crate::error::WebError;
use crate::state::AppState;

/// The session cookie's name.
pub const COOKIE: &str = "ms_session";

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
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

fn session_cookie(id: &str) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{COOKIE}={id}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={}",
        SESSION_TTL.as_secs()
    ))
    .expect("token is ASCII")
}

/// Middleware for every dashboard route: a valid session, or a valid Basic login that starts one.
pub async fn require_admin(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    if let Some(admin) = cookie_value(req.headers(), COOKIE).and_then(|id| state.auth.session(id)) {
        req.extensions_mut().insert(admin);
        return next.run(req).await;
    }
    let Some((username, password)) = basic_credentials(req.headers()) else {
        return WebError::Unauthorized.into_response();
    };
    let ip = client_ip(req.headers(), peer_ip(&req), &state.trusted_proxies);
    let mut keys = vec![LimitKey::User(username.to_lowercase())];
    if let Some(ip) = ip {
        keys.push(LimitKey::Ip(ip));
    }
    if let Some(secs) = state.auth.locked(&keys) {
        return WebError::TooManyRequests(secs).into_response();
    }
    let user = username.clone();
    let verdict = state
        .db
        .call(move |conn| Ok(admins::verify_login(conn, &user, &password, totp_step)?))
        .await;
    match verdict {
        Ok(Some(ok)) => {
            state.auth.succeed(&keys);
            let admin = state.auth.create_session(&username, ok.default_password);
            let cookie = session_cookie(&admin.session_id);
            tracing::info!(username, ?ip, "admin logged in");
            req.extensions_mut().insert(admin);
            let mut resp = next.run(req).await;
            resp.headers_mut().append(header::SET_COOKIE, cookie);
            resp
        }
        Ok(None) => {
            state.auth.fail(&keys);
            tracing::warn!(username, ?ip, "failed admin login");
            WebError::Unauthorized.into_response()
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
            HeaderValue::from_static("a=1; ms_session=xyz; b=2"),
        );
        assert_eq!(cookie_value(&h, COOKIE), Some("xyz"));
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
