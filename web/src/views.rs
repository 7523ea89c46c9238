//! The page layout and small shared pieces of HTML (maud escapes everything it interpolates).

use axum::http::StatusCode;
use maud::{DOCTYPE, Markup, html};

use crate::auth::Admin;
use crate::flash::Flash;

/// The sections of the dashboard, in navigation order: (path, label).
pub const NAV: &[(&str, &str)] = &[
    ("/", "Overview"),
    ("/domains", "Domains"),
    ("/accounts", "Accounts"),
    ("/aliases", "Aliases"),
    ("/tracking", "Tracking"),
    ("/settings", "Settings"),
];

/// A full page: header with navigation, the default-password banner, flash message, content.
pub fn page(
    title: &str,
    admin: &Admin,
    active: &str,
    flash: Option<&Flash>,
    content: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · mailserver" }
                link rel="stylesheet" href="/static/app.css";
                script src="/static/app.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/" { "mailserver" }
                    nav {
                        @for (path, label) in NAV {
                            a href=(path) class=[(*path == active).then_some("active")] { (label) }
                        }
                    }
                    span.who { (admin.username) }
                }
                main {
                    @if admin.default_password {
                        div.banner.warn role="alert" {
                            "You are still using the default password. "
                            a href="/settings" { "Change it now." }
                        }
                    }
                    @if let Some(f) = flash {
                        div class={ "banner " (f.kind.class()) } role="status" { (f.text) }
                    }
                    h1 { (title) }
                    (content)
                }
            }
        }
    }
}

/// The hidden CSRF field every state-changing form must carry.
pub fn csrf_field(admin: &Admin) -> Markup {
    html! { input type="hidden" name="_csrf" value=(admin.csrf); }
}

/// A labelled input with its error (if any) right below it; `value` keeps what the user typed.
pub fn field(label: &str, name: &str, kind: &str, value: &str, error: Option<&str>) -> Markup {
    html! {
        label.field {
            span { (label) }
            input type=(kind) name=(name) value=(value) aria-invalid=[error.map(|_| "true")];
            @if let Some(e) = error { span.error { (e) } }
        }
    }
}

/// A bare error page (no navigation: the user may not be logged in).
pub fn error_page(status: StatusCode, message: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (status.as_u16()) " · mailserver" }
                link rel="stylesheet" href="/static/app.css";
            }
            body { main.narrow {
                h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
                p { (message) }
                p { a href="/" { "Back to the dashboard" } }
            } }
        }
    }
}
