//! The balancer's configuration contract: [`BalancerSpec`], one entry of a config file's `balancers`
//! list (also what `cohort balance --spec-json` takes), its defaults and its validation.
//!
//! Free-form fields (strategy, mode, durations, upstream strings) are kept as the user wrote them so
//! that [`BalancerSpec::validate`] can name the field in its message; [`BalancerSpec::resolve`] turns a
//! valid spec into typed [`Settings`] for the proxy.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Strategies accepted in `strategy`.
pub const STRATEGIES: &[&str] = &["round_robin", "least_conn", "random", "hash"];

/// One balancer: where it listens, how it picks an upstream, and its limits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalancerSpec {
    /// Name shown in logs and in `/status` (default "balancer").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Listening address, `host:port`.
    pub listen: String,
    /// `http` (default) or `tcp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// `round_robin` (default), `least_conn`, `random` or `hash`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// Key for `hash`: `ip` (default), `header:NAME` or `cookie:NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_key: Option<String>,
    /// Sticky sessions: the name of a cookie the balancer sets to pin each client to the upstream
    /// that served it (HTTP mode; any strategy picks the first one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky_cookie: Option<String>,
    /// Upstreams: `"host:port"`, `"host:port weight=3"`, `"app:NAME"` or `{"address": .., "weight": ..}`.
    pub upstreams: Vec<UpstreamEntry>,
    /// Active health check; without it, a failed upstream is retried after `timeouts.down`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthSpec>,
    /// Extra attempts on other upstreams after a failure (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    #[serde(default)]
    pub timeouts: TimeoutsSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    #[serde(default)]
    pub limits: LimitsSpec,
    /// Address of the admin endpoint (`GET /status`), e.g. `127.0.0.1:9001`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<String>,
    /// Write one access-log line per request (HTTP) or connection (TCP) on stdout (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<bool>,
    /// Runtime worker threads (default: number of CPUs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
}

/// An upstream as written: a string or an object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum UpstreamEntry {
    Text(String),
    Object {
        address: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        weight: Option<u32>,
        /// Most connections open to this upstream at once (NGINX's `max_conns`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_conns: Option<usize>,
    },
}

/// Active health check settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSpec {
    /// HTTP path to GET (expects 2xx/3xx). Without it (or in tcp mode) the check is a TCP connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<DurationSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationSpec>,
    /// Consecutive successes that bring a down upstream back (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rise: Option<u32>,
    /// Consecutive failures that take an upstream down (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fall: Option<u32>,
}

/// Timeouts; each is `"250ms"`, `"5s"`, `"2m"` or a number of milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsSpec {
    /// Connecting to an upstream (default 2s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<DurationSpec>,
    /// Receiving a client's request headers, also the keep-alive idle limit of HTTP/1 clients (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_read: Option<DurationSpec>,
    /// Idle limit of a TCP-mode connection (no byte either way); HTTP/2 clients are pinged at half of it (default 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<DurationSpec>,
    /// Waiting for an upstream's response headers before answering 504 (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<DurationSpec>,
    /// How long a pooled upstream connection may stay idle (default 4s, under Node's 5s keep-alive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_idle: Option<DurationSpec>,
    /// How long a failed upstream stays down when no active health check is configured (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down: Option<DurationSpec>,
    /// On SIGTERM/SIGINT, how long to wait for in-flight requests (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<DurationSpec>,
    /// How long a request waits for an upstream connection when the caps are reached, 503 after
    /// (NGINX Plus `queue ... timeout=`, HAProxy `timeout queue`; default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<DurationSpec>,
}

/// TLS termination (HTTP mode): PEM certificate chain and private key files.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSpec {
    pub cert: String,
    pub key: String,
}

/// Limits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// Largest request head accepted (default 16384, at least 8192); larger gets 431.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_header_bytes: Option<usize>,
    /// Client connections served at once (default 10000); further clients wait in the backlog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// Connections open to all upstreams together (default 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_upstream_conns: Option<usize>,
    /// Connections open to each upstream that sets no `max_conns` of its own (default: no cap
    /// beyond `max_upstream_conns`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_conns: Option<usize>,
    /// Requests that may wait for an upstream connection at once (default 10000); more get 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<usize>,
    /// Client connections from one IP address at once (default: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_conns_per_ip: Option<usize>,
}

/// A duration as written: milliseconds or a string with a unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DurationSpec {
    Millis(u64),
    Text(String),
}

impl DurationSpec {
    /// Parses a number of milliseconds or a string with a unit (see [`super::duration`]).
    pub fn parse(&self) -> Result<Duration, String> {
        match self {
            DurationSpec::Millis(ms) => Ok(Duration::from_millis(*ms)),
            DurationSpec::Text(s) => super::duration::parse(s),
        }
    }
}

/// Proxy mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Http,
    Tcp,
}

/// Upstream selection strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    RoundRobin,
    LeastConn,
    Random,
    Hash,
}

/// What `hash` hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    Ip,
    Header(http::HeaderName),
    Cookie(String),
}

/// Where an upstream lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `host:port` (host may be a name; resolved when the balancer starts).
    Addr(String),
    /// `app:NAME`: the daemon replaces it with the app's addresses before launching the balancer.
    App(String),
}

/// A parsed upstream entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTarget {
    pub target: Target,
    pub weight: u32,
    /// Most connections open to it at once (`max_conns=N`); `None`: only the total cap.
    pub max_conns: Option<usize>,
}

/// Active health check, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub path: Option<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

/// A validated spec with defaults applied.
#[derive(Debug, Clone)]
pub struct Settings {
    pub name: String,
    pub listen: String,
    pub mode: Mode,
    pub strategy: Strategy,
    pub hash_key: HashKey,
    /// The cookie that pins a client to an upstream (`sticky_cookie`), if any.
    pub sticky_cookie: Option<String>,
    pub upstreams: Vec<UpstreamTarget>,
    pub health: Option<Health>,
    pub retries: u32,
    pub connect_timeout: Duration,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub upstream_timeout: Duration,
    pub upstream_idle: Duration,
    pub down_for: Duration,
    pub drain_timeout: Duration,
    pub tls: Option<TlsSpec>,
    pub max_header_bytes: usize,
    pub max_connections: usize,
    /// Connections open to all upstreams together.
    pub max_upstream_conns: usize,
    /// Requests that may wait for an upstream connection at once.
    pub queue: usize,
    pub queue_timeout: Duration,
    /// Client connections per IP address (`None`: no limit).
    pub max_conns_per_ip: Option<usize>,
    pub admin: Option<String>,
    pub access_log: bool,
    pub workers: usize,
}

/// Whether `name` may name a cookie (RFC 6265 section 4.1.1: a token, i.e. visible ASCII without
/// separators).
fn is_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

/// Parses one upstream entry (`"host:port"`, `"host:port weight=N"`, `"app:NAME"`, or the object form).
pub fn parse_upstream(entry: &UpstreamEntry) -> Result<UpstreamTarget, String> {
    let (addr, weight, max_conns) = match entry {
        UpstreamEntry::Object {
            address,
            weight,
            max_conns,
        } => (address.trim().to_string(), weight.unwrap_or(1), *max_conns),
        UpstreamEntry::Text(s) => {
            let mut parts = s.split_whitespace();
            let addr = parts.next().unwrap_or("").to_string();
            let mut weight = 1;
            let mut max_conns = None;
            for p in parts {
                let bad = || {
                    format!("unexpected {p:?} in {s:?} (write \"host:port weight=N max_conns=N\")")
                };
                if let Some(w) = p.strip_prefix("weight=") {
                    weight = w.parse::<u32>().map_err(|_| bad())?;
                } else if let Some(m) = p.strip_prefix("max_conns=") {
                    max_conns = Some(m.parse::<usize>().map_err(|_| bad())?);
                } else {
                    return Err(bad());
                }
            }
            (addr, weight, max_conns)
        }
    };
    if !(1..=1000).contains(&weight) {
        return Err(format!("weight must be between 1 and 1000; got {weight}"));
    }
    if max_conns == Some(0) {
        return Err("max_conns must be at least 1 (leave it out for no cap)".into());
    }
    if let Some(app) = addr.strip_prefix("app:") {
        if app.is_empty() {
            return Err("\"app:\" needs an app name (write \"app:NAME\")".into());
        }
        return Ok(UpstreamTarget {
            target: Target::App(app.to_string()),
            weight,
            max_conns,
        });
    }
    check_host_port(&addr)?;
    Ok(UpstreamTarget {
        target: Target::Addr(addr),
        weight,
        max_conns,
    })
}

/// Checks `host:port` syntax (IPv6 as `[::1]:80`).
fn check_host_port(addr: &str) -> Result<(), String> {
    if addr.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(());
    }
    let bad = || format!("expected \"host:port\"; got {addr:?}");
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || host.contains(':') || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(())
}

impl BalancerSpec {
    /// Checks every field; the message names the field (`strategy: expected one of ...; got "foo"`).
    pub fn validate(&self) -> Result<(), String> {
        self.resolve().map(|_| ())
    }

    /// Validates and applies defaults.
    pub fn resolve(&self) -> Result<Settings, String> {
        let dur =
            |field: &str, v: &Option<DurationSpec>, default_ms: u64| -> Result<Duration, String> {
                match v {
                    None => Ok(Duration::from_millis(default_ms)),
                    Some(d) => d.parse().map_err(|e| format!("{field}: {e}")),
                }
            };
        check_host_port(&self.listen).map_err(|e| format!("listen: {e}"))?;
        let mode = match self.mode.as_deref() {
            None | Some("http") => Mode::Http,
            Some("tcp") => Mode::Tcp,
            Some(other) => return Err(format!("mode: expected one of http, tcp; got {other:?}")),
        };
        let strategy = match self.strategy.as_deref() {
            None | Some("round_robin") => Strategy::RoundRobin,
            Some("least_conn") => Strategy::LeastConn,
            Some("random") => Strategy::Random,
            Some("hash") => Strategy::Hash,
            Some(other) => {
                return Err(format!(
                    "strategy: expected one of {}; got {other:?}",
                    STRATEGIES.join(", ")
                ))
            }
        };
        let hash_key = match self.hash_key.as_deref() {
            None | Some("ip") => HashKey::Ip,
            Some(k) => {
                if mode == Mode::Tcp {
                    return Err(format!(
                        "hash_key: tcp mode can only hash on \"ip\"; got {k:?}"
                    ));
                }
                if let Some(h) = k.strip_prefix("header:") {
                    HashKey::Header(
                        http::HeaderName::from_bytes(h.as_bytes())
                            .map_err(|_| format!("hash_key: {h:?} is not a valid header name"))?,
                    )
                } else if let Some(c) = k.strip_prefix("cookie:").filter(|c| !c.is_empty()) {
                    HashKey::Cookie(c.to_string())
                } else {
                    return Err(format!(
                        "hash_key: expected \"ip\", \"header:NAME\" or \"cookie:NAME\"; got {k:?}"
                    ));
                }
            }
        };
        if self.hash_key.is_some() && strategy != Strategy::Hash {
            return Err("hash_key: only used with strategy \"hash\" (set strategy to \"hash\" or remove hash_key)".into());
        }
        if let Some(name) = &self.sticky_cookie {
            if mode == Mode::Tcp {
                return Err("sticky_cookie: only in http mode (tcp mode sees no cookies; use strategy \"hash\" to pin a client by its IP)".into());
            }
            if !is_cookie_name(name) {
                return Err(format!(
                    "sticky_cookie: {name:?} cannot name a cookie (letters, digits and !#$%&'*+-.^_`|~ only)"
                ));
            }
        }
        if self.upstreams.is_empty() {
            return Err(
                "upstreams: at least one upstream is needed (e.g. \"127.0.0.1:3000\")".into(),
            );
        }
        let default_cap = match self.limits.max_conns {
            Some(0) => {
                return Err("limits.max_conns: must be at least 1 (leave it out for no cap)".into())
            }
            c => c,
        };
        let mut upstreams = Vec::with_capacity(self.upstreams.len());
        for (i, u) in self.upstreams.iter().enumerate() {
            let mut u = parse_upstream(u).map_err(|e| format!("upstreams[{i}]: {e}"))?;
            u.max_conns = u.max_conns.or(default_cap);
            upstreams.push(u);
        }
        let health = match &self.health {
            None => None,
            Some(h) => {
                if let Some(p) = &h.path {
                    if !p.starts_with('/') || p.parse::<http::uri::PathAndQuery>().is_err() {
                        return Err(format!(
                            "health.path: expected a path like \"/health\"; got {p:?}"
                        ));
                    }
                }
                let interval = dur("health.interval", &h.interval, 2000)?;
                if interval < Duration::from_millis(10) {
                    return Err("health.interval: must be at least 10ms".into());
                }
                let rise = h.rise.unwrap_or(2);
                let fall = h.fall.unwrap_or(3);
                if rise == 0 {
                    return Err("health.rise: must be at least 1".into());
                }
                if fall == 0 {
                    return Err("health.fall: must be at least 1".into());
                }
                Some(Health {
                    path: h.path.clone(),
                    interval,
                    timeout: dur("health.timeout", &h.timeout, 1000)?,
                    rise,
                    fall,
                })
            }
        };
        let t = &self.timeouts;
        let max_header_bytes = self.limits.max_header_bytes.unwrap_or(16384);
        if !(8192..=1 << 20).contains(&max_header_bytes) {
            return Err(format!(
                "limits.max_header_bytes: must be between 8192 and 1048576; got {max_header_bytes}"
            ));
        }
        let max_connections = self.limits.max_connections.unwrap_or(10_000);
        if max_connections == 0 {
            return Err("limits.max_connections: must be at least 1".into());
        }
        let max_upstream_conns = self.limits.max_upstream_conns.unwrap_or(1024);
        if max_upstream_conns == 0 {
            return Err("limits.max_upstream_conns: must be at least 1".into());
        }
        let queue = self.limits.queue.unwrap_or(10_000);
        if self.limits.max_conns_per_ip == Some(0) {
            return Err(
                "limits.max_conns_per_ip: must be at least 1 (leave it out for no limit)".into(),
            );
        }
        if let Some(tls) = &self.tls {
            if mode == Mode::Tcp {
                return Err(
                    "tls: TLS termination is for http mode (remove tls, or use mode \"http\")"
                        .into(),
                );
            }
            if tls.cert.is_empty() || tls.key.is_empty() {
                return Err("tls: both cert and key files are needed".into());
            }
        }
        if let Some(a) = &self.admin {
            check_host_port(a).map_err(|e| format!("admin: {e}"))?;
        }
        let workers = self.workers.unwrap_or(0);
        if workers > 256 {
            return Err(format!("workers: must be at most 256; got {workers}"));
        }
        let name = self.name.clone().unwrap_or_else(|| "balancer".into());
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "name: expected a word without spaces; got {name:?}"
            ));
        }
        Ok(Settings {
            name,
            listen: self.listen.clone(),
            mode,
            strategy,
            hash_key,
            sticky_cookie: self.sticky_cookie.clone(),
            upstreams,
            health,
            retries: self.retries.unwrap_or(2),
            connect_timeout: dur("timeouts.connect", &t.connect, 2000)?,
            header_read_timeout: dur("timeouts.header_read", &t.header_read, 10_000)?,
            idle_timeout: dur("timeouts.idle", &t.idle, 60_000)?,
            upstream_timeout: dur("timeouts.upstream", &t.upstream, 30_000)?,
            upstream_idle: dur("timeouts.upstream_idle", &t.upstream_idle, 4000)?,
            down_for: dur("timeouts.down", &t.down, 10_000)?,
            drain_timeout: dur("timeouts.drain", &t.drain, 30_000)?,
            tls: self.tls.clone(),
            max_header_bytes,
            max_connections,
            max_upstream_conns,
            queue,
            queue_timeout: dur("timeouts.queue", &t.queue, 10_000)?,
            max_conns_per_ip: self.limits.max_conns_per_ip,
            admin: self.admin.clone(),
            access_log: self.access_log.unwrap_or(true),
            workers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> BalancerSpec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn minimal_spec_gets_defaults() {
        let s = spec(r#"{"listen":"0.0.0.0:8080","upstreams":["127.0.0.1:3000"]}"#)
            .resolve()
            .unwrap();
        assert_eq!(s.mode, Mode::Http);
        assert_eq!(s.strategy, Strategy::RoundRobin);
        assert_eq!(s.retries, 2);
        assert_eq!(s.upstreams[0].weight, 1);
    }

    #[test]
    fn bad_strategy_names_the_field() {
        let e =
            spec(r#"{"listen":"0.0.0.0:8080","strategy":"foo","upstreams":["127.0.0.1:3000"]}"#)
                .validate()
                .unwrap_err();
        assert_eq!(
            e,
            "strategy: expected one of round_robin, least_conn, random, hash; got \"foo\""
        );
    }

    #[test]
    fn weights_and_apps_parse() {
        let s = spec(
            r#"{"listen":"[::1]:80","strategy":"hash","hash_key":"cookie:sid","upstreams":[
                "127.0.0.1:3000 weight=3", {"address":"localhost:3001","weight":2}, "app:api"]}"#,
        )
        .resolve()
        .unwrap();
        assert_eq!(s.upstreams[0].weight, 3);
        assert_eq!(s.upstreams[1].target, Target::Addr("localhost:3001".into()));
        assert_eq!(s.upstreams[2].target, Target::App("api".into()));
        assert_eq!(s.hash_key, HashKey::Cookie("sid".into()));
    }

    #[test]
    fn errors_name_fields() {
        let cases = [
            (r#"{"listen":"x","upstreams":["127.0.0.1:1"]}"#, "listen:"),
            (r#"{"listen":"1.2.3.4:1","upstreams":[]}"#, "upstreams:"),
            (
                r#"{"listen":"1.2.3.4:1","upstreams":["a:1","b"]}"#,
                "upstreams[1]:",
            ),
            (
                r#"{"listen":"1.2.3.4:1","upstreams":["a:1 weight=0"]}"#,
                "upstreams[0]: weight",
            ),
            (
                r#"{"listen":"1.2.3.4:1","upstreams":["a:1"],"mode":"udp"}"#,
                "mode:",
            ),
            (
                r#"{"listen":"1.2.3.4:1","upstreams":["a:1"],"timeouts":{"connect":"fast"}}"#,
                "timeouts.connect:",
            ),
            (
                r#"{"listen":"1.2.3.4:1","upstreams":["a:1"],"health":{"path":"health"}}"#,
                "health.path:",
            ),
            (
                r#"{"listen":"1.2.3.4:1","upstreams":["a:1"],"hash_key":"ip"}"#,
                "hash_key:",
            ),
            (
                r#"{"listen":"1.2.3.4:1","upstreams":["a:1"],"limits":{"max_header_bytes":10}}"#,
                "limits.max_header_bytes:",
            ),
            (
                r#"{"listen":"1.2.3.4:1","upstreams":["a:1"],"sticky_cookie":"a b"}"#,
                "sticky_cookie:",
            ),
            (
                r#"{"listen":"1.2.3.4:1","upstreams":["a:1"],"sticky_cookie":""}"#,
                "sticky_cookie:",
            ),
            (
                r#"{"listen":"1.2.3.4:1","upstreams":["a:1"],"sticky_cookie":"srv","mode":"tcp"}"#,
                "sticky_cookie: only in http mode",
            ),
        ];
        for (json, prefix) in cases {
            let e = spec(json).validate().unwrap_err();
            assert!(e.starts_with(prefix), "{json}: {e}");
        }
    }

    #[test]
    fn sticky_cookie_names() {
        for good in ["srv", "cohort_upstream", "SERVERID", "a-b.c~d!"] {
            assert!(is_cookie_name(good), "{good}");
        }
        for bad in ["", "a b", "a=b", "a;b", "é", "a\"b", "a,b", "a\tb"] {
            assert!(!is_cookie_name(bad), "{bad:?}");
        }
        let s = spec(r#"{"listen":"1.2.3.4:1","upstreams":["a:1"],"sticky_cookie":"srv"}"#);
        assert_eq!(s.resolve().unwrap().sticky_cookie.as_deref(), Some("srv"));
    }

    #[test]
    fn connection_caps_in_nginx_words() {
        let s = spec(
            r#"{"listen":"0.0.0.0:8080","upstreams":["127.0.0.1:3000 max_conns=64",
                "127.0.0.1:3001 weight=2 max_conns=8", {"address":"127.0.0.1:3002","max_conns":5},
                "127.0.0.1:3003"],"limits":{"max_conns":100,"max_upstream_conns":200,
                "max_conns_per_ip":10},"timeouts":{"queue":"2s"}}"#,
        )
        .resolve()
        .unwrap();
        let caps: Vec<_> = s.upstreams.iter().map(|u| u.max_conns).collect();
        assert_eq!(caps, [Some(64), Some(8), Some(5), Some(100)]);
        assert_eq!(s.upstreams[1].weight, 2);
        assert_eq!(s.max_upstream_conns, 200);
        assert_eq!(s.max_conns_per_ip, Some(10));
        assert_eq!(s.queue_timeout, Duration::from_secs(2));
        let d = spec(r#"{"listen":"0.0.0.0:8080","upstreams":["127.0.0.1:3000"]}"#)
            .resolve()
            .unwrap();
        assert_eq!(
            (
                d.upstreams[0].max_conns,
                d.max_upstream_conns,
                d.max_conns_per_ip,
                d.queue
            ),
            (None, 1024, None, 10_000)
        );
        let bad = [
            (r#"["a:1 max_conns=0"]"#, "upstreams[0]: max_conns"),
            (r#"["a:1 max_conns=x"]"#, "upstreams[0]: unexpected"),
            (r#"["a:1 maxconns=1"]"#, "upstreams[0]: unexpected"),
        ];
        for (ups, prefix) in bad {
            let e = spec(&format!(r#"{{"listen":"1.2.3.4:1","upstreams":{ups}}}"#))
                .validate()
                .unwrap_err();
            assert!(e.starts_with(prefix), "{ups}: {e}");
        }
        for limits in [
            r#"{"max_upstream_conns":0}"#,
            r#"{"max_conns":0}"#,
            r#"{"max_conns_per_ip":0}"#,
        ] {
            let e = spec(&format!(
                r#"{{"listen":"1.2.3.4:1","upstreams":["a:1"],"limits":{limits}}}"#
            ))
            .validate()
            .unwrap_err();
            assert!(e.starts_with("limits."), "{limits}: {e}");
        }
    }

    #[test]
    fn roundtrips_through_json() {
        let s = spec(
            r#"{"listen":"0.0.0.0:8080","upstreams":["127.0.0.1:3000"],"timeouts":{"drain":"5s"}}"#,
        );
        let again: BalancerSpec =
            serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(s, again);
    }
}
