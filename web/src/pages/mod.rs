//! The dashboard's pages, one module per section, each with its own `router()`.
//!
//! Names used across the pages: a `…Post` struct is a form as posted (deserialised from the request
//! body; where the page redisplays exactly what was posted, it serves for that too), a `…View`
//! struct is what a form shows when the page builds it itself, and `Errors` holds the messages shown
//! next to a form's fields. Pages hold no SQL: they call `mailserver::store`.

pub mod accounts;
pub mod aliases;
pub mod domains;
pub mod overview;
pub mod settings;
pub mod tracking;

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::auth::Admin;
use crate::flash::Flash;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(overview::router())
        .merge(domains::router())
        .merge(accounts::router())
        .merge(aliases::router())
        .merge(tracking::router())
        .merge(settings::router())
}

/// Renders the database into the daemons' configuration and reloads them (the foundation's
/// render-and-apply). Returns a user-facing error message when that fails: the change is saved but
/// not live, and the user must be told.
pub async fn apply_changes(state: &AppState) -> Result<(), String> {
    let paths = state.paths.clone();
    state
        .db
        .call(move |conn| {
            // The dashboard runs as its own user: the root applier does the writing and reloading.
            mailserver::applier::apply_or_delegate(&paths, conn)
                .map_err(|e| crate::error::WebError::BadRequest(e.to_string()))
        })
        .await
        .map(|_| ())
        .map_err(|e| {
            tracing::error!(error = %e, "applying the configuration failed");
            format!("The change was saved, but applying it to the mail daemons failed: {e}")
        })
}

/// Post/redirect/get: leaves `flash` for the next page and redirects (303) to `to`.
pub fn redirect_with(state: &AppState, admin: &Admin, to: &str, flash: Flash) -> Response {
    state.auth.set_flash(&admin.session_id, flash);
    (
        axum::http::StatusCode::SEE_OTHER,
        [(header::LOCATION, to.to_string())],
    )
        .into_response()
}

/// Applies the configuration after a successful change and redirects with the right message.
pub async fn applied(state: &AppState, admin: &Admin, to: &str, ok: impl Into<String>) -> Response {
    let flash = match apply_changes(state).await {
        Ok(()) => Flash::ok(ok),
        Err(e) => Flash::error(e),
    };
    redirect_with(state, admin, to, flash)
}
