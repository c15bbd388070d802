//! TCP mode (layer 4): each client connection is joined to one upstream connection and bytes are
//! copied both ways. Connect failures fail over to the next upstream; `hash` hashes the client IP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use super::conn::connect_tcp;
use super::http::{DrainToken, Shared};
use super::log;
use super::pool::ActiveGuard;

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
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.changed() => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(tunnel(stream, peer, shared.clone(), permit, drain.clone()));
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
    _permit: OwnedSemaphorePermit,
    _drain: DrainToken,
) {
    let start = Instant::now();
    let s = &shared.settings;
    let pool = &shared.pool;
    let key = match peer.ip() {
        std::net::IpAddr::V4(a) => xxhash_rust::xxh3::xxh3_64(&a.octets()),
        std::net::IpAddr::V6(a) => xxhash_rust::xxh3::xxh3_64(&a.octets()),
    };
    let mut tried = Vec::new();
    let mut chosen = None;
    while let Some(i) = pool.pick(key, &tried) {
        tried.push(i);
        match connect_tcp(pool.upstreams[i].addr, s.connect_timeout).await {
            Ok(up) => {
                chosen = Some((i, up));
                break;
            }
            Err(_) => pool.mark_failed(i),
        }
    }
    let Some((i, mut upstream)) = chosen else {
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
    let copied = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
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
