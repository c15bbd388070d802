//! An unchanged Express app (express installed from npm by scripts/setup under
//! target/test-deps) in cluster mode: both workers serve, and a reload under keep-alive and
//! new-connection load fails no request.

mod common;

use common::*;
use std::collections::HashSet;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

#[test]
fn unchanged_express_app_in_cluster_mode_reloads_without_failures() {
    let node_modules = require_npm("express");
    let c = Cohort::new();
    // A project folder as users have it: app.js next to its node_modules.
    let app = c.work.join("app.js");
    std::fs::copy(cluster_fixture("express_app.js"), &app).expect("copying the Express app");
    std::os::unix::fs::symlink(&node_modules, c.work.join("node_modules"))
        .expect("linking node_modules");
    let port = free_port();
    let o = c.cmd_env(
        &["start", "app.js", "--name", "exp", "-i", "2"],
        &[("PORT", &port.to_string())],
    );
    assert!(o.success(), "{}{}", o.stdout, o.stderr);
    let old = wait_online(&c, "exp", 2, T);
    wait_serving(port, T);

    // Both workers serve, each with its NODE_APP_INSTANCE.
    let mut seen = HashSet::new();
    let ok = wait_until(T, || {
        let v = get(port, "/").expect("request").json();
        seen.insert((
            v["instance"].as_str().unwrap_or("?").to_string(),
            v["pid"].as_i64().unwrap_or(0) as i32,
        ));
        seen.len() == 2
    });
    assert!(ok, "{seen:?}");
    let want: HashSet<(String, i32)> = old.iter().map(|(i, p)| (i.to_string(), *p)).collect();
    assert_eq!(seen, want);

    let keep = Load::start(port, Mode::KeepAlive, 2);
    let fresh = Load::start(port, Mode::NewConn, 2);
    keep.wait_more(50, T);
    fresh.wait_more(50, T);
    c.ok(&["reload", "exp"]);
    let new = wait_online(&c, "exp", 2, T);
    for (o, n) in old.iter().zip(&new) {
        assert_ne!(o.1, n.1);
        assert!(!alive(o.1), "old worker {} still runs", o.1);
    }
    fresh.clear_pids();
    for (_, pid) in &new {
        fresh.wait_pid(*pid, T);
    }
    keep.wait_more(50, T);
    keep.finish()
        .assert_no_failure("Express reload, 2 keep-alive clients");
    fresh
        .finish()
        .assert_no_failure("Express reload, 2 new-connection clients");
}
