//! Overview: counts, the state of each daemon, and (in the layout) the default-password banner.

use axum::Router;
use axum::extract::{Extension, State};
use axum::routing::get;
use maud::{Markup, html};

use crate::auth::Admin;
use crate::error::WebError;
use crate::state::AppState;
use crate::views;

pub fn router() -> Router<AppState> {
    Router::new().route("/", get(overview))
}

#[derive(Debug, Default)]
pub struct Counts {
    pub domains: i64,
    pub accounts: i64,
    pub aliases: i64,
    pub tracked: i64,
    pub opens_7d: i64,
}

fn counts(conn: &rusqlite::Connection) -> rusqlite::Result<Counts> {
    conn.query_row(
        "SELECT (SELECT count(*) FROM domains), (SELECT count(*) FROM accounts),
                (SELECT count(*) FROM aliases), (SELECT count(*) FROM tracked_messages),
                (SELECT count(*) FROM pixel_opens WHERE opened_at >= datetime('now', '-7 days'))",
        [],
        |r| {
            Ok(Counts {
                domains: r.get(0)?,
                accounts: r.get(1)?,
                aliases: r.get(2)?,
                tracked: r.get(3)?,
                opens_7d: r.get(4)?,
            })
        },
    )
}

async fn overview(
    State(state): State<AppState>,
    Extension(admin): Extension<Admin>,
) -> Result<Markup, WebError> {
    let paths = state.paths.clone();
    let (counts, daemons) = state
        .db
        .call(move |conn| Ok((counts(conn)?, mailserver::applier::daemon_status(&paths))))
        .await?;
    let flash = state.auth.take_flash(&admin.session_id);
    let content = html! {
        div.cards {
            @for (label, n, href) in [("Domains", counts.domains, "/domains"), ("Accounts", counts.accounts, "/accounts"),
                                      ("Aliases", counts.aliases, "/aliases"), ("Tracked messages", counts.tracked, "/tracking"),
                                      ("Opens, last 7 days", counts.opens_7d, "/tracking")] {
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
