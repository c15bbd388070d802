//! Restarts nobody typed: a watched file changed (`watch`), a cron tick (`cron_restart`), a
//! process above its memory limit (`max_memory_restart`). Cluster apps reload (one slot at a time,
//! no failed request), fork apps restart; the reason is recorded (`restart_reason`).
//!
//! Each app's watch and cron run as tasks that send the actor an [`Event::Trigger`] carrying the
//! token they were armed with; [`Supervisor::sync_triggers`], called after every message, re-arms
//! them when an app's spec changed (start of a config again, `--update-env`, resurrect) and drops
//! them when the app is gone, so no other code has to remember them. The memory limit is checked
//! on a fast tick (every [`MEMORY_TICK_MS`]) that runs only while some app has a limit.

use super::{Event, Supervisor};
use crate::api::{RestartReason, Status};
use crate::config::triggers::{Ignore, WatchSpec};
use crate::config::ExecMode;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

/// How often the memory of processes with a limit is read (the sampler's 2 s is too slow for a leak).
pub(super) const MEMORY_TICK_MS: u64 = 500;

/// Folders a watch adds at most (a huge tree would exhaust inotify watches).
const MAX_WATCHED_DIRS: usize = 8192;

/// What an app's watch and cron are armed with; re-armed when it changes.
#[derive(PartialEq)]
struct Key {
    watch: Option<WatchSpec>,
    cron: Option<String>,
    cwd: PathBuf,
}

/// The tasks of one app's triggers; dropping this stops them.
struct ArmedApp {
    key: Key,
    token: u64,
    tasks: Vec<AbortHandle>,
}

impl Drop for ArmedApp {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The armed triggers of every app, and the memory tick.
#[derive(Default)]
pub(super) struct Triggers {
    apps: HashMap<String, ArmedApp>,
    next_token: u64,
    memory_tick: Option<AbortHandle>,
}

impl Drop for Triggers {
    fn drop(&mut self) {
        if let Some(t) = &self.memory_tick {
            t.abort();
        }
    }
}

impl Supervisor {
    /// Arms, re-arms or drops the triggers of every app to match its spec.
    pub(super) fn sync_triggers(&mut self) {
        self.triggers
            .apps
            .retain(|name, _| self.apps.contains_key(name));
        let mut rearm = Vec::new();
        for (name, app) in &self.apps {
            let s = &app.spec;
            let wanted = s.watch.is_some() || s.cron_restart.is_some();
            match self.triggers.apps.get(name) {
                Some(a)
                    if a.key.watch == s.watch
                        && a.key.cron == s.cron_restart
                        && a.key.cwd == s.cwd => {}
                None if !wanted => {}
                _ => rearm.push(name.clone()),
            }
        }
        for name in rearm {
            self.triggers.apps.remove(&name);
            self.arm(&name);
        }
        let limits = self
            .apps
            .values()
            .any(|a| a.spec.max_memory_restart.is_some());
        match (limits, self.triggers.memory_tick.is_some()) {
            (true, false) => {
                let me = self.events.clone();
                let task = tokio::spawn(async move {
                    let mut every = tokio::time::interval(Duration::from_millis(MEMORY_TICK_MS));
                    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        every.tick().await;
                        if me.send(Event::MemoryTick).is_err() {
                            break;
                        }
                    }
                });
                self.triggers.memory_tick = Some(task.abort_handle());
            }
            (false, true) => {
                if let Some(t) = self.triggers.memory_tick.take() {
                    t.abort();
                }
            }
            _ => {}
        }
    }

    /// Starts the watch and cron tasks of app `name`.
    fn arm(&mut self, name: &str) {
        let Some(spec) = self.apps.get(name).map(|a| &a.spec) else {
            return;
        };
        let key = Key {
            watch: spec.watch.clone(),
            cron: spec.cron_restart.clone(),
            cwd: spec.cwd.clone(),
        };
        if key.watch.is_none() && key.cron.is_none() {
            return;
        }
        self.triggers.next_token += 1;
        let token = self.triggers.next_token;
        let mut tasks = Vec::new();
        if let Some(w) = &key.watch {
            // The app's own log files never trigger it (they change whenever it writes).
            let logs: Vec<PathBuf> = self
                .apps
                .get(name)
                .map(|a| a.procs.as_slice())
                .unwrap_or_default()
                .iter()
                .filter_map(|id| self.procs.get(id))
                .flat_map(|p| [Some(p.out.clone()), Some(p.err.clone()), p.combined.clone()])
                .flatten()
                .collect();
            match start_watch(name, token, w, &key.cwd, logs, self.events.clone()) {
                Ok(t) => tasks.push(t),
                Err(e) => crate::report!("cohort: {name}: cannot watch files: {e}"),
            }
        }
        if let Some(pattern) = &key.cron {
            match crate::config::triggers::parse_cron(pattern) {
                Ok(cron) => tasks.push(start_cron(name, token, cron, self.events.clone())),
                Err(e) => crate::report!("cohort: {name}: cron_restart {e}"),
            }
        }
        self.triggers
            .apps
            .insert(name.to_string(), ArmedApp { key, token, tasks });
    }

    /// A watch or cron task of app `app` fired.
    pub(super) fn on_trigger(&mut self, app: &str, token: u64, reason: RestartReason) {
        if self.shutting_down || self.triggers.apps.get(app).map(|a| a.token) != Some(token) {
            return;
        }
        let all: Vec<u32> = self
            .apps
            .get(app)
            .map(|a| a.procs.clone())
            .unwrap_or_default();
        let ended: Vec<u32> = all
            .iter()
            .copied()
            .filter(|id| reason == RestartReason::Cron && self.ended(*id))
            .collect();
        let ids: Vec<u32> = all.into_iter().filter(|id| self.serving(*id)).collect();
        if !ended.is_empty() {
            crate::report!(
                "cohort: {app}: cron_restart tick: starting {} ended process(es)",
                ended.len()
            );
            for id in ended {
                let _ = self.restart_for(id, reason);
            }
        }
        if ids.is_empty() {
            return;
        }
        crate::report!(
            "cohort: {app}: {} ({} process(es))",
            match reason {
                RestartReason::Watch => "files changed: restarting",
                RestartReason::Cron => "cron_restart tick: restarting",
                _ => "restarting",
            },
            ids.len()
        );
        self.restart_serving(ids, reason);
    }

    /// The memory tick: every process above its app's max_memory_restart is restarted (cluster:
    /// reloaded, so its slot keeps serving).
    pub(super) fn check_memory(&mut self) {
        let mut over = Vec::new();
        for p in self.procs.values() {
            let Some(limit) = self
                .apps
                .get(&p.app)
                .and_then(|a| a.spec.max_memory_restart)
            else {
                continue;
            };
            let Some(pid) = p.pid else { continue };
            if !p.ready || !self.serving(p.id) {
                continue;
            }
            if let Some(rss) = resident_bytes(pid) {
                if rss > limit {
                    crate::report!(
                        "cohort: {}:{} (pid {pid}) uses {:.1} MB, above max_memory_restart ({:.1} MB): restarting",
                        p.app,
                        p.instance,
                        rss as f64 / 1048576.0,
                        limit as f64 / 1048576.0
                    );
                    over.push(p.id);
                }
            }
        }
        if !over.is_empty() {
            self.restart_serving(over, RestartReason::Memory);
        }
    }

    /// Process `id` runs, is meant to, and no restart or reload of it is under way.
    fn serving(&self, id: u32) -> bool {
        self.procs.get(&id).is_some_and(|p| {
            p.pid.is_some()
                && p.want == super::table::Want::Run
                && matches!(p.status, Status::Online | Status::Launching)
                && p.retiring.is_empty()
        }) && !self.reloading(id)
    }

    /// Whether process `id` is not running and nothing is about to start it (stopped, exited with
    /// autorestart off, errored): a cron tick starts it again, as PM2's (the periodic-job pattern:
    /// `cron_restart` with `autorestart: false`).
    fn ended(&self, id: u32) -> bool {
        self.procs.get(&id).is_some_and(|p| {
            p.pid.is_none()
                && p.want == super::table::Want::Stop
                && matches!(p.status, Status::Stopped | Status::Errored)
        })
    }

    /// Restarts processes for `reason`: cluster ones are reloaded (one slot at a time), fork ones
    /// restart. Nobody waits for the answer.
    fn restart_serving(&mut self, ids: Vec<u32>, reason: RestartReason) {
        let (cluster, fork): (Vec<u32>, Vec<u32>) = ids.into_iter().partition(|id| {
            self.procs
                .get(id)
                .and_then(|p| self.apps.get(&p.app))
                .is_some_and(|a| a.spec.exec_mode == ExecMode::Cluster)
        });
        for id in fork {
            let _ = self.restart_for(id, reason);
        }
        if !cluster.is_empty() {
            let (reply, _) = tokio::sync::oneshot::channel();
            self.reload_for(cluster, reason, reply);
        }
    }
}

/// Resident memory of `pid` in bytes, from /proc/<pid>/statm.
fn resident_bytes(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).unwrap_or(4096))
}

/// A task that sends a cron Trigger at every tick of `cron` (local time, as PM2), never at once.
fn start_cron(
    name: &str,
    token: u64,
    cron: croner::Cron,
    events: mpsc::UnboundedSender<Event>,
) -> AbortHandle {
    let app = name.to_string();
    tokio::spawn(async move {
        loop {
            let now = chrono::Local::now();
            let Ok(next) = cron.find_next_occurrence(&now, false) else {
                crate::report!("cohort: {app}: cron_restart has no next occurrence; it stops");
                return;
            };
            let wait = (next - now).to_std().unwrap_or(Duration::ZERO);
            tokio::time::sleep(wait).await;
            let ev = Event::Trigger {
                app: app.clone(),
                token,
                reason: RestartReason::Cron,
            };
            if events.send(ev).is_err() {
                return;
            }
            // Past the tick: the next search starts after it.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .abort_handle()
}

/// A task that owns a watcher over the watch's folders (inotify, or polling every
/// `poll_interval_ms` with `watch_options.usePolling`; each folder added without recursion,
/// skipping ignored ones, new folders added as they appear) and sends a watch Trigger once the
/// changes of a burst settle for `delay_ms`.
fn start_watch(
    name: &str,
    token: u64,
    w: &WatchSpec,
    cwd: &Path,
    logs: Vec<PathBuf>,
    events: mpsc::UnboundedSender<Event>,
) -> notify::Result<AbortHandle> {
    use notify::EventKind;
    let ignore = std::sync::Arc::new(Ignore::new(&w.ignore));
    let base = cwd.to_path_buf();
    let (tx, mut rx) = mpsc::unbounded_channel::<notify::Event>();
    let filter = ignore.clone();
    let filter_base = base.clone();
    let handler = move |res: notify::Result<notify::Event>| {
        let Ok(ev) = res else { return };
        if matches!(ev.kind, EventKind::Access(_) | EventKind::Other) {
            return;
        }
        let relevant = ev
            .paths
            .iter()
            .any(|p| !filter.is_ignored(&filter_base, p) && !logs.contains(p));
        if relevant {
            let _ = tx.send(ev);
        }
    };
    let mut watcher: Box<dyn notify::Watcher + Send> = match w.poll_interval_ms {
        Some(ms) => Box::new(notify::PollWatcher::new(
            handler,
            notify::Config::default().with_poll_interval(Duration::from_millis(ms)),
        )?),
        None => Box::new(notify::recommended_watcher(handler)?),
    };
    let follow = w.follow_symlinks;
    let mut added = 0usize;
    for root in &w.paths {
        add_tree(watcher.as_mut(), root, &ignore, &base, follow, &mut added);
    }
    if added == 0 {
        return Err(notify::Error::generic(&format!(
            "nothing to watch at {}",
            w.paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let app = name.to_string();
    let delay = Duration::from_millis(w.delay_ms);
    let task = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            // Let the burst settle: every change inside the delay restarts the wait.
            loop {
                match tokio::time::timeout(delay, rx.recv()).await {
                    Ok(Some(ev)) => batch.push(ev),
                    Ok(None) => return,
                    Err(_) => break,
                }
                if batch.len() > 10_000 {
                    break;
                }
            }
            for ev in &batch {
                if matches!(ev.kind, EventKind::Create(_)) {
                    for p in &ev.paths {
                        if p.is_dir() {
                            add_tree(watcher.as_mut(), p, &ignore, &base, follow, &mut 0);
                        }
                    }
                }
            }
            let ev = Event::Trigger {
                app: app.clone(),
                token,
                reason: RestartReason::Watch,
            };
            if events.send(ev).is_err() {
                return;
            }
        }
    });
    Ok(task.abort_handle())
}

/// Watches `root` and every folder under it that is not ignored (symlinked folders only with
/// `follow`, each real folder once, so a link loop ends).
fn add_tree(
    watcher: &mut dyn notify::Watcher,
    root: &Path,
    ignore: &Ignore,
    base: &Path,
    follow: bool,
    added: &mut usize,
) {
    use notify::RecursiveMode;
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if *added >= MAX_WATCHED_DIRS {
            crate::report!(
                "cohort: watching stops at {MAX_WATCHED_DIRS} folders (add big folders to ignore_watch)"
            );
            return;
        }
        if dir != root && ignore.is_ignored(base, &dir) {
            continue;
        }
        if follow && !seen.insert(std::fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone())) {
            continue;
        }
        if watcher.watch(&dir, RecursiveMode::NonRecursive).is_err() {
            continue;
        }
        *added += 1;
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let is_dir = match e.file_type() {
                Ok(t) if t.is_symlink() => follow && e.path().is_dir(),
                Ok(t) => t.is_dir(),
                Err(_) => false,
            };
            if is_dir {
                stack.push(e.path());
            }
        }
    }
}
