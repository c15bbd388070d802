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
}

/// What admits a client connection: its place under `max_connections` (HTTP/1, HTTP/2, tunnels and
/// TCP mode alike) and under `max_conns_per_ip`; held for the connection's life.
pub struct Admission {
    pub _permit: tokio::sync::OwnedSemaphorePermit,
    pub _ip: Option<super::perip::IpSlot>,
}
