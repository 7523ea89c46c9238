//! Dashboard login: HTTP Basic (the browser's own prompt), with the 6-digit TOTP code appended to the
//! password when 2FA is on, then a session cookie.
//!
//! Why the cookie: browsers resend the same Basic header on every request, so with a TOTP suffix the
//! login would break as soon as the code changes (30 s) and, with replay protection, at once. A
//! successful Basic login therefore creates a server-side session (HttpOnly, Secure, SameSite=Strict,
//! 8 hours) that authenticates later requests; the Basic header is only looked at when there is no
//! valid session. Failed logins are limited per client IP and per user name with growing lockouts
//! (capped at 15 minutes, so the admin is never locked out for good; `mailserver admin reset-password`
//! is the last resort). A TOTP step is accepted once (the last accepted step is kept in the database).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use rusqlite::OptionalExtension as _;

use crate::error::WebError;
use crate::state::AppState;

pub const COOKIE: &str = "ms_session";
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// Failures allowed before lockouts start.
const FREE_FAILURES: u32 = 5;
const MAX_LOCKOUT: Duration = Duration::from_secs(15 * 60);
/// A key's failures are forgotten after this long without a new one.
const FAILURE_MEMORY: Duration = Duration::from_secs(3600);

/// The logged-in admin, put into request extensions by [`require_admin`].
#[derive(Debug, Clone)]
pub struct Admin {
    pub username: String,
    pub csrf: String,
    pub session_id: String,
    /// Still the default `admin`/`admin`: the dashboard shows a banner.
    pub default_password: bool,
}

#[derive(Debug, Clone)]
struct Session {
    admin: Admin,
    expires: Instant,
    flash: Option<crate::views::Flash>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum LimitKey {
    Ip(IpAddr),
    User(String),
}

/// Sessions and the failed-login limiter (in memory: a restart logs everyone out, which is fine).
#[derive(Default)]
pub struct Auth {
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<LimitKey, Failures>>,
}

pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Auth {
    fn session(&self, id: &str) -> Option<Admin> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        sessions.get(id).map(|s| s.admin.clone())
    }

    fn create_session(&self, username: &str, default_password: bool) -> Admin {
        let admin = Admin {
            username: username.to_string(),
            csrf: random_token(),
            session_id: random_token(),
            default_password,
        };
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.insert(
            admin.session_id.clone(),
            Session {
                admin: admin.clone(),
                expires: Instant::now() + SESSION_TTL,
                flash: None,
            },
        );
        admin
    }

    /// Leaves a message for the session's next page (post/redirect/get).
    pub fn set_flash(&self, session_id: &str, flash: crate::views::Flash) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = sessions.get_mut(session_id) {
            s.flash = Some(flash);
        }
    }

    pub fn take_flash(&self, session_id: &str) -> Option<crate::views::Flash> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.get_mut(session_id).and_then(|s| s.flash.take())
    }

    /// Updates the banner flag of every session of `username` (after a password change).
    pub fn set_default_password(&self, username: &str, default_password: bool) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        for s in sessions
            .values_mut()
            .filter(|s| s.admin.username == username)
        {
            s.admin.default_password = default_password;
        }
    }

    /// Ends every session of `username` except `keep` (after a password or 2FA change).
    pub fn end_other_sessions(&self, username: &str, keep: &str) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.retain(|id, s| s.admin.username != username || id == keep);
    }

    /// Seconds until `keys` may try again, if any of them is locked out.
    fn locked(&self, keys: &[LimitKey]) -> Option<u64> {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        keys.iter()
            .filter_map(|k| failures.get(k)?.locked_until)
            .filter(|until| *until > now)
            .map(|until| (until - now).as_secs().max(1))
            .max()
    }

    fn fail(&self, keys: &[LimitKey]) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        failures.retain(|_, f| now.duration_since(f.last) < FAILURE_MEMORY);
        for key in keys {
            let f = failures.entry(key.clone()).or_insert(Failures {
                count: 0,
                last: now,
                locked_until: None,
            });
            f.count += 1;
            f.last = now;
            if f.count >= FREE_FAILURES {
                let exp = (f.count - FREE_FAILURES).min(10);
                let lock = Duration::from_secs(1u64 << exp).min(MAX_LOCKOUT);
                f.locked_until = Some(now + lock);
            }
        }
    }

    fn succeed(&self, keys: &[LimitKey]) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        for key in keys {
            failures.remove(key);
        }
    }
}

/// The client address: the TCP peer, or the last address in `X-Forwarded-For` that is not a trusted
/// proxy when the peer is one (`TRUSTED_PROXIES`).
pub fn client_ip(headers: &HeaderMap, peer: Option<IpAddr>, trusted: &[IpAddr]) -> Option<IpAddr> {
    let peer = peer?;
    if !trusted.contains(&peer) {
        return Some(peer);
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .collect::<Vec<_>>();
    Some(
        forwarded
            .into_iter()
            .rev()
            .find(|ip| !trusted.contains(ip))
            .unwrap_or(peer),
    )
}

pub fn peer_ip(req: &Request) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ci| ci.0.ip())
}

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

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A TOTP for `secret_b32` with the standard parameters (SHA-1, 6 digits, 30 s, one step of skew).
pub fn totp(secret_b32: &str) -> Option<totp_rs::Totp> {
    let secret = totp_rs::Secret::try_from_base32(secret_b32).ok()?;
    totp_rs::Builder::new().with_secret(secret).build().ok()
}

/// The matching time step for `code` now, if it is valid.
pub fn totp_step(secret_b32: &str, code: &str) -> Option<u64> {
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    totp(secret_b32)?.check(code, now_secs())
}

/// Marks `step` used for `username`; false when it (or a later one) was used already: a replay.
pub fn consume_step(
    conn: &rusqlite::Connection,
    username: &str,
    step: u64,
) -> rusqlite::Result<bool> {
    let n = conn.execute(
        "UPDATE admins SET totp_last_step = ?2 WHERE username = ?1 AND totp_last_step < ?2",
        (username, step as i64),
    )?;
    Ok(n == 1)
}

/// Verifies `username`/`password` (with the TOTP code at its end when 2FA is on). Blocking.
/// Returns whether the password is still the default.
pub fn verify_login(
    conn: &rusqlite::Connection,
    username: &str,
    password: &str,
) -> Result<Option<bool>, WebError> {
    // A hash to burn the same time on when the user does not exist (no user enumeration by timing).
    const DUMMY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0G6XVWwRVchmqAqeGz1LmA2zdDP5dxoxl4pdRYQeygA";
    let row: Option<(String, bool, Option<String>)> = conn
        .query_row(
            "SELECT password_hash, totp_enabled, totp_secret FROM admins WHERE username = ?1",
            [username],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((hash, totp_enabled, secret)) = row else {
        let _ = mailserver::password::verify(password, DUMMY);
        return Ok(None);
    };
    if !totp_enabled {
        if !mailserver::password::verify(password, &hash) {
            return Ok(None);
        }
        return Ok(Some(
            password == mailserver::store::admins::DEFAULT_PASSWORD,
        ));
    }
    let Some(split) = password
        .len()
        .checked_sub(6)
        .filter(|&i| password.is_char_boundary(i))
    else {
        let _ = mailserver::password::verify(password, DUMMY);
        return Ok(None);
    };
    let (pw, code) = password.split_at(split);
    let pw_ok = mailserver::password::verify(pw, &hash);
    let step = secret.as_deref().and_then(|s| totp_step(s, code));
    match (pw_ok, step) {
        (true, Some(step)) if consume_step(conn, username, step)? => {
            Ok(Some(pw == mailserver::store::admins::DEFAULT_PASSWORD))
        }
        _ => Ok(None),
    }
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
        .call(move |conn| verify_login(conn, &user, &password))
        .await;
    match verdict {
        Ok(Some(default_password)) => {
            state.auth.succeed(&keys);
            let admin = state.auth.create_session(&username, default_password);
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
    fn lockouts_grow_and_are_capped() {
        let auth = Auth::default();
        let keys = [LimitKey::User("admin".into())];
        for _ in 0..FREE_FAILURES - 1 {
            auth.fail(&keys);
        }
        assert!(auth.locked(&keys).is_none());
        auth.fail(&keys);
        assert_eq!(auth.locked(&keys), Some(1));
        for _ in 0..30 {
            auth.fail(&keys);
        }
        assert!(auth.locked(&keys).unwrap() <= MAX_LOCKOUT.as_secs());
        auth.succeed(&keys);
        assert!(auth.locked(&keys).is_none());
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9, 10.0.0.2"),
        );
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let stranger: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(client_ip(&h, Some(stranger), &[proxy]), Some(stranger));
        assert_eq!(
            client_ip(&h, Some(proxy), &[proxy]),
            Some("203.0.113.9".parse().unwrap())
        );
        assert_eq!(
            client_ip(&HeaderMap::new(), Some(proxy), &[proxy]),
            Some(proxy)
        );
    }

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
