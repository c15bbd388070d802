//! Client side of HTTP mode: the accept loop, TLS handshakes, serving HTTP/1.1 and HTTP/2 (h2c
//! prior knowledge, or ALPN over TLS) on each connection, the header-read timeout's 408, and the
//! graceful close of every connection when the balancer shuts down.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use super::http::{DrainToken, Proxy, Shared};

/// Connection protocol settings derived from the spec.
pub fn builder(shared: &Shared) -> auto::Builder<TokioExecutor> {
    let s = &shared.settings;
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(s.header_read_timeout)
        .max_buf_size(s.max_header_bytes)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(s.max_header_bytes as u32)
        .keep_alive_interval(Some(s.idle_timeout / 2))
        .keep_alive_timeout(Duration::from_secs(20));
    b
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
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.changed() => break,
        };
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
        let _ = stream.set_nodelay(true);
        let proxy = Proxy {
            shared: shared.clone(),
            client: peer,
            served: Arc::new(AtomicU32::new(0)),
            drain: drain.clone(),
        };
        tokio::spawn(serve_conn(
            stream,
            proxy,
            tls.clone(),
            builder.clone(),
            shutdown.clone(),
            permit,
        ));
    }
}

/// Drives one connection to its end; on shutdown, asks it to close after the response in flight.
macro_rules! drive {
    ($conn:ident, $shutdown:expr) => {{
        let conn = &mut $conn;
        if *$shutdown.borrow() {
            conn.as_mut().graceful_shutdown();
            conn.as_mut().await
        } else {
            tokio::select! {
                r = conn.as_mut() => r,
                _ = $shutdown.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.as_mut().await
                }
            }
        }
    }};
}

async fn serve_conn(
    stream: TcpStream,
    proxy: Proxy,
    tls: Option<tokio_rustls::TlsAcceptor>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    mut shutdown: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let header_timeout = proxy.shared.settings.header_read_timeout;
    let served = proxy.served.clone();
    if let Some(acceptor) = tls {
        let Ok(Ok(tls_stream)) =
            tokio::time::timeout(header_timeout, acceptor.accept(stream)).await
        else {
            return;
        };
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls_stream), proxy);
        let mut conn = std::pin::pin!(conn);
        let _ = drive!(conn, shutdown);
        return;
    }
    let fd = stream.as_raw_fd();
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), proxy);
    let mut conn = std::pin::pin!(conn);
    let res = drive!(conn, shutdown);
    if let Err(e) = res {
        let timed_out = e
            .downcast_ref::<hyper::Error>()
            .is_some_and(|e| e.is_timeout());
        if timed_out && served.load(Relaxed) == 0 {
            // hyper closes a connection whose request head is late without answering; tell the client
            // why (RFC 9110 408). The socket is still open: `conn` owns it until the end of this scope.
            const RESP: &[u8] =
                b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
            // SAFETY: `fd` belongs to the stream owned by `conn`, which is alive here; a non-blocking
            // send of a few bytes on it cannot affect memory safety.
            unsafe {
                libc::send(
                    fd,
                    RESP.as_ptr().cast(),
                    RESP.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                );
            }
        }
    }
    // The connection (and its socket) is dropped here, after the 408 went out.
}
