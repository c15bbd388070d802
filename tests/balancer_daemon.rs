//! A balancer run by the daemon from a config file, in front of a cluster app that it names with
//! `app:NAME`: listed with mode "balancer", its upstream resolved to the app's port and shown by
//! `describe`, and `cohort reload edge` under load (keep-alive and new-connection clients at once)
//! fails no request — the daemon holds the listening socket while the old proxy drains. The app
//! behind it is reloaded under the same load, through the balancer, without a failure either.

mod common;

use common::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

/// Waits until the balancer process of `name` is a new one (not `old`) and online.
fn wait_new_pid(c: &Cohort, name: &str, old: i32) -> i32 {
    let mut pid = old;
    let ok = wait_until(T, || {
        let row = c.proc(name);
        pid = row["pid"].as_i64().unwrap_or(0) as i32;
        pid != old && pid > 0 && row["status"] == "online"
    });
    assert!(ok, "{name} was not replaced: {}", c.proc(name));
    pid
}

#[test]
fn balancer_from_a_config_reloads_under_load_without_a_failure() {
    let c = Cohort::new();
    let app_port = free_port();
    let edge_port = free_port();
    let config = c.write(
        "edge.toml",
        &format!(
            r#"[[apps]]
name = "api"
script = "{script}"
instances = 2
exec_mode = "cluster"

[apps.env]
PORT = "{app_port}"

[[balancers]]
name = "edge"
listen = "127.0.0.1:{edge_port}"
upstreams = ["app:api"]
access_log = false
workers = 2
"#,
            script = cluster_fixture("http_app.js")
        ),
    );
    c.ok(&["start", config.to_str().unwrap()]);
    let edge = c.wait_status("edge", "online", T);
    assert_eq!(edge["mode"], "balancer", "{edge}");
    wait_online(&c, "api", 2, T);
    wait_serving(edge_port, T);

    // `app:api` became the app's address, and describe shows it up.
    let described = c.ok(&["describe", "edge"]).stdout;
    assert!(
        described.contains(&format!(":{app_port}")) && described.contains(" up "),
        "{described}"
    );

    let keepalive = Load::start(edge_port, Mode::KeepAlive, 4);
    let fresh = Load::start(edge_port, Mode::NewConn, 2);
    let mut pid = c.pid("edge");
    for reload in 0..2 {
        keepalive.wait_more(100, T);
        fresh.wait_more(20, T);
        c.ok(&["reload", "edge"]);
        pid = wait_new_pid(&c, "edge", pid);
        keepalive.wait_more(100, T);
        fresh.wait_more(20, T);
        // Checked per reload, so a failure names the step that caused it.
        assert_eq!(
            (keepalive.failed(), fresh.failed()),
            (0, 0),
            "failed requests (keep-alive, new-connection) during balancer reload {}",
            reload + 1
        );
    }
    // The app behind the balancer, reloaded under the same load.
    c.ok(&["reload", "api"]);
    wait_online(&c, "api", 2, T);
    keepalive.wait_more(100, T);
    fresh.wait_more(20, T);

    keepalive
        .finish()
        .assert_no_failure("2 balancer reloads + 1 app reload, 4 keep-alive clients");
    fresh
        .finish()
        .assert_no_failure("2 balancer reloads + 1 app reload, 2 new-connection clients");
}
