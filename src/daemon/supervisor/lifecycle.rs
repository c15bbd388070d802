//! Stopping processes and what follows their exits: stop (kill_signal or PM2's shutdown message to
//! the process group, SIGKILL after kill_timeout), restart, delete, and the handling of an exit —
//! what the user asked (`Want`) decides, else the restart policy (policy.rs) does. Every restart
//! is recorded in one place, [`Supervisor::record_restart`].

use super::policy::{self, Decision, Ended, Rules};
use super::table::{notify, Want};
use super::{Event, Supervisor};
use crate::api::{RestartReason, Status};
use crate::cluster::node_ipc::NodeSender;
use crate::config::AppSpec;
use crate::daemon::reaper::Exit;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::sync::oneshot;

impl Supervisor {
    /// Asks process `id` to stop (`want` says what its exit then means). Returns a receiver that
    /// fires when it is done, or None when there was nothing to wait for.
    pub(super) fn stop(&mut self, id: u32, want: Want) -> Option<oneshot::Receiver<()>> {
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
                        p.run.unstable = 0;
                        // As PM2: starting a stopped process again is no restart (`restart_time`
                        // stays); an errored one's counts.
                        if p.status == Status::Stopped {
                            p.pending_reason = None;
                            self.spawn_or_join_gate(id);
                        } else {
                            self.respawn_or_hold(id);
                        }
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
    pub(super) fn send_stop(&mut self, id: u32) {
        let Some(p) = self.procs.get(&id) else { return };
        let Some(pid) = p.pid else { return };
        let Some(spec) = self.apps.get(&p.app).map(|a| &a.spec) else {
            return;
        };
        stop_process(pid, p.channel.clone(), spec);
        let (gen, kill_timeout) = (p.gen, spec.kill_timeout_ms);
        self.after(kill_timeout, Event::KillTimeout { id, gen });
    }

    /// kill_timeout passed since the stop of run `gen` of process `id`: SIGKILL if it still runs.
    pub(super) fn kill_timeout(&mut self, id: u32, gen: u64) {
        let Some(p) = self.procs.get(&id).filter(|p| p.gen == gen) else {
            return;
        };
        if let Some(pid) = p.pid {
            crate::report!(
                "cohort: {}:{} (pid {pid}) did not stop in time; sending SIGKILL",
                p.app,
                p.instance
            );
            let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
        }
    }

    /// A restart the user asked for: the crash counters start over.
    pub(super) fn restart(&mut self, id: u32) -> Option<oneshot::Receiver<()>> {
        self.restart_for(id, RestartReason::Manual)
    }

    /// A restart for `reason` (the user, a watch, cron, the memory limit): the crash counters
    /// start over.
    pub(super) fn restart_for(
        &mut self,
        id: u32,
        reason: RestartReason,
    ) -> Option<oneshot::Receiver<()>> {
        if let Some(p) = self.procs.get_mut(&id) {
            p.run = policy::RunState::default();
            p.pending_reason = Some(reason);
        }
        self.stop(id, Want::Restart)
    }

    /// Starts process `id` again, counting the restart.
    fn respawn(&mut self, id: u32) {
        self.record_restart(id);
        self.spawn(id);
    }

    /// Counts one restart of process `id` (what `restarts` in `ls` shows): the only place the
    /// count grows (`reset` sets it back to 0). A reload counts when the new worker is ready.
    /// The reason is the one given by whoever asked for the restart (`pending_reason`); none
    /// means the restart policy restarts a crashed process.
    pub(super) fn record_restart(&mut self, id: u32) {
        if let Some(p) = self.procs.get_mut(&id) {
            p.restarts += 1;
            let reason = p.pending_reason.take().unwrap_or(RestartReason::Crash);
            p.restart_reason = Some(reason);
            *p.restart_reasons.entry(reason.as_str().into()).or_default() += 1;
        }
    }

    /// Removes process `id` from the tables (and its app, once it has no process left).
    pub(super) fn remove(&mut self, id: u32) {
        if let Some(mut p) = self.procs.remove(&id) {
            self.gen_floor = self.gen_floor.max(p.gen + 1);
            notify(&mut p);
            if let Some(app) = self.apps.get_mut(&p.app) {
                app.procs.retain(|x| *x != id);
                if app.procs.is_empty() {
                    self.apps.remove(&p.app);
                    self.sockets.remove_app(&p.app);
                } else if let Err(e) = self.sockets.group(&p.app).remove_slot(p.instance as usize) {
                    crate::report!(
                        "cohort: closing the sockets of {}:{}: {e}",
                        p.app,
                        p.instance
                    );
                }
            }
            // As PM2: ids start from 0 again once nothing is left (`delete all`).
            if self.procs.is_empty() {
                self.next_id = 0;
            }
        }
    }

    /// A child exited (from the reaper).
    pub(super) fn on_exit(&mut self, exit: Exit) {
        self.held.remove(&exit.pid);
        let Some(id) = self.by_pid.remove(&exit.pid) else {
            return; // an orphan we adopted as subreaper, or a failed exec already reaped
        };
        self.sampler.forget(exit.pid);
        // Leftovers of the process group (children the app started) never outlive it, nor do
        // descendants that left the group (setsid, double fork): its cell goes too.
        let _ = kill(Pid::from_raw(-exit.pid), Signal::SIGKILL);
        self.contain.ended(exit.pid);
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
        super::table::fire_ready(p);
        let was_ready = std::mem::replace(&mut p.ready, false);
        // A fork process that ends with code 0 (or a stop_exit_code) before its ready window
        // closed ran a one-shot job: not a failed start.
        let finished = self.apps.get(&p.app).is_some_and(|a| {
            a.spec.exec_mode == crate::config::ExecMode::Fork
                && policy::finished_cleanly(&Rules::of(&a.spec), exit.code)
        });
        if !was_ready && !finished && p.want == Want::Run {
            super::outcome::exited_before_ready(p, &exit);
        }
        p.gen += 1;
        p.last_exit_code = exit.code;
        p.last_signal = exit.signal.map(signal_name);
        let uptime = p
            .started
            .map(|t| t.elapsed().as_millis() as u64)
            .unwrap_or(0);
        self.vacate_slot(id);
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
                self.respawn_or_hold(id);
                if let Some(p) = self.procs.get_mut(&id) {
                    notify(p);
                }
            }
            Want::Run => {
                // Ended on its own: whatever restart was asked before is moot.
                p.pending_reason = None;
                self.on_crash(id, exit, uptime)
            }
        }
    }

    /// Process `id` ended on its own: the restart policy decides what follows.
    fn on_crash(&mut self, id: u32, exit: Exit, uptime_ms: u64) {
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        let Some(spec) = self.apps.get(&p.app).map(|a| &a.spec) else {
            return;
        };
        let ended = Ended {
            code: exit.code,
            uptime_ms,
            daemon_stopping: self.shutting_down,
        };
        let (run, decision) = policy::after_exit(&Rules::of(spec), p.run, ended);
        p.run = run;
        let how = match (exit.code, exit.signal) {
            (Some(c), _) => format!("exited with code {c}"),
            (_, Some(s)) => format!("was killed by {}", signal_name(s)),
            _ => "exited".into(),
        };
        match decision {
            Decision::Stop | Decision::Errored => {
                if decision == Decision::Stop {
                    crate::report!("cohort: {}:{} {how}; not restarting", p.app, p.instance);
                    p.status = Status::Stopped;
                } else {
                    crate::report!(
                        "cohort: {}:{} {how}; it crashed {} times in a row within min_uptime ({} ms): errored, not restarting",
                        p.app, p.instance, p.run.unstable, spec.min_uptime_ms
                    );
                    p.status = Status::Errored;
                }
                p.want = Want::Stop;
                notify(p);
                self.release_slot(id);
            }
            Decision::Restart { after_ms } => {
                crate::report!(
                    "cohort: {}:{} {how}; restarting in {after_ms} ms",
                    p.app,
                    p.instance
                );
                if after_ms == 0 {
                    self.respawn(id);
                } else {
                    p.status = Status::WaitingRestart;
                    let gen = p.gen;
                    self.after(after_ms, Event::RestartDue { id, gen });
                }
            }
        }
    }

    /// The delay before restarting run `gen` of process `id` passed: start it, unless something
    /// else (a stop, a restart) happened meanwhile.
    pub(super) fn restart_due(&mut self, id: u32, gen: u64) {
        let due = self.procs.get(&id).is_some_and(|p| {
            p.gen == gen && p.status == Status::WaitingRestart && p.want == Want::Run
        });
        if due {
            self.respawn(id);
        }
    }
}

/// Asks one process to stop: PM2's 'shutdown' message when configured (and the channel exists),
/// else kill_signal to its whole process group.
pub(super) fn stop_process(pid: i32, channel: Option<NodeSender>, spec: &AppSpec) {
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

/// `SIGTERM` for 15, or the number when it is no known signal.
pub(super) fn signal_name(sig: i32) -> String {
    Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| sig.to_string())
}
