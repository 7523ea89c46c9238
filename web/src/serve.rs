//! Serving the router over HTTPS on the public listener, with bounds on what a client may hold.
//!
//! The dashboard and `/pixel` share one port open to the internet, so a client that connects and
//! then sends nothing, or one header byte every few seconds, must not keep a connection (a task,
//! buffers, a file descriptor) for long, and many of them must not add up to unbounded memory.
//! [`Limits`] says what is allowed; how each bound is enforced, with the crates in Cargo.lock:
//!
//! - **TLS handshake**: axum-server's `RustlsAcceptor::handshake_timeout` (a timeout around
//!   tokio-rustls's accept), [`Limits::tls_handshake`].
//! - **Request head**: hyper's HTTP/1 `header_read_timeout`, [`Limits::header_read`]. In hyper 1.12
//!   (`proto/h1/conn.rs`, `poll_read_head` and `State::idle`) the timer starts when hyper starts
//!   reading a head: at the start of the connection, and again as soon as a keep-alive connection
//!   goes idle after a response. So the same bound is also the **keep-alive idle timeout**, and a
//!   client that trickles bytes is cut off whatever it sends. It needs a timer, which axum-server
//!   installs (`TokioTimer`). axum-server's `first_request_timeout` bounds the time from the end of
//!   the handshake to the first request as well, so nothing between the two is left untimed. The
//!   worst case for a client that never completes a request is `tls_handshake + header_read`.
//! - **HTTP/1.1 only** (ALPN offers only `http/1.1`, and hyper serves only HTTP/1): hyper's
//!   `header_read_timeout` is an HTTP/1 setting; an HTTP/2 connection has no such bound (its
//!   keep-alive pings only check that the peer answers, and a client may hold streams open with
//!   partial headers). Neither the dashboard nor a pixel needs HTTP/2.
//! - **Open connections**: at most [`Limits::max_connections`]. The make-service
//!   ([`ConnectionCap`]) takes a semaphore permit in `poll_ready`, which axum-server awaits in its
//!   accept loop before it accepts the next connection, and the per-connection service holds the
//!   permit until the connection ends. So at the cap the server stops calling accept() and new
//!   connections wait in the kernel's listen backlog: memory does not grow with them.
//! - **Request head size**: hyper's `max_buf_size`, [`Limits::max_head_bytes`] (the read buffer,
//!   where a head must fit; a longer head is answered 431).
//! - **Request body**: [`Limits::max_body_bytes`]; a `Content-Length` over it is answered 413 before
//!   any handler runs, and axum's extractors stop reading a chunked body at the same bound
//!   (`DefaultBodyLimit`), also with 413.
//! - **Whole request**: [`Limits::request`], so a body sent slowly (within the size bound) cannot
//!   hold a connection either; answered 408.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum_server::Handle;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};
use tower::Service;

/// What one client may hold. [`Limits::default`] is what the binary serves with.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The TLS handshake, from the accept.
    pub tls_handshake: Duration,
    /// A request head, from the end of the handshake or of the previous response (so also the
    /// keep-alive idle time).
    pub header_read: Duration,
    /// Connections open at once (in the handshake or after it); beyond it new ones wait in the
    /// kernel's backlog.
    pub max_connections: usize,
    /// The largest request head, in bytes (hyper's minimum is 8192).
    pub max_head_bytes: usize,
    /// The largest request body, in bytes.
    pub max_body_bytes: usize,
    /// A whole request, from its head to the handler's answer.
    pub request: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            tls_handshake: Duration::from_secs(5),
            header_read: Duration::from_secs(10),
            max_connections: 512,
            max_head_bytes: 16 * 1024,
            max_body_bytes: 64 * 1024,
            request: Duration::from_secs(30),
        }
    }
}

/// The TLS settings of the listener from a PEM certificate chain and key: ALPN offers HTTP/1.1 only
/// (see the module documentation).
pub async fn tls_config(cert_pem: Vec<u8>, key_pem: Vec<u8>) -> io::Result<RustlsConfig> {
    let config = RustlsConfig::from_pem(cert_pem, key_pem).await?;
    let mut server = (*config.get_inner()).clone();
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(RustlsConfig::from_config(Arc::new(server)))
}

/// The HTTPS server of the dashboard and the pixel, on a listener that is already bound (tests bind
/// 127.0.0.1:0 and ask [`WebServer::local_addr`]).
pub struct WebServer {
    listener: std::net::TcpListener,
    tls: RustlsConfig,
    limits: Limits,
    permits: Arc<Semaphore>,
    handle: Handle<SocketAddr>,
}

impl WebServer {
    pub fn new(listener: std::net::TcpListener, tls: RustlsConfig, limits: Limits) -> Self {
        Self {
            listener,
            tls,
            permits: Arc::new(Semaphore::new(limits.max_connections)),
            limits,
            handle: Handle::new(),
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Stops the server: `graceful_shutdown(Some(timeout))` lets requests in flight finish.
    pub fn handle(&self) -> Handle<SocketAddr> {
        self.handle.clone()
    }

    /// Counts the open connections.
    pub fn connections(&self) -> Connections {
        Connections {
            permits: Arc::clone(&self.permits),
            max: self.limits.max_connections,
        }
    }

    /// Serves `app` until the handle stops the server.
    pub async fn serve(self, app: Router) -> io::Result<()> {
        let limits = self.limits;
        let app = app
            .layer(DefaultBodyLimit::max(limits.max_body_bytes))
            .layer(middleware::from_fn_with_state(limits, bound_request));
        let acceptor = RustlsAcceptor::new(self.tls).handshake_timeout(limits.tls_handshake);
        let mut server = axum_server::from_tcp(self.listener)?
            .acceptor(acceptor)
            .handle(self.handle)
            .http1_only()
            .first_request_timeout(limits.header_read);
        server
            .http_builder()
            .http1()
            .header_read_timeout(limits.header_read)
            .max_buf_size(limits.max_head_bytes.max(8192))
            .keep_alive(true);
        server
            .serve(ConnectionCap::new(
                app.into_make_service_with_connect_info::<SocketAddr>(),
                self.permits,
            ))
            .await
    }
}

/// How many connections a [`WebServer`] holds open now.
#[derive(Clone)]
pub struct Connections {
    permits: Arc<Semaphore>,
    max: usize,
}

impl Connections {
    pub fn open(&self) -> usize {
        self.max - self.permits.available_permits()
    }
}

/// 413 for a declared body over the bound; 408 for a request with a body that takes longer than
/// the bound.
async fn bound_request(State(limits): State<Limits>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            [(header::CONNECTION, "close")],
            "request body too large\n",
        )
            .into_response();
    }
    // A request without a body cannot be slow in sending it: no timer for it (the pixel's
    // requests; a timer per request is measurable there).
    let has_body =
        declared.is_some_and(|n| n > 0) || req.headers().contains_key(header::TRANSFER_ENCODING);
    if !has_body {
        return next.run(req).await;
    }
    match tokio::time::timeout(limits.request, next.run(req)).await {
        Ok(response) => response,
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            [(header::CONNECTION, "close")],
            "request timed out\n",
        )
            .into_response(),
    }
}

type Acquiring = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// A make-service that is ready only while fewer than the cap of connections are open; each
/// connection's service holds a permit until the connection (and every request on it) is gone.
pub struct ConnectionCap<M> {
    inner: M,
    permits: Arc<Semaphore>,
    acquiring: Option<Acquiring>,
    permit: Option<OwnedSemaphorePermit>,
}

impl<M> ConnectionCap<M> {
    pub fn new(inner: M, permits: Arc<Semaphore>) -> Self {
        Self {
            inner,
            permits,
            acquiring: None,
            permit: None,
        }
    }
}

impl<M, T> Service<T> for ConnectionCap<M>
where
    M: Service<T>,
    M::Future: Send + 'static,
{
    type Response = PermitHolding<M::Response>;
    type Error = M::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, M::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.permit.is_none() {
            let acquiring = self
                .acquiring
                .get_or_insert_with(|| Box::pin(Arc::clone(&self.permits).acquire_owned()));
            let permit = ready!(acquiring.as_mut().poll(cx))
                .expect("the connection semaphore is never closed");
            self.acquiring = None;
            self.permit = Some(permit);
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, target: T) -> Self::Future {
        let permit = Arc::new(
            self.permit
                .take()
                .expect("ConnectionCap::call without poll_ready"),
        );
        let making = self.inner.call(target);
        Box::pin(async move {
            Ok(PermitHolding {
                inner: making.await?,
                _permit: permit,
            })
        })
    }
}

/// A connection's service, holding its place under the cap.
#[derive(Clone)]
pub struct PermitHolding<S> {
    inner: S,
    _permit: Arc<OwnedSemaphorePermit>,
}

impl<S, R> Service<R> for PermitHolding<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        self.inner.call(req)
    }
}
