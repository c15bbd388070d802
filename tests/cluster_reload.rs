//! Zero-downtime changes of a running cluster app under bounded load, with the real CLI:
//! `cohort reload` (keep-alive and new-connection clients, a naive app and one with its own SIGINT
//! handler) and `cohort scale` (2 → 4 → 1 → 2). Every scenario must fail no request.

mod common;

use common::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

/// Starts `script` as app `name` with `-i n` (plus `extra`) on a free port; waits until every
/// worker answers. Returns the port and (instance, pid) by instance.
fn start(c: &Cohort, name: &str, script: &str, n: usize, extra: &[&str]) -> (u16, Vec<(u32, i32)>) {
    let port = free_port();
    (port, start_cluster(c, name, script, port, n, extra))
}

/// Reloads app `name` under `load`: `reload` returns once the old workers are gone; the new ones
/// (same instance numbers, new pids) all serve afterwards. Returns the new (instance, pid).
fn reload_under(c: &Cohort, name: &str, load: &Load, old: &[(u32, i32)]) -> Vec<(u32, i32)> {
    load.wait_more(50, T);
    let restarts: Vec<u64> = c
        .procs(name)
        .iter()
        .map(|r| r["restarts"].as_u64().unwrap_or(0))
        .collect();
    c.ok(&["reload", name]);
    let new = wait_online(c, name, old.len(), T);
    for (o, n) in old.iter().zip(&new) {
        assert_eq!(o.0, n.0);
        assert_ne!(o.1, n.1, "instance {} was not replaced", o.0);
        assert!(
            !alive(o.1),
            "old worker {} still runs after reload returned",
            o.1
        );
    }
    for (row, before) in c.procs(name).iter().zip(restarts) {
        assert_eq!(row["restarts"], before + 1, "{row}");
    }
    load.clear_pids();
    load.wait_more(50, T);
    let after = load.pids();
    let new_pids: Vec<i32> = new.iter().map(|p| p.1).collect();
    assert!(
        after.keys().all(|p| new_pids.contains(p)),
        "answers from workers that should be gone: {after:?} (new: {new_pids:?})"
    );
    new
}

#[test]
fn reload_under_keepalive_load_fails_no_request() {
    let c = Cohort::new();
    let (port, old) = start(&c, "web", &cluster_fixture("http_app.js"), 2, &[]);
    let load = Load::start(port, Mode::KeepAlive, 4);
    reload_under(&c, "web", &load, &old);
    load.finish()
        .assert_no_failure("reload, naive app, 4 keep-alive clients");
}

#[test]
fn reload_under_new_connection_load_fails_no_request() {
    let c = Cohort::new();
    let (port, old) = start(&c, "web", &cluster_fixture("http_app.js"), 2, &[]);
    let load = Load::start(port, Mode::NewConn, 2);
    let new = reload_under(&c, "web", &load, &old);
    // And once more: the replacements drain as well as the originals did.
    reload_under(&c, "web", &load, &new);
    load.finish()
        .assert_no_failure("2 reloads, naive app, 2 new-connection clients");
}

#[test]
fn reload_runs_the_apps_own_sigint_cleanup() {
    let c = Cohort::new();
    let (port, old) = start(&c, "own", &cluster_fixture("sigint_app.js"), 2, &[]);
    let load = Load::start(port, Mode::NewConn, 2);
    reload_under(&c, "own", &load, &old);
    let report = load.finish();
    report.assert_no_failure("reload, app with its own SIGINT handler, 2 new-connection clients");
    for (instance, pid) in &old {
        let log = std::fs::read_to_string(c.log_path("own", *instance, "out")).unwrap_or_default();
        assert!(
            log.contains(&format!("cleanup started pid {pid}"))
                && log.contains(&format!("cleanup done pid {pid}")),
            "worker {pid}'s own SIGINT handler did not run to its end:\n{log}"
        );
    }
}

#[test]
fn scale_up_and_down_under_load_fails_no_request() {
    let c = Cohort::new();
    let (port, _) = start(&c, "web", &cluster_fixture("http_app.js"), 2, &[]);
    let load = Load::start(port, Mode::NewConn, 2);
    load.wait_more(50, T);
    for (target, n) in [("4", 4), ("1", 1), ("+1", 2)] {
        c.ok(&["scale", "web", target]);
        let procs = wait_online(&c, "web", n, T);
        let instances: Vec<u32> = procs.iter().map(|p| p.0).collect();
        assert_eq!(
            instances,
            (0..n as u32).collect::<Vec<_>>(),
            "after scale {target}"
        );
        // Every worker there now serves, and the load keeps going.
        let pids: Vec<i32> = procs.iter().map(|p| p.1).collect();
        load.clear_pids();
        for pid in &pids {
            load.wait_pid(*pid, T);
        }
        load.wait_more(20, T);
        assert!(
            load.pids().keys().all(|p| pids.contains(p)),
            "answers from removed workers after scale {target}: {:?}",
            load.pids()
        );
    }
    load.finish()
        .assert_no_failure("scale 2 → 4 → 1 → 2, 2 new-connection clients");
}

#[test]
fn scale_under_keepalive_load_fails_no_request() {
    let c = Cohort::new();
    let (port, _) = start(&c, "web", &cluster_fixture("http_app.js"), 2, &[]);
    let load = Load::start(port, Mode::KeepAlive, 4);
    load.wait_more(50, T);
    c.ok(&["scale", "web", "1"]);
    wait_online(&c, "web", 1, T);
    load.wait_more(50, T);
    c.ok(&["scale", "web", "3"]);
    wait_online(&c, "web", 3, T);
    load.wait_more(50, T);
    load.finish()
        .assert_no_failure("scale 2 → 1 → 3, 4 keep-alive clients");
}

#[test]
fn restart_under_load_refuses_and_fails_nothing() {
    // restart stops every worker at once, but the daemon keeps the sockets: connections queue
    // until the new workers accept them, and the old ones drain what they had.
    let c = Cohort::new();
    let (port, old) = start(&c, "web", &cluster_fixture("http_app.js"), 2, &[]);
    let keep = Load::start(port, Mode::KeepAlive, 2);
    let fresh = Load::start(port, Mode::NewConn, 2);
    keep.wait_more(50, T);
    fresh.wait_more(50, T);
    c.ok(&["restart", "web"]);
    let new = wait_online(&c, "web", 2, T);
    assert!(new.iter().zip(&old).all(|(n, o)| n.1 != o.1));
    keep.wait_more(50, T);
    fresh.wait_more(50, T);
    keep.finish()
        .assert_no_failure("restart, 2 keep-alive clients");
    fresh
        .finish()
        .assert_no_failure("restart, 2 new-connection clients");
}
