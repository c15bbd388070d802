//! stop / restart / delete / reset by name, by id, `all` and config file; unknown targets are errors
//! that name what was asked for.

mod common;

use common::*;
fn status(c: &Cohort, name: &str) -> String {
    c.proc(name)["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Three sleeps a, b, c (ids 0, 1, 2) with a short kill timeout.
fn three() -> Cohort {
    let c = Cohort::new();
    for n in ["a", "b", "c"] {
        c.ok(&["start", "sleep 1000", "--name", n, "--kill-timeout", "500"]);
    }
    c
}

#[test]
fn stop_by_name_id_and_all() {
    let c = three();
    let pa = c.pid("a");
    let pb = c.pid("b");
    let o = c.ok(&["stop", "a"]);
    assert!(
        o.stdout.contains("stopped"),
        "stop prints the table: {}",
        o.stdout
    );
    assert_eq!(status(&c, "a"), "stopped");
    assert!(c.proc("a")["pid"].is_null());
    assert!(!alive(pa), "stop returned but pid {pa} runs");
    assert_eq!(status(&c, "b"), "online");

    c.ok(&["stop", "1"]);
    assert_eq!(status(&c, "b"), "stopped");
    assert!(!alive(pb));
    assert_eq!(status(&c, "c"), "online");

    let pc = c.pid("c");
    c.ok(&["stop", "all"]);
    assert!(c.ls_json().iter().all(|p| p["status"] == "stopped"));
    assert!(!alive(pc));
    // Stopping what is stopped is fine.
    c.ok(&["stop", "all"]);
}

#[test]
fn restart_by_name_id_and_all() {
    let c = three();
    let pa = c.pid("a");
    c.ok(&["restart", "a"]);
    let a = c.proc("a");
    assert_eq!(a["status"], "online");
    assert_eq!(a["restarts"], 1);
    assert_ne!(
        a["pid"].as_i64(),
        Some(pa as i64),
        "restart kept the old pid"
    );
    assert!(!alive(pa), "the old process of a survived the restart");

    let pb = c.pid("b");
    c.ok(&["restart", "1"]);
    assert_eq!(c.proc("b")["restarts"], 1);
    assert!(!alive(pb));

    // A stopped app starts again on restart.
    c.ok(&["stop", "c"]);
    c.ok(&["restart", "all"]);
    let all = c.ls_json();
    assert!(all.iter().all(|p| p["status"] == "online"), "{all:?}");
    assert_eq!(c.proc("a")["restarts"], 2);
}

#[test]
fn reset_clears_restart_counters() {
    let c = three();
    c.ok(&["restart", "all"]);
    c.ok(&["restart", "b"]);
    assert_eq!(c.proc("b")["restarts"], 2);
    c.ok(&["reset", "b"]);
    assert_eq!(c.proc("b")["restarts"], 0);
    assert_eq!(c.proc("a")["restarts"], 1);
    c.ok(&["reset", "0"]);
    assert_eq!(c.proc("a")["restarts"], 0);
    c.ok(&["reset", "all"]);
    assert!(c.ls_json().iter().all(|p| p["restarts"] == 0));
    assert_eq!(
        status(&c, "c"),
        "online",
        "reset must not touch the process"
    );
}

#[test]
fn delete_by_name_id_and_all() {
    let c = three();
    let pa = c.pid("a");
    c.ok(&["delete", "a"]);
    assert!(c.procs("a").is_empty());
    assert!(!alive(pa), "delete left pid {pa} running");
    c.ok(&["delete", "1"]);
    assert!(c.procs("b").is_empty());
    let pc = c.pid("c");
    c.ok(&["del", "all"]);
    assert!(c.ls_json().is_empty());
    assert!(!alive(pc));
    // Once nothing is left, ids start again from 0 (PM2's pm_id; docs/pm2.md).
    c.ok(&["start", "sleep 1000", "--name", "d"]);
    assert_eq!(c.proc("d")["id"], 0);
}

#[test]
fn config_file_selects_its_apps() {
    let c = Cohort::new();
    c.write(
        "cohort.toml",
        "[[apps]]\nname = \"x\"\nscript = \"sleep 1000\"\nkill_timeout = 500\n\n\
         [[apps]]\nname = \"y\"\nscript = \"sleep 1000\"\nkill_timeout = 500\n",
    );
    c.ok(&["start", "cohort.toml"]);
    c.ok(&["start", "sleep 1000", "--name", "other"]);
    c.ok(&["stop", "cohort.toml"]);
    assert_eq!(status(&c, "x"), "stopped");
    assert_eq!(status(&c, "y"), "stopped");
    assert_eq!(status(&c, "other"), "online");
    c.ok(&["restart", "cohort.toml"]);
    assert_eq!(status(&c, "x"), "online");
    assert_eq!(status(&c, "y"), "online");
    c.ok(&["reset", "cohort.toml"]);
    assert_eq!(c.proc("x")["restarts"], 0);
    c.ok(&["delete", "cohort.toml"]);
    let left: Vec<_> = c.ls_json().iter().map(|p| p["name"].clone()).collect();
    assert_eq!(left, vec!["other"]);
}

#[test]
fn unknown_targets_are_errors_naming_them() {
    let c = three();
    for verb in ["stop", "restart", "delete", "reset", "describe"] {
        let err = c.fails(&[verb, "zzz"]);
        assert!(err.starts_with("error: "), "{verb}: {err}");
        assert!(err.contains("\"zzz\""), "{verb} should name the app: {err}");
        let err = c.fails(&[verb, "42"]);
        assert!(err.contains("42"), "{verb} should name the id: {err}");
    }
    let err = c.fails(&["stop", "missing.config.js"]);
    assert!(err.contains("missing.config.js"), "{err}");
    // Nothing was touched.
    assert!(c
        .ls_json()
        .iter()
        .all(|p| p["status"] == "online" && p["restarts"] == 0));
}
