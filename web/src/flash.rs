//! Flash messages: one line left for the next page after a post/redirect/get.
//!
//! Its own module because the session store (`auth`) keeps them and the page layout (`views`) shows
//! them, and `views` depends on `auth` already: defined in `views`, they made `auth` depend on `views`
//! in a circle.

/// A one-line message shown at the top of the next page.
#[derive(Debug, Clone)]
pub struct Flash {
    pub kind: FlashKind,
    pub text: String,
}

#[derive(Debug, Clone, Copy)]
pub enum FlashKind {
    Ok,
    Error,
}

impl FlashKind {
    /// The CSS class of its banner.
    pub fn class(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
        }
    }
}

impl Flash {
    pub fn ok(text: impl Into<String>) -> Self {
        Self {
            kind: FlashKind::Ok,
            text: text.into(),
        }
    }
    pub fn error(text: impl Into<String>) -> Self {
        Self {
            kind: FlashKind::Error,
            text: text.into(),
        }
    }
}
