//! Zero-downtime reload: cluster processes are replaced one slot at a time (a new worker joins the
//! slot's socket; once it is ready the old one is asked to stop and drains), fork-mode processes
//! restart. One reload runs at a time; later requests wait their turn. A new worker that dies
//! before it is ready leaves the old one serving; a reload always answers, saying what failed.

use super::handle::Reply;
use super::lifecycle::stop_process;
use super::table::{Retiring, Want};
use super::{Event, Supervisor};
use crate::api::{ProcessInfo, RestartReason, Status};
use crate::daemon::reaper::Exit;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::VecDeque;
use tokio::sync::oneshot;

/// One `reload` request: the processes still to replace, one at a time.
pub(super) struct ReloadJob {
    queue: VecDeque<u32>,
    /// The process whose new worker is starting now.
    current: Option<u32>,
    /// Every process of the job (to know when their retiring workers are all gone).
    ids: Vec<u32>,
    errors: Vec<String>,
    /// Fork-mode processes of the same request, restarted in place.
    restarts: Vec<oneshot::Receiver<()>>,
    reply: Option<Reply<Vec<ProcessInfo>>>,
    /// Why (recorded as each process's restart reason).
    reason: RestartReason,
    /// Fork-mode processes of the job (their failures are reported too).
    fork_ids: Vec<u32>,
    /// The new worker (id, gen) has replaced the old one and the job waits for its readiness
    /// probe to pass before the next slot (a rolling update keeps ready workers serving).
    awaiting_probe: Option<(u32, u64)>,
}

impl Supervisor {
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
        let Some(spec) = self.apps.get(&p.app).map(|a| &a.spec) else {
            return;
        };
        let mut stopped = Vec::new();
        for r in p.retiring.iter_mut().filter(|r| !r.stopping) {
            r.stopping = true;
            stop_process(r.pid, r.channel.clone(), spec);
            stopped.push(r.pid);
        }
        let wait = spec.kill_timeout_ms;
        for pid in stopped {
            self.after(wait, Event::RetireTimeout { pid });
        }
    }

    /// `reload`: cluster processes are replaced one at a time (new worker up and listening on the
    /// same slot socket, then the old one drains); fork-mode processes are restarted.
    pub(super) fn reload(&mut self, ids: Vec<u32>, reply: Reply<Vec<ProcessInfo>>) {
        self.reload_for(ids, RestartReason::Reload, reply);
    }

    /// `reload` for `reason` (a user's reload, a watch, cron, the memory limit).
    pub(super) fn reload_for(
        &mut self,
        ids: Vec<u32>,
        reason: RestartReason,
        reply: Reply<Vec<ProcessInfo>>,
    ) {
        self.begin_start(&ids);
        let (cluster, fork): (Vec<u32>, Vec<u32>) =
            ids.into_iter().partition(|id| self.is_cluster(*id));
        let restarts = fork
            .iter()
            .filter_map(|id| self.restart_for(*id, reason))
            .collect();
        self.reloads.push_back(ReloadJob {
            queue: cluster.iter().copied().collect(),
            current: None,
            ids: cluster,
            errors: Vec::new(),
            restarts,
            reply: Some(reply),
            reason,
            fork_ids: fork,
            awaiting_probe: None,
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
                    p.run.unstable = 0;
                }
                if self.procs.get(&id).is_some_and(|p| p.pid.is_none()) {
                    self.spawn(id);
                }
                continue;
            }
            let reason = match self.reloads.front_mut() {
                Some(job) => {
                    job.current = Some(id);
                    job.reason
                }
                None => RestartReason::Reload,
            };
            if let Some(p) = self.procs.get_mut(&id) {
                p.pending_reason = Some(reason);
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
        p.pending_reason = None;
        let Some(Retiring {
            pid,
            channel,
            started,
            started_at,
            ..
        }) = p.retiring.pop()
        else {
            // The old worker is gone too (it crashed meanwhile): nothing is left to keep
            // serving. The reload moves on (and answers); the restart policy handles this exit.
            let msg = format!(
                "{}:{}: the new worker {} before it was ready, and the old one had already exited",
                p.app,
                p.instance,
                exit_text(&exit)
            );
            crate::report!("cohort: reload: {msg}");
            if let Some(job) = self.reloads.front_mut() {
                job.errors.push(msg);
                job.current = None;
            }
            self.reload_next();
            return false;
        };
        p.pid = Some(pid);
        p.channel = channel;
        p.started = started;
        p.started_at = started_at;
        p.ready = true;
        p.status = Status::Online;
        let how = exit_text(&exit);
        let msg = format!(
            "{}:{}: the new worker {how} before it was ready; the old one (pid {pid}) keeps serving",
            p.app, p.instance
        );
        crate::report!("cohort: reload: {msg}");
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
            if job.errors.is_empty() {
                let mut ids = std::mem::take(&mut job.ids);
                ids.extend(job.fork_ids.iter().copied());
                self.reply_checked(waits, ids, reply);
            } else {
                let errors = job.errors;
                tokio::spawn(async move {
                    for w in waits {
                        let _ = w.await;
                    }
                    let _ = reply.send(Err(format!("reload incomplete: {}", errors.join("; "))));
                });
            }
        }
        if !self.reloads.is_empty() {
            self.reload_next();
        }
    }

    /// Process `id`'s new worker is ready: if a reload was waiting for it, that counts as a
    /// restart, the worker it replaces drains, and the reload moves on.
    pub(super) fn reload_worker_ready(&mut self, id: u32) {
        if self.reloads.front().is_none_or(|j| j.current != Some(id)) {
            return;
        }
        self.record_restart(id);
        self.retire_old(id);
        let probed = self
            .procs
            .get(&id)
            .filter(|p| p.probe_ready == Some(false))
            .map(|p| p.gen);
        if let (Some(gen), Some(job)) = (probed, self.reloads.front_mut()) {
            // Its readiness probe runs once the old worker is gone; the next slot waits for it.
            job.awaiting_probe = Some((id, gen));
            return;
        }
        if let Some(job) = self.reloads.front_mut() {
            job.current = None;
        }
        self.reload_next();
    }

    /// The reload waits for a new worker's readiness probe: once it passes (or the worker is
    /// gone, or its start window is over), the next slot is replaced.
    pub(super) fn reload_probe_progress(&mut self) {
        let Some(job) = self.reloads.front_mut() else {
            return;
        };
        let Some((id, gen)) = job.awaiting_probe else {
            return;
        };
        if job.current != Some(id) {
            // A stop, restart or delete of it moved the job on already.
            job.awaiting_probe = None;
            return;
        }
        let failed = match self.procs.get(&id) {
            Some(p) if p.gen == gen && p.pid.is_some() => {
                if self.proc_serving(id) {
                    None
                } else if p.probes.window_over {
                    Some(format!(
                        "{}:{}: the new worker did not pass its readiness probe in time",
                        p.app, p.instance
                    ))
                } else {
                    return;
                }
            }
            _ => None,
        };
        if let Some(job) = self.reloads.front_mut() {
            job.awaiting_probe = None;
            job.current = None;
            job.errors.extend(failed);
        }
        self.reload_next();
    }

    /// Whether a reload is about to replace, or is replacing, process `id`.
    pub(super) fn reloading(&self, id: u32) -> bool {
        self.reloads
            .iter()
            .any(|j| j.current == Some(id) || j.queue.contains(&id))
    }

    /// A worker replaced by a reload did not exit within kill_timeout: SIGKILL.
    pub(super) fn retire_timeout(&mut self, pid: i32) {
        if self.by_pid.contains_key(&pid) {
            crate::report!(
                "cohort: replaced worker (pid {pid}) did not stop in time; sending SIGKILL"
            );
            let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
        }
    }
}

/// "exited with code 1", "was killed by signal 9".
fn exit_text(exit: &Exit) -> String {
    match (exit.code, exit.signal) {
        (Some(c), _) => format!("exited with code {c}"),
        (_, Some(s)) => format!("was killed by signal {s}"),
        _ => "exited".into(),
    }
}
