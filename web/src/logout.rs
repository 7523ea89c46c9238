//! Logging out: `POST /logout` (a form in every page's header, with the CSRF token) ends the session
//! in the database and sends the browser to the public `/logged-out` page.
//!
//! Browsers keep HTTP Basic credentials until they are closed and send them unasked, so the response
//! also sets [`LOGGED_OUT_COOKIE`]: the next Basic login is refused once with a 401, which makes the
//! browser forget the cached password and ask again (see [`crate::login`]). The page says so, and
//! says to close the browser to be sure.

use axum::Router;
use axum::extract::{Extension, State};
use axum::http::{StatusCode, header};
use axum::response::{AppendHeaders, IntoResponse, Response};
use axum::routing::post;
use mailserver::store::sessions;

use crate::auth::Admin;
use crate::error::WebError;
use crate::login::{COOKIE, LOGGED_OUT_COOKIE, cookie, removed_cookie};
use crate::state::AppState;
use crate::views;

/// Where a logout lands: public, so it shows without a session.
pub const LOGGED_OUT_PATH: &str = "/logged-out";

/// The dashboard route (behind the login and the CSRF check).
pub fn router() -> Router<AppState> {
    Router::new().route("/logout", post(logout))
}

async fn logout(
    State(state): State<AppState>,
    Extension(admin): Extension<Admin>,
) -> Result<Response, WebError> {
    let id = admin.session_id.clone();
    state
        .db
        .call(move |conn| Ok(sessions::end(conn, &id)?))
        .await?;
    state.auth.take_flash(&admin.session_id);
    tracing::info!(username = admin.username, "admin logged out");
    Ok((
        StatusCode::SEE_OTHER,
        AppendHeaders([
            (header::LOCATION, LOGGED_OUT_PATH.parse().expect("ASCII")),
            (header::SET_COOKIE, removed_cookie(COOKIE)),
            (header::SET_COOKIE, cookie(LOGGED_OUT_COOKIE, "1")),
        ]),
    )
        .into_response())
}

/// `GET /logged-out`: public, and never cached.
pub async fn logged_out() -> Response {
    (
        [(header::CACHE_CONTROL, "no-store")],
        views::logged_out_page(),
    )
        .into_response()
}
