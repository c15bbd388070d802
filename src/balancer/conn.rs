//! Upstream connections: connecting with a deadline, and the keep-alive pooling of idle
//! connections (one idle list per upstream and worker runtime, so a connection is reused on the
//! runtime that drives it). Knows an upstream only by its address and its idle lists, which the
//! upstream's state (`pool.rs`) holds.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::worker;

/// Body of requests sent upstream: the client's streamed body, or nothing (retries, health checks).
pub type UpBody = Either<Incoming, Empty<Bytes>>;
/// Handle to send requests on one upstream connection.
pub type Sender = SendRequest<UpBody>;

/// Idle pooled connections of one upstream: one list per worker runtime, each behind its own
/// cache-line-aligned lock so workers never contend or share a line.
pub struct IdleConns<T> {
    per_worker: Vec<Slot<T>>,
}

#[repr(align(64))]
struct Slot<T>(Mutex<Vec<(T, Instant)>>);

/// Most idle connections kept per upstream and worker.
const MAX_IDLE: usize = 512;

impl<T> IdleConns<T> {
    pub fn new(workers: usize) -> IdleConns<T> {
        IdleConns {
            per_worker: (0..workers.max(1))
                .map(|_| Slot(Mutex::new(Vec::new())))
                .collect(),
        }
    }
    fn slot(&self) -> &Mutex<Vec<(T, Instant)>> {
        &self.per_worker[worker::current() % self.per_worker.len()].0
    }
    /// Drops every idle connection (the upstream failed).
    pub fn clear(&self) {
        for s in &self.per_worker {
            if let Ok(mut l) = s.0.lock() {
                l.clear();
            }
        }
    }
    fn pop(&self) -> Option<(T, Instant)> {
        self.slot().lock().ok()?.pop()
    }
    fn push(&self, s: T, now: Instant) {
        if let Ok(mut list) = self.slot().lock() {
            if list.len() < MAX_IDLE {
                list.push((s, now));
            }
        }
    }
}

/// Why no connection could be had.
#[derive(Debug)]
pub enum ConnectError {
    Timeout,
    Io(std::io::Error),
    Handshake(hyper::Error),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Timeout => write!(f, "connect timed out"),
            ConnectError::Io(e) => write!(f, "connect failed: {e}"),
            ConnectError::Handshake(e) => write!(f, "handshake failed: {e}"),
        }
    }
}

/// Opens a TCP connection with a deadline, Nagle off.
pub async fn connect_tcp(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ConnectError> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => Err(ConnectError::Timeout),
        Ok(Err(e)) => Err(ConnectError::Io(e)),
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
    }
}

/// Opens a new HTTP/1.1 connection to `addr`; its driver task runs on the current runtime.
pub async fn connect_http(addr: SocketAddr, timeout: Duration) -> Result<Sender, ConnectError> {
    let stream = connect_tcp(addr, timeout).await?;
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(ConnectError::Handshake)?;
    tokio::spawn(async move {
        // Errors here surface to the request that used the connection.
        let _ = conn.with_upgrades().await;
    });
    Ok(sender)
}

/// A connection ready for one request; `reused` tells whether it came from the pool.
pub struct Checkout {
    pub sender: Sender,
    pub reused: bool,
}

/// Takes an idle pooled connection from `idle`, or opens one to `addr`.
pub async fn checkout(
    idle: &IdleConns<Sender>,
    addr: SocketAddr,
    connect_timeout: Duration,
    max_idle: Duration,
) -> Result<Checkout, ConnectError> {
    loop {
        let popped = idle.pop();
        let Some((mut sender, since)) = popped else {
            break;
        };
        if sender.is_closed() || since.elapsed() >= max_idle {
            continue;
        }
        if sender.is_ready() {
            return Ok(Checkout {
                sender,
                reused: true,
            });
        }
        // A connection is checked in as soon as its response body ended; its driver may not have
        // marked it ready yet. Nobody else uses it, so waiting is short.
        if let Ok(Ok(())) = tokio::time::timeout(Duration::from_millis(200), sender.ready()).await {
            return Ok(Checkout {
                sender,
                reused: true,
            });
        }
    }
    let sender = connect_http(addr, connect_timeout).await?;
    Ok(Checkout {
        sender,
        reused: false,
    })
}

/// Returns a connection whose exchange is complete to the idle pool.
pub fn checkin(idle: &IdleConns<Sender>, sender: Sender) {
    if sender.is_closed() {
        return;
    }
    idle.push(sender, Instant::now());
}

/// Takes an idle raw connection from `idle` (the HTTP/1 path's pool), or opens one to `addr`; the
/// flag says whether it was reused.
pub async fn checkout_stream(
    idle: &IdleConns<TcpStream>,
    addr: SocketAddr,
    connect_timeout: Duration,
    max_idle: Duration,
    now: Instant,
) -> Result<(TcpStream, bool), ConnectError> {
    while let Some((stream, since)) = idle.pop() {
        if now.saturating_duration_since(since) >= max_idle {
            continue;
        }
        // An idle connection has nothing to read; data or end-of-stream means the upstream closed
        // it (or misbehaved). tokio answers WouldBlock without a system call while the socket has
        // not been reported readable, so the healthy case costs nothing.
        let mut probe = [0u8; 1];
        match stream.try_read(&mut probe) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok((stream, true)),
            _ => continue,
        }
    }
    let stream = connect_tcp(addr, connect_timeout).await?;
    Ok((stream, false))
}

/// Returns a raw connection whose exchange is complete to the idle pool; `since` is when it was
/// last known busy.
pub fn checkin_stream(idle: &IdleConns<TcpStream>, stream: TcpStream, since: Instant) {
    idle.push(stream, since);
}
