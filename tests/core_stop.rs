//! Stopping: kill_signal (SIGINT) to the whole process group, SIGKILL after kill_timeout; apps
//! that handle SIGINT get to clean up; children never outlive their app.

mod common;

use common::*;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

fn describe_line(c: &Cohort, name: &str, key: &str) -> String {
    let d = c.ok(&["describe", name]).stdout;
    d.lines()
        .find(|l| l.trim_start().starts_with(key))
        .unwrap_or_else(|| panic!("no {key:?} in describe:\n{d}"))
        .trim_start()[key.len()..]
        .trim()
        .to_string()
}

#[test]
fn app_ignoring_sigint_is_killed_after_kill_timeout() {
    let c = Cohort::new();
    c.ok(&[
        "start",
        &fixture("stubborn.js"),
        "--name",
        "stub",
        "--kill-timeout",
        "700",
    ]);
    c.wait_log("stub", "out", "ready", T);
    let pid = c.pid("stub");
    let t = Instant::now();
    c.ok(&["stop", "stub"]);
    let took = t.elapsed();
    assert!(!alive(pid), "pid {pid} survived stop");
    assert!(
        took >= Duration::from_millis(650),
        "SIGKILL came before kill_timeout: {took:?}"
    );
    assert!(
        took < Duration::from_millis(3000),
        "stop took {took:?} with kill_timeout 700 ms"
    );
    c.wait_log("stub", "out", "SIGINT ignored", T);
    assert_eq!(describe_line(&c, "stub", "last signal"), "SIGKILL");
    assert_eq!(c.proc("stub")["status"], "stopped");
}

#[test]
fn app_handling_sigint_runs_its_cleanup() {
    let c = Cohort::new();
    c.ok(&[
        "start",
        &fixture("cleanup.js"),
        "--name",
        "clean",
        "--kill-timeout",
        "5000",
    ]);
    c.wait_log("clean", "out", "ready", T);
    let pid = c.pid("clean");
    let t = Instant::now();
    c.ok(&["stop", "clean"]);
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "a clean exit should not wait for kill_timeout"
    );
    assert!(!alive(pid));
    c.wait_log("clean", "out", "cleanup", T);
    assert_eq!(describe_line(&c, "clean", "last exit code"), "0");
    assert_eq!(describe_line(&c, "clean", "last signal"), "-");
    assert_eq!(c.proc("clean")["status"], "stopped");
}

#[test]
fn kill_signal_flag_is_sent_first() {
    let c = Cohort::new();
    // SIGTERM is not handled by cleanup.js, so node dies of it (not of SIGKILL, not via the handler).
    c.ok(&[
        "start",
        &fixture("cleanup.js"),
        "--name",
        "term",
        "--kill-signal",
        "SIGTERM",
        "--kill-timeout",
        "5000",
    ]);
    c.wait_log("term", "out", "ready", T);
    c.ok(&["stop", "term"]);
    assert_eq!(describe_line(&c, "term", "last signal"), "SIGTERM");
    assert!(!c.log("term", "out").contains("cleanup"));
}

#[test]
fn shell_app_with_background_child_leaves_no_orphan() {
    let c = Cohort::new();
    // The background sleep ignores SIGINT (POSIX sh does that for `&` jobs): only the group kill gets it.
    c.ok(&[
        "start",
        "sh -c 'sleep 1000 & sleep 1000'",
        "--name",
        "sh",
        "--kill-timeout",
        "3000",
    ]);
    let pid = c.pid("sh");
    let mut kids = Vec::new();
    assert!(
        wait_until(T, || {
            kids = children_of(pid);
            kids.len() == 2
        }),
        "expected two sleeps under sh {pid}, saw {kids:?}"
    );
    for k in &kids {
        c.track(*k);
    }
    c.ok(&["stop", "sh"]);
    assert!(!alive(pid));
    for k in &kids {
        assert!(
            wait_until(T, || !alive(*k)),
            "child {k} of the stopped app is still running"
        );
    }
}

/// Waits for app `name` to print `child <pid>` and returns that pid (tracked for cleanup).
fn child_pid(c: &Cohort, name: &str) -> i32 {
    let log = c.wait_log(name, "out", "child ", T);
    let child: i32 = log
        .lines()
        .find_map(|l| l.strip_prefix("child ")?.trim().parse().ok())
        .expect("the app prints `child <pid>`");
    c.track(child);
    child
}

/// Starts tests/fixtures/spawner.js (a node app with a `sleep` child) as `sp`; returns the child.
fn start_spawner(c: &Cohort) -> i32 {
    c.ok(&[
        "start",
        &fixture("spawner.js"),
        "--name",
        "sp",
        "--kill-timeout",
        "3000",
    ]);
    child_pid(c, "sp")
}

#[test]
fn node_app_child_is_stopped_with_it() {
    let c = Cohort::new();
    let child = start_spawner(&c);
    assert!(alive(child));
    assert_eq!(comm(child), "sleep");
    c.ok(&["stop", "sp"]);
    assert!(
        wait_until(T, || !alive(child)),
        "the app's child {child} outlived the stop"
    );
}

#[test]
fn restart_leaves_no_orphan_either() {
    let c = Cohort::new();
    let first = start_spawner(&c);
    c.ok(&["restart", "sp"]);
    assert!(
        wait_until(T, || !alive(first)),
        "the first run's child {first} outlived the restart"
    );
    assert_eq!(c.proc("sp")["status"], "online");
}

#[test]
fn a_crash_takes_its_children_down() {
    let c = Cohort::new();
    // sh starts a background sleep, prints its pid, then exits 1: the sleep must not be orphaned.
    c.start_crashing(&[
        "start",
        "sh -c 'sleep 1000 & echo child $!; exit 1'",
        "--name",
        "cr",
        "--no-autorestart",
    ]);
    let child = child_pid(&c, "cr");
    c.wait_status("cr", "stopped", T);
    assert!(
        wait_until(T, || !alive(child)),
        "the crashed app's child {child} is still running"
    );
}

#[test]
fn stop_longer_than_the_client_timeout_is_not_a_hung_daemon() {
    let c = Cohort::new();
    c.ok(&[
        "start",
        &fixture("stubborn.js"),
        "--name",
        "slow",
        "--kill-timeout",
        "1500",
    ]);
    c.wait_log("slow", "out", "ready", T);
    let pid = c.pid("slow");
    let o = c.cmd_env(&["stop", "slow"], &[("COHORT_CLIENT_TIMEOUT_MS", "500")]);
    assert!(
        !o.stderr.contains("not responding"),
        "a busy stop was reported as a hung daemon: {}",
        o.stderr
    );
    assert!(o.success(), "{}", o.stderr);
    assert!(!alive(pid));
}
