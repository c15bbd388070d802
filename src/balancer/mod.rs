//! Reverse proxy (HTTP and TCP): `cohort balance`. This module owns the command line, turns it (or
//! `--spec-json`) into a validated [`BalancerSpec`], lays out the runtimes and listeners, and runs
//! the shutdown path: stop accepting on SIGTERM/SIGINT, let in-flight requests finish, exit.
//!
//! Submodules, from the bottom up: `worker` (which runtime a thread drives), `conn` (upstream
//! connections and their keep-alive pooling), `strategy` (selection), `sticky` (the
//! cookie that pins a client to an upstream), `pool` (upstream state: up/down, counters), `shared` (state every connection shares, the drain token), `policy`
//! (attempts, retries, forwarding rules: one for both HTTP paths), `h1/` (HTTP/1.x: a pure codec
//! and the proxy loop), `h2` (HTTP/2 through hyper), `server` (HTTP accept loop), `tcp` (L4 mode),
//! `health` (active checks), `admin` (`/status`), `listen` (sockets, socket activation, TLS), `log`
//! (access log). The spec (config contract) is `config::balancer`.

pub mod admin;
mod conn;
#[doc(hidden)]
pub mod fuzz;
mod h1;
mod h2;
mod health;
mod listen;
mod log;
mod perip;
mod policy;
mod pool;
mod reqbody;
mod server;
mod shared;
mod stats;
mod sticky;
mod strategy;
mod tcp;
mod worker;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::config::balancer::{
    self as spec, BalancerSpec, DurationSpec, HealthSpec, Mode, Settings, Target, TlsSpec,
    UpstreamEntry,
};

/// How often the balancer checks for freed heap memory to give back, and how much must lie free.
const MEMORY_TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(2);
const MEMORY_TRIM_ABOVE: u64 = 8 << 20;

/// Arguments of `cohort balance`.
#[derive(clap::Args, Debug, Default, Clone, PartialEq)]
#[command(
    after_help = "Example: cohort balance --listen 0.0.0.0:8080 --upstream 127.0.0.1:3000 --upstream 127.0.0.1:3001\n\
Durations accept 500ms, 5s, 2m, 1h or milliseconds. Reference: docs/balancer.md"
)]
pub struct BalanceArgs {
    /// The whole balancer as JSON (a `balancers` entry of a config file); replaces the other flags.
    #[arg(long, value_name = "JSON")]
    pub spec_json: Option<String>,
    /// Address to listen on, e.g. 0.0.0.0:8080 (with LISTEN_FDS, the inherited socket is used instead).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// An upstream: host:port, "host:port weight=N"; repeat for each.
    #[arg(long = "upstream", value_name = "ADDR")]
    pub upstreams: Vec<String>,
    /// Name shown in logs and /status.
    #[arg(long)]
    pub name: Option<String>,
    /// round_robin (default), least_conn, random or hash.
    #[arg(long)]
    pub strategy: Option<String>,
    /// For hash: ip (default), header:NAME or cookie:NAME.
    #[arg(long, value_name = "KEY")]
    pub hash_key: Option<String>,
    /// Sticky sessions: set cookie NAME to pin each client to the upstream that served it.
    #[arg(long, value_name = "NAME")]
    pub sticky_cookie: Option<String>,
    /// http (default) or tcp.
    #[arg(long)]
    pub mode: Option<String>,
    /// Active health check: GET this path (2xx/3xx is healthy).
    #[arg(long, value_name = "PATH")]
    pub health_path: Option<String>,
    /// Active health check interval (enables TCP-connect checks if no --health-path).
    #[arg(long, value_name = "DURATION")]
    pub health_interval: Option<String>,
    /// Time allowed for one health check (default 1s).
    #[arg(long, value_name = "DURATION")]
    pub health_timeout: Option<String>,
    /// Successes in a row that bring an upstream back.
    #[arg(long, value_name = "N")]
    pub health_rise: Option<u32>,
    /// Failures in a row that take an upstream down.
    #[arg(long, value_name = "N")]
    pub health_fall: Option<u32>,
    /// Extra attempts after a failure (idempotent requests without a body).
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,
    /// Time allowed to connect to an upstream (default 2s).
    #[arg(long, value_name = "DURATION")]
    pub connect_timeout: Option<String>,
    /// Time allowed to send request headers (408 after), also the HTTP/1 keep-alive idle limit.
    #[arg(long, value_name = "DURATION")]
    pub header_timeout: Option<String>,
    /// Longest stall: a tunnel (TCP mode, WebSocket) with no traffic, or a body mid-transfer (408 for a stalled request body); HTTP/2: ping at half of it (default 60s).
    #[arg(long, value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// Time allowed for an upstream to answer once the request is sent (504 after; default 30s).
    #[arg(long, value_name = "DURATION")]
    pub upstream_timeout: Option<String>,
    /// How long a failed upstream stays out without active health checks.
    #[arg(long, value_name = "DURATION")]
    pub down_time: Option<String>,
    /// On SIGTERM/SIGINT, how long to let in-flight requests finish.
    #[arg(long, value_name = "DURATION")]
    pub drain_timeout: Option<String>,
    /// TLS certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<String>,
    /// TLS private key (PEM); needs --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<String>,
    /// Largest request head accepted, 431 beyond (default 16384).
    #[arg(long, value_name = "BYTES")]
    pub max_header_bytes: Option<usize>,
    /// Client connections served at once, HTTP/1, HTTP/2 and TCP alike (default 10000).
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Connections open to each upstream (NGINX's max_conns; an upstream's own "max_conns=N" wins).
    #[arg(long, value_name = "N")]
    pub max_conns: Option<usize>,
    /// Connections open to all upstreams together (default 1024).
    #[arg(long, value_name = "N")]
    pub max_upstream_conns: Option<usize>,
    /// Client connections from one IP address at once (default: no limit).
    #[arg(long, value_name = "N")]
    pub max_conns_per_ip: Option<usize>,
    /// Requests waiting for an upstream connection at once when the caps are reached (default 10000).
    #[arg(long, value_name = "N")]
    pub queue: Option<usize>,
    /// How long a request waits for an upstream connection, 503 after (default 10s).
    #[arg(long, value_name = "DURATION")]
    pub queue_timeout: Option<String>,
    /// Serve GET /status (JSON counters) on this address, e.g. 127.0.0.1:9001.
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<String>,
    /// Do not write the access log on stdout.
    #[arg(long)]
    pub no_access_log: bool,
    /// Worker threads (default: the CPUs this process may use).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
}

impl BalanceArgs {
    /// The spec these arguments describe.
    pub fn to_spec(&self) -> Result<BalancerSpec, String> {
        if let Some(json) = &self.spec_json {
            let others = BalanceArgs {
                spec_json: None,
                ..self.clone()
            };
            if others != BalanceArgs::default() {
                return Err(
                    "--spec-json: other flags cannot be combined with it (put them in the JSON)"
                        .into(),
                );
            }
            return serde_json::from_str(json).map_err(|e| format!("--spec-json: {e}"));
        }
        let Some(listen) = self.listen.clone() else {
            return Err("listen: missing (give --listen ADDR or --spec-json)".into());
        };
        let d = |v: &Option<String>| v.clone().map(DurationSpec::Text);
        let health =
            (self.health_path.is_some() || self.health_interval.is_some()).then(|| HealthSpec {
                path: self.health_path.clone(),
                interval: d(&self.health_interval),
                timeout: d(&self.health_timeout),
                rise: self.health_rise,
                fall: self.health_fall,
            });
        Ok(BalancerSpec {
            name: self.name.clone(),
            listen,
            mode: self.mode.clone(),
            strategy: self.strategy.clone(),
            hash_key: self.hash_key.clone(),
            sticky_cookie: self.sticky_cookie.clone(),
            upstreams: self
                .upstreams
                .iter()
                .cloned()
                .map(UpstreamEntry::Text)
                .collect(),
            health,
            retries: self.retries,
            timeouts: spec::TimeoutsSpec {
                connect: d(&self.connect_timeout),
                header_read: d(&self.header_timeout),
                idle: d(&self.idle_timeout),
                upstream: d(&self.upstream_timeout),
                upstream_idle: None,
                down: d(&self.down_time),
                drain: d(&self.drain_timeout),
                queue: d(&self.queue_timeout),
            },
            tls: match (&self.tls_cert, &self.tls_key) {
                (Some(c), Some(k)) => Some(TlsSpec {
                    cert: c.clone(),
                    key: k.clone(),
                }),
                _ => None,
            },
            limits: spec::LimitsSpec {
                max_header_bytes: self.max_header_bytes,
                max_connections: self.max_connections,
                max_upstream_conns: self.max_upstream_conns,
                max_conns: self.max_conns,
                queue: self.queue,
                max_conns_per_ip: self.max_conns_per_ip,
            },
            admin: self.admin.clone(),
            access_log: self.no_access_log.then_some(false),
            workers: self.workers,
        })
    }
}

/// Runs a balancer in the foreground; returns the process exit code.
pub fn run_foreground(args: BalanceArgs) -> i32 {
    crate::sys::limits::raise_nofile_or_report("balancer");
    let settings = match args
        .to_spec()
        .and_then(|s| s.validate().and_then(|()| s.resolve()))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "error: invalid balancer: {e} (see `cohort balance --help` or docs/balancer.md)"
            );
            return 2;
        }
    };
    match run(settings) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

/// An upstream as the balancer starts with it: label, address, weight, own connection cap.
type Member = (String, SocketAddr, u32, Option<usize>);

/// Resolves each upstream to one socket address.
fn resolve_upstreams(s: &Settings) -> Result<Vec<Member>> {
    s.upstreams
        .iter()
        .enumerate()
        .map(|(i, u)| match &u.target {
            Target::App(name) => Err(anyhow!(
                "upstreams[{i}]: app:{name} is resolved by the cohort daemon (run this balancer from a config file, or give host:port)"
            )),
            Target::Addr(a) => {
                let addr = a
                    .to_socket_addrs()
                    .with_context(|| format!("upstreams[{i}]: cannot resolve {a} (check the host name)"))?
                    .next()
                    .ok_or_else(|| anyhow!("upstreams[{i}]: {a} resolves to no address (check the host name)"))?;
                Ok((a.clone(), addr, u.weight, u.max_conns))
            }
        })
        .collect()
}

/// Builds the state, listeners and runtimes, and runs until drained.
fn run(settings: Settings) -> Result<()> {
    let members = resolve_upstreams(&settings)?;
    let listen_addr: SocketAddr = settings
        .listen
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve listen address {}", settings.listen))?
        .next()
        .ok_or_else(|| anyhow!("listen address {} resolves to nothing", settings.listen))?;
    let tls = match &settings.tls {
        Some(t) => Some(listen::tls_acceptor(&t.cert, &t.key)?),
        None => None,
    };
    let workers = match settings.workers {
        // The CPUs this process may use (affinity and cgroup quota), as `instances: max` counts them.
        0 => crate::sys::cpus::usable() as usize,
        n => n,
    };
    // Listeners: one per worker runtime. An inherited socket is shared (dup'd); otherwise each
    // worker binds its own with SO_REUSEPORT so the kernel spreads connections across them.
    let inherited = listen::inherited()?;
    let mut listeners = Vec::with_capacity(workers);
    match inherited {
        Some(l) => {
            for _ in 1..workers {
                listeners.push(l.try_clone().context("dup of the inherited socket")?);
            }
            listeners.push(l);
        }
        None if listen_addr.port() != 0 && workers > 1 => {
            // SO_REUSEPORT would silently share the port with another process that also set it
            // (a stale balancer, say): make sure the port is free first.
            drop(listen::bind(listen_addr, false)?);
            for _ in 0..workers {
                listeners.push(listen::bind(listen_addr, true)?);
            }
        }
        None => {
            let l = listen::bind(listen_addr, false)?;
            for _ in 1..workers {
                listeners.push(l.try_clone().context("dup of the listening socket")?);
            }
            listeners.push(l);
        }
    }
    let bound = listeners[0]
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| settings.listen.clone());
    let admin_listener = match &settings.admin {
        Some(a) => {
            let addr: SocketAddr = a
                .to_socket_addrs()
                .with_context(|| format!("cannot resolve admin address {a}"))?
                .next()
                .ok_or_else(|| anyhow!("admin address {a} resolves to nothing"))?;
            Some(listen::bind(addr, false)?)
        }
        None => None,
    };

    let labels: Vec<String> = members.iter().map(|m| m.0.clone()).collect();
    let weights: Vec<u32> = members.iter().map(|m| m.2).collect();
    let selector = strategy::Selector::new(settings.strategy, &weights, &labels);
    let caps = pool::CapSettings {
        per_upstream: members.iter().map(|m| m.3).collect(),
        total: settings.max_upstream_conns,
        queue: settings.queue,
        queue_timeout: settings.queue_timeout,
    };
    let members = members.into_iter().map(|m| (m.0, m.1, m.2)).collect();
    let pool = pool::Pool::new(
        members,
        selector,
        settings.down_for,
        settings.health.is_some(),
        workers,
    )
    .with_caps(caps);
    let https = tls.is_some();
    let sticky_pins = match &settings.sticky_cookie {
        Some(name) => Some(
            pool.upstreams
                .iter()
                .map(|u| {
                    let value = sticky::set_cookie(name, u.sticky_token, https);
                    http::HeaderValue::from_str(&value)
                        .with_context(|| format!("sticky_cookie: {value:?} is not a header value"))
                })
                .collect::<Result<Vec<_>>>()?,
        ),
        None => None,
    };
    let shared = Arc::new(shared::Shared {
        https,
        pool: Arc::new(pool),
        per_ip: settings.max_conns_per_ip.map(perip::PerIp::new),
        sticky_pins,
        settings,
    });
    let limit = Arc::new(Semaphore::new(shared.settings.max_connections));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (drain_tx, mut drain_rx) = mpsc::channel::<()>(1);
    if shared.settings.access_log {
        log::start();
    }

    // One shutdown channel per worker runtime as well: its connections read and wait on it for
    // every request, and a channel shared by all workers would be written by both cores each time.
    let mut worker_shutdown: Vec<watch::Sender<bool>> = Vec::with_capacity(workers);
    let mut start_loop = |listener: std::net::TcpListener| -> Result<_> {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let (tx, rx) = watch::channel(false);
        worker_shutdown.push(tx);
        let (sh, tls, limit, drain) =
            (shared.clone(), tls.clone(), limit.clone(), drain_tx.clone());
        Ok(async move {
            match sh.settings.mode {
                Mode::Http => server::accept_loop(listener, sh, tls, limit, rx, drain).await,
                Mode::Tcp => tcp::accept_loop(listener, sh, limit, rx, drain).await,
            }
        })
    };

    let main_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let first = listeners.pop().ok_or_else(|| anyhow!("no listener"))?;
    let first_loop = {
        let _enter = main_rt.enter();
        start_loop(first)?
    };
    // Worker runtimes 1..n, one thread each, current-thread schedulers: a connection and the
    // upstream connections it uses stay on one core.
    for (n, listener) in listeners.into_iter().enumerate() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let fut = {
            let _enter = rt.enter();
            start_loop(listener)?
        };
        std::thread::Builder::new()
            .name(format!("balancer-{}", n + 1))
            .spawn(move || {
                worker::WORKER.with(|w| w.set(n + 1));
                rt.block_on(async move {
                    fut.await;
                    // Keep driving this runtime's connections until the process exits after the drain.
                    std::future::pending::<()>().await
                })
            })?;
    }

    main_rt.block_on(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        tokio::spawn(first_loop);
        if let Some(l) = admin_listener {
            tokio::spawn(admin::serve(
                tokio::net::TcpListener::from_std(l)?,
                shared.clone(),
                shutdown_rx.clone(),
            ));
        }
        if let Some(h) = shared.settings.health.clone() {
            health::start(
                shared.pool.clone(),
                h,
                shared.settings.mode == Mode::Http,
                shutdown_rx.clone(),
            );
        }
        let s = &shared.settings;
        eprintln!(
            "balancer {}: listening on {bound} ({:?}, {:?}, {} upstreams, {workers} workers)",
            s.name,
            s.mode,
            s.strategy,
            shared.pool.upstreams.len()
        );
        // Memory freed after a burst goes back to the system (glibc keeps it in its arenas).
        tokio::spawn(async {
            let mut tick = tokio::time::interval(MEMORY_TRIM_EVERY);
            loop {
                tick.tick().await;
                crate::sys::memory::trim_if_worth(MEMORY_TRIM_ABOVE);
            }
        });
        // A manager that asked (NOTIFY_SOCKET) hears READY=1; one that cannot be reached changes nothing.
        let _ = crate::sys::sd_notify::ready();
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        eprintln!(
            "balancer {}: shutting down, draining in-flight requests (up to {:?})",
            s.name, s.drain_timeout
        );
        let _ = shutdown_tx.send(true);
        for tx in &worker_shutdown {
            let _ = tx.send(true);
        }
        drop(drain_tx);
        let drained = tokio::time::timeout(s.drain_timeout, drain_rx.recv())
            .await
            .is_ok();
        if !drained {
            eprintln!(
                "balancer {}: drain timeout reached, closing remaining connections",
                s.name
            );
        }
        log::flush();
        Ok::<(), anyhow::Error>(())
    })?;
    // Worker threads are parked in their runtimes; leaving the process ends them.
    std::process::exit(0)
}
