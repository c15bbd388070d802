//! Honest answers: `start`, `restart`, `reload` and `scale` answer once the processes they started
//! are ready or gone, and fail (the CLI exits non-zero) naming each process that ended `errored`,
//! exited before it was ready, or is still not running because its spawn is being retried after a
//! transient shortage (waited for up to 10 s first), with why (a port it could not listen on, its
//! exit code, the errno).
//!
//! Why a start failed is kept on the process (`start_failure`): set when it cannot be spawned,
//! cannot listen, or exits before it is ready; cleared when a new start of it begins.

use super::handle::Reply;
use super::table::Proc;
use super::{Event, Supervisor};
use crate::api::{ProcessInfo, Status};
use crate::daemon::reaper::Exit;
use tokio::sync::oneshot;

/// How many times an answer waits again for processes that are starting once more (a restart's
/// new process, a crashed one the policy restarts) before it says what it saw.
const SETTLE_ROUNDS: u8 = 1;

/// How long an answer waits for a process whose spawn is being retried (a transient shortage of
/// fds, processes or memory) to come up, before it says the process is not running yet.
const SPAWN_RETRY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Supervisor {
    /// A new start of processes `ids` begins: earlier failures no longer count.
    pub(super) fn begin_start(&mut self, ids: &[u32]) {
        for id in ids {
            if let Some(p) = self.procs.get_mut(id) {
                p.start_failure = None;
            }
        }
    }

    /// Answers once every receiver fired and processes `ids` are ready or gone: with the process
    /// list, or with what failed.
    pub(super) fn reply_checked(
        &self,
        waits: Vec<oneshot::Receiver<()>>,
        ids: Vec<u32>,
        reply: Reply<Vec<ProcessInfo>>,
    ) {
        self.settle_after(waits, ids, reply, SETTLE_ROUNDS);
    }

    fn settle_after(
        &self,
        waits: Vec<oneshot::Receiver<()>>,
        ids: Vec<u32>,
        reply: Reply<Vec<ProcessInfo>>,
        rounds: u8,
    ) {
        let me = self.events.clone();
        tokio::spawn(async move {
            for w in waits {
                let _ = w.await;
            }
            let _ = me.send(Event::Settle { ids, reply, rounds });
        });
    }

    /// What a checked answer waited for is done: wait for processes that are starting again,
    /// or answer.
    pub(super) fn settle(&mut self, ids: Vec<u32>, reply: Reply<Vec<ProcessInfo>>, rounds: u8) {
        if rounds > 0 {
            let mut waits: Vec<_> = ids.iter().filter_map(|id| self.until_ready(*id)).collect();
            waits.extend(
                ids.iter()
                    .filter_map(|id| self.until_retried_spawn_ready(*id)),
            );
            if !waits.is_empty() {
                self.settle_after(waits, ids, reply, rounds - 1);
                return;
            }
        }
        let failures = self.failures(&ids);
        let _ = reply.send(if failures.is_empty() {
            Ok(self.list())
        } else {
            Err(failures.join("; "))
        });
    }

    /// For a process whose spawn is being retried: fires once it is up and ready, or after
    /// [`SPAWN_RETRY_WAIT`] (the answer then says it is not running yet). None for any other.
    fn until_retried_spawn_ready(&mut self, id: u32) -> Option<oneshot::Receiver<()>> {
        let p = self.procs.get_mut(&id)?;
        if p.pid.is_some() || p.spawn_retry.is_none() {
            return None;
        }
        let (ready_tx, ready_rx) = oneshot::channel();
        p.ready_waiters.push(ready_tx);
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(SPAWN_RETRY_WAIT, ready_rx).await;
            let _ = tx.send(());
        });
        Some(rx)
    }

    /// What went wrong with each of processes `ids`, one line each (none: all is well).
    fn failures(&self, ids: &[u32]) -> Vec<String> {
        let mut out = Vec::new();
        let mut apps = Vec::new();
        for p in ids.iter().filter_map(|id| self.procs.get(id)) {
            let why = match (&p.start_failure, p.status) {
                (Some(why), Status::Errored) => format!("{why}; it is errored"),
                (Some(why), _) => why.clone(),
                (None, Status::Errored) => "is errored".to_string(),
                // Its spawn failed for a transient reason and is being retried: not running.
                (None, Status::WaitingRestart) if p.pid.is_none() => match &p.spawn_retry {
                    Some(r) => format!(
                        "is not running yet: {} (a transient shortage: retried with backoff, \
                         attempt {}, next in {} ms; `cohort describe {}` shows it)",
                        r.reason, r.attempt, r.retry_in_ms, p.app
                    ),
                    None => continue,
                },
                (None, _) => continue,
            };
            out.push(format!("{}:{} {why}", p.app, p.instance));
            if !apps.contains(&p.app) {
                apps.push(p.app.clone());
            }
        }
        if let Some(last) = out.last_mut() {
            let hint = apps
                .iter()
                .map(|a| format!("`cohort logs {a} --err --nostream`"))
                .collect::<Vec<_>>()
                .join(", ");
            last.push_str(&format!(" (see {hint})"));
        }
        out
    }
}

/// Process `p` exited before it was ready: that is why its start failed (after a more precise
/// reason recorded earlier, such as the address it could not listen on).
pub(super) fn exited_before_ready(p: &mut Proc, exit: &Exit) {
    let how = match (exit.code, exit.signal) {
        (Some(c), _) => format!("exited with code {c}"),
        (_, Some(s)) => format!("was killed by signal {s}"),
        _ => "exited".into(),
    };
    p.start_failure = Some(match p.start_failure.take() {
        Some(earlier) => format!("{earlier}, then {how} before it was ready"),
        None => format!("{how} before it was ready"),
    });
}

/// Process `p` could not start (spawn or listen failed).
pub(super) fn could_not_start(p: &mut Proc, why: &str) {
    p.start_failure = Some(why.to_string());
}
