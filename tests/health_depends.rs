//! depends_on with a real Redis (Debian's redis-server, installed by scripts/setup, started by
//! cohort itself from examples/redis-sessions): Redis → the API (4 workers, sessions in Redis)
//! → a cohort balancer start in that order and stop in reverse; a session made through one
//! worker is seen by all four; killing redis-server makes the API not ready (the balancer
//! answers 503) until cohort has restarted Redis, then it recovers by itself. The sticky
//! alternative (sessions in memory, balancer hashing the session cookie) keeps a client on one
//! worker. Plus the config errors (cycle, unknown name, bad condition), a dependency that never
//! gets ready (start exits non-zero after depends_timeout, naming it), one-shot jobs
//! (`completed_successfully`), and a resurrect that waits for a dependency as a start does.

mod common;

use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

/// The npm packages and Debian tools the example needs (scripts/setup installs them).
fn require_example_deps() -> std::path::PathBuf {
    require_tool("redis-server", "redis-server");
    require_tool("redis-cli", "redis-tools");
    for p in ["express", "express-session", "connect-redis", "redis"] {
        require_npm(p);
    }
    test_node_modules()
}

/// Copies examples/redis-sessions into the test's work folder, with its ports replaced
/// (`ports`: what the example says → what this test uses) and `edit` applied to `config`;
/// node_modules is the one scripts/setup filled.
fn example(c: &Cohort, config: &str, ports: &[(u16, u16)], edit: impl Fn(String) -> String) {
    let node_modules = require_example_deps();
    let src = repo("examples/redis-sessions");
    for f in [
        "app.js",
        "package.json",
        "cohort.toml",
        "cohort-sticky.toml",
        "ecosystem.config.js",
    ] {
        let text = std::fs::read_to_string(src.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        let mut text = replace_ports(&text, ports);
        if f == config {
            text = edit(text);
        }
        // The suite shares a small machine: four Node workers may take seconds to listen, so
        // the API's readiness probe starts later here than in the example (a longer start window).
        text = text
            .replace("initial_delay = \"2s\"", "initial_delay = \"6s\"")
            .replace("initial_delay: '2s'", "initial_delay: '6s'");
        std::fs::write(c.work.join(f), text).expect("writing the example");
    }
    std::os::unix::fs::symlink(&node_modules, c.work.join("node_modules")).expect("node_modules");
}

/// `text` with every number that is one of the `from` ports replaced by its `to`, in one pass:
/// replacing them one after another would also rewrite a new port that contains an old one
/// (3100 → 31017, then 3101 → 31018 made "310187").
fn replace_ports(text: &str, ports: &[(u16, u16)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(|c: char| c.is_ascii_digit()) {
        out.push_str(&rest[..start]);
        let digits = &rest[start..];
        let end = digits
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(digits.len());
        let number = &digits[..end];
        match ports.iter().find(|(from, _)| from.to_string() == number) {
            Some((_, to)) => out.push_str(&to.to_string()),
            None => out.push_str(number),
        }
        rest = &digits[end..];
    }
    out.push_str(rest);
    out
}

#[test]
fn ports_are_replaced_as_whole_numbers_in_one_pass() {
    let ports = [(3100, 31017), (3101, 31018), (6391, 3100)];
    assert_eq!(
        replace_ports("a:3100 b:3101 c:6391 d:31000 e:3100x", &ports),
        "a:31017 b:31018 c:3100 d:31000 e:31017x"
    );
}

/// `describe NAME --json`.
fn describe(c: &Cohort, name: &str) -> Vec<Value> {
    let o = c.ok(&["describe", name, "--json"]);
    serde_json::from_str::<Value>(o.stdout.trim())
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_else(|| panic!("describe --json: {}", o.stdout))
}

fn started_at(d: &Value) -> u64 {
    d["started_at"]
        .as_u64()
        .unwrap_or_else(|| panic!("no started_at: {d}"))
}

/// One GET through a new connection with the session cookie `sid` (if any); returns the response
/// and the cookie it set (if it set one).
fn visit(port: u16, sid: Option<&str>) -> (Response, Option<String>) {
    let extra = sid
        .map(|s| format!("Cookie: sid={s}\r\n"))
        .unwrap_or_default();
    let r = request(port, "GET", "/", &extra, b"");
    let set = r
        .header("set-cookie")
        .and_then(|v| v.split(';').next())
        .and_then(|kv| kv.strip_prefix("sid="))
        .map(str::to_string);
    (r, set)
}

#[test]
fn redis_stack_starts_in_order_shares_sessions_heals_and_stops_in_reverse() {
    let c = Cohort::new();
    let (redis_port, api_port, edge_port) = (free_port(), free_port(), free_port());
    // Redis comes back 10 s after a crash here, long enough to see the API go not ready (its
    // probe: 3 failures 1 s apart).
    example(
        &c,
        "cohort.toml",
        &[(6391, redis_port), (3100, api_port), (8100, edge_port)],
        |t| {
            t.replace(
                "kill_signal = \"SIGTERM\"\n",
                "kill_signal = \"SIGTERM\"\nrestart_delay = \"10s\"\n",
            )
        },
    );
    let o = c.ok(&["start", "cohort.toml"]);
    assert!(
        o.stderr.contains("started redis, api, edge"),
        "{}",
        o.stderr
    );

    // Order: Redis answered PING (its readiness probe) before any API worker started, and every
    // API worker started before the balancer.
    let redis = describe(&c, "redis");
    let api = describe(&c, "api");
    let edge = describe(&c, "edge");
    assert_eq!(api.len(), 4);
    let first_api = api.iter().map(started_at).min().unwrap_or(0);
    let last_api = api.iter().map(started_at).max().unwrap_or(0);
    // The daemon's log is in the order things happened: Redis's probe got PONG, then the API
    // was let through.
    let log = std::fs::read_to_string(c.home.join("daemon.log")).unwrap_or_default();
    let pong = log
        .find("redis:0 (pid")
        .filter(|i| {
            log[*i..]
                .lines()
                .next()
                .is_some_and(|l| l.contains("PONG") && l.contains("ready"))
        })
        .unwrap_or_else(|| panic!("no PONG from Redis's readiness probe in daemon.log:\n{log}"));
    let api_go = log
        .find("api: its dependencies are met; starting it")
        .unwrap_or_else(|| panic!("the API was never let through:\n{log}"));
    assert!(
        pong < api_go,
        "the API started before Redis answered PING:\n{log}"
    );
    assert!(started_at(&redis[0]) < first_api);
    assert!(
        last_api <= started_at(&edge[0]),
        "the balancer started before an API worker"
    );
    assert_eq!(api[0]["depends_on"][0], "redis (ready)");
    assert_eq!(edge[0]["depends_on"][0], "api (started)");
    // The apps themselves found Redis at once (no failed connection before it).
    for i in 0..4 {
        let out = c.log_path("api", i, "out");
        let err = c.log_path("api", i, "err");
        poll("the worker's connect line", T, || {
            std::fs::read_to_string(&out)
                .ok()
                .filter(|t| t.contains("redis: connected"))
        });
        let err = std::fs::read_to_string(err).unwrap_or_default();
        assert!(
            !err.contains("redis:"),
            "api:{i} could not reach Redis at first: {err}"
        );
    }

    // A session made through one worker is seen by every worker (new connections spread over them).
    let (first, sid) = visit(api_port, None);
    assert_eq!(first.status, 200, "{first:?}");
    let sid = sid.expect("the first visit sets the session cookie");
    let creator = first.json()["pid"].as_i64().unwrap_or(0);
    let workers: BTreeSet<i64> = api.iter().filter_map(|d| d["pid"].as_i64()).collect();
    let mut served = BTreeMap::<i64, u32>::new();
    let mut views = 1;
    let all = wait_until(T, || {
        for _ in 0..400 {
            let (r, set) = visit(api_port, Some(&sid));
            assert_eq!(r.status, 200, "{r:?}");
            assert!(
                set.is_none() || set.as_deref() == Some(sid.as_str()),
                "a new session: {r:?}"
            );
            let v = r.json();
            views += 1;
            assert_eq!(v["views"], views, "the session lost a visit: {v}");
            assert_eq!(v["createdBy"], creator, "{v}");
            *served.entry(v["pid"].as_i64().unwrap_or(0)).or_default() += 1;
            if served.keys().copied().collect::<BTreeSet<_>>() == workers {
                return true;
            }
        }
        false
    });
    assert!(
        all,
        "not every worker served the session: {served:?} of {workers:?}"
    );
    // And through the balancer.
    let (r, _) = visit(edge_port, Some(&sid));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["views"], views + 1);

    // kill -9 of redis-server: the API goes not ready, the balancer answers 503 (or 502) ...
    let redis_pid = c.pid("redis");
    let api_pids: Vec<i64> = api.iter().filter_map(|d| d["pid"].as_i64()).collect();
    signal(redis_pid, libc::SIGKILL);
    let mut seen = String::new();
    let unready = wait_until(Duration::from_secs(8), || {
        let ls = c.procs("api");
        let r = request(edge_port, "GET", "/", "", b"");
        seen = format!(
            "balancer {}, api ready {:?}",
            r.status,
            ls.iter().map(|p| p["ready"].clone()).collect::<Vec<_>>()
        );
        ls.iter().all(|p| p["ready"] == false) && matches!(r.status, 502 | 503)
    });
    assert!(unready, "after kill -9 of Redis: {seen}");
    assert_ne!(
        c.proc("redis")["status"],
        "online",
        "Redis was back before the check ended"
    );
    // ... until cohort restarts Redis; then it recovers by itself, with the same API workers.
    let back = wait_until(T, || {
        let ls = c.procs("api");
        ls.len() == 4
            && ls.iter().all(|p| p["ready"] == true)
            && get(edge_port, "/").is_ok_and(|r| r.status == 200)
    });
    assert!(back, "the API did not recover: {:?}", c.procs("api"));
    let new_redis = c.proc("redis");
    let new_redis_pid = new_redis["pid"].as_i64().unwrap_or(0) as i32;
    assert_ne!(new_redis["pid"].as_i64(), Some(redis_pid as i64));
    assert!(new_redis["restarts"].as_u64() >= Some(1));
    let now: Vec<i64> = c
        .procs("api")
        .iter()
        .filter_map(|p| p["pid"].as_i64())
        .collect();
    assert_eq!(
        now, api_pids,
        "the API workers were restarted instead of recovering"
    );
    // Redis kept nothing (--save ""): the old session is gone, a new one works everywhere.
    let (r, sid2) = visit(edge_port, Some(&sid));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["views"], 1, "{r:?}");
    let (r, _) = visit(api_port, sid2.as_deref());
    assert_eq!(r.json()["views"], 2, "{r:?}");

    // Stop in reverse: the balancer, then the API, then Redis.
    c.ok(&["stop", "all"]);
    let log = std::fs::read_to_string(c.home.join("daemon.log")).unwrap_or_default();
    let at = |needle: &str| {
        log.rfind(needle)
            .unwrap_or_else(|| panic!("daemon.log lacks {needle:?}:\n{log}"))
    };
    assert!(
        at("stopping api (its dependents have stopped)")
            < at("stopping redis (its dependents have stopped)"),
        "{log}"
    );
    for p in c.ls_json() {
        assert_eq!(p["status"], "stopped", "{p}");
    }
    assert!(!alive(new_redis_pid), "redis-server still runs after stop");
}

#[test]
fn the_pm2_format_variant_runs_the_same_stack() {
    let c = Cohort::new();
    let (redis_port, api_port, edge_port) = (free_port(), free_port(), free_port());
    example(
        &c,
        "ecosystem.config.js",
        &[(6391, redis_port), (3100, api_port), (8100, edge_port)],
        |t| t,
    );
    let o = c.ok(&["start", "ecosystem.config.js"]);
    assert!(
        o.stderr.contains("started redis, api, edge"),
        "{}",
        o.stderr
    );
    let api = describe(&c, "api");
    assert_eq!(api.len(), 4);
    assert_eq!(api[0]["depends_on"][0], "redis (ready)");
    let ready = wait_until(T, || c.procs("api").iter().all(|a| a["ready"] == true));
    assert!(ready, "{:?}", c.procs("api"));
    let (r, sid) = visit(edge_port, None);
    assert_eq!(r.json()["store"], "redis", "{r:?}");
    let (r, _) = visit(edge_port, sid.as_deref());
    assert_eq!(r.json()["views"], 2, "{r:?}");
    c.ok(&["stop", "ecosystem.config.js"]);
}

#[test]
fn sticky_sessions_keep_a_client_on_one_worker() {
    let c = Cohort::new();
    let base = free_port_run(4);
    let edge_port = free_port();
    let ports: Vec<(u16, u16)> = (0..4)
        .map(|k| (3100 + k, base + k))
        .chain([(8100, edge_port)])
        .collect();
    example(&c, "cohort-sticky.toml", &ports, |t| t);
    c.ok(&["start", "cohort-sticky.toml"]);
    wait_online(&c, "api", 4, T);
    // Every worker listens before the balancer sends it anything (`online` is not listening yet:
    // one refused connection would take a worker out of the rotation for a while).
    for k in 0..4 {
        wait_serving(base + k, T);
    }
    wait_serving(edge_port, T);
    // As a browser: keep the cookies (the app's session, the balancer's pin). The first visit
    // makes the session and pins the client to the worker that made it: every visit from the
    // second on finds it there.
    let mut jar = CookieJar::default();
    let mut pid = None;
    for visit in 1..=30u64 {
        let r = request(edge_port, "GET", "/", &jar.header(), b"");
        assert_eq!(r.status, 200, "{r:?}");
        let pinned_again = r.set_cookies().iter().any(|(n, _, _)| n == "edge_srv");
        assert_eq!(pinned_again, visit == 1, "visit {visit}: {r:?}");
        jar.update(&r);
        let v = r.json();
        assert_eq!(v["store"], "memory");
        assert_eq!(v["views"], visit, "visit {visit}, cookies {jar:?}: {v}");
        let served_by = v["pid"].as_i64();
        assert!(served_by.is_some(), "{v}");
        assert_eq!(
            *pid.get_or_insert(served_by),
            served_by,
            "the client moved: {v}"
        );
    }
    // Another client (no cookies) is pinned where round robin sends it: over 4 new clients, each
    // worker gets one.
    let firsts: BTreeSet<i64> = (0..4)
        .filter_map(|_| request(edge_port, "GET", "/", "", b"").json()["pid"].as_i64())
        .collect();
    assert_eq!(
        firsts.len(),
        4,
        "new clients spread over the workers: {firsts:?}"
    );
    // Without the cookie (another client), the hash may pick any worker: the pinning is per client.
    let direct: BTreeSet<i64> = (0..4)
        .filter_map(|k| {
            get(base + k, "/")
                .ok()
                .and_then(|r| r.json()["pid"].as_i64())
        })
        .collect();
    assert_eq!(direct.len(), 4, "four workers, one per port: {direct:?}");
}

/// Writes `name` in the work folder and returns it.
fn config(c: &Cohort, name: &str, text: &str) -> String {
    c.write(name, text);
    name.to_string()
}

#[test]
fn config_errors_name_both_apps() {
    let c = Cohort::new();
    let cases = [
        (
            "cycle.toml",
            "[[apps]]\nname = \"a\"\nscript = \"sleep 60\"\ndepends_on = [\"b\"]\n[[apps]]\nname = \"b\"\nscript = \"sleep 60\"\ndepends_on = [\"a\"]\n",
            "error: cycle.toml: dependency cycle: a → b → a",
        ),
        (
            "unknown.toml",
            "[[apps]]\nname = \"api\"\nscript = \"sleep 60\"\ndepends_on = [\"redis\"]\n",
            "error: app \"api\" depends on \"redis\", which is not in this config (",
        ),
        (
            "condition.json",
            r#"{"apps": [{"name": "db", "script": "sleep 60"}, {"name": "api", "script": "sleep 60", "depends_on": {"db": "soon"}}]}"#,
            "error: condition.json: apps[1].depends_on.db: \"soon\" is not a condition",
        ),
        (
            "self.toml",
            "[[apps]]\nname = \"api\"\nscript = \"sleep 60\"\ndepends_on = [\"api\"]\n",
            "depends on itself",
        ),
        (
            "oneshot.toml",
            "[[apps]]\nname = \"job\"\nscript = \"true\"\nautorestart = true\n[[apps]]\nname = \"api\"\nscript = \"sleep 60\"\ndepends_on = { job = \"completed_successfully\" }\n",
            "waits for \"job\" to complete successfully, but \"job\" sets autorestart = true",
        ),
    ];
    for (file, text, want) in cases {
        let f = config(&c, file, text);
        let err = c.fails(&["start", &f]);
        assert!(err.contains(want), "{file}: {err}");
    }
    // Nothing was started by any of them.
    if c.home.join("cohort.sock").exists() {
        assert!(c.ls_json().is_empty(), "{:?}", c.ls_json());
    }
    // A dependency that runs already in the daemon counts.
    let f = config(
        &c,
        "db.toml",
        "[[apps]]\nname = \"db\"\nscript = \"sleep 60\"\n",
    );
    c.ok(&["start", &f]);
    let f = config(
        &c,
        "api.toml",
        "[[apps]]\nname = \"api\"\nscript = \"sleep 60\"\ndepends_on = [\"db\"]\n",
    );
    c.ok(&["start", &f]);
    c.wait_status("api", "online", T);
}

#[test]
fn a_dependency_that_never_gets_ready_fails_the_start_after_the_timeout() {
    let c = Cohort::new();
    let f = config(
        &c,
        "stack.toml",
        r#"
[[apps]]
name = "db"
script = "sleep 600"
readiness = { exec = "false", interval = "200ms", failure_threshold = 1 }

[[apps]]
name = "api"
script = "sleep 600"
depends_on = ["db"]
depends_timeout = "2s"
"#,
    );
    let t0 = Instant::now();
    let o = c.cmd(&["start", &f]);
    let took = t0.elapsed();
    assert!(!o.success(), "{}{}", o.stdout, o.stderr);
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(15),
        "{took:?}"
    );
    assert!(
        o.stderr.contains("api:0 was not started: its dependency \"db\" was not ready after 2s (depends_timeout): db:0 is online, not ready"),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr.contains("apps that started keep running"),
        "{}",
        o.stderr
    );
    // db keeps running; api is errored with the reason.
    assert_eq!(c.proc("db")["status"], "online");
    assert!(c.proc("db")["pid"].as_i64().is_some());
    assert_eq!(c.proc("api")["status"], "errored");
    assert!(c.proc("api")["pid"].is_null());
}

#[test]
fn one_shot_jobs_gate_their_dependents() {
    let c = Cohort::new();
    // A job that exits 0 after a moment: web starts after it, and it is not restarted.
    let f = config(
        &c,
        "ok.toml",
        r#"
[[apps]]
name = "migrate"
script = "sh -c 'sleep 0.5; echo migrated > done.txt'"

[[apps]]
name = "web"
script = "sh -c 'test -f done.txt && exec sleep 600'"
depends_on = { migrate = "completed_successfully" }
"#,
    );
    c.ok(&["start", &f]);
    let web = c.wait_status("web", "online", T);
    assert_eq!(
        web["restarts"], 0,
        "web started before the job was done: {web}"
    );
    let job = c.proc("migrate");
    assert_eq!(job["status"], "stopped");
    assert_eq!(job["restarts"], 0, "the job was restarted: {job}");
    let d = &describe(&c, "migrate")[0];
    assert_eq!(d["last_exit_code"], 0);
    assert_eq!(d["autorestart"], false, "a one-shot dependency runs once");
    c.ok(&["delete", "all"]);

    // A job that fails: its dependent is not started, and start says why.
    let f = config(
        &c,
        "bad.toml",
        r#"
[[apps]]
name = "migrate"
script = "sh -c 'exit 3'"

[[apps]]
name = "web"
script = "sleep 600"
depends_on = { migrate = "completed_successfully" }
"#,
    );
    let err = c.fails(&["start", &f]);
    assert!(
        err.contains("web:0 was not started: its dependency \"migrate\" cannot become completed_successfully: migrate:0 exited with code 3"),
        "{err}"
    );
    assert_eq!(c.proc("web")["status"], "errored");
    assert!(c.proc("web")["pid"].is_null());
}

#[test]
fn resurrect_and_restart_wait_for_dependencies_too() {
    let c = Cohort::new();
    let flag = c.work.join("db-ready");
    std::fs::write(&flag, "").expect("flag");
    let f = config(
        &c,
        "stack.toml",
        &format!(
            r#"
[[apps]]
name = "db"
script = "sleep 600"
readiness = {{ exec = "test -f {}", interval = "200ms", failure_threshold = 1 }}

[[apps]]
name = "api"
script = "sleep 600"
instances = 2
depends_on = ["db"]
"#,
            flag.display()
        ),
    );
    c.ok(&["start", &f]);
    c.ok(&["save"]);
    c.ok(&["kill"]);
    // After a reboot, the database is not ready yet: the API is held, and says what for.
    std::fs::remove_file(&flag).expect("flag");
    let o = c.ok(&["resurrect"]);
    assert!(
        o.stderr.contains("api") || o.stdout.contains("api"),
        "{}{}",
        o.stdout,
        o.stderr
    );
    let db_pid = c.pid("db");
    let held = poll("api held behind db", T, || {
        let d = describe(&c, "api");
        (d.len() == 2
            && d.iter()
                .all(|p| p["status"] == "launching" && p["pid"].is_null()))
        .then_some(d)
    });
    let waiting = held[0]["waiting_for"].as_str().unwrap_or("").to_string();
    assert!(
        waiting.starts_with("db to be ready (db:0 is online, not ready"),
        "{waiting}"
    );
    std::fs::write(&flag, "").expect("flag");
    wait_online(&c, "api", 2, T);
    let db = &describe(&c, "db")[0];
    assert_eq!(db["pid"].as_i64(), Some(db_pid as i64));
    let ready_at = db["probes"][0]["last"]["at"].as_u64().unwrap_or(u64::MAX);
    for a in describe(&c, "api") {
        assert!(started_at(&a) >= ready_at.saturating_sub(5), "{a}");
    }

    // restart all: api stops before db, and starts once db's new run is ready.
    c.ok(&["restart", "all"]);
    let db = &describe(&c, "db")[0];
    let apis = describe(&c, "api");
    for a in &apis {
        assert!(
            started_at(a) > started_at(db),
            "api restarted before db: {a}"
        );
    }
}

#[test]
fn stopping_a_held_app_answers_the_start_waiting_for_it() {
    let c = Cohort::new();
    let f = config(
        &c,
        "stack.toml",
        r#"
[[apps]]
name = "db"
script = "sleep 600"
readiness = { exec = "false", interval = "200ms", failure_threshold = 1 }

[[apps]]
name = "api"
script = "sleep 600"
depends_on = ["db"]
depends_timeout = "10m"
"#,
    );
    let mut start = c.command(&["start", &f]);
    start
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = start.spawn().expect("cohort start");
    c.track(child.id() as i32);
    let held = wait_until(T, || {
        c.home.join("cohort.sock").exists()
            && c.cmd(&["ls", "--json"]).success()
            && c.procs("api")
                .first()
                .is_some_and(|p| p["status"] == "launching")
    });
    assert!(held, "{:?}", c.ls_json());
    let d = describe(&c, "api");
    assert!(
        d[0]["waiting_for"]
            .as_str()
            .unwrap_or("")
            .starts_with("db to be ready (db:0 is online, not ready"),
        "{d:?}"
    );
    c.ok(&["stop", "api"]);
    let done = wait_until(T, || !matches!(child.try_wait(), Ok(None)));
    if !done {
        let _ = child.kill();
    }
    let _ = child.wait();
    assert!(done, "start still waits for an app the user stopped");
    assert_eq!(c.proc("api")["status"], "stopped");
    assert_eq!(c.proc("db")["status"], "online");
}

#[test]
fn a_held_start_survives_the_daemons_death() {
    let c = Cohort::new();
    let flag = c.work.join("db-ready");
    let f = config(
        &c,
        "stack.toml",
        &format!(
            r#"
[[apps]]
name = "db"
script = "sleep 600"
readiness = {{ exec = "test -f {}", interval = "200ms", failure_threshold = 1 }}

[[apps]]
name = "api"
script = "sleep 600"
depends_on = ["db"]
depends_timeout = "10m"
"#,
            flag.display()
        ),
    );
    // The start waits (db is not ready): let it run on its own.
    let mut start = c.command(&["start", &f]);
    start
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let child = start.spawn().expect("cohort start");
    c.adopt(child);
    let held = wait_until(T, || {
        c.home.join("cohort.sock").exists()
            && c.cmd(&["ls", "--json"]).success()
            && c.procs("api")
                .first()
                .is_some_and(|p| p["status"] == "launching")
    });
    assert!(held, "{:?}", c.ls_json());
    let db = c.pid("db");
    // The holder has db's pipes (and so a state with api held), then the daemon dies.
    let holder = poll("a holder holding db's pipes", T, || {
        c.holders().first().copied().filter(|h| pipes_held(*h) >= 2)
    });
    let daemon = c.daemon_pid().expect("a daemon runs");
    signal(daemon, libc::SIGKILL);
    poll("the daemon to be gone", T, || {
        (!alive(daemon)).then_some(())
    });
    // The next daemon adopts db and holds api again, until db is ready.
    let api = c.proc("api");
    assert_eq!(api["status"], "launching", "{api}");
    assert!(api["pid"].is_null(), "{api}");
    assert_eq!(c.proc("db")["pid"].as_i64(), Some(db as i64));
    assert_eq!(c.holders(), vec![holder]);
    std::fs::write(&flag, "").expect("flag");
    c.wait_status("api", "online", T);
}
