//! Mail accounts: the list, adding (user name + one of the managed domains), editing the name, quota
//! and state, setting the password, and deleting.

use axum::Router;
use axum::extract::{Extension, Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use mailserver::names::{Address, Domain, LocalPart, display_name};
use mailserver::password::PasswordError;
use mailserver::store::accounts::{Account, MAX_QUOTA_MB};
use mailserver::store::{self, StoreError};
use maud::{Markup, html};
use serde::Deserialize;

use crate::auth::Admin;
use crate::error::WebError;
use crate::pages::applied;
use crate::state::AppState;
use crate::views;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/accounts", get(list).post(add))
        .route("/accounts/{address}", get(edit).post(save))
        .route("/accounts/{address}/password", post(set_password))
        .route("/accounts/{address}/delete", post(delete))
}

/// An account named in a URL: a malformed address cannot exist, so it is a 404 like an unknown one.
fn path_address(raw: &str) -> Result<Address, WebError> {
    Address::parse(raw).map_err(|_| WebError::NotFound)
}

fn quota_text(mb: u32) -> String {
    if mb == 0 {
        "unlimited".to_string()
    } else {
        format!("{mb} MiB")
    }
}

/// The quota field: a whole number of MiB, 0 (or empty) for unlimited.
fn parse_quota(input: &str) -> Result<u32, String> {
    let s = input.trim();
    if s.is_empty() {
        return Ok(0);
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err("the quota must be a whole number of MiB (0 for unlimited)".to_string());
    }
    match s.parse::<u32>() {
        Ok(n) if n <= MAX_QUOTA_MB => Ok(n),
        _ => Err(format!(
            "the quota is too large (at most {MAX_QUOTA_MB} MiB)"
        )),
    }
}

/// Per-field errors of a form.
#[derive(Default)]
struct Errors {
    local: Option<String>,
    domain: Option<String>,
    password: Option<String>,
    name: Option<String>,
    quota: Option<String>,
}

impl Errors {
    /// The posted display name, checked: `None`, with the error noted, when it is refused.
    fn check_name(&mut self, input: &str) -> Option<String> {
        display_name(input)
            .map_err(|e| self.name = Some(e.to_string()))
            .ok()
    }

    /// The posted quota, parsed: `None`, with the error noted, when it is refused.
    fn check_quota(&mut self, input: &str) -> Option<u32> {
        parse_quota(input).map_err(|e| self.quota = Some(e)).ok()
    }

    fn any(&self) -> bool {
        self.local.is_some()
            || self.domain.is_some()
            || self.password.is_some()
            || self.name.is_some()
            || self.quota.is_some()
    }
}

/// The posted add form; also what the form redisplays when it comes back with errors (never the
/// password, which is taken out before).
#[derive(Default, Deserialize)]
struct AddPost {
    #[serde(default)]
    local: String,
    #[serde(default)]
    domain: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    quota: String,
}

/// A `<select>` laid out like `views::field`.
fn select_field(
    label: &str,
    name: &str,
    options: &[(String, bool)],
    selected: &str,
    error: Option<&str>,
) -> Markup {
    html! {
        label.field {
            span { (label) }
            select name=(name) aria-invalid=[error.map(|_| "true")] {
                @for (value, active) in options {
                    option value=(value) selected[value == selected] {
                        (value) @if !active { " (inactive)" }
                    }
                }
            }
            @if let Some(e) = error { span.error { (e) } }
        }
    }
}

async fn render_list(
    state: &AppState,
    admin: &Admin,
    status: StatusCode,
    form: AddPost,
    errors: Errors,
) -> Result<Response, WebError> {
    let (accounts, domains) = state
        .db
        .call(|conn| {
            let tx = conn.transaction()?;
            let accounts = store::accounts::list(&tx)?;
            let domains: Vec<(String, bool)> = store::domains::list(&tx)?
                .into_iter()
                .map(|d| (d.domain.to_string(), d.active))
                .collect();
            tx.commit()?;
            Ok((accounts, domains))
        })
        .await?;
    // A failed submission shows its own errors next to the fields; the pending message waits.
    let flash = if errors.any() {
        None
    } else {
        state.auth.take_flash(&admin.session_id)
    };
    let quota = if form.quota.is_empty() && !errors.any() {
        "0"
    } else {
        form.quota.as_str()
    };
    let content = html! {
        @if accounts.is_empty() {
            p.muted { "No accounts yet." }
        } @else {
            table {
                thead { tr {
                    th { "Address" } th { "Domain" } th { "Name" } th { "Quota" } th { "State" } th { "Actions" }
                } }
                tbody {
                    @for a in &accounts { (account_row(admin, a)) }
                }
            }
        }
        h2 { "Add an account" }
        @if domains.is_empty() {
            p { "Accounts belong to a domain. " a href="/domains" { "Add a domain first." } }
        } @else {
            form.box method="post" action="/accounts" {
                (views::csrf_field(admin))
                (views::field("User name (before the @)", "local", "text", &form.local, errors.local.as_deref()))
                (select_field("Domain", "domain", &domains, form.domain.trim(), errors.domain.as_deref()))
                (views::field("Password", "password", "password", "", errors.password.as_deref()))
                (views::field("Name (optional)", "name", "text", &form.name, errors.name.as_deref()))
                (views::field("Quota in MiB (0 = unlimited)", "quota", "number", quota, errors.quota.as_deref()))
                button type="submit" { "Add account" }
            }
        }
    };
    let status_page = views::page("Accounts", admin, "/accounts", flash.as_ref(), content);
    Ok((status, status_page).into_response())
}

fn account_row(admin: &Admin, a: &Account) -> Markup {
    let address = a.address.as_str();
    html! {
        tr {
            td { a href={ "/accounts/" (address) } { strong { (address) } } }
            td {
                (a.address.domain())
                @if !a.domain_active { " " span.pill.off { "domain inactive" } }
            }
            td { (a.name) }
            td { (quota_text(a.quota_mb)) }
            td {
                @if a.active { span.pill.on { "active" } } @else { span.pill.off { "inactive" } }
            }
            td.actions {
                a href={ "/accounts/" (address) } { "Edit" }
                " "
                (delete_form(admin, address))
            }
        }
    }
}

fn delete_form(admin: &Admin, address: &str) -> Markup {
    html! {
        form method="post" action={ "/accounts/" (address) "/delete" } {
            (views::csrf_field(admin))
            button.danger type="submit"
                data-confirm={ "Delete the account " (address) "? Its mail stays on disk, but it can no longer receive mail or log in." }
                { "Delete" }
        }
    }
}

async fn list(
    State(state): State<AppState>,
    Extension(admin): Extension<Admin>,
) -> Result<Response, WebError> {
    render_list(
        &state,
        &admin,
        StatusCode::OK,
        AddPost::default(),
        Errors::default(),
    )
    .await
}

async fn add(
    State(state): State<AppState>,
    Extension(admin): Extension<Admin>,
    Form(mut input): Form<AddPost>,
) -> Result<Response, WebError> {
    let mut errors = Errors::default();
    let local = LocalPart::parse(input.local.trim())
        .map_err(|e| errors.local = Some(e.to_string()))
        .ok();
    let domain = Domain::parse(input.domain.trim())
        .map_err(|e| errors.domain = Some(e.to_string()))
        .ok();
    let name = errors.check_name(&input.name);
    let quota = errors.check_quota(&input.quota);
    if input.password.is_empty() {
        errors.password = Some(PasswordError::Empty.to_string());
    }
    let password = std::mem::take(&mut input.password);
    if let (Some(local), Some(domain), Some(name), Some(quota), false) =
        (local, domain, name, quota, errors.any())
    {
        let address = Address::new(local, domain);
        let a = address.clone();
        let added = state
            .db
            .call(move |conn| Ok(store::accounts::add(conn, &a, &password, quota, &name)))
            .await?;
        let error = match added {
            Ok(_) => {
                let message = format!("Account {address} added");
                return Ok(applied(&state, &admin, "/accounts", message).await);
            }
            Err(e) => e,
        };
        match error {
            StoreError::Exists { .. } | StoreError::AddressIsAlias { .. } => {
                errors.local = Some(error.to_string())
            }
            StoreError::QuotaTooLarge { .. } => errors.quota = Some(error.to_string()),
            StoreError::UnknownDomain { .. } => errors.domain = Some(error.to_string()),
            StoreError::Password(_) => errors.password = Some(error.to_string()),
            StoreError::Name(_) => errors.name = Some(error.to_string()),
            other => return Err(other.into()),
        }
    }
    // The form is refused, by its own checks or the store's: show it again with the errors.
    render_list(
        &state,
        &admin,
        StatusCode::UNPROCESSABLE_ENTITY,
        input,
        errors,
    )
    .await
}

/// What the details form shows: from the account, or as the user posted it.
struct DetailsView {
    name: String,
    quota: String,
    active: bool,
}

async fn render_edit(
    state: &AppState,
    admin: &Admin,
    address: Address,
    status: StatusCode,
    details: Option<DetailsView>,
    errors: Errors,
) -> Result<Response, WebError> {
    let a = address.clone();
    let account = state
        .db
        .call(move |conn| Ok(store::accounts::get(conn, &a)?))
        .await?;
    let flash = if errors.any() {
        None
    } else {
        state.auth.take_flash(&admin.session_id)
    };
    let details = details.unwrap_or_else(|| DetailsView {
        name: account.name.clone(),
        quota: account.quota_mb.to_string(),
        active: account.active,
    });
    let addr = address.as_str();
    let content = html! {
        p { a href="/accounts" { "← All accounts" } }
        @if !account.domain_active {
            div.banner.warn role="note" {
                "The domain " (address.domain()) " is inactive: this account neither receives mail nor "
                "logs in until you " a href="/domains" { "activate the domain" } "."
            }
        }
        h2 { "Details" }
        form.box method="post" action={ "/accounts/" (addr) } {
            (views::csrf_field(admin))
            (views::field("Name", "name", "text", &details.name, errors.name.as_deref()))
            (views::field("Quota in MiB (0 = unlimited)", "quota", "number", &details.quota, errors.quota.as_deref()))
            label.check {
                input type="checkbox" name="active" value="1" checked[details.active];
                span { "Active (receives mail and may log in)" }
            }
            button type="submit" { "Save" }
        }
        h2 { "Password" }
        form.box method="post" action={ "/accounts/" (addr) "/password" } {
            (views::csrf_field(admin))
            (views::field("New password", "password", "password", "", errors.password.as_deref()))
            button type="submit" { "Set password" }
        }
        h2 { "Delete" }
        p.muted { "Deleting the account keeps its mail on disk; remove the Maildir yourself if you want it gone." }
        (delete_form(admin, addr))
    };
    let title = format!("Account {addr}");
    Ok((
        status,
        views::page(&title, admin, "/accounts", flash.as_ref(), content),
    )
        .into_response())
}

async fn edit(
    State(state): State<AppState>,
    Extension(admin): Extension<Admin>,
    Path(raw): Path<String>,
) -> Result<Response, WebError> {
    let address = path_address(&raw)?;
    render_edit(
        &state,
        &admin,
        address,
        StatusCode::OK,
        None,
        Errors::default(),
    )
    .await
}

/// The posted details form.
#[derive(Deserialize)]
struct DetailsPost {
    #[serde(default)]
    name: String,
    #[serde(default)]
    quota: String,
    #[serde(default)]
    active: Option<String>,
}

async fn save(
    State(state): State<AppState>,
    Extension(admin): Extension<Admin>,
    Path(raw): Path<String>,
    Form(input): Form<DetailsPost>,
) -> Result<Response, WebError> {
    let address = path_address(&raw)?;
    let active = input.active.as_deref().is_some_and(|v| !v.is_empty());
    let mut errors = Errors::default();
    let name = errors.check_name(&input.name);
    let quota = errors.check_quota(&input.quota);
    let submitted = DetailsView {
        name: input.name,
        quota: input.quota,
        active,
    };
    if let (Some(name), Some(quota)) = (name, quota) {
        let a = address.clone();
        let saved = state
            .db
            .call(move |conn| {
                let tx = conn.transaction()?;
                let result = store::accounts::set_name(&tx, &a, &name)
                    .and_then(|()| store::accounts::set_quota(&tx, &a, quota))
                    .and_then(|()| store::accounts::set_active(&tx, &a, active));
                if result.is_ok() {
                    tx.commit()?;
                }
                Ok(result)
            })
            .await?;
        match saved {
            Ok(()) => {
                let message = format!("Account {address} saved");
                return Ok(applied(&state, &admin, "/accounts", message).await);
            }
            Err(e @ StoreError::Name(_)) => errors.name = Some(e.to_string()),
            Err(e @ StoreError::QuotaTooLarge { .. }) => errors.quota = Some(e.to_string()),
            Err(e) => return Err(e.into()),
        }
    }
    // The form is refused, by its own checks or the store's: show it again with the errors.
    render_edit(
        &state,
        &admin,
        address,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some(submitted),
        errors,
    )
    .await
}

/// The posted password form.
#[derive(Deserialize)]
struct PasswordPost {
    #[serde(default)]
    password: String,
}

async fn set_password(
    State(state): State<AppState>,
    Extension(admin): Extension<Admin>,
    Path(raw): Path<String>,
    Form(input): Form<PasswordPost>,
) -> Result<Response, WebError> {
    let address = path_address(&raw)?;
    let a = address.clone();
    let set = state
        .db
        .call(move |conn| Ok(store::accounts::set_password(conn, &a, &input.password)))
        .await?;
    match set {
        Ok(()) => Ok(applied(
            &state,
            &admin,
            &format!("/accounts/{address}"),
            format!("New password set for {address}"),
        )
        .await),
        Err(e @ StoreError::Password(_)) => {
            let errors = Errors {
                password: Some(e.to_string()),
                ..Errors::default()
            };
            render_edit(
                &state,
                &admin,
                address,
                StatusCode::UNPROCESSABLE_ENTITY,
                None,
                errors,
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

async fn delete(
    State(state): State<AppState>,
    Extension(admin): Extension<Admin>,
    Path(raw): Path<String>,
) -> Result<Response, WebError> {
    let address = path_address(&raw)?;
    let a = address.clone();
    state
        .db
        .call(move |conn| Ok(store::accounts::remove(conn, &a)?))
        .await?;
    Ok(applied(
        &state,
        &admin,
        "/accounts",
        format!("Account {address} deleted; its mail stays on disk"),
    )
    .await)
}
