//! mailserver-web: the admin dashboard and the public tracking-pixel endpoint.
//!
//! [`app`] builds the whole router from an [`AppState`], so tests drive it in-process with
//! `tower::ServiceExt::oneshot` and the binary only binds, serves HTTPS and shuts down. Dashboard
//! routes sit behind [`login::require_admin`] (Basic + TOTP, then a session cookie) and
//! [`security::csrf`]; every response gets the security headers. Server-rendered HTML (maud) that
//! works without JavaScript.

pub mod auth;
pub mod client_ip;
pub mod error;
pub mod flash;
pub mod login;
pub mod logout;
pub mod pages;
pub mod pixel;
pub mod retention;
pub mod security;
pub mod serve;
pub mod state;
pub mod views;

use axum::Router;
use axum::http::header;
use axum::middleware;
use axum::routing::get;

pub use state::{AppState, Db};

const CSS: &str = include_str!("../static/app.css");
const JS: &str = include_str!("../static/app.js");

pub fn app(state: AppState) -> Router {
    let dashboard = pages::router()
        .merge(logout::router())
        .layer(middleware::from_fn(security::csrf))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            login::require_admin,
        ))
        .layer(middleware::from_fn(security::no_store));
    Router::new()
        .route(mailserver::tracking::PIXEL_PATH, get(pixel::pixel))
        .route("/healthz", get(|| async { "ok\n" }))
        .route(logout::LOGGED_OUT_PATH, get(logout::logged_out))
        .route(
            "/static/app.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS) }),
        )
        .route(
            "/static/app.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    JS,
                )
            }),
        )
        .merge(dashboard)
        .layer(middleware::from_fn(security::headers))
        .with_state(state)
}
