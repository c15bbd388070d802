//! The supervisor's tables: apps (spec and process ids) and processes (run state, counters, logs,
//! waiters), the lookups over them (selectors, pids) and the read-only queries the API asks (list,
//! describe, log files, env, history).

use super::Supervisor;
use crate::api::{History, LogFiles, ProcessDetail, ProcessInfo, RestartReason, Selector, Status};
use crate::cluster::node_ipc::NodeSender;
use crate::config::AppSpec;
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::time::Instant;
use tokio::sync::oneshot;

/// What the user asked of a process; decides what its next exit means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) enum Want {
    Run,
    Stop,
    Restart,
    Delete,
}

/// A process replaced by a reload: still serving its open connections until it exits.
pub(super) struct Retiring {
    pub(super) pid: i32,
    pub(super) channel: Option<NodeSender>,
    /// Asked to stop already (never signalled twice: a second signal cuts a drain short).
    pub(super) stopping: bool,
    /// When it started (restored if its replacement fails to start).
    pub(super) started: Option<Instant>,
    pub(super) started_at: Option<u64>,
}

pub(super) struct App {
    pub(super) spec: AppSpec,
    /// Process ids by instance number.
    pub(super) procs: Vec<u32>,
}

pub(super) struct Proc {
    pub(super) id: u32,
    pub(super) app: String,
    pub(super) instance: u32,
    pub(super) status: Status,
    pub(super) pid: Option<i32>,
    pub(super) want: Want,
    pub(super) restarts: u32,
    /// `restarts` by reason (crash, manual, reload), for /metrics.
    pub(super) restart_reasons: BTreeMap<String, u32>,
    /// What the restart policy remembers of the last runs (crash counter, backoff).
    pub(super) run: super::policy::RunState,
    pub(super) created_at: u64,
    pub(super) started_at: Option<u64>,
    pub(super) started: Option<Instant>,
    pub(super) last_exit_code: Option<i32>,
    pub(super) last_signal: Option<String>,
    /// Bumped at every spawn and stop, so timers armed for an earlier run do nothing.
    pub(super) gen: u64,
    pub(super) cpu: f64,
    pub(super) memory: u64,
    /// The last samples (cpu %, memory bytes), oldest first, for monit's charts.
    pub(super) history: VecDeque<(f32, u64)>,
    pub(super) waiters: Vec<oneshot::Sender<()>>,
    /// The Node IPC channel of the current process (Node apps only).
    pub(super) channel: Option<NodeSender>,
    /// The current process signalled readiness (listening / 'ready' / listen_timeout).
    pub(super) ready: bool,
    /// Fired when the current process is ready or gone (`start` answers once its apps serve).
    pub(super) ready_waiters: Vec<oneshot::Sender<()>>,
    /// Processes replaced by a reload, draining until they exit.
    pub(super) retiring: Vec<Retiring>,
    /// A balancer's admin address (GET /status), for `describe`.
    pub(super) admin: Option<String>,
    pub(super) out: PathBuf,
    pub(super) err: PathBuf,
    pub(super) combined: Option<PathBuf>,
    /// Log lines written/dropped, over every run of this process.
    pub(super) log_counts: std::sync::Arc<crate::daemon::logs::LogCounts>,
    /// Why the last restart happened (recorded by `record_restart`).
    pub(super) restart_reason: Option<RestartReason>,
    /// Why the next restart happens (set by whoever asks for it, taken by `record_restart`).
    pub(super) pending_reason: Option<RestartReason>,
    /// Why the current start failed (before the process was ready), for honest answers.
    pub(super) start_failure: Option<String>,
    /// The last transient spawn failure while its retry waits (`describe`); None once one works.
    pub(super) spawn_retry: Option<crate::api::SpawnRetry>,
    /// The readiness probe's verdict for the current run: None when the app has no readiness
    /// probe, `Some(false)` from the start of a run until it passes (Kubernetes).
    pub(super) probe_ready: Option<bool>,
    /// Each probe's counters and last result for the current run (`probes.rs`).
    pub(super) probes: super::probes::ProcProbes,
}

impl Supervisor {
    /// Log lines written and dropped per process, in id order.
    pub(super) fn log_counts(&self) -> Vec<crate::daemon::logs::LogCount> {
        self.procs
            .values()
            .map(|p| {
                let (written, dropped) = p.log_counts.get();
                crate::daemon::logs::LogCount {
                    id: p.id,
                    name: p.app.clone(),
                    instance: p.instance,
                    written,
                    dropped,
                }
            })
            .collect()
    }

    pub(super) fn info(&self, p: &Proc) -> ProcessInfo {
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
            unstable_restarts: p.run.unstable,
            restart_reasons: p.restart_reasons.clone(),
            restart_reason: p.restart_reason,
            autoscale: self.autoscale_info(&p.app, false),
            ready: self.ready_field(p),
        }
    }

    pub(super) fn list(&self) -> Vec<ProcessInfo> {
        self.procs.values().map(|p| self.info(p)).collect()
    }

    fn detail(&self, id: u32) -> Option<ProcessDetail> {
        let p = self.procs.get(&id)?;
        let spec = &self.apps.get(&p.app)?.spec;
        let mut info = self.info(p);
        info.autoscale = self.autoscale_info(&p.app, true);
        Some(ProcessDetail {
            info,
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
            namespace: spec.namespace.clone(),
            instance_var: spec.instance_var.clone(),
            watch: spec
                .watch
                .iter()
                .flat_map(|w| &w.paths)
                .map(|p| p.to_string_lossy().into_owned())
                .collect(),
            cron_restart: spec.cron_restart.clone(),
            spawn_retry: p
                .spawn_retry
                .clone()
                .filter(|_| p.status == Status::WaitingRestart || (p.pid.is_some() && !p.ready)),
            max_memory_restart: spec.max_memory_restart,
            depends_on: self.dependency_list(&p.app),
            waiting_for: if self.is_held(id) {
                self.waiting_for(&p.app)
            } else {
                None
            },
            probes: self.probe_statuses(p),
        })
    }

    /// Resolves a selector to process ids, or says why nothing matched.
    pub(super) fn select(&self, sel: &Selector) -> Result<Vec<u32>, String> {
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

    /// `describe`: the details of the selected processes.
    pub(super) fn describe(&self, sel: &Selector) -> Result<Vec<ProcessDetail>, String> {
        self.select(sel)
            .map(|ids| ids.iter().filter_map(|id| self.detail(*id)).collect())
    }

    /// The log files of the selected processes.
    pub(super) fn log_files(&self, sel: &Selector) -> Result<Vec<LogFiles>, String> {
        self.select(sel).map(|ids| {
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
        })
    }

    /// The environment process `id` runs with.
    pub(super) fn env(&self, id: u32) -> Result<BTreeMap<String, String>, String> {
        match self.procs.get(&id) {
            Some(p) => Ok(self.child_env(p).into_iter().collect()),
            None => Err(format!("no process with id {id} (see `cohort ls`)")),
        }
    }

    /// The last cpu/memory samples of the selected processes.
    pub(super) fn history(&self, sel: &Selector) -> Result<Vec<History>, String> {
        self.select(sel).map(|ids| {
            ids.iter()
                .filter_map(|id| self.procs.get(id))
                .map(|p| History {
                    id: p.id,
                    interval_ms: crate::daemon::sampler::INTERVAL_MS,
                    cpu: p.history.iter().map(|h| h.0).collect(),
                    memory: p.history.iter().map(|h| h.1).collect(),
                })
                .collect()
        })
    }

    /// A receiver that fires when process `id` is ready (signalled, and its readiness probe
    /// passing) or gone; None if it is already either.
    pub(super) fn until_ready(&mut self, id: u32) -> Option<oneshot::Receiver<()>> {
        let held = self.is_held(id);
        let p = self.procs.get_mut(&id)?;
        // With a readiness probe: until it passes too, or its start window is over (probes.rs).
        let probed = p.probe_ready == Some(false) && !p.probes.window_over;
        if (p.ready && !probed) || (p.pid.is_none() && !held) {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        p.ready_waiters.push(tx);
        Some(rx)
    }

    /// Adds process `instance` of app `name` to the tables (stopped); returns its id.
    pub(super) fn add_proc(&mut self, name: &str, instance: u32) -> u32 {
        self.add_proc_as(name, instance, None)
    }

    /// `add_proc` keeping the id `wanted` when it is free (resurrect and update keep ids, as PM2).
    pub(super) fn add_proc_as(&mut self, name: &str, instance: u32, wanted: Option<u32>) -> u32 {
        let id = match wanted.filter(|id| !self.procs.contains_key(id)) {
            Some(id) => id,
            None => {
                while self.procs.contains_key(&self.next_id) {
                    self.next_id += 1;
                }
                self.next_id
            }
        };
        self.next_id = self.next_id.max(id + 1);
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
                restart_reasons: BTreeMap::new(),
                run: Default::default(),
                created_at: crate::daemon::now_ms(),
                started_at: None,
                started: None,
                last_exit_code: None,
                last_signal: None,
                gen: self.gen_floor,
                cpu: 0.0,
                memory: 0,
                history: VecDeque::new(),
                waiters: Vec::new(),
                channel: None,
                ready: false,
                ready_waiters: Vec::new(),
                retiring: Vec::new(),
                admin: None,
                log_counts: Default::default(),
                out,
                err,
                combined,
                restart_reason: None,
                pending_reason: None,
                start_failure: None,
                spawn_retry: None,
                probe_ready: None,
                probes: Default::default(),
            },
        );
        if let Some(app) = self.apps.get_mut(name) {
            app.procs.push(id);
        }
        id
    }

    /// The out, err and combined log paths of process `instance` of app `name`.
    fn log_paths(&self, name: &str, instance: u32) -> (PathBuf, PathBuf, Option<PathBuf>) {
        let spec = self.apps.get(name).map(|a| &a.spec);
        let merge = spec.is_some_and(|s| s.merge_logs);
        let several = spec.is_some_and(|s| s.instances.resolve(self.cpus) > 1);
        // Names may hold spaces (`Export report`): file names get `-` instead, as PM2's.
        let name = &crate::config::ecosystem::log_file_stem(name);
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
            if several && !merge && p.as_os_str() != crate::config::DISCARD {
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
    pub(super) fn child_env(&self, p: &Proc) -> BTreeMap<String, String> {
        let mut env = self
            .apps
            .get(&p.app)
            .map(|a| a.spec.env.clone())
            .unwrap_or_default();
        env.insert("name".into(), p.app.clone());
        env.insert("pm_id".into(), p.id.to_string());
        let spec = self.apps.get(&p.app).map(|a| &a.spec);
        // PM2's instance_var renames NODE_APP_INSTANCE; increment_var adds the instance number.
        let instance_var = spec
            .and_then(|s| s.instance_var.clone())
            .unwrap_or_else(|| "NODE_APP_INSTANCE".into());
        env.insert(instance_var, p.instance.to_string());
        if let Some(var) = spec.and_then(|s| s.increment_var.as_ref()) {
            let base = env.get(var).and_then(|v| v.trim().parse::<i64>().ok());
            env.insert(
                var.clone(),
                (base.unwrap_or(0) + i64::from(p.instance)).to_string(),
            );
        }
        env.insert("COHORT_APP".into(), p.app.clone());
        env.insert("COHORT_ID".into(), p.id.to_string());
        env.insert("COHORT_INSTANCE".into(), p.instance.to_string());
        env.insert(
            "COHORT_HOME".into(),
            self.home.root.to_string_lossy().into_owned(),
        );
        env
    }
}

/// Wakes everyone waiting for this process to be ready (or gone).
pub(super) fn fire_ready(p: &mut Proc) {
    for w in p.ready_waiters.drain(..) {
        let _ = w.send(());
    }
}

/// Wakes everyone waiting for this process to settle.
pub(super) fn notify(p: &mut Proc) {
    for w in p.waiters.drain(..) {
        let _ = w.send(());
    }
}
