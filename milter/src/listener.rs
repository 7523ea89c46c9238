//! Where the milter listens: a unix socket (the default, fastest) or TCP.
//!
//! On loopback TCP, Nagle's algorithm plus delayed ACKs cost about 88 ms per message (measured:
//! ~110 msg/s against ~520 without): our replies wait for Postfix's ACK, and Postfix's back-to-back
//! writes wait for ours. So TCP connections get `TCP_NODELAY` on accept and `TCP_QUICKACK` re-armed
//! after every read (the kernel clears it again on its own).

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, BufStream, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// A listening address as written in Postfix's `smtpd_milters`: `unix:/path` (or a bare absolute
/// path) or `inet:HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Unix(PathBuf),
    Inet(SocketAddr),
}

impl std::str::FromStr for ListenAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:").or(s.starts_with('/').then_some(s)) {
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = s.strip_prefix("inet:") {
            return addr
                .parse()
                .map(Self::Inet)
                .map_err(|_| format!("expected inet:HOST:PORT with an IP address, got {s:?}"));
        }
        Err(format!("expected unix:/path or inet:HOST:PORT, got {s:?}"))
    }
}

/// A TCP listener whose connections have `TCP_NODELAY` and `TCP_QUICKACK` set.
/// Wraps each accepted connection in a [`BufStream`]. indymilter reads every milter command as
/// three reads (length, kind, payload) and writes every reply as three writes and a flush; on a
/// bare socket each of those is a system call. Buffered, a reply is one `write` and commands that
/// Postfix sends back to back (headers, with NOREPLY) arrive in one `read`. Payloads larger than
/// the buffer (body chunks) still go straight to and from the socket.
pub struct Buffered<L>(pub L);

impl<L: indymilter::Listener> indymilter::Listener for Buffered<L> {
    type Io = BufStream<L::Io>;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Self::Io>> {
        self.0.poll_accept(cx).map_ok(BufStream::new)
    }
}

pub struct LowLatencyTcpListener(pub TcpListener);

/// A TCP connection that re-arms `TCP_QUICKACK` after every read.
pub struct QuickAckStream(TcpStream);

fn quickack(stream: &TcpStream) {
    // Best effort: a failure only costs latency.
    let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
}

impl indymilter::Listener for LowLatencyTcpListener {
    type Io = QuickAckStream;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<QuickAckStream>> {
        self.0.poll_accept(cx).map_ok(|(stream, _)| {
            let _ = stream.set_nodelay(true);
            quickack(&stream);
            QuickAckStream(stream)
        })
    }
}

impl AsyncRead for QuickAckStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.0).poll_read(cx, buf);
        if result.is_ready() {
            quickack(&self.0);
        }
        result
    }
}

impl AsyncWrite for QuickAckStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses() {
        assert_eq!(
            "unix:/run/m.sock".parse(),
            Ok(ListenAddr::Unix("/run/m.sock".into()))
        );
        assert_eq!(
            "/run/m.sock".parse(),
            Ok(ListenAddr::Unix("/run/m.sock".into()))
        );
        assert_eq!(
            "inet:127.0.0.1:8892".parse(),
            Ok(ListenAddr::Inet("127.0.0.1:8892".parse().unwrap()))
        );
        assert!("inet:localhost:1".parse::<ListenAddr>().is_err());
        assert!("tcp:1".parse::<ListenAddr>().is_err());
    }
}
