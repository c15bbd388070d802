//! save / resurrect: dump.json is valid JSON, resurrect brings back the same apps with the same env,
//! cwd and args, and `save` refuses to overwrite a dump with nothing unless forced.

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

fn dump(c: &Cohort) -> Value {
    let text = std::fs::read_to_string(c.home.join("dump.json")).expect("dump.json");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("dump.json is not JSON ({e}): {text}"))
}

#[test]
fn save_kill_resurrect_brings_back_the_same_apps() {
    let c = Cohort::new();
    std::fs::create_dir_all(c.work.join("sub")).expect("mkdir");
    let o = c.cmd_env(
        &[
            "start",
            &fixture("hold.js"),
            "--name",
            "web",
            "--cwd",
            "sub",
            "--",
            "a",
            "b c",
        ],
        &[("SECRET", "42"), ("X", "from-cli")],
    );
    assert!(o.success(), "{}", o.stderr);
    c.ok(&["start", "sleep 1000", "--name", "sl"]);
    c.ok(&["start", "sleep 1000", "--name", "parked"]);
    c.ok(&["stop", "parked"]);
    let before = c.wait_log("web", "out", "{", T);
    let first_line = before.lines().next().unwrap_or_default().to_string();

    let o = c.ok(&["save"]);
    assert!(o.stdout.contains("saved 3 app(s)"), "{}", o.stdout);
    let d = dump(&c);
    let names: Vec<&str> = d["apps"]
        .as_array()
        .expect("apps")
        .iter()
        .filter_map(|a| a["spec"]["name"].as_str())
        .collect();
    assert_eq!(names, vec!["parked", "sl", "web"]);

    let old_pids = [c.pid("web"), c.pid("sl")];
    c.ok(&["kill"]);
    for p in old_pids {
        assert!(!alive(p), "pid {p} survived kill");
    }

    let o = c.ok(&["resurrect"]);
    assert!(o.stdout.contains("resurrected"), "{}", o.stdout);
    let ls = c.ls_json();
    let mut names: Vec<&str> = ls.iter().filter_map(|p| p["name"].as_str()).collect();
    names.sort();
    assert_eq!(names, vec!["parked", "sl", "web"]);
    assert_eq!(c.proc("sl")["status"], "online");
    assert_eq!(c.proc("web")["status"], "online");
    assert_eq!(
        c.proc("parked")["status"],
        "stopped",
        "a stopped app comes back stopped"
    );
    assert_eq!(comm(c.pid("sl")), "sleep");

    // The resurrected web printed the very same line: same args, cwd, and env.
    let after = c.wait_log("web", "out", "}\n{", T);
    let mut lines = after.lines();
    let (a, b) = (
        lines.next().unwrap_or_default(),
        lines.next().unwrap_or_default(),
    );
    let strip_pid = |l: &str| {
        let mut v: Value = serde_json::from_str(l).expect("json line");
        v["pid"] = Value::Null;
        v
    };
    assert_eq!(a, first_line);
    assert_eq!(strip_pid(a), strip_pid(b));
    let v = strip_pid(b);
    assert_eq!(v["SECRET"], "42");
    assert_eq!(v["X"], "from-cli");
    assert_eq!(v["args"], serde_json::json!(["a", "b c"]));
    let id = c.proc("web")["id"].as_i64().expect("id").to_string();
    assert!(c
        .ok(&["env", &id])
        .stdout
        .lines()
        .any(|l| l == "SECRET: 42"));
}

#[test]
fn resurrect_skips_apps_already_running() {
    let c = Cohort::new();
    c.ok(&["start", "sleep 1000", "--name", "s"]);
    c.ok(&["save"]);
    let pid = c.pid("s");
    let o = c.ok(&["resurrect"]);
    assert!(o.stdout.contains("already running"), "{}", o.stdout);
    assert_eq!(c.ls_json().len(), 1);
    assert_eq!(c.pid("s"), pid);
}

#[test]
fn save_with_no_apps_refuses_and_keeps_the_old_dump() {
    let c = Cohort::new();
    c.ok(&["start", "sleep 1000", "--name", "s"]);
    c.ok(&["save"]);
    let old = std::fs::read(c.home.join("dump.json")).expect("dump");
    c.ok(&["delete", "all"]);
    let err = c.fails(&["save"]);
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains("--force"), "should mention --force: {err}");
    assert_eq!(
        std::fs::read(c.home.join("dump.json")).expect("dump"),
        old,
        "the old dump was changed"
    );

    let o = c.ok(&["save", "--force"]);
    assert!(o.stdout.contains("saved 0 app(s)"), "{}", o.stdout);
    assert_eq!(dump(&c)["apps"], serde_json::json!([]));
    let o = c.ok(&["resurrect"]);
    assert!(o.stdout.contains("nothing to resurrect"), "{}", o.stdout);
    assert!(c.ls_json().is_empty());
}

#[test]
fn resurrect_without_a_dump_is_a_clear_error() {
    let c = Cohort::new();
    let o = c.cmd(&["resurrect"]);
    assert!(!o.success(), "{}", o.stdout);
    assert!(o.stderr.starts_with("error: "), "{}", o.stderr);
    assert!(o.stderr.contains("dump.json"), "{}", o.stderr);
}
