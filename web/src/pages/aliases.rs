//! Aliases: the list, adding one (an address or an `@domain` catch-all, forwarded to one or more
//! addresses), editing its destinations and whether it is active, the per-alias open-tracking switch,
//! and deleting it. Every change is rendered and applied to the daemons before the redirect.

use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use mailserver::names::{AliasSource, Destinations, NameError};
use mailserver::store::StoreError;
use mailserver::store::aliases::{self, Alias};
use maud::{Markup, html};
use serde::Deserialize;

use crate::auth::Admin;
use crate::error::WebError;
use crate::flash::Flash;
use crate::state::AppState;
use crate::views;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/aliases", get(list).post(add))
        .route("/aliases/{id}/edit", get(edit_page).post(edit))
        .route("/aliases/{id}/tracking", post(set_tracking))
        .route("/aliases/{id}/delete", post(delete))
}

/// Errors shown next to the fields of the add or edit form.
#[derive(Debug, Default)]
struct Errors {
    source: Option<String>,
    destination: Option<String>,
}

impl Errors {
    fn any(&self) -> bool {
        self.source.is_some() || self.destination.is_some()
    }
}

/// The posted add form; also what the form redisplays when it comes back with errors.
#[derive(Debug, Default, Deserialize)]
struct AddPost {
    #[serde(default)]
    source: String,
    #[serde(default)]
    destination: String,
    /// A checkbox: present ("on") when ticked.
    #[serde(default)]
    tracking: Option<String>,
}

/// The posted edit form; also what the edit page shows (filled from the alias on a GET).
#[derive(Debug, Default, Deserialize)]
struct EditPost {
    #[serde(default)]
    destination: String,
    #[serde(default)]
    active: Option<String>,
}

/// The posted tracking switch.
#[derive(Debug, Deserialize)]
struct TrackingPost {
    #[serde(default)]
    tracking: String,
}

/// A library message as a sentence: capital first letter (unless it starts with an address or a
/// domain), full stop.
fn sentence(text: &str) -> String {
    let first_word = text
        .split_whitespace()
        .next()
        .unwrap_or("")
        .trim_end_matches(['.', ',', ':', ';']);
    let mut out = if first_word.contains(['@', '.']) {
        text.to_string()
    } else {
        let mut chars = text.chars();
        match chars.next() {
            Some(c) => c.to_uppercase().chain(chars).collect(),
            None => return String::new(),
        }
    };
    if !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    out
}

fn name_error(e: &NameError) -> String {
    sentence(&e.to_string())
}

/// Spaces and tabs around the value are forgiven; anything else is the validator's business.
fn trimmed(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

fn parse_source(input: &str) -> Result<AliasSource, String> {
    AliasSource::parse(trimmed(input)).map_err(|e| name_error(&e))
}

fn parse_destinations(input: &str) -> Result<Destinations, String> {
    let input = trimmed(input);
    // The library skips empty entries; here an empty entry between two commas is most likely a
    // typo (a missing address), so say so instead of quietly dropping it. A trailing comma is fine.
    let body = input.strip_suffix(',').unwrap_or(input);
    if !body.is_empty() && body.split(',').any(|part| trimmed(part).is_empty()) {
        return Err("The destination has an empty entry between two commas.".into());
    }
    Destinations::parse(input).map_err(|e| name_error(&e))
}

/// The alias a URL names; unknown (or non-numeric) ids are a 404.
fn alias_by_id(conn: &rusqlite::Connection, id: i64) -> Result<Alias, WebError> {
    Ok(aliases::get_by_id(conn, id)?)
}

fn parse_id(id: &str) -> Result<i64, WebError> {
    id.parse::<i64>().map_err(|_| WebError::NotFound)
}

/// A store error the user can act on, as a message for the form; anything else stays an error.
fn store_error_message(e: StoreError) -> Result<String, WebError> {
    match e {
        StoreError::Exists { key, .. } => Ok(format!("An alias for {key} exists already.")),
        e @ (StoreError::UnknownDomain { .. }
        | StoreError::AddressIsAccount { .. }
        | StoreError::AliasForwardsToItself { .. }
        | StoreError::Name(_)
        | StoreError::NotFound { .. }) => Ok(sentence(&e.to_string())),
        other => Err(other.into()),
    }
}

fn render_list(
    admin: &Admin,
    list: &[Alias],
    form: &AddPost,
    errors: &Errors,
    flash: Option<&Flash>,
) -> Markup {
    let content = html! {
        h2 { "Add an alias" }
        form.box method="post" action="/aliases" {
            (views::csrf_field(admin))
            (views::field("Source: an address, or @domain for a catch-all", "source", "text",
                          &form.source, errors.source.as_deref()))
            (views::field("Destinations, comma-separated (local or external)", "destination", "text",
                          &form.destination, errors.destination.as_deref()))
            label.check {
                input type="checkbox" name="tracking" value="on" checked[form.tracking.is_some()];
                span { "Track opens of mail sent as this alias" }
            }
            button type="submit" { "Add alias" }
        }
        h2 { "Aliases" }
        @if list.is_empty() {
            p.muted { "No aliases yet." }
        } @else {
            table {
                thead { tr {
                    th { "Source" } th { "Destinations" } th { "State" } th { "Open tracking" } th { "" }
                } }
                tbody {
                    @for a in list {
                        tr id={ "alias-" (a.id) } {
                            td {
                                code { (a.source.key()) }
                                @if matches!(a.source, AliasSource::CatchAll(_)) {
                                    " " span.pill { "catch-all" }
                                }
                            }
                            td {
                                @for (i, d) in a.destinations.addresses().iter().enumerate() {
                                    @if i > 0 { br; }
                                    (d.as_str())
                                }
                            }
                            td {
                                @if a.active { span.pill.on { "active" } } @else { span.pill.off { "disabled" } }
                                @if !a.domain_active { " " span.muted { "(domain disabled)" } }
                            }
                            td.actions {
                                @if a.tracking_enabled {
                                    span.pill.on { "on" } " "
                                } @else {
                                    span.pill.off { "off" } " "
                                }
                                form method="post" action={ "/aliases/" (a.id) "/tracking" } {
                                    (views::csrf_field(admin))
                                    @if a.tracking_enabled {
                                        input type="hidden" name="tracking" value="off";
                                        button.secondary type="submit" { "Turn off" }
                                    } @else {
                                        input type="hidden" name="tracking" value="on";
                                        button.secondary type="submit" { "Turn on" }
                                    }
                                }
                                @if a.tracking_enabled {
                                    " " a href={ "/tracking?alias=" (a.id) } { "Opens" }
                                }
                            }
                            td.actions {
                                a href={ "/aliases/" (a.id) "/edit" } { "Edit" } " "
                                form method="post" action={ "/aliases/" (a.id) "/delete" } {
                                    (views::csrf_field(admin))
                                    button.danger type="submit"
                                        data-confirm={ "Delete the alias " (a.source.key()) "?" } { "Delete" }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    views::page("Aliases", admin, "/aliases", flash, content)
}

async fn list_page(
    state: &AppState,
    admin: &Admin,
    form: &AddPost,
    errors: &Errors,
    status: StatusCode,
) -> Result<Response, WebError> {
    let list = state.db.call(|conn| Ok(aliases::list(conn)?)).await?;
    let flash = state.auth.take_flash(&admin.session_id);
    Ok((
        status,
        render_list(admin, &list, form, errors, flash.as_ref()),
    )
        .into_response())
}

async fn list(
    State(state): State<AppState>,
    Extension(admin): Extension<Admin>,
) -> Result<Response, WebError> {
    list_page(
        &state,
        &admin,
        &AddPost::default(),
        &Errors::default(),
        StatusCode::OK,
    )
    .await
}

/// Validates the add form: both values, and that an address does not forward to itself.
fn check_add(form: &AddPost) -> Result<(AliasSource, Destinations), Errors> {
    let mut errors = Errors::default();
    let source = parse_source(&form.source)
        .map_err(|e| errors.source = Some(e))
        .ok();
    let destinations = parse_destinations(&form.destination)
        .map_err(|e| errors.destination = Some(e))
        .ok();
    match (source, destinations) {
        (Some(AliasSource::Address(a)), Some(d)) if d.addresses().contains(&a) => {
            errors.destination = Some(format!("{a} cannot forward to itself."));
            Err(errors)
        }
        (Some(s), Some(d)) if !errors.any() => Ok((s, d)),
        _ => Err(errors),
    }
}

async fn add(
    State(state): State<AppState>,
    Extension(admin): Extension<Admin>,
    Form(form): Form<AddPost>,
) -> Result<Response, WebError> {
    let (source, destinations) = match check_add(&form) {
        Ok(v) => v,
        Err(errors) => {
            return list_page(
                &state,
                &admin,
                &form,
                &errors,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await;
        }
    };
    let tracking = form.tracking.is_some();
    let outcome = state
        .db
        .call(
            move |conn| match aliases::add(conn, &source, &destinations, tracking) {
                Ok(a) => Ok(Ok(a.source.key())),
                Err(e) => store_error_message(e).map(Err),
            },
        )
        .await?;
    match outcome {
        Ok(key) => {
            let what = if tracking { " with open tracking" } else { "" };
            tracing::info!(alias = key, tracking, "alias added");
            Ok(crate::pages::applied(
                &state,
                &admin,
                "/aliases",
                format!("Alias {key} added{what}."),
            )
            .await)
        }
        Err(message) => {
            let errors = Errors {
                source: Some(message),
                destination: None,
            };
            list_page(
                &state,
                &admin,
                &form,
                &errors,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
    }
}

fn render_edit(
    admin: &Admin,
    alias: &Alias,
    form: &EditPost,
    errors: &Errors,
    flash: Option<&Flash>,
) -> Markup {
    let title = format!("Alias {}", alias.source.key());
    let content = html! {
        p {
            "Open tracking is "
            @if alias.tracking_enabled { span.pill.on { "on" } } @else { span.pill.off { "off" } }
            " (switch it on the " a href="/aliases" { "list of aliases" } ")."
        }
        form.box method="post" action={ "/aliases/" (alias.id) "/edit" } {
            (views::csrf_field(admin))
            (views::field("Destinations, comma-separated (local or external)", "destination", "text",
                          &form.destination, errors.destination.as_deref()))
            label.check {
                input type="checkbox" name="active" value="on" checked[form.active.is_some()];
                span { "Active (mail to this alias is forwarded)" }
            }
            button type="submit" { "Save" }
            a href="/aliases" { "Cancel" }
        }
    };
    views::page(&title, admin, "/aliases", flash, content)
}

async fn edit_page(
    State(state): State<AppState>,
    Extension(admin): Extension<Admin>,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let id = parse_id(&id)?;
    let alias = state.db.call(move |conn| alias_by_id(conn, id)).await?;
    let form = EditPost {
        destination: alias
            .destinations
            .addresses()
            .iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        active: alias.active.then(|| "on".to_string()),
    };
    let flash = state.auth.take_flash(&admin.session_id);
    Ok(render_edit(&admin, &alias, &form, &Errors::default(), flash.as_ref()).into_response())
}

async fn edit(
    State(state): State<AppState>,
    Extension(admin): Extension<Admin>,
    Path(id): Path<String>,
    Form(form): Form<EditPost>,
) -> Result<Response, WebError> {
    let id = parse_id(&id)?;
    let alias = state.db.call(move |conn| alias_by_id(conn, id)).await?;
    let mut errors = Errors::default();
    let destinations = match parse_destinations(&form.destination) {
        Ok(d) => match &alias.source {
            AliasSource::Address(a) if d.addresses().contains(a) => {
                errors.destination = Some(format!("{a} cannot forward to itself."));
                None
            }
            _ => Some(d),
        },
        Err(e) => {
            errors.destination = Some(e);
            None
        }
    };
    let Some(destinations) = destinations else {
        let flash = state.auth.take_flash(&admin.session_id);
        return Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            render_edit(&admin, &alias, &form, &errors, flash.as_ref()),
        )
            .into_response());
    };
    let active = form.active.is_some();
    let source = alias.source.clone();
    state
        .db
        .call(move |conn| {
            let tx = conn.transaction()?;
            aliases::set_destinations(&tx, &source, &destinations)?;
            aliases::set_active(&tx, &source, active)?;
            tx.commit()?;
            Ok(())
        })
        .await?;
    let key = alias.source.key();
    tracing::info!(alias = key, active, "alias changed");
    Ok(crate::pages::applied(&state, &admin, "/aliases", format!("Alias {key} saved.")).await)
}

async fn set_tracking(
    State(state): State<AppState>,
    Extension(admin): Extension<Admin>,
    Path(id): Path<String>,
    Form(form): Form<TrackingPost>,
) -> Result<Response, WebError> {
    let id = parse_id(&id)?;
    let on = match form.tracking.as_str() {
        "on" => true,
        "off" => false,
        _ => return Err(WebError::BadRequest("tracking must be on or off".into())),
    };
    let key = state
        .db
        .call(move |conn| {
            let alias = alias_by_id(conn, id)?;
            aliases::set_tracking(conn, &alias.source, on)?;
            Ok(alias.source.key())
        })
        .await?;
    tracing::info!(alias = key, tracking = on, "alias tracking switched");
    let state_word = if on { "on" } else { "off" };
    Ok(crate::pages::applied(
        &state,
        &admin,
        "/aliases",
        format!("Open tracking is {state_word} for {key}."),
    )
    .await)
}

async fn delete(
    State(state): State<AppState>,
    Extension(admin): Extension<Admin>,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let id = parse_id(&id)?;
    let key = state
        .db
        .call(move |conn| {
            let alias = alias_by_id(conn, id)?;
            aliases::remove(conn, &alias.source)?;
            Ok(alias.source.key())
        })
        .await?;
    tracing::info!(alias = key, "alias deleted");
    Ok(crate::pages::applied(&state, &admin, "/aliases", format!("Alias {key} deleted.")).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_with_an_empty_entry_are_refused() {
        assert!(parse_destinations("a@x.test, b@y.test").is_ok());
        assert!(parse_destinations("a@x.test,").is_ok());
        assert!(parse_destinations("a@x.test,,b@y.test").is_err());
        assert!(parse_destinations(",a@x.test").is_err());
        assert!(parse_destinations("").is_err());
    }

    #[test]
    fn messages_are_sentences() {
        assert_eq!(sentence("address is empty"), "Address is empty.");
        assert_eq!(sentence("done."), "Done.");
        assert_eq!(sentence(""), "");
        assert_eq!(
            sentence("a@x.test is an account"),
            "a@x.test is an account."
        );
    }
}
