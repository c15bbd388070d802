//! Cluster-mode helpers on top of `Cohort`: fixtures of tests/fixtures/cluster, waits on
//! `ls --json` until N workers are online, and "every worker answers" checks.

use crate::common::home::{fixture, Cohort};
use crate::common::http::{get, wait_serving};
use crate::common::poll::wait_until;
use std::collections::HashMap;
use std::time::Duration;

/// Absolute path of a file in tests/fixtures/cluster.
pub fn cluster_fixture(name: &str) -> String {
    fixture(&format!("cluster/{name}"))
}

/// (instance, pid) of the running processes of app `name`, sorted by instance.
pub fn instances(c: &Cohort, name: &str) -> Vec<(u32, i32)> {
    let mut v: Vec<(u32, i32)> = c
        .procs(name)
        .iter()
        .filter_map(|p| Some((p["instance"].as_u64()? as u32, p["pid"].as_i64()? as i32)))
        .collect();
    v.sort();
    v
}

/// Waits until app `name` has exactly `n` processes, all online with a pid; returns
/// (instance, pid) sorted by instance.
pub fn wait_online(c: &Cohort, name: &str, n: usize, timeout: Duration) -> Vec<(u32, i32)> {
    let mut last = Vec::new();
    let ok = wait_until(timeout, || {
        last = c.procs(name);
        last.len() == n
            && last
                .iter()
                .all(|p| p["status"] == "online" && p["pid"].as_i64().is_some())
    });
    assert!(
        ok,
        "{name} did not get {n} online processes within {timeout:?}: {last:?}"
    );
    instances(c, name)
}

/// Sends requests on new connections until every pid in `pids` has answered, in rounds of at
/// most `max` requests 20 ms apart, for 10 s at most; fails the test otherwise. For "the new
/// workers serve" checks. (A single budget of `max` answers was spent before a worker that is
/// `online` — from its spawn, as in PM2 — had booted and listened: 500 of 500 went to the other
/// worker and the test failed while steering was right.)
#[track_caller]
pub fn wait_all_answer(port: u16, pids: &[i32], max: usize) {
    let mut seen = HashMap::<i32, usize>::new();
    let mut answered = 0;
    let ok = wait_until(Duration::from_secs(10), || {
        for _ in 0..max {
            if pids.iter().all(|p| seen.contains_key(p)) {
                return true;
            }
            match get(port, "/") {
                Ok(r) => {
                    answered += 1;
                    if let Some(pid) = r.pid() {
                        *seen.entry(pid).or_default() += 1;
                    }
                }
                Err(_) => return false, // not serving yet: poll again
            }
        }
        pids.iter().all(|p| seen.contains_key(p))
    });
    assert!(
        ok,
        "not every one of {pids:?} answered ({answered} answers): {seen:?}; sockets on :{port}:\n{}",
        super::ports::sockets_on(port)
    );
}

/// Starts `script` as app `name` with `-i n` and PORT=`port` (plus `extra` flags); waits until
/// every worker answers. Returns (instance, pid) by instance.
pub fn start_cluster(
    c: &Cohort,
    name: &str,
    script: &str,
    port: u16,
    n: usize,
    extra: &[&str],
) -> Vec<(u32, i32)> {
    let n_s = n.to_string();
    let mut args = vec!["start", script, "--name", name, "-i", &n_s];
    args.extend_from_slice(extra);
    let o = c.cmd_env(&args, &[("PORT", &port.to_string())]);
    assert!(o.success(), "start failed: {}{}", o.stdout, o.stderr);
    let procs = wait_online(c, name, n, Duration::from_secs(10));
    wait_serving(port, Duration::from_secs(10));
    let pids: Vec<i32> = procs.iter().map(|p| p.1).collect();
    wait_all_answer(port, &pids, 500);
    procs
}

/// Starts the `-i 2` cluster app `web` (http_app.js) and the fork app `logger` (numbered_server.js,
/// which serves HTTP and logs numbered lines written in two pieces) on free ports, waits until both
/// serve and the logger has logged; returns (web port, logger port). The setup of the daemon-fault
/// tests (in-place update, daemon death).
#[allow(dead_code)]
pub fn start_web_and_logger(c: &Cohort, timeout: Duration) -> (u16, u16) {
    let web = crate::common::ports::free_port();
    start_cluster(c, "web", &cluster_fixture("http_app.js"), web, 2, &[]);
    let logger = crate::common::ports::free_port();
    let o = c.cmd_env(
        &["start", &fixture("numbered_server.js"), "--name", "logger"],
        &[("PORT", &logger.to_string())],
    );
    assert!(o.success(), "start failed: {}{}", o.stdout, o.stderr);
    wait_serving(logger, timeout);
    c.wait_log("logger", "out", "n 10 half-written", timeout);
    (web, logger)
}

/// The uptime (ms) of every process in `ls --json`, by id, with the instant just after it was read.
#[allow(dead_code)]
pub fn uptimes(c: &Cohort) -> (std::collections::BTreeMap<u64, u64>, std::time::Instant) {
    let rows = c.ls_json();
    let read = std::time::Instant::now();
    let by_id = rows
        .iter()
        .map(|r| {
            (
                r["id"].as_u64().unwrap_or(u64::MAX),
                r["uptime_ms"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    (by_id, read)
}

/// Asserts every process's uptime went on across `what` (a daemon kill, an update in place): read
/// now, each is at least its earlier reading plus the time since that reading (not restarted from
/// the last stored state, not short by the time no daemon ran).
#[allow(dead_code)]
#[track_caller]
pub fn assert_uptimes_went_on(
    c: &Cohort,
    earlier: &(std::collections::BTreeMap<u64, u64>, std::time::Instant),
    what: &str,
) {
    let (before, read) = earlier;
    let since = read.elapsed().as_millis() as u64;
    let (after, _) = uptimes(c);
    for (id, before) in before {
        let after = after.get(id).copied().unwrap_or(0);
        assert!(
            after >= before + since,
            "uptime of process {id} across {what}: {before} ms, then {after} ms {since} ms later"
        );
    }
}
