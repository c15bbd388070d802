//! Restarts nobody typed, with the real binary: `watch` (a save restarts within 1 s; ignored
//! paths do nothing), `cron_restart` (on the tick, not at start-up, again after resurrect) and
//! `max_memory_restart` (a leaking cluster app is reloaded with no failed request). Each restart
//! shows its `restart_reason` in `ls --json`.

mod common;

use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Waits until the wall clock is 50–400 ms past an even second, so a command run now ends long
/// before the next tick of `*/2 * * * * *` (a start that straddled a tick saw that tick's
/// restart and failed "not at start-up" once in a loaded run).
fn just_after_an_even_second() {
    poll("a moment just after an even second", T, || {
        (50..400).contains(&(now_ms() % 2000)).then_some(())
    });
}

/// `describe NAME --json`, first process.
fn describe(c: &Cohort, name: &str) -> Value {
    let o = c.ok(&["describe", name, "--json"]);
    let v: Value = serde_json::from_str(o.stdout.trim()).expect("describe --json prints JSON");
    v[0].clone()
}

#[test]
fn watch_restarts_on_a_save_and_ignores_ignored_paths() {
    let c = Cohort::new();
    let app = c.work.join("app");
    std::fs::create_dir_all(app.join("logs")).unwrap();
    std::fs::create_dir_all(app.join("node_modules/dep")).unwrap();
    std::fs::create_dir_all(app.join("src")).unwrap();
    std::fs::write(
        app.join("server.js"),
        std::fs::read_to_string(fixture("ticker.js")).unwrap(),
    )
    .unwrap();
    std::fs::write(app.join("src/lib.js"), "module.exports = 1;\n").unwrap();
    std::fs::write(
        app.join("cohort.json"),
        r#"{"apps": [{"name": "w", "script": "server.js", "watch": true,
            "ignore_watch": ["logs", "*.tmp"], "watch_delay": 100}]}"#,
    )
    .unwrap();
    c.ok(&["start", "app/cohort.json"]);
    let pid = c.pid("w");
    assert_eq!(c.proc("w")["restart_reason"], Value::Null);

    // Ignored: a log folder, a *.tmp file anywhere, node_modules (always).
    std::fs::write(app.join("logs/app.log"), "line\n").unwrap();
    std::fs::write(app.join("src/cache.tmp"), "x").unwrap();
    std::fs::write(app.join("node_modules/dep/index.js"), "x").unwrap();
    let restarted = wait_until(Duration::from_millis(1500), || c.pid("w") != pid);
    assert!(
        !restarted,
        "a change in an ignored path restarted the app: {:?}",
        c.ls_json()
    );

    // A save of a watched file: restarted within 1 s.
    let saved = now_ms();
    std::fs::write(app.join("src/lib.js"), "module.exports = 2;\n").unwrap();
    let new = poll("the restart after a save", T, || {
        let p = c.pid("w");
        (p != pid).then_some(p)
    });
    c.track(new);
    let d = describe(&c, "w");
    let started = d["started_at"].as_u64().unwrap_or(0);
    assert!(
        started >= saved && started - saved < 1000,
        "restarted {} ms after the save",
        started as i64 - saved as i64
    );
    assert_eq!(d["restart_reason"], "watch", "{d}");
    assert_eq!(d["restarts"], 1, "{d}");
    // A folder created later is watched too (its creation is a change already).
    std::fs::create_dir_all(app.join("src/new")).unwrap();
    poll("a restart after a folder was created", T, || {
        (c.proc("w")["restarts"] == 2).then_some(())
    });
    std::fs::write(app.join("src/new/mod.js"), "1").unwrap();
    poll("a restart after a change in the new folder", T, || {
        (c.proc("w")["restarts"] == 3).then_some(())
    });
}

#[test]
fn watch_false_gives_no_warning() {
    let c = Cohort::new();
    std::fs::write(
        c.work.join("cohort.json"),
        format!(
            r#"{{"apps": [{{"name": "q", "script": "{}", "watch": false}}]}}"#,
            fixture("ticker.js")
        ),
    )
    .unwrap();
    let o = c.ok(&["start", "cohort.json"]);
    assert!(!o.stderr.contains("warning"), "{}", o.stderr);
}

#[test]
fn cron_restart_restarts_on_the_tick_and_after_resurrect() {
    let c = Cohort::new();
    c.ok(&["ping"]);
    just_after_an_even_second();
    c.ok(&[
        "start",
        &fixture("ticker.js"),
        "--name",
        "cr",
        "--cron-restart",
        "*/2 * * * * *",
        // A short start window (min(min_uptime, 1 s)): `start` answers before a tick can come.
        "--min-uptime",
        "100",
    ]);
    // Not at start-up.
    let row = c.proc("cr");
    assert_eq!(row["restarts"], 0, "{row}");
    poll("a cron restart", T, || {
        let r = c.proc("cr");
        (r["restarts"].as_u64() >= Some(1)).then_some(())
    });
    let d = describe(&c, "cr");
    assert_eq!(d["restart_reason"], "cron", "{d}");
    // On the tick: an even second (the stop and start take a few ms).
    let started = d["started_at"].as_u64().unwrap_or(0);
    assert!(
        started % 2000 < 600,
        "restarted {} ms after a tick",
        started % 2000
    );
    assert!(c.cmd(&["describe", "cr"]).stdout.contains("*/2 * * * * *"));

    // After save, kill and resurrect, the schedule runs again.
    c.ok(&["save"]);
    c.ok(&["kill"]);
    c.ok(&["ping"]);
    just_after_an_even_second();
    c.ok(&["resurrect"]);
    assert_eq!(c.proc("cr")["restarts"], 0);
    poll("a cron restart after resurrect", T, || {
        let r = c.proc("cr");
        (r["restarts"].as_u64() >= Some(1) && r["restart_reason"] == "cron").then_some(())
    });
}

#[test]
fn a_bad_cron_pattern_or_memory_size_is_refused() {
    let c = Cohort::new();
    let e = c.fails(&[
        "start",
        &fixture("ticker.js"),
        "--cron-restart",
        "every day",
    ]);
    assert!(e.contains("--cron-restart"), "{e}");
    let e = c.fails(&[
        "start",
        &fixture("ticker.js"),
        "--max-memory-restart",
        "lots",
    ]);
    assert!(e.contains("--max-memory-restart"), "{e}");
}

#[test]
fn a_leaking_cluster_app_is_reloaded_with_no_failed_request() {
    require_tool("node", "nodejs");
    let c = Cohort::new();
    let port = free_port();
    let procs = start_cluster(
        &c,
        "leak",
        &cluster_fixture("leak_app.js"),
        port,
        2,
        &["--max-memory-restart", "120M"],
    );
    // New connections, so both replacements are seen serving (two keep-alive clients can both sit on
    // one worker).
    let load = Load::start(port, Mode::NewConn, 2);
    load.wait_more(50, T);
    let started = Instant::now();
    // Both workers pass the limit and are reloaded, one slot at a time.
    poll(
        "both workers reloaded for memory",
        Duration::from_secs(30),
        || {
            let rows = c.procs("leak");
            rows.iter()
                .all(|r| r["restart_reason"] == "memory" && r["status"] == "online")
                .then_some(())
        },
    );
    let new = wait_online(&c, "leak", 2, T);
    for (old, new) in procs.iter().zip(&new) {
        assert_ne!(old.1, new.1, "instance {} was not replaced", old.0);
        load.wait_pid(new.1, T);
    }
    eprintln!("memory reloads took {:?}", started.elapsed());
    let report = load.finish();
    report.assert_no_failure("memory reload");
    c.ok(&["delete", "leak"]);
}
