//! Readiness and liveness probes (issue 15): a liveness failure reloads one cluster worker with
//! no failed request; a worker failing readiness gets no new connections until it passes again;
//! TCP and exec probes of a fork app (a hanging exec is killed); config errors name the app and
//! field; `start` and `cohort run`'s /readyz wait for readiness; a balancer answers 503 while its
//! `app:NAME` is not ready at all.

mod common;

use common::*;
use serde_json::Value;
use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(20);

fn app_js() -> String {
    fixture("probes/app.js")
}

/// The row of instance `i` of app `name`.
fn row(c: &Cohort, name: &str, i: u64) -> Value {
    c.procs(name)
        .into_iter()
        .find(|p| p["instance"] == i)
        .unwrap_or(Value::Null)
}

/// Waits until instance `i` of `name` has `ready` = `want` in ls --json; returns the row.
fn wait_ready(c: &Cohort, name: &str, i: u64, want: bool, timeout: Duration) -> Value {
    let mut last = Value::Null;
    let ok = wait_until(timeout, || {
        last = row(c, name, i);
        last["ready"] == want
    });
    assert!(
        ok,
        "{name}:{i} did not get ready={want} within {timeout:?}: {last}"
    );
    last
}

/// Who answers `n` GETs of `/` on new connections: pid → count.
fn answers(port: u16, n: usize) -> HashMap<i32, usize> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        let r = get(port, "/").unwrap_or_else(|e| panic!("GET / on port {port}: {e}"));
        assert_eq!(r.status, 200, "{}", r.body);
        *seen.entry(r.pid().unwrap_or(0)).or_default() += 1;
    }
    seen
}

#[test]
fn a_failing_liveness_probe_reloads_that_worker_with_no_failed_request() {
    let c = Cohort::new();
    let port = free_port();
    let config = c.write(
        "live.toml",
        &format!(
            r#"[[apps]]
name = "web"
script = "{script}"
instances = 2
exec_mode = "cluster"
liveness = {{ http = "/health", interval = "300ms", timeout = "500ms", failure_threshold = 2 }}

[apps.env]
PORT = "{port}"
"#,
            script = app_js()
        ),
    );
    c.ok(&["start", config.to_str().unwrap()]);
    let before = wait_online(&c, "web", 2, T);
    wait_all_answer(port, &[before[0].1, before[1].1], 500);

    let load = Load::start(port, Mode::NewConn, 4);
    load.wait_more(200, T);
    let broke = get(port, "/break").expect("GET /break");
    let victim = broke.pid().expect("/break says its pid");
    let instance = before.iter().find(|(_, pid)| *pid == victim).map(|p| p.0);
    let instance = u64::from(instance.expect("the broken pid is a worker"));
    let t0 = Instant::now();
    let mut last = Value::Null;
    let replaced = wait_until(T, || {
        last = row(&c, "web", instance);
        last["pid"].as_i64().is_some_and(|p| p as i32 != victim)
            && last["status"] == "online"
            && last["restart_reason"] == "probe"
    });
    let took = t0.elapsed();
    assert!(
        replaced,
        "web:{instance} was not reloaded for its probe: {last}"
    );
    eprintln!(
        "liveness: /health broke, worker reloaded {} ms later (interval 300ms x threshold 2 + start-up)",
        took.as_millis()
    );
    // interval × threshold = 0.6 s, plus a Node start-up: well within 10 s on a busy machine.
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let new_pid = last["pid"].as_i64().unwrap_or_default() as i32;
    load.wait_pid(new_pid, T);
    load.wait_more(200, T);
    let report = load.finish();
    report.assert_no_failure("liveness reload under load");
    // The other worker was left alone.
    let other = row(&c, "web", 1 - instance);
    let daemon_log = std::fs::read_to_string(c.home.join("daemon.log")).unwrap_or_default();
    assert_eq!(other["restarts"], 0, "{other}\n{daemon_log}");
    assert!(
        c.log("web", "err")
            .contains("liveness probe failed 2 times in a row")
            || std::fs::read_to_string(c.log_path("web", instance as u32, "err"))
                .unwrap_or_default()
                .contains("liveness probe failed 2 times in a row"),
        "the app's error log says why"
    );
}

#[test]
fn a_worker_failing_readiness_gets_no_new_connections_until_it_passes_again() {
    let c = Cohort::new();
    let port = free_port();
    let dir = c.work.to_string_lossy().to_string();
    let config = c.write(
        "ready.json",
        &serde_json::json!({"apps": [{
            "name": "web", "script": app_js(), "instances": 2, "exec_mode": "cluster",
            "env": {"PORT": port.to_string(), "PROBE_DIR": dir},
            "readiness": {"http": "/ready", "interval": "200ms", "failure_threshold": 1, "success_threshold": 2}
        }]})
        .to_string(),
    );
    c.ok(&["start", config.to_str().unwrap()]);
    // `start` answered once both passed their probes.
    let procs = c.procs("web");
    assert!(procs.iter().all(|p| p["ready"] == true), "{procs:?}");
    let pids: Vec<i32> = instances(&c, "web").iter().map(|p| p.1).collect();
    wait_all_answer(port, &pids, 500);

    c.write("unready-0", "");
    let r = wait_ready(&c, "web", 0, false, T);
    let unready_pid = r["pid"].as_i64().unwrap_or_default() as i32;
    assert_eq!(r["status"], "online", "{r}");
    let ls = c.ok(&["ls"]).stdout;
    assert!(ls.contains("online (not ready)"), "{ls}");
    let d = c.ok(&["describe", "web"]).stdout;
    assert!(
        d.contains("readiness last") && d.contains("HTTP 503"),
        "{d}"
    );
    let seen = answers(port, 60);
    eprintln!("readiness: 60 new connections while web:0 is not ready: {seen:?}");
    assert!(!seen.contains_key(&unready_pid), "{seen:?}");
    // Its own probe still reaches it (through its slot): it gets ready again.
    std::fs::remove_file(c.work.join("unready-0")).expect("removing unready-0");
    wait_ready(&c, "web", 0, true, T);
    wait_all_answer(port, &pids, 500);
    assert_eq!(row(&c, "web", 0)["pid"], unready_pid, "not restarted");
}

/// Pids of our own `sleep` processes whose command line contains `needle` (not the shells
/// around them).
fn processes_with(needle: &str) -> Vec<i32> {
    let me = unsafe { libc::getuid() };
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let owner = std::fs::metadata(format!("/proc/{pid}"))
                .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
                .ok();
            owner == Some(me)
                && comm(*pid) == "sleep"
                && String::from_utf8_lossy(&cmd)
                    .replace('\0', " ")
                    .contains(needle)
        })
        .collect()
}

#[test]
fn tcp_and_exec_probes_of_a_fork_app_and_a_hanging_exec_is_killed() {
    let c = Cohort::new();
    let port = free_port();
    c.write("healthy", "yes\n");
    let config = c.write(
        "fork.toml",
        &format!(
            r#"[[apps]]
name = "api"
script = "{script}"
readiness = {{ tcp = {port}, interval = "200ms" }}
liveness = {{ exec = "cat healthy", interval = "200ms", failure_threshold = 2 }}

[apps.env]
PORT = "{port}"

[[apps]]
name = "hang"
script = "/bin/sleep"
args = ["1000"]
liveness = {{ exec = "sleep 47.25", interval = "300ms", timeout = "150ms", failure_threshold = 1000 }}
"#,
            script = app_js()
        ),
    );
    c.ok(&["start", config.to_str().unwrap()]);
    let api = c.proc("api");
    assert_eq!(api["ready"], true, "{api}");
    assert_eq!(api["mode"], "fork");
    let d: Value = serde_json::from_str(&c.ok(&["describe", "api", "--json"]).stdout).unwrap();
    let probes = &d[0]["probes"];
    assert_eq!(probes[0]["kind"], "readiness", "{probes}");
    assert_eq!(
        probes[0]["check"],
        format!("tcp 127.0.0.1:{port}"),
        "{probes}"
    );
    poll("api's liveness result", T, || {
        let d: Value = serde_json::from_str(&c.ok(&["describe", "api", "--json"]).stdout).ok()?;
        (d[0]["probes"][1]["last"]["message"] == "exit 0: yes").then_some(())
    });

    // A probe from the command line; a path without a port finds the port the process listens on.
    let port2 = free_port();
    let o = c.cmd_env(
        &[
            "start",
            &app_js(),
            "--name",
            "flagged",
            "--readiness-http",
            "/ready",
        ],
        &[("PORT", &port2.to_string())],
    );
    assert!(o.success(), "{}{}", o.stdout, o.stderr);
    let flagged = c.proc("flagged");
    assert_eq!(flagged["ready"], true, "{flagged}");
    let d: Value = serde_json::from_str(&c.ok(&["describe", "flagged", "--json"]).stdout).unwrap();
    assert_eq!(d[0]["probes"][0]["last"]["message"], "HTTP 200", "{d}");

    // The exec probe fails: the fork app restarts, reason probe.
    let old = api["pid"].as_i64().unwrap_or_default();
    std::fs::remove_file(c.work.join("healthy")).expect("removing the health file");
    let mut last = Value::Null;
    let restarted = wait_until(T, || {
        last = c.proc("api");
        last["restart_reason"] == "probe" && last["pid"].as_i64().is_some_and(|p| p != old)
    });
    assert!(restarted, "api was not restarted by its exec probe: {last}");
    c.write("healthy", "yes\n");

    // The hanging exec probe times out, and its `sleep` is killed every time.
    let msg = poll("hang's timed-out probe", T, || {
        let d: Value = serde_json::from_str(&c.ok(&["describe", "hang", "--json"]).stdout).ok()?;
        let m = d[0]["probes"][0]["last"]["message"].as_str()?.to_string();
        m.contains("timed out").then_some(m)
    });
    assert!(msg.contains("150ms"), "{msg}");
    for _ in 0..10 {
        let left = processes_with("sleep 47.25");
        assert!(
            left.len() <= 1,
            "more than one probe command alive: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    c.ok(&["stop", "hang"]);
    let gone = wait_until(Duration::from_secs(5), || {
        processes_with("sleep 47.25").is_empty()
    });
    assert!(
        gone,
        "a probe command outlived its probe: {:?}",
        processes_with("sleep 47.25")
    );
    // No zombie left under the daemon.
    let daemon = c.daemon_pid().expect("the daemon runs");
    let zombies = wait_until(Duration::from_secs(5), || {
        children_of(daemon)
            .iter()
            .all(|pid| stat(*pid).is_none_or(|(state, _)| state != 'Z'))
    });
    assert!(zombies, "zombies under the daemon");
}

/// An exec check whose command leaves a `setsid` child behind (out of its process group): the
/// child ends with the check, with cgroups or (`COHORT_CGROUPS=0`) by its environment marker.
fn a_check_leaves_nothing_behind(env: &[(&str, &str)], needle: &str) {
    let c = Cohort::new();
    let config = c.write(
        "leaky.toml",
        &format!(
            r#"[[apps]]
name = "leaky"
script = "/bin/sleep"
args = ["1000"]
liveness = {{ exec = "setsid sleep {needle} </dev/null >/dev/null 2>&1 & echo started", interval = "200ms", failure_threshold = 1000 }}
"#
        ),
    );
    let o = c.cmd_env(&["start", config.to_str().unwrap_or_default()], env);
    assert!(o.success(), "{}{}", o.stdout, o.stderr);
    poll("the check ran", T, || {
        let d: Value = serde_json::from_str(&c.ok(&["describe", "leaky", "--json"]).stdout).ok()?;
        (d[0]["probes"][0]["last"]["message"] == "exit 0: started").then_some(())
    });
    // Five checks a second, each leaving a child: at most the newest few are alive at any moment
    // (each is ended right after its check), not one per check since the start (ten after 2 s).
    for _ in 0..20 {
        let left = processes_with(&format!("sleep {needle}"));
        assert!(left.len() <= 3, "checks' children pile up: {left:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    c.ok(&["stop", "leaky"]);
    let gone = wait_until(Duration::from_secs(5), || {
        processes_with(&format!("sleep {needle}")).is_empty()
    });
    assert!(
        gone,
        "a check's child outlived its app: {:?}",
        processes_with(&format!("sleep {needle}"))
    );
}

#[test]
fn an_exec_check_that_leaves_a_setsid_child_behind_has_it_killed() {
    a_check_leaves_nothing_behind(&[], "48.125");
}

#[test]
fn an_exec_check_child_is_killed_by_its_marker_without_cgroups() {
    a_check_leaves_nothing_behind(&[("COHORT_CGROUPS", "0")], "48.375");
}

#[test]
fn start_fails_naming_the_readiness_probe_that_never_passes() {
    let c = Cohort::new();
    let config = c.write(
        "never.toml",
        "[[apps]]\nname = \"never\"\nscript = \"/bin/sleep\"\nargs = [\"1000\"]\n\
         readiness = { exec = \"echo no such thing; exit 3\", interval = \"100ms\", timeout = \"300ms\" }\n",
    );
    let t0 = Instant::now();
    let e = c.fails(&["start", config.to_str().unwrap()]);
    // The start window: 3 failures × 100ms + the timeout.
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert!(e.contains("never:0"), "{e}");
    assert!(
        e.contains("readiness probe (exec echo no such thing; exit 3) did not pass"),
        "{e}"
    );
    assert!(e.contains("exit 3: no such thing"), "{e}");
    // It keeps running, not ready (as a pod that is not ready).
    let p = c.proc("never");
    assert_eq!(
        (p["status"].as_str(), p["ready"].as_bool()),
        (Some("online"), Some(false))
    );
}

#[test]
fn probe_config_errors_name_the_app_and_the_field() {
    let c = Cohort::new();
    let cases = [
        (
            "kind.toml",
            "[[apps]]\nname = \"api\"\nscript = \"/bin/sleep 1\"\nreadiness = { grpc = 50051 }\n",
            "kind.toml: apps[0].readiness.grpc (app \"api\"): unknown field",
        ),
        (
            "zero.json",
            r#"{"apps": [{"name": "db", "script": "/bin/sleep 1", "liveness": {"tcp": 6379, "failure_threshold": 0}}]}"#,
            "zero.json: apps[0].liveness.failure_threshold (app \"db\"): expected a whole number of checks, at least 1, got 0",
        ),
        (
            "dur.toml",
            "[[apps]]\nname = \"web\"\nscript = \"/bin/sleep 1\"\nreadiness = { http = \"/h\", interval = \"soon\" }\n",
            "dur.toml: apps[0].readiness.interval (app \"web\"): expected a duration",
        ),
    ];
    for (file, text, want) in cases {
        let path = c.write(file, text);
        let e = c.fails(&["start", path.to_str().unwrap()]);
        assert!(e.contains(want), "{file}: {e}");
        assert!(e.starts_with("error: "), "{e}");
    }
    require_tool("node", "nodejs");
    let js = c.write(
        "ecosystem.config.js",
        "module.exports = { apps: [{ name: 'worker', script: '/bin/sleep 1', readiness: { exec: 'true', timeout: '1 sec' } }] };\n",
    );
    let e = c.fails(&["start", js.to_str().unwrap()]);
    assert!(
        e.contains("apps[0].readiness.timeout (app \"worker\"): expected a duration"),
        "{e}"
    );
    let e = c.fails(&["start", "/bin/sleep", "--readiness-tcp", "nope"]);
    assert!(e.contains("--readiness-tcp"), "{e}");
    assert!(c.ls_json().is_empty(), "nothing started");
}

#[test]
fn run_readyz_waits_for_the_readiness_probe() {
    let c = Cohort::new();
    let port = free_port();
    let health = free_port();
    c.write("unready-0", "");
    let config = c.write(
        "run.json",
        &serde_json::json!({"apps": [{
            "name": "web", "script": app_js(),
            "env": {"PORT": port.to_string(), "PROBE_DIR": c.work.to_string_lossy()},
            // Long enough a start window for the test to look at /readyz while it is not ready.
            "readiness": {"http": "/ready", "interval": "200ms", "failure_threshold": 100}
        }]})
        .to_string(),
    );
    let mut run = ChildGuard::new(
        Command::new(BIN)
            .args(["run", config.to_str().unwrap()])
            .args(["--health", &format!("127.0.0.1:{health}")])
            .env("COHORT_HOME", &c.home)
            .env("COHORT_TCP_MIGRATE_REQ", "never")
            .current_dir(&c.work)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run cohort"),
    );
    // The app serves, but its readiness probe fails: /readyz says so.
    wait_serving(port, T);
    let (code, body) = poll("/readyz answers", T, || {
        let r = get(health, "/readyz").ok()?;
        Some((r.status, r.body))
    });
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("web:0 is online but not ready"), "{body}");
    std::fs::remove_file(c.work.join("unready-0")).expect("removing unready-0");
    let body = poll("/readyz 200", T, || {
        let r = get(health, "/readyz").ok()?;
        (r.status == 200).then_some(r.body)
    });
    assert!(body.contains("ready: 1 processes online"), "{body}");
    run.signal(libc::SIGTERM);
    let st = run.wait_exit(T);
    assert!(st.success(), "{st:?}");
}

#[test]
fn a_balancer_answers_503_while_its_app_is_not_ready_at_all() {
    let c = Cohort::new();
    let port = free_port();
    let edge = free_port();
    let config = c.write(
        "edge.toml",
        &format!(
            r#"[[apps]]
name = "api"
script = "{script}"
instances = 2
exec_mode = "cluster"
readiness = {{ http = "/ready", interval = "200ms", failure_threshold = 1 }}

[apps.env]
PORT = "{port}"
PROBE_DIR = "{dir}"

[[balancers]]
name = "edge"
listen = "127.0.0.1:{edge}"
upstreams = ["app:api"]
access_log = false
"#,
            script = app_js(),
            dir = c.work.display()
        ),
    );
    c.ok(&["start", config.to_str().unwrap()]);
    wait_serving(edge, T);
    let pids: Vec<i32> = instances(&c, "api").iter().map(|p| p.1).collect();
    wait_all_answer(port, &pids, 500);
    // Concurrent requests make the balancer open (and pool) connections, most likely to both
    // workers (the kernel picks a worker per new connection: not certain, so not asserted).
    let load = Load::start(edge, Mode::KeepAlive, 8);
    let both = wait_until(Duration::from_secs(5), || {
        let seen = load.pids();
        seen.contains_key(&pids[0]) && seen.contains_key(&pids[1])
    });
    eprintln!("balancer: pooled connections to both workers: {both}");
    load.finish()
        .assert_no_failure("both workers through the balancer");
    // One worker not ready: the balancer drops its idle connections, new ones go to the other.
    c.write("unready-0", "");
    wait_ready(&c, "api", 0, false, T);
    poll("edge stops reaching api:0", T, || {
        let seen = answers(edge, 10);
        (!seen.contains_key(&pids[0])).then_some(())
    });
    let seen = answers(edge, 40);
    eprintln!("balancer: 40 requests while api:0 is not ready: {seen:?}");
    assert!(!seen.contains_key(&pids[0]), "{seen:?}");
    // Both not ready: 503 at once, not a wait or a 502.
    c.write("unready-1", "");
    wait_ready(&c, "api", 0, false, T);
    wait_ready(&c, "api", 1, false, T);
    let r = poll("edge answers 503", T, || {
        let r = get(edge, "/").ok()?;
        (r.status == 503).then_some(r)
    });
    assert!(r.body.contains("no upstream is ready"), "{}", r.body);
    let t0 = Instant::now();
    let _ = get(edge, "/");
    assert!(t0.elapsed() < Duration::from_secs(1), "503 is quick");
    // One worker ready again: the balancer routes to the app again (steered to that worker).
    std::fs::remove_file(c.work.join("unready-1")).expect("removing unready-1");
    let ready_pid = wait_ready(&c, "api", 1, true, T)["pid"]
        .as_i64()
        .unwrap_or_default() as i32;
    poll("edge answers 200", T, || {
        let r = get(edge, "/").ok()?;
        (r.status == 200).then_some(())
    });
    let seen = answers(edge, 20);
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        vec![ready_pid],
        "{seen:?}"
    );

    // A reload is rolling: the next worker is replaced once the new one passed its probe, so
    // the balancer always has a ready worker (no 503) and no request fails.
    std::fs::remove_file(c.work.join("unready-0")).expect("removing unready-0");
    wait_ready(&c, "api", 0, true, T);
    let load = Load::start(edge, Mode::KeepAlive, 3);
    load.wait_more(100, T);
    let t0 = Instant::now();
    c.ok(&["reload", "api"]);
    eprintln!(
        "balancer: rolling reload with readiness probes took {} ms",
        t0.elapsed().as_millis()
    );
    let after = c.procs("api");
    assert!(
        after
            .iter()
            .all(|p| p["ready"] == true && p["restart_reason"] == "reload"),
        "{after:?}"
    );
    load.wait_more(100, T);
    load.finish()
        .assert_no_failure("rolling reload behind a balancer");
}
