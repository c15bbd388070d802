//! Serving the control API on the daemon's socket, and the web listener (`web/`) on TCP, with the
//! same bounds, so no client — buggy or hostile, even the owner's own — can take the daemon's file
//! descriptors or memory (each listener has its own table):
//! - **connections**: at most [`MAX_CONNECTIONS`] at once. A new one beyond that that has sent its
//!   request evicts the oldest connection that has not sent a byte yet (an idle one), so a CLI is
//!   served while thousands of idle connections are open; one that has sent nothing yet waits a
//!   moment on probation (200 ms, at most 64 of them, no task or buffer), then is closed; when
//!   every connection is busy, new ones are closed at once.
//! - **time**: a connection that sends nothing within [`HEADER_TIMEOUT`], or whose request header
//!   takes longer, is closed (hyper's header timeout; it also ends idle keep-alive connections).
//! - **size**: request bodies over [`MAX_BODY`] are refused (413).
//! - **memory**: a connection costs only its socket until its first byte arrives (hyper's buffers
//!   come after), and after a burst of connections the allocator gives freed memory back to the
//!   system (glibc `malloc_trim`).

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::service::{service_fn, Service};
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::future::Future;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{oneshot, watch};

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// Time a client has to send its request header (from its connection, or its previous request).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request body (a start request carries whole app specs).
pub const MAX_BODY: usize = 16 << 20;
/// With the table full, how long a new connection may take to send its first bytes, how often
/// that is checked, and how many may wait.
const PROBATION: Duration = Duration::from_millis(200);
const PROBATION_TICK: Duration = Duration::from_millis(10);
const PROBATION_MAX: usize = 64;
/// After this many connections at once, memory is given back once they are gone.
const TRIM_AFTER: usize = 64;

/// A listening socket served with these bounds.
pub trait Listen: Send + 'static {
    type Stream: Peekable;
    fn accept(&self) -> impl Future<Output = std::io::Result<Self::Stream>> + Send;
}

/// A connection whose first byte can be waited for and peeked without reading it.
pub trait Peekable: AsyncRead + AsyncWrite + AsRawFd + Send + Sync + Unpin + 'static {
    fn readable(&self) -> impl Future<Output = std::io::Result<()>> + Send;
    fn try_read_io<R>(&self, f: impl FnOnce() -> std::io::Result<R>) -> std::io::Result<R>;
}

macro_rules! listen_impl {
    ($listener:ty, $stream:ty) => {
        impl Listen for $listener {
            type Stream = $stream;
            async fn accept(&self) -> std::io::Result<$stream> {
                <$listener>::accept(self).await.map(|(s, _)| s)
            }
        }
        impl Peekable for $stream {
            async fn readable(&self) -> std::io::Result<()> {
                <$stream>::readable(self).await
            }
            fn try_read_io<R>(&self, f: impl FnOnce() -> std::io::Result<R>) -> std::io::Result<R> {
                self.try_io(tokio::io::Interest::READABLE, f)
            }
        }
    };
}
listen_impl!(UnixListener, UnixStream);
listen_impl!(TcpListener, TcpStream);

/// The connections being served: idle ones (no byte yet, evictable, oldest first) and busy ones.
#[derive(Default)]
struct Registry {
    next: u64,
    idle: BTreeMap<u64, oneshot::Sender<()>>,
    busy: HashSet<u64>,
    /// The most connections at once since memory was last given back.
    peak: usize,
}

impl Registry {
    fn live(&self) -> usize {
        self.idle.len() + self.busy.len()
    }

    /// Makes room for a new connection and registers it as idle; None when every connection is
    /// busy (the new one is to be closed).
    fn admit(&mut self, max: usize) -> Option<(u64, oneshot::Receiver<()>)> {
        if self.live() >= max {
            let (_, evict) = self.idle.pop_first()?;
            let _ = evict.send(());
        }
        self.next += 1;
        let (tx, rx) = oneshot::channel();
        self.idle.insert(self.next, tx);
        self.peak = self.peak.max(self.live());
        Some((self.next, rx))
    }

    /// Connection `id` sent its first byte: no longer evictable. False when it was evicted.
    fn busy(&mut self, id: u64) -> bool {
        let was_idle = self.idle.remove(&id).is_some();
        if was_idle {
            self.busy.insert(id);
        }
        was_idle
    }

    /// Connection `id` is gone. True when memory should be given back now (the last connection of
    /// a burst ended).
    fn leave(&mut self, id: u64) -> bool {
        self.idle.remove(&id);
        self.busy.remove(&id);
        if self.live() == 0 && self.peak >= TRIM_AFTER {
            self.peak = 0;
            return true;
        }
        false
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets open requests finish (the
/// caller bounds how long it waits for this future). Every request carries
/// `ConnectInfo(connect_info(&stream))` of its connection (the peer's credentials).
pub async fn serve<L: Listen, C>(
    listener: L,
    app: Router,
    connect_info: fn(&L::Stream) -> C,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    C: Clone + Send + Sync + 'static,
{
    let app = app.layer(axum::extract::DefaultBodyLimit::max(MAX_BODY));
    let registry = Arc::new(Mutex::new(Registry::default()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<()>(1);
    let admit = |stream: L::Stream| {
        let admitted = lock(&registry).admit(MAX_CONNECTIONS);
        let Some((id, evicted)) = admitted else {
            return; // every connection is busy: closed at once, the client may retry
        };
        let info = ConnectInfo(connect_info(&stream));
        tokio::spawn(connection(
            stream,
            app.clone(),
            info,
            Conn {
                id,
                registry: registry.clone(),
                _done: done_tx.clone(),
            },
            evicted,
            stop_rx.clone(),
        ));
    };
    // With the table full, a new connection that has not sent its request yet waits here, on
    // probation (no task, no buffers), and gets in once it has; a flood of idle ones is closed
    // at the cost of an accept, a peek and a close each, so a CLI behind it is reached quickly.
    let mut probation: VecDeque<(L::Stream, Instant)> = VecDeque::new();
    let mut checked = Instant::now();
    tokio::pin!(shutdown);
    let mut accept_failing = false;
    loop {
        let tick = async {
            if probation.is_empty() {
                std::future::pending::<()>().await
            } else {
                tokio::time::sleep(PROBATION_TICK).await
            }
        };
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            _ = tick => None,
            accepted = listener.accept() => match accepted {
                Ok(stream) => {
                    accept_failing = false;
                    Some(stream)
                }
                Err(e) => {
                    // EMFILE and friends: the pending connection stays queued; try again soon.
                    if !std::mem::replace(&mut accept_failing, true) {
                        eprintln!("cohort: accepting an API connection: {e}; retrying");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let now = Instant::now();
        if now.duration_since(checked) >= PROBATION_TICK {
            checked = now;
            for (waiting, since) in std::mem::take(&mut probation) {
                match peek(&waiting) {
                    Peek::Data => admit(waiting),
                    Peek::Nothing if now.duration_since(since) < PROBATION => {
                        probation.push_back((waiting, since))
                    }
                    _ => {}
                }
            }
        }
        let Some(stream) = stream else { continue };
        let full = lock(&registry).live() >= MAX_CONNECTIONS;
        if !full || peek(&stream) == Peek::Data {
            admit(stream);
        } else {
            if probation.len() >= PROBATION_MAX {
                probation.pop_front();
            }
            probation.push_back((stream, now));
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(done_tx);
    // Every connection holds a sender: this returns once all of them ended.
    let _ = done_rx.recv().await;
}

/// One connection's place in the registry, left on drop.
struct Conn {
    id: u64,
    registry: Arc<Mutex<Registry>>,
    _done: tokio::sync::mpsc::Sender<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        if lock(&self.registry).leave(self.id) {
            give_memory_back();
        }
    }
}

fn lock(registry: &Mutex<Registry>) -> std::sync::MutexGuard<'_, Registry> {
    registry.lock().unwrap_or_else(|e| e.into_inner())
}

/// Serves one connection: waits (cheaply) for its first byte, then hands it to hyper.
async fn connection<S: Peekable, C: Clone + Send + Sync + 'static>(
    stream: S,
    app: Router,
    info: ConnectInfo<C>,
    conn: Conn,
    evicted: oneshot::Receiver<()>,
    mut stop: watch::Receiver<bool>,
) {
    let first_byte = tokio::select! {
        r = tokio::time::timeout(HEADER_TIMEOUT, first_byte(&stream)) => matches!(r, Ok(Ok(()))),
        _ = evicted => false,
        _ = stop.wait_for(|s| *s) => false,
    };
    if !first_byte || !lock(&conn.registry).busy(conn.id) {
        return;
    }
    let service = TowerToHyperService::new(app);
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(
            TokioIo::new(stream),
            service_fn(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(info.clone());
                service.call(req)
            }),
        );
    tokio::pin!(served);
    tokio::select! {
        _ = served.as_mut() => return,
        _ = stop.wait_for(|s| *s) => {}
    }
    served.as_mut().graceful_shutdown();
    let _ = served.await;
}

/// What a connection has sent so far.
#[derive(PartialEq, Eq)]
enum Peek {
    Data,
    Nothing,
    Closed,
}

/// Looks at `stream`'s first byte without reading it or waiting.
fn peek(stream: &impl AsRawFd) -> Peek {
    let mut byte = 0u8;
    // SAFETY: recv writes at most one byte into `byte`.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match n {
        1.. => Peek::Data,
        0 => Peek::Closed,
        _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock => {
            Peek::Nothing
        }
        _ => Peek::Closed,
    }
}

/// Waits until `stream` has a byte to read (or its peer closed it), without reading it.
async fn first_byte(stream: &impl Peekable) -> std::io::Result<()> {
    loop {
        stream.readable().await?;
        let peeked = stream.try_read_io(|| {
            let mut byte = 0u8;
            // SAFETY: recv writes at most one byte into `byte`.
            let n = unsafe {
                libc::recv(
                    stream.as_raw_fd(),
                    (&mut byte as *mut u8).cast(),
                    1,
                    libc::MSG_PEEK | libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        });
        match peeked {
            Ok(()) => return Ok(()),
            // A readiness with nothing to read (tokio reports one for new sockets): wait again.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Returns the heap's free memory to the system (glibc keeps it otherwise).
fn give_memory_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_table_evicts_the_oldest_idle_connection() {
        let mut r = Registry::default();
        let (a, mut a_evicted) = r.admit(3).expect("room");
        let (b, mut b_evicted) = r.admit(3).expect("room");
        let (c, _c_evicted) = r.admit(3).expect("room");
        assert!(r.busy(a), "a sent a byte");
        // Full: the oldest idle one (b, not the busy a) makes room.
        let (d, _d_evicted) = r.admit(3).expect("room by eviction");
        assert_eq!(b_evicted.try_recv(), Ok(()));
        assert!(
            a_evicted.try_recv().is_err(),
            "a busy connection is never evicted"
        );
        assert!(!r.busy(b), "an evicted connection is not served");
        assert_eq!(r.live(), 3);
        // Every one busy: the next is refused.
        assert!(r.busy(c) && r.busy(d));
        assert!(r.admit(3).is_none());
        for id in [a, b, c, d] {
            r.leave(id);
        }
        assert_eq!(r.live(), 0);
    }

    #[test]
    fn memory_is_given_back_after_a_burst_only() {
        let mut r = Registry::default();
        let (one, _rx) = r.admit(MAX_CONNECTIONS).expect("room");
        assert!(!r.leave(one), "one connection is no burst");
        let ids: Vec<u64> = (0..TRIM_AFTER)
            .map(|_| r.admit(MAX_CONNECTIONS).expect("room").0)
            .collect();
        let (last, rest) = ids.split_last().expect("ids");
        assert!(rest.iter().all(|id| !r.leave(*id)), "not while some remain");
        assert!(r.leave(*last), "the last of a burst trims");
    }
}
