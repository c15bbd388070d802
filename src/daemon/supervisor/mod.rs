//! The supervisor: one task that owns the app and process tables. Everything else talks to it
//! through a typed [`Handle`] (API commands) or sends it events (child exits from the reaper,
//! readiness, Node IPC messages, timers, sampling ticks), so there is no shared mutable state and no
//! lock around the tables.
//!
//! This file starts the actor and runs its loop; the jobs live beside it:
//! - `handle.rs`: the typed handle and its private requests;
//! - `table.rs`: the app and process tables, lookups, selectors, queries;
//! - `commands.rs`: start, act (stop/restart/delete/reset/flush), scale, shutdown, save/resurrect;
//! - `lifecycle.rs`: stopping processes and handling their exits (the one place restarts are recorded);
//! - `launch.rs`: starting a process (descriptors, log files, fork/exec, readiness timers);
//! - `policy.rs`: the restart policy, a pure function;
//! - `reload.rs`: zero-downtime reload, one slot at a time;
//! - `slots.rs`: cluster slots (sockets held per worker), Node messages, readiness, draining;
//! - `balancers.rs`: balancers as supervised apps;
//! - `snapshot.rs`: the tables handed to the next daemon by an in-place update (`cohort update`).
//! - `triggers.rs`: restarts on file changes, cron ticks and memory limits;
//! - `update.rs`: `--update-env` and a config file read again before a restart or reload;
//! - `outcome.rs`: answers that say which started processes failed before they were ready;
//! - `probes.rs`: readiness and liveness probes (thresholds: `probe_policy.rs`, pure);
//! - `gates.rs`: starts held until their dependencies are met (depends_on), ordered stops.
//!
//! The actor ends when every handle is dropped. A panic while handling one message is caught and
//! logged (daemon.log is the daemon's stderr) and the actor keeps its tables and goes on; if the task
//! still ends abnormally, [`Watch::failed`] says so and the daemon exits non-zero.

mod autoscale;
mod balancers;
mod commands;
mod gates;
mod handle;
mod holding;
mod launch;
mod lifecycle;
mod outcome;
mod policy;
mod probe_policy;
mod probes;
mod reload;
mod scale_policy;
mod slots;
mod snapshot;
mod table;
mod transient;
mod triggers;
mod update;

pub use handle::Handle;
pub use holding::enabled as holder_enabled;
pub use snapshot::{Boot, DaemonFds, State};

use super::logs::{self, LogHub};
use super::reaper::Exit;
use super::sampler::Sampler;
use crate::api::{ProcessInfo, RestartReason};
use crate::cluster::node_ipc::NodeMessage;
use crate::cluster::sockets::SocketTable;
use crate::home::Home;
use handle::{Reply, Request};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::Duration;
use table::{App, Proc};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// What the actor tells itself, or hears from its helpers (reaper, notify socket, IPC readers,
/// timers). A timer carries the `gen` of the run it was armed for, so it does nothing for a later run.
enum Event {
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
    /// A process sent `READY=1` to the notify socket.
    NotifyReady(i32),
    /// A balancer waits for the app it balances to listen.
    SpawnRetry {
        id: u32,
        gen: u64,
        keep_old: bool,
    },
    /// What a request waited for is done: answer it with the process list.
    AnswerList(Reply<Vec<ProcessInfo>>),
    /// A watch or cron task of an app fired (`token`: the arming it belongs to).
    Trigger {
        app: String,
        token: u64,
        reason: RestartReason,
    },
    /// Time to check the memory of processes with a limit.
    MemoryTick,
    /// Time to measure autoscaled apps (and decide, at the end of their interval).
    AutoscaleTick,
    /// Requests in flight to an autoscaled app, from the cohort balancers in front of it.
    InFlight {
        app: String,
        n: u32,
    },
    /// What a start/restart/reload/scale waited for is done: wait for readiness once more if
    /// needed (`rounds` left), then answer, saying which processes failed.
    Settle {
        ids: Vec<u32>,
        reply: Reply<Vec<ProcessInfo>>,
        rounds: u8,
    },
    /// A dependency gate's deadline: check the gates (gates.rs).
    GateCheck,
    /// The wave of an ordered stop before these is done: stop the next (gates.rs).
    StopWave {
        waves: Vec<Vec<u32>>,
        kind: gates::StopKind,
        done: oneshot::Sender<()>,
    },
    /// The start window of run `gen` of process `id` is over: if its readiness probe has not
    /// passed, its start failed (it keeps running and being probed).
    ReadinessDeadline {
        id: u32,
        gen: u64,
    },
    /// A readiness or liveness check of run `gen` of process `id` finished.
    ProbeResult {
        id: u32,
        gen: u64,
        kind: crate::config::probes::ProbeKind,
        result: crate::api::ProbeResult,
    },
}

impl Event {
    /// The event's name, for daemon.log.
    fn kind(&self) -> &'static str {
        match self {
            Event::Exited(_) => "a process exit",
            Event::KillTimeout { .. } => "a kill timeout",
            Event::RestartDue { .. } => "a due restart",
            Event::SampleTick => "a sampling tick",
            Event::Node { .. } => "a Node IPC message",
            Event::ReadyTimeout { .. } => "a listen timeout",
            Event::RetireTimeout { .. } => "a retire timeout",
            Event::DrainCheck { .. } => "a drain check",
            Event::NotifyReady(_) => "a READY=1 notification",
            Event::SpawnRetry { .. } => "a spawn retry",
            Event::AnswerList(_) => "a deferred answer",
            Event::Trigger { .. } => "a watch or cron trigger",
            Event::MemoryTick => "a memory check",
            Event::AutoscaleTick => "an autoscaling tick",
            Event::InFlight { .. } => "a balancer's in-flight count",
            Event::Settle { .. } => "a deferred checked answer",
            Event::GateCheck => "a dependency deadline",
            Event::StopWave { .. } => "an ordered stop's next wave",
            Event::ProbeResult { .. } => "a probe result",
            Event::ReadinessDeadline { .. } => "a readiness deadline",
        }
    }
}

/// One message of the actor's loop.
enum Msg {
    Request(Request),
    Event(Event),
}

pub struct Supervisor {
    home: Home,
    /// The actor's own event channel (timers, IPC readers, deferred answers).
    events: mpsc::UnboundedSender<Event>,
    apps: BTreeMap<String, App>,
    procs: BTreeMap<u32, Proc>,
    by_pid: HashMap<i32, u32>,
    next_id: u32,
    /// Where a new process's `gen` starts: above every removed process's, so a timer armed for a
    /// deleted process never matches a new one that reuses its id (ids restart at 0, as PM2's).
    gen_floor: u64,
    hub: LogHub,
    sampler: Sampler,
    cpus: u32,
    shutting_down: bool,
    /// Listening sockets of cluster apps, per app and worker slot.
    sockets: SocketTable,
    /// NODE_UNIQUE_ID of the next Node cluster worker.
    next_worker: u64,
    /// Reloads in progress (one at a time; later requests wait their turn).
    reloads: VecDeque<reload::ReloadJob>,
    /// Where the Node preload (drain on shutdown) was written.
    shim: PathBuf,
    /// Every open log file, and the daemon-wide rotation defaults.
    log_files: logs::Registry,
    /// Each process's cell (cgroup and marker): nothing it started outlives it.
    contain: super::contain::Containment,
    /// The I/O descriptors of every running process, by pid, kept for an in-place update.
    held: HashMap<i32, snapshot::HeldIo>,
    /// The daemon's own descriptors, when it can be updated in place.
    daemon_fds: Option<DaemonFds>,
    /// How many times this daemon was updated in place.
    reexecs: u32,
    /// Armed watches, cron schedules and the memory tick.
    triggers: triggers::Triggers,
    /// What the holder was last given.
    holder: holding::HolderSync,
    /// Autoscaled apps' measurements, policy memory and scale events.
    autoscale: autoscale::Autoscaler,
    /// Starts held until their dependencies are met (depends_on).
    gates: gates::Gates,
    /// The probe tasks of running processes.
    probes: probes::Probes,
}

/// Resolves if the supervisor task ended abnormally (see [`Watch::failed`]).
pub struct Watch(oneshot::Receiver<String>);

impl Watch {
    /// Waits until the supervisor task ends abnormally and returns why; never resolves while it
    /// runs, nor after it ended normally (every handle dropped).
    pub async fn failed(self) -> String {
        match self.0.await {
            Ok(reason) => reason,
            Err(_) => std::future::pending().await,
        }
    }
}

/// Starts the supervisor task and its helpers (reaper, notify socket, sampling ticks).
pub fn start(home: Home) -> anyhow::Result<(Handle, Watch)> {
    start_with(home, Boot::default())
}

/// [`start`], for a daemon that can be updated in place, or that takes over from the one it
/// replaced (`boot.adopted`).
pub fn start_with(home: Home, boot: Boot) -> anyhow::Result<(Handle, Watch)> {
    let (handle, task) = spawn_actor(home, true, boot)?;
    Ok((handle, watch(task)))
}

/// Starts the actor's task. `helpers` starts the reaper (which reaps every child of this process),
/// the notify socket and the sampling ticks; unit tests go without them.
fn spawn_actor(home: Home, helpers: bool, boot: Boot) -> anyhow::Result<(Handle, JoinHandle<()>)> {
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
    let (requests_tx, requests) = mpsc::unbounded_channel();
    let (events_tx, events) = mpsc::unbounded_channel();
    let hub = logs::new_hub();
    // Before the reaper starts: the cgroup probe forks and waits for its own child.
    let contain = super::contain::Containment::new(&home);
    if helpers {
        super::reaper::start(events_tx.clone(), Event::Exited)?;
        super::notify::start(&home.notify_socket(), events_tx.clone(), Event::NotifyReady)?;
        let tick = events_tx.clone();
        tokio::spawn(async move {
            let mut every =
                tokio::time::interval(Duration::from_millis(super::sampler::INTERVAL_MS));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if tick.send(Event::SampleTick).is_err() {
                    break;
                }
            }
        });
    }
    let mut sup = Supervisor {
        events: events_tx,
        apps: BTreeMap::new(),
        procs: BTreeMap::new(),
        by_pid: HashMap::new(),
        next_id: 0,
        gen_floor: 0,
        hub: hub.clone(),
        sampler: Sampler::new(),
        cpus: crate::sys::cpus::usable(),
        shutting_down: false,
        sockets: SocketTable::for_daemon(),
        next_worker: 0,
        reloads: VecDeque::new(),
        log_files: logs::Registry::new(Some(home.root.join("logrotate.json"))),
        shim,
        contain,
        held: HashMap::new(),
        daemon_fds: boot.fds,
        reexecs: boot.reexecs,
        home,
        triggers: Default::default(),
        holder: Default::default(),
        autoscale: Default::default(),
        gates: Default::default(),
        probes: Default::default(),
    };
    if let Some(state) = boot.adopted {
        sup.restore(state);
        // The processes kept across an update: their cells are found again.
        for pid in sup.by_pid.keys() {
            sup.contain.adopt(*pid);
        }
        // Held starts did not cross over: hold (or start) them again.
        sup.rearm_after_restore();
    }
    let task = tokio::spawn(sup.run(requests, events));
    let mut handle = Handle::new(requests_tx, hub, boot.reexecs);
    handle.failed_update = boot.failed_update;
    Ok((handle, task))
}

/// Watches the actor's task: an abnormal end is logged (daemon.log) and reported to the Watch.
fn watch(task: JoinHandle<()>) -> Watch {
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        if let Err(e) = task.await {
            let reason = match e.try_into_panic() {
                Ok(panic) => format!("the supervisor task panicked: {}", panic_text(&*panic)),
                Err(e) => format!("the supervisor task ended abnormally: {e}"),
            };
            crate::report!("cohort: {reason}; the daemon exits (apps are no longer supervised)");
            let _ = tx.send(reason);
        }
    });
    Watch(rx)
}

/// The message of a panic payload.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

impl Supervisor {
    /// The actor's loop: until every handle is dropped, handle one message at a time. A panic in one
    /// message is logged and the loop goes on with its tables.
    async fn run(
        mut self,
        mut requests: mpsc::UnboundedReceiver<Request>,
        mut events: mpsc::UnboundedReceiver<Event>,
    ) {
        loop {
            let msg = tokio::select! {
                req = requests.recv() => match req {
                    Some(req) => Msg::Request(req),
                    None => break, // every handle is gone
                },
                Some(ev) = events.recv() => Msg::Event(ev),
            };
            // An update in place needs the event queue (to handle what is already queued).
            let msg = match msg {
                Msg::Request(Request::Reexec(binary, reply)) => {
                    self.reexec(binary, reply, &mut events);
                    continue;
                }
                msg => msg,
            };
            let kind = match &msg {
                Msg::Request(r) => r.kind(),
                Msg::Event(e) => e.kind(),
            };
            let handled = std::panic::catch_unwind(AssertUnwindSafe(|| {
                match msg {
                    Msg::Request(req) => self.on_request(req),
                    Msg::Event(ev) => self.on_event(ev),
                }
                // Watches and cron schedules follow the specs, whatever changed them.
                self.sync_triggers();
                self.sync_autoscale();
                // Held starts follow their dependencies (depends_on).
                self.sync_gates();
                // Probe tasks follow the running processes.
                self.sync_probes();
            }));
            self.sync_holder();
            if let Err(panic) = handled {
                crate::report!(
                    "cohort: supervisor: handling {kind} panicked ({}); that message is dropped, the supervisor goes on with its tables",
                    panic_text(&*panic)
                );
            }
        }
    }

    fn on_request(&mut self, req: Request) {
        match req {
            Request::Start(req, reply) => self.start_apps(req, reply),
            Request::Act(req, reply) => self.act(req, reply),
            Request::Scale(req, reply) => self.scale(req, reply),
            Request::List(reply) => {
                let _ = reply.send(Ok(self.list()));
            }
            Request::Describe(sel, reply) => {
                let _ = reply.send(self.describe(&sel));
            }
            Request::LogFiles(sel, reply) => {
                let _ = reply.send(self.log_files(&sel));
            }
            Request::Env(id, reply) => {
                let _ = reply.send(self.env(id));
            }
            Request::History(sel, reply) => {
                let _ = reply.send(self.history(&sel));
            }
            Request::Save(force, reply) => {
                let _ = reply.send(self.save(force));
            }
            Request::Resurrect(reply) => {
                let _ = reply.send(self.resurrect());
            }
            Request::ReopenLogs(reply) => {
                let _ = reply.send(Ok(self.log_files.reopen(None)));
            }
            Request::LogRotation(change, reply) => {
                let _ = reply.send(match change {
                    Some(change) => self.log_files.set_defaults(&change),
                    None => Ok(self.log_files.defaults().clone()),
                });
            }
            Request::LogCounts(reply) => {
                let _ = reply.send(Ok(self.log_counts()));
            }
            Request::Shutdown(reply) => self.shutdown(reply),
            Request::Reexec(_, reply) => {
                let _ = reply.send(Err("an update in place is handled by the loop".into()));
            }
            #[cfg(test)]
            Request::Panic(_reply) => panic!("a test asked the supervisor to panic"),
        }
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Exited(exit) => self.on_exit(exit),
            Event::KillTimeout { id, gen } => self.kill_timeout(id, gen),
            Event::RestartDue { id, gen } => self.restart_due(id, gen),
            Event::SampleTick => self.sample(),
            Event::Node { id, pid, msg } => self.on_node_message(id, pid, msg),
            Event::ReadyTimeout { id, gen } => {
                let due = self
                    .procs
                    .get(&id)
                    .filter(|p| p.gen == gen && !p.ready)
                    .and_then(|p| p.pid);
                if let Some(pid) = due {
                    self.mark_ready(id, pid);
                }
            }
            Event::RetireTimeout { pid } => self.retire_timeout(pid),
            Event::DrainCheck { id, gen, left } => self.drain_check(id, gen, left),
            Event::NotifyReady(pid) => {
                // The sender, or its nearest managed ancestor (docs/security.md).
                let managed = super::notify::managed_sender(pid, |p| self.by_pid.contains_key(&p));
                if let Some((p, id)) = managed.and_then(|p| Some((p, *self.by_pid.get(&p)?))) {
                    self.mark_ready(id, p);
                }
            }
            Event::SpawnRetry { id, gen, keep_old } => self.spawn_retry(id, gen, keep_old),
            Event::AnswerList(reply) => {
                let _ = reply.send(Ok(self.list()));
            }
            Event::Trigger { app, token, reason } => self.on_trigger(&app, token, reason),
            Event::MemoryTick => self.check_memory(),
            Event::AutoscaleTick => self.autoscale_tick(),
            Event::InFlight { app, n } => self.on_in_flight(&app, n),
            Event::Settle { ids, reply, rounds } => self.settle(ids, reply, rounds),
            Event::GateCheck => {} // the loop checks the gates after every message
            Event::StopWave { waves, kind, done } => self.stop_wave_due(waves, kind, done),
            Event::ProbeResult {
                id,
                gen,
                kind,
                result,
            } => self.on_probe_result(id, gen, kind, result),
            Event::ReadinessDeadline { id, gen } => self.readiness_deadline(id, gen),
        }
    }

    /// Sends `ev` to the actor itself after `ms` milliseconds.
    fn after(&self, ms: u64, ev: Event) {
        let me = self.events.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let _ = me.send(ev);
        });
    }

    /// Answers with the process list once every receiver fired.
    fn reply_when_done(&self, waits: Vec<oneshot::Receiver<()>>, reply: Reply<Vec<ProcessInfo>>) {
        let me = self.events.clone();
        tokio::spawn(async move {
            for w in waits {
                let _ = w.await;
            }
            let _ = me.send(Event::AnswerList(reply));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn home() -> (tempfile::TempDir, Home) {
        let dir = tempfile::tempdir().expect("a temporary COHORT_HOME");
        let home = Home {
            root: dir.path().to_path_buf(),
        };
        home.ensure_dirs().expect("creating the home's folders");
        (dir, home)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_panic_in_one_message_leaves_the_actor_running() {
        // Without the reaper: it would reap the children of other tests running in this process.
        let (_dir, home) = home();
        let (handle, task) =
            spawn_actor(home, false, Boot::default()).expect("starting the supervisor");
        let watch = watch(task);
        let err = handle
            .panic_for_test()
            .await
            .expect_err("the request panicked");
        assert!(err.contains("failed on this request"), "{err}");
        // The actor still answers, with its tables.
        assert_eq!(handle.list().await.map(|l| l.len()), Ok(0));
        // And the watch reports nothing.
        let failed = tokio::time::timeout(Duration::from_millis(100), watch.failed()).await;
        assert!(failed.is_err(), "the watch fired: {failed:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_actor_ends_when_every_handle_is_dropped() {
        let (_dir, home) = home();
        let (handle, task) =
            spawn_actor(home, false, Boot::default()).expect("starting the supervisor");
        let other = handle.clone();
        drop(handle);
        assert_eq!(other.list().await.map(|l| l.len()), Ok(0));
        drop(other);
        let ended = tokio::time::timeout(Duration::from_secs(5), task).await;
        assert!(matches!(ended, Ok(Ok(()))), "{ended:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_watch_reports_a_task_that_ended_abnormally() {
        let task = tokio::spawn(async { panic!("boom") });
        let reason = tokio::time::timeout(Duration::from_secs(5), watch(task).failed())
            .await
            .expect("the watch fired");
        assert!(reason.contains("panicked: boom"), "{reason}");
    }
}
