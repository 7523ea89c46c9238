//! The connection bounds of the real HTTPS server ([`mailserver_web::serve`]), tried as an attacker
//! would: the server runs in process on 127.0.0.1:0 with a self-signed certificate, and the clients
//! are plain TCP sockets and rustls, timed from outside. The first tests use the limits the binary
//! ships with ([`Limits::default`]), so they take some seconds each (they run in parallel).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::{get, post};
use mailserver_web::serve::{Connections, Limits, WebServer, tls_config};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

struct Server {
    addr: SocketAddr,
    cert_pem: String,
    connections: Connections,
    handle: axum_server::Handle<SocketAddr>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

async fn start(limits: Limits) -> Server {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let host = mailserver::names::Hostname::parse("mx.example.test").unwrap();
    let cert = mailserver::tls::self_signed(&host).unwrap();
    let tls = tls_config(cert.cert_pem.clone().into(), cert.key_pem.into())
        .await
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let server = WebServer::new(listener, tls, limits);
    let addr = server.local_addr().unwrap();
    let handle = server.handle();
    let connections = server.connections();
    let app = Router::new().route("/", get(|| async { "ok\n" })).route(
        "/form",
        post(|body: String| async move { body.len().to_string() }),
    );
    tokio::spawn(server.serve(app));
    Server {
        addr,
        cert_pem: cert.cert_pem,
        connections,
        handle,
    }
}

type Tls = StreamOwned<ClientConnection, TcpStream>;

fn client_config(cert_pem: &str) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap())
        .unwrap();
    Arc::new(
        ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A TLS connection with the handshake done.
fn connect(addr: SocketAddr, cert_pem: &str) -> Tls {
    let conn =
        ClientConnection::new(client_config(cert_pem), "localhost".try_into().unwrap()).unwrap();
    let sock = TcpStream::connect(addr).unwrap();
    let mut tls = StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    tls
}

/// Reads until the server closes; true if it did within `within`.
fn closed_within<R: Read>(r: &mut R, set_timeout: impl Fn(Duration), within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        set_timeout(left);
        match r.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// One request on a fresh connection; the status code and the body.
fn request(addr: SocketAddr, cert_pem: &str, head: &str, body: &[u8]) -> (u16, String) {
    let mut tls = connect(addr, cert_pem);
    tls.sock
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    tls.write_all(head.as_bytes()).unwrap();
    let _ = tls.write_all(body);
    let _ = tls.flush();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
        if out.windows(4).any(|w| w == b"\r\n\r\n") && head.contains("Connection: close") {
            continue;
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// A client that completes the handshake and then sends one byte of its request head every 5 s is
/// cut off: within the head timeout (10 s), not after 60 s or never.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_trickling_its_request_head_is_dropped() {
    let server = start(Limits::default()).await;
    let (addr, pem) = (server.addr, server.cert_pem.clone());
    let (elapsed, sent) = blocking(move || {
        let mut tls = connect(addr, &pem);
        let started = Instant::now();
        let head =
            b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        let mut sent = 0;
        for b in head {
            if tls.write_all(&[*b]).and_then(|()| tls.flush()).is_err() {
                break;
            }
            sent += 1;
            let sock = tls.sock.try_clone().unwrap();
            if closed_within(
                &mut tls,
                |d| sock.set_read_timeout(Some(d)).unwrap(),
                Duration::from_secs(5),
            ) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "still open after 60 s"
            );
        }
        (started.elapsed(), sent)
    })
    .await;
    eprintln!("trickling head: dropped after {elapsed:?}, {sent} bytes sent");
    assert!(
        elapsed < Duration::from_secs(16),
        "dropped after {elapsed:?} ({sent} bytes sent)"
    );
    assert!(sent >= 2, "{sent} bytes sent");
}

/// A client that connects and sends nothing, and one that sends its TLS hello one byte a second,
/// are cut off by the handshake timeout (5 s).
#[tokio::test(flavor = "multi_thread")]
async fn clients_that_stall_the_tls_handshake_are_dropped() {
    let server = start(Limits::default()).await;
    let addr = server.addr;
    let pem = server.cert_pem.clone();
    let silent = blocking(move || {
        let mut sock = TcpStream::connect(addr).unwrap();
        let started = Instant::now();
        let s2 = sock.try_clone().unwrap();
        let closed = closed_within(
            &mut sock,
            |d| s2.set_read_timeout(Some(d)).unwrap(),
            Duration::from_secs(30),
        );
        (closed, started.elapsed())
    });
    let trickling = blocking(move || {
        let mut conn =
            ClientConnection::new(client_config(&pem), "localhost".try_into().unwrap()).unwrap();
        let mut hello = Vec::new();
        conn.write_tls(&mut hello).unwrap();
        let mut sock = TcpStream::connect(addr).unwrap();
        let started = Instant::now();
        for b in &hello {
            if sock.write_all(&[*b]).is_err() {
                break;
            }
            let s2 = sock.try_clone().unwrap();
            if closed_within(
                &mut sock,
                |d| s2.set_read_timeout(Some(d)).unwrap(),
                Duration::from_secs(1),
            ) {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                break;
            }
        }
        (hello.len(), started.elapsed())
    });
    let (silent, trickling) = tokio::join!(silent, trickling);
    eprintln!("silent client: {silent:?}; trickling hello: {trickling:?}");
    assert!(
        silent.0 && silent.1 < Duration::from_secs(7),
        "silent client: {silent:?}"
    );
    assert!(
        trickling.1 < Duration::from_secs(7),
        "trickling hello of {} bytes: {:?}",
        trickling.0,
        trickling.1
    );
}

/// After a response, an idle keep-alive connection is closed within the head timeout; requests on
/// it work until then.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_keep_alive_connection_is_closed() {
    let server = start(Limits::default()).await;
    let (addr, pem) = (server.addr, server.cert_pem.clone());
    let (first, elapsed, closed) = blocking(move || {
        let mut tls = connect(addr, &pem);
        tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 1024];
        tls.sock
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let n = tls.read(&mut buf).unwrap();
        let first = String::from_utf8_lossy(&buf[..n]).into_owned();
        let started = Instant::now();
        let sock = tls.sock.try_clone().unwrap();
        let closed = closed_within(
            &mut tls,
            |d| sock.set_read_timeout(Some(d)).unwrap(),
            Duration::from_secs(30),
        );
        (first, started.elapsed(), closed)
    })
    .await;
    eprintln!("idle keep-alive connection closed: {closed} after {elapsed:?}");
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(
        closed && elapsed < Duration::from_secs(12),
        "closed {closed} after {elapsed:?}"
    );
}

/// Bodies: a declared length over 64 KiB is refused with 413 before the handler, a chunked body
/// over it too (when the handler reads it); a small one is served.
#[tokio::test(flavor = "multi_thread")]
async fn request_bodies_over_the_limit_get_413() {
    let server = start(Limits::default()).await;
    let (addr, pem) = (server.addr, server.cert_pem.clone());
    blocking(move || {
        let (status, _) = request(
            addr,
            &pem,
            "POST /form HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10000000\r\nConnection: close\r\n\r\n",
            b"",
        );
        assert_eq!(status, 413);
        let big = vec![b'a'; 70 * 1024];
        let mut chunked = format!("{:x}\r\n", big.len()).into_bytes();
        chunked.extend_from_slice(&big);
        chunked.extend_from_slice(b"\r\n0\r\n\r\n");
        let (status, _) = request(
            addr,
            &pem,
            "POST /form HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            &chunked,
        );
        assert_eq!(status, 413);
        let (status, text) = request(
            addr,
            &pem,
            "POST /form HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
            b"hello",
        );
        assert_eq!(status, 200, "{text}");
        assert!(text.ends_with("\r\n5"), "{text}");
    })
    .await;
}

/// Many idle connections: the server holds at most its cap open (the rest wait in the kernel's
/// backlog, costing it nothing), drops the idle ones after the timeouts, and answers a normal
/// request meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn connections_beyond_the_cap_wait_and_idle_ones_are_dropped() {
    let cap = 8;
    let server = start(Limits {
        tls_handshake: Duration::from_secs(2),
        header_read: Duration::from_secs(2),
        max_connections: cap,
        ..Limits::default()
    })
    .await;
    let (addr, pem) = (server.addr, server.cert_pem.clone());
    let idle: Vec<TcpStream> = (0..40).map(|_| TcpStream::connect(addr).unwrap()).collect();
    // Watch the count while the idle ones sit there and a normal client asks for a page.
    let connections = server.connections.clone();
    let watcher = tokio::spawn(async move {
        let mut most = 0;
        for _ in 0..100 {
            most = most.max(connections.open());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        most
    });
    let started = Instant::now();
    let (status, text) = blocking(move || {
        request(
            addr,
            &pem,
            "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            b"",
        )
    })
    .await;
    let waited = started.elapsed();
    assert_eq!(status, 200, "{text}");
    // 40 idle ones ahead of it in the backlog, taken `cap` at a time, each batch dropped after the
    // 2 s handshake timeout: the request waits for the five batches ahead of it, some 10 s.
    assert!(waited < Duration::from_secs(20), "{waited:?}");
    let most = watcher.await.unwrap();
    eprintln!("cap {cap}: at most {most} open; the normal request waited {waited:?}");
    assert!(most <= cap, "{most} connections open at once (cap {cap})");
    assert!(
        most >= cap / 2,
        "the idle connections were never accepted ({most})"
    );
    drop(idle);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(server.connections.open(), 0);
}
