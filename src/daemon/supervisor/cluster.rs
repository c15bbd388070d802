//! Cluster mode inside the supervisor: the listening sockets of each worker slot (held here, handed
//! to workers), Node's IPC messages (queryServer, listening, 'ready'), readiness, zero-downtime
//! reload one slot at a time, scale up/down, and draining a slot before it goes away.

use super::{fire_ready, stop_process, Handle, Msg, Reply, Retiring, Supervisor, Want};
use crate::api::{ProcessInfo, ScaleRequest, Status};
use crate::cluster::node_ipc::NodeMessage;
use crate::cluster::sockets::ListenAddr;
use crate::config::{AppSpec, ExecMode, Instances};
use crate::daemon::reaper::Exit;
use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::time::Duration;
use tokio::sync::oneshot;

/// One `reload` request: the processes still to replace, one at a time.
pub struct ReloadJob {
    queue: VecDeque<u32>,
    /// The process whose new worker is starting now.
    current: Option<u32>,
    /// Every process of the job (to know when their retiring workers are all gone).
    ids: Vec<u32>,
    errors: Vec<String>,
    /// Fork-mode processes of the same request, restarted in place.
    restarts: Vec<oneshot::Receiver<()>>,
    reply: Option<Reply<Vec<ProcessInfo>>>,
}

/// Parses a `listen` entry: `3000`, `127.0.0.1:3000`, `[::1]:3000`, `0.0.0.0:80`, or a Unix
/// socket path (`/run/app.sock`, `unix:/run/app.sock`).
pub fn parse_listen(text: &str) -> Result<ListenAddr, String> {
    let t = text.trim();
    if let Some(path) = t.strip_prefix("unix:").or(t.starts_with('/').then_some(t)) {
        return Ok(ListenAddr::Unix(path.into()));
    }
    if let Ok(port) = t.parse::<u16>() {
        if port == 0 {
            return Err(format!("listen {text:?}: give a port from 1 to 65535"));
        }
        return Ok(ListenAddr::Tcp { ip: None, port });
    }
    match t.parse::<std::net::SocketAddr>() {
        Ok(a) => Ok(ListenAddr::Tcp { ip: Some(a.ip()), port: a.port() }),
        Err(_) => Err(format!(
            "listen {text:?}: expected a port (3000), host:port (127.0.0.1:3000, [::1]:3000) or a Unix socket path"
        )),
    }
}

/// What cluster mode needs of a spec, checked before anything starts.
pub fn check_spec(spec: &AppSpec) -> Result<(), String> {
    for l in &spec.listen {
        parse_listen(l)?;
    }
    if spec.exec_mode == ExecMode::Cluster && !spec.is_node() && spec.listen.is_empty() {
        return Err(format!(
            "{}: cluster mode for a program that is not Node.js needs the address to share: give --port (or `port` / `listen` in the config); its workers receive it by socket activation (LISTEN_FDS)",
            spec.name
        ));
    }
    Ok(())
}

impl Supervisor {
    pub(super) fn is_cluster(&self, id: u32) -> bool {
        self.procs
            .get(&id)
            .and_then(|p| self.apps.get(&p.app))
            .is_some_and(|a| a.spec.exec_mode == ExecMode::Cluster)
    }

    /// Steers new connections to (or away from) the slot of process `id`.
    pub(super) fn set_live(&mut self, id: u32, live: bool) {
        let Some(p) = self.procs.get(&id) else { return };
        let (app, slot) = (p.app.clone(), p.instance as usize);
        if let Err(e) = self.sockets.group(&app).set_live(slot, live) {
            eprintln!("cohort: cannot steer connections for {app}:{slot}: {e}");
        }
    }

    /// Whether another process of `id`'s app runs and is meant to go on running.
    pub(super) fn others_serving(&self, id: u32) -> bool {
        let Some(p) = self.procs.get(&id) else {
            return false;
        };
        self.apps.get(&p.app).is_some_and(|a| {
            a.procs.iter().filter(|o| **o != id).any(|o| {
                self.procs
                    .get(o)
                    .is_some_and(|q| q.pid.is_some() && q.want == Want::Run)
            })
        })
    }

    /// Connections queued on the slot of process `id`.
    pub(super) fn queued(&mut self, id: u32) -> u32 {
        let Some(p) = self.procs.get(&id) else {
            return 0;
        };
        let (app, slot) = (p.app.clone(), p.instance as usize);
        self.sockets.group(&app).queued(slot)
    }

    /// The slot of process `id` is out of service for good (stopped, errored): close its sockets,
    /// so the port closes once no slot of the app runs (as with PM2).
    pub(super) fn release_slot(&mut self, id: u32) {
        let Some(p) = self.procs.get(&id) else { return };
        if !self.is_cluster(id) {
            return;
        }
        let (app, slot) = (p.app.clone(), p.instance as usize);
        if let Err(e) = self.sockets.group(&app).remove_slot(slot) {
            eprintln!("cohort: closing the sockets of {app}:{slot}: {e}");
        }
    }

    /// Waits (polling every 10 ms, `left` more times) for the queued connections of a slot that
    /// no longer gets new ones to be accepted by its worker, then stops the worker.
    pub(super) fn drain_check(&mut self, id: u32, gen: u64, left: u32) {
        let Some(p) = self.procs.get(&id) else { return };
        if p.gen != gen || p.pid.is_none() || p.status != Status::Stopping {
            return;
        }
        if left == 0 || self.queued(id) == 0 {
            self.send_stop(id);
            return;
        }
        let me = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let _ = me.send(Msg::DrainCheck {
                id,
                gen,
                left: left - 1,
            });
        });
    }

    pub(super) fn on_node_message(&mut self, id: u32, pid: i32, msg: NodeMessage) {
        let Some(p) = self.procs.get(&id) else { return };
        let Some(spec) = self.apps.get(&p.app).map(|a| &a.spec) else {
            return;
        };
        let wait_ready = spec.wait_ready;
        let current = p.pid == Some(pid);
        match msg {
            NodeMessage::QueryServer(q) => {
                let sender = if current {
                    p.channel.clone()
                } else {
                    p.retiring
                        .iter()
                        .find(|r| r.pid == pid)
                        .and_then(|r| r.channel.clone())
                };
                let Some(sender) = sender else { return };
                let (app, slot) = (p.app.clone(), p.instance as usize);
                let sock = q
                    .listen_addr()
                    .map_err(std::io::Error::from_raw_os_error)
                    .and_then(|addr| {
                        self.sockets
                            .socket_for(&app, slot, &addr)
                            .and_then(|fd| fd.try_clone_to_owned())
                    });
                if let Err(e) = &sock {
                    eprintln!("cohort: {app}:{slot} cannot listen on {}: {e}", q.key());
                }
                tokio::spawn(async move {
                    let fd = sock.as_ref().map(|fd| fd.as_fd()).map_err(|e| {
                        std::io::Error::from_raw_os_error(
                            e.raw_os_error().unwrap_or(libc::EADDRINUSE),
                        )
                    });
                    let _ = sender.reply_query_server(&q, fd).await;
                });
            }
            NodeMessage::Listening { .. } if current && !wait_ready => self.mark_ready(id, pid),
            NodeMessage::User(v) if current && v == serde_json::json!("ready") => {
                self.mark_ready(id, pid)
            }
            _ => {}
        }
    }

    /// Process `id`'s current worker (`pid`) is ready: it gets connections, and a reload waiting
    /// for it retires the worker it replaces.
    pub(super) fn mark_ready(&mut self, id: u32, pid: i32) {
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        if p.pid != Some(pid) || p.ready {
            return;
        }
        p.ready = true;
        fire_ready(p);
        if p.status == Status::Launching {
            p.status = Status::Online;
        }
        if self.is_cluster(id) {
            self.set_live(id, true);
        }
        if self.reloads.front().is_some_and(|j| j.current == Some(id)) {
            if let Some(p) = self.procs.get_mut(&id) {
                p.restarts += 1;
                *p.restart_reasons.entry("reload".into()).or_default() += 1;
            }
            self.retire_old(id);
            if let Some(job) = self.reloads.front_mut() {
                job.current = None;
            }
            self.reload_next();
        }
    }

    /// A stop, restart or delete of process `id` overtakes its reload: the job moves on, and the
    /// old workers the reload was keeping are stopped with it.
    pub(super) fn abandon_reload(&mut self, id: u32) {
        let current = self.reloads.front().is_some_and(|j| j.current == Some(id));
        if self.procs.get(&id).is_some_and(|p| !p.retiring.is_empty()) {
            self.retire_old(id);
        }
        if current {
            if let Some(job) = self.reloads.front_mut() {
                job.current = None;
            }
            self.reload_next();
        }
    }

    /// Stops the workers that process `id`'s new worker replaced.
    fn retire_old(&mut self, id: u32) {
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        let Some(spec) = self.apps.get(&p.app).map(|a| a.spec.clone()) else {
            return;
        };
        for r in p.retiring.iter_mut().filter(|r| !r.stopping) {
            r.stopping = true;
            stop_process(r.pid, r.channel.clone(), &spec);
            let (pid, me, wait) = (r.pid, self.tx.clone(), spec.kill_timeout_ms);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(wait)).await;
                let _ = me.send(Msg::RetireTimeout { pid });
            });
        }
    }

    /// `reload`: cluster processes are replaced one at a time (new worker up and listening on the
    /// same slot socket, then the old one drains); fork-mode processes are restarted.
    pub(super) fn reload(&mut self, ids: Vec<u32>, reply: Reply<Vec<ProcessInfo>>) {
        let (cluster, fork): (Vec<u32>, Vec<u32>) =
            ids.into_iter().partition(|id| self.is_cluster(*id));
        let restarts = fork.into_iter().filter_map(|id| self.restart(id)).collect();
        self.reloads.push_back(ReloadJob {
            queue: cluster.iter().copied().collect(),
            current: None,
            ids: cluster,
            errors: Vec::new(),
            restarts,
            reply: Some(reply),
        });
        if self.reloads.len() == 1 {
            self.reload_next();
        }
    }

    /// Starts the next replacement of the front job, or finishes it.
    pub(super) fn reload_next(&mut self) {
        loop {
            let Some(job) = self.reloads.front_mut() else {
                return;
            };
            if job.current.is_some() {
                return;
            }
            let Some(id) = job.queue.pop_front() else {
                self.reload_progress();
                return;
            };
            let running = self
                .procs
                .get(&id)
                .is_some_and(|p| p.pid.is_some() && p.status != Status::Stopping);
            if !running {
                // Stopped or errored: a reload starts it.
                if let Some(p) = self.procs.get_mut(&id) {
                    p.unstable = 0;
                }
                if self.procs.get(&id).is_some_and(|p| p.pid.is_none()) {
                    self.spawn(id);
                }
                continue;
            }
            if let Some(job) = self.reloads.front_mut() {
                job.current = Some(id);
            }
            if !self.spawn_worker(id, true) {
                let name = self
                    .procs
                    .get(&id)
                    .map(|p| format!("{}:{}", p.app, p.instance))
                    .unwrap_or_default();
                if let Some(job) = self.reloads.front_mut() {
                    job.current = None;
                    job.errors.push(format!("{name}: the new worker could not start (see its error log); the old one keeps serving"));
                }
            }
            // spawn_worker may have found it ready at once (socket activation) and moved on.
        }
    }

    /// A new worker died before it was ready during a reload: the old one goes on serving.
    /// Returns true when the exit was handled that way.
    pub(super) fn reload_failed(&mut self, id: u32, exit: Exit) -> bool {
        if self.reloads.front().is_none_or(|j| j.current != Some(id)) {
            return false;
        }
        let Some(p) = self.procs.get_mut(&id) else {
            return false;
        };
        if p.want != Want::Run {
            return false;
        }
        let Some(Retiring {
            pid,
            channel,
            started,
            started_at,
            ..
        }) = p.retiring.pop()
        else {
            return false;
        };
        p.pid = Some(pid);
        p.channel = channel;
        p.started = started;
        p.started_at = started_at;
        p.ready = true;
        p.status = Status::Online;
        let how = match (exit.code, exit.signal) {
            (Some(c), _) => format!("exited with code {c}"),
            (_, Some(s)) => format!("was killed by signal {s}"),
            _ => "exited".into(),
        };
        let msg = format!(
            "{}:{}: the new worker {how} before it was ready; the old one (pid {pid}) keeps serving",
            p.app, p.instance
        );
        eprintln!("cohort: reload: {msg}");
        self.set_live(id, true);
        if let Some(job) = self.reloads.front_mut() {
            job.errors.push(msg);
            job.current = None;
        }
        self.reload_next();
        true
    }

    /// Finishes the front job once its queue is done and its replaced workers have all exited.
    pub(super) fn reload_progress(&mut self) {
        let Some(job) = self.reloads.front() else {
            return;
        };
        if job.current.is_some() || !job.queue.is_empty() {
            return;
        }
        let draining = job
            .ids
            .iter()
            .any(|id| self.procs.get(id).is_some_and(|p| !p.retiring.is_empty()));
        if draining {
            return;
        }
        let Some(mut job) = self.reloads.pop_front() else {
            return;
        };
        if let Some(reply) = job.reply.take() {
            let waits = std::mem::take(&mut job.restarts);
            let me = Handle {
                tx: self.tx.clone(),
                hub: self.hub.clone(),
            };
            let errors = job.errors;
            tokio::spawn(async move {
                for w in waits {
                    let _ = w.await;
                }
                let r = match errors.is_empty() {
                    true => me.call(Msg::List).await,
                    false => Err(format!("reload incomplete: {}", errors.join("; "))),
                };
                let _ = reply.send(r);
            });
        }
        if !self.reloads.is_empty() {
            self.reload_next();
        }
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
        if let Some(app) = self.apps.get_mut(&name) {
            app.spec.instances = Instances::Count(target);
        }
        let waits = self.resize(&name, target);
        self.reply_when_done(waits, reply);
    }
}
