//! Starting a process, in three steps: prepare the descriptors it inherits at 3.. (its Node IPC
//! channel, or its slot's listening sockets for socket activation) and the environment that
//! describes them; open its log files; fork/exec it (daemon::spawn). Then it is registered in the
//! tables, its output pumped to the logs, its IPC channel read, and its readiness awaited.
//! A process that cannot start is `errored`, with the reason in its error log and daemon.log.

use super::snapshot::HeldIo;
use super::table::{fire_ready, notify, Retiring, Want};
use super::{policy, slots, Event, Supervisor};
use crate::api::Status;
use crate::cluster::node_ipc::{channel_env, cluster_worker_env, NodeChannel};
use crate::cluster::sockets::ListenAddr;
use crate::config::log_rotate::LogRotate;
use crate::config::{AppSpec, ExecMode};
use crate::daemon::logs::{self, Carry, LogFile, Registry, Sink, Stamp};
use crate::daemon::spawn;
use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What a process inherits beside stdio.
struct Inherited {
    /// Descriptors at 3.., in order.
    fds: Vec<OwnedFd>,
    /// Our end of a Node process's IPC channel.
    channel: Option<NodeChannel>,
    /// Socket activation: `LISTEN_PID` is set to the child's pid after fork.
    listen_pid: bool,
}

/// The log files a process writes to.
pub(super) struct Logs {
    out: Arc<LogFile>,
    err: Arc<LogFile>,
    combined: Option<Arc<LogFile>>,
}

impl Supervisor {
    /// Starts (or starts again) process `id` now.
    pub(super) fn spawn(&mut self, id: u32) {
        self.spawn_worker(id, false);
    }

    /// Starts a process for `id`. With `keep_old` (reload), the process running now is kept as
    /// retiring (it drains once the new one is ready) instead of being replaced in the table.
    /// Returns false when nothing could be started.
    pub(super) fn spawn_worker(&mut self, id: u32, keep_old: bool) -> bool {
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
            // The token of its admin `PUT /ready` (app:NAME upstreams held out while not ready).
            env.extend(self.balancer_token_env());
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
        let inherited = self.prepare_fds(&spec, slot, &mut env, &mut argv);
        let logs = open_logs(
            &mut self.log_files,
            spec.log_rotate.as_ref(),
            &out_path,
            &err_path,
            combined_path.as_deref(),
        );
        // Its cell: a cgroup and a marker its descendants inherit (daemon::contain).
        let cell = self.contain.prepare(id);
        env.insert(cell.env.0.clone(), cell.env.1.clone());
        let launched = inherited.and_then(|inherited| {
            let logs = logs?;
            let cmd = spawn::Command {
                program: &program,
                argv,
                env: env.into_iter().collect(),
                cwd: &spec.cwd,
                fds: inherited.fds.iter().map(|f| f.as_raw_fd()).collect(),
                listen_pid: inherited.listen_pid,
                cgroup_procs: cell.cgroup_procs.as_ref().map(|f| f.as_raw_fd()),
            };
            Ok((spawn::spawn(&cmd)?, logs, inherited.channel))
        });
        match launched {
            Ok((child, logs, channel)) => {
                self.contain.started(child.pid.as_raw(), cell.cell);
                self.launched(id, keep_old, &spec, child, logs, channel);
                true
            }
            Err(e) => {
                self.contain.abandon(cell.cell);
                self.spawn_error(id, keep_old, &e);
                false
            }
        }
    }

    /// The descriptors process slot `slot` of `spec` inherits at 3.., with the environment and
    /// arguments that tell it about them.
    fn prepare_fds(
        &mut self,
        spec: &AppSpec,
        slot: usize,
        env: &mut BTreeMap<String, String>,
        argv: &mut Vec<String>,
    ) -> anyhow::Result<Inherited> {
        let cluster = spec.exec_mode == ExecMode::Cluster;
        let mut fds = Vec::new();
        if spec.is_node() {
            let (chan, theirs) =
                anyhow::Context::context(NodeChannel::pair(), "creating the IPC channel")?;
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
            return Ok(Inherited {
                fds,
                channel: Some(chan),
                listen_pid: false,
            });
        }
        env.insert(
            "NOTIFY_SOCKET".into(),
            self.home.notify_socket().to_string_lossy().into_owned(),
        );
        if !cluster {
            return Ok(Inherited {
                fds,
                channel: None,
                listen_pid: false,
            });
        }
        let mut names = Vec::new();
        for text in &spec.listen {
            let addr = slots::parse_listen(text).map_err(|e| anyhow::anyhow!(e))?;
            let fd = self
                .sockets
                .socket_for(&spec.name, slot, &addr)
                .and_then(|fd| fd.try_clone_to_owned())
                .map_err(|e| match e.raw_os_error() {
                    // A shortage (EMFILE, ENOBUFS…): the OS error stays in the chain, so the
                    // spawn is retried with backoff (transient.rs) rather than `errored`.
                    Some(n) if policy::is_transient(n) => {
                        anyhow::Error::new(e).context(format!("cannot listen on {addr}"))
                    }
                    _ => anyhow::anyhow!(crate::cluster::holder::cannot_listen(&addr, &e)),
                })?;
            fds.push(fd);
            names.push(match addr {
                ListenAddr::Unix(_) => "unix".to_string(),
                ListenAddr::Tcp { port, .. } => format!("port{port}"),
            });
        }
        env.insert("LISTEN_FDS".into(), fds.len().to_string());
        env.insert("LISTEN_FDNAMES".into(), names.join(":"));
        Ok(Inherited {
            fds,
            channel: None,
            listen_pid: true,
        })
    }

    /// Process `id` runs as `child`: the tables learn its pid, its output goes to its logs, its
    /// IPC channel is read, and its readiness is awaited (or it is ready at once).
    fn launched(
        &mut self,
        id: u32,
        keep_old: bool,
        spec: &AppSpec,
        child: spawn::Spawned,
        logs: Logs,
        channel: Option<NodeChannel>,
    ) {
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        let pid = child.pid.as_raw();
        p.gen += 1;
        p.want = Want::Run;
        p.run.spawn_failures = 0;
        p.spawn_retry = None;
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
        super::probes::new_run(p, spec.readiness.is_some(), p.gen);
        p.channel = channel.as_ref().map(NodeChannel::sender);
        if !keep_old || p.status != Status::Online {
            p.status = if spec.wait_ready {
                Status::Launching
            } else {
                Status::Online
            };
        }
        p.started = Some(Instant::now());
        p.started_at = Some(crate::daemon::now_ms());
        p.cpu = 0.0;
        p.memory = 0;
        let gen = p.gen;
        self.by_pid.insert(pid, id);
        self.attach_io(
            id,
            pid,
            spec,
            &logs,
            (child.stdout, child.stderr),
            channel,
            Default::default(),
        );
        // Readiness: Node cluster workers say when they listen, wait_ready apps send
        // 'ready'; listen_timeout bounds the wait, as in PM2. Fork-mode processes are ready once
        // they ran for min(min_uptime, 1 s), so `start` sees a crash at start-up (with a readiness
        // probe, the probe is that test); other cluster workers at once (a socket-activated
        // worker's socket already queues connections).
        let fork_window = super::policy::fork_ready_window_ms(spec.min_uptime_ms);
        if spec.wait_ready || (spec.exec_mode == ExecMode::Cluster && spec.is_node()) {
            self.after(spec.listen_timeout_ms, Event::ReadyTimeout { id, gen });
        } else if spec.exec_mode == ExecMode::Fork && fork_window > 0 && spec.readiness.is_none() {
            self.after(fork_window, Event::ReadyTimeout { id, gen });
        } else {
            self.mark_ready(id, pid);
        }
    }

    /// Pumps the output of process `id` (pid `pid`) to its logs, starting with `carried` (the
    /// unfinished lines of stdout and stderr an earlier daemon handed over), and reads its IPC
    /// channel. Duplicates of these descriptors are held (`held`) for an in-place update.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn attach_io(
        &mut self,
        id: u32,
        pid: i32,
        spec: &AppSpec,
        logs: &Logs,
        (stdout, stderr): (OwnedFd, OwnedFd),
        channel: Option<NodeChannel>,
        carried: [Vec<u8>; 2],
    ) {
        let (instance, counts) = self
            .procs
            .get(&id)
            .map(|p| (p.instance, p.log_counts.clone()))
            .unwrap_or_default();
        let name: Arc<str> = Arc::from(spec.name.as_str());
        let stamp = spec
            .time
            .then(|| Stamp::new(spec.log_date_format.as_deref()));
        let sink = |stream, file| Sink {
            id,
            name: name.clone(),
            instance,
            stream,
            file,
            combined: logs.combined.clone(),
            stamp: stamp.clone(),
            json: spec.log_type == crate::config::LogType::Json,
            hub: self.hub.clone(),
            counts: counts.clone(),
        };
        let [out_pending, err_pending] = carried;
        let (stdout, stderr) = (Arc::new(stdout), Arc::new(stderr));
        let out_carry: Carry = Arc::new(Mutex::new(out_pending));
        let err_carry: Carry = Arc::new(Mutex::new(err_pending));
        let held = (|| -> std::io::Result<HeldIo> {
            Ok(HeldIo {
                stdout: stdout.clone(),
                stderr: stderr.clone(),
                out_carry: out_carry.clone(),
                err_carry: err_carry.clone(),
                channel: channel
                    .as_ref()
                    .map(NodeChannel::try_clone_fd)
                    .transpose()?,
            })
        })();
        match held {
            Ok(held) => {
                self.held.insert(pid, held);
            }
            // Only an in-place update needs them (and says so); the process runs on.
            Err(e) => crate::report!(
                "cohort: cannot hold the output of {}:{instance} for an update in place: {e}",
                spec.name
            ),
        }
        tokio::spawn(logs::pump_carried(
            stdout,
            sink("out", logs.out.clone()),
            out_carry,
        ));
        tokio::spawn(logs::pump_carried(
            stderr,
            sink("err", logs.err.clone()),
            err_carry,
        ));
        if let Some(mut chan) = channel {
            let tx = self.events.clone();
            tokio::spawn(async move {
                while let Ok(Some(msg)) = chan.recv().await {
                    if tx.send(Event::Node { id, pid, msg }).is_err() {
                        break;
                    }
                }
            });
        }
    }

    /// Records why process `id` could not start (in its error log and daemon.log). A reload keeps
    /// the old process; otherwise the process is `errored`.
    pub(super) fn spawn_failed(&mut self, id: u32, keep_old: bool, why: &str) {
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        let msg = format!("cohort: cannot start {}:{}: {why}", p.app, p.instance);
        crate::report!("{msg}");
        // The reason goes where the user looks first: the app's error log.
        if let Ok(f) = self.log_files.open(&p.err, None) {
            f.write_all(format!("{msg}\n").as_bytes());
        }
        super::outcome::could_not_start(p, why);
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

    /// The retry of a spawn deferred by `retry_spawn` is due.
    pub(super) fn spawn_retry(&mut self, id: u32, gen: u64, keep_old: bool) {
        if self
            .procs
            .get(&id)
            .is_some_and(|p| p.gen == gen && p.want == Want::Run)
        {
            self.spawn_worker(id, keep_old);
        }
    }
}

/// Opens (creating) the out, err and combined log files, or shares those already open for the same
/// paths (merge_logs); out and err may be one file. `own`: the app's rotation settings.
pub(super) fn open_logs(
    files: &mut Registry,
    own: Option<&LogRotate>,
    out: &Path,
    err: &Path,
    combined: Option<&Path>,
) -> anyhow::Result<Logs> {
    let out_file = files.open(out, own)?;
    let err_file = files.open(err, own)?;
    let combined = combined.map(|c| files.open(c, own)).transpose()?;
    Ok(Logs {
        out: out_file,
        err: err_file,
        combined,
    })
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
