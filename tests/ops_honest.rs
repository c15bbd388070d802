//! Honest answers and environment updates, with the real binary: `start` exits non-zero naming
//! the address as the app wrote it and who holds it; an errored app lets go of its port; `reload`
//! of an app whose workers crash returns and says what failed; `--update-env` and
//! `restart CONFIG --env NAME` change the environment processes get.

mod common;

use common::*;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

/// `cohort env <id>` as (key, value) lines.
fn env_of(c: &Cohort, id: u64) -> String {
    c.ok(&["env", &id.to_string()]).stdout
}

#[test]
fn start_fails_on_a_taken_port_naming_the_address_and_its_holder() {
    require_tool("node", "nodejs");
    let c = Cohort::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let o = c.cmd_env(
        &[
            "start",
            &cluster_fixture("host_app.js"),
            "--name",
            "web",
            "-i",
            "2",
        ],
        &[("PORT", &port.to_string()), ("HOST", "127.0.0.1")],
    );
    for p in c.ls_json() {
        let _ = p; // tracked for cleanup
    }
    assert!(
        !o.success(),
        "start succeeded on a taken port:\n{}{}",
        o.stdout,
        o.stderr
    );
    let addr = format!("127.0.0.1:{port}");
    assert!(o.stderr.contains(&addr), "{}", o.stderr);
    assert!(!o.stderr.contains("null:"), "{}", o.stderr);
    assert!(
        o.stderr
            .contains(&format!("held by pid {}", std::process::id())),
        "{}",
        o.stderr
    );
    c.ok(&["delete", "web"]);
}

#[test]
fn an_errored_app_lets_go_of_its_port() {
    let c = Cohort::new();
    let port = free_port().to_string();
    std::fs::write(c.work.join("crash.sh"), "exit 3\n").unwrap();
    let _ = c.cmd(&["start", "crash.sh", "--port", &port, "--max-restarts", "1"]);
    c.wait_status("crash", "errored", T);
    // The port is free for the next app.
    c.ok(&[
        "start",
        &fixture("hold.sh"),
        "--name",
        "next",
        "--port",
        &port,
    ]);
    c.wait_status("next", "online", T);
}

#[test]
fn start_and_reload_of_a_crashing_cluster_app_return_and_say_what_failed() {
    require_tool("node", "nodejs");
    let c = Cohort::new();
    let e = c.fails(&["start", &fixture("crash.js"), "-i", "2"]);
    assert!(
        e.contains("crash:0") && e.contains("exited with code 1 before it was ready"),
        "{e}"
    );
    let began = Instant::now();
    let o = c.cmd(&["reload", "crash"]);
    let took = began.elapsed();
    assert!(
        !o.success(),
        "reload of a crashing app succeeded:\n{}{}",
        o.stdout,
        o.stderr
    );
    assert!(o.stderr.contains("exited with code 1"), "{}", o.stderr);
    assert!(took < Duration::from_secs(15), "reload took {took:?}");
    c.ok(&["delete", "crash"]);
}

#[test]
fn update_env_and_config_env_change_the_environment() {
    let c = Cohort::new();
    let o = c.cmd_env(
        &["start", &fixture("ticker.js"), "--name", "e"],
        &[("FOO", "one")],
    );
    assert!(o.success(), "{}", o.stderr);
    let id = c.proc("e")["id"].as_u64().unwrap();
    assert!(env_of(&c, id).contains("FOO: one"));
    // A plain restart keeps the environment; --update-env takes the caller's.
    let o = c.cmd_env(&["restart", "e"], &[("FOO", "two")]);
    assert!(o.success(), "{}", o.stderr);
    assert!(env_of(&c, id).contains("FOO: one"));
    let o = c.cmd_env(&["restart", "e", "--update-env"], &[("FOO", "two")]);
    assert!(o.success(), "{}", o.stderr);
    assert!(env_of(&c, id).contains("FOO: two"));
    assert_eq!(c.proc("e")["restart_reason"], "manual");
    let o = c.cmd_env(&["reload", "e", "--update-env"], &[("FOO", "three")]);
    assert!(o.success(), "{}", o.stderr);
    assert!(env_of(&c, id).contains("FOO: three"));
    assert_eq!(c.proc("e")["restart_reason"], "reload");

    // restart CONFIG --env NAME: the file is read again with env_NAME.
    std::fs::write(
        c.work.join("eco.json"),
        format!(
            r#"{{"apps": [{{"name": "cfg", "script": "{}", "env": {{"MODE": "base"}},
                "env_production": {{"MODE": "prod"}}}}]}}"#,
            fixture("ticker.js")
        ),
    )
    .unwrap();
    c.ok(&["start", "eco.json"]);
    let id = c.proc("cfg")["id"].as_u64().unwrap();
    assert!(env_of(&c, id).contains("MODE: base"));
    c.ok(&["restart", "eco.json", "--env", "production"]);
    assert!(env_of(&c, id).contains("MODE: prod"));
    c.ok(&["reload", "eco.json"]);
    assert!(env_of(&c, id).contains("MODE: base"));
    let e = c.fails(&["restart", "e", "--env", "production"]);
    assert!(
        e.contains("--env production applies to a config file"),
        "{e}"
    );
}
