//! Domains: the list (with what uses each one), adding, activating and deactivating, deleting (refused
//! while accounts or aliases use the domain unless the admin ticks the cascade box), DKIM key rotation,
//! and a page per domain with the DNS records to publish.

use axum::Router;
use axum::extract::{Extension, Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use mailserver::names::Domain;
use mailserver::store::domains::Usage;
use mailserver::store::{self, StoreError};
use maud::{Markup, html};
use serde::Deserialize;

use crate::auth::Admin;
use crate::error::WebError;
use crate::flash::Flash;
use crate::pages::applied;
use crate::state::AppState;
use crate::views;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/domains", get(list).post(add))
        .route("/domains/{domain}/dns", get(dns))
        .route("/domains/{domain}/activate", post(activate))
        .route("/domains/{domain}/deactivate", post(deactivate))
        .route("/domains/{domain}/dkim", post(rotate))
        .route("/domains/{domain}/delete", post(delete))
}

/// A domain named in a URL: a name that does not parse cannot exist, so it is a 404 like an unknown one.
fn path_domain(raw: &str) -> Result<Domain, WebError> {
    Domain::parse(raw).map_err(|_| WebError::NotFound)
}

/// Runs `f` on the database with the domain named in the URL (a 404 when the name does not parse);
/// returns that domain with what `f` returned.
async fn with_path_domain<R: Send + 'static>(
    state: &AppState,
    raw: &str,
    f: impl FnOnce(&mut rusqlite::Connection, &Domain) -> Result<R, WebError> + Send + 'static,
) -> Result<(Domain, R), WebError> {
    let domain = path_domain(raw)?;
    let d = domain.clone();
    let result = state.db.call(move |conn| f(conn, &d)).await?;
    Ok((domain, result))
}

/// `1 account`, `2 accounts`.
fn count(n: i64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// One line of the list.
struct Row {
    domain: Domain,
    active: bool,
    selector: Option<String>,
    created_at: String,
    usage: Usage,
}

fn rows(conn: &mut rusqlite::Connection) -> Result<Vec<Row>, WebError> {
    Ok(store::domains::list_with_usage(conn)?
        .into_iter()
        .map(|(d, usage)| Row {
            active: d.active,
            selector: d.dkim.map(|k| k.selector.to_string()),
            created_at: d.created_at,
            domain: d.domain,
            usage,
        })
        .collect())
}

/// A domain's usage in words: `1 account and 2 aliases`.
fn usage_text(usage: Usage) -> String {
    format!(
        "{} and {}",
        count(usage.accounts, "account", "accounts"),
        count(usage.aliases, "alias", "aliases")
    )
}

/// What the add form shows: the value as posted and its error (empty on a plain GET).
#[derive(Default)]
struct AddFormView {
    domain: String,
    error: Option<String>,
}

/// The list page. `notice` replaces the pending flash message (a re-rendered page shows its own error).
async fn render_list(
    state: &AppState,
    admin: &Admin,
    status: StatusCode,
    form: AddFormView,
    notice: Option<Flash>,
) -> Result<Response, WebError> {
    let rows = state.db.call(rows).await?;
    let flash = notice.or_else(|| state.auth.take_flash(&admin.session_id));
    let content = html! {
        @if rows.is_empty() {
            p.muted { "No domains yet. Add the first one below." }
        } @else {
            table {
                thead { tr {
                    th { "Domain" } th { "State" } th { "DKIM selector" } th { "Accounts" }
                    th { "Aliases" } th { "Created" } th { "Actions" }
                } }
                tbody {
                    @for row in &rows { (domain_row(admin, row)) }
                }
            }
        }
        h2 { "Add a domain" }
        form.box method="post" action="/domains" {
            (views::csrf_field(admin))
            (views::field("Domain (e.g. example.com)", "domain", "text", &form.domain, form.error.as_deref()))
            button type="submit" { "Add domain" }
        }
        p.muted {
            "A new domain gets its own DKIM key at once. Open its DNS records and publish them at your "
            "DNS provider so other servers accept its mail."
        }
    };
    Ok((
        status,
        views::page("Domains", admin, "/domains", flash.as_ref(), content),
    )
        .into_response())
}

fn domain_row(admin: &Admin, row: &Row) -> Markup {
    let d = row.domain.as_str();
    let in_use = row.usage.in_use();
    let what = usage_text(row.usage);
    html! {
        tr {
            td { strong { (d) } }
            td {
                @if row.active { span.pill.on { "active" } } @else { span.pill.off { "inactive" } }
            }
            td {
                @match &row.selector {
                    Some(s) => code { (s) },
                    None => span.muted { "no key" },
                }
            }
            td { (row.usage.accounts) }
            td { (row.usage.aliases) }
            td title=(row.created_at) {
                (row.created_at.split_once(' ').map_or(row.created_at.as_str(), |(date, _)| date))
            }
            td.actions {
                a href={ "/domains/" (d) "/dns" } { "DNS records" }
                " "
                @if row.active {
                    form method="post" action={ "/domains/" (d) "/deactivate" } {
                        (views::csrf_field(admin))
                        button.secondary type="submit"
                            data-confirm={ "Deactivate " (d) "? It stops receiving mail and its accounts cannot log in until you activate it again." }
                            { "Deactivate" }
                    }
                } @else {
                    form method="post" action={ "/domains/" (d) "/activate" } {
                        (views::csrf_field(admin))
                        button.secondary type="submit" { "Activate" }
                    }
                }
                @if in_use { br; } @else { " " }
                form method="post" action={ "/domains/" (d) "/delete" } {
                    (views::csrf_field(admin))
                    @if in_use {
                        label.error {
                            input type="checkbox" name="cascade" value="1";
                            " also delete its " (what)
                        }
                        " "
                    }
                    button.danger type="submit"
                        data-confirm=(if in_use {
                            format!("Delete {d}? If you ticked the box, its {what} are deleted with it.")
                        } else {
                            format!("Delete {d}?")
                        })
                        { "Delete" }
                }
            }
        }
    }
}

async fn list(
    State(state): State<AppState>,
    Extension(admin): Extension<Admin>,
) -> Result<Response, WebError> {
    render_list(&state, &admin, StatusCode::OK, AddFormView::default(), None).await
}

/// The posted add form.
#[derive(Deserialize)]
struct AddPost {
    #[serde(default)]
    domain: String,
}

async fn add(
    State(state): State<AppState>,
    Extension(admin): Extension<Admin>,
    Form(input): Form<AddPost>,
) -> Result<Response, WebError> {
    let refuse = |error: String| AddFormView {
        domain: input.domain.clone(),
        error: Some(error),
    };
    let domain = match Domain::parse(input.domain.trim()) {
        Ok(d) => d,
        Err(e) => {
            let form = refuse(e.to_string());
            return render_list(&state, &admin, StatusCode::UNPROCESSABLE_ENTITY, form, None).await;
        }
    };
    let d = domain.clone();
    let added = state
        .db
        .call(move |conn| Ok(store::domains::add(conn, &d)))
        .await?;
    match added {
        Ok(_) => Ok(applied(
            &state,
            &admin,
            "/domains",
            format!("Domain {domain} added. Publish its DNS records next."),
        )
        .await),
        Err(e @ (StoreError::Exists { .. } | StoreError::Name(_))) => {
            let form = refuse(e.to_string());
            render_list(&state, &admin, StatusCode::UNPROCESSABLE_ENTITY, form, None).await
        }
        Err(e) => Err(e.into()),
    }
}

async fn set_active(
    state: AppState,
    admin: Admin,
    raw: String,
    active: bool,
) -> Result<Response, WebError> {
    let (domain, ()) = with_path_domain(&state, &raw, move |conn, d| {
        Ok(store::domains::set_active(conn, d, active)?)
    })
    .await?;
    let message = if active {
        format!("Domain {domain} activated")
    } else {
        format!(
            "Domain {domain} deactivated: it no longer receives mail and its accounts cannot log in"
        )
    };
    Ok(applied(&state, &admin, "/domains", message).await)
}

async fn activate(
    State(state): State<AppState>,
    Extension(admin): Extension<Admin>,
    Path(raw): Path<String>,
) -> Result<Response, WebError> {
    set_active(state, admin, raw, true).await
}

async fn deactivate(
    State(state): State<AppState>,
    Extension(admin): Extension<Admin>,
    Path(raw): Path<String>,
) -> Result<Response, WebError> {
    set_active(state, admin, raw, false).await
}

/// The posted delete button, with its cascade checkbox.
#[derive(Deserialize)]
struct DeletePost {
    #[serde(default)]
    cascade: Option<String>,
}

async fn delete(
    State(state): State<AppState>,
    Extension(admin): Extension<Admin>,
    Path(raw): Path<String>,
    Form(input): Form<DeletePost>,
) -> Result<Response, WebError> {
    let cascade = input.cascade.is_some_and(|v| !v.is_empty());
    let (domain, removed) = with_path_domain(&state, &raw, move |conn, d| {
        Ok(store::domains::remove(conn, d, cascade))
    })
    .await?;
    match removed {
        Ok(usage) => {
            let mut message = format!("Domain {domain} deleted");
            if usage.in_use() {
                message.push_str(&format!(", with its {}", usage_text(usage)));
            }
            Ok(applied(&state, &admin, "/domains", message).await)
        }
        Err(StoreError::DomainInUse {
            accounts, aliases, ..
        }) => {
            let what = usage_text(Usage { accounts, aliases });
            let notice = Flash::error(format!(
                "Domain {domain} was not deleted: {what} still use it. Delete them first, or tick \
                 “also delete its {what}” next to the domain to delete everything together."
            ));
            render_list(
                &state,
                &admin,
                StatusCode::CONFLICT,
                AddFormView::default(),
                Some(notice),
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

async fn rotate(
    State(state): State<AppState>,
    Extension(admin): Extension<Admin>,
    Path(raw): Path<String>,
) -> Result<Response, WebError> {
    let (domain, selector) = with_path_domain(&state, &raw, |conn, d| {
        Ok(store::domains::rotate_dkim(conn, d)?)
    })
    .await?;
    Ok(applied(
        &state,
        &admin,
        &format!("/domains/{domain}/dns"),
        format!(
            "New DKIM key for {domain} (selector {selector}). Publish its DKIM record below now: \
             until you do, receivers cannot verify mail from {domain}."
        ),
    )
    .await)
}

/// What a record is for, as the heading of its section.
fn purpose(r: &mailserver::dns::Record) -> &'static str {
    match r.kind {
        "MX" => "MX: where mail for the domain is delivered",
        _ if r.value.starts_with("v=spf1") => "SPF: which servers may send the domain's mail",
        _ if r.value.starts_with("v=DKIM1") => "DKIM: the public key that verifies signatures",
        _ if r.value.starts_with("v=DMARC1") => "DMARC: what receivers do with mail that fails",
        _ => "Record",
    }
}

/// A table row with a labelled value and its copy button: the button copies the text of the element
/// with `id` (static/app.js).
fn copyable(label: &str, id: &str, text: &str) -> Markup {
    html! {
        tr {
            td {
                div.muted { (label) }
                pre id=(id) { (text) }
            }
            td.actions { button.secondary type="button" data-copy=(id) { "Copy" } }
        }
    }
}

async fn dns(
    State(state): State<AppState>,
    Extension(admin): Extension<Admin>,
    Path(raw): Path<String>,
) -> Result<Response, WebError> {
    let (domain, (record, settings)) = with_path_domain(&state, &raw, |conn, d| {
        let record = store::domains::get(conn, d)?;
        let settings = mailserver::store::settings::load(conn).map_err(StoreError::from)?;
        Ok((record, settings))
    })
    .await?;
    let records = mailserver::dns::records(
        &domain,
        &settings.hostname,
        record
            .dkim
            .as_ref()
            .and_then(|k| Some((&k.selector, k.public_b64.as_deref()?))),
    );
    // The key pair is made by root's apply, which the dashboard only asks for: the dashboard never
    // holds a private key, and shows a key that is still being made as such.
    let pending = record.dkim.as_ref().is_some_and(|k| k.public_b64.is_none());
    let flash = state.auth.take_flash(&admin.session_id);
    let d = domain.as_str();
    let content = html! {
        p { a href="/domains" { "← All domains" } }
        p {
            "Publish these records in the DNS zone of " strong { (d) } " at your DNS provider. "
            "Mail for the domain is handled by " code { (settings.hostname) } ", which needs an A (and "
            "AAAA) record of its own pointing at this server."
        }
        @if !record.active {
            div.banner.warn role="note" {
                "This domain is inactive: it receives no mail and its mail is not signed until you activate it."
            }
        }
        @if record.dkim.is_none() {
            div.banner.warn role="note" {
                "This domain has no DKIM key yet. Generate one below, then publish its record."
            }
        }
        @if pending {
            div.banner.warn role="note" {
                "The DKIM key of this domain is still being generated, so its DKIM record is not "
                "shown yet, and its mail is not signed. Reload this page in a moment; if the key "
                "does not appear, the configuration could not be applied (see the applier's log)."
            }
        }
        @for (i, r) in records.iter().enumerate() {
            h2 { (purpose(r)) }
            table {
                tbody {
                    tr { td colspan="2" { span.muted { "Type: " } code { (r.kind) } } }
                    (copyable("Name", &format!("rec{i}-name"), &r.name))
                    (copyable("Value", &format!("rec{i}-value"), &r.value))
                    @if r.kind == "TXT" && (r.value.len() > 255 || r.value.starts_with("v=DKIM1")) {
                        (copyable("Value split into strings of at most 255 characters (for DNS providers and zone files that need it)",
                            &format!("rec{i}-split"),
                            &r.zone_value(),
                        ))
                    }
                    (copyable("Zone-file line", &format!("rec{i}-zone"), &r.zone_line()))
                }
            }
        }
        h2 { "DKIM key" }
        form.box method="post" action={ "/domains/" (d) "/dkim" } {
            (views::csrf_field(&admin))
            div {
                @match &record.dkim {
                    Some(k) => { "Current selector: " code { (k.selector) } ". " }
                    None => { "No key yet. " }
                }
                "A new key gets a new selector and replaces the old key at once: publish the new DKIM "
                "record right away, or receivers cannot verify mail from " (d) " until you do."
            }
            @if record.dkim.is_some() {
                button.danger type="submit"
                    data-confirm={ "Replace the DKIM key of " (d) "? Its mail fails DKIM checks until you publish the new record." }
                    { "Rotate DKIM key" }
            } @else {
                button type="submit" { "Generate DKIM key" }
            }
        }
    };
    Ok(views::page(
        &format!("DNS records for {d}"),
        &admin,
        "/domains",
        flash.as_ref(),
        content,
    )
    .into_response())
}
