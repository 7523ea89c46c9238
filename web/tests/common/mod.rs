//! Test harness: the whole router over a real temporary SQLite database, driven in-process.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response, StatusCode, header};
use base64::Engine as _;
use http_body_util::BodyExt as _;
use mailserver::paths::Paths;
use mailserver_web::AppState;
use tower::ServiceExt as _;

pub struct TestApp {
    pub dir: tempfile::TempDir,
    pub state: AppState,
    pub router: axum::Router,
    pub writer: Option<tokio::task::JoinHandle<()>>,
    /// The session cookie once logged in.
    pub cookie: Option<String>,
    pub csrf: Option<String>,
    pub peer: SocketAddr,
}

/// The admin's password in every test (there is no default password).
pub const ADMIN_PASSWORD: &str = "test-admin-password-Kq7vZ";

/// A data directory under /tmp (not world-writable below it, as OpenDKIM would want) with both
/// databases migrated, as the dashboard opens them, and the settings stored.
pub fn fresh_data_dir(prefix: &str) -> (tempfile::TempDir, Paths, mailserver::db::Pool) {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .unwrap();
    let paths = Paths::new(dir.path());
    std::fs::create_dir_all(paths.db_dir()).unwrap();
    let pool = mailserver::db::open_dashboard(&paths, 4).unwrap();
    let defaults = [("HOSTNAME".to_string(), "mx.example.test".to_string())].into();
    mailserver::store::settings::init_from_env(&pool.get().unwrap(), |_| None, &defaults).unwrap();
    (dir, paths, pool)
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: String,
}

pub fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

/// The session id a response sets, if any.
pub fn session_cookie(headers: &axum::http::HeaderMap) -> Option<String> {
    let prefix = format!("{}=", mailserver_web::login::COOKIE);
    headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|c| c.to_str().ok())
        .filter_map(|c| c.split(';').next()?.strip_prefix(prefix.as_str()))
        .find(|id| !id.is_empty())
        .map(str::to_string)
}

impl TestApp {
    pub async fn new() -> Self {
        let (dir, paths, pool) = fresh_data_dir("web");
        {
            let conn = pool.get().unwrap();
            mailserver::store::admins::reset_password(
                &conn,
                "admin",
                ADMIN_PASSWORD,
                mailserver::store::unix_now(),
            )
            .unwrap();
        }
        let (state, writer) =
            AppState::start(pool, paths, vec!["10.0.0.1".parse().unwrap()]).unwrap();
        let router = mailserver_web::app(state.clone());
        Self {
            dir,
            state,
            router,
            writer: Some(writer),
            cookie: None,
            csrf: None,
            peer: "192.0.2.10:50000".parse().unwrap(),
        }
    }

    /// Shuts the app down as the binary does (every sender of the open queue dropped, the writer
    /// drained), then reads every recorded open: (tracking id, client IP, User-Agent), in order.
    pub async fn shut_down_and_read_opens(mut self) -> Vec<(String, String, String)> {
        let writer = self.writer.take().unwrap();
        let Self {
            state, router, dir, ..
        } = self;
        drop(router);
        let pool = state.db.pool().clone();
        drop(state);
        writer.await.unwrap();
        let rows = pool
            .get()
            .unwrap()
            .prepare("SELECT tracking_id, client_ip, user_agent FROM pixel_opens ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        drop(dir);
        rows
    }

    pub fn conn(&self) -> mailserver::db::PooledConnection {
        self.state.db.pool().get().unwrap()
    }

    pub async fn send(&self, req: Request<Body>) -> Reply {
        self.send_from(self.peer, req).await
    }

    /// Sends `req` as if from the client at `peer`.
    pub async fn send_from(&self, peer: SocketAddr, mut req: Request<Body>) -> Reply {
        req.extensions_mut().insert(ConnectInfo(peer));
        let resp: Response<Body> = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    fn with_cookie(&self, b: axum::http::request::Builder) -> axum::http::request::Builder {
        match &self.cookie {
            Some(c) => b.header(
                header::COOKIE,
                format!("{}={c}", mailserver_web::login::COOKIE),
            ),
            None => b,
        }
    }

    pub async fn get(&self, uri: &str) -> Reply {
        let req = self
            .with_cookie(Request::get(uri))
            .body(Body::empty())
            .unwrap();
        self.send(req).await
    }

    /// Logs in with Basic auth and keeps the session cookie and CSRF token.
    pub async fn login(&mut self, user: &str, pass: &str) -> Reply {
        let req = Request::get("/")
            .header(header::AUTHORIZATION, basic(user, pass))
            .body(Body::empty())
            .unwrap();
        let reply = self.send(req).await;
        if let Some(id) = session_cookie(&reply.headers) {
            self.cookie = Some(id);
        }
        self.refresh_csrf().await;
        reply
    }

    /// Reads the CSRF token from a page that has a form.
    pub async fn refresh_csrf(&mut self) {
        let page = self.get("/settings").await.body;
        self.csrf = page
            .split("name=\"_csrf\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .map(str::to_string)
            .or_else(|| self.csrf.clone());
    }

    /// POSTs a urlencoded form, adding the CSRF token unless `fields` has `_csrf` already.
    pub async fn post(&self, uri: &str, fields: &[(&str, &str)]) -> Reply {
        let mut form = form_urlencoded::Serializer::new(String::new());
        if let (false, Some(t)) = (fields.iter().any(|(k, _)| *k == "_csrf"), &self.csrf) {
            form.append_pair("_csrf", t);
        }
        for (k, v) in fields {
            form.append_pair(k, v);
        }
        let req = self
            .with_cookie(Request::post(uri))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form.finish()))
            .unwrap();
        self.send(req).await
    }
}
