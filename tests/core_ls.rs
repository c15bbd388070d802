//! What `ls`, `ls --json`/`jlist` and `describe` show: the table's columns, the JSON contract of
//! design.md, live cpu/memory readings, and describe's view of how a process runs.

mod common;

use common::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

#[test]
fn ls_table_has_the_pm2_columns() {
    let c = Cohort::new();
    c.ok(&["start", "sleep 1000", "--name", "tab"]);
    let pid = c.pid("tab");
    let out = c.ok(&["ls"]).stdout;
    let header = out
        .lines()
        .find(|l| l.contains("name"))
        .expect("a header row");
    let cols: Vec<&str> = header
        .split('│')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(
        cols,
        ["id", "name", "mode", "pid", "uptime", "↺", "status", "cpu", "memory"]
    );
    let row = out
        .lines()
        .find(|l| l.contains("tab"))
        .expect("a row for tab");
    let cells: Vec<&str> = row
        .split('│')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(cells[0], "0");
    assert_eq!(cells[1], "tab");
    assert_eq!(cells[2], "fork");
    assert_eq!(cells[3], pid.to_string());
    assert_eq!(cells[5], "0");
    assert_eq!(cells[6], "online");
    assert!(
        !out.contains('\x1b'),
        "no colours when stdout is not a terminal"
    );
    // PM2's aliases.
    for alias in ["list", "l", "status"] {
        assert!(c.ok(&[alias]).stdout.contains("tab"), "{alias}");
    }
}

#[test]
fn ls_json_follows_the_contract() {
    let c = Cohort::new();
    c.ok(&["start", "sleep 1000", "--name", "j"]);
    let pid = c.pid("j");
    let all = c.ls_json();
    assert_eq!(all.len(), 1);
    let p = &all[0];
    assert_eq!(p["id"], 0);
    assert_eq!(p["name"], "j");
    assert_eq!(p["instance"], 0);
    assert_eq!(p["pid"], pid);
    assert_eq!(p["status"], "online");
    assert_eq!(p["restarts"], 0);
    assert_eq!(p["mode"], "fork");
    assert!(p["uptime_ms"].is_u64(), "{p}");
    assert!(p["cpu"].is_number(), "{p}");
    assert!(p["memory"].is_u64(), "{p}");
    // Uptime grows.
    let u0 = p["uptime_ms"].as_u64().unwrap_or_default();
    assert!(wait_until(T, || c.proc("j")["uptime_ms"]
        .as_u64()
        .unwrap_or_default()
        > u0 + 100));
    // jlist is the same array.
    let jl: serde_json::Value =
        serde_json::from_str(c.ok(&["jlist"]).stdout.trim()).expect("jlist JSON");
    assert_eq!(jl[0]["pid"], pid);
    // Stopped: pid null, uptime 0.
    c.ok(&["stop", "j"]);
    let p = c.proc("j");
    assert!(p["pid"].is_null(), "{p}");
    assert_eq!(p["uptime_ms"], 0);
    assert_eq!(p["status"], "stopped");
}

#[test]
fn cpu_and_memory_of_a_busy_app_are_sampled() {
    let c = Cohort::new();
    c.ok(&["start", &fixture("busy.js"), "--name", "busy"]);
    let mut last = serde_json::Value::Null;
    let sampled = wait_until(Duration::from_secs(8), || {
        last = c.proc("busy");
        last["cpu"].as_f64().unwrap_or_default() > 5.0
            && last["memory"].as_u64().unwrap_or_default() > 64 << 20
    });
    assert!(
        sampled,
        "cpu/memory of a busy 64 MiB app not reported: {last}"
    );
    // The reading is the resident size the kernel reports (VmRSS), give or take what changed since.
    let pid = last["pid"].as_i64().unwrap_or_default();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_default();
    let mem = last["memory"].as_u64().unwrap_or_default();
    let kernel = rss_kb * 1024;
    assert!(
        mem > kernel / 2 && mem < kernel * 2,
        "memory {mem} vs VmRSS {kernel}"
    );
    let table = c.ok(&["ls"]).stdout;
    assert!(
        table.contains("mb"),
        "the table shows memory in mb: {table}"
    );
}

#[test]
fn describe_shows_how_it_runs() {
    let c = Cohort::new();
    c.write(
        "cohort.toml",
        &format!(
            "[[apps]]\nname = \"d\"\nscript = {:?}\nargs = [\"--flag\"]\nmax_restarts = 5\nenv = {{ FOO = \"1\", BAR = \"2\" }}\n",
            fixture("crash_once.js")
        ),
    );
    // crash_once exits at start-up once: the start says so; the restart policy brings it up.
    c.start_crashing(&["start", "cohort.toml"]);
    c.wait_log("d", "out", "up again", T);
    let p = c.wait_status("d", "online", T);
    let d = c.ok(&["describe", "d"]).stdout;
    let field = |key: &str| -> String {
        d.lines()
            .find(|l| l.trim_start().starts_with(key))
            .unwrap_or_else(|| panic!("describe has no {key:?}:\n{d}"))
            .trim_start()[key.len()..]
            .trim()
            .to_string()
    };
    assert_eq!(field("script"), fixture("crash_once.js"));
    assert_eq!(field("args"), "--flag");
    let work = std::fs::canonicalize(&c.work).expect("canonical");
    assert_eq!(field("cwd"), work.to_string_lossy());
    assert!(field("interpreter ").ends_with("/node"), "{d}");
    let keys = field("env keys");
    assert!(keys.contains("FOO") && keys.contains("BAR"), "{d}");
    assert!(
        !keys.contains("PATH"),
        "only the app's own keys, not the inherited environment: {keys}"
    );
    assert_eq!(
        field("out log"),
        c.log_path("d", 0, "out").to_string_lossy()
    );
    assert_eq!(
        field("err log"),
        c.log_path("d", 0, "err").to_string_lossy()
    );
    assert_eq!(field("restarts"), "1");
    assert_eq!(field("last exit code"), "7");
    assert_eq!(field("pid"), p["pid"].to_string());
    assert_eq!(field("status"), "online");
    // --json gives the same as data.
    let j: serde_json::Value =
        serde_json::from_str(&c.ok(&["describe", "d", "--json"]).stdout).expect("describe --json");
    assert_eq!(j[0]["last_exit_code"], 7);
    assert_eq!(j[0]["restarts"], 1);
    assert_eq!(j[0]["args"], serde_json::json!(["--flag"]));
}
