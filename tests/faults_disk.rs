//! A full disk never takes the daemon down: with the whole COHORT_HOME on a 2 MB tmpfs filled by an
//! app logging fast, `ls` answers, a killed app is restarted, `flush` makes logging resume, and
//! daemon.log says a bounded number of lines about it. Needs root (mount); CI runs as root.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

/// A tmpfs mounted for the test, lazily unmounted when dropped (even while files are open).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).expect("creating the mount point");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs at {} failed (this test needs root, as in CI): {}",
            at.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Free bytes on the filesystem holding `p`.
fn free_bytes(p: &Path) -> u64 {
    nix::sys::statvfs::statvfs(p)
        .map(|s| s.blocks_available() * s.fragment_size())
        .unwrap_or(u64::MAX)
}

#[test]
fn a_full_disk_degrades_logging_and_nothing_else() {
    let c = Cohort::new();
    let home = c.root().join("home");
    let _disk = Tmpfs::mount(&home, "2m");
    c.ok(&["start", &fixture("flood.js"), "--name", "flood"]);
    let first = c.pid("flood");

    // The app fills the disk.
    let full = wait_until(T, || free_bytes(&home) < 8192);
    assert!(
        full,
        "the tmpfs never filled: {} bytes free",
        free_bytes(&home)
    );
    // Keep it full a moment: many more writes fail (each must not add a daemon.log line).
    let t = Instant::now();
    assert!(wait_until(T, || t.elapsed() > Duration::from_secs(2)));

    // The daemon answers.
    let t = Instant::now();
    let procs = c.ls_json();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "ls took {:?}",
        t.elapsed()
    );
    assert_eq!(procs.len(), 1);
    assert_eq!(procs[0]["status"], "online");

    // A killed app is restarted.
    signal(first, libc::SIGKILL);
    let restarted = poll("a new pid for flood", T, || {
        let p = c.proc("flood");
        let pid = p["pid"].as_i64()? as i32;
        (pid != first && p["status"] == "online").then_some(pid)
    });
    assert_ne!(restarted, first);

    // flush frees the space: new lines reach the log again.
    c.ok(&["flush", "flood"]);
    let log = c.log_path("flood", 0, "out");
    let resumed = wait_until(T, || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.lines().any(|l| l.starts_with("flood ")))
    });
    assert!(resumed, "no new line in {} after flush", log.display());
    assert_eq!(c.proc("flood")["status"], "online");

    // daemon.log says how many lines were dropped (when writing works again, or when the file of
    // the killed process was closed while failing)…
    let mut dlog = String::new();
    let said = wait_until(T, || {
        dlog = std::fs::read_to_string(home.join("daemon.log")).unwrap_or_default();
        dlog.contains("lines were dropped")
    });
    assert!(
        said,
        "daemon.log never said how many lines were dropped:\n{dlog}"
    );
    // …and holds a bounded number of lines about it (once per episode, repeats held back).
    let about: Vec<&str> = dlog.lines().filter(|l| l.contains("flood-0-")).collect();
    assert!(
        about.len() <= 10,
        "{} daemon.log lines about the full disk:\n{dlog}",
        about.len()
    );
    assert!(dlog.lines().count() <= 30, "daemon.log:\n{dlog}");

    eprintln!("daemon.log after the full disk:\n{dlog}");
    // And the daemon still does everything: stop and kill.
    c.ok(&["stop", "flood"]);
    c.ok(&["kill"]);
}
