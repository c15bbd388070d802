//! Autoscaling inside the supervisor: while some app has `instances = { min, max }`, a fast tick
//! (every [`SAMPLE_MS`]) measures each ready worker's busyness and the slots' accept queues; every
//! `interval` the pure policy (`scale_policy::decide`) turns the averages into add N / remove one
//! / hold, and this module acts through the same path as `cohort scale` (`resize`: new workers get
//! connections only once ready, removed ones drain first). Every change, and every new kind of
//! hold, goes to daemon.log with its inputs; the last changes show in `describe`.
//!
//! Busyness is read from `/proc/<pid>/schedstat` of the worker's main thread (a Node worker's
//! event loop): time on a CPU plus time waiting for one, over wall time. A loop that is runnable
//! but not running is busy too: its requests wait. Where schedstat is missing, the process's CPU
//! time from `/proc/<pid>/stat` is used.

use super::scale_policy::{self, Decision, Knobs, Memory};
use super::table::Want;
use super::{Event, Supervisor};
use crate::api::{AutoscaleInfo, ScaleEvent, Status};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};
use tokio::task::AbortHandle;

/// How often busyness and queues are read while some app is autoscaled.
pub(super) const SAMPLE_MS: u64 = 250;
/// Scale events kept per app for `describe`.
const EVENTS_KEPT: usize = 10;
/// How long the older workers get no new connections after a rebalance, so the clients whose
/// keep-alive connection they closed reconnect to the new workers (SO_REUSEPORT's hash would
/// send some back to the old ones; with few clients, all of them).
const REBALANCE_STEER_MS: u64 = 500;
/// Hold lines in daemon.log: at most one per this many seconds per app (changes always log).
const HOLD_LOG_EVERY_S: u64 = 10;
/// A balancer's in-flight count older than this is not used.
const IN_FLIGHT_FRESH_MS: u64 = 3_000;

/// One app's measurements and memory.
struct AppScaling {
    memory: Memory,
    window_start: Instant,
    /// Busyness samples of the current window, by pid.
    busy: HashMap<i32, Vec<f64>>,
    /// The highest accept-queue total seen in the window.
    queued_max: u32,
    /// Requests in flight to this app through cohort balancers, and when it was read.
    in_flight: Option<(u32, Instant)>,
    /// The last scale events (newest last).
    events: VecDeque<ScaleEvent>,
    /// The kind of the last hold logged, and when (a new kind is logged, at most once per
    /// [`HOLD_LOG_EVERY_S`]).
    last_hold: String,
    last_hold_at: Option<Instant>,
    /// The last decision's reason (what the policy thinks now).
    now: String,
    ups: u64,
    downs: u64,
    /// Workers added by the last scale up, and the share of connections to move to them once
    /// they are all ready (see [`Supervisor::rebalance_when_ready`]).
    rebalance: Option<(Vec<u32>, f64)>,
    /// Older workers steered out of new connections while their closed keep-alive clients
    /// reconnect (to the new workers), until when.
    steered: Option<(Vec<u32>, Instant)>,
}

impl AppScaling {
    fn new() -> AppScaling {
        AppScaling {
            memory: Memory::default(),
            window_start: Instant::now(),
            busy: HashMap::new(),
            queued_max: 0,
            in_flight: None,
            events: VecDeque::new(),
            last_hold: String::new(),
            last_hold_at: None,
            now: String::new(),
            ups: 0,
            downs: 0,
            rebalance: None,
            steered: None,
        }
    }
}

/// Every autoscaled app's state, the busyness readings per pid and the fast tick.
#[derive(Default)]
pub(super) struct Autoscaler {
    apps: HashMap<String, AppScaling>,
    /// Last reading per pid: (busy ns so far, when).
    last: HashMap<i32, (u64, Instant)>,
    tick: Option<AbortHandle>,
    epoch: Option<Instant>,
}

impl Drop for Autoscaler {
    fn drop(&mut self) {
        if let Some(t) = &self.tick {
            t.abort();
        }
    }
}

impl Supervisor {
    /// Starts or stops the fast tick to match the specs; forgets apps that are gone.
    pub(super) fn sync_autoscale(&mut self) {
        let apps = &self.apps;
        self.autoscale
            .apps
            .retain(|name, _| apps.get(name).is_some_and(|a| a.spec.autoscale.is_some()));
        let wanted = self.apps.values().any(|a| a.spec.autoscale.is_some());
        match (wanted, self.autoscale.tick.is_some()) {
            (true, false) => {
                let me = self.events.clone();
                let task = tokio::spawn(async move {
                    let mut every = tokio::time::interval(Duration::from_millis(SAMPLE_MS));
                    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        every.tick().await;
                        if me.send(Event::AutoscaleTick).is_err() {
                            break;
                        }
                    }
                });
                self.autoscale.tick = Some(task.abort_handle());
            }
            (false, true) => {
                if let Some(t) = self.autoscale.tick.take() {
                    t.abort();
                }
                self.autoscale.last.clear();
            }
            _ => {}
        }
    }

    /// The fast tick: measure every autoscaled app; decide for those whose window is over.
    pub(super) fn autoscale_tick(&mut self) {
        if self.shutting_down {
            return;
        }
        let names: Vec<String> = self
            .apps
            .iter()
            .filter(|(_, a)| a.spec.autoscale.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        let mut seen = Vec::new();
        for name in names {
            seen.extend(self.measure(&name));
            let interval = self
                .apps
                .get(&name)
                .and_then(|a| a.spec.autoscale.as_ref())
                .map_or(1000, |a| a.interval_ms);
            let due = self
                .autoscale
                .apps
                .get(&name)
                .is_some_and(|s| s.window_start.elapsed() >= Duration::from_millis(interval));
            if due {
                self.autoscale_decide(&name);
            }
        }
        self.autoscale.last.retain(|pid, _| seen.contains(pid));
    }

    /// One reading of app `name`'s ready workers and queues; returns the pids read.
    fn measure(&mut self, name: &str) -> Vec<i32> {
        let Some(app) = self.apps.get(name) else {
            return Vec::new();
        };
        let ready: Vec<(u32, i32)> = app
            .procs
            .iter()
            .filter_map(|id| self.procs.get(id))
            .filter(|p| p.want == Want::Run && self.proc_serving(p.id))
            .filter_map(|p| Some((p.id, p.pid?)))
            .collect();
        let queued: u32 = ready.iter().map(|(id, _)| self.queued(*id)).sum();
        let now = Instant::now();
        let state = self
            .autoscale
            .apps
            .entry(name.to_string())
            .or_insert_with(AppScaling::new);
        state.queued_max = state.queued_max.max(queued);
        for (_, pid) in &ready {
            let Some(total) = busy_ns(*pid) else { continue };
            if let Some((prev, at)) = self.autoscale.last.insert(*pid, (total, now)) {
                let wall = now.duration_since(at).as_nanos() as f64;
                if wall > 0.0 {
                    let pct = (total.saturating_sub(prev) as f64 / wall * 100.0).min(100.0);
                    state.busy.entry(*pid).or_default().push(pct);
                }
            }
        }
        self.rebalance_when_ready(name);
        ready.into_iter().map(|(_, pid)| pid).collect()
    }

    /// The end of a rebalance's steering window: the older workers get new connections again
    /// (those still ready and meant to run; a worker that went away meanwhile was steered by its
    /// own path).
    fn end_steering(&mut self, name: &str) {
        let due = self
            .autoscale
            .apps
            .get(name)
            .and_then(|s| s.steered.as_ref())
            .is_some_and(|(_, until)| Instant::now() >= *until);
        if !due {
            return;
        }
        let Some((ids, _)) = self
            .autoscale
            .apps
            .get_mut(name)
            .and_then(|s| s.steered.take())
        else {
            return;
        };
        for id in ids {
            let back = self
                .procs
                .get(&id)
                .is_some_and(|p| p.want == Want::Run && p.retiring.is_empty())
                && self.proc_serving(id)
                && !self.reloading(id);
            if back {
                self.set_live(id, true);
            }
        }
    }

    /// Once the workers of the last scale up are all ready (or gone), asks the older Node workers
    /// to close a share of their keep-alive connections after their next response (the preload
    /// does it), so clients reconnect and spread over every worker: otherwise a keep-alive client
    /// stays on the worker it first reached and new workers get only new connections.
    fn rebalance_when_ready(&mut self, name: &str) {
        self.end_steering(name);
        let Some((added, share)) = self
            .autoscale
            .apps
            .get(name)
            .and_then(|s| s.rebalance.clone())
        else {
            return;
        };
        let waiting = added.iter().any(|id| {
            self.procs
                .get(id)
                .is_some_and(|p| p.want == Want::Run && p.pid.is_some())
                && !self.proc_serving(*id)
        });
        if waiting {
            return;
        }
        if let Some(s) = self.autoscale.apps.get_mut(name) {
            s.rebalance = None;
        }
        let Some(app) = self.apps.get(name) else {
            return;
        };
        let old: Vec<u32> = app
            .procs
            .iter()
            .filter(|id| !added.contains(id))
            .filter_map(|id| self.procs.get(id))
            .filter(|p| p.want == Want::Run && p.channel.is_some() && self.proc_serving(p.id))
            .map(|p| p.id)
            .collect();
        let senders: Vec<_> = old
            .iter()
            .filter_map(|id| self.procs.get(id))
            .filter_map(|p| p.channel.clone())
            .collect();
        let new_ready = added.iter().any(|id| {
            self.procs.get(id).is_some_and(|p| p.want == Want::Run) && self.proc_serving(*id)
        });
        if new_ready && !old.is_empty() {
            for id in &old {
                self.set_live(*id, false);
            }
            if let Some(s) = self.autoscale.apps.get_mut(name) {
                s.steered = Some((
                    old,
                    Instant::now() + Duration::from_millis(REBALANCE_STEER_MS),
                ));
            }
        }
        let msg = serde_json::json!({"cohort": "rebalance", "share": share});
        for sender in senders {
            let msg = msg.clone();
            tokio::spawn(async move {
                let _ = sender.send_user(&msg).await;
            });
        }
    }

    /// The end of app `name`'s window: ask the policy, act, log, remember.
    fn autoscale_decide(&mut self, name: &str) {
        let Some(app) = self.apps.get(name) else {
            return;
        };
        let Some(a) = app.spec.autoscale.clone() else {
            return;
        };
        let (min, max) = a.bounds(self.cpus);
        let knobs = Knobs {
            min,
            max,
            up_busy: a.scale_up_busy,
            down_busy: a.scale_down_busy,
            down_after_ms: a.scale_down_after_ms,
            cooldown_ms: a.cooldown_ms,
            max_spawn_rate: a.max_spawn_rate,
            backlog: a.backlog,
            max_memory: a.max_memory,
        };
        let procs: Vec<&super::table::Proc> = app
            .procs
            .iter()
            .filter_map(|id| self.procs.get(id))
            .collect();
        let counted: Vec<&&super::table::Proc> =
            procs.iter().filter(|p| p.want == Want::Run).collect();
        // A stopped app (or one being reloaded or restarted) is left alone.
        let stopped = procs.iter().all(|p| p.want == Want::Stop);
        let busy_elsewhere = procs
            .iter()
            .any(|p| p.want == Want::Restart || self.reloading(p.id));
        // Serving: online, signalled ready, readiness probe (if any) passing.
        let serving: Vec<u32> = counted
            .iter()
            .map(|p| p.id)
            .filter(|id| self.proc_serving(*id))
            .collect();
        let epoch = *self.autoscale.epoch.get_or_insert_with(Instant::now);
        let now_ms = epoch.elapsed().as_millis() as u64;
        let Some(state) = self.autoscale.apps.get_mut(name) else {
            return;
        };
        let window = std::mem::take(&mut state.busy);
        let queued = std::mem::replace(&mut state.queued_max, 0);
        state.window_start = Instant::now();
        if stopped || busy_elsewhere {
            return;
        }
        let ready_pids: Vec<i32> = counted
            .iter()
            .filter(|p| serving.contains(&p.id))
            .filter_map(|p| p.pid)
            .collect();
        let busy: Vec<f64> = ready_pids
            .iter()
            .filter_map(|pid| window.get(pid))
            .filter(|s| !s.is_empty())
            .map(|s| s.iter().sum::<f64>() / s.len() as f64)
            .collect();
        let excess_in_flight = state
            .in_flight
            .filter(|(_, at)| at.elapsed() < Duration::from_millis(IN_FLIGHT_FRESH_MS))
            .map(|(n, _)| n.saturating_sub(ready_pids.len() as u32));
        let inputs = scale_policy::Inputs {
            now_ms,
            workers: counted.len() as u32,
            starting: counted
                .iter()
                .filter(|p| p.pid.is_some() && (!p.ready || p.status == Status::Launching))
                .count() as u32,
            draining: procs.iter().any(|p| p.want == Want::Delete),
            busy,
            queued,
            excess_in_flight,
            memory: counted.iter().map(|p| p.memory).sum(),
        };
        let (decision, reason, memory) = scale_policy::decide(&knobs, &inputs, &state.memory);
        state.memory = memory;
        state.now = reason.clone();
        let target = match decision {
            Decision::Up(n) => inputs.workers + n,
            Decision::Down => inputs.workers.saturating_sub(1),
            Decision::Hold => {
                let kind = reason.split(';').next().unwrap_or("").to_string();
                // Numbers change every tick; the kind of hold is what is worth a line.
                let kind_only: String = kind.chars().filter(|c| !c.is_ascii_digit()).collect();
                let quiet = state
                    .last_hold_at
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(HOLD_LOG_EVERY_S));
                if kind_only != state.last_hold && quiet {
                    state.last_hold = kind_only;
                    state.last_hold_at = Some(Instant::now());
                    crate::report!("cohort: autoscale {name}: {reason}");
                }
                self.poll_in_flight(name);
                return;
            }
        };
        state.last_hold.clear();
        match decision {
            Decision::Up(_) => state.ups += 1,
            _ => state.downs += 1,
        }
        if state.events.len() == EVENTS_KEPT {
            state.events.pop_front();
        }
        state.events.push_back(ScaleEvent {
            at: crate::daemon::now_ms(),
            from: inputs.workers,
            to: target,
            reason: reason.clone(),
        });
        crate::report!(
            "cohort: autoscale {name}: {} → {target} workers: {reason}",
            inputs.workers
        );
        if let Some(app) = self.apps.get_mut(name) {
            app.spec.instances = crate::config::Instances::Count(target);
        }
        let before: Vec<u32> = self
            .apps
            .get(name)
            .map(|a| a.procs.clone())
            .unwrap_or_default();
        let _ = self.resize(name, target);
        if target > inputs.workers {
            let added: Vec<u32> = self
                .apps
                .get(name)
                .map(|a| a.procs.clone())
                .unwrap_or_default()
                .into_iter()
                .filter(|id| !before.contains(id))
                .collect();
            let share = f64::from(target - inputs.workers) / f64::from(target);
            if let Some(s) = self.autoscale.apps.get_mut(name) {
                s.rebalance = Some((added, share));
            }
        }
        self.poll_in_flight(name);
    }

    /// Asks the cohort balancers in front of app `name` how many requests they have in flight to
    /// it; the answer arrives as an event and is used by the next decision.
    fn poll_in_flight(&self, name: &str) {
        let ports: Vec<u16> = self
            .sockets
            .tcp_addrs(name)
            .iter()
            .map(|a| a.port())
            .collect();
        if ports.is_empty() {
            return;
        }
        let needle = format!("app:{name}");
        let admins: Vec<String> = self
            .apps
            .values()
            .filter(|a| {
                a.spec.balancer.as_ref().is_some_and(|b| {
                    b.get("upstreams")
                        .and_then(|u| u.as_array())
                        .is_some_and(|ups| {
                            ups.iter().any(|u| {
                                let text = u
                                    .as_str()
                                    .or_else(|| u.get("address").and_then(|a| a.as_str()))
                                    .unwrap_or("");
                                text.split_whitespace().next() == Some(needle.as_str())
                            })
                        })
                })
            })
            .flat_map(|a| a.procs.iter().filter_map(|id| self.procs.get(id)))
            .filter(|p| p.pid.is_some())
            .filter_map(|p| p.admin.clone())
            .collect();
        if admins.is_empty() {
            return;
        }
        let me = self.events.clone();
        let app = name.to_string();
        tokio::spawn(async move {
            let mut total = 0u32;
            let mut any = false;
            for addr in admins {
                let Ok(doc) = crate::daemon::balancer_status::fetch_json(&addr).await else {
                    continue;
                };
                any = true;
                total += in_flight_to(&doc, &ports);
            }
            if any {
                let _ = me.send(Event::InFlight { app, n: total });
            }
        });
    }

    /// A balancer's answer (see [`Supervisor::poll_in_flight`]).
    pub(super) fn on_in_flight(&mut self, app: &str, n: u32) {
        if let Some(s) = self.autoscale.apps.get_mut(app) {
            s.in_flight = Some((n, Instant::now()));
        }
    }

    /// How many workers app `spec.name` gets when its spec is applied again (a config started or
    /// restarted again): an autoscaled app keeps its current count within the new bounds, so a
    /// redeploy under load does not fall back to `min`; others take `instances`.
    pub(super) fn count_for(&self, spec: &crate::config::AppSpec) -> u32 {
        let Some(a) = &spec.autoscale else {
            return spec.instances.resolve(self.cpus);
        };
        let (min, max) = a.bounds(self.cpus);
        let current = self.apps.get(&spec.name).map_or(0, |app| {
            app.procs
                .iter()
                .filter_map(|id| self.procs.get(id))
                .filter(|p| p.want != Want::Delete)
                .count() as u32
        });
        current.clamp(min, max)
    }

    /// What `ls --json` and `describe` show of app `name`'s autoscaling.
    pub(super) fn autoscale_info(&self, name: &str, with_events: bool) -> Option<AutoscaleInfo> {
        let app = self.apps.get(name)?;
        let a = app.spec.autoscale.as_ref()?;
        let (min, max) = a.bounds(self.cpus);
        let state = self.autoscale.apps.get(name);
        Some(AutoscaleInfo {
            min,
            max,
            desired: app
                .procs
                .iter()
                .filter_map(|id| self.procs.get(id))
                .filter(|p| p.want != Want::Delete)
                .count() as u32,
            scale_ups: state.map_or(0, |s| s.ups),
            scale_downs: state.map_or(0, |s| s.downs),
            now: if with_events {
                state.map(|s| s.now.clone()).filter(|s| !s.is_empty())
            } else {
                None
            },
            events: match (with_events, state) {
                (true, Some(s)) => s.events.iter().cloned().collect(),
                _ => Vec::new(),
            },
        })
    }
}

/// Requests in flight to upstreams on one of `ports` (loopback), from a balancer's status document.
fn in_flight_to(doc: &serde_json::Value, ports: &[u16]) -> u32 {
    doc.get("upstreams")
        .and_then(|u| u.as_array())
        .map(|ups| {
            ups.iter()
                .filter(|u| {
                    u.get("resolved")
                        .and_then(|r| r.as_str())
                        .and_then(|r| r.parse::<std::net::SocketAddr>().ok())
                        .is_some_and(|a| a.ip().is_loopback() && ports.contains(&a.port()))
                })
                .filter_map(|u| u.get("active").and_then(|a| a.as_u64()))
                .sum::<u64>()
                .min(u64::from(u32::MAX)) as u32
        })
        .unwrap_or(0)
}

/// Nanoseconds the main thread of `pid` has been running or runnable (schedstat), or its
/// process CPU time where schedstat is missing.
fn busy_ns(pid: i32) -> Option<u64> {
    if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/schedstat")) {
        if let Some(n) = parse_schedstat(&text) {
            return Some(n);
        }
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let stat = crate::daemon::sampler::parse_stat(&text)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Some(stat.cpu_ticks.saturating_mul(1_000_000_000) / hz)
}

/// `/proc/<pid>/schedstat`: "on-cpu ns, run-queue wait ns, timeslices" → on-cpu + wait.
fn parse_schedstat(text: &str) -> Option<u64> {
    let mut f = text.split_whitespace();
    let run: u64 = f.next()?.parse().ok()?;
    let wait: u64 = f.next()?.parse().ok()?;
    Some(run.saturating_add(wait))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_lines() {
        let cases = [
            ("184010 4926 2\n", Some(188936)),
            ("1 2 3", Some(3)),
            ("", None),
            ("x 1 2", None),
            ("5", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_schedstat(text), want, "{text:?}");
        }
    }

    #[test]
    fn in_flight_counts_upstreams_on_the_apps_ports() {
        let doc = serde_json::json!({"upstreams": [
            {"resolved": "127.0.0.1:3000", "active": 5},
            {"resolved": "127.0.0.1:3001", "active": 7},
            {"resolved": "10.0.0.1:3000", "active": 9},
            {"resolved": "[::1]:3000", "active": 2},
        ]});
        assert_eq!(in_flight_to(&doc, &[3000]), 7);
        assert_eq!(in_flight_to(&doc, &[4000]), 0);
        assert_eq!(in_flight_to(&serde_json::json!({}), &[3000]), 0);
    }
}
