//! Security headers on every response, and the CSRF check on every state-changing request.
//!
//! CSRF: each session has a random token; every form carries it in a hidden `_csrf` field (see
//! `views::csrf_field`) and this middleware refuses any POST whose `_csrf` does not match, before a
//! handler runs. This matters even with SameSite cookies: browsers attach cached Basic credentials
//! to cross-site requests.

use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq as _;

use crate::auth::Admin;
use crate::error::WebError;

/// `Cache-Control: no-store` on every dashboard response (unless the handler chose a header of its
/// own): its pages show accounts, aliases, tracking data and CSRF tokens, none of which may
/// stay in a shared cache or in the browser's disk cache.
pub async fn no_store(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    resp.headers_mut()
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

/// The largest form we accept.
pub const MAX_FORM: usize = 1024 * 1024;

pub async fn headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    for (name, value) in [
        (
            "content-security-policy",
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("strict-transport-security", "max-age=31536000"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    resp
}

/// Extracts the `_csrf` field of a urlencoded form.
pub fn form_token(body: &[u8]) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(k, _)| k == "_csrf")
        .map(|(_, v)| v.into_owned())
}

pub async fn csrf(req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    let Some(expected) = req.extensions().get::<Admin>().map(|a| a.csrf.clone()) else {
        return WebError::Unauthorized.into_response();
    };
    let (parts, body) = req.into_parts();
    let is_form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let Ok(bytes) = to_bytes(body, MAX_FORM).await else {
        return WebError::BadRequest("the form is too large".into()).into_response();
    };
    let given = if is_form { form_token(&bytes) } else { None };
    let ok = given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(expected.as_bytes())));
    if !ok {
        return WebError::Csrf.into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}
