//! The supervisor's side of an in-place re-exec (`cohort update`): what of its tables goes to the
//! next daemon ([`State`]), the descriptors it keeps for that ([`HeldIo`] per running process:
//! duplicates of its output pipes and IPC channel, with the half-read line of each pipe), and the
//! rebuilding of the tables from a state, which resumes reading every pipe and channel.
//!
//! Timers do not cross the exec: the state is only taken when no process is between two states
//! (starting, stopping, draining, reloading: the request is answered `busy` and retried), except
//! `waiting_restart`, whose restart is armed again by the next daemon.

use super::handle::Reply;
use super::table::{App, Proc, Want};
use super::{Event, Supervisor};
use crate::api::Status;
use crate::cluster::node_ipc::NodeChannel;
use crate::cluster::sockets::{HeldGroup, SocketTable};
use crate::config::AppSpec;
use crate::daemon::handover::{self, STATE_FORMAT};
use crate::daemon::logs::Carry;
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Descriptors of the daemon itself that a re-exec keeps: the home's lock and the control socket.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct DaemonFds {
    pub lock: RawFd,
    pub api: RawFd,
}

/// How the supervisor starts: fresh, or from the state of the daemon it replaces.
#[derive(Default)]
pub struct Boot {
    /// The daemon's own descriptors (None: no in-place update, e.g. `cohort run`).
    pub fds: Option<DaemonFds>,
    /// How many times this daemon (this pid) was re-executed in place.
    pub reexecs: u32,
    /// Why the last update in place failed, when this image went back to the previous binary.
    pub failed_update: Option<String>,
    pub adopted: Option<State>,
}

/// Everything the next daemon needs to carry on supervising, as JSON in a memfd.
#[derive(Serialize, Deserialize)]
pub struct State {
    pub format: u32,
    /// The version of the daemon that wrote it.
    pub version: String,
    pub reexecs: u32,
    pub daemon: DaemonFds,
    next_id: u32,
    next_worker: u64,
    /// The daemon-wide log line counters (for /metrics); absent in states from before them.
    #[serde(default)]
    log_lines: [u64; 3],
    apps: Vec<AppState>,
    procs: Vec<ProcState>,
    sockets: Vec<HeldGroup>,
}

impl State {
    /// Parses a state, refusing another format (the pre-flight checked it; this is the backstop).
    pub fn parse(bytes: &[u8]) -> anyhow::Result<State> {
        let v: serde_json::Value =
            serde_json::from_slice(bytes).context("the handed-over state is not JSON")?;
        let format = v.get("format").and_then(|f| f.as_u64()).unwrap_or(0);
        if format != STATE_FORMAT as u64 {
            bail!("the handed-over state has format {format}, this binary reads {STATE_FORMAT}");
        }
        serde_json::from_value(v).context("reading the handed-over state")
    }

    /// Every descriptor the state names but the daemon's own (what the holder keeps), in order.
    pub fn fds(&self) -> Vec<RawFd> {
        let mut fds = Vec::new();
        for g in &self.sockets {
            for l in &g.listeners {
                fds.extend(l.socks.iter().map(|s| s.1));
                fds.extend(l.unix.iter().map(|u| u.1));
            }
        }
        for io in self.procs.iter().filter_map(|p| p.io.as_ref()) {
            fds.extend([io.stdout, io.stderr]);
            fds.extend(io.channel);
        }
        fds
    }

    /// Renames the descriptors the state names (they crossed a socket and have new numbers).
    pub fn renumber(&mut self, map: &std::collections::HashMap<RawFd, RawFd>) {
        let new = |fd: &mut RawFd| *fd = map.get(fd).copied().unwrap_or(-1);
        for g in &mut self.sockets {
            for l in &mut g.listeners {
                l.socks.iter_mut().for_each(|s| new(&mut s.1));
                l.unix.iter_mut().for_each(|u| new(&mut u.1));
            }
        }
        for io in self.procs.iter_mut().filter_map(|p| p.io.as_mut()) {
            new(&mut io.stdout);
            new(&mut io.stderr);
            io.channel.iter_mut().for_each(new);
        }
    }

    /// Forgets the unfinished lines it carries: in a state the holder kept, they are those of its
    /// last store, which the dead daemon may have completed and written since; glued to what the
    /// pipe holds now they would make a wrong line. (Files written through hold none.)
    pub fn forget_unfinished_lines(&mut self) {
        for io in self.procs.iter_mut().filter_map(|p| p.io.as_mut()) {
            io.stdout_pending.clear();
            io.stderr_pending.clear();
        }
    }

    /// How many processes run in it.
    pub fn running(&self) -> usize {
        self.procs.iter().filter(|p| p.pid.is_some()).count()
    }
}

#[derive(Serialize, Deserialize)]
struct AppState {
    spec: AppSpec,
    procs: Vec<u32>,
}

#[derive(Serialize, Deserialize)]
struct ProcState {
    id: u32,
    app: String,
    instance: u32,
    status: Status,
    pid: Option<i32>,
    want: Want,
    restarts: u32,
    /// Why it last restarted (`restart_reason`); absent in states from before it existed.
    #[serde(default)]
    restart_reason: Option<crate::api::RestartReason>,
    /// `restarts` by reason, for /metrics; absent in states from before it existed.
    #[serde(default)]
    restart_reasons: std::collections::BTreeMap<String, u32>,
    unstable: u32,
    backoff_ms: u64,
    created_at: u64,
    started_at: Option<u64>,
    /// How long the current process has run (the next daemon's `Instant` is rebuilt from it).
    uptime_ms: Option<u64>,
    last_exit_code: Option<i32>,
    last_signal: Option<String>,
    ready: bool,
    /// The readiness probe's verdict (None: no readiness probe).
    #[serde(default)]
    probe_ready: Option<bool>,
    admin: Option<String>,
    out: PathBuf,
    err: PathBuf,
    combined: Option<PathBuf>,
    io: Option<IoState>,
    /// Log lines written and dropped over every run; absent in states from before them.
    #[serde(default)]
    log_written: u64,
    #[serde(default)]
    log_dropped: u64,
}

/// The descriptors of a running process, and the bytes of an unfinished line of each pipe.
#[derive(Serialize, Deserialize)]
struct IoState {
    stdout: RawFd,
    stderr: RawFd,
    stdout_pending: Vec<u8>,
    stderr_pending: Vec<u8>,
    channel: Option<RawFd>,
}

/// What the supervisor keeps of a running process's I/O so it can hand it over: the read ends of
/// its output pipes (shared with their pumps), a duplicate of our end of its IPC channel, and the
/// pumps' unfinished lines. Dropped when the process exits.
pub(super) struct HeldIo {
    pub(super) stdout: Arc<OwnedFd>,
    pub(super) stderr: Arc<OwnedFd>,
    pub(super) out_carry: Carry,
    pub(super) err_carry: Carry,
    pub(super) channel: Option<OwnedFd>,
}

impl Supervisor {
    /// Why the tables cannot be handed over right now (a timer or a drain is pending), if so.
    fn busy(&self) -> Option<String> {
        if !self.reloads.is_empty() {
            return Some("a reload is in progress".into());
        }
        for p in self.procs.values() {
            let what = format!("{}:{}", p.app, p.instance);
            if !p.retiring.is_empty() {
                return Some(format!("a replaced worker of {what} is still draining"));
            }
            match p.status {
                Status::Stopping => return Some(format!("{what} is stopping")),
                Status::Launching => return Some(format!("{what} is starting")),
                _ => {}
            }
            if p.pid.is_some() && !p.ready {
                return Some(format!("{what} is starting"));
            }
        }
        None
    }

    /// The state to hand over, and every descriptor it names (to keep open across the exec).
    fn snapshot(&self, daemon: DaemonFds) -> Result<(State, Vec<RawFd>), String> {
        let mut keep = vec![daemon.lock, daemon.api];
        let sockets = self.sockets.held();
        for g in &sockets {
            for l in &g.listeners {
                keep.extend(l.socks.iter().map(|s| s.1));
                keep.extend(l.unix.iter().map(|u| u.1));
            }
        }
        let mut procs = Vec::new();
        for p in self.procs.values() {
            let io = match p.pid {
                None => None,
                Some(pid) => {
                    let Some(held) = self.held.get(&pid) else {
                        return Err(format!(
                            "the output of {}:{} (pid {pid}) is not held; restart it first",
                            p.app, p.instance
                        ));
                    };
                    let io = IoState {
                        stdout: held.stdout.as_raw_fd(),
                        stderr: held.stderr.as_raw_fd(),
                        stdout_pending: pending(&held.out_carry),
                        stderr_pending: pending(&held.err_carry),
                        channel: held.channel.as_ref().map(|c| c.as_raw_fd()),
                    };
                    keep.extend([io.stdout, io.stderr]);
                    keep.extend(io.channel);
                    Some(io)
                }
            };
            procs.push(ProcState {
                id: p.id,
                app: p.app.clone(),
                instance: p.instance,
                status: p.status,
                pid: p.pid,
                want: p.want,
                restarts: p.restarts,
                restart_reason: p.restart_reason,
                restart_reasons: p.restart_reasons.clone(),
                unstable: p.run.unstable,
                backoff_ms: p.run.backoff_ms,
                created_at: p.created_at,
                started_at: p.started_at,
                uptime_ms: p.started.map(|t| t.elapsed().as_millis() as u64),
                last_exit_code: p.last_exit_code,
                last_signal: p.last_signal.clone(),
                ready: p.ready,
                probe_ready: p.probe_ready,
                admin: p.admin.clone(),
                out: p.out.clone(),
                err: p.err.clone(),
                combined: p.combined.clone(),
                io,
                log_written: p.log_counts.get().0,
                log_dropped: p.log_counts.get().1,
            });
        }
        let state = State {
            format: STATE_FORMAT,
            version: crate::api::VERSION.to_string(),
            reexecs: self.reexecs,
            daemon,
            next_id: self.next_id,
            next_worker: self.next_worker,
            log_lines: {
                let c = crate::daemon::logs::counters();
                [c.written, c.write_errors, c.follower_lag]
            },
            apps: self
                .apps
                .values()
                .map(|a| AppState {
                    spec: a.spec.clone(),
                    procs: a.procs.clone(),
                })
                .collect(),
            procs,
            sockets,
        };
        Ok((state, keep))
    }

    /// The state for the holder (JSON) and the descriptors it names, in [`State::fds`] order;
    /// None while a process's output is not held yet (the next change sends it).
    pub(super) fn holder_state(&self) -> Option<(Vec<u8>, Vec<RawFd>)> {
        let (state, _) = self.snapshot(DaemonFds { lock: -1, api: -1 }).ok()?;
        let fds = state.fds();
        Some((serde_json::to_vec(&state).ok()?, fds))
    }

    /// `cohort update`: hands the tables over to `binary` by re-executing this process. Answers
    /// `Ok(reason)` when busy (try again shortly) and `Err` when the exec failed; on success
    /// nothing answers: this process is the new daemon. Events already queued (exits the reaper
    /// reported, IPC messages) are handled first so none is lost.
    pub(super) fn reexec(
        &mut self,
        binary: PathBuf,
        reply: Reply<String>,
        events: &mut mpsc::UnboundedReceiver<Event>,
    ) {
        for _ in 0..100_000 {
            let Ok(ev) = events.try_recv() else { break };
            let kind = ev.kind();
            if std::panic::catch_unwind(AssertUnwindSafe(|| self.on_event(ev))).is_err() {
                crate::report!(
                    "cohort: supervisor: handling {kind} panicked; that message is dropped"
                );
            }
        }
        let Some(daemon) = self.daemon_fds else {
            let _ = reply.send(Err(
                "this daemon cannot be updated in place (it runs in the foreground)".into(),
            ));
            return;
        };
        if let Some(busy) = self.busy() {
            let _ = reply.send(Ok(busy));
            return;
        }
        let (state, keep) = match self.snapshot(daemon) {
            Ok(s) => s,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let bytes = match serde_json::to_vec(&state) {
            Ok(b) => b,
            Err(e) => {
                let _ = reply.send(Err(format!("cannot write the state: {e}")));
                return;
            }
        };
        crate::report!(
            "cohort: updating in place: executing {} ({} processes keep running)",
            binary.display(),
            state.running()
        );
        let err = handover::exec(&binary, &bytes, &keep);
        crate::report!("cohort: the update in place failed: {err:#}; this daemon keeps running");
        let _ = reply.send(Err(format!(
            "{err:#} (the daemon keeps running with its apps)"
        )));
    }

    /// Rebuilds the tables from the state of the daemon this one replaced, and resumes reading
    /// every process's output and IPC channel.
    pub(super) fn restore(&mut self, state: State) {
        self.next_id = state.next_id;
        self.next_worker = state.next_worker;
        let [written, write_errors, follower_lag] = state.log_lines;
        crate::daemon::logs::add_counters(crate::daemon::logs::LogCounters {
            written,
            write_errors,
            follower_lag,
        });
        // SAFETY: the descriptors were kept open for us by the exec and nothing else owns them.
        self.sockets = unsafe { SocketTable::adopt(state.sockets) };
        for g in self.sockets.held() {
            for l in g.listeners {
                for fd in l.socks.iter().map(|s| s.1).chain(l.unix.map(|u| u.1)) {
                    let _ = handover::set_cloexec(fd, true);
                }
            }
        }
        for a in state.apps {
            self.apps.insert(
                a.spec.name.clone(),
                App {
                    spec: a.spec,
                    procs: a.procs,
                },
            );
        }
        for ps in state.procs {
            let id = ps.id;
            let mut p = self.restored_proc(&ps);
            let restart_due = (p.status == Status::WaitingRestart).then_some(p.gen);
            if let (Some(pid), Some(io)) = (ps.pid, ps.io) {
                self.by_pid.insert(pid, id);
                self.watch_if_orphan(pid);
                let channel = adopt_io(&io, pid, &p.app);
                self.procs.insert(id, p);
                self.resume_io(id, pid, io, channel);
            } else {
                p.pid = None;
                self.procs.insert(id, p);
            }
            if let Some(gen) = restart_due {
                // The timer did not cross the exec: arm it again (at once if it was due).
                let after = self
                    .procs
                    .get(&id)
                    .and_then(|p| self.apps.get(&p.app))
                    .map(|a| a.spec.restart_delay_ms)
                    .unwrap_or(0);
                self.after(after.max(10), Event::RestartDue { id, gen });
            }
        }
        // Watches, cron schedules and the memory check did not cross the exec: arm them again.
        self.sync_triggers();
    }

    /// A process adopted from the holder is no child of ours (it was re-parented when the earlier
    /// daemon died): its exit is seen with a pidfd, status unknown (a crash to the policy).
    fn watch_if_orphan(&self, pid: i32) {
        let ppid = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                let rest = s.rsplit_once(')')?.1.to_string();
                rest.split_whitespace().nth(1)?.parse::<u32>().ok()
            });
        if ppid == Some(std::process::id()) {
            return;
        }
        let tx = self.events.clone();
        let gone = crate::daemon::reaper::Exit {
            pid,
            code: None,
            signal: None,
        };
        // SAFETY: pidfd_open takes a pid and flags; it returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as RawFd;
        if fd < 0 {
            let _ = tx.send(Event::Exited(gone));
            return;
        }
        // SAFETY: the descriptor was just created and is ours.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        tokio::spawn(async move {
            // SAFETY: the pidfd is owned by the AsyncFd and closed only when it is dropped.
            if let Ok(watch) = unsafe { tokio::io::unix::AsyncFd::register(owned) } {
                let _ = watch.readable().await;
            }
            let _ = tx.send(Event::Exited(gone));
        });
    }

    fn restored_proc(&self, s: &ProcState) -> Proc {
        let now = Instant::now();
        Proc {
            id: s.id,
            app: s.app.clone(),
            instance: s.instance,
            status: s.status,
            pid: s.pid,
            want: s.want,
            restarts: s.restarts,
            restart_reason: s.restart_reason,
            restart_reasons: s.restart_reasons.clone(),
            // A restart asked for before the exec and not yet begun counts as a crash if it comes.
            pending_reason: None,
            start_failure: None,
            spawn_retry: None,
            run: super::policy::RunState {
                unstable: s.unstable,
                backoff_ms: s.backoff_ms,
                // An update waits while a spawn is being retried: none is pending here.
                spawn_failures: 0,
            },
            created_at: s.created_at,
            started_at: s.started_at,
            // The kernel's start time, read now: the stored uptime is that of the last store (the
            // holder's copy is up to 5 s old, and the time no daemon ran or the new image took
            // to start is missing from it). Read at this instant, not earlier, so no time between
            // the reading and `now` is lost.
            started: s
                .uptime_ms
                .map(|stored| {
                    s.pid
                        .and_then(crate::daemon::sampler::process_age_ms)
                        .unwrap_or(stored)
                })
                .and_then(|ms| now.checked_sub(Duration::from_millis(ms))),
            last_exit_code: s.last_exit_code,
            last_signal: s.last_signal.clone(),
            gen: 1,
            cpu: 0.0,
            memory: 0,
            history: Default::default(),
            waiters: Vec::new(),
            channel: None,
            // A fork process inside its ready window when the daemon was replaced has run long
            // enough by now (nothing would close the window for it).
            ready: s.ready
                || (s.pid.is_some()
                    && self
                        .apps
                        .get(&s.app)
                        .is_some_and(|a| a.spec.exec_mode == crate::config::ExecMode::Fork)),
            ready_waiters: Vec::new(),
            retiring: Vec::new(),
            admin: s.admin.clone(),
            log_counts: std::sync::Arc::new(crate::daemon::logs::LogCounts::starting_at(
                s.log_written,
                s.log_dropped,
            )),
            out: s.out.clone(),
            err: s.err.clone(),
            combined: s.combined.clone(),
            probe_ready: s.probe_ready,
            probes: super::probes::ProcProbes::adopted(1, s.probe_ready),
        }
    }

    /// Pumps the adopted pipes of process `id` (pid `pid`) to its logs again, starting with the
    /// lines the earlier daemon had half read, and reads its IPC channel.
    fn resume_io(&mut self, id: u32, pid: i32, io: IoState, channel: Option<NodeChannel>) {
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        let Some(spec) = self.apps.get(&p.app).map(|a| a.spec.clone()) else {
            return;
        };
        p.channel = channel.as_ref().map(NodeChannel::sender);
        // SAFETY: kept open for us across the exec; owned by nothing else.
        let (stdout, stderr) = unsafe {
            (
                OwnedFd::from_raw_fd(io.stdout),
                OwnedFd::from_raw_fd(io.stderr),
            )
        };
        let (out, err, combined) = (p.out.clone(), p.err.clone(), p.combined.clone());
        let own = spec.log_rotate.clone();
        match super::launch::open_logs(
            &mut self.log_files,
            own.as_ref(),
            &out,
            &err,
            combined.as_deref(),
        ) {
            Ok(logs) => self.attach_io(
                id,
                pid,
                &spec,
                &logs,
                (stdout, stderr),
                channel,
                [io.stdout_pending, io.stderr_pending],
            ),
            Err(e) => crate::report!(
                "cohort: cannot reopen the logs of {}:{} after the update: {e:#}",
                spec.name,
                p.instance
            ),
        }
    }
}

/// Takes back the descriptors of a process's I/O after the exec (close-on-exec again, so later
/// children do not inherit them) and rebuilds its IPC channel.
fn adopt_io(io: &IoState, pid: i32, app: &str) -> Option<NodeChannel> {
    for fd in [io.stdout, io.stderr].into_iter().chain(io.channel) {
        let _ = handover::set_cloexec(fd, true);
    }
    let fd = io.channel?;
    // SAFETY: kept open for us across the exec; owned by nothing else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    match NodeChannel::adopt(owned) {
        Ok(c) => Some(c),
        Err(e) => {
            crate::report!("cohort: cannot adopt the IPC channel of {app} (pid {pid}): {e}");
            None
        }
    }
}

fn pending(carry: &Carry) -> Vec<u8> {
    carry.lock().map(|p| p.clone()).unwrap_or_default()
}
