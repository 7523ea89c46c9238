//! Overview: counts, the state of each daemon, and (in the layout) the default-password banner.
//!
//! The counts are the library's ([`mailserver::store::overview`]); this module only lays them out.

use axum::Router;
use axum::extract::{Extension, State};
use axum::routing::get;
use mailserver::store::overview;
use maud::{Markup, html};

use crate::auth::Admin;
use crate::error::WebError;
use crate::state::AppState;
use crate::views;

pub fn router() -> Router<AppState> {
    Router::new().route("/", get(overview))
}

async fn overview(
    State(state): State<AppState>,
    Extension(admin): Extension<Admin>,
) -> Result<Markup, WebError> {
    let paths = state.paths.clone();
    let (counts, daemons) = state
        .db
        .call(move |conn| {
            Ok((
                overview::counts(conn)?,
                mailserver::applier::daemon_status(&paths),
            ))
        })
        .await?;
    let flash = state.auth.take_flash(&admin.session_id);
    let content = html! {
        div.cards {
            @for (label, n, href) in [("Domains", counts.domains, "/domains"), ("Accounts", counts.accounts, "/accounts"),
                                      ("Aliases", counts.aliases, "/aliases"), ("Tracked messages", counts.tracked_messages, "/tracking"),
                                      ("Opens, last 7 days", counts.opens_last_7_days, "/tracking")] {
                a.card href=(href) {
                    div.num { (n) }
                    div.label { (label) }
                }
            }
        }
        h2 { "Services" }
        table {
            thead { tr { th { "Service" } th { "State" } } }
            tbody {
                @for (name, up) in &daemons {
                    tr {
                        td { (name) }
                        td { @if *up { span.status-up { "up" } } @else { span.status-down { "down" } } }
                    }
                }
            }
        }
    };
    Ok(views::page(
        "Overview",
        &admin,
        "/",
        flash.as_ref(),
        content,
    ))
}
