//! Cluster slots inside the supervisor: the listening sockets of each worker slot (held here,
//! handed to workers), steering connections to ready slots, draining a slot before it goes away,
//! Node's IPC messages (queryServer, listening, 'ready') and readiness.

use super::table::{fire_ready, Want};
use super::{Event, Supervisor};
use crate::api::Status;
use crate::cluster::node_ipc::NodeMessage;
use crate::cluster::sockets::ListenAddr;
use crate::config::{AppSpec, ExecMode};
use std::os::fd::AsFd;

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
    if spec.autoscale.is_some() && spec.exec_mode != ExecMode::Cluster {
        return Err(format!(
            "{}: autoscaling (instances = {{ min, max }}) needs cluster mode (set exec_mode = \"cluster\", or give a port; a fork app takes a fixed count)",
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
            crate::report!("cohort: cannot steer connections for {app}:{slot}: {e}");
        }
    }

    /// The current worker of process `id` is gone (crashed, killed, stopped): its slot gets no new
    /// connection, and the connections already queued on it move to a live slot now when the
    /// kernel can migrate them (`tcp_migrate_req`), instead of waiting for the replacement. Not
    /// while an older worker of the slot (a reload's) still holds the slot's socket.
    pub(super) fn vacate_slot(&mut self, id: u32) {
        if !self.is_cluster(id) {
            return;
        }
        self.set_live(id, false);
        let Some(p) = self.procs.get(&id) else { return };
        if !p.retiring.is_empty() {
            return;
        }
        let (app, slot) = (p.app.clone(), p.instance as usize);
        if let Err(e) = self.sockets.hand_over_queue(&app, slot) {
            eprintln!("cohort: moving the queue of {app}:{slot} to a live worker: {e}");
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
            crate::report!("cohort: closing the sockets of {app}:{slot}: {e}");
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
        self.after(
            10,
            Event::DrainCheck {
                id,
                gen,
                left: left - 1,
            },
        );
    }

    /// A message from the Node IPC channel of process `id`'s worker `pid`.
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
                let addr = q.listen_addr().map_err(std::io::Error::from_raw_os_error);
                let sock = addr.as_ref().map_err(clone_err).and_then(|addr| {
                    self.sockets
                        .socket_for(&app, slot, addr)
                        .and_then(|fd| fd.try_clone_to_owned())
                });
                if let (Err(e), true) = (&sock, current) {
                    if let Some(errno) =
                        e.raw_os_error().filter(|n| super::policy::is_transient(*n))
                    {
                        // A shortage (EMFILE, ENOBUFS…): ask again later instead of failing the
                        // worker's listen(); it waits for the answer meanwhile.
                        self.retry_query_server(id, pid, q, errno, e);
                        return;
                    }
                }
                if let (Ok(_), true) = (&sock, current) {
                    if let Some(p) = self.procs.get_mut(&id) {
                        p.spawn_retry = None;
                    }
                }
                if let Err(e) = &sock {
                    let why = match &addr {
                        Ok(addr) => crate::cluster::holder::cannot_listen(addr, e),
                        Err(_) => format!("cannot listen on {}: {e}", q.key()),
                    };
                    crate::report!("cohort: {app}:{slot} {why}");
                    if let Some(p) = self.procs.get_mut(&id).filter(|_| current) {
                        super::outcome::could_not_start(p, &why);
                    }
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

    /// Creating the listening socket a Node worker asked for failed for a transient reason: the
    /// request is handled again after the spawn-retry backoff (`policy::after_spawn_failure`),
    /// for as long as the worker lives, and `describe` shows the attempt.
    fn retry_query_server(
        &mut self,
        id: u32,
        pid: i32,
        q: crate::cluster::node_ipc::QueryServer,
        errno: i32,
        e: &std::io::Error,
    ) {
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        let attempt = p.spawn_retry.as_ref().map_or(0, |r| r.attempt);
        let super::policy::SpawnDecision::Retry { after_ms } =
            super::policy::after_spawn_failure(Some(errno), attempt)
        else {
            return;
        };
        let why = format!("cannot listen on {}: {e}", q.key());
        crate::report!(
            "cohort: {}:{} {why}; a transient shortage: retrying in {after_ms} ms (attempt {})",
            p.app,
            p.instance,
            attempt + 1
        );
        p.spawn_retry = Some(crate::api::SpawnRetry {
            attempt: attempt + 1,
            errno: format!("{:?}", nix::errno::Errno::from_raw(errno)),
            reason: why,
            retry_in_ms: after_ms,
        });
        self.after(
            after_ms,
            Event::Node {
                id,
                pid,
                msg: NodeMessage::QueryServer(q),
            },
        );
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
        if p.probe_ready != Some(false) {
            fire_ready(p);
        }
        if p.status == Status::Launching {
            p.status = Status::Online;
        }
        if self.is_cluster(id) {
            // With a readiness probe, new connections wait for it to pass too.
            let live = self.slot_live(id);
            self.set_live(id, live);
        }
        self.reload_worker_ready(id);
    }
}

/// A copy of an I/O error (its OS code, or its kind and text).
fn clone_err(e: &std::io::Error) -> std::io::Error {
    match e.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code),
        None => std::io::Error::new(e.kind(), e.to_string()),
    }
}
