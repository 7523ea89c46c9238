//! `GET /pixel?id=ID`: the tracking pixel. Public (no login), always the same 43-byte transparent GIF
//! with `no-store`, whatever the id, so the response tells a prober nothing.
//!
//! Opens are queued to the library's `OpenRecorder` (started with the [`AppState`]), whose thread writes them in batches, so a
//! response never waits on SQLite's write lock. Only ids of the one tracking-id format are queued
//! ([`TrackingId::parse`]), and rows are only inserted for ids that exist. On a clean shutdown the
//! queue is drained before the process exits, so no open is lost.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use mailserver::store::tracking::Open;
use mailserver::tracking::TrackingId;

use crate::client_ip::{client_ip, peer_ip};
use crate::state::AppState;

/// A 1x1 transparent GIF.
pub const GIF: [u8; 43] = [
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// The longest User-Agent stored, in characters.
const MAX_USER_AGENT: usize = 512;

pub async fn pixel(State(state): State<AppState>, req: Request) -> Response {
    let id = req.uri().query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "id")
            .map(|(_, v)| v.into_owned())
    });
    if let Some(tracking_id) = id.and_then(|id| TrackingId::parse(&id).ok()) {
        let client_ip = client_ip(req.headers(), peer_ip(&req), &state.trusted_proxies)
            .map(|ip| ip.to_string())
            .unwrap_or_default();
        let user_agent: String = req
            .headers()
            .get(header::USER_AGENT)
            .map(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .chars()
                    .take(MAX_USER_AGENT)
                    .collect()
            })
            .unwrap_or_default();
        let unix_time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        state.opens.record(Open {
            tracking_id,
            client_ip,
            user_agent,
            unix_time,
        });
    }
    (
        [
            (header::CONTENT_TYPE, "image/gif"),
            (
                header::CACHE_CONTROL,
                "no-store, no-cache, must-revalidate, max-age=0",
            ),
            (header::PRAGMA, "no-cache"),
            (header::EXPIRES, "0"),
        ],
        GIF,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gif_is_43_bytes() {
        assert_eq!(GIF.len(), 43);
        assert_eq!(&GIF[..6], b"GIF89a");
    }
}
