//! Upstream connections: connecting with a deadline, and the keep-alive pooling of idle
//! connections (one idle list per upstream and worker runtime, so a connection is reused on the
//! runtime that drives it). Knows an upstream only by its address and its idle lists, which the
//! upstream's state (`pool.rs`) holds. Every open upstream connection carries a [`ConnPermit`]
//! (the caps of `pool.rs`), given back when the connection closes.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

pub use super::reqbody::UpBody;
use super::worker;
/// Handle to send requests on one upstream connection.
pub type Sender = SendRequest<UpBody>;

/// Leave to keep one upstream connection open, under the upstream's cap (if it has one) and the
/// balancer-wide one (NGINX's `max_conns`); dropped with the connection, which gives both back.
pub struct ConnPermit {
    pub(super) _upstream: Option<OwnedSemaphorePermit>,
    pub(super) _total: OwnedSemaphorePermit,
}

/// A raw upstream connection of the HTTP/1 path and its permit.
pub type Stream = (TcpStream, ConnPermit);

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
    /// Takes the newest idle connection of any worker (a request waiting at a cap takes what
    /// another worker handed over).
    fn pop_any(&self) -> Option<(T, Instant)> {
        self.pop().or_else(|| {
            self.per_worker
                .iter()
                .find_map(|s| s.0.lock().ok().and_then(|mut l| l.pop()))
        })
    }
    /// Closes the oldest idle connection of any worker (to give its permit to a request that
    /// waits); false when there was none.
    pub fn evict_one(&self) -> bool {
        for s in &self.per_worker {
            if let Ok(mut l) = s.0.lock() {
                if !l.is_empty() {
                    drop(l.remove(0));
                    return true;
                }
            }
        }
        false
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

/// Opens a new HTTP/1.1 connection to `addr`; its driver task runs on the current runtime and
/// holds `permit` until the connection ends (health checks hold none: they are not capped).
pub async fn connect_http(
    addr: SocketAddr,
    timeout: Duration,
    permit: Option<ConnPermit>,
) -> Result<Sender, ConnectError> {
    let stream = connect_tcp(addr, timeout).await?;
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(ConnectError::Handshake)?;
    tokio::spawn(async move {
        let _permit = permit;
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

/// Takes an idle pooled connection from `idle`, if one is usable; with `any_worker`, from any
/// worker's list (a request waiting at a cap).
pub async fn checkout_idle(
    idle: &IdleConns<Sender>,
    max_idle: Duration,
    any_worker: bool,
) -> Option<Checkout> {
    loop {
        let popped = if any_worker {
            idle.pop_any()
        } else {
            idle.pop()
        };
        let (mut sender, since) = popped?;
        if sender.is_closed() || since.elapsed() >= max_idle {
            continue;
        }
        if sender.is_ready() {
            return Some(Checkout {
                sender,
                reused: true,
            });
        }
        // A connection is checked in as soon as its response body ended; its driver may not have
        // marked it ready yet. Nobody else uses it, so waiting is short.
        if let Ok(Ok(())) = tokio::time::timeout(Duration::from_millis(200), sender.ready()).await {
            return Some(Checkout {
                sender,
                reused: true,
            });
        }
    }
}

impl IdleConns<Sender> {
    /// An idle sender of any worker that can take a request now (not closed, ready).
    pub fn pop_any_ready(&self) -> Option<(Sender, Instant)> {
        while let Some((s, since)) = self.pop_any() {
            if !s.is_closed() && s.is_ready() {
                return Some((s, since));
            }
        }
        None
    }
}

/// Returns a connection whose exchange is complete to the idle pool; with `keep` false (requests
/// wait for a slot of the total cap, for other upstreams) it is closed instead, which gives its
/// permit back.
pub fn checkin(idle: &IdleConns<Sender>, sender: Sender, keep: bool) {
    if !keep || sender.is_closed() {
        return;
    }
    idle.push(sender, Instant::now());
}

/// Takes an idle raw connection from `idle` (the HTTP/1 path's pool), if one is usable; with
/// `any_worker`, from any worker's list (a request waiting at a cap).
pub fn checkout_stream(
    idle: &IdleConns<Stream>,
    max_idle: Duration,
    now: Instant,
    any_worker: bool,
) -> Option<Stream> {
    loop {
        let (stream, since) = if any_worker {
            idle.pop_any()
        } else {
            idle.pop()
        }?;
        if now.saturating_duration_since(since) >= max_idle {
            continue;
        }
        // An idle connection has nothing to read; data or end-of-stream means the upstream closed
        // it (or misbehaved). tokio answers WouldBlock without a system call while the socket has
        // not been reported readable, so the healthy case costs nothing.
        let mut probe = [0u8; 1];
        match stream.0.try_read(&mut probe) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Some(stream),
            _ => continue,
        }
    }
}

/// Returns a raw connection whose exchange is complete to the idle pool; `since` is when it was
/// last known busy. With `keep` false (a request waits for a connection slot) it is closed instead.
pub fn checkin_stream(idle: &IdleConns<Stream>, stream: Stream, since: Instant, keep: bool) {
    if keep {
        idle.push(stream, since);
    }
}
