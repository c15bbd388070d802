//! PM2's readiness and shutdown conventions in cluster mode, with the real CLI: `--wait-ready`
//! (online only after `process.send('ready')`), `--listen-timeout` (online anyway after it), and
//! `--shutdown-with-message` (the app gets the 'shutdown' message instead of a signal).

mod common;

use common::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

fn start(c: &Cohort, name: &str, script: &str, port: u16, extra: &[&str], env: &[(&str, &str)]) {
    let mut args = vec!["start", script, "--name", name, "-i", "2"];
    args.extend_from_slice(extra);
    let port_s = port.to_string();
    let mut vars = vec![("PORT", port_s.as_str())];
    vars.extend_from_slice(env);
    let o = c.cmd_env(&args, &vars);
    assert!(o.success(), "start failed: {}{}", o.stdout, o.stderr);
}

/// With both workers of `name` serving `port`, starts new-connection load and runs `reload`; returns
/// the old (instance, pid), the running load and how long `reload` took.
fn reload_under_load(c: &Cohort, name: &str, port: u16) -> (Vec<(u32, i32)>, Load, Duration) {
    let old = wait_online(c, name, 2, T);
    wait_all_answer(port, &[old[0].1, old[1].1], 500);
    let load = Load::start(port, Mode::NewConn, 2);
    load.wait_more(50, T);
    let started = std::time::Instant::now();
    c.ok(&["reload", name]);
    (old, load, started.elapsed())
}

/// Runs `start` in the background (it answers only once the workers are ready) while polling
/// `ls`; returns every (status, uptime_ms) seen per instance, and checks `start` then succeeded.
fn start_watching(
    c: &Cohort,
    name: &str,
    script: &str,
    port: u16,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Vec<Vec<(String, u64)>> {
    let mut args = vec!["start", script, "--name", name, "-i", "2"];
    args.extend_from_slice(extra);
    let mut cmd = c.command(&args);
    cmd.env("PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = ChildGuard::new(cmd.spawn().expect("cohort start"));
    let seen = statuses_until_online(c, name);
    let status = child.wait_exit(T);
    assert!(status.success(), "cohort start failed: {status}");
    seen
}

/// Polls `ls` until both processes of `name` are online; returns every (status, uptime_ms) seen
/// per instance, in order.
fn statuses_until_online(c: &Cohort, name: &str) -> Vec<Vec<(String, u64)>> {
    let mut seen: Vec<Vec<(String, u64)>> = vec![Vec::new(), Vec::new()];
    let ok = wait_until(T, || {
        let rows = c.procs(name);
        for row in &rows {
            let i = row["instance"].as_u64().unwrap_or(0) as usize;
            if row["pid"].as_i64().is_some() && i < 2 {
                seen[i].push((
                    row["status"].as_str().unwrap_or("").to_string(),
                    row["uptime_ms"].as_u64().unwrap_or(0),
                ));
            }
        }
        rows.len() == 2 && rows.iter().all(|r| r["status"] == "online")
    });
    assert!(ok, "{name} never got online: {:?}", c.procs(name));
    seen
}

#[test]
fn wait_ready_keeps_workers_launching_until_they_say_ready() {
    let c = Cohort::new();
    let port = free_port();
    let seen = start_watching(
        &c,
        "rdy",
        &cluster_fixture("ready_app.js"),
        port,
        &["--wait-ready"],
        &[],
    );
    for (i, s) in seen.iter().enumerate() {
        assert!(
            s.iter().any(|(st, _)| st == "launching"),
            "instance {i} was never seen launching: {s:?}"
        );
        // The first time it is online, it has run for at least the 500 ms it waits before 'ready'.
        let (_, uptime) = s.iter().find(|(st, _)| st == "online").expect("online");
        assert!(
            *uptime >= 500,
            "instance {i} online after {uptime} ms: {s:?}"
        );
        let log = std::fs::read_to_string(c.log_path("rdy", i as u32, "out")).unwrap_or_default();
        assert!(log.contains("sending ready"), "{log}");
    }
    wait_serving(port, T);
}

#[test]
fn listen_timeout_makes_a_silent_worker_online() {
    let c = Cohort::new();
    let port = free_port();
    let seen = start_watching(
        &c,
        "silent",
        &cluster_fixture("ready_app.js"),
        port,
        &["--wait-ready", "--listen-timeout", "1000"],
        &[("READY_AFTER_MS", "never")],
    );
    for (i, s) in seen.iter().enumerate() {
        assert!(s.iter().any(|(st, _)| st == "launching"), "{i}: {s:?}");
        let (_, uptime) = s.iter().find(|(st, _)| st == "online").expect("online");
        assert!(
            *uptime >= 1000,
            "instance {i} online after {uptime} ms: {s:?}"
        );
    }
    wait_serving(port, T);
}

#[test]
fn shutdown_with_message_runs_the_apps_handler_on_reload_and_stop() {
    let c = Cohort::new();
    let port = free_port();
    start(
        &c,
        "msg",
        &cluster_fixture("shutdown_app.js"),
        port,
        &["--shutdown-with-message", "--kill-timeout", "8000"],
        &[],
    );
    let (old, load, took) = reload_under_load(&c, "msg", port);
    // Well before the 8 s kill timeout: the workers stopped on the message, not by SIGKILL.
    assert!(took < Duration::from_secs(6), "{took:?}");
    let new = wait_online(&c, "msg", 2, T);
    load.wait_more(50, T);
    load.finish()
        .assert_no_failure("reload with shutdown_with_message, 2 new-connection clients");
    for (instance, pid) in &old {
        let log = std::fs::read_to_string(c.log_path("msg", *instance, "out")).unwrap_or_default();
        assert!(
            log.contains(&format!("pid {pid} got the shutdown message"))
                && log.contains(&format!("pid {pid} closed, exiting")),
            "old worker {pid} did not get/handle 'shutdown':\n{log}"
        );
    }
    let started = std::time::Instant::now();
    c.ok(&["stop", "msg"]);
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    for (instance, pid) in &new {
        let log = std::fs::read_to_string(c.log_path("msg", *instance, "out")).unwrap_or_default();
        assert!(
            log.contains(&format!("pid {pid} got the shutdown message")),
            "worker {pid} did not get 'shutdown' on stop:\n{log}"
        );
    }
    let d: serde_json::Value =
        serde_json::from_str(&c.ok(&["describe", "msg", "--json"]).stdout).expect("describe json");
    for p in d.as_array().expect("array") {
        assert_eq!(p["last_exit_code"], 0, "{p}");
    }
}

#[test]
fn reload_waits_for_each_new_worker_to_be_ready() {
    let c = Cohort::new();
    let port = free_port();
    start(
        &c,
        "rdy",
        &cluster_fixture("ready_app.js"),
        port,
        &["--wait-ready"],
        &[],
    );
    let (_old, load, took) = reload_under_load(&c, "rdy", port);
    // One slot at a time, each new worker 'ready' only 500 ms after it listens.
    assert!(
        took >= Duration::from_millis(1000),
        "reload took {took:?}: it did not wait for 'ready'"
    );
    let new = wait_online(&c, "rdy", 2, T);
    for (instance, pid) in &new {
        let log = std::fs::read_to_string(c.log_path("rdy", *instance, "out")).unwrap_or_default();
        assert!(log.contains(&format!("pid {pid} sending ready")), "{log}");
    }
    load.wait_more(50, T);
    load.finish()
        .assert_no_failure("reload with wait_ready, 2 new-connection clients");
}
