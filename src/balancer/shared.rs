//! State shared by every connection of one balancer: the resolved settings, the upstreams (with
//! their counters and health, `pool.rs`) and whether clients speak TLS; and the drain token that
//! keeps the shutdown waiting while a connection or tunnel is open.

use std::sync::Arc;

use crate::config::balancer::Settings;

use super::perip::PerIp;
use super::pool::Pool;

/// Keeps the drain waiting while any clone is alive (connections and tunnels hold one).
pub type DrainToken = tokio::sync::mpsc::Sender<()>;

/// State shared by every connection of one balancer.
pub struct Shared {
    pub settings: Settings,
    pub pool: Arc<Pool>,
    /// Clients connect over TLS (X-Forwarded-Proto is `https`).
    pub https: bool,
    /// The per-client-IP connection limit, when configured.
    pub per_ip: Option<Arc<PerIp>>,
    /// With `sticky_cookie`: the `Set-Cookie` value pinning a client to each upstream, by index
    /// (made once, not per answer).
    pub sticky_pins: Option<Vec<http::HeaderValue>>,
}

impl Shared {
    /// The `Set-Cookie` value to add to an answer from upstream `idx`: with sticky sessions on,
    /// unless the request was already pinned there (`pinned`).
    pub fn sticky_pin(&self, pinned: Option<usize>, idx: usize) -> Option<&http::HeaderValue> {
        if pinned == Some(idx) {
            return None;
        }
        self.sticky_pins.as_ref()?.get(idx)
    }
}

/// What admits a client connection: its place under `max_connections` (HTTP/1, HTTP/2, tunnels and
/// TCP mode alike) and under `max_conns_per_ip`; held for the connection's life.
pub struct Admission {
    pub _permit: tokio::sync::OwnedSemaphorePermit,
    pub _ip: Option<super::perip::IpSlot>,
}

/// The `max_connections` slot for a client connection already accepted; None only if the limit
/// was closed. It is waited for even while the balancer shuts down: giving up then would drop a
/// connection whose request may already be in its buffer, and closing a socket with unread data
/// resets the client (seen as one reset during a `cohort reload` of a balancer under load, when
/// the shutdown and an accept were ready together). Draining connections free slots, and the
/// drain timeout bounds the wait.
pub async fn connection_slot(
    limit: &Arc<tokio::sync::Semaphore>,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    limit.clone().acquire_owned().await.ok()
}
