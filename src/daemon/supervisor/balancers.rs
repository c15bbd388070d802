//! Load balancers as supervised apps: the command line of `cohort balance` for a balancer spec,
//! with `app:NAME` upstreams resolved to the ports that app's workers listen on, and an admin
//! address on loopback so `describe` can show per-upstream state; an `app:NAME` upstream whose
//! every process fails its readiness probe is held out through that address (`PUT /ready`).

use super::table::Want;
use super::{Event, Supervisor};
use crate::api::Status;
use crate::balancer::admin::{READY_TOKEN_ENV, READY_TOKEN_HEADER};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

impl Supervisor {
    /// `["balance", "--spec-json", …]` for balancer `name`, or `Ok(None)` when an `app:NAME`
    /// upstream does not listen yet (try again shortly).
    pub(super) fn balancer_argv(
        &mut self,
        name: &str,
        spec: &Value,
    ) -> Result<Option<Vec<String>>, String> {
        let mut spec = spec.clone();
        let entries = spec
            .get("upstreams")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut resolved = Vec::new();
        for entry in entries {
            let (text, weight) = match &entry {
                Value::String(s) => {
                    let mut words = s.split_whitespace();
                    (
                        words.next().unwrap_or("").to_string(),
                        words.next().map(str::to_string),
                    )
                }
                Value::Object(o) => (
                    o.get("address")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    o.get("weight").map(|w| format!("weight={w}")),
                ),
                _ => (String::new(), None),
            };
            let Some(app) = text.strip_prefix("app:") else {
                resolved.push(entry);
                continue;
            };
            if !self.apps.contains_key(app) {
                return Err(format!(
                    "upstream app:{app}: no app named {app:?} (start it first, or declare it in the same config file)"
                ));
            }
            let addrs = self.sockets.group(app).tcp_addrs();
            if addrs.is_empty() {
                return Ok(None);
            }
            for a in addrs {
                let ip = if a.ip().is_unspecified() {
                    std::net::IpAddr::from([127, 0, 0, 1])
                } else {
                    a.ip()
                };
                let addr = std::net::SocketAddr::new(ip, a.port());
                resolved.push(Value::String(match &weight {
                    Some(w) => format!("{addr} {w}"),
                    None => addr.to_string(),
                }));
            }
        }
        spec["upstreams"] = Value::Array(resolved);
        if spec.get("admin").is_none_or(Value::is_null) {
            // A loopback port for `describe` to read the balancer's counters from.
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .map_err(|e| format!("cannot pick an admin port: {e}"))?;
            spec["admin"] = Value::String(format!("127.0.0.1:{port}"));
        }
        if let Some(id) = self.apps.get(name).and_then(|a| a.procs.first()) {
            if let Some(p) = self.procs.get_mut(id) {
                p.admin = spec
                    .get("admin")
                    .and_then(Value::as_str)
                    .map(str::to_string);
            }
        }
        let json =
            serde_json::to_string(&spec).map_err(|e| format!("encoding the balancer spec: {e}"))?;
        Ok(Some(vec!["balance".into(), "--spec-json".into(), json]))
    }

    /// Tries to start process `id` again in a moment (a balancer waiting for its upstream app).
    pub(super) fn retry_spawn(&mut self, id: u32, keep_old: bool) {
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        p.gen += 1;
        p.want = Want::Run;
        if p.pid.is_none() {
            p.status = Status::Launching;
        }
        let gen = p.gen;
        self.after(200, Event::SpawnRetry { id, gen, keep_old });
    }
}

/// Per upstream address of a balancer: (its app is ready, how many times one of its processes
/// stopped being ready).
type UpstreamStates = BTreeMap<String, (bool, u64)>;

/// Pushes an `app:NAME` upstream's readiness to one balancer process, in order: the latest
/// wanted state is sent (retried while the balancer's admin endpoint is not up yet).
pub(super) struct ReadyPusher {
    wanted: tokio::sync::watch::Sender<UpstreamStates>,
    task: tokio::task::AbortHandle,
}

impl Drop for ReadyPusher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The token of a balancer's `PUT /ready` (in COHORT_HOME, 0600, kept across daemon restarts
/// and updates so balancers already running still accept it).
fn ready_token(home: &crate::home::Home) -> Option<String> {
    let path = home.root.join("balancer.token");
    let mut t = String::new();
    if crate::home::private::open_read(&path)
        .and_then(|mut f| std::io::Read::read_to_string(&mut f, &mut t))
        .is_ok()
        && t.trim().len() >= 32
    {
        return Some(t.trim().to_string());
    }
    let mut bytes = [0u8; 16];
    let mut f = std::fs::File::open("/dev/urandom").ok()?;
    std::io::Read::read_exact(&mut f, &mut bytes).ok()?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    crate::home::private::write_atomic(&path, token.as_bytes()).ok()?;
    Some(token)
}

impl Supervisor {
    /// The environment entry that lets a balancer accept the daemon's `PUT /ready`.
    pub(super) fn balancer_token_env(&self) -> Option<(String, String)> {
        ready_token(&self.home).map(|t| (READY_TOKEN_ENV.to_string(), t))
    }

    /// Holds out of every balancer the `app:NAME` upstreams whose every process fails its
    /// readiness probe, and lets them back when one passes (docs/health.md, "Probes").
    pub(super) fn sync_balancer_readiness(&mut self) {
        let mut wanted: HashMap<(u32, i32), (String, UpstreamStates)> = HashMap::new();
        let balancer_apps: Vec<(String, Value)> = self
            .apps
            .values()
            .filter_map(|a| a.spec.balancer.clone().map(|b| (a.spec.name.clone(), b)))
            .collect();
        for (name, spec) in balancer_apps {
            let mut states = BTreeMap::new();
            for app in app_upstreams(&spec) {
                let Some(target) = self.apps.get(&app) else {
                    continue;
                };
                if target.spec.readiness.is_none() {
                    continue;
                }
                let ready = target.procs.iter().any(|id| self.proc_serving(*id));
                let epoch = self.probes.not_ready_epochs.get(&app).copied().unwrap_or(0);
                for a in self.sockets.group(&app).tcp_addrs() {
                    let ip = if a.ip().is_unspecified() {
                        std::net::IpAddr::from([127, 0, 0, 1])
                    } else {
                        a.ip()
                    };
                    let addr = std::net::SocketAddr::new(ip, a.port()).to_string();
                    states.insert(addr, (ready, epoch));
                }
            }
            if states.is_empty() {
                continue;
            }
            let Some(app) = self.apps.get(&name) else {
                continue;
            };
            let admin = app
                .procs
                .iter()
                .find_map(|id| self.procs.get(id).and_then(|p| p.admin.clone()));
            let Some(admin) = admin else { continue };
            for id in &app.procs {
                if let Some(pid) = self.procs.get(id).and_then(|p| p.pid) {
                    wanted.insert((*id, pid), (admin.clone(), states.clone()));
                }
            }
        }
        self.probes
            .pushers
            .retain(|key, _| wanted.contains_key(key));
        for (key, (admin, states)) in wanted {
            match self.probes.pushers.get(&key) {
                Some(p) => {
                    p.wanted.send_if_modified(|old| {
                        let changed = *old != states;
                        *old = states.clone();
                        changed
                    });
                }
                None => {
                    if let Some(pusher) = self.start_pusher(&admin, states) {
                        self.probes.pushers.insert(key, pusher);
                    }
                }
            }
        }
    }

    /// The task that sends one balancer process its upstreams' readiness.
    fn start_pusher(&self, admin: &str, states: UpstreamStates) -> Option<ReadyPusher> {
        let addr: std::net::SocketAddr = admin.parse().ok()?;
        let (_, token) = self.balancer_token_env()?;
        let (tx, mut rx) = tokio::sync::watch::channel(states);
        let task = tokio::spawn(async move {
            // What the balancer has now: nothing held (a new balancer starts with all up, and
            // its pool is new).
            let mut sent = UpstreamStates::new();
            loop {
                let now = rx.borrow_and_update().clone();
                for (upstream, (ready, epoch)) in &now {
                    let before = sent.get(upstream).copied().unwrap_or((true, 0));
                    if before == (*ready, *epoch) {
                        continue;
                    }
                    // A worker stopped being ready since: close the idle connections that may
                    // lead to it, so the next requests take new (steered) ones.
                    let flush = if *epoch != before.1 { "&flush=1" } else { "" };
                    let path = format!("/ready?upstream={upstream}&ready={ready}{flush}");
                    let mut tries = 0;
                    loop {
                        let header = (READY_TOKEN_HEADER, token.as_str());
                        match crate::daemon::probe::put(addr, &path, header).await {
                            Ok(200) | Ok(404) => break,
                            Ok(code) => {
                                crate::report!(
                                    "cohort: balancer admin {addr}: PUT {path} answered {code}"
                                );
                                break;
                            }
                            Err(_) if tries < 100 => {
                                tries += 1;
                                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                            }
                            Err(e) => {
                                crate::report!("cohort: balancer admin {addr}: {e}; {upstream} stays as it was");
                                break;
                            }
                        }
                    }
                }
                sent = now;
                if rx.changed().await.is_err() {
                    return;
                }
            }
        });
        Some(ReadyPusher {
            wanted: tx,
            task: task.abort_handle(),
        })
    }
}

/// The app names of a balancer spec's `app:NAME` upstreams.
fn app_upstreams(spec: &Value) -> Vec<String> {
    spec.get("upstreams")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| match e {
            Value::String(s) => s.split_whitespace().next().map(str::to_string),
            Value::Object(o) => o.get("address").and_then(Value::as_str).map(str::to_string),
            _ => None,
        })
        .filter_map(|t| t.strip_prefix("app:").map(str::to_string))
        .collect()
}
