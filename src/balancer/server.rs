//! Client side of HTTP mode: the accept loop, TLS handshakes, and the choice per connection between
//! the HTTP/1.x path (`h1.rs`) and hyper's HTTP/2 server (h2c prior knowledge, or ALPN h2 over
//! TLS), with the graceful close of HTTP/2 connections when the balancer shuts down.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use super::h1::{self, DRAIN_GRACE};
use super::h2::Proxy;
use super::shared::{Admission, DrainToken, Shared};

/// Most HTTP/2 streams one client connection may have open at once.
pub const MAX_CONCURRENT_STREAMS: u32 = 100;

/// HTTP/2 settings derived from the spec.
pub fn builder(shared: &Shared) -> auto::Builder<TokioExecutor> {
    let s = &shared.settings;
    let mut b = auto::Builder::new(TokioExecutor::new()).http2_only();
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(s.max_header_bytes as u32)
        // Streams in flight per client connection (NGINX's http2_max_concurrent_streams is 128).
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .keep_alive_interval(Some(s.idle_timeout / 2))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

/// The answer to a client over `max_conns_per_ip` (plain HTTP; TLS clients are just closed).
const PER_IP_REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
content-length: 46\r\nconnection: close\r\n\r\n503 Service Unavailable: too many connections\n";

/// Answers a client over `max_conns_per_ip` with a 503 and closes, reading what it sent for a
/// moment first (closing with unread bytes would reset the connection before the answer is read).
async fn refuse(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = stream.write_all(PER_IP_REFUSAL).await;
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// Serves clients until `shutdown` turns true; every connection holds a clone of `drain`.
pub async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limit: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
    drain: DrainToken,
) {
    let builder = Arc::new(builder(&shared));
    loop {
        if *shutdown.borrow() {
            break;
        }
        // Accept first, then wait for a slot: with one listener per worker, waiting for a slot
        // before accepting would let an idle worker hold the last slot while another's queue waits.
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of fds or a connection reset while queued: back off briefly, keep serving.
                eprintln!("balancer: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let ip_slot = match &shared.per_ip {
            None => None,
            Some(t) => match t.enter(peer.ip()) {
                Some(slot) => Some(slot),
                None => {
                    // Over max_conns_per_ip: a 503 where the protocol allows, as NGINX's limit_conn.
                    if tls.is_none() {
                        tokio::spawn(refuse(stream));
                    }
                    continue;
                }
            },
        };
        let Some(permit) = super::shared::connection_slot(&limit).await else {
            break;
        };
        let _ = stream.set_nodelay(true);
        let conn = h1::Conn {
            shared: shared.clone(),
            peer,
            shutdown: shutdown.clone(),
            drain: drain.clone(),
        };
        let admission = Admission {
            _permit: permit,
            _ip: ip_slot,
        };
        tokio::spawn(serve_conn(
            stream,
            conn,
            tls.clone(),
            builder.clone(),
            admission,
        ));
    }
}

/// Drives one connection to its end; on shutdown, lets it finish its next response (sent with
/// `Connection: close`), and closes it gracefully after DRAIN_GRACE at the latest.
macro_rules! drive {
    ($conn:ident, $shutdown:expr) => {{
        let conn = &mut $conn;
        let draining = *$shutdown.borrow();
        let ended = if draining {
            None
        } else {
            tokio::select! {
                r = conn.as_mut() => Some(r),
                _ = $shutdown.changed() => None,
            }
        };
        match ended {
            Some(r) => r,
            None => {
                tokio::select! {
                    r = conn.as_mut() => r,
                    _ = tokio::time::sleep(DRAIN_GRACE) => {
                        conn.as_mut().graceful_shutdown();
                        conn.as_mut().await
                    }
                }
            }
        }
    }};
}

async fn serve_conn(
    stream: TcpStream,
    conn: h1::Conn,
    tls: Option<tokio_rustls::TlsAcceptor>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    _admission: Admission,
) {
    // HTTP/1.x is served by the h1 path; HTTP/2 (ALPN h2, or a connection that opens with the
    // HTTP/2 preface: h2c prior knowledge) goes to hyper, with the bytes already read.
    if let Some(acceptor) = tls {
        let header_timeout = conn.shared.settings.header_read_timeout;
        let Ok(Ok(mut tls_stream)) =
            tokio::time::timeout(header_timeout, acceptor.accept(stream)).await
        else {
            return;
        };
        if tls_stream.get_ref().1.alpn_protocol() == Some(b"h2") {
            serve_h2(tls_stream, BytesMut::new(), conn, builder).await;
        } else if let h1::Outcome::Http2(read, conn) = h1::serve(&mut tls_stream, conn).await {
            serve_h2(tls_stream, read, conn, builder).await;
        }
        return;
    }
    let mut stream = stream;
    if let h1::Outcome::Http2(read, conn) = h1::serve(&mut stream, conn).await {
        serve_h2(stream, read, conn, builder).await;
    }
}

/// Serves an HTTP/2 connection with hyper; `read` holds bytes already taken from `stream`.
async fn serve_h2<S>(
    stream: S,
    read: BytesMut,
    conn: h1::Conn,
    builder: Arc<auto::Builder<TokioExecutor>>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let h1::Conn {
        shared,
        peer,
        mut shutdown,
        drain,
    } = conn;
    // The drain waits for this connection while `_drain` lives: to its end.
    let _drain = drain;
    let proxy = Proxy {
        shared,
        client: peer,
        client_ip: http::HeaderValue::from_str(&peer.ip().to_string())
            .unwrap_or(http::HeaderValue::from_static("unknown")),
        queue_share: Arc::new(Semaphore::new(super::h2::QUEUE_SHARE)),
    };
    let stream = Prefixed {
        read,
        inner: stream,
    };
    let served = builder.serve_connection(TokioIo::new(stream), proxy);
    let mut served = std::pin::pin!(served);
    let _ = drive!(served, shutdown);
}

/// A stream whose first bytes were already read: they are returned again before the rest.
struct Prefixed<S> {
    read: BytesMut,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read[..n]);
            self.read.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
