//! Autoscaling with the real binary and a real Node app whose requests burn ~5 ms of CPU
//! (tests/fixtures/cluster/burn_app.js), under bounded loopback load: a step load takes the app
//! from 1 to 2 workers within 5 s, a steady load causes at most 2 scale events, the app is back
//! at its minimum soon after the load ends, and no request fails throughout. Config errors too.

mod common;

use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);
/// `scale_down_after` of the test app.
const IDLE: Duration = Duration::from_secs(3);
/// `interval` of the test app.
const INTERVAL: Duration = Duration::from_millis(500);

/// The `autoscale` object of the app's first process in `ls --json`.
fn autoscale(c: &Cohort, name: &str) -> Value {
    c.procs(name)
        .first()
        .map(|p| p["autoscale"].clone())
        .unwrap_or(Value::Null)
}

/// Processes of `name` that are not on their way out.
fn serving(c: &Cohort, name: &str) -> usize {
    c.procs(name)
        .iter()
        .filter(|p| p["status"] == "online")
        .count()
}

fn events(a: &Value) -> u64 {
    a["scale_ups"].as_u64().unwrap_or(0) + a["scale_downs"].as_u64().unwrap_or(0)
}

#[test]
fn a_step_load_scales_up_steady_load_holds_and_idle_returns_to_min() {
    require_tool("node", "nodejs");
    let c = Cohort::new();
    let port = free_port();
    c.write(
        "cohort.toml",
        &format!(
            r#"[[apps]]
name = "burn"
script = "{script}"
port = {port}
instances = {{ min = 1, max = 2, interval = "500ms", cooldown = "1s", scale_down_after = "3s" }}

[apps.env]
PORT = "{port}"
BURN_MS = "5"
"#,
            script = cluster_fixture("burn_app.js")
        ),
    );
    c.ok(&["start", "cohort.toml"]);
    wait_online(&c, "burn", 1, T);
    wait_serving(port, T);
    let a = autoscale(&c, "burn");
    assert_eq!(
        (a["min"].as_u64(), a["max"].as_u64()),
        (Some(1), Some(2)),
        "{a}"
    );
    assert_eq!(a["desired"], 1, "{a}");

    // A light load (one client, a request every 50 ms) runs throughout: no request may fail,
    // through the scale up and the scale down.
    let light = Load::start_paced(port, Mode::KeepAlive, 1, "/", Duration::from_millis(50));
    light.wait_more(5, T);
    // Idle at the minimum: nothing changes.
    assert_eq!(events(&autoscale(&c, "burn")), 0);

    // The step: four clients asking for 5 ms of CPU each, back to back.
    let step = Instant::now();
    let heavy = Load::start_path(port, Mode::KeepAlive, 4, "/burn");
    let up = wait_until(Duration::from_secs(5), || serving(&c, "burn") >= 2);
    let took = step.elapsed();
    let a = autoscale(&c, "burn");
    assert!(
        up,
        "not 2 workers within 5 s of the step: {a}\n{}",
        c.ok(&["describe", "burn"]).stdout
    );
    eprintln!("scaled 1 -> 2 in {took:?} after the step");
    // Both workers serve the heavy load.
    let pids: Vec<i32> = c
        .procs("burn")
        .iter()
        .filter_map(|p| p["pid"].as_i64())
        .map(|p| p as i32)
        .collect();
    heavy.clear_pids();
    for pid in &pids {
        heavy.wait_pid(*pid, T);
    }
    // Steady load for a while: at most 2 scale events in all (the step's up, and one more).
    let steady_end = Instant::now() + Duration::from_secs(6);
    wait_until(Duration::from_secs(7), || Instant::now() >= steady_end);
    let under_load = events(&autoscale(&c, "burn"));
    let describe = c.ok(&["describe", "burn"]).stdout;
    assert!(
        under_load <= 2,
        "{under_load} scale events under a steady load:\n{describe}"
    );
    assert!(
        describe.contains("autoscale") && describe.contains("1 → 2"),
        "{describe}"
    );
    heavy
        .finish()
        .assert_no_failure("heavy load through the scale up");

    // The load ends: back to 1 worker within the idle time, plus up to two intervals (the window
    // in which the load ended, and the one that decides) and a second for the removed worker to
    // drain and stop.
    let ended = Instant::now();
    let deadline = IDLE + 2 * INTERVAL + Duration::from_secs(1);
    let down = wait_until(deadline + Duration::from_secs(5), || {
        c.procs("burn").len() == 1 && serving(&c, "burn") == 1
    });
    let took = ended.elapsed();
    eprintln!("back to 1 worker {took:?} after the load ended");
    assert!(
        down,
        "not back to 1 worker: {}",
        c.ok(&["describe", "burn"]).stdout
    );
    assert!(
        took <= deadline,
        "back to 1 worker after {took:?}, more than {deadline:?}: {}",
        c.ok(&["describe", "burn"]).stdout
    );
    light.wait_more(5, T);
    light.finish().assert_no_failure("light load throughout");
    let log = std::fs::read_to_string(c.home.join("daemon.log")).unwrap_or_default();
    for line in log.lines().filter(|l| l.contains("autoscale")) {
        eprintln!("{line}");
    }
    assert!(
        log.contains("autoscale burn: 1 → 2 workers: up 1")
            && log.contains("autoscale burn: 2 → 1 workers: down 1"),
        "daemon.log lacks the decisions:\n{log}"
    );
    assert!(log.contains("busy") && log.contains("queued"), "{log}");
}

#[test]
fn a_backlog_on_new_connections_scales_up_at_once() {
    require_tool("node", "nodejs");
    let c = Cohort::new();
    let port = free_port();
    // A long cooldown and an unreachable busyness: only the backlog (emergency) can add a worker.
    c.write(
        "cohort.json",
        &serde_json::json!({"apps": [{
            "name": "q",
            "script": cluster_fixture("burn_app.js"),
            "port": port,
            "instances": {"min": 1, "max": 2, "scale_up_busy": 100, "scale_down_busy": 1,
                          "cooldown": "60s", "backlog": 4, "interval": "500ms"},
            "env": {"PORT": port.to_string(), "BURN_MS": "20"}
        }]})
        .to_string(),
    );
    c.ok(&["start", "cohort.json"]);
    wait_online(&c, "q", 1, T);
    wait_serving(port, T);
    let load = Load::start_path(port, Mode::NewConn, 12, "/burn");
    let up = wait_until(Duration::from_secs(5), || serving(&c, "q") >= 2);
    let describe = c.ok(&["describe", "q"]).stdout;
    assert!(up, "no emergency scale up:\n{describe}");
    assert!(describe.contains("backlog"), "{describe}");
    load.finish()
        .assert_no_failure("new connections through an emergency scale up");
}

#[test]
fn config_errors_and_cli_forms() {
    let c = Cohort::new();
    let cases = [
        (
            r#"instances = { min = 3, max = 2 }"#,
            "apps[0].instances: min (3) is above max (2)",
        ),
        (
            r#"instances = { min = 1, max = 4, scale_up_busy = 20, scale_down_busy = 30 }"#,
            "scale_down_busy (30%) must be below scale_up_busy (20%)",
        ),
        (
            r#"instances = { min = 1, max = 4, idle = "3s" }"#,
            "apps[0].instances.idle: unknown autoscaling field",
        ),
        (
            r#"instances = { min = 1, max = 4 }
exec_mode = "fork""#,
            "autoscaling (min/max) needs cluster mode",
        ),
    ];
    for (line, want) in cases {
        c.write(
            "bad.toml",
            &format!(
                "[[apps]]\nname = \"x\"\nscript = \"{}\"\nport = 4999\n{line}\n",
                cluster_fixture("burn_app.js")
            ),
        );
        let err = c.fails(&["start", "bad.toml"]);
        assert!(err.contains(want), "{line}: {err}");
        assert!(err.starts_with("error: "), "{err}");
    }
    // The command line: a range; a fork program cannot take one.
    let err = c.fails(&["start", "sleep", "--name", "s", "-i", "1-max", "--", "100"]);
    assert!(
        err.contains("autoscaling (MIN-MAX) needs cluster mode"),
        "{err}"
    );
    let err = c.fails(&["start", &cluster_fixture("burn_app.js"), "-i", "3-2"]);
    assert!(err.contains("min (3) is above max (2)"), "{err}");
    assert!(c.ls_json().is_empty());
}

#[test]
fn scale_stays_within_the_bounds_of_an_autoscaled_app() {
    require_tool("node", "nodejs");
    let c = Cohort::new();
    let port = free_port();
    let o = c.cmd_env(
        &[
            "start",
            &cluster_fixture("burn_app.js"),
            "--name",
            "r",
            "-i",
            "1-2",
        ],
        &[("PORT", &port.to_string())],
    );
    assert!(o.success(), "{}{}", o.stdout, o.stderr);
    wait_online(&c, "r", 1, T);
    let a = autoscale(&c, "r");
    assert_eq!(a["min"], 1, "{a}");
    assert_eq!(a["mode"], Value::Null);
    assert_eq!(c.procs("r")[0]["mode"], "cluster");
    let err = c.fails(&["scale", "r", "5"]);
    assert!(err.contains("autoscaled between 1 and 2"), "{err}");
    c.ok(&["scale", "r", "2"]);
    wait_online(&c, "r", 2, T);
    assert_eq!(autoscale(&c, "r")["desired"], 2);
}
