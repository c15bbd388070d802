//! Readiness and liveness probes of an app (`readiness = { http = "/health", … }`,
//! `liveness = { tcp = 6379 }`, `{ exec = "redis-cli ping" }`), with Kubernetes' fields and
//! defaults: what a probe checks and how often. Parsing and validation only (pure functions); the
//! daemon runs them (`daemon::supervisor::probes`, `daemon::probe_check`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::time::Duration;

/// Kubernetes' defaults: `periodSeconds` 10, `timeoutSeconds` 1, `failureThreshold` 3,
/// `successThreshold` 1, `initialDelaySeconds` 0.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
pub const DEFAULT_SUCCESS_THRESHOLD: u32 = 1;

/// The shortest interval and timeout accepted (a probe every few ms is a load generator).
pub const MIN_INTERVAL: Duration = Duration::from_millis(50);
pub const MIN_TIMEOUT: Duration = Duration::from_millis(10);

/// Which of an app's probes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    Readiness,
    Liveness,
}

impl ProbeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Readiness => "readiness",
            ProbeKind::Liveness => "liveness",
        }
    }
}

/// One probe: what it checks and its timing (Kubernetes semantics).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ProbeSpec {
    pub check: ProbeCheck,
    /// Time between the starts of two checks (`periodSeconds`).
    #[serde(with = "millis")]
    pub interval: Duration,
    /// A check that has not answered after this fails.
    #[serde(with = "millis")]
    pub timeout: Duration,
    /// Consecutive failures that make a ready process not ready (readiness) or restart it (liveness).
    pub failure_threshold: u32,
    /// Consecutive successes that make a not-ready process ready (liveness: always 1, as Kubernetes).
    pub success_threshold: u32,
    /// Wait this long after the process started before the first check.
    #[serde(with = "millis")]
    pub initial_delay: Duration,
}

/// What a probe checks.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProbeCheck {
    /// HTTP GET; succeeds on a status in `status` (default: 200-399, as Kubernetes).
    Http {
        /// A full URL (`http://127.0.0.1:3000/health`) when given one; else None and `path`.
        host: Option<String>,
        /// The port: given (`port`, or in the URL), or None for the app's own listening port.
        port: Option<u16>,
        /// Path and query, starting with `/`.
        path: String,
        /// The statuses that count as success; empty: 200-399.
        status: Vec<u16>,
    },
    /// A TCP connection is accepted (`tcp = 6379` or `tcp = "127.0.0.1:6379"`).
    Tcp { host: Option<String>, port: u16 },
    /// A command run by `sh -c` in the app's folder and environment exits 0.
    Exec { command: String },
}

impl ProbeCheck {
    /// A short description: `http GET :3000/health`, `tcp 127.0.0.1:6379`, `exec redis-cli ping`.
    pub fn describe(&self) -> String {
        match self {
            ProbeCheck::Http {
                host, port, path, ..
            } => {
                let port = port
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "<app's port>".into());
                format!(
                    "http GET {}:{port}{path}",
                    host.as_deref().unwrap_or("127.0.0.1")
                )
            }
            ProbeCheck::Tcp { host, port } => {
                format!("tcp {}:{port}", host.as_deref().unwrap_or("127.0.0.1"))
            }
            ProbeCheck::Exec { command } => format!("exec {command}"),
        }
    }

    /// Whether `status` counts as success.
    pub fn status_ok(expected: &[u16], status: u16) -> bool {
        if expected.is_empty() {
            (200..400).contains(&status)
        } else {
            expected.contains(&status)
        }
    }
}

/// A duration as users write it: `500ms`, `1.5s`.
pub fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 || ms % 100 != 0 {
        format!("{ms}ms")
    } else {
        format!("{}s", ms as f64 / 1000.0)
    }
}

/// The fields a probe object may have.
const FIELDS: &[&str] = &[
    "http",
    "tcp",
    "exec",
    "port",
    "status",
    "interval",
    "timeout",
    "failure_threshold",
    "success_threshold",
    "initial_delay",
];

/// Reads `readiness` and `liveness` of an app object; errors name `at` (`file: apps[0]`), the app
/// and the field: `cohort.toml: apps[0].readiness.interval (app "api"): …`.
pub fn from_fields(
    obj: &Map<String, Value>,
    at: &str,
    app: &str,
) -> Result<(Option<ProbeSpec>, Option<ProbeSpec>), String> {
    let one = |kind: ProbeKind| -> Result<Option<ProbeSpec>, String> {
        match obj.get(kind.as_str()) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => parse(v, kind)
                .map(Some)
                .map_err(|(field, e)| format!("{at}.{}{field} (app {app:?}): {e}", kind.as_str())),
        }
    };
    Ok((one(ProbeKind::Readiness)?, one(ProbeKind::Liveness)?))
}

/// Parses one probe object; an error is (the field path under the probe, e.g. `.interval`, why).
pub fn parse(value: &Value, kind: ProbeKind) -> Result<ProbeSpec, (String, String)> {
    let Value::Object(o) = value else {
        return Err((
            String::new(),
            format!(
                "expected a probe like {{ http = \"/health\" }}, {{ tcp = 6379 }} or {{ exec = \"cmd\" }}, got {}",
                short(value)
            ),
        ));
    };
    let err = |field: &str, why: String| (format!(".{field}"), why);
    for k in o.keys() {
        if !FIELDS.contains(&k.as_str()) {
            return Err(err(
                k,
                "unknown field (a probe is one of http, tcp or exec, with port, status, interval, timeout, failure_threshold, success_threshold, initial_delay)".to_string(),
            ));
        }
    }
    let kinds: Vec<&str> = ["http", "tcp", "exec"]
        .into_iter()
        .filter(|k| o.get(*k).is_some_and(|v| !v.is_null()))
        .collect();
    let port = match o.get("port") {
        None | Some(Value::Null) => None,
        Some(v) => Some(port_of(v).map_err(|e| err("port", e))?),
    };
    let check = match kinds.as_slice() {
        ["http"] => http(&o["http"], port, o.get("status")).map_err(|(f, e)| err(f, e))?,
        ["tcp"] => {
            if port.is_some() {
                return Err(err(
                    "port",
                    "not used by a tcp probe (write tcp = PORT or tcp = \"host:port\")".into(),
                ));
            }
            tcp(&o["tcp"]).map_err(|e| err("tcp", e))?
        }
        ["exec"] => {
            let command = match &o["exec"] {
                Value::String(s) if !s.trim().is_empty() => s.clone(),
                Value::Array(a) if !a.is_empty() => {
                    let words: Option<Vec<&str>> = a.iter().map(Value::as_str).collect();
                    let words = words.ok_or_else(|| {
                        err(
                            "exec",
                            "expected a command (a string, or a list of strings)".into(),
                        )
                    })?;
                    shell_words::join(words)
                }
                v => {
                    return Err(err(
                        "exec",
                        format!(
                            "expected a command like \"redis-cli ping\", got {}",
                            short(v)
                        ),
                    ))
                }
            };
            if port.is_some() {
                return Err(err("port", "not used by an exec probe".into()));
            }
            ProbeCheck::Exec { command }
        }
        [] => {
            return Err((
                String::new(),
                "no check: give one of http = \"/path\", tcp = PORT or exec = \"command\"".into(),
            ))
        }
        more => {
            return Err((
                String::new(),
                format!(
                    "{} given: a probe does one check (http, tcp or exec)",
                    more.join(" and ")
                ),
            ))
        }
    };
    if o.get("status").is_some_and(|v| !v.is_null()) && !matches!(check, ProbeCheck::Http { .. }) {
        return Err(err(
            "status",
            "only an http probe has an expected status".into(),
        ));
    }
    let dur = |field: &str, default: Duration| -> Result<Duration, (String, String)> {
        match o.get(field) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::String(s)) => super::duration::parse(s).map_err(|e| err(field, e)),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(ms) if ms.is_finite() && ms >= 0.0 => {
                    Ok(Duration::from_micros((ms * 1000.0) as u64))
                }
                _ => Err(err(
                    field,
                    format!("expected a duration like \"1s\" or milliseconds, got {n}"),
                )),
            },
            Some(v) => Err(err(
                field,
                format!("expected a duration like \"1s\", got {}", short(v)),
            )),
        }
    };
    let count = |field: &str, default: u32| -> Result<u32, (String, String)> {
        match o.get(field) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => match v.as_u64() {
                Some(n) if (1..=1_000_000).contains(&n) => Ok(n as u32),
                _ => Err(err(
                    field,
                    format!(
                        "expected a whole number of checks, at least 1, got {}",
                        short(v)
                    ),
                )),
            },
        }
    };
    let spec = ProbeSpec {
        check,
        interval: dur("interval", DEFAULT_INTERVAL)?,
        timeout: dur("timeout", DEFAULT_TIMEOUT)?,
        failure_threshold: count("failure_threshold", DEFAULT_FAILURE_THRESHOLD)?,
        success_threshold: count("success_threshold", DEFAULT_SUCCESS_THRESHOLD)?,
        initial_delay: dur("initial_delay", Duration::ZERO)?,
    };
    self::check(&spec, kind).map_err(|(f, e)| (format!(".{f}"), e))?;
    Ok(spec)
}

/// The rules a probe obeys (also for a dump's specs): an error is (field, why).
pub fn check(spec: &ProbeSpec, kind: ProbeKind) -> Result<(), (&'static str, String)> {
    if spec.interval < MIN_INTERVAL {
        return Err((
            "interval",
            format!("{:?} is too short (at least 50ms)", spec.interval),
        ));
    }
    if spec.timeout < MIN_TIMEOUT {
        return Err((
            "timeout",
            format!("{:?} is too short (at least 10ms)", spec.timeout),
        ));
    }
    if spec.failure_threshold == 0 {
        return Err(("failure_threshold", "must be at least 1".into()));
    }
    if spec.success_threshold == 0 {
        return Err(("success_threshold", "must be at least 1".into()));
    }
    if kind == ProbeKind::Liveness && spec.success_threshold != 1 {
        return Err((
            "success_threshold",
            "must be 1 for a liveness probe (as in Kubernetes: one success means alive)".into(),
        ));
    }
    if let ProbeCheck::Http { path, .. } = &spec.check {
        if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err((
                "http",
                format!("{path:?} is not a path (it starts with / and has no spaces)"),
            ));
        }
    }
    Ok(())
}

/// `http = "/health"` or `http = "http://host:port/path"`.
fn http(
    value: &Value,
    port: Option<u16>,
    status: Option<&Value>,
) -> Result<ProbeCheck, (&'static str, String)> {
    let Value::String(text) = value else {
        return Err((
            "http",
            format!(
                "expected a path like \"/health\" or a URL, got {}",
                short(value)
            ),
        ));
    };
    let t = text.trim();
    let status = match status {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(status_of)
            .collect::<Result<_, _>>()
            .map_err(|e| ("status", e))?,
        Some(v) => vec![status_of(v).map_err(|e| ("status", e))?],
    };
    if t.starts_with('/') {
        return Ok(ProbeCheck::Http {
            host: None,
            port,
            path: t.to_string(),
            status,
        });
    }
    if t.starts_with("https://") {
        return Err(("http", "https is not supported: probe the app over plain HTTP on loopback (Kubernetes probes skip certificate checks anyway)".into()));
    }
    let Some(rest) = t.strip_prefix("http://") else {
        return Err(("http", format!("{t:?}: expected a path like \"/health\" or a URL like \"http://127.0.0.1:3000/health\"")));
    };
    if port.is_some() {
        return Err((
            "port",
            "give the port in the URL, or http = \"/path\" with port".into(),
        ));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let (host, port) = split_host_port(authority).map_err(|e| ("http", format!("{t:?}: {e}")))?;
    Ok(ProbeCheck::Http {
        host: Some(host),
        port: Some(port.unwrap_or(80)),
        path,
        status,
    })
}

/// `tcp = 6379` or `tcp = "host:port"`.
fn tcp(value: &Value) -> Result<ProbeCheck, String> {
    match value {
        Value::Number(_) => Ok(ProbeCheck::Tcp {
            host: None,
            port: port_of(value)?,
        }),
        Value::String(s) => match s.trim().parse::<u16>() {
            Ok(p) if p > 0 => Ok(ProbeCheck::Tcp {
                host: None,
                port: p,
            }),
            _ => match split_host_port(s.trim())? {
                (host, Some(port)) => Ok(ProbeCheck::Tcp {
                    host: Some(host),
                    port,
                }),
                (_, None) => Err(format!("{s:?}: expected a port or host:port")),
            },
        },
        v => Err(format!(
            "expected a port (6379) or \"host:port\", got {}",
            short(v)
        )),
    }
}

fn split_host_port(text: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let Some(end) = rest.find(']') else {
            return Err("an IPv6 address needs its closing ]".into());
        };
        (rest[..end].to_string(), rest[end + 1..].strip_prefix(':'))
    } else {
        match text.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (text.to_string(), None),
        }
    };
    if host.is_empty() || host.contains(['/', ' ', '@']) {
        return Err(format!("{host:?} is not a host"));
    }
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => Some(p),
            _ => return Err(format!("{p:?} is not a port (1-65535)")),
        },
    };
    Ok((host, port))
}

fn port_of(v: &Value) -> Result<u16, String> {
    match v
        .as_u64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
    {
        Some(p) if (1..=65535).contains(&p) => Ok(p as u16),
        _ => Err(format!("expected a TCP port (1-65535), got {}", short(v))),
    }
}

fn status_of(v: &Value) -> Result<u16, String> {
    match v.as_u64() {
        Some(s) if (100..=599).contains(&s) => Ok(s as u16),
        _ => Err(format!(
            "expected an HTTP status (100-599) or a list of them, got {}",
            short(v)
        )),
    }
}

fn short(v: &Value) -> String {
    match v {
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
        other => other.to_string(),
    }
}

/// A probe given on the command line (`--readiness-http /health`, `--liveness-tcp 6379`,
/// `--readiness-exec "cmd"`) with the default timing.
pub fn from_flag(kind: ProbeKind, check: &str, value: &str) -> Result<ProbeSpec, String> {
    let mut o = Map::new();
    let v = match check {
        "tcp" => value
            .parse::<u64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(value.into())),
        _ => Value::String(value.into()),
    };
    o.insert(check.to_string(), v);
    parse(&Value::Object(o), kind).map_err(|(_, e)| format!("--{}-{check}: {e}", kind.as_str()))
}

/// Durations as whole milliseconds in JSON (dump.json, the API).
mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis().min(u64::MAX as u128) as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn probe(v: Value) -> Result<ProbeSpec, String> {
        parse(&v, ProbeKind::Readiness).map_err(|(f, e)| format!("{f}: {e}"))
    }

    #[test]
    fn accepted_probes() {
        let p = probe(
            json!({"http": "/health", "port": 3000, "interval": "1s", "timeout": "500ms",
            "failure_threshold": 3, "success_threshold": 2, "initial_delay": "0s"}),
        )
        .unwrap();
        assert_eq!(
            p.check,
            ProbeCheck::Http {
                host: None,
                port: Some(3000),
                path: "/health".into(),
                status: vec![]
            }
        );
        assert_eq!(p.interval, Duration::from_secs(1));
        assert_eq!(p.timeout, Duration::from_millis(500));
        assert_eq!((p.failure_threshold, p.success_threshold), (3, 2));
        let p = probe(json!({"tcp": 6379})).unwrap();
        assert_eq!(
            p.check,
            ProbeCheck::Tcp {
                host: None,
                port: 6379
            }
        );
        assert_eq!(p.interval, DEFAULT_INTERVAL);
        assert_eq!(p.timeout, DEFAULT_TIMEOUT);
        let p = probe(json!({"tcp": "127.0.0.1:6379"})).unwrap();
        assert_eq!(
            p.check,
            ProbeCheck::Tcp {
                host: Some("127.0.0.1".into()),
                port: 6379
            }
        );
        let p = probe(json!({"exec": "redis-cli ping"})).unwrap();
        assert_eq!(
            p.check,
            ProbeCheck::Exec {
                command: "redis-cli ping".into()
            }
        );
        let p = probe(json!({"exec": ["redis-cli", "-p", "6380", "ping"]})).unwrap();
        assert_eq!(
            p.check,
            ProbeCheck::Exec {
                command: "redis-cli -p 6380 ping".into()
            }
        );
        let p =
            probe(json!({"http": "http://[::1]:8080/ready?x=1", "status": [200, 204]})).unwrap();
        assert_eq!(
            p.check,
            ProbeCheck::Http {
                host: Some("::1".into()),
                port: Some(8080),
                path: "/ready?x=1".into(),
                status: vec![200, 204]
            }
        );
        let p = probe(json!({"http": "http://localhost", "status": 204, "interval": 250})).unwrap();
        assert_eq!(p.interval, Duration::from_millis(250));
        assert!(matches!(p.check, ProbeCheck::Http { port: Some(80), .. }));
    }

    #[test]
    fn refused_probes_name_the_field() {
        let cases = [
            (json!({"grpc": 50051}), ".grpc: unknown field"),
            (json!({}), ": no check"),
            (json!({"http": "/a", "tcp": 1}), ": http and tcp given"),
            (
                json!({"tcp": 6379, "failure_threshold": 0}),
                ".failure_threshold: expected a whole number",
            ),
            (
                json!({"tcp": 6379, "success_threshold": -1}),
                ".success_threshold: expected",
            ),
            (
                json!({"tcp": 6379, "interval": "soon"}),
                ".interval: expected a duration",
            ),
            (json!({"tcp": 6379, "interval": "1ms"}), ".interval: "),
            (
                json!({"tcp": 6379, "timeout": true}),
                ".timeout: expected a duration",
            ),
            (json!({"tcp": 0}), ".tcp: expected a TCP port"),
            (json!({"tcp": 6379, "port": 1}), ".port: not used"),
            (json!({"http": "health"}), ".http: "),
            (
                json!({"http": "https://x/health"}),
                ".http: https is not supported",
            ),
            (
                json!({"http": "/h", "port": 70000}),
                ".port: expected a TCP port",
            ),
            (
                json!({"http": "/h", "status": 42}),
                ".status: expected an HTTP status",
            ),
            (json!({"exec": ""}), ".exec: expected a command"),
            (
                json!({"exec": "true", "status": 200}),
                ".status: only an http probe",
            ),
            (json!("/health"), ": expected a probe like"),
        ];
        for (v, want) in cases {
            let got = probe(v.clone()).unwrap_err();
            assert!(got.starts_with(want), "{v}: {got} (wanted {want})");
        }
        let e = parse(
            &json!({"tcp": 1, "success_threshold": 2}),
            ProbeKind::Liveness,
        )
        .unwrap_err();
        assert_eq!(e.0, ".success_threshold");
    }

    #[test]
    fn errors_name_file_app_and_field() {
        let obj = json!({"name": "api", "readiness": {"http": "/h", "interval": "5d"}});
        let e = from_fields(obj.as_object().unwrap(), "c.toml: apps[0]", "api").unwrap_err();
        assert!(
            e.starts_with("c.toml: apps[0].readiness.interval (app \"api\"): expected a duration"),
            "{e}"
        );
        let obj = json!({"liveness": {"exec": "true"}});
        let (r, l) = from_fields(obj.as_object().unwrap(), "x", "a").unwrap();
        assert!(r.is_none() && l.is_some());
    }

    #[test]
    fn statuses_like_kubernetes() {
        let cases = [
            (&[][..], 200, true),
            (&[][..], 302, true),
            (&[][..], 399, true),
            (&[][..], 404, false),
            (&[][..], 500, false),
            (&[][..], 199, false),
            (&[204][..], 200, false),
            (&[204][..], 204, true),
        ];
        for (expected, status, ok) in cases {
            assert_eq!(
                ProbeCheck::status_ok(expected, status),
                ok,
                "{expected:?} {status}"
            );
        }
    }

    #[test]
    fn round_trips_through_json() {
        let p = probe(json!({"http": "/h", "interval": "1.5s"})).unwrap();
        let text = serde_json::to_string(&p).unwrap();
        assert!(text.contains("\"interval\":1500"), "{text}");
        assert_eq!(serde_json::from_str::<ProbeSpec>(&text).unwrap(), p);
        assert!(from_flag(ProbeKind::Liveness, "tcp", "6379").is_ok());
        assert!(from_flag(ProbeKind::Readiness, "http", "nope").is_err());
    }
}
