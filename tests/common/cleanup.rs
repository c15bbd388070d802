//! Leaving no process behind: pids are remembered with their start time and SIGKILLed (with their
//! process group) when the test ends, but only if the pid still names the very process seen (a
//! recycled pid is never hit); helper children are killed and reaped on drop. Nothing is ever
//! killed by name.

use crate::common::poll::try_poll;
use std::process::{Child, ExitStatus};
use std::sync::Mutex;
use std::time::Duration;

/// The state letter of `pid` and its start time in clock ticks since boot (field 22 of
/// /proc/<pid>/stat).
pub fn stat(pid: i32) -> Option<(char, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

/// True when `pid` exists and is not a zombie (kill(pid, 0) alone counts zombies as alive).
pub fn alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let exists = unsafe { libc::kill(pid, 0) } == 0;
    exists && !matches!(stat(pid), Some(('Z', _)) | Some(('X', _)))
}

/// `/proc/<pid>/comm`, trimmed.
pub fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The pids of the children of `pid` (from /proc/<pid>/task/*/children).
pub fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let s = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            out.extend(s.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
        }
    }
    out
}

/// Sends `sig` to `pid` (a process the test started or saw in its own cohort).
pub fn signal(pid: i32, sig: i32) {
    // SAFETY: plain kill(2) on a pid the test owns.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Processes to kill when the test ends, each remembered with its start time.
#[derive(Default)]
pub struct Tracked {
    seen: Mutex<Vec<(i32, u64)>>,
}

impl Tracked {
    /// Remembers `pid` as it is now (nothing when it is already gone).
    pub fn track(&self, pid: i32) {
        if let Some((_, start)) = stat(pid) {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if !seen.contains(&(pid, start)) {
                seen.push((pid, start));
            }
        }
    }

    /// SIGKILLs every remembered process (and its group) that is still the process remembered.
    pub fn kill_all(&self) {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (pid, start) in seen {
            // Same pid and same start time: the very process we saw, not a recycled pid.
            if matches!(stat(pid), Some((_, s)) if s == start) && alive(pid) {
                // App pids lead their own group: the group goes too.
                signal(-pid, libc::SIGKILL);
                signal(pid, libc::SIGKILL);
            }
        }
    }
}

/// A child process the test started, killed and reaped when dropped (pass or panic).
pub struct ChildGuard {
    pub child: Child,
}

impl ChildGuard {
    pub fn new(child: Child) -> ChildGuard {
        ChildGuard { child }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        signal(self.pid(), sig);
    }

    /// Waits until the child exits; fails the test after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = &mut self.child;
        try_poll(timeout, || child.try_wait().ok().flatten())
            .unwrap_or_else(|| panic!("process {} did not exit within {timeout:?}", child.id()))
    }

    /// Kills and reaps the child now.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}
