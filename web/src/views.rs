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

/// The document head of every page; `script` adds the dashboard's small script.
fn head(title: &str, script: bool) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · mailserver" }
            link rel="stylesheet" href="/static/app.css";
            @if script {
                script src="/static/app.js" defer {}
            }
        }
    }
}

/// A full page: header with navigation and the logout button, flash message, content.
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
            (head(title, true))
            body {
                header.top {
                    a.brand href="/" { "mailserver" }
                    nav {
                        @for (path, label) in NAV {
                            a href=(path) class=[(*path == active).then_some("active")] { (label) }
                        }
                    }
                    span.who { (admin.username) }
                    form.logout method="post" action="/logout" {
                        (csrf_field(admin))
                        button.secondary type="submit" { "Log out" }
                    }
                }
                main {
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

/// The page after a logout (public: no navigation, no admin).
pub fn logged_out_page() -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head("Logged out", false))
            body { main.narrow {
                h1 { "You are logged out" }
                p { "Your session has ended." }
                p {
                    "Your browser may still remember the password you typed. "
                    "To make it forget, close the browser (every window of it), "
                    "above all on a computer that others use."
                }
                p { a.button href="/" { "Log in again" } }
            } }
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
