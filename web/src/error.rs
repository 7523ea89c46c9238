//! One error type for the web edge: a status code and a safe message; causes are logged, not shown.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum WebError {
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    BadRequest(String),
    #[error("authentication required")]
    Unauthorized,
    #[error("too many failed logins; try again in {0} s")]
    TooManyRequests(u64),
    #[error("the form has expired or did not come from this site; reload the page and try again")]
    Csrf,
    #[error("internal error")]
    Internal(String),
}

impl From<rusqlite::Error> for WebError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<mailserver::store::StoreError> for WebError {
    fn from(e: mailserver::store::StoreError) -> Self {
        use mailserver::store::StoreError as S;
        match e {
            S::Db(e) => Self::Internal(e.to_string()),
            S::NotFound { .. } => Self::NotFound,
            other => Self::BadRequest(other.to_string()),
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Csrf => StatusCode::FORBIDDEN,
            Self::Internal(cause) => {
                tracing::error!(cause, "internal error");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let mut resp =
            (status, crate::views::error_page(status, &self.to_string())).into_response();
        match self {
            Self::Unauthorized => {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"mailserver\", charset=\"UTF-8\""),
                );
            }
            Self::TooManyRequests(secs) => {
                if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                    resp.headers_mut().insert(header::RETRY_AFTER, v);
                }
            }
            _ => {}
        }
        resp
    }
}
