//! The supervisor's commands: start (new apps, or a config file started again), act (stop,
//! restart, reload, delete, reset, flush on a selection), scale, shutdown (stop everything, start
//! nothing more), save and resurrect (dump.json), and the sampling tick.

use super::handle::Reply;
use super::table::{App, Want};
use super::{slots, Supervisor};
use crate::api::{
    Action, ActionRequest, ProcessInfo, ResurrectReply, SaveReply, ScaleRequest, StartRequest,
    Status,
};
use crate::config::{AppSpec, Instances};
use crate::daemon::logs;
use crate::home::dump::{self as persist, SavedApp};
use tokio::sync::oneshot;

impl Supervisor {
    /// `start`: answers once every new process is ready (or gone), or at once with why nothing started.
    pub(super) fn start_apps(&mut self, req: StartRequest, reply: Reply<Vec<ProcessInfo>>) {
        let names: Vec<String> = req.apps.iter().map(|s| s.name.clone()).collect();
        match self.checked_start(req) {
            Ok(waits) => {
                let ids = names
                    .iter()
                    .filter_map(|n| self.apps.get(n))
                    .flat_map(|a| a.procs.iter().copied())
                    .collect();
                self.reply_checked(waits, ids, reply)
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Starts (or, for a config file, restarts) the apps; returns what to wait for before
    /// answering: every new process ready (listening, 'ready', or listen_timeout) or gone.
    fn checked_start(&mut self, req: StartRequest) -> Result<Vec<oneshot::Receiver<()>>, String> {
        if self.shutting_down {
            return Err("the daemon is shutting down (run the command again in a moment)".into());
        }
        // Check everything first: a bad request starts nothing.
        for spec in &req.apps {
            crate::config::ecosystem::validate_name(&spec.name)?;
            if let Some(app) = self.apps.get(&spec.name) {
                if !req.restart_existing {
                    return Err(format!(
                        "an app named {:?} already exists (id {}); restart it with `cohort restart {}`, or pick another name with --name",
                        spec.name,
                        app.procs.first().copied().unwrap_or(0),
                        spec.name
                    ));
                }
            }
            crate::config::parse_signal(&spec.kill_signal)?;
            slots::check_spec(spec)?;
        }
        self.check_dependencies(&req.apps)?;
        let mut waits = Vec::new();
        let mut names = Vec::new();
        let mut restarts = Vec::new();
        for spec in req.apps {
            let name = spec.name.clone();
            if let Some(app) = self.apps.get(&spec.name) {
                let ids = app.procs.clone();
                self.begin_start(&ids);
                let (to_restart, removed) = self.replace_spec(spec);
                restarts.extend(to_restart);
                waits.extend(removed);
            } else {
                let count = spec.instances.resolve(self.cpus);
                self.create_app(spec, count, true);
            }
            names.push(name);
        }
        // Apps of a config file started again restart in order: dependents stop first, and
        // start once their dependencies are back (gates.rs).
        if !restarts.is_empty() {
            self.arm_restart_gates(&restarts);
            waits.extend(self.stop_ordered(&restarts, super::gates::StopKind::Restart));
        }
        for name in names {
            let ids = self
                .apps
                .get(&name)
                .map(|a| a.procs.clone())
                .unwrap_or_default();
            waits.extend(ids.into_iter().filter_map(|id| self.until_ready(id)));
        }
        Ok(waits)
    }

    /// Registers an app and its processes; starts them unless `run` is false.
    pub(super) fn create_app(&mut self, spec: AppSpec, count: u32, run: bool) {
        self.create_app_as(spec, count, run, &[]);
    }

    /// `create_app` giving instance i the id `ids[i]` where it is free (resurrect keeps ids).
    fn create_app_as(&mut self, spec: AppSpec, count: u32, run: bool, ids: &[u32]) {
        let name = spec.name.clone();
        self.apps.insert(
            name.clone(),
            App {
                spec,
                procs: Vec::new(),
            },
        );
        for instance in 0..count {
            let id = self.add_proc_as(&name, instance, ids.get(instance as usize).copied());
            if run {
                // Held until its dependencies are met, if it has any (gates.rs).
                self.start_or_hold(id);
            }
        }
    }

    /// Starting a config file again: the app takes the new spec, grows or shrinks to the new
    /// instance count, and its processes restart (PM2's behaviour). Returns the processes to
    /// restart (the caller restarts them in dependency order) and what to wait for.
    fn replace_spec(&mut self, spec: AppSpec) -> (Vec<u32>, Vec<oneshot::Receiver<()>>) {
        let name = spec.name.clone();
        let count = self.count_for(&spec);
        let Some(app) = self.apps.get_mut(&name) else {
            return (Vec::new(), Vec::new());
        };
        app.spec = spec;
        let ids: Vec<u32> = app.procs.iter().take(count as usize).copied().collect();
        let waits = self.resize(&name, count);
        (ids, waits)
    }

    /// Grows or shrinks app `name` to `count` processes: new instances start at once, those above
    /// `count` are stopped (drained first in cluster mode) and deleted. Returns what to wait for.
    pub(super) fn resize(&mut self, name: &str, count: u32) -> Vec<oneshot::Receiver<()>> {
        let ids = self
            .apps
            .get(name)
            .map(|a| a.procs.clone())
            .unwrap_or_default();
        let waits = ids
            .iter()
            .skip(count as usize)
            .filter_map(|id| self.stop(*id, Want::Delete))
            .collect();
        for instance in ids.len() as u32..count {
            let id = self.add_proc(name, instance);
            self.spawn_or_join_gate(id);
        }
        waits
    }

    /// stop / restart / reload / delete / reset / flush on the selected processes.
    pub(super) fn act(&mut self, req: ActionRequest, reply: Reply<Vec<ProcessInfo>>) {
        let restarting = matches!(req.action, Action::Restart | Action::Reload);
        let mut applied = super::update::Applied::default();
        if restarting && !req.apps.is_empty() {
            match self.apply_config(req.apps) {
                Ok(a) => applied = a,
                Err(e) => {
                    let _ = reply.send(Err(e));
                    return;
                }
            }
        }
        let ids = match self.select(&req.selector) {
            // `stop all` / `delete all` with nothing to act on is done, as PM2 scripts expect.
            Ok(ids) if ids.is_empty() && req.selector == crate::api::Selector::All => {
                let _ = reply.send(Ok(Vec::new()));
                return;
            }
            Ok(ids) if ids.is_empty() => {
                let _ = reply.send(Err(
                    "no apps are running (start one with `cohort start`)".into()
                ));
                return;
            }
            Ok(ids) => ids,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        // Processes a config just started (or is removing) are not restarted on top of that.
        let ids: Vec<u32> = ids
            .into_iter()
            .filter(|id| !applied.started.contains(id))
            .filter(|id| self.procs.get(id).is_some_and(|p| p.want != Want::Delete) || !restarting)
            .collect();
        if let (true, Some(env)) = (restarting, &req.update_env) {
            self.update_env(&ids, env);
        }
        if restarting {
            self.begin_start(&ids);
        }
        if matches!(req.action, Action::Stop | Action::Delete) {
            // Everything selected is going away: none of it counts as serving for the others.
            for id in &ids {
                if let Some(p) = self.procs.get_mut(id).filter(|p| p.pid.is_some()) {
                    p.want = if req.action == Action::Stop {
                        Want::Stop
                    } else {
                        Want::Delete
                    };
                }
            }
        }
        let signal = match (req.action, req.signal.as_deref()) {
            (Action::Signal, Some(s)) => match crate::config::parse_signal(s) {
                Ok(sig) => Some(sig),
                Err(e) => {
                    let _ = reply.send(Err(e));
                    return;
                }
            },
            (Action::Signal, None) => {
                let _ = reply.send(Err("sendSignal needs a signal (e.g. SIGUSR2)".into()));
                return;
            }
            _ => None,
        };
        if let (Action::Restart | Action::Reload, Some(args)) = (req.action, &req.node_args) {
            for id in &ids {
                let app = self.procs.get(id).map(|p| p.app.clone());
                if let Some(app) = app.and_then(|a| self.apps.get_mut(&a)) {
                    app.spec.interpreter_args = args.clone();
                }
            }
        }
        let mut waits = Vec::new();
        // Several apps stop in waves, dependents first; a restart's starts wait for the
        // dependencies restarted with them (gates.rs).
        let ordered = match req.action {
            Action::Stop => Some(super::gates::StopKind::Stop),
            Action::Delete => Some(super::gates::StopKind::Delete),
            Action::Restart => Some(super::gates::StopKind::Restart),
            _ => None,
        };
        if let Some(kind) = ordered {
            if kind == super::gates::StopKind::Restart {
                self.arm_restart_gates(&ids);
            }
            waits.extend(self.stop_ordered(&ids, kind));
        }
        for &id in &ids {
            match req.action {
                Action::Signal => {
                    // The process itself, as PM2's sendSignal (not its group).
                    if let (Some(pid), Some(sig)) =
                        (self.procs.get(&id).and_then(|p| p.pid), signal)
                    {
                        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
                    }
                }
                // Done above, in dependency order.
                Action::Stop | Action::Restart | Action::Delete => {}
                Action::Reload => {}
                Action::Reset => {
                    if let Some(p) = self.procs.get_mut(&id) {
                        p.restarts = 0;
                        p.restart_reasons.clear();
                        p.run.unstable = 0;
                    }
                }
                Action::Flush => {
                    // Emptied, then reopened: a file moved or deleted meanwhile is created again.
                    if let Some(p) = self.procs.get(&id) {
                        let paths: Vec<_> = [Some(&p.out), Some(&p.err), p.combined.as_ref()]
                            .into_iter()
                            .flatten()
                            .cloned()
                            .collect();
                        for path in &paths {
                            if let Err(e) = logs::truncate(path) {
                                let _ = reply.send(Err(format!("{e:#}")));
                                return;
                            }
                        }
                        self.log_files.reopen(Some(&paths));
                    }
                }
            }
        }
        let started = applied.started;
        waits.extend(applied.waits);
        if req.action == Action::Reload {
            if started.is_empty() {
                self.reload(ids, reply);
            } else {
                // Answer once both the reload and the apps the config started are done.
                let (tx, rx) = oneshot::channel();
                self.reload(ids, tx);
                self.reply_checked(waits, started, reply_after(rx, reply));
            }
            return;
        }
        if restarting {
            let mut all = ids;
            all.extend(started);
            self.reply_checked(waits, all, reply);
            return;
        }
        self.reply_when_done(waits, reply);
    }

    /// `scale NAME N|+N|-N`: adds instances (started at once) or removes the highest ones (drained
    /// first), and remembers the count for save/resurrect.
    pub(super) fn scale(&mut self, req: ScaleRequest, reply: Reply<Vec<ProcessInfo>>) {
        let Some(app) = self.apps.get(&req.name) else {
            let _ = reply.send(Err(format!(
                "no app named {:?} (see `cohort ls` for names)",
                req.name
            )));
            return;
        };
        let current = app.procs.len() as i64;
        let t = req.target.trim();
        let parsed = if let Some(n) = t.strip_prefix('+') {
            n.parse::<i64>().map(|n| current + n)
        } else if let Some(n) = t.strip_prefix('-') {
            n.parse::<i64>().map(|n| current - n)
        } else {
            t.parse::<i64>()
        };
        let target = match parsed {
            Ok(n) if (1..=4096).contains(&n) => n as u32,
            Ok(n) => {
                let _ = reply.send(Err(format!(
                    "scale {} {t}: would leave {n} instances; keep at least 1 (use `cohort stop {}` to stop the app)",
                    req.name, req.name
                )));
                return;
            }
            Err(_) => {
                let _ = reply.send(Err(format!(
                    "scale {} {t:?}: expected a number N, +N or -N",
                    req.name
                )));
                return;
            }
        };
        let name = req.name.clone();
        if let Some(a) = self.apps.get(&name).and_then(|a| a.spec.autoscale.as_ref()) {
            let (min, max) = a.bounds(self.cpus);
            if !(min..=max).contains(&target) {
                let _ = reply.send(Err(format!(
                    "scale {name} {t}: {name} is autoscaled between {min} and {max} workers; {target} is outside (give a count in that range, or change instances = {{ min, max }} in its config and start it again)"
                )));
                return;
            }
        }
        if let Some(app) = self.apps.get_mut(&name) {
            app.spec.instances = Instances::Count(target);
        }
        let before: Vec<u32> = self
            .apps
            .get(&name)
            .map(|a| a.procs.clone())
            .unwrap_or_default();
        let waits = self.resize(&name, target);
        let added: Vec<u32> = self
            .apps
            .get(&name)
            .map(|a| a.procs.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|id| !before.contains(id))
            .collect();
        self.reply_checked(waits, added, reply);
    }
    /// Stops every app (for `kill` and daemon shutdown); answers once all have exited. Nothing
    /// restarts or starts afterwards.
    pub(super) fn shutdown(&mut self, reply: Reply<()>) {
        self.shutting_down = true;
        let ids: Vec<u32> = self.procs.keys().copied().collect();
        for p in self.procs.values_mut().filter(|p| p.pid.is_some()) {
            p.want = Want::Stop;
        }
        // Dependents first (gates.rs).
        let waits = self.stop_ordered(&ids, super::gates::StopKind::Stop);
        tokio::spawn(async move {
            for w in waits {
                let _ = w.await;
            }
            let _ = reply.send(Ok(()));
        });
    }

    /// A sampling tick: cpu and memory of every running process.
    pub(super) fn sample(&mut self) {
        self.log_files.close_idle();
        for p in self.procs.values_mut() {
            if let Some(pid) = p.pid {
                if let Some(s) = self.sampler.sample(pid) {
                    p.cpu = s.cpu;
                    p.memory = s.memory;
                    if p.history.len() == crate::daemon::sampler::HISTORY {
                        p.history.pop_front();
                    }
                    p.history.push_back((s.cpu as f32, s.memory));
                }
            }
        }
    }

    /// `save`: writes dump.json.
    pub(super) fn save(&mut self, force: bool) -> Result<SaveReply, String> {
        let apps: Vec<SavedApp<AppSpec>> = self
            .apps
            .values()
            .map(|a| SavedApp {
                spec: a.spec.clone(),
                instances: a.procs.len() as u32,
                stopped: a
                    .procs
                    .iter()
                    .filter_map(|id| self.procs.get(id))
                    .all(|p| p.status == Status::Stopped && p.want == Want::Stop),
                ids: a.procs.clone(),
            })
            .collect();
        let path = self.home.dump();
        if apps.is_empty() && !force {
            return Err(format!(
                "no apps to save: this would replace {} with an empty list (start your apps first, or use `cohort save --force` to save an empty list)",
                path.display()
            ));
        }
        let n = apps.len();
        persist::write(&path, apps).map_err(|e| format!("{e:#}"))?;
        Ok(SaveReply {
            path: path.to_string_lossy().into_owned(),
            apps: n,
        })
    }

    /// `resurrect`: starts the apps of dump.json that do not run.
    pub(super) fn resurrect(&mut self) -> Result<ResurrectReply, String> {
        let dump = persist::read::<AppSpec>(&self.home.dump()).map_err(|e| format!("{e:#}"))?;
        crate::config::validate::saved_apps(&dump.apps, &self.home.dump().to_string_lossy())?;
        let mut reply = ResurrectReply {
            started: Vec::new(),
            skipped: Vec::new(),
        };
        // A one-shot job that a started app waits for runs again (it was saved as stopped).
        let rerun = Self::jobs_to_rerun(
            &dump
                .apps
                .iter()
                .map(|s| (s.spec.name.clone(), s.stopped, s.spec.depends_on.clone()))
                .collect::<Vec<_>>(),
        );
        for saved in dump.apps {
            if self.apps.contains_key(&saved.spec.name) {
                reply.skipped.push(saved.spec.name);
                continue;
            }
            let name = saved.spec.name.clone();
            let run = !saved.stopped || rerun.contains(&name);
            self.create_app_as(saved.spec, saved.instances.max(1), run, &saved.ids);
            reply.started.push(name);
        }
        Ok(reply)
    }
}

/// A reply that first waits for another answer (`first`): an error there wins, else `reply`'s own
/// answer is sent.
fn reply_after(
    first: oneshot::Receiver<Result<Vec<ProcessInfo>, String>>,
    reply: Reply<Vec<ProcessInfo>>,
) -> Reply<Vec<ProcessInfo>> {
    let (tx, rx) = oneshot::channel::<Result<Vec<ProcessInfo>, String>>();
    tokio::spawn(async move {
        let first = first.await;
        let second = rx.await;
        let answer = match (first, second) {
            (Ok(Err(e)), Ok(Err(f))) => Err(format!("{e}; {f}")),
            (Ok(Err(e)), _) => Err(e),
            (_, Ok(r)) => r,
            (_, Err(_)) => Err("the supervisor dropped the request".into()),
        };
        let _ = reply.send(answer);
    });
    tx
}
