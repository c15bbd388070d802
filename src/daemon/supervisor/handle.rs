//! The supervisor's typed handle: one async method per request (`list`, `start`, `act`, …), each
//! sending a private request to the actor and waiting for its answer on a oneshot channel.
//!
//! Only handles hold the request channel's senders, so the actor ends once every handle is
//! dropped; the actor's own timers and watchers use a separate event channel (mod.rs).

use crate::api::{
    ActionRequest, History, LogFiles, ProcessDetail, ProcessInfo, ResurrectReply, SaveReply,
    ScaleRequest, Selector, StartRequest,
};
use crate::daemon::logs::LogHub;
use std::collections::BTreeMap;
use tokio::sync::{mpsc, oneshot};

/// Where the actor sends the answer of one request.
pub(super) type Reply<T> = oneshot::Sender<Result<T, String>>;

/// What a handle can ask of the supervisor.
pub(super) enum Request {
    Start(StartRequest, Reply<Vec<ProcessInfo>>),
    Act(ActionRequest, Reply<Vec<ProcessInfo>>),
    Scale(ScaleRequest, Reply<Vec<ProcessInfo>>),
    List(Reply<Vec<ProcessInfo>>),
    Describe(Selector, Reply<Vec<ProcessDetail>>),
    LogFiles(Selector, Reply<Vec<LogFiles>>),
    Env(u32, Reply<BTreeMap<String, String>>),
    History(Selector, Reply<Vec<History>>),
    Save(bool, Reply<SaveReply>),
    Resurrect(Reply<ResurrectReply>),
    /// Stop every app (for `kill` and daemon shutdown); answers once all have exited.
    Shutdown(Reply<()>),
    /// Replace the daemon in place with this binary (`cohort update`): answers `Ok(why)` when
    /// busy, `Err` when it failed; on success nothing answers (the process is the new daemon).
    Reexec(std::path::PathBuf, Reply<String>),
    /// Panics inside the actor (tests of the panic path only).
    #[cfg(test)]
    Panic(Reply<()>),
}

impl Request {
    /// The request's name, for daemon.log.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Request::Start(..) => "start",
            Request::Act(req, _) => req.action.as_str(),
            Request::Scale(..) => "scale",
            Request::List(_) => "list",
            Request::Describe(..) => "describe",
            Request::LogFiles(..) => "log files",
            Request::Env(..) => "env",
            Request::History(..) => "history",
            Request::Save(..) => "save",
            Request::Resurrect(_) => "resurrect",
            Request::Shutdown(_) => "shutdown",
            Request::Reexec(..) => "update in place",
            #[cfg(test)]
            Request::Panic(_) => "panic (test)",
        }
    }
}

/// A cloneable handle to the supervisor task.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::UnboundedSender<Request>,
    /// Every log line of every process, as it is written (for `logs --follow` and `cohort run`).
    pub hub: LogHub,
    /// How many times this daemon was updated in place (`ping` says it).
    pub reexecs: u32,
    /// Why the last update in place failed after the exec (the previous binary took over again).
    pub failed_update: Option<String>,
}

impl Handle {
    pub(super) fn new(tx: mpsc::UnboundedSender<Request>, hub: LogHub, reexecs: u32) -> Handle {
        Handle {
            tx,
            hub,
            reexecs,
            failed_update: None,
        }
    }

    /// Every process, in id order.
    pub async fn list(&self) -> Result<Vec<ProcessInfo>, String> {
        self.call(Request::List).await
    }

    /// Starts apps (or restarts those a config file starts again); answers once they are ready.
    pub async fn start(&self, req: StartRequest) -> Result<Vec<ProcessInfo>, String> {
        self.call(|r| Request::Start(req, r)).await
    }

    /// stop / restart / reload / delete / reset / flush; answers once the processes settled.
    pub async fn act(&self, req: ActionRequest) -> Result<Vec<ProcessInfo>, String> {
        self.call(|r| Request::Act(req, r)).await
    }

    /// Grows or shrinks an app to a number of instances.
    pub async fn scale(&self, req: ScaleRequest) -> Result<Vec<ProcessInfo>, String> {
        self.call(|r| Request::Scale(req, r)).await
    }

    pub async fn describe(&self, sel: Selector) -> Result<Vec<ProcessDetail>, String> {
        self.call(|r| Request::Describe(sel, r)).await
    }

    pub async fn log_files(&self, sel: Selector) -> Result<Vec<LogFiles>, String> {
        self.call(|r| Request::LogFiles(sel, r)).await
    }

    /// The environment process `id` runs with.
    pub async fn env(&self, id: u32) -> Result<BTreeMap<String, String>, String> {
        self.call(|r| Request::Env(id, r)).await
    }

    /// The last cpu/memory samples of the selected processes.
    pub async fn history(&self, sel: Selector) -> Result<Vec<History>, String> {
        self.call(|r| Request::History(sel, r)).await
    }

    /// Writes dump.json (`force`: even with no apps).
    pub async fn save(&self, force: bool) -> Result<SaveReply, String> {
        self.call(|r| Request::Save(force, r)).await
    }

    /// Starts the apps of dump.json that do not run.
    pub async fn resurrect(&self) -> Result<ResurrectReply, String> {
        self.call(Request::Resurrect).await
    }

    /// Stops every app; answers once all have exited. Nothing starts afterwards.
    pub async fn shutdown(&self) -> Result<(), String> {
        self.call(Request::Shutdown).await
    }

    /// `cohort update`: replaces this daemon with `binary` without stopping any app. `Ok(why)`:
    /// busy now (a process is starting, stopping or reloading), try again shortly; `Err`: the exec
    /// failed and this daemon goes on. On success the call never returns (this process is gone).
    pub async fn reexec(&self, binary: std::path::PathBuf) -> Result<String, String> {
        self.call(|r| Request::Reexec(binary, r)).await
    }

    #[cfg(test)]
    pub(super) async fn panic_for_test(&self) -> Result<(), String> {
        self.call(Request::Panic).await
    }

    /// Sends a request and waits for its answer.
    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .map_err(|_| "the supervisor has stopped (the daemon is shutting down)".to_string())?;
        rx.await.map_err(|_| {
            if self.tx.is_closed() {
                "the supervisor dropped the request (the daemon is shutting down)".to_string()
            } else {
                // The actor runs on: handling this request failed (a panic, logged).
                "the supervisor failed on this request (see daemon.log in COHORT_HOME)".to_string()
            }
        })?
    }
}
