//! Upstream state: each upstream's address, weight, counters and up/down state, shared by every
//! connection task, the health checker and the admin endpoint. Counters are atomics so the request
//! path never takes a lock for them. Connecting and pooling connections is `conn.rs` (an upstream
//! only holds its idle lists); choosing one is `strategy.rs`.
//!
//! The connection caps live here too (NGINX's `max_conns` per upstream, and one for all upstreams
//! together): opening a connection takes a [`ConnPermit`]; at a cap, idle connections are closed
//! to make room, and otherwise the request waits in a bounded queue for `timeouts.queue` (NGINX
//! Plus `queue`, HAProxy `timeout queue`), then gets 503. A waiting request takes a connection
//! to its upstream that another request has just finished with (handed over through the idle
//! pool), or a new one once a slot is free; connections to upstreams nobody waits for are closed
//! instead of pooled while the queue is not empty, so their slots go to the queue.

use std::net::SocketAddr;
use std::sync::atomic::{
    AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore};

use super::conn::{ConnPermit, IdleConns, Sender, Stream};
use super::stats::{self, BalancerStats, UpstreamStats};
use super::strategy::{Members, Selector};
use super::worker;

/// One upstream server.
pub struct Upstream {
    /// The entry as the user wrote it (host:port).
    pub label: String,
    /// Its name in the sticky cookie (`sticky.rs`).
    pub sticky_token: u64,
    pub addr: SocketAddr,
    pub weight: u32,
    /// Requests (HTTP) or connections (TCP) sent to it, and those in flight: one pair per worker
    /// runtime, each on its own cache line, so that the workers (one per core) never write the same
    /// line on every request; summed when read.
    shards: Box<[Shard]>,
    /// Failed attempts: connect errors, timeouts, broken responses.
    pub errors: AtomicU64,
    /// Responses by class, response times, retries, connect errors, queueing (`stats.rs`).
    pub stats: UpstreamStats,
    /// Active health state: false once `fall` checks failed, or after a passive failure when active
    /// checks are on (they bring it back after `rise` successes).
    healthy: AtomicBool,
    /// Passive state without active checks: down until this many ms after the pool's epoch.
    down_until_ms: AtomicU64,
    /// Held out by the daemon: every process of the `app:NAME` it stands for fails its readiness
    /// probe (admin `PUT /ready`; docs/health.md). No request goes to it while held.
    held: AtomicBool,
    pub(super) check_ok_streak: AtomicU32,
    pub(super) check_fail_streak: AtomicU32,
    /// Idle keep-alive connections of the HTTP/2 path (hyper's client).
    pub idle: IdleConns<Sender>,
    /// Idle keep-alive connections of the HTTP/1 path (raw sockets).
    pub idle_streams: IdleConns<Stream>,
    /// Its own connection cap (`max_conns=N`), if any.
    cap: Option<Arc<Semaphore>>,
    /// Requests waiting for a connection to it.
    waiting: AtomicUsize,
    /// Wakes one of them when a connection to it goes back to an idle pool: one per pool (the
    /// HTTP/1 path's raw sockets, the HTTP/2 path's senders), so a wake-up always finds its kind.
    handoff: [Notify; 2],
}

#[repr(align(64))]
#[derive(Default)]
struct Shard {
    requests: AtomicU64,
    /// Signed: a guard may end on another worker than the one it started on (HTTP/2 bodies).
    active: AtomicI64,
}

impl Upstream {
    /// Requests (HTTP) or connections (TCP) sent to it.
    pub fn requests(&self) -> u64 {
        self.shards.iter().map(|s| s.requests.load(Relaxed)).sum()
    }

    /// Requests or tunnels in flight.
    pub fn active(&self) -> usize {
        let n: i64 = self.shards.iter().map(|s| s.active.load(Relaxed)).sum();
        n.max(0) as usize
    }

    #[cfg(test)]
    pub fn set_active(&self, n: i64) {
        for s in self.shards.iter() {
            s.active.store(0, Relaxed);
        }
        self.shards[0].active.store(n, Relaxed);
    }
}

/// All upstreams of one balancer plus the selection strategy.
pub struct Pool {
    pub upstreams: Vec<Upstream>,
    /// Responses the balancer sent to its clients, by class.
    pub stats: BalancerStats,
    pub selector: Selector,
    epoch: Instant,
    down_for: Duration,
    active_checks: bool,
    caps: Caps,
}

/// The balancer-wide connection cap and the queue of requests waiting for a connection.
struct Caps {
    total: Arc<Semaphore>,
    /// Requests waiting now (for any upstream), at most `queue`.
    waiting: AtomicUsize,
    queue: usize,
    timeout: Duration,
}

/// The connection caps of a balancer, as configured.
pub struct CapSettings {
    /// Per upstream, in order: its own cap, if any.
    pub per_upstream: Vec<Option<usize>>,
    pub total: usize,
    pub queue: usize,
    pub queue_timeout: Duration,
}

/// Which idle pool a connection goes back to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdleKind {
    /// The HTTP/1 path's raw sockets (`idle_streams`).
    Streams = 0,
    /// The HTTP/2 path's senders (`idle`).
    Senders = 1,
}

/// What a request waiting at a cap got.
pub enum Slot<T> {
    /// Leave to open a new connection.
    New(ConnPermit),
    /// A pooled connection another request finished with.
    Idle(T),
}

/// No connection slot came free for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// The queue was full.
    QueueFull,
    /// It waited `timeouts.queue` in the queue.
    TimedOut,
}

/// Takes a request out of the queue counts when it stops waiting (served or not).
struct Waiting<'a>(&'a AtomicUsize, &'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
        self.1.fetch_sub(1, Relaxed);
    }
}

impl Pool {
    pub fn new(
        members: Vec<(String, SocketAddr, u32)>,
        selector: Selector,
        down_for: Duration,
        active_checks: bool,
        workers: usize,
    ) -> Pool {
        let upstreams = members
            .into_iter()
            .map(|(label, addr, weight)| Upstream {
                sticky_token: super::sticky::token(&label),
                label,
                addr,
                weight,
                shards: (0..workers.max(1)).map(|_| Shard::default()).collect(),
                errors: AtomicU64::new(0),
                stats: UpstreamStats::new(workers),
                healthy: AtomicBool::new(true),
                down_until_ms: AtomicU64::new(0),
                held: AtomicBool::new(false),
                check_ok_streak: AtomicU32::new(0),
                check_fail_streak: AtomicU32::new(0),
                idle: IdleConns::new(workers),
                idle_streams: IdleConns::new(workers),
                cap: None,
                waiting: AtomicUsize::new(0),
                handoff: [Notify::new(), Notify::new()],
            })
            .collect();
        Pool {
            upstreams,
            stats: BalancerStats::default(),
            selector,
            epoch: Instant::now(),
            down_for,
            active_checks,
            caps: Caps {
                total: Arc::new(Semaphore::new(Semaphore::MAX_PERMITS)),
                waiting: AtomicUsize::new(0),
                queue: usize::MAX,
                timeout: Duration::from_secs(10),
            },
        }
    }

    /// Sets the connection caps (without them, connections are not limited).
    pub fn with_caps(mut self, c: CapSettings) -> Pool {
        for (u, cap) in self.upstreams.iter_mut().zip(c.per_upstream) {
            u.cap = cap.map(|n| Arc::new(Semaphore::new(n.min(Semaphore::MAX_PERMITS))));
        }
        self.caps = Caps {
            total: Arc::new(Semaphore::new(c.total.min(Semaphore::MAX_PERMITS))),
            waiting: AtomicUsize::new(0),
            queue: c.queue,
            timeout: c.queue_timeout,
        };
        self
    }

    /// A connection to upstream `i` for a request that found none idle: leave to open one at
    /// once under the caps; otherwise idle connections holding the slots it needs are closed, and
    /// failing that the request waits in the queue (bounded, `timeouts.queue`) for a slot or for a
    /// connection to `i` handed over (`take_idle`, which looks in every worker's idle list).
    pub async fn conn_permit<T>(
        &self,
        i: usize,
        kind: IdleKind,
        share: Option<&Semaphore>,
        mut take_idle: impl FnMut() -> Option<T>,
    ) -> Result<Slot<T>, Busy> {
        let u = &self.upstreams[i];
        if let Some(p) = self.try_permit(u) {
            return Ok(Slot::New(p));
        }
        // Idle connections hold slots: close some (this upstream's for its own cap, any for the
        // total) and try again.
        self.make_room(i);
        if let Some(p) = self.try_permit(u) {
            return Ok(Slot::New(p));
        }
        let deadline = tokio::time::Instant::now() + self.caps.timeout;
        // A client connection with many requests (HTTP/2) waits for its share of the queue first.
        let _share = match share {
            None => None,
            Some(s) => match tokio::time::timeout_at(deadline, s.acquire()).await {
                Ok(Ok(p)) => Some(p),
                _ => return Err(Busy::TimedOut),
            },
        };
        if self.caps.waiting.fetch_add(1, Relaxed) >= self.caps.queue {
            self.caps.waiting.fetch_sub(1, Relaxed);
            return Err(Busy::QueueFull);
        }
        u.waiting.fetch_add(1, Relaxed);
        u.stats.queued();
        let _waiting = Waiting(&self.caps.waiting, &u.waiting);
        let wait = async {
            let upstream = match &u.cap {
                Some(s) => Some(s.clone().acquire_owned().await.ok()?),
                None => None,
            };
            let total = self.caps.total.clone().acquire_owned().await.ok()?;
            Some(ConnPermit {
                _upstream: upstream,
                _total: total,
            })
        };
        let handed_over = async {
            let mut wait = std::pin::pin!(wait);
            loop {
                let notified = u.handoff[kind as usize].notified();
                let mut notified = std::pin::pin!(notified);
                notified.as_mut().enable();
                if let Some(c) = take_idle() {
                    return Some(Slot::Idle(c));
                }
                tokio::select! {
                    p = &mut wait => return p.map(Slot::New),
                    _ = notified => {}
                }
            }
        };
        match tokio::time::timeout_at(deadline, handed_over).await {
            Ok(Some(s)) => Ok(s),
            _ => Err(Busy::TimedOut),
        }
    }

    /// Whether a connection to upstream `i` whose exchange ended goes back to the idle pool (and
    /// to a request waiting for it); false while requests wait for slots of other upstreams.
    #[inline]
    pub fn may_pool(&self, i: usize) -> bool {
        if self.caps.waiting.load(Relaxed) == 0 {
            return true;
        }
        self.upstreams[i].waiting.load(Relaxed) > 0
    }

    /// After a connection to `i` went back to the idle pool of `kind`: wakes one request waiting
    /// for one (FIFO; waking them all would have thousands race for one connection).
    #[inline]
    pub fn pooled(&self, i: usize, kind: IdleKind) {
        let u = &self.upstreams[i];
        if u.waiting.load(Relaxed) > 0 {
            u.handoff[kind as usize].notify_one();
        }
    }

    fn try_permit(&self, u: &Upstream) -> Option<ConnPermit> {
        let upstream = match &u.cap {
            Some(s) => Some(s.clone().try_acquire_owned().ok()?),
            None => None,
        };
        let total = self.caps.total.clone().try_acquire_owned().ok()?;
        Some(ConnPermit {
            _upstream: upstream,
            _total: total,
        })
    }

    /// Closes an idle connection whose slot upstream `i` needs.
    fn make_room(&self, i: usize) {
        let u = &self.upstreams[i];
        if u.cap.as_ref().is_some_and(|s| s.available_permits() == 0) {
            let _ = u.idle_streams.evict_one() || u.idle.evict_one();
        }
        if self.caps.total.available_permits() == 0 {
            for o in self.upstreams.iter() {
                if o.idle_streams.evict_one() || o.idle.evict_one() {
                    return;
                }
            }
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Whether upstream `i` may receive traffic now. Reads the clock only while a passive failure
    /// is being served out (it is asked several times per request).
    pub fn is_up(&self, i: usize) -> bool {
        let u = &self.upstreams[i];
        if !u.healthy.load(Relaxed) || u.held.load(Relaxed) {
            return false;
        }
        let until = u.down_until_ms.load(Relaxed);
        if until == 0 {
            return true;
        }
        if until <= self.now_ms() {
            // Served out: back to the fast path (a newer failure in between wins).
            let _ = u.down_until_ms.compare_exchange(until, 0, Relaxed, Relaxed);
            return true;
        }
        false
    }

    /// Records a failed attempt (connect error, timeout, broken response) and takes the upstream out.
    pub fn mark_failed(&self, i: usize) {
        let u = &self.upstreams[i];
        u.errors.fetch_add(1, Relaxed);
        if self.active_checks {
            u.check_ok_streak.store(0, Relaxed);
            u.healthy.store(false, Relaxed);
        } else {
            let until = self.now_ms() + self.down_for.as_millis() as u64;
            if until > 0 {
                u.down_until_ms.store(until, Relaxed);
            }
        }
        u.idle.clear();
        u.idle_streams.clear();
    }

    /// Sets the active health state (from the health checker).
    pub fn set_healthy(&self, i: usize, up: bool) {
        let u = &self.upstreams[i];
        u.healthy.store(up, Relaxed);
        if up {
            u.down_until_ms.store(0, Relaxed);
        }
    }

    /// Holds out (or lets back) the upstreams whose address or label is `addr`; with `flush`,
    /// their idle keep-alive connections are closed too (one of them may lead to a worker that is
    /// no longer ready: new connections are steered to ready ones). How many matched.
    pub fn set_held(&self, addr: &str, held: bool, flush: bool) -> usize {
        let mut n = 0;
        for u in &self.upstreams {
            if u.label == addr || u.addr.to_string() == addr {
                u.held.store(held, Relaxed);
                if flush {
                    u.idle.clear();
                    u.idle_streams.clear();
                }
                n += 1;
            }
        }
        n
    }

    /// Some upstream is held out by the daemon (a request finding none up gets 503, not 502).
    pub fn any_held(&self) -> bool {
        self.upstreams.iter().any(|u| u.held.load(Relaxed))
    }

    pub fn is_healthy(&self, i: usize) -> bool {
        self.upstreams[i].healthy.load(Relaxed)
    }

    /// The upstream a sticky cookie's token names, if it is one of these and may receive traffic.
    pub fn sticky_upstream(&self, token: u64) -> Option<usize> {
        let i = self
            .upstreams
            .iter()
            .position(|u| u.sticky_token == token)?;
        Members::is_up(self, i).then_some(i)
    }

    /// Picks an upstream that is up and not in `tried`; `key` is the hash key for `hash`.
    pub fn pick(&self, key: u64, tried: &[usize]) -> Option<usize> {
        self.selector.pick(self, key, tried)
    }

    /// Records a failed attempt that does not take the upstream out (a timeout, one pooled
    /// connection failing, a body broken off).
    pub fn count_error(&self, i: usize) {
        self.upstreams[i].errors.fetch_add(1, Relaxed);
    }

    /// Status as JSON (the shape is documented in docs/balancer.md).
    pub fn status_json(
        &self,
        name: &str,
        mode: &str,
        strategy: &str,
        listen: &str,
    ) -> serde_json::Value {
        let ups: Vec<serde_json::Value> = self
            .upstreams
            .iter()
            .enumerate()
            .map(|(i, u)| {
                let state = if u.held.load(Relaxed) {
                    "not ready"
                } else if self.is_up(i) {
                    "up"
                } else {
                    "down"
                };
                let errors = u.errors.load(Relaxed);
                let connect_errors = u.stats.connect_errors();
                serde_json::json!({
                    "address": u.label,
                    "resolved": u.addr.to_string(),
                    "weight": u.weight,
                    "state": state,
                    "requests": u.requests(),
                    "errors": errors,
                    "connect_errors": connect_errors,
                    "response_errors": errors.saturating_sub(connect_errors),
                    "retries": u.stats.retries(),
                    "active": u.active(),
                    "queued": u.waiting.load(Relaxed),
                    "queued_total": u.stats.queued_total(),
                    "responses": classes_json(u.stats.responses()),
                    "response_time": histogram_json(&u.stats.histogram()),
                })
            })
            .collect();
        serde_json::json!({
            "name": name,
            "pid": std::process::id(),
            "listen": listen,
            "mode": mode,
            "strategy": strategy,
            "uptime_ms": self.now_ms(),
            "queued": self.caps.waiting.load(Relaxed),
            "responses": classes_json(self.client_responses()),
            "upstreams": ups,
        })
    }
}

impl Pool {
    /// Responses sent to clients by class: every upstream's, plus the balancer's own answers.
    pub fn client_responses(&self) -> [u64; 6] {
        let mut total = self.stats.own_answers();
        for u in &self.upstreams {
            for (t, n) in total.iter_mut().zip(u.stats.responses()) {
                *t += n;
            }
        }
        total
    }
}

/// `{"1xx": n, …, "other": n}`.
fn classes_json(counts: [u64; 6]) -> serde_json::Value {
    let map: serde_json::Map<String, serde_json::Value> = stats::CLASSES
        .iter()
        .zip(counts)
        .map(|(c, n)| (c.to_string(), n.into()))
        .collect();
    serde_json::Value::Object(map)
}

/// The histogram as Prometheus shows it: cumulative counts per upper bound (seconds; the last,
/// `+Inf`, is `count`), the sum in seconds, and the p50/p99 estimated from the buckets.
fn histogram_json(h: &stats::Histogram) -> serde_json::Value {
    let mut running = 0u64;
    let cumulative: Vec<u64> = h.buckets[..stats::BUCKETS_US.len()]
        .iter()
        .map(|n| {
            running += n;
            running
        })
        .collect();
    let le: Vec<f64> = stats::BUCKETS_US.iter().map(|b| *b as f64 / 1e6).collect();
    serde_json::json!({
        "le": le,
        "buckets": cumulative,
        "count": h.count(),
        "sum_seconds": h.sum_us as f64 / 1e6,
        "p50_seconds": stats::quantile(&stats::BUCKETS_US, &h.buckets, 0.5),
        "p99_seconds": stats::quantile(&stats::BUCKETS_US, &h.buckets, 0.99),
    })
}

impl Members for Pool {
    fn len(&self) -> usize {
        self.upstreams.len()
    }
    fn is_up(&self, i: usize) -> bool {
        Pool::is_up(self, i)
    }
    fn weight(&self, i: usize) -> u32 {
        self.upstreams[i].weight
    }
    fn active(&self, i: usize) -> usize {
        self.upstreams[i].active()
    }
}

/// Counts a request (or tunnel) to an upstream and keeps it in `active` until dropped; owns its
/// pool, for responses whose body outlives the request handler (HTTP/2, TCP tunnels).
pub struct ActiveGuard {
    pool: std::sync::Arc<Pool>,
    index: usize,
    shard: usize,
}

impl ActiveGuard {
    pub fn new(pool: std::sync::Arc<Pool>, index: usize) -> ActiveGuard {
        let shard = begin(&pool.upstreams[index]);
        ActiveGuard { pool, index, shard }
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        end(&self.pool.upstreams[self.index], self.shard);
    }
}

/// The same for a request handled within one borrow of the pool (the HTTP/1 path): no reference
/// count to touch, whose cache line both workers would otherwise write on every request.
pub struct Active<'a> {
    upstream: &'a Upstream,
    shard: usize,
}

impl<'a> Active<'a> {
    pub fn new(upstream: &'a Upstream) -> Active<'a> {
        Active {
            shard: begin(upstream),
            upstream,
        }
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        end(self.upstream, self.shard);
    }
}

fn begin(u: &Upstream) -> usize {
    let i = worker::current() % u.shards.len();
    let s = &u.shards[i];
    s.active.fetch_add(1, Relaxed);
    s.requests.fetch_add(1, Relaxed);
    i
}

fn end(u: &Upstream, shard: usize) {
    u.shards[shard].active.fetch_sub(1, Relaxed);
}
