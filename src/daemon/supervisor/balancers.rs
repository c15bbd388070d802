//! Load balancers as supervised apps: the command line of `cohort balance` for a balancer spec,
//! with `app:NAME` upstreams resolved to the ports that app's workers listen on, and an admin
//! address on loopback so `describe` can show per-upstream state.

use super::table::Want;
use super::{Event, Supervisor};
use crate::api::Status;
use serde_json::Value;

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
