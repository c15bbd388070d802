//! Dependency gates and ordered stops (`depends_on`, config/depends.rs).
//!
//! A start (`start`, a config file started again, `restart`, `resurrect`) of an app with
//! dependencies holds its processes (`launching`, no pid) behind a gate until every dependency
//! meets its condition; the gate is checked after every message the actor handles, and fails the
//! held processes (`errored`, with the dependency and its state as the reason) when a dependency
//! cannot get there any more (errored, stopped, exited non-zero) or `depends_timeout` passes.
//! Crash restarts by the restart policy are not gated: an app restarts at once, as under PM2.
//!
//! Stops of several apps (`stop`, `delete`, `restart`, `kill`) go in waves: dependents first,
//! each wave once the one before has exited ([`crate::config::depends::stop_waves`]).
//!
//! When a restart covers an app and its dependency, the app's gate waits for the dependency's
//! *new* run (started after the restart began), so `restart all` stops api then redis, and starts
//! redis then api.

use super::table::{fire_ready, notify, Want};
use super::{Event, Supervisor};
use crate::api::Status;
use crate::config::depends::{self, Condition, Dependency};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The gate of one app.
pub(super) struct Gate {
    /// Processes held until the dependencies are met; `true`: starting it counts as a restart.
    held: Vec<(u32, bool)>,
    /// When the wait began (Unix ms).
    since_ms: u64,
    deadline: Instant,
    timeout_ms: u64,
    /// Dependencies restarted together with this app: only their run begun after `since_ms` counts.
    fresh: BTreeSet<String>,
    /// Processes of a restart that have not exited yet (an ordered stop may reach them later):
    /// the gate waits for them to be held.
    pending: BTreeSet<u32>,
}

/// Every gate, by app name.
#[derive(Default)]
pub(super) struct Gates {
    apps: BTreeMap<String, Gate>,
}

/// What a stop wave does to each of its processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StopKind {
    Stop,
    Delete,
    Restart,
}

/// Where a dependency stands for a waiting app.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    Met,
    /// Still on its way: what it is doing now.
    Waiting(String),
    /// It will not get there without the user: why.
    Failed(String),
}

/// One process of a dependency, as the verdict sees it.
#[derive(Debug, Clone)]
pub(super) struct DepProc {
    /// `redis:0`.
    pub(super) label: String,
    pub(super) status: Status,
    pub(super) running: bool,
    /// Online, ready and passing its readiness probe.
    pub(super) serving: bool,
    /// The user stopped it (it will not start by itself).
    pub(super) stopped_by_user: bool,
    pub(super) last_exit_code: Option<i32>,
    pub(super) last_signal: Option<String>,
    pub(super) started_at: Option<u64>,
    /// Held behind its own gate.
    pub(super) held: bool,
    /// What its readiness probe said last, if it has one.
    pub(super) probe: Option<String>,
}

impl DepProc {
    fn how_it_ended(&self) -> String {
        match (self.last_exit_code, &self.last_signal) {
            (Some(c), _) => format!("exited with code {c}"),
            (None, Some(s)) => format!("was killed by {s}"),
            _ => "has not run".into(),
        }
    }

    fn state(&self) -> String {
        let mut s = format!("{} is {}", self.label, self.status.as_str());
        if self.held {
            s.push_str(" (waiting for its own dependencies)");
        } else if self.running && !self.serving && self.status == Status::Online {
            s.push_str(", not ready");
        } else if !self.running && self.last_exit_code.is_some() {
            s.push_str(&format!(" ({})", self.how_it_ended()));
        }
        if let Some(p) = &self.probe {
            s.push_str(&format!(" (readiness: {p})"));
        }
        s
    }
}

/// Whether dependency `app`'s processes meet `cond` for a wait that began at `since_ms`
/// (`fresh`: only a run begun since then counts). Pure: table-tested below.
pub(super) fn judge(
    app: &str,
    cond: Condition,
    procs: &[DepProc],
    fresh: bool,
    since_ms: u64,
) -> Verdict {
    if procs.is_empty() {
        return Verdict::Failed(format!(
            "{app:?} is not in the daemon (it was deleted; start it again)"
        ));
    }
    let new_run = |p: &DepProc| !fresh || p.started_at.is_some_and(|t| t >= since_ms);
    let mut waiting = Vec::new();
    for p in procs {
        let met = match cond {
            Condition::Started => p.running && new_run(p),
            Condition::Ready => p.running && p.serving && new_run(p),
            Condition::CompletedSuccessfully => {
                !p.running
                    && p.status == Status::Stopped
                    && p.last_exit_code == Some(0)
                    && new_run(p)
            }
        };
        if met {
            continue;
        }
        if p.status == Status::Errored {
            return Verdict::Failed(format!("{} ({})", p.state(), p.how_it_ended()));
        }
        match cond {
            Condition::CompletedSuccessfully
                if !p.running && !p.held && p.status == Status::Stopped && new_run(p) =>
            {
                return Verdict::Failed(format!("{} {}", p.label, p.how_it_ended()));
            }
            Condition::CompletedSuccessfully if !p.running && p.stopped_by_user && !new_run(p) => {
                return Verdict::Failed(format!("{} is stopped and does not run again", p.label));
            }
            Condition::Started | Condition::Ready
                if p.stopped_by_user && !p.running && p.status == Status::Stopped =>
            {
                return Verdict::Failed(format!(
                    "{} is stopped (start it: `cohort start {app}`)",
                    p.label
                ));
            }
            _ => {}
        }
        waiting.push(p.state());
    }
    if waiting.is_empty() {
        Verdict::Met
    } else {
        Verdict::Waiting(waiting.join(", "))
    }
}

impl Supervisor {
    /// Starts process `id` now, or holds it behind its app's gate when the app has dependencies.
    pub(super) fn start_or_hold(&mut self, id: u32) {
        if self.has_dependencies(id) {
            self.hold(id, false);
        } else {
            self.spawn(id);
        }
    }

    /// A restart's new process for `id`: held when its app has a gate, else started now.
    pub(super) fn respawn_or_hold(&mut self, id: u32) {
        let gated = self
            .procs
            .get(&id)
            .is_some_and(|p| self.gates.apps.contains_key(&p.app));
        if gated {
            self.hold(id, true);
        } else {
            self.record_restart(id);
            self.spawn(id);
        }
    }

    /// A new instance of a running app (scale): held only while the app's start is held.
    pub(super) fn spawn_or_join_gate(&mut self, id: u32) {
        let gated = self
            .procs
            .get(&id)
            .is_some_and(|p| self.gates.apps.contains_key(&p.app));
        if gated {
            self.hold(id, false);
        } else {
            self.spawn(id);
        }
    }

    fn has_dependencies(&self, id: u32) -> bool {
        self.procs
            .get(&id)
            .and_then(|p| self.apps.get(&p.app))
            .is_some_and(|a| !a.spec.depends_on.is_empty())
    }

    /// True while process `id` is held behind a gate.
    pub(super) fn is_held(&self, id: u32) -> bool {
        self.procs.get(&id).is_some_and(|p| {
            self.gates
                .apps
                .get(&p.app)
                .is_some_and(|g| g.held.iter().any(|(h, _)| *h == id))
        })
    }

    /// Holds process `id` (not running) behind its app's gate, arming the gate if needed.
    fn hold(&mut self, id: u32, restart: bool) {
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        p.gen += 1; // cancels any timer of an earlier run
        p.want = Want::Run;
        p.status = Status::Launching;
        let app = p.app.clone();
        self.arm_gate(&app, BTreeSet::new());
        if let Some(g) = self.gates.apps.get_mut(&app) {
            g.pending.remove(&id);
            if !g.held.iter().any(|(h, _)| *h == id) {
                g.held.push((id, restart));
            }
        }
    }

    /// Arms app `app`'s gate (kept if armed already); `fresh`: dependencies restarted with it.
    fn arm_gate(&mut self, app: &str, fresh: BTreeSet<String>) {
        if self.gates.apps.contains_key(app) {
            return;
        }
        let timeout_ms = self
            .apps
            .get(app)
            .and_then(|a| a.spec.depends_timeout_ms)
            .unwrap_or(depends::DEFAULT_TIMEOUT_MS);
        self.gates.apps.insert(
            app.to_string(),
            Gate {
                held: Vec::new(),
                since_ms: crate::daemon::now_ms(),
                deadline: Instant::now() + Duration::from_millis(timeout_ms),
                timeout_ms,
                fresh,
                pending: BTreeSet::new(),
            },
        );
        // Wake the actor at the deadline (any message also checks the gates).
        self.after(timeout_ms + 1, Event::GateCheck);
    }

    /// Before a restart of processes `ids`: apps with dependencies get a gate, and wait for the
    /// new run of the dependencies restarted with them.
    pub(super) fn arm_restart_gates(&mut self, ids: &[u32]) {
        let apps: BTreeSet<String> = ids
            .iter()
            .filter_map(|id| self.procs.get(id).map(|p| p.app.clone()))
            .collect();
        for app in &apps {
            let pending: BTreeSet<u32> = ids
                .iter()
                .copied()
                .filter(|id| self.procs.get(id).is_some_and(|p| &p.app == app))
                .collect();
            let Some(deps) = self.apps.get(app).map(|a| a.spec.depends_on.clone()) else {
                continue;
            };
            if deps.is_empty() {
                continue;
            }
            let fresh = deps
                .iter()
                .filter(|d| apps.contains(&d.app))
                .map(|d| d.app.clone())
                .collect();
            // Processes held already (instances this restart does not cover) stay held.
            let held = self
                .gates
                .apps
                .remove(app)
                .map(|g| g.held)
                .unwrap_or_default();
            self.arm_gate(app, fresh);
            if let Some(g) = self.gates.apps.get_mut(app) {
                g.pending = pending;
                g.held = held;
            }
        }
    }

    /// The processes of dependency `app`, as [`judge`] sees them.
    fn dep_procs(&self, app: &str) -> Vec<DepProc> {
        let Some(a) = self.apps.get(app) else {
            return Vec::new();
        };
        a.procs
            .iter()
            .filter_map(|id| self.procs.get(id).map(|p| (id, p)))
            .filter(|(_, p)| p.want != Want::Delete)
            .map(|(id, p)| DepProc {
                label: format!("{}:{}", p.app, p.instance),
                status: p.status,
                running: p.pid.is_some(),
                serving: self.proc_serving(*id),
                stopped_by_user: p.want == Want::Stop,
                last_exit_code: p.last_exit_code,
                last_signal: p.last_signal.clone(),
                started_at: p.started_at,
                held: self.is_held(*id),
                probe: p
                    .probes
                    .last_readiness
                    .as_ref()
                    .filter(|r| !r.ok)
                    .map(|r| r.message.clone()),
            })
            .collect()
    }

    /// The condition app `waiter` waits for on dependency `d`.
    fn condition_of(&self, d: &Dependency) -> Condition {
        let has_probe = self
            .apps
            .get(&d.app)
            .is_some_and(|a| a.spec.has_readiness_probe());
        d.effective(has_probe)
    }

    /// What app `app`'s gate waits for now, for `describe` (None: no gate).
    pub(super) fn waiting_for(&self, app: &str) -> Option<String> {
        let gate = self.gates.apps.get(app)?;
        let deps = self.apps.get(app)?.spec.depends_on.clone();
        let mut out = Vec::new();
        for d in &deps {
            let cond = self.condition_of(d);
            let v = judge(
                &d.app,
                cond,
                &self.dep_procs(&d.app),
                gate.fresh.contains(&d.app),
                gate.since_ms,
            );
            if let Verdict::Waiting(state) | Verdict::Failed(state) = v {
                out.push(format!("{} to be {} ({state})", d.app, cond.as_str()));
            }
        }
        (!out.is_empty()).then(|| out.join("; "))
    }

    /// The dependencies of app `app` as `describe` shows them: `redis (ready)`.
    pub(super) fn dependency_list(&self, app: &str) -> Vec<String> {
        self.apps
            .get(app)
            .map(|a| {
                a.spec
                    .depends_on
                    .iter()
                    .map(|d| format!("{} ({})", d.app, self.condition_of(d).as_str()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Checks every gate: starts the held processes of those whose dependencies are met, fails
    /// those that cannot be met or timed out, and drops gates with nothing left to hold.
    pub(super) fn sync_gates(&mut self) {
        if self.gates.apps.is_empty() {
            return;
        }
        let names: Vec<String> = self.gates.apps.keys().cloned().collect();
        for app in names {
            self.check_gate(&app);
        }
    }

    fn check_gate(&mut self, app: &str) {
        // Forget processes no longer held (stopped or deleted meanwhile).
        let still_held: Vec<(u32, bool)> = match self.gates.apps.get(app) {
            Some(g) => g
                .held
                .iter()
                .copied()
                .filter(|(id, _)| {
                    self.procs.get(id).is_some_and(|p| {
                        p.app == app
                            && p.pid.is_none()
                            && p.want == Want::Run
                            && p.status == Status::Launching
                    })
                })
                .collect(),
            None => return,
        };
        // Processes of a restart not stopped yet (a later wave) or not exited yet.
        let still_pending: BTreeSet<u32> = match self.gates.apps.get(app) {
            Some(g) => g
                .pending
                .iter()
                .copied()
                .filter(|id| {
                    self.procs.get(id).is_some_and(|p| {
                        matches!(p.want, Want::Restart | Want::Run) && p.pid.is_some()
                    })
                })
                .collect(),
            None => return,
        };
        let Some(gate) = self.gates.apps.get_mut(app) else {
            return;
        };
        let dropped: Vec<u32> = gate
            .held
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| !still_held.iter().any(|(h, _)| h == id))
            .collect();
        gate.held = still_held;
        gate.pending = still_pending;
        // A held process the user stopped meanwhile: whoever waited for it to start is answered.
        for id in dropped {
            if let Some(p) = self.procs.get_mut(&id) {
                fire_ready(p);
            }
        }
        let Some(gate) = self.gates.apps.get_mut(app) else {
            return;
        };
        if gate.held.is_empty() {
            // A gate armed for a restart waits for its processes to exit (until the deadline);
            // else nothing is held.
            if gate.pending.is_empty() || Instant::now() >= gate.deadline {
                self.gates.apps.remove(app);
            }
            return;
        }
        let (since_ms, deadline, timeout_ms) = (gate.since_ms, gate.deadline, gate.timeout_ms);
        let fresh = gate.fresh.clone();
        let deps = self
            .apps
            .get(app)
            .map(|a| a.spec.depends_on.clone())
            .unwrap_or_default();
        let mut waiting = Vec::new();
        for d in &deps {
            let cond = self.condition_of(d);
            match judge(
                &d.app,
                cond,
                &self.dep_procs(&d.app),
                fresh.contains(&d.app),
                since_ms,
            ) {
                Verdict::Met => {}
                Verdict::Waiting(state) => waiting.push((d.app.clone(), cond, state)),
                Verdict::Failed(why) => {
                    let msg = format!(
                        "was not started: its dependency {:?} cannot become {}: {why}",
                        d.app,
                        cond.as_str()
                    );
                    self.fail_gate(app, &msg);
                    return;
                }
            }
        }
        if waiting.is_empty() {
            self.release_gate(app);
        } else if Instant::now() >= deadline {
            let (dep, cond, state) = &waiting[0];
            let msg = format!(
                "was not started: its dependency {dep:?} was not {} after {} (depends_timeout): {state}",
                cond.as_str(),
                depends::show_ms(timeout_ms),
            );
            self.fail_gate(app, &msg);
        }
    }

    /// Every dependency of `app` is met: its held processes start.
    fn release_gate(&mut self, app: &str) {
        let Some(gate) = self.gates.apps.remove(app) else {
            return;
        };
        if !gate.held.is_empty() {
            crate::report!("cohort: {app}: its dependencies are met; starting it");
        }
        for (id, restart) in gate.held {
            if restart {
                self.record_restart(id);
            }
            self.spawn(id);
        }
    }

    /// A dependency of `app` failed or timed out: its held processes are errored with `why`.
    fn fail_gate(&mut self, app: &str, why: &str) {
        let Some(gate) = self.gates.apps.remove(app) else {
            return;
        };
        crate::report!("cohort: {app} {why}; apps that started keep running");
        for (id, _) in gate.held {
            if let Some(p) = self.procs.get_mut(&id) {
                p.status = Status::Errored;
                p.want = Want::Stop;
                p.gen += 1;
                super::outcome::could_not_start(
                    p,
                    &format!("{why} (apps that started keep running)"),
                );
                fire_ready(p);
                notify(p);
            }
            // As for any errored process: a cluster slot's socket is let go (connections are
            // refused rather than queued for a worker that will not come).
            self.release_slot(id);
        }
    }

    /// Stops (deletes, restarts) processes `ids` in waves, dependents first; answers through the
    /// receivers returned (one that fires when the last wave is done, when there are several).
    pub(super) fn stop_ordered(
        &mut self,
        ids: &[u32],
        kind: StopKind,
    ) -> Vec<oneshot::Receiver<()>> {
        let mut waves = self.stop_waves(ids);
        if waves.len() <= 1 {
            return self.stop_wave(waves.pop().unwrap_or_default(), kind);
        }
        let first = waves.remove(0);
        let waits = self.stop_wave(first, kind);
        let (done, rx) = oneshot::channel();
        self.next_wave_after(waits, waves, kind, done);
        vec![rx]
    }

    /// Groups `ids` by wave (config::depends::stop_waves over every app's dependencies).
    fn stop_waves(&self, ids: &[u32]) -> Vec<Vec<u32>> {
        let graph = depends::graph(
            self.apps
                .iter()
                .map(|(n, a)| (n.as_str(), a.spec.depends_on.as_slice())),
        );
        let selected: BTreeSet<String> = ids
            .iter()
            .filter_map(|id| self.procs.get(id).map(|p| p.app.clone()))
            .collect();
        depends::stop_waves(&graph, &selected)
            .into_iter()
            .map(|wave| {
                ids.iter()
                    .copied()
                    .filter(|id| self.procs.get(id).is_some_and(|p| wave.contains(&p.app)))
                    .collect::<Vec<u32>>()
            })
            .filter(|w| !w.is_empty())
            .collect()
    }

    fn stop_wave(&mut self, ids: Vec<u32>, kind: StopKind) -> Vec<oneshot::Receiver<()>> {
        ids.into_iter()
            .filter_map(|id| match kind {
                StopKind::Stop => self.stop(id, Want::Stop),
                StopKind::Delete => self.stop(id, Want::Delete),
                StopKind::Restart => self.restart(id),
            })
            .collect()
    }

    /// Once `waits` fired, the actor stops the next wave (`Event::StopWave`).
    fn next_wave_after(
        &self,
        waits: Vec<oneshot::Receiver<()>>,
        waves: Vec<Vec<u32>>,
        kind: StopKind,
        done: oneshot::Sender<()>,
    ) {
        let me = self.events.clone();
        tokio::spawn(async move {
            for w in waits {
                let _ = w.await;
            }
            let _ = me.send(Event::StopWave { waves, kind, done });
        });
    }

    /// The wave before is done: stop the next one (or say the whole stop is done).
    pub(super) fn stop_wave_due(
        &mut self,
        mut waves: Vec<Vec<u32>>,
        kind: StopKind,
        done: oneshot::Sender<()>,
    ) {
        if waves.is_empty() {
            let _ = done.send(());
            return;
        }
        let wave = waves.remove(0);
        crate::report!(
            "cohort: stopping {} (its dependents have stopped)",
            self.app_names(&wave).join(", ")
        );
        let waits = self.stop_wave(wave, kind);
        self.next_wave_after(waits, waves, kind, done);
    }

    fn app_names(&self, ids: &[u32]) -> Vec<String> {
        let mut names: Vec<String> = ids
            .iter()
            .filter_map(|id| self.procs.get(id).map(|p| p.app.clone()))
            .collect();
        names.dedup();
        names
    }

    /// Checks the dependencies of the apps a start brings against each other and the apps the
    /// daemon has (which the start's apps replace when they share a name).
    pub(super) fn check_dependencies(
        &self,
        specs: &[crate::config::AppSpec],
    ) -> Result<(), String> {
        let incoming: BTreeSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        let running = depends::graph(
            self.apps
                .iter()
                .filter(|(n, _)| !incoming.contains(n.as_str()))
                .map(|(n, a)| (n.as_str(), a.spec.depends_on.as_slice())),
        );
        let apps: Vec<(&str, &[Dependency])> = specs
            .iter()
            .map(|s| (s.name.as_str(), s.depends_on.as_slice()))
            .collect();
        depends::check(&apps, &running)
    }

    /// Processes restored from a previous daemon that were held (or waiting for an upstream) are
    /// held or started again: the timers of the old daemon did not cross over.
    pub(super) fn rearm_after_restore(&mut self) {
        let waiting: Vec<u32> = self
            .procs
            .values()
            .filter(|p| p.pid.is_none() && p.want == Want::Run && p.status == Status::Launching)
            .map(|p| p.id)
            .collect();
        for id in waiting {
            self.start_or_hold(id);
        }
    }

    /// Resurrect: a one-shot job (`completed_successfully`) that an app to be started waits for
    /// runs again, even though it was saved as stopped (it had completed).
    pub(super) fn jobs_to_rerun(apps: &[(String, bool, Vec<Dependency>)]) -> BTreeSet<String> {
        apps.iter()
            .filter(|(_, stopped, _)| !stopped)
            .flat_map(|(_, _, deps)| deps.iter())
            .filter(|d| d.condition == Some(Condition::CompletedSuccessfully))
            .map(|d| d.app.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(status: Status, running: bool, serving: bool) -> DepProc {
        DepProc {
            label: "redis:0".into(),
            status,
            running,
            serving,
            stopped_by_user: false,
            last_exit_code: None,
            last_signal: None,
            started_at: Some(1_000),
            held: false,
            probe: None,
        }
    }

    #[test]
    fn verdicts() {
        use Condition::*;
        let online_ready = p(Status::Online, true, true);
        let online = p(Status::Online, true, false);
        let launching = p(Status::Launching, true, false);
        let errored = DepProc {
            last_exit_code: Some(1),
            ..p(Status::Errored, false, false)
        };
        let crashed = DepProc {
            last_exit_code: Some(1),
            ..p(Status::WaitingRestart, false, false)
        };
        let done_ok = DepProc {
            last_exit_code: Some(0),
            ..p(Status::Stopped, false, false)
        };
        let done_bad = DepProc {
            last_exit_code: Some(3),
            ..p(Status::Stopped, false, false)
        };
        let stopped = DepProc {
            stopped_by_user: true,
            ..p(Status::Stopped, false, false)
        };
        let held = DepProc {
            held: true,
            ..p(Status::Launching, false, false)
        };
        // (condition, processes, fresh, since, expected: 'M'et / 'W'aiting / 'F'ailed, text in it)
        type Case = (Condition, Vec<DepProc>, bool, u64, char, &'static str);
        let cases: Vec<Case> = vec![
            (Started, vec![online.clone()], false, 0, 'M', ""),
            (Started, vec![launching.clone()], false, 0, 'M', ""),
            (Ready, vec![online_ready.clone()], false, 0, 'M', ""),
            (
                Ready,
                vec![online.clone()],
                false,
                0,
                'W',
                "redis:0 is online, not ready",
            ),
            (
                Ready,
                vec![online_ready.clone(), online.clone()],
                false,
                0,
                'W',
                "not ready",
            ),
            (
                Ready,
                vec![crashed.clone()],
                false,
                0,
                'W',
                "waiting_restart (exited with code 1)",
            ),
            (Ready, vec![errored.clone()], false, 0, 'F', "errored"),
            (Ready, vec![stopped.clone()], false, 0, 'F', "is stopped"),
            (
                Ready,
                vec![held.clone()],
                false,
                0,
                'W',
                "its own dependencies",
            ),
            (Ready, vec![], false, 0, 'F', "not in the daemon"),
            // A restart together: the run from before the restart does not count.
            (
                Ready,
                vec![online_ready.clone()],
                true,
                2_000,
                'W',
                "online",
            ),
            (Ready, vec![online_ready.clone()], true, 500, 'M', ""),
            (
                CompletedSuccessfully,
                vec![done_ok.clone()],
                false,
                0,
                'M',
                "",
            ),
            (
                CompletedSuccessfully,
                vec![online.clone()],
                false,
                0,
                'W',
                "online",
            ),
            (
                CompletedSuccessfully,
                vec![done_bad.clone()],
                false,
                0,
                'F',
                "exited with code 3",
            ),
            (
                CompletedSuccessfully,
                vec![errored],
                false,
                0,
                'F',
                "errored",
            ),
            (CompletedSuccessfully, vec![held], false, 0, 'W', "its own"),
            // An old completed run does not count for a restart together with the job.
            (CompletedSuccessfully, vec![done_ok], true, 2_000, 'W', ""),
        ];
        for (cond, procs, fresh, since, want, text) in cases {
            let v = judge("redis", cond, &procs, fresh, since);
            let (kind, msg) = match &v {
                Verdict::Met => ('M', String::new()),
                Verdict::Waiting(s) => ('W', s.clone()),
                Verdict::Failed(s) => ('F', s.clone()),
            };
            assert_eq!(kind, want, "{cond:?} {procs:?} fresh={fresh}: {v:?}");
            assert!(msg.contains(text), "{cond:?}: {msg:?} lacks {text:?}");
        }
    }

    #[test]
    fn one_shot_jobs_rerun_on_resurrect() {
        let dep = |app: &str, c: Option<Condition>| Dependency {
            app: app.into(),
            condition: c,
            implicit: false,
        };
        let apps = vec![
            ("migrate".to_string(), true, vec![]),
            (
                "api".to_string(),
                false,
                vec![
                    dep("migrate", Some(Condition::CompletedSuccessfully)),
                    dep("redis", None),
                ],
            ),
            (
                "old".to_string(),
                true,
                vec![dep("seed", Some(Condition::CompletedSuccessfully))],
            ),
        ];
        let rerun = Supervisor::jobs_to_rerun(&apps);
        assert_eq!(
            rerun.into_iter().collect::<Vec<_>>(),
            vec!["migrate".to_string()]
        );
    }
}
