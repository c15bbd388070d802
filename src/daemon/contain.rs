//! Nothing escapes a stop: every process an app starts — including children that `setsid` or
//! double-fork out of its process group — ends when the app's process ends (stopped, deleted,
//! restarted, crashed, or `cohort kill`).
//!
//! Each run of a process gets a *cell*, caught two ways:
//! - a cgroup v2 folder `<daemon's cgroup>/cohort-<home>/run-<n>` where cgroup v2 is writable (probed
//!   once at start: create a child cgroup, move a forked probe into it). The child moves itself
//!   into it between fork and exec (daemon::spawn), so every descendant is born inside it and
//!   `cgroup.kill` (or freeze + kill + thaw before kernel 5.14) ends them all at once;
//! - always, an environment marker `COHORT_APP_ID=<home>:<id>:<n>` that descendants inherit. Where
//!   no cgroup could be used, the ended cell's marker is looked for in `/proc/*/environ` of our
//!   own uid's processes, and those are killed (a pass repeats until it finds nothing, so forks
//!   in flight are caught). A descendant that clears its environment escapes this fallback.
//!
//! The main process is stopped as before (its kill_signal to its process group, SIGKILL after
//! kill_timeout); once it has exited, what is left of its cell gets SIGKILL, like systemd's
//! `KillMode=mixed`. Orphans are re-parented to the daemon (a child subreaper) and reaped.
//!
//! The commands of exec checks (probes) get cells too ([`CheckCells`]): each run of a check is one,
//! ended with the check, so a command that leaves a `setsid` child behind does not pile them up.

use crate::home::Home;
use std::collections::HashMap;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The environment variable every process of an app (and its descendants) carries.
pub const MARKER_VAR: &str = "COHORT_APP_ID";

/// Set to `0` to never use cgroups (the environment marker alone then catches descendants).
pub const DISABLE_VAR: &str = "COHORT_CGROUPS";

/// One run of a process: its marker and, when cgroups are used, its cgroup folder.
#[derive(Debug)]
pub struct Cell {
    marker: String,
    cgroup: Option<PathBuf>,
}

/// What a spawn needs for a new run: the marker for its environment and the `cgroup.procs` the
/// child writes itself into (None: no cgroup for this run).
pub struct Prepared {
    pub env: (String, String),
    pub cgroup_procs: Option<OwnedFd>,
    pub cell: Cell,
}

/// Work left after cells ended: markers to look for, cgroup folders to remove once empty.
#[derive(Default)]
struct Pending {
    markers: Vec<String>,
    sweeping: bool,
    /// Cgroups whose members were killed, removed once empty.
    cgroups: Vec<PathBuf>,
}

/// The cells of the running processes, by the pid of their main process.
pub struct Containment {
    /// `<cgroup2 mount>/<our cgroup>/cohort-<home>`, when cgroup v2 is writable here.
    base: Option<PathBuf>,
    /// Identifies this COHORT_HOME in markers.
    tag: String,
    next: u64,
    /// The number of the next check cell, shared by every probe task (markers stay unique).
    next_check: Arc<AtomicU64>,
    cells: HashMap<i32, Cell>,
    pending: Arc<Mutex<Pending>>,
    /// A cell's cgroup could not be created: said once in daemon.log.
    reported: bool,
}

impl Containment {
    /// Probes cgroup v2 (unless disabled with `COHORT_CGROUPS=0`) and says in daemon.log which
    /// way descendants are caught.
    pub fn new(home: &Home) -> Containment {
        let tag = format!(
            "{:012x}",
            xxhash_rust::xxh3::xxh3_64(home.root.as_os_str().as_encoded_bytes()) >> 16
        );
        let disabled = std::env::var(DISABLE_VAR).is_ok_and(|v| v == "0");
        let base = if disabled {
            None
        } else {
            match usable_cgroup_base(&tag) {
                Ok(base) => Some(base),
                Err(why) => {
                    eprintln!(
                        "cohort: no cgroup per process ({why}); descendants of apps are found by their {MARKER_VAR} environment marker"
                    );
                    None
                }
            }
        };
        Containment {
            base,
            tag,
            next: 0,
            next_check: Arc::new(AtomicU64::new(0)),
            cells: HashMap::new(),
            pending: Arc::new(Mutex::new(Pending::default())),
            reported: false,
        }
    }

    /// Whether cells are cgroups (else markers only).
    pub fn uses_cgroups(&self) -> bool {
        self.base.is_some()
    }

    /// A new cell for a run of process `id`.
    pub fn prepare(&mut self, id: u32) -> Prepared {
        self.next += 1;
        let mut cgroup = None;
        let mut procs = None;
        if let Some(base) = &self.base {
            match new_cgroup(base, "run", &mut self.next) {
                Ok((dir, fd)) => {
                    cgroup = Some(dir);
                    procs = Some(fd);
                }
                Err(e) if !self.reported => {
                    self.reported = true;
                    eprintln!(
                        "cohort: cannot create a cgroup in {} ({e}); this run is caught by its environment marker",
                        base.display()
                    );
                }
                Err(_) => {}
            }
        }
        let marker = format!("{}:{id}:{}", self.tag, self.next);
        Prepared {
            env: (MARKER_VAR.to_string(), marker.clone()),
            cgroup_procs: procs,
            cell: Cell { marker, cgroup },
        }
    }

    /// The run's main process started as `pid`.
    pub fn started(&mut self, pid: i32, cell: Cell) {
        self.cells.insert(pid, cell);
    }

    /// A process this daemon did not start in this image (kept across an update): its cell is
    /// found again from its cgroup and its environment marker, and later runs are numbered past it.
    pub fn adopt(&mut self, pid: i32) {
        let wanted = format!("{MARKER_VAR}=");
        let marker = std::fs::read(format!("/proc/{pid}/environ"))
            .ok()
            .and_then(|env| {
                env.split(|b| *b == 0)
                    .find_map(|kv| kv.strip_prefix(wanted.as_bytes()).map(<[u8]>::to_vec))
            })
            .and_then(|m| String::from_utf8(m).ok())
            .filter(|m| m.starts_with(&format!("{}:", self.tag)));
        let cgroup = self.base.as_ref().and_then(|base| {
            let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
            let rel = own.lines().find_map(|l| l.strip_prefix("0::"))?;
            let (parent, run) = rel.rsplit_once('/')?;
            let base_name = base.file_name()?.to_str()?;
            (parent.ends_with(&format!("/{base_name}")) && run.starts_with("run-"))
                .then(|| base.join(run))
        });
        if let Some(n) = marker
            .as_deref()
            .and_then(|m| m.rsplit(':').next()?.parse::<u64>().ok())
        {
            self.next = self.next.max(n);
        }
        if marker.is_some() || cgroup.is_some() {
            let marker = marker.unwrap_or_default();
            self.cells.insert(pid, Cell { marker, cgroup });
        }
    }

    /// The run never started: its (empty) cgroup goes.
    pub fn abandon(&mut self, cell: Cell) {
        self.finish(cell);
    }

    /// The main process `pid` ended: everything left in its cell is killed, the cell removed.
    pub fn ended(&mut self, pid: i32) {
        if let Some(cell) = self.cells.remove(&pid) {
            self.finish(cell);
        }
    }

    fn finish(&mut self, cell: Cell) {
        end_cell(cell, &self.pending);
    }

    /// A handle that makes and ends the cells of exec checks, for the probe tasks.
    pub fn check_cells(&self) -> CheckCells {
        CheckCells {
            base: self.base.clone(),
            tag: self.tag.clone(),
            next: self.next_check.clone(),
            pending: self.pending.clone(),
        }
    }
}

/// Makes a cell for each run of an exec check and ends it when the check ends (cloned into every
/// probe task; the cgroups are `check-<n>` beside the processes' `run-<n>`).
#[derive(Clone)]
pub struct CheckCells {
    base: Option<PathBuf>,
    tag: String,
    next: Arc<AtomicU64>,
    pending: Arc<Mutex<Pending>>,
}

impl CheckCells {
    /// A new cell for one run of a check (a marker only when no cgroup can be made).
    pub fn prepare(&self) -> Prepared {
        let mut n = self.next.fetch_add(1, Ordering::Relaxed);
        let made = self
            .base
            .as_ref()
            .and_then(|base| new_cgroup(base, "check", &mut n).ok());
        let (cgroup, procs) = match made {
            Some((dir, fd)) => (Some(dir), Some(fd)),
            None => (None, None),
        };
        let marker = format!("{}:check:{n}", self.tag);
        Prepared {
            env: (MARKER_VAR.to_string(), marker.clone()),
            cgroup_procs: procs,
            cell: Cell { marker, cgroup },
        }
    }

    /// The check ended: whatever its command left running is killed, the cell removed.
    pub fn end(&self, cell: Cell) {
        end_cell(cell, &self.pending);
    }
}

/// Kills what is left in `cell` (its cgroup, else every process carrying its marker) and removes
/// its cgroup once empty.
fn end_cell(cell: Cell, pending: &Arc<Mutex<Pending>>) {
    match cell.cgroup {
        Some(dir) if kill_cgroup(&dir).is_ok() => remove_when_empty(dir, pending),
        other => {
            if let Some(dir) = other {
                remove_when_empty(dir, pending);
            }
            sweep_marker(cell.marker, pending);
        }
    }
}

/// Queues `marker` for the /proc sweeper (one blocking task at a time, several markers a pass).
fn sweep_marker(marker: String, pending: &Arc<Mutex<Pending>>) {
    if marker.is_empty() {
        return;
    }
    let start = {
        let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
        p.markers.push(marker);
        !std::mem::replace(&mut p.sweeping, true)
    };
    if !start {
        return;
    }
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        // No runtime (unit tests): sweep here.
        sweep_now(pending);
        return;
    };
    let pending = pending.clone();
    rt.spawn_blocking(move || loop {
        let markers = {
            let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
            if p.markers.is_empty() {
                p.sweeping = false;
                return;
            }
            std::mem::take(&mut p.markers)
        };
        kill_marked(&markers);
    });
}

/// Sweeps every queued marker now, on this thread.
fn sweep_now(pending: &Arc<Mutex<Pending>>) {
    let markers = {
        let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
        p.sweeping = false;
        std::mem::take(&mut p.markers)
    };
    if !markers.is_empty() {
        kill_marked(&markers);
    }
}

impl Drop for Containment {
    /// The daemon ends: markers still queued are swept now, and the base cgroup goes if empty
    /// (cells of processes still running are left alone: they outlive a daemon that re-execs).
    fn drop(&mut self) {
        sweep_now(&self.pending);
        // Killed members leave their cgroup within milliseconds: wait for them a little.
        let dirs = std::mem::take(
            &mut self
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .cgroups,
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        for dir in dirs {
            while std::fs::remove_dir(&dir).is_err_and(|e| e.kind() != std::io::ErrorKind::NotFound)
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        if let Some(base) = &self.base {
            let _ = std::fs::remove_dir(base);
        }
    }
}

/// The cgroup v2 mount point and our own cgroup in it, from /proc/self/mountinfo and /proc/self/cgroup.
fn own_cgroup_dir() -> Result<PathBuf, String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
    let mount = mountinfo
        .lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            (right.split(' ').next()? == "cgroup2")
                .then(|| left.split(' ').nth(4).map(PathBuf::from))?
        })
        .ok_or("no cgroup2 file system is mounted")?;
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("reading /proc/self/cgroup: {e}"))?;
    let rel = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("this process is in no cgroup v2")?;
    Ok(mount.join(rel.trim_start_matches('/')))
}

/// `<our cgroup>/cohort-<tag>`, created, after checking a forked process can be moved into a
/// child of it (write access to both `cgroup.procs`, no controller rule in the way).
fn usable_cgroup_base(tag: &str) -> Result<PathBuf, String> {
    let base = own_cgroup_dir()?.join(format!("cohort-{tag}"));
    match std::fs::create_dir(&base) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("creating {}: {e}", base.display())),
    }
    // Cells an earlier daemon of this home left (killed before its apps ended) go once empty;
    // rmdir refuses a cgroup that still holds processes, so running apps keep theirs.
    if let Ok(cells) = std::fs::read_dir(&base) {
        for cell in cells.flatten().filter(|c| c.path().is_dir()) {
            let _ = std::fs::remove_dir(cell.path());
        }
    }
    let probe = base.join(format!("probe-{}", std::process::id()));
    let _ = std::fs::create_dir(&probe);
    let moved = probe_move(&probe);
    let _ = std::fs::remove_dir(&probe);
    match moved {
        Ok(()) => Ok(base),
        Err(e) => {
            let _ = std::fs::remove_dir(&base);
            Err(format!(
                "cannot move a process into {}: {e}",
                probe.display()
            ))
        }
    }
}

/// Forks a child that moves itself into `dir` and reports the result over a pipe.
fn probe_move(dir: &Path) -> Result<(), String> {
    let procs = open_procs(dir).map_err(|e| e.to_string())?;
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| e.to_string())?;
    // SAFETY: the child only calls write and _exit (async-signal-safe) on descriptors opened above.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    if pid == 0 {
        unsafe {
            let ok = libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1) == 1;
            let errno = *libc::__errno_location();
            let code: [u8; 4] = if ok { [0; 4] } else { errno.to_ne_bytes() };
            libc::write(w.as_raw_fd(), code.as_ptr().cast(), 4);
            libc::_exit(0);
        }
    }
    drop(w);
    let mut code = [0u8; 4];
    let got = nix::unistd::read(r.as_raw_fd(), &mut code);
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    match got {
        Ok(4) if code == [0; 4] => Ok(()),
        Ok(4) => Err(std::io::Error::from_raw_os_error(i32::from_ne_bytes(code)).to_string()),
        _ => Err("the probe process said nothing".into()),
    }
}

/// Opens `dir/cgroup.procs` for writing (close-on-exec).
fn open_procs(dir: &Path) -> std::io::Result<OwnedFd> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.procs"))?;
    // SAFETY: into_raw_fd hands us the descriptor std opened (close-on-exec by default).
    Ok(unsafe { OwnedFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(f)) })
}

/// Creates `base/<kind>-<n>` (bumping `n` past folders left by an earlier daemon) and opens its
/// `cgroup.procs`.
fn new_cgroup(base: &Path, kind: &str, n: &mut u64) -> std::io::Result<(PathBuf, OwnedFd)> {
    for _ in 0..1000 {
        let dir = base.join(format!("{kind}-{n}"));
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                return match open_procs(&dir) {
                    Ok(fd) => Ok((dir, fd)),
                    Err(e) => {
                        let _ = std::fs::remove_dir(&dir);
                        Err(e)
                    }
                };
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => *n += 1,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other(
        "too many cgroups left by earlier daemons",
    ))
}

/// SIGKILL to every process in cgroup `dir`: `cgroup.kill` (Linux ≥ 5.14), else freeze, kill each
/// member, thaw (a frozen cgroup cannot fork, so none is missed).
fn kill_cgroup(dir: &Path) -> std::io::Result<()> {
    let write = |file: &str, what: &[u8]| -> std::io::Result<()> {
        std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join(file))?
            .write_all(what)
    };
    if write("cgroup.kill", b"1").is_ok() {
        return Ok(());
    }
    write("cgroup.freeze", b"1")?;
    let members = std::fs::read_to_string(dir.join("cgroup.procs"));
    for pid in members.iter().flat_map(|m| m.lines()) {
        if let Ok(pid) = pid.trim().parse::<i32>() {
            // SAFETY: kill has no memory effects.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    write("cgroup.freeze", b"0")?;
    members.map(|_| ())
}

/// Removes cgroup `dir` once its killed members are gone, polling for up to 10 s on the runtime
/// (without one, or if the daemon ends first, `Containment::drop` finishes the job).
fn remove_when_empty(dir: PathBuf, pending: &Arc<Mutex<Pending>>) {
    if std::fs::remove_dir(&dir).is_ok() {
        return;
    }
    pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .cgroups
        .push(dir.clone());
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let pending = pending.clone();
    rt.spawn(async move {
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            match std::fs::remove_dir(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => continue,
                _ => {
                    let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
                    p.cgroups.retain(|d| d != &dir);
                    return;
                }
            }
        }
        eprintln!(
            "cohort: the cgroup {} still holds processes 10 s after SIGKILL; left in place",
            dir.display()
        );
    });
}

/// SIGKILL to every process of our uid whose environment holds `COHORT_APP_ID=<one of markers>`,
/// pass after pass until one finds none (at most 5).
fn kill_marked(markers: &[String]) {
    let wanted: Vec<Vec<u8>> = markers
        .iter()
        .map(|m| format!("{MARKER_VAR}={m}").into_bytes())
        .collect();
    for _ in 0..5 {
        if kill_marked_once(&wanted) == 0 {
            return;
        }
    }
}

fn kill_marked_once(wanted: &[Vec<u8>]) -> usize {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no effects.
    let uid = unsafe { libc::geteuid() };
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me || entry.metadata().map(|m| m.uid()).ok() != Some(uid) {
            continue;
        }
        let Ok(env) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if env_has(&env, wanted) {
            // SAFETY: kill has no memory effects.
            if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                killed += 1;
            }
        }
    }
    killed
}

/// Whether a NUL-separated environment block holds one of the `wanted` `KEY=value` entries.
fn env_has(env: &[u8], wanted: &[Vec<u8>]) -> bool {
    env.split(|b| *b == 0)
        .any(|kv| wanted.iter().any(|w| kv == w.as_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_match_whole_entries_only() {
        let wanted = vec![b"COHORT_APP_ID=ab:1:2".to_vec()];
        #[rustfmt::skip]
        let cases: &[(&[u8], bool)] = &[
            (b"A=1\0COHORT_APP_ID=ab:1:2\0B=2\0", true),
            (b"COHORT_APP_ID=ab:1:2", true),
            (b"COHORT_APP_ID=ab:1:23\0", false),
            (b"XCOHORT_APP_ID=ab:1:2\0", false),
            (b"A=COHORT_APP_ID=ab:1:2\0", false),
            (b"", false),
        ];
        for (env, want) in cases {
            assert_eq!(
                env_has(env, &wanted),
                *want,
                "{:?}",
                String::from_utf8_lossy(env)
            );
        }
    }
}
