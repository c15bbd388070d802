//! Probes inside the supervisor: each running process of an app with a readiness or liveness
//! probe gets a task that runs the check every `interval` (after `initial_delay`) and sends the
//! result to the actor ([`Event::ProbeResult`], carrying the run's `gen` so a result of an earlier
//! run is ignored). The thresholds are `probe_policy` (pure); here their transitions are applied:
//! readiness steers a cluster slot's new connections (`set_live`), liveness restarts the process
//! (cluster: a reload of that worker, so no request fails) with reason `probe`.
//!
//! [`Supervisor::proc_serving`] is the one definition of "ready" that depends_on, `/readyz`,
//! steering and autoscaling use. [`Supervisor::sync_probes`], called after every message, starts
//! and stops the tasks to match the processes, like `sync_triggers` does for watches.

use super::probe_policy::{self, ProbeCounters, Thresholds, Transition};
use super::table::{Proc, Want};
use super::{Event, Supervisor};
use crate::api::{ProbeResult, ProbeStatus, RestartReason, Status};
use crate::config::probes::{ProbeKind, ProbeSpec};
use crate::config::ExecMode;
use crate::daemon::probe::{self, Target};
use std::collections::HashMap;
use tokio::task::AbortHandle;

/// How often a readiness probe checks until it first passes (when its interval is longer), so a
/// start is not held a whole interval by a check made before the app listened.
pub(super) const STARTING_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// A process's probe state for its current run.
#[derive(Default)]
pub(super) struct ProcProbes {
    pub(super) readiness: ProbeCounters,
    pub(super) liveness: ProbeCounters,
    pub(super) last_readiness: Option<ProbeResult>,
    pub(super) last_liveness: Option<ProbeResult>,
    /// The run's start window is over without its readiness probe passing: `start` stops waiting.
    pub(super) window_over: bool,
}

impl ProcProbes {
    /// The state of a process adopted from the daemon this one replaced (`cohort update`): its
    /// readiness as it was, counters from zero.
    pub(super) fn adopted(gen: u64, probe_ready: Option<bool>) -> ProcProbes {
        let mut p = ProcProbes::default();
        p.readiness.gen = gen;
        p.liveness.gen = gen;
        p.readiness.ready = probe_ready == Some(true);
        p
    }

    fn counters(&mut self, kind: ProbeKind) -> &mut ProbeCounters {
        match kind {
            ProbeKind::Readiness => &mut self.readiness,
            ProbeKind::Liveness => &mut self.liveness,
        }
    }
    fn last(&mut self, kind: ProbeKind) -> &mut Option<ProbeResult> {
        match kind {
            ProbeKind::Readiness => &mut self.last_readiness,
            ProbeKind::Liveness => &mut self.last_liveness,
        }
    }
}

/// A new run of process `p` (generation `gen`) starts: not ready until its readiness probe
/// passes (Kubernetes), counters and last results cleared.
pub(super) fn new_run(p: &mut Proc, readiness: bool, gen: u64) {
    p.probe_ready = readiness.then_some(false);
    p.probes = ProcProbes {
        readiness: ProbeCounters {
            gen,
            ..Default::default()
        },
        liveness: ProbeCounters {
            gen,
            ..Default::default()
        },
        ..Default::default()
    };
}

/// An app's (readiness, liveness) probes.
type Specs = (Option<ProbeSpec>, Option<ProbeSpec>);

/// The task running one process's probes; dropping this stops it.
struct Armed {
    gen: u64,
    pid: i32,
    specs: Specs,
    tasks: Vec<AbortHandle>,
}

impl Drop for Armed {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The armed probe tasks, by process id.
#[derive(Default)]
pub(super) struct Probes {
    armed: HashMap<u32, Armed>,
    /// Per balancer process (id, pid): the task telling it which `app:NAME` upstreams are ready.
    pub(super) pushers: HashMap<(u32, i32), super::balancers::ReadyPusher>,
    /// Per app: how many times one of its processes stopped being ready (balancers then close
    /// idle connections that may lead to it).
    pub(super) not_ready_epochs: HashMap<String, u64>,
}

impl Supervisor {
    /// Process `id` takes new work: online, signalled ready (listening / 'ready' / READY=1 /
    /// listen_timeout), and its readiness probe (if any) passing.
    pub(super) fn proc_serving(&self, id: u32) -> bool {
        self.procs.get(&id).is_some_and(|p| {
            p.pid.is_some() && p.status == Status::Online && p.ready && p.probe_ready != Some(false)
        })
    }

    /// Whether the slot of process `id` should get new connections: its worker is signalled
    /// ready and its readiness probe is not failing.
    pub(super) fn slot_live(&self, id: u32) -> bool {
        self.procs
            .get(&id)
            .is_some_and(|p| p.pid.is_some() && p.ready && p.probe_ready != Some(false))
    }

    /// `ready` of `ls --json`: [`Supervisor::proc_serving`] for a process that runs or is meant
    /// to; null for a stopped or errored one (there is nothing to be ready).
    pub(super) fn ready_field(&self, p: &Proc) -> Option<bool> {
        match p.status {
            Status::Stopped | Status::Errored => None,
            _ => Some(self.proc_serving(p.id)),
        }
    }

    /// The probes of process `p` for `describe`.
    pub(super) fn probe_statuses(&self, p: &Proc) -> Vec<ProbeStatus> {
        let Some(spec) = self.apps.get(&p.app).map(|a| &a.spec) else {
            return Vec::new();
        };
        [
            (
                ProbeKind::Readiness,
                &spec.readiness,
                &p.probes.readiness,
                &p.probes.last_readiness,
            ),
            (
                ProbeKind::Liveness,
                &spec.liveness,
                &p.probes.liveness,
                &p.probes.last_liveness,
            ),
        ]
        .into_iter()
        .filter_map(|(kind, spec, c, last)| {
            let spec = spec.as_ref()?;
            Some(ProbeStatus {
                kind,
                check: spec.check.describe(),
                spec: spec.clone(),
                last: last.clone(),
                consecutive_successes: c.successes,
                consecutive_failures: c.failures,
            })
        })
        .collect()
    }

    /// Starts and stops probe tasks to match the running processes and their apps' probes.
    pub(super) fn sync_probes(&mut self) {
        let mut wanted: HashMap<u32, (u64, i32, Specs)> = HashMap::new();
        if !self.shutting_down {
            for p in self.procs.values() {
                let Some(spec) = self.apps.get(&p.app).map(|a| &a.spec) else {
                    continue;
                };
                if spec.readiness.is_none() && spec.liveness.is_none() {
                    continue;
                }
                let Some(pid) = p.pid else { continue };
                // Probing starts once the process signalled readiness (it listens, said 'ready'
                // or READY=1, or listen_timeout passed; at once for others), so a worker still
                // booting is not restarted for it (initial_delay counts from then), and once the
                // worker a reload replaced has exited: until then a probe through the slot could
                // reach either of them.
                if p.want != Want::Run
                    || !p.ready
                    || p.status != Status::Online
                    || !p.retiring.is_empty()
                {
                    continue;
                }
                wanted.insert(
                    p.id,
                    (p.gen, pid, (spec.readiness.clone(), spec.liveness.clone())),
                );
            }
        }
        self.probes.armed.retain(|id, a| {
            wanted.get(id).is_some_and(|(gen, pid, specs)| {
                a.gen == *gen && a.pid == *pid && &a.specs == specs
            })
        });
        for (id, (gen, pid, specs)) in wanted {
            if self.probes.armed.contains_key(&id) {
                continue;
            }
            let mut tasks = Vec::new();
            if let Some(r) = &specs.0 {
                // The start window counts from the first probe's arming.
                let ms = start_window(r).as_millis() as u64;
                self.after(ms, Event::ReadinessDeadline { id, gen });
            }
            for (kind, spec) in [
                (ProbeKind::Readiness, &specs.0),
                (ProbeKind::Liveness, &specs.1),
            ] {
                if let Some(spec) = spec {
                    if let Some(t) = self.start_probe(id, gen, pid, kind, spec) {
                        tasks.push(t);
                    }
                }
            }
            self.probes.armed.insert(
                id,
                Armed {
                    gen,
                    pid,
                    specs,
                    tasks,
                },
            );
        }
        self.sync_balancer_readiness();
        self.reload_probe_progress();
    }

    /// The task that checks process `id` (run `gen`, pid `pid`) with `spec` every interval.
    fn start_probe(
        &mut self,
        id: u32,
        gen: u64,
        pid: i32,
        kind: ProbeKind,
        spec: &ProbeSpec,
    ) -> Option<AbortHandle> {
        let app_name = self.procs.get(&id)?.app.clone();
        let ports = self.app_ports(&app_name);
        let p = self.procs.get(&id)?;
        let app = self.apps.get(&p.app)?;
        let cluster = app.spec.exec_mode == ExecMode::Cluster;
        let target = Target {
            check: spec.check.clone(),
            pid,
            // A cluster worker is reached through its own slot (docs/health.md, "Probes").
            slot: cluster.then_some(p.instance),
            ports,
            cwd: app.spec.cwd.clone(),
            env: {
                let mut env = self.child_env(p);
                env.insert("COHORT_PROBE_PID".into(), pid.to_string());
                env.insert("COHORT_PROBE_KIND".into(), kind.as_str().into());
                env.into_iter().collect()
            },
            cells: Some(self.contain.check_cells()),
        };
        let (interval, timeout, delay) = (spec.interval, spec.timeout, spec.initial_delay);
        let success_threshold = spec.success_threshold;
        let events = self.events.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let mut target = target;
            // Readiness: until it first passes, check at most every STARTING_INTERVAL.
            let mut starting = kind == ProbeKind::Readiness;
            let mut streak = 0;
            loop {
                let started = tokio::time::Instant::now();
                let outcome = probe::run(&mut target, timeout).await;
                let ok = outcome.is_ok();
                let result = ProbeResult {
                    at: crate::daemon::now_ms(),
                    ok,
                    message: match outcome {
                        Ok(m) | Err(m) => m,
                    },
                    took_ms: started.elapsed().as_millis() as u64,
                };
                if events
                    .send(Event::ProbeResult {
                        id,
                        gen,
                        kind,
                        result,
                    })
                    .is_err()
                {
                    return;
                }
                streak = if ok { streak + 1 } else { 0 };
                if starting && streak >= success_threshold {
                    starting = false;
                }
                let period = match starting {
                    true => interval.min(STARTING_INTERVAL),
                    false => interval,
                };
                tokio::time::sleep_until(started + period).await;
            }
        });
        Some(task.abort_handle())
    }

    /// The TCP ports the daemon holds for app `name` (cluster), then its `listen` entries.
    fn app_ports(&mut self, name: &str) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .sockets
            .group(name)
            .tcp_addrs()
            .iter()
            .map(|a| a.port())
            .collect();
        if let Some(app) = self.apps.get(name) {
            for l in &app.spec.listen {
                if let Ok(crate::cluster::sockets::ListenAddr::Tcp { port, .. }) =
                    super::slots::parse_listen(l)
                {
                    if port != 0 && !ports.contains(&port) {
                        ports.push(port);
                    }
                }
            }
        }
        ports
    }

    /// A probe of process `id`'s run `gen` finished.
    pub(super) fn on_probe_result(
        &mut self,
        id: u32,
        gen: u64,
        kind: ProbeKind,
        result: ProbeResult,
    ) {
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        if p.gen != gen || p.pid.is_none() {
            return;
        }
        let Some(spec) = self.apps.get(&p.app).and_then(|a| match kind {
            ProbeKind::Readiness => a.spec.readiness.as_ref(),
            ProbeKind::Liveness => a.spec.liveness.as_ref(),
        }) else {
            return;
        };
        let t = Thresholds {
            failure: spec.failure_threshold,
            success: spec.success_threshold,
        };
        let ok = result.ok;
        let message = result.message.clone();
        *p.probes.last(kind) = Some(result);
        let transition = probe_policy::on_result(kind, t, p.probes.counters(kind), gen, ok);
        let name = format!("{}:{} (pid {})", p.app, p.instance, p.pid.unwrap_or(0));
        let check = spec.check.describe();
        match transition {
            Transition::None => {}
            Transition::Ready => {
                p.probe_ready = Some(true);
                crate::report!(
                    "cohort: {name}: readiness probe passed ({check}: {message}): ready"
                );
                self.readiness_changed(id);
            }
            Transition::NotReady => {
                p.probe_ready = Some(false);
                *self
                    .probes
                    .not_ready_epochs
                    .entry(p.app.clone())
                    .or_default() += 1;
                crate::report!(
                    "cohort: {name}: readiness probe failed {} times in a row ({check}: {message}): not ready, no new connections",
                    t.failure
                );
                self.readiness_changed(id);
            }
            Transition::Restart => {
                let why = format!(
                    "liveness probe failed {} times in a row ({check}: {message}): restarting",
                    t.failure
                );
                crate::report!("cohort: {name}: {why}");
                self.app_note(id, &why);
                self.restart_unhealthy(id);
            }
        }
    }

    /// The start window of process `id`'s run `gen` is over: if its readiness probe has not
    /// passed, that is why its start failed (it keeps running and being probed, as a pod that
    /// is not ready).
    pub(super) fn readiness_deadline(&mut self, id: u32, gen: u64) {
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        if p.gen != gen || p.pid.is_none() || p.probe_ready != Some(false) {
            return;
        }
        let Some(spec) = self
            .apps
            .get(&p.app)
            .and_then(|a| a.spec.readiness.as_ref())
        else {
            return;
        };
        let last = match &p.probes.last_readiness {
            Some(r) => format!("last result: {}", r.message),
            None => "it has not answered yet".to_string(),
        };
        let why = format!(
            "readiness probe ({}) did not pass within {} ({last})",
            spec.check.describe(),
            crate::config::probes::show_duration(start_window(spec))
        );
        crate::report!("cohort: {}:{}: {why}; not ready", p.app, p.instance);
        p.probes.window_over = true;
        super::outcome::could_not_start(p, &why);
        super::table::fire_ready(p);
    }

    /// Readiness of process `id` changed: steer its slot, wake whoever waits for it.
    fn readiness_changed(&mut self, id: u32) {
        if self.is_cluster(id) {
            let live = self.slot_live(id);
            self.set_live(id, live);
        }
        if self.proc_serving(id) {
            if let Some(p) = self.procs.get_mut(&id) {
                super::table::fire_ready(p);
            }
        }
    }

    /// A liveness failure: restart process `id` (cluster: reload that worker).
    fn restart_unhealthy(&mut self, id: u32) {
        if self.reloading(id) || self.procs.get(&id).is_none_or(|p| p.want != Want::Run) {
            return;
        }
        if self.is_cluster(id) {
            let (reply, _) = tokio::sync::oneshot::channel();
            self.reload_for(vec![id], RestartReason::Probe, reply);
        } else {
            let _ = self.restart_for(id, RestartReason::Probe);
        }
    }

    /// A line in process `id`'s error log from cohort itself.
    fn app_note(&mut self, id: u32, text: &str) {
        let Some(p) = self.procs.get(&id) else { return };
        let line = format!("cohort: {}:{}: {text}\n", p.app, p.instance);
        if let Ok(f) = self.log_files.open(&p.err, None) {
            f.write_all(line.as_bytes());
        }
    }
}

/// How long a start waits for a process's readiness probe to pass: its initial delay, then
/// enough checks for the larger threshold, the last one up to its timeout (Kubernetes gives a
/// starting pod `failureThreshold × periodSeconds` with a startup probe).
pub(super) fn start_window(spec: &ProbeSpec) -> std::time::Duration {
    spec.initial_delay
        + spec.interval * spec.failure_threshold.max(spec.success_threshold)
        + spec.timeout
}
