//! The supervisor: one task that owns the app and process tables. Everything else talks to it with
//! messages (API commands, child exits from the reaper, timers, sampling ticks) and gets answers on
//! oneshot channels, so there is no shared mutable state and no lock around the tables.
//!
//! It implements PM2's lifecycle: start, stop (kill_signal to the process group, SIGKILL after
//! kill_timeout), restart, delete, the restart policy (min_uptime / max_restarts → errored,
//! restart_delay, exp_backoff_restart_delay, stop_exit_codes), save and resurrect. Cluster mode
//! (sockets held per worker slot, Node's IPC channel, reload one slot at a time, scale) lives in
//! `cluster.rs` as more methods of the same actor.

mod balancers;
mod cluster;

use super::logs::{self, LogFile, LogHub, Sink, Stamp};
use super::reaper::Exit;
use super::sampler::Sampler;
use super::spawn;
use crate::api::{
    Action, ActionRequest, LogFiles, ProcessDetail, ProcessInfo, ResurrectReply, SaveReply,
    Selector, StartRequest, Status,
};
use crate::cluster::node_ipc::{
    channel_env, cluster_worker_env, NodeChannel, NodeMessage, NodeSender,
};
use crate::cluster::sockets::{ListenAddr, SocketTable};
use crate::config::{AppSpec, ExecMode};
use crate::home::dump::{self as persist, SavedApp};
use crate::home::Home;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::VecDeque;
use std::collections::{BTreeMap, HashMap};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

pub type Reply<T> = oneshot::Sender<Result<T, String>>;

/// Exponential backoff grows by this factor up to this cap, and resets after a run this long (PM2's values).
const BACKOFF_FACTOR: f64 = 1.5;
const BACKOFF_CAP_MS: u64 = 15_000;
const BACKOFF_RESET_MS: u64 = 30_000;

pub enum Msg {
    Start(StartRequest, Reply<Vec<ProcessInfo>>),
    Act(ActionRequest, Reply<Vec<ProcessInfo>>),
    List(Reply<Vec<ProcessInfo>>),
    Describe(Selector, Reply<Vec<ProcessDetail>>),
    LogFiles(Selector, Reply<Vec<LogFiles>>),
    Env(u32, Reply<BTreeMap<String, String>>),
    History(Selector, Reply<Vec<crate::api::History>>),
    Save(bool, Reply<SaveReply>),
    Resurrect(Reply<ResurrectReply>),
    /// Stop every app (for `kill` and daemon shutdown); answers once all have exited.
    Shutdown(Reply<()>),
    Exited(Exit),
    KillTimeout {
        id: u32,
        gen: u64,
    },
    RestartDue {
        id: u32,
        gen: u64,
    },
    SampleTick,
    /// A message from a Node process's IPC channel.
    Node {
        id: u32,
        pid: i32,
        msg: NodeMessage,
    },
    /// `listen_timeout` passed without a readiness signal: consider the process ready (PM2 does).
    ReadyTimeout {
        id: u32,
        gen: u64,
    },
    /// A worker replaced by a reload did not exit within kill_timeout.
    RetireTimeout {
        pid: i32,
    },
    /// Scale-down/stop of a cluster slot waits for its queued connections to be accepted.
    DrainCheck {
        id: u32,
        gen: u64,
        left: u32,
    },
    Scale(crate::api::ScaleRequest, Reply<Vec<ProcessInfo>>),
    /// A process sent `READY=1` to the notify socket.
    NotifyReady(i32),
    /// A balancer waits for the app it balances to listen.
    SpawnRetry {
        id: u32,
        gen: u64,
        keep_old: bool,
    },
}

/// A cloneable handle to the supervisor task.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::UnboundedSender<Msg>,
    pub hub: LogHub,
}

impl Handle {
    /// Sends a request and waits for its answer.
    pub async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Msg) -> Result<T, String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .map_err(|_| "the supervisor has stopped (the daemon is shutting down)".to_string())?;
        rx.await.map_err(|_| {
            "the supervisor dropped the request (the daemon is shutting down)".to_string()
        })?
    }
}

/// What the user asked of a process; decides what its next exit means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    Run,
    Stop,
    Restart,
    Delete,
}

/// A process replaced by a reload: still serving its open connections until it exits.
struct Retiring {
    pid: i32,
    channel: Option<NodeSender>,
    /// Asked to stop already (never signalled twice: a second signal cuts a drain short).
    stopping: bool,
    /// When it started (restored if its replacement fails to start).
    started: Option<Instant>,
    started_at: Option<u64>,
}

struct App {
    spec: AppSpec,
    /// Process ids by instance number.
    procs: Vec<u32>,
}

struct Proc {
    id: u32,
    app: String,
    instance: u32,
    status: Status,
    pid: Option<i32>,
    want: Want,
    restarts: u32,
    unstable: u32,
    backoff_ms: u64,
    created_at: u64,
    started_at: Option<u64>,
    started: Option<Instant>,
    last_exit_code: Option<i32>,
    last_signal: Option<String>,
    /// Bumped at every spawn and stop, so timers armed for an earlier run do nothing.
    gen: u64,
    cpu: f64,
    memory: u64,
    /// The last samples (cpu %, memory bytes), oldest first, for monit's charts.
    history: std::collections::VecDeque<(f32, u64)>,
    waiters: Vec<oneshot::Sender<()>>,
    /// The Node IPC channel of the current process (Node apps only).
    channel: Option<NodeSender>,
    /// The current process signalled readiness (listening / 'ready' / listen_timeout).
    ready: bool,
    /// Fired when the current process is ready or gone (`start` answers once its apps serve).
    ready_waiters: Vec<oneshot::Sender<()>>,
    /// Processes replaced by a reload, draining until they exit.
    retiring: Vec<Retiring>,
    /// A balancer's admin address (GET /status), for `describe`.
    admin: Option<String>,
    out: PathBuf,
    err: PathBuf,
    combined: Option<PathBuf>,
}

pub struct Supervisor {
    home: Home,
    tx: mpsc::UnboundedSender<Msg>,
    apps: BTreeMap<String, App>,
    procs: BTreeMap<u32, Proc>,
    by_pid: HashMap<i32, u32>,
    next_id: u32,
    hub: LogHub,
    sampler: Sampler,
    cpus: u32,
    shutting_down: bool,
    /// Listening sockets of cluster apps, per app and worker slot.
    sockets: SocketTable,
    /// NODE_UNIQUE_ID of the next Node cluster worker.
    next_worker: u64,
    /// Reloads in progress (one at a time; later requests wait their turn).
    reloads: VecDeque<cluster::ReloadJob>,
    /// Where the Node preload (drain on shutdown) was written.
    shim: PathBuf,
}

/// Starts the supervisor task and its helpers (reaper, sampling ticks).
pub fn start(home: Home) -> anyhow::Result<Handle> {
    use anyhow::Context;
    let shim = home.shim_dir().join("node.cjs");
    crate::home::private::private_subdir(&home.shim_dir())
        .and_then(|()| crate::home::private::open_truncate(&shim))
        .and_then(|mut f| {
            Ok(std::io::Write::write_all(
                &mut f,
                crate::cluster::NODE_SHIM.as_bytes(),
            )?)
        })
        .with_context(|| format!("writing the Node preload {}", shim.display()))?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let hub = logs::new_hub();
    super::reaper::start(tx.clone(), Msg::Exited)?;
    super::notify::start(&home.notify_socket(), tx.clone(), Msg::NotifyReady)?;
    let tick = tx.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(super::sampler::INTERVAL_MS));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if tick.send(Msg::SampleTick).is_err() {
                break;
            }
        }
    });
    let mut sup = Supervisor {
        home,
        tx: tx.clone(),
        apps: BTreeMap::new(),
        procs: BTreeMap::new(),
        by_pid: HashMap::new(),
        next_id: 0,
        hub: hub.clone(),
        sampler: Sampler::new(),
        cpus: super::cpus::usable(),
        shutting_down: false,
        sockets: SocketTable::new(),
        next_worker: 0,
        reloads: VecDeque::new(),
        shim,
    };
    tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            sup.handle(msg);
        }
    });
    Ok(Handle { tx, hub })
}

fn signal_name(sig: i32) -> String {
    Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| sig.to_string())
}

impl Supervisor {
    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Start(req, reply) => match self.start_apps(req) {
                Ok(waits) => self.reply_when_done(waits, reply),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Msg::Act(req, reply) => self.act(req, reply),
            Msg::List(reply) => {
                let _ = reply.send(Ok(self.list()));
            }
            Msg::Describe(sel, reply) => {
                let r = self
                    .select(&sel)
                    .map(|ids| ids.iter().filter_map(|id| self.detail(*id)).collect());
                let _ = reply.send(r);
            }
            Msg::LogFiles(sel, reply) => {
                let r = self.select(&sel).map(|ids| {
                    ids.iter()
                        .filter_map(|id| self.procs.get(id))
                        .map(|p| LogFiles {
                            id: p.id,
                            name: p.app.clone(),
                            instance: p.instance,
                            out: p.out.to_string_lossy().into_owned(),
                            err: p.err.to_string_lossy().into_owned(),
                        })
                        .collect()
                });
                let _ = reply.send(r);
            }
            Msg::Env(id, reply) => {
                let r = match self.procs.get(&id) {
                    Some(p) => Ok(self.child_env(p).into_iter().collect()),
                    None => Err(format!("no process with id {id} (see `cohort ls`)")),
                };
                let _ = reply.send(r);
            }
            Msg::History(sel, reply) => {
                let r = self.select(&sel).map(|ids| {
                    ids.iter()
                        .filter_map(|id| self.procs.get(id))
                        .map(|p| crate::api::History {
                            id: p.id,
                            interval_ms: super::sampler::INTERVAL_MS,
                            cpu: p.history.iter().map(|h| h.0).collect(),
                            memory: p.history.iter().map(|h| h.1).collect(),
                        })
                        .collect()
                });
                let _ = reply.send(r);
            }
            Msg::Save(force, reply) => {
                let _ = reply.send(self.save(force));
            }
            Msg::Resurrect(reply) => {
                let _ = reply.send(self.resurrect());
            }
            Msg::Shutdown(reply) => {
                self.shutting_down = true;
                let ids: Vec<u32> = self.procs.keys().copied().collect();
                for p in self.procs.values_mut().filter(|p| p.pid.is_some()) {
                    p.want = Want::Stop;
                }
                let waits = ids
                    .iter()
                    .filter_map(|id| self.stop(*id, Want::Stop))
                    .collect::<Vec<_>>();
                tokio::spawn(async move {
                    for w in waits {
                        let _ = w.await;
                    }
                    let _ = reply.send(Ok(()));
                });
            }
            Msg::Exited(exit) => self.on_exit(exit),
            Msg::KillTimeout { id, gen } => {
                if let Some(p) = self.procs.get(&id) {
                    if p.gen == gen {
                        if let Some(pid) = p.pid {
                            eprintln!(
                                "cohort: {}:{} (pid {pid}) did not stop in time; sending SIGKILL",
                                p.app, p.instance
                            );
                            let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
                        }
                    }
                }
            }
            Msg::RestartDue { id, gen } => {
                let due = self.procs.get(&id).is_some_and(|p| {
                    p.gen == gen && p.status == Status::WaitingRestart && p.want == Want::Run
                });
                if due {
                    self.bump_restarts(id);
                    self.spawn(id);
                }
            }
            Msg::SampleTick => self.sample(),
            Msg::Node { id, pid, msg } => self.on_node_message(id, pid, msg),
            Msg::ReadyTimeout { id, gen } => {
                let due = self
                    .procs
                    .get(&id)
                    .filter(|p| p.gen == gen && !p.ready)
                    .and_then(|p| p.pid);
                if let Some(pid) = due {
                    self.mark_ready(id, pid);
                }
            }
            Msg::RetireTimeout { pid } => {
                if self.by_pid.contains_key(&pid) {
                    eprintln!(
                        "cohort: replaced worker (pid {pid}) did not stop in time; sending SIGKILL"
                    );
                    let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
                }
            }
            Msg::DrainCheck { id, gen, left } => self.drain_check(id, gen, left),
            Msg::Scale(req, reply) => self.scale(req, reply),
            Msg::NotifyReady(pid) => {
                let managed = super::notify::managed_sender(pid, |p| self.by_pid.contains_key(&p));
                if let Some((p, id)) = managed.and_then(|p| Some((p, *self.by_pid.get(&p)?))) {
                    self.mark_ready(id, p);
                }
            }
            Msg::SpawnRetry { id, gen, keep_old } => {
                if self
                    .procs
                    .get(&id)
                    .is_some_and(|p| p.gen == gen && p.want == Want::Run)
                {
                    self.spawn_worker(id, keep_old);
                }
            }
        }
    }

    // ----- queries -----

    fn info(&self, p: &Proc) -> ProcessInfo {
        let mode = self
            .apps
            .get(&p.app)
            .map(|a| match a.spec.balancer {
                Some(_) => "balancer",
                None => a.spec.exec_mode.as_str(),
            })
            .unwrap_or("fork")
            .to_string();
        ProcessInfo {
            id: p.id,
            name: p.app.clone(),
            instance: p.instance,
            pid: p.pid,
            status: p.status,
            restarts: p.restarts,
            uptime_ms: match (p.status, p.started) {
                (Status::Online | Status::Launching | Status::Stopping, Some(t)) => {
                    t.elapsed().as_millis() as u64
                }
                _ => 0,
            },
            cpu: if p.pid.is_some() { p.cpu } else { 0.0 },
            memory: if p.pid.is_some() { p.memory } else { 0 },
            mode,
            unstable_restarts: p.unstable,
        }
    }

    fn list(&self) -> Vec<ProcessInfo> {
        self.procs.values().map(|p| self.info(p)).collect()
    }

    fn detail(&self, id: u32) -> Option<ProcessDetail> {
        let p = self.procs.get(&id)?;
        let spec = &self.apps.get(&p.app)?.spec;
        Some(ProcessDetail {
            info: self.info(p),
            script: spec.script.clone(),
            args: spec.args.clone(),
            cwd: spec.cwd.to_string_lossy().into_owned(),
            interpreter: spec.interpreter.clone(),
            interpreter_args: spec.interpreter_args.clone(),
            env_keys: spec.app_env_keys.clone(),
            out_log: p.out.to_string_lossy().into_owned(),
            err_log: p.err.to_string_lossy().into_owned(),
            combined_log: p
                .combined
                .as_ref()
                .map(|c| c.to_string_lossy().into_owned()),
            last_exit_code: p.last_exit_code,
            last_signal: p.last_signal.clone(),
            created_at: p.created_at,
            started_at: p.started_at,
            autorestart: spec.autorestart,
            max_restarts: spec.max_restarts,
            min_uptime_ms: spec.min_uptime_ms,
            kill_timeout_ms: spec.kill_timeout_ms,
            kill_signal: spec.kill_signal.clone(),
            listen: spec.listen.clone(),
            balancer_admin: p.admin.clone(),
        })
    }

    /// Resolves a selector to process ids, or says why nothing matched.
    fn select(&self, sel: &Selector) -> Result<Vec<u32>, String> {
        match sel {
            Selector::All => Ok(self.procs.keys().copied().collect()),
            Selector::Id(id) => match self.procs.contains_key(id) {
                true => Ok(vec![*id]),
                false => Err(format!("no process with id {id} (see `cohort ls` for ids)")),
            },
            Selector::Name(name) => match self.apps.get(name) {
                Some(app) => Ok(app.procs.clone()),
                None => Err(format!("no app named {name:?} (see `cohort ls` for names)")),
            },
            Selector::Names(names) => {
                // A config file selects the apps of it that exist; none at all is an error.
                let ids: Vec<u32> = names
                    .iter()
                    .filter_map(|n| self.apps.get(n))
                    .flat_map(|a| a.procs.iter().copied())
                    .collect();
                if ids.is_empty() {
                    return Err(format!(
                        "none of the apps {} runs (start them first, or see `cohort ls`)",
                        names.join(", ")
                    ));
                }
                Ok(ids)
            }
            Selector::Many(sels) => {
                let mut ids = Vec::new();
                for s in sels {
                    for id in self.select(s)? {
                        if !ids.contains(&id) {
                            ids.push(id);
                        }
                    }
                }
                Ok(ids)
            }
        }
    }

    // ----- start -----

    /// Starts (or, for a config file, restarts) the apps; returns what to wait for before
    /// answering: every new process ready (listening, 'ready', or listen_timeout) or gone.
    fn start_apps(&mut self, req: StartRequest) -> Result<Vec<oneshot::Receiver<()>>, String> {
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
            cluster::check_spec(spec)?;
        }
        let mut waits = Vec::new();
        for spec in req.apps {
            let name = spec.name.clone();
            if self.apps.contains_key(&spec.name) {
                waits.extend(self.replace_and_restart(spec));
            } else {
                let count = spec.instances.resolve(self.cpus);
                self.create_app(spec, count, true);
            }
            let ids = self
                .apps
                .get(&name)
                .map(|a| a.procs.clone())
                .unwrap_or_default();
            waits.extend(ids.into_iter().filter_map(|id| self.until_ready(id)));
        }
        Ok(waits)
    }

    /// A receiver that fires when process `id` is ready or gone; None if it is already either.
    fn until_ready(&mut self, id: u32) -> Option<oneshot::Receiver<()>> {
        let p = self.procs.get_mut(&id)?;
        if p.ready || p.pid.is_none() {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        p.ready_waiters.push(tx);
        Some(rx)
    }

    /// Registers an app and its processes; starts them unless `run` is false.
    fn create_app(&mut self, spec: AppSpec, count: u32, run: bool) {
        let name = spec.name.clone();
        self.apps.insert(
            name.clone(),
            App {
                spec,
                procs: Vec::new(),
            },
        );
        for instance in 0..count {
            let id = self.add_proc(&name, instance);
            if run {
                self.spawn(id);
            }
        }
    }

    fn add_proc(&mut self, name: &str, instance: u32) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        let (out, err, combined) = self.log_paths(name, instance);
        self.procs.insert(
            id,
            Proc {
                id,
                app: name.to_string(),
                instance,
                status: Status::Stopped,
                pid: None,
                want: Want::Stop,
                restarts: 0,
                unstable: 0,
                backoff_ms: 0,
                created_at: super::now_ms(),
                started_at: None,
                started: None,
                last_exit_code: None,
                last_signal: None,
                gen: 0,
                cpu: 0.0,
                memory: 0,
                history: std::collections::VecDeque::new(),
                waiters: Vec::new(),
                channel: None,
                ready: false,
                ready_waiters: Vec::new(),
                retiring: Vec::new(),
                admin: None,
                out,
                err,
                combined,
            },
        );
        if let Some(app) = self.apps.get_mut(name) {
            app.procs.push(id);
        }
        id
    }

    /// Starting a config file again: the app takes the new spec and its processes restart (PM2's
    /// behaviour), growing or shrinking to the new instance count.
    fn replace_and_restart(&mut self, spec: AppSpec) -> Vec<oneshot::Receiver<()>> {
        let name = spec.name.clone();
        let count = spec.instances.resolve(self.cpus);
        let Some(app) = self.apps.get_mut(&name) else {
            return Vec::new();
        };
        app.spec = spec;
        let ids = app.procs.clone();
        let mut waits: Vec<_> = ids
            .iter()
            .take(count as usize)
            .filter_map(|id| self.restart(*id))
            .collect();
        waits.extend(self.resize(&name, count));
        waits
    }

    /// Grows or shrinks app `name` to `count` processes: new instances start at once, those above
    /// `count` are stopped (drained first in cluster mode) and deleted. Returns what to wait for.
    fn resize(&mut self, name: &str, count: u32) -> Vec<oneshot::Receiver<()>> {
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
            self.spawn(id);
        }
        waits
    }

    fn log_paths(&self, name: &str, instance: u32) -> (PathBuf, PathBuf, Option<PathBuf>) {
        let spec = self.apps.get(name).map(|a| &a.spec);
        let merge = spec.is_some_and(|s| s.merge_logs);
        let several = spec.is_some_and(|s| s.instances.resolve(self.cpus) > 1);
        let default = |kind: &str| {
            if merge {
                self.home.logs_dir().join(format!("{name}-{kind}.log"))
            } else {
                self.home
                    .logs_dir()
                    .join(format!("{name}-{instance}-{kind}.log"))
            }
        };
        // A path given by the user gets the instance number when several processes would share it.
        let custom = |p: &PathBuf| {
            if several && !merge {
                let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("app");
                let ext = p
                    .extension()
                    .and_then(|s| s.to_str())
                    .map(|e| format!(".{e}"))
                    .unwrap_or_default();
                p.with_file_name(format!("{stem}-{instance}{ext}"))
            } else {
                p.clone()
            }
        };
        let out = spec
            .and_then(|s| s.out_file.as_ref())
            .map(custom)
            .unwrap_or_else(|| default("out"));
        let err = spec
            .and_then(|s| s.error_file.as_ref())
            .map(custom)
            .unwrap_or_else(|| default("err"));
        let combined = spec.and_then(|s| s.log_file.as_ref()).map(custom);
        (out, err, combined)
    }

    /// The environment a process runs with: the app's, plus PM2's per-process variables.
    fn child_env(&self, p: &Proc) -> BTreeMap<String, String> {
        let mut env = self
            .apps
            .get(&p.app)
            .map(|a| a.spec.env.clone())
            .unwrap_or_default();
        env.insert("name".into(), p.app.clone());
        env.insert("pm_id".into(), p.id.to_string());
        env.insert("NODE_APP_INSTANCE".into(), p.instance.to_string());
        env.insert("COHORT_APP".into(), p.app.clone());
        env.insert("COHORT_ID".into(), p.id.to_string());
        env.insert("COHORT_INSTANCE".into(), p.instance.to_string());
        env.insert(
            "COHORT_HOME".into(),
            self.home.root.to_string_lossy().into_owned(),
        );
        env
    }

    /// Starts (or starts again) process `id` now.
    fn spawn(&mut self, id: u32) {
        self.spawn_worker(id, false);
    }

    /// Starts a process for `id`. With `keep_old` (reload), the process running now is kept as
    /// retiring (it drains once the new one is ready) instead of being replaced in the table.
    /// Returns false when nothing could be started.
    fn spawn_worker(&mut self, id: u32, keep_old: bool) -> bool {
        let Some(p) = self.procs.get(&id) else {
            return false;
        };
        let Some(spec) = self.apps.get(&p.app).map(|a| a.spec.clone()) else {
            return false;
        };
        let (out_path, err_path, combined_path) =
            (p.out.clone(), p.err.clone(), p.combined.clone());
        let slot = p.instance as usize;
        let mut env = self.child_env(p);
        let (program, mut argv) = command_line(&spec);
        if let Some(b) = &spec.balancer {
            match self.balancer_argv(&spec.name, b) {
                Ok(Some(args)) => argv.extend(args),
                Ok(None) => {
                    // An `app:NAME` upstream has no port yet (its workers are starting): try again soon.
                    self.retry_spawn(id, keep_old);
                    return true;
                }
                Err(e) => {
                    self.spawn_failed(id, keep_old, &e);
                    return false;
                }
            }
        }
        let cluster = spec.exec_mode == ExecMode::Cluster;
        let node = spec.is_node();
        let name: Arc<str> = Arc::from(spec.name.as_str());
        let instance = slot as u32;

        // Descriptors the child inherits at 3.., and the Node channel if any.
        let prepared = (|| -> anyhow::Result<(Vec<OwnedFd>, Option<NodeChannel>, bool)> {
            let mut fds = Vec::new();
            if node {
                let (chan, theirs) = NodeChannel::pair()
                    .map_err(|e| anyhow::anyhow!("creating the IPC channel: {e}"))?;
                fds.push(theirs);
                for (k, v) in channel_env(3) {
                    env.insert(k.to_string(), v);
                }
                if cluster {
                    self.next_worker += 1;
                    let (k, v) = cluster_worker_env(self.next_worker);
                    env.insert(k.to_string(), v);
                    env.insert(
                        "COHORT_KILL_TIMEOUT".into(),
                        spec.kill_timeout_ms.to_string(),
                    );
                    argv.insert(1, format!("--require={}", self.shim.display()));
                }
                return Ok((fds, Some(chan), false));
            }
            env.insert(
                "NOTIFY_SOCKET".into(),
                self.home.notify_socket().to_string_lossy().into_owned(),
            );
            if cluster {
                let mut names = Vec::new();
                for text in &spec.listen {
                    let addr = cluster::parse_listen(text).map_err(|e| anyhow::anyhow!(e))?;
                    let fd = self
                        .sockets
                        .socket_for(&spec.name, slot, &addr)
                        .and_then(|fd| fd.try_clone_to_owned())
                        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
                    fds.push(fd);
                    names.push(match addr {
                        ListenAddr::Unix(_) => "unix".to_string(),
                        ListenAddr::Tcp { port, .. } => format!("port{port}"),
                    });
                }
                env.insert("LISTEN_FDS".into(), fds.len().to_string());
                env.insert("LISTEN_FDNAMES".into(), names.join(":"));
                return Ok((fds, None, true));
            }
            Ok((fds, None, false))
        })();
        let files = (|| -> anyhow::Result<_> {
            let out = LogFile::open(&out_path)?;
            let err = if err_path == out_path {
                out.clone()
            } else {
                LogFile::open(&err_path)?
            };
            let combined = combined_path.as_deref().map(LogFile::open).transpose()?;
            Ok((out, err, combined))
        })();
        let result = prepared.and_then(|(fds, chan, listen_pid)| {
            let files = files?;
            use std::os::fd::AsRawFd;
            let cmd = spawn::Command {
                program: &program,
                argv,
                env: env.into_iter().collect(),
                cwd: &spec.cwd,
                fds: fds.iter().map(|f| f.as_raw_fd()).collect(),
                listen_pid,
            };
            Ok((spawn::spawn(&cmd)?, files, chan))
        });
        let stamp = spec
            .time
            .then(|| Stamp::new(spec.log_date_format.as_deref()));
        let Some(p) = self.procs.get_mut(&id) else {
            return false;
        };
        match result {
            Ok((child, (out, err, combined), chan)) => {
                let pid = child.pid.as_raw();
                p.gen += 1;
                p.want = Want::Run;
                if keep_old {
                    if let Some(old) = p.pid.take() {
                        p.retiring.push(Retiring {
                            pid: old,
                            channel: p.channel.take(),
                            stopping: false,
                            started: p.started,
                            started_at: p.started_at,
                        });
                    }
                }
                p.pid = Some(pid);
                p.ready = false;
                p.channel = chan.as_ref().map(NodeChannel::sender);
                if !keep_old || p.status != Status::Online {
                    p.status = if spec.wait_ready {
                        Status::Launching
                    } else {
                        Status::Online
                    };
                }
                p.started = Some(Instant::now());
                p.started_at = Some(super::now_ms());
                p.cpu = 0.0;
                p.memory = 0;
                let gen = p.gen;
                self.by_pid.insert(pid, id);
                let sink = |stream, file| Sink {
                    id,
                    name: name.clone(),
                    instance,
                    stream,
                    file,
                    combined: combined.clone(),
                    stamp: stamp.clone(),
                    hub: self.hub.clone(),
                };
                tokio::spawn(logs::pump(child.stdout, sink("out", out)));
                tokio::spawn(logs::pump(child.stderr, sink("err", err)));
                if let Some(mut chan) = chan {
                    let tx = self.tx.clone();
                    tokio::spawn(async move {
                        while let Ok(Some(msg)) = chan.recv().await {
                            if tx.send(Msg::Node { id, pid, msg }).is_err() {
                                break;
                            }
                        }
                    });
                }
                // Readiness: Node cluster workers say when they listen, wait_ready apps send
                // 'ready'; others are ready once started (a socket-activated worker's socket already
                // queues connections). listen_timeout bounds the wait, as in PM2.
                if spec.wait_ready || (cluster && node) {
                    let me = self.tx.clone();
                    let wait = spec.listen_timeout_ms;
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(wait)).await;
                        let _ = me.send(Msg::ReadyTimeout { id, gen });
                    });
                } else {
                    self.mark_ready(id, pid);
                }
                true
            }
            Err(e) => {
                self.spawn_failed(id, keep_old, &format!("{e:#}"));
                false
            }
        }
    }

    /// Records why process `id` could not start (in its error log and daemon.log). A reload keeps
    /// the old process; otherwise the process is `errored`.
    fn spawn_failed(&mut self, id: u32, keep_old: bool, why: &str) {
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        let msg = format!("cohort: cannot start {}:{}: {why}", p.app, p.instance);
        eprintln!("{msg}");
        // The reason goes where the user looks first: the app's error log.
        if let Ok(f) = LogFile::open(&p.err) {
            f.write_all(format!("{msg}\n").as_bytes());
        }
        if !(keep_old && p.pid.is_some()) {
            p.gen += 1;
            p.status = Status::Errored;
            p.pid = None;
            p.want = Want::Stop;
            notify(p);
            fire_ready(p);
            self.release_slot(id);
        }
    }

    // ----- stop / restart / delete -----

    /// Asks process `id` to stop (`want` says what its exit then means). Returns a receiver that
    /// fires when it is done, or None when there was nothing to wait for.
    fn stop(&mut self, id: u32, want: Want) -> Option<oneshot::Receiver<()>> {
        let cluster = self.is_cluster(id);
        // A reload of this process is overtaken: the workers it was replacing stop too.
        self.abandon_reload(id);
        let p = self.procs.get_mut(&id)?;
        match p.pid {
            Some(_) => {
                p.want = want;
                p.status = Status::Stopping;
                let (tx, rx) = oneshot::channel();
                p.waiters.push(tx);
                let gen = p.gen;
                if cluster {
                    // No new connections for this slot.
                    self.set_live(id, false);
                    if want != Want::Restart {
                        if !self.others_serving(id) {
                            // Nothing else serves the port: the daemon lets go of the socket now,
                            // so new connections are refused (and go elsewhere) instead of being
                            // queued with no one left to accept them.
                            self.release_slot(id);
                        } else if self.queued(id) > 0 {
                            // Other slots serve: connections queued here are accepted first.
                            self.drain_check(id, gen, 100);
                            return Some(rx);
                        }
                    }
                }
                self.send_stop(id);
                Some(rx)
            }
            None => {
                p.gen += 1; // cancels a pending restart
                match want {
                    Want::Delete => self.remove(id),
                    Want::Restart => {
                        p.unstable = 0;
                        self.bump_restarts(id);
                        self.spawn(id);
                    }
                    _ => {
                        p.want = Want::Stop;
                        if p.status != Status::Errored || want == Want::Stop {
                            p.status = Status::Stopped;
                        }
                        self.release_slot(id);
                    }
                }
                None
            }
        }
    }

    /// Sends the stop signal (or PM2's shutdown message) to the current process of `id` and arms
    /// the SIGKILL that follows kill_timeout.
    fn send_stop(&mut self, id: u32) {
        let Some(p) = self.procs.get(&id) else { return };
        let Some(pid) = p.pid else { return };
        let Some(spec) = self.apps.get(&p.app).map(|a| &a.spec) else {
            return;
        };
        stop_process(pid, p.channel.clone(), spec);
        let (gen, kill_timeout) = (p.gen, spec.kill_timeout_ms);
        let me = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(kill_timeout)).await;
            let _ = me.send(Msg::KillTimeout { id, gen });
        });
    }

    fn restart(&mut self, id: u32) -> Option<oneshot::Receiver<()>> {
        if let Some(p) = self.procs.get_mut(&id) {
            p.unstable = 0;
            p.backoff_ms = 0;
        }
        self.stop(id, Want::Restart)
    }

    fn bump_restarts(&mut self, id: u32) {
        if let Some(p) = self.procs.get_mut(&id) {
            p.restarts += 1;
        }
    }

    fn remove(&mut self, id: u32) {
        if let Some(mut p) = self.procs.remove(&id) {
            notify(&mut p);
            if let Some(app) = self.apps.get_mut(&p.app) {
                app.procs.retain(|x| *x != id);
                if app.procs.is_empty() {
                    self.apps.remove(&p.app);
                    self.sockets.remove_app(&p.app);
                } else if let Err(e) = self.sockets.group(&p.app).remove_slot(p.instance as usize) {
                    eprintln!(
                        "cohort: closing the sockets of {}:{}: {e}",
                        p.app, p.instance
                    );
                }
            }
        }
    }

    fn act(&mut self, req: ActionRequest, reply: Reply<Vec<ProcessInfo>>) {
        let ids = match self.select(&req.selector) {
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
        let mut waits = Vec::new();
        for &id in &ids {
            match req.action {
                Action::Stop => waits.extend(self.stop(id, Want::Stop)),
                Action::Restart => waits.extend(self.restart(id)),
                Action::Reload => {}
                Action::Delete => waits.extend(self.stop(id, Want::Delete)),
                Action::Reset => {
                    if let Some(p) = self.procs.get_mut(&id) {
                        p.restarts = 0;
                        p.unstable = 0;
                    }
                }
                Action::Flush => {
                    if let Some(p) = self.procs.get(&id) {
                        for path in [Some(&p.out), Some(&p.err), p.combined.as_ref()]
                            .into_iter()
                            .flatten()
                        {
                            if let Err(e) = logs::truncate(path) {
                                let _ = reply.send(Err(format!("{e:#}")));
                                return;
                            }
                        }
                    }
                }
            }
        }
        if req.action == Action::Reload {
            self.reload(ids, reply);
            return;
        }
        self.reply_when_done(waits, reply);
    }

    /// Answers with the process list once every receiver fired.
    fn reply_when_done(&self, waits: Vec<oneshot::Receiver<()>>, reply: Reply<Vec<ProcessInfo>>) {
        let me = Handle {
            tx: self.tx.clone(),
            hub: self.hub.clone(),
        };
        tokio::spawn(async move {
            for w in waits {
                let _ = w.await;
            }
            let _ = reply.send(me.call(Msg::List).await);
        });
    }

    // ----- exits and the restart policy -----

    fn on_exit(&mut self, exit: Exit) {
        let Some(id) = self.by_pid.remove(&exit.pid) else {
            return; // an orphan we adopted as subreaper, or a failed exec already reaped
        };
        self.sampler.forget(exit.pid);
        // Leftovers of the process group (children the app started) never outlive it.
        let _ = kill(Pid::from_raw(-exit.pid), Signal::SIGKILL);
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        if let Some(i) = p.retiring.iter().position(|r| r.pid == exit.pid) {
            p.retiring.remove(i);
            self.reload_progress();
            return;
        }
        p.pid = None;
        p.channel = None;
        fire_ready(p);
        let was_ready = std::mem::replace(&mut p.ready, false);
        p.gen += 1;
        p.last_exit_code = exit.code;
        p.last_signal = exit.signal.map(signal_name);
        let uptime = p
            .started
            .map(|t| t.elapsed().as_millis() as u64)
            .unwrap_or(0);
        if self.is_cluster(id) {
            self.set_live(id, false);
        }
        if !was_ready && self.reload_failed(id, exit) {
            return;
        }
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        match p.want {
            Want::Stop => {
                p.status = Status::Stopped;
                notify(p);
                self.release_slot(id);
            }
            Want::Delete => self.remove(id),
            Want::Restart => {
                p.restarts += 1;
                self.spawn(id);
                if let Some(p) = self.procs.get_mut(&id) {
                    notify(p);
                }
            }
            Want::Run => self.on_crash(id, exit, uptime),
        }
    }

    fn on_crash(&mut self, id: u32, exit: Exit, uptime: u64) {
        let Some(p) = self.procs.get(&id) else { return };
        let Some(spec) = self.apps.get(&p.app).map(|a| a.spec.clone()) else {
            return;
        };
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        let how = match (exit.code, exit.signal) {
            (Some(c), _) => format!("exited with code {c}"),
            (_, Some(s)) => format!("was killed by {}", signal_name(s)),
            _ => "exited".into(),
        };
        if uptime < spec.min_uptime_ms {
            p.unstable += 1;
        } else {
            p.unstable = 0;
        }
        if uptime >= BACKOFF_RESET_MS {
            p.backoff_ms = 0;
        }
        let clean_stop = exit.code.is_some_and(|c| spec.stop_exit_codes.contains(&c));
        if clean_stop || !spec.autorestart || self.shutting_down {
            eprintln!("cohort: {}:{} {how}; not restarting", p.app, p.instance);
            p.status = Status::Stopped;
            p.want = Want::Stop;
            notify(p);
            self.release_slot(id);
            return;
        }
        if p.unstable > spec.max_restarts || (spec.max_restarts == 0 && p.unstable > 0) {
            eprintln!(
                "cohort: {}:{} {how}; it crashed {} times in a row within min_uptime ({} ms): errored, not restarting",
                p.app, p.instance, p.unstable, spec.min_uptime_ms
            );
            p.status = Status::Errored;
            p.want = Want::Stop;
            notify(p);
            self.release_slot(id);
            return;
        }
        let delay = if spec.exp_backoff_restart_delay_ms > 0 {
            p.backoff_ms = if p.backoff_ms == 0 {
                spec.exp_backoff_restart_delay_ms
            } else {
                ((p.backoff_ms as f64 * BACKOFF_FACTOR) as u64).min(BACKOFF_CAP_MS)
            };
            p.backoff_ms
        } else {
            spec.restart_delay_ms
        };
        eprintln!(
            "cohort: {}:{} {how}; restarting in {delay} ms",
            p.app, p.instance
        );
        if delay == 0 {
            p.restarts += 1;
            self.spawn(id);
        } else {
            p.status = Status::WaitingRestart;
            let gen = p.gen;
            let me = self.tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                let _ = me.send(Msg::RestartDue { id, gen });
            });
        }
    }

    // ----- sampling -----

    fn sample(&mut self) {
        for p in self.procs.values_mut() {
            if let Some(pid) = p.pid {
                if let Some(s) = self.sampler.sample(pid) {
                    p.cpu = s.cpu;
                    p.memory = s.memory;
                    if p.history.len() == super::sampler::HISTORY {
                        p.history.pop_front();
                    }
                    p.history.push_back((s.cpu as f32, s.memory));
                }
            }
        }
    }

    // ----- save / resurrect -----

    fn save(&mut self, force: bool) -> Result<SaveReply, String> {
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

    fn resurrect(&mut self) -> Result<ResurrectReply, String> {
        let dump = persist::read::<AppSpec>(&self.home.dump()).map_err(|e| format!("{e:#}"))?;
        crate::config::validate::saved_apps(&dump.apps, &self.home.dump().to_string_lossy())?;
        let mut reply = ResurrectReply {
            started: Vec::new(),
            skipped: Vec::new(),
        };
        for saved in dump.apps {
            if self.apps.contains_key(&saved.spec.name) {
                reply.skipped.push(saved.spec.name);
                continue;
            }
            let name = saved.spec.name.clone();
            self.create_app(saved.spec, saved.instances.max(1), !saved.stopped);
            reply.started.push(name);
        }
        Ok(reply)
    }
}

/// Asks one process to stop: PM2's 'shutdown' message when configured (and the channel exists),
/// else kill_signal to its whole process group.
fn stop_process(pid: i32, channel: Option<NodeSender>, spec: &AppSpec) {
    if let (true, Some(ch)) = (spec.shutdown_with_message, channel) {
        tokio::spawn(async move {
            if ch.shutdown_with_message().await.is_err() {
                let _ = kill(Pid::from_raw(-pid), Signal::SIGINT);
            }
        });
        return;
    }
    let sig = crate::config::parse_signal(&spec.kill_signal).unwrap_or(Signal::SIGINT);
    let _ = kill(Pid::from_raw(-pid), sig);
}

/// Wakes everyone waiting for this process to be ready (or gone).
fn fire_ready(p: &mut Proc) {
    for w in p.ready_waiters.drain(..) {
        let _ = w.send(());
    }
}

/// Wakes everyone waiting for this process to settle.
fn notify(p: &mut Proc) {
    for w in p.waiters.drain(..) {
        let _ = w.send(());
    }
}

/// The program and argv of a spec: `interpreter [interpreter_args] script [args]`, or `script [args]`.
fn command_line(spec: &AppSpec) -> (String, Vec<String>) {
    match &spec.interpreter {
        Some(interp) => {
            let mut argv = vec![interp.clone()];
            argv.extend(spec.interpreter_args.iter().cloned());
            argv.push(spec.script.clone());
            argv.extend(spec.args.iter().cloned());
            (interp.clone(), argv)
        }
        None => {
            let mut argv = vec![spec.script.clone()];
            argv.extend(spec.args.iter().cloned());
            (spec.script.clone(), argv)
        }
    }
}
