//! `cohort update` replaces the daemon in place (re-exec with its state handed over): under load
//! on a `-i 2` cluster app and a logging fork app, no request fails, no pid or restart count
//! changes, the numbered log lines go on with no gap and no duplicate; a binary that fails its
//! pre-flight leaves the old daemon running and `update` says why.

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

const T: Duration = Duration::from_secs(15);

/// (pid, restarts) of every process, by id.
fn pids_and_restarts(c: &Cohort) -> BTreeMap<u64, (i64, u64)> {
    c.ls_json()
        .iter()
        .map(|r| {
            (
                r["id"].as_u64().unwrap_or(u64::MAX),
                (
                    r["pid"].as_i64().unwrap_or(-1),
                    r["restarts"].as_u64().unwrap_or(u64::MAX),
                ),
            )
        })
        .collect()
}

/// The numbers of the complete `n <i> half-written` lines of `log`, in file order; fails the test
/// on a line cut or glued to another.
fn numbered(log: &str) -> Vec<u64> {
    // The app writes each line in two halves and the daemon writes what it reads as it reads it,
    // so the file may end inside a line that is still being written: only whole lines count.
    let mut out = Vec::new();
    for line in whole_lines(log).lines().filter(|l| l.starts_with("n ")) {
        let n = line
            .strip_prefix("n ")
            .and_then(|r| r.strip_suffix(" half-written"))
            .and_then(|n| n.parse().ok());
        match n {
            Some(n) => out.push(n),
            None => panic!("a broken log line: {line:?}"),
        }
    }
    out
}

/// How many times a daemon took over in place (daemon.log says it once per update; the daemon
/// still answers `ping`).
fn daemon_reexecs(c: &Cohort) -> u64 {
    let out = c.ok(&["ping"]);
    assert!(out.stdout.contains("pong"), "{}", out.stdout);
    std::fs::read_to_string(c.home.join("daemon.log"))
        .unwrap_or_default()
        .matches("took over in place")
        .count() as u64
}

#[test]
fn update_under_load_restarts_nothing_and_loses_no_request_or_line() {
    let c = Cohort::new();
    let (web, logger) = start_web_and_logger(&c, T);
    let daemon = c.daemon_pid().expect("a daemon runs");
    let before = pids_and_restarts(&c);
    let cluster_load = Load::start(web, Mode::NewConn, 2);
    let keepalive_load = Load::start(web, Mode::KeepAlive, 2);
    let fork_load = Load::start(logger, Mode::NewConn, 1);
    cluster_load.wait_more(50, T);
    fork_load.wait_more(50, T);
    let written = || c.metric("cohort_log_lines_written_total").unwrap_or(0.0);
    let written_before = written();
    assert!(
        written_before > 0.0,
        "no log lines counted before the updates"
    );
    let uptimes_before = uptimes(&c);
    for round in 1..=3u64 {
        let out = c.ok(&["update"]);
        assert!(
            out.stdout.contains("updated in place"),
            "round {round}: {}{}",
            out.stdout,
            out.stderr
        );
        assert_eq!(
            daemon_reexecs(&c),
            round,
            "round {round}: no take-over logged"
        );
        assert_eq!(c.daemon_pid(), Some(daemon), "the daemon's pid changed");
        cluster_load.wait_more(50, T);
        keepalive_load.wait_more(50, T);
        fork_load.wait_more(50, T);
    }
    // Their uptimes went on, the time the new image took to start included.
    assert_uptimes_went_on(&c, &uptimes_before, "3 updates in place");
    // The log counters went on from where they were (they used to restart at 0).
    let written_after = written();
    assert!(
        written_after >= written_before,
        "log lines written: {written_before} before the updates, {written_after} after"
    );
    cluster_load
        .finish()
        .assert_no_failure("3 updates in place, cluster -i 2, 2 new-connection clients");
    keepalive_load
        .finish()
        .assert_no_failure("3 updates in place, cluster -i 2, 2 keep-alive clients");
    fork_load
        .finish()
        .assert_no_failure("3 updates in place, fork app, 1 new-connection client");
    assert_eq!(
        pids_and_restarts(&c),
        before,
        "pids or restart counts changed"
    );

    // The log goes on after the updates: every number once, in order, none cut.
    let last = numbered(&c.log("logger", "out"))
        .last()
        .copied()
        .unwrap_or(0);
    let want = last + 200;
    poll("200 more log lines after the updates", T, || {
        numbered(&c.log("logger", "out"))
            .last()
            .is_some_and(|n| *n >= want)
            .then_some(())
    });
    let lines = numbered(&c.log("logger", "out"));
    let expected: Vec<u64> = (1..=lines.len() as u64).collect();
    if lines != expected {
        let bad = lines
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        panic!(
            "log lines not continuous around index {bad}: {:?}",
            &lines[bad.saturating_sub(3)..(bad + 3).min(lines.len())]
        );
    }

    // The new daemon supervises them as before: reload and stop work.
    c.ok(&["reload", "web"]);
    let after = wait_online(&c, "web", 2, T);
    for (instance, pid) in &after {
        assert_ne!(
            Some(*pid as i64),
            before.get(&(*instance as u64)).map(|p| p.0)
        );
    }
    c.ok(&["stop", "all"]);
    for r in c.ls_json() {
        assert_eq!(r["status"], "stopped", "{r}");
    }
}

#[test]
fn a_binary_failing_its_preflight_leaves_the_daemon_running() {
    let c = Cohort::new();
    let (web, _) = start_web_and_logger(&c, T);
    let daemon = c.daemon_pid().expect("a daemon runs");
    let before = pids_and_restarts(&c);
    let bad = c.write(
        "bad-cohort.sh",
        "#!/bin/sh\necho 'this build is broken' >&2\nexit 1\n",
    );
    make_executable(&bad);
    let err = c.fails(&["update", "--binary", &bad.to_string_lossy()]);
    assert!(
        err.contains("pre-flight") && err.contains("this build is broken"),
        "{err}"
    );
    assert_eq!(c.daemon_pid(), Some(daemon));
    assert_eq!(daemon_reexecs(&c), 0);
    assert_eq!(pids_and_restarts(&c), before);
    wait_serving(web, T);

    // A binary that is not there at all: the same.
    let err = c.fails(&["update", "--binary", "/nonexistent/cohort"]);
    assert!(err.contains("/nonexistent/cohort"), "{err}");
    assert_eq!(pids_and_restarts(&c), before);
    let rows: Vec<Value> = c.ls_json();
    assert!(rows.iter().all(|r| r["status"] == "online"), "{rows:?}");
}

#[test]
fn a_binary_that_cannot_take_over_hands_back_to_the_previous_one() {
    // COHORT_TEST_FAIL_TAKEOVER makes the re-executed image fail its take-over (before it touches
    // anything); it then executes the previous binary again with the same state.
    let c = Cohort::new();
    let port = free_port();
    let o = c.cmd_env(
        &["start", &fixture("numbered_server.js"), "--name", "logger"],
        &[
            ("PORT", &port.to_string()),
            ("COHORT_TEST_FAIL_TAKEOVER", "1"),
        ],
    );
    assert!(o.success(), "start failed: {}{}", o.stdout, o.stderr);
    wait_serving(port, T);
    let daemon = c.daemon_pid().expect("a daemon runs");
    let before = pids_and_restarts(&c);
    let load = Load::start(port, Mode::NewConn, 1);
    load.wait_more(20, T);
    let err = c.fails(&["update"]);
    assert!(
        err.contains("could not take over") && err.contains("COHORT_TEST_FAIL_TAKEOVER"),
        "{err}"
    );
    load.wait_more(20, T);
    load.finish()
        .assert_no_failure("an update that fell back to the previous binary, fork app");
    assert_eq!(c.daemon_pid(), Some(daemon));
    assert_eq!(pids_and_restarts(&c), before);
    c.ok(&["restart", "logger"]);
    c.wait_status("logger", "online", T);
}

fn make_executable(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .expect("making the script executable");
}
