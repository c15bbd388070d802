//! TCP mode (layer 4): each client connection is joined to one upstream connection and bytes are
//! copied both ways. Connect failures fail over to the next upstream; `hash` hashes the client IP.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use super::conn::connect_tcp;
use super::log;
use super::pool::{ActiveGuard, IdleKind, Slot};
use super::shared::{Admission, DrainToken, Shared};
use super::strategy::ip_key;

/// Accepts clients until `shutdown` turns true; open tunnels keep `drain` alive.
pub async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    limit: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
    drain: DrainToken,
) {
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
        match accepted {
            Ok((stream, peer)) => {
                let ip_slot = match &shared.per_ip {
                    None => None,
                    Some(t) => match t.enter(peer.ip()) {
                        Some(slot) => Some(slot),
                        // Over max_conns_per_ip: closed at once.
                        None => continue,
                    },
                };
                let Some(permit) = super::shared::connection_slot(&limit).await else {
                    break;
                };
                let _ = stream.set_nodelay(true);
                let admission = Admission {
                    _permit: permit,
                    _ip: ip_slot,
                };
                tokio::spawn(tunnel(
                    stream,
                    peer,
                    shared.clone(),
                    admission,
                    drain.clone(),
                ));
            }
            Err(e) => {
                eprintln!("balancer: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn tunnel(
    mut client: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    _admission: Admission,
    _drain: DrainToken,
) {
    let start = Instant::now();
    let s = &shared.settings;
    let pool = &shared.pool;
    let key = ip_key(peer.ip());
    let mut tried = Vec::new();
    let mut chosen = None;
    while let Some(i) = pool.pick(key, &tried) {
        // Another upstream after a failed connect: a retry of the one before.
        if let Some(&failed) = tried.last() {
            pool.upstreams[failed].stats.retried();
        }
        tried.push(i);
        // The upstream connection caps hold in TCP mode too; a full queue ends the attempt.
        let Ok(Slot::New(permit)) = pool
            .conn_permit(i, IdleKind::Streams, None, || None::<()>)
            .await
        else {
            break;
        };
        match connect_tcp(pool.upstreams[i].addr, s.connect_timeout).await {
            Ok(up) => {
                chosen = Some((i, up, permit));
                break;
            }
            Err(_) => {
                pool.mark_failed(i);
                pool.upstreams[i].stats.connect_failed();
            }
        }
    }
    let Some((i, mut upstream, _permit)) = chosen else {
        // Nothing to connect to: closing at once is the TCP way of saying 502.
        if s.access_log {
            log::write(log::Entry {
                client: peer.ip(),
                request: format_args!("TCP"),
                status: 502,
                bytes: 0,
                upstream: None,
                duration: start.elapsed(),
            });
        }
        return;
    };
    let guard = ActiveGuard::new(pool.clone(), i);
    let activity = Arc::new(AtomicU64::new(0));
    let mut client = Active {
        inner: &mut client,
        last: &activity,
        epoch: start,
    };
    let mut upstream = Active {
        inner: &mut upstream,
        last: &activity,
        epoch: start,
    };
    let copied = tokio::select! {
        r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => r,
        _ = idle_watch(&activity, start, s.idle_timeout) => Err(std::io::ErrorKind::TimedOut.into()),
    };
    drop(guard);
    if s.access_log {
        let (status, bytes) = match copied {
            Ok((_to_up, to_client)) => (200, to_client),
            Err(_) => (499, 0),
        };
        log::write(log::Entry {
            client: peer.ip(),
            request: format_args!("TCP"),
            status,
            bytes,
            upstream: Some(&pool.upstreams[i].label),
            duration: start.elapsed(),
        });
    }
}

/// Resolves once no byte moved either way for `idle` (`last` holds ms since `epoch`).
pub(super) async fn idle_watch(last: &AtomicU64, epoch: Instant, idle: Duration) {
    loop {
        let deadline = epoch + Duration::from_millis(last.load(Relaxed)) + idle;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline.into()).await;
    }
}

/// A stream that records when bytes last moved through it, for the idle timeout.
pub(super) struct Active<'a, S> {
    inner: &'a mut S,
    last: &'a AtomicU64,
    epoch: Instant,
}

impl<'a, S> Active<'a, S> {
    pub(super) fn new(inner: &'a mut S, last: &'a AtomicU64, epoch: Instant) -> Active<'a, S> {
        Active { inner, last, epoch }
    }

    fn touch(&self) {
        self.last
            .store(self.epoch.elapsed().as_millis() as u64, Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Active<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut *self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Active<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut *self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}
