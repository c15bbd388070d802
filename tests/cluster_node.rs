//! Cluster mode with the real CLI and daemon and unchanged Node apps: `cohort start app.js -i N`
//! shares one port across N real cluster workers. Spread, `ls` rows and logs, kill -9 under load,
//! a slot with no live worker gets no connections, stop with a request in flight, two apps on
//! one port, `-i max` under a CPU limit.

mod common;

use common::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

use common::start_cluster as start;

#[test]
fn requests_spread_over_workers_that_are_real_cluster_workers() {
    let c = Cohort::new();
    let port = free_port();
    let procs = start(&c, "web", &cluster_fixture("http_app.js"), port, 2, &[]);

    // ls: one row per worker, cluster mode, instances 0 and 1.
    let rows = c.procs("web");
    assert_eq!(rows.len(), 2, "{rows:?}");
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["mode"], "cluster", "{row}");
        assert_eq!(row["instance"], i as u64, "{row}");
    }

    // 200 new connections: both workers serve, neither takes more than 75 %.
    let mut per_pid: HashMap<i32, usize> = HashMap::new();
    let mut instance_of: HashMap<i32, String> = HashMap::new();
    for _ in 0..200 {
        let r = get(port, "/").expect("request");
        assert_eq!(r.status, 200);
        let v = r.json();
        assert_eq!(v["isWorker"], true, "cluster.isWorker must be true: {v}");
        let pid = v["pid"].as_i64().expect("pid") as i32;
        *per_pid.entry(pid).or_default() += 1;
        instance_of.insert(pid, v["instance"].as_str().unwrap_or("?").to_string());
    }
    eprintln!("spread over 200 new connections: {per_pid:?}");
    let mut got: Vec<i32> = per_pid.keys().copied().collect();
    got.sort();
    let mut want: Vec<i32> = procs.iter().map(|p| p.1).collect();
    want.sort();
    assert_eq!(got, want, "the workers in ls must be the ones answering");
    let busiest = per_pid.values().max().copied().unwrap_or(0);
    assert!(busiest <= 150, "uneven spread: {per_pid:?}");

    // NODE_APP_INSTANCE matches ls, and each worker writes its own log files.
    for (instance, pid) in &procs {
        assert_eq!(instance_of[pid], instance.to_string(), "pid {pid}");
        let out = c.log_path("web", *instance, "out");
        let line = format!("pid {pid} instance {instance} listening");
        let ok = wait_until(T, || {
            std::fs::read_to_string(&out).is_ok_and(|t| t.contains(&line))
        });
        assert!(ok, "{} lacks {line:?}", out.display());
        assert!(c.log_path("web", *instance, "err").exists());
    }
}

#[test]
fn kill_9_of_a_worker_under_load_refuses_no_connection() {
    let c = Cohort::new();
    let port = free_port();
    let procs = start(&c, "web", &cluster_fixture("http_app.js"), port, 2, &[]);
    let victim = procs[1].1;
    let clients = 2;
    let load = Load::start(port, Mode::NewConn, clients);
    load.wait_more(100, T);
    let before_kill = load.ok();
    // SAFETY: kill(2) on a worker pid of this test's daemon (seen in its ls).
    unsafe { libc::kill(victim, libc::SIGKILL) };

    // Same instance number, new pid, online, and it serves.
    let mut replacement = 0;
    let ok = wait_until(T, || {
        let now = instances(&c, "web");
        replacement = now.iter().find(|(i, _)| *i == 1).map(|p| p.1).unwrap_or(0);
        now.len() == 2 && replacement != 0 && replacement != victim
    });
    assert!(ok, "no replacement for instance 1: {:?}", c.procs("web"));
    load.wait_pid(replacement, T);
    load.wait_more(100, T);
    let report = load.finish();
    eprintln!("{}", report.summary("kill -9 under new-connection load"));
    assert!(report.ok > before_kill + 100);
    assert_eq!(
        report.refused, 0,
        "refused connections: {:?}",
        report.failed
    );
    // Only requests the victim had accepted die with it: at most one per client.
    assert!(
        report.failed.len() <= clients,
        "more failures than requests in flight: {:?}",
        report.failed
    );
    let row = c
        .procs("web")
        .into_iter()
        .find(|p| p["instance"] == 1)
        .expect("instance 1");
    assert_eq!(row["restarts"], 1, "{row}");
    assert_eq!(row["status"], "online", "{row}");
}

#[test]
fn a_stopped_instance_gets_no_connection() {
    let c = Cohort::new();
    let port = free_port();
    let procs = start(&c, "web", &cluster_fixture("http_app.js"), port, 2, &[]);
    let id1 = c
        .procs("web")
        .into_iter()
        .find(|p| p["instance"] == 1)
        .and_then(|p| p["id"].as_u64())
        .expect("id of instance 1")
        .to_string();
    c.ok(&["stop", &id1]);
    assert_eq!(c.procs("web")[1]["status"], "stopped");
    for i in 0..100 {
        let r = get(port, "/").unwrap_or_else(|e| panic!("request {i} failed: {e}"));
        assert_eq!(r.pid(), Some(procs[0].1), "request {i} went elsewhere");
    }
}

#[test]
fn a_crashed_instance_waiting_for_its_restart_gets_no_connection() {
    // The dead slot's socket stays open for the replacement (5 s later): a connection steered to
    // it would wait there, so every request must be answered at once by the live worker.
    let c = Cohort::new();
    let port = free_port();
    let procs = start(
        &c,
        "web",
        &cluster_fixture("http_app.js"),
        port,
        2,
        &["--restart-delay", "5000"],
    );
    // SAFETY: kill(2) on a worker pid of this test's daemon.
    unsafe { libc::kill(procs[1].1, libc::SIGKILL) };
    let ok = wait_until(T, || c.procs("web")[1]["status"] == "waiting_restart");
    assert!(ok, "{:?}", c.procs("web"));
    let started = Instant::now();
    for i in 0..100 {
        let mut conn = Conn::open(port).unwrap_or_else(|e| panic!("connect {i}: {e:?}"));
        let r = conn
            .get("/", false)
            .unwrap_or_else(|e| panic!("request {i} was not answered at once: {e}"));
        assert_eq!(r.pid(), Some(procs[0].1), "request {i}");
    }
    // All of it well inside the restart delay (a steered-away connection would wait ~5 s).
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(c.procs("web")[1]["status"], "waiting_restart");
}

/// One cluster worker of http_app.js with a 5 s kill_timeout, and a keep-alive connection to it.
fn one_worker_and_a_connection() -> (Cohort, u16, Conn) {
    let c = Cohort::new();
    let port = free_port();
    start(
        &c,
        "web",
        &cluster_fixture("http_app.js"),
        port,
        1,
        &["-x", "cluster", "--kill-timeout", "5000"],
    );
    let conn = Conn::open(port).expect("connect");
    (c, port, conn)
}

#[test]
fn stop_finishes_a_request_in_flight_with_connection_close() {
    let (c, _port, mut conn) = one_worker_and_a_connection();
    let first = conn.get("/", true).expect("first request");
    assert!(!first.closes());
    let slow = std::thread::spawn(move || conn.get("/slow", true));
    c.wait_log("web", "out", "got /slow", T);
    let started = Instant::now();
    c.ok(&["stop", "web"]);
    let r = slow
        .join()
        .expect("join")
        .expect("the in-flight request failed");
    assert_eq!(r.status, 200);
    assert!(
        r.closes(),
        "a response during the drain must say Connection: close"
    );
    // It exited by itself (the shim), long before the 5 s kill timeout.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(c.procs("web")[0]["status"], "stopped");
}

#[test]
fn a_second_app_on_the_same_port_gets_eaddrinuse() {
    let c = Cohort::new();
    let port = free_port();
    let app = cluster_fixture("http_app.js");
    start(&c, "first", &app, port, 2, &[]);
    let o = c.cmd_env(
        &[
            "start",
            &app,
            "--name",
            "second",
            "-i",
            "2",
            "--max-restarts",
            "0",
        ],
        &[("PORT", &port.to_string())],
    );
    // start says so: it exits non-zero naming the address and the app that holds it.
    assert!(!o.success(), "{}", o.stderr);
    assert!(
        o.stderr.contains(&format!(
            "cannot listen on port {port}: already held by app 'first'"
        )),
        "{}",
        o.stderr
    );
    let err = c.log_path("second", 0, "err");
    let ok = wait_until(T, || {
        std::fs::read_to_string(&err).is_ok_and(|t| t.contains("EADDRINUSE"))
    });
    assert!(
        ok,
        "second's error log lacks EADDRINUSE: {:?}",
        std::fs::read_to_string(&err)
    );
    // The first app keeps the port.
    let pids: Vec<i32> = instances(&c, "first").iter().map(|p| p.1).collect();
    for _ in 0..20 {
        let pid = get(port, "/").expect("request").pid().expect("pid");
        assert!(
            pids.contains(&pid),
            "{pid} is not a worker of the first app"
        );
    }
}

/// The first CPU this test process may run on.
fn one_cpu() -> usize {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).expect("affinity");
    (0..nix::sched::CpuSet::count())
        .find(|i| set.is_set(*i).unwrap_or(false))
        .expect("some CPU")
}

/// `cohort start` with instances `i` of a trivial Node app, the CLI (so the daemon it starts)
/// pinned to one CPU when `pinned`; returns how many processes the app got.
fn instances_for(i: &str, pinned: bool) -> usize {
    let c = Cohort::new();
    let script = c.write("idle.js", "setInterval(() => {}, 1000);\n");
    let script = script.to_string_lossy().into_owned();
    // The app never listens: a short listen_timeout keeps `start` (which waits for readiness) quick.
    let args = [
        "start",
        &script,
        "--name",
        "idle",
        "-i",
        i,
        "--listen-timeout",
        "200",
    ];
    let o = if pinned {
        require_tool("taskset", "util-linux");
        let mut cmd = std::process::Command::new("taskset");
        cmd.arg("-c")
            .arg(one_cpu().to_string())
            .arg(BIN)
            .args(args)
            .env("COHORT_HOME", &c.home)
            .current_dir(&c.work)
            .stdin(std::process::Stdio::null());
        c.run(cmd)
    } else {
        c.cmd(&args)
    };
    assert!(o.success(), "{}{}", o.stdout, o.stderr);
    let daemon = c.daemon_pid().expect("daemon pid");
    let status = std::fs::read_to_string(format!("/proc/{daemon}/status")).unwrap_or_default();
    let allowed = status
        .lines()
        .find(|l| l.starts_with("Cpus_allowed_list"))
        .unwrap_or("")
        .to_string();
    if pinned {
        assert!(
            allowed.ends_with(&format!("\t{}", one_cpu())),
            "the daemon is not pinned: {allowed}"
        );
    }
    c.procs("idle").len()
}

#[test]
fn instances_max_counts_the_cpus_the_daemon_may_use() {
    // std's count honours the affinity mask and cgroup quotas, as cohort's does.
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    assert_eq!(instances_for("max", true), 1, "-i max under taskset -c");
    assert_eq!(instances_for("max", false), cpus, "-i max");
    assert_eq!(instances_for("-1", false), (cpus - 1).max(1), "-i -1");
    assert_eq!(instances_for("-1", true), 1, "-i -1 under taskset -c");
}

#[test]
fn stopping_and_restarting_the_first_of_three_instances_keeps_steering_right() {
    // Closing slot 0's socket makes the kernel move the last socket of the group into its index;
    // the daemon's steering program must follow, or connections would go to a dead or wrong slot.
    let c = Cohort::new();
    let port = free_port();
    let procs = start(&c, "web", &cluster_fixture("http_app.js"), port, 3, &[]);
    let id0 = c.procs("web")[0]["id"].as_u64().expect("id").to_string();
    c.ok(&["stop", &id0]);
    let live = [procs[1].1, procs[2].1];
    let mut per_pid: HashMap<i32, usize> = HashMap::new();
    for i in 0..100 {
        let mut conn = Conn::open(port).unwrap_or_else(|e| panic!("connect {i}: {e:?}"));
        let pid = conn
            .get("/", false)
            .unwrap_or_else(|e| panic!("request {i}: {e}"))
            .pid()
            .expect("pid");
        assert!(
            live.contains(&pid),
            "request {i} answered by {pid}, not {live:?}"
        );
        *per_pid.entry(pid).or_default() += 1;
    }
    assert_eq!(per_pid.len(), 2, "{per_pid:?}");
    c.ok(&["restart", &id0]);
    let now = wait_online(&c, "web", 3, T);
    assert_ne!(now[0].1, procs[0].1);
    let pids: Vec<i32> = now.iter().map(|p| p.1).collect();
    wait_all_answer(port, &pids, 500);
    let load = Load::start(port, Mode::NewConn, 2);
    load.wait_more(150, T);
    let report = load.finish();
    report.assert_no_failure("3 instances after stop + restart of instance 0");
    assert_eq!(report.pids.len(), 3, "{:?}", report.pids);
}

#[test]
fn delete_frees_the_port_for_the_next_app() {
    let c = Cohort::new();
    let port = free_port();
    let app = cluster_fixture("http_app.js");
    start(&c, "one", &app, port, 2, &[]);
    c.ok(&["delete", "one"]);
    let procs = start(&c, "two", &app, port, 2, &[]);
    let pid = get(port, "/").expect("request").pid().expect("pid");
    assert!(procs.iter().any(|p| p.1 == pid));
}

#[test]
fn reload_with_a_broken_new_version_keeps_the_old_workers_serving() {
    let c = Cohort::new();
    let port = free_port();
    let script = c.work.join("app.js");
    std::fs::copy(cluster_fixture("http_app.js"), &script).expect("copy");
    let procs = start(&c, "web", "app.js", port, 2, &[]);
    let load = Load::start(port, Mode::NewConn, 2);
    load.wait_more(50, T);
    std::fs::write(&script, "throw new Error('broken deploy');\n").expect("write");
    let uptime = |c: &Cohort| -> Vec<u64> {
        c.procs("web")
            .iter()
            .map(|p| p["uptime_ms"].as_u64().unwrap_or(0))
            .collect()
    };
    let before = uptime(&c);
    let err = c.fails(&["reload", "web"]);
    assert!(
        err.contains("reload incomplete") && err.contains("keeps serving"),
        "{err}"
    );
    // They are the same processes: their uptime goes on (not reset by the failed replacement).
    let after = uptime(&c);
    assert!(
        after.iter().zip(&before).all(|(a, b)| a >= b),
        "uptime went back: {before:?} → {after:?}"
    );
    assert!(c.procs("web").iter().all(|p| p["restarts"] == 0));
    load.wait_more(50, T);
    assert_eq!(
        instances(&c, "web"),
        procs,
        "the old workers must keep running"
    );
    let report = load.finish();
    report.assert_no_failure("reload with a new version that throws at start");
}

#[test]
fn kill_9_of_a_worker_under_keepalive_load_loses_only_its_connections() {
    let c = Cohort::new();
    let port = free_port();
    let procs = start(&c, "web", &cluster_fixture("http_app.js"), port, 2, &[]);
    let clients = 4;
    let load = Load::start(port, Mode::KeepAlive, clients);
    load.wait_more(100, T);
    let victim = procs[0].1;
    // SAFETY: kill(2) on a worker pid of this test's daemon.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    let ok = wait_until(T, || {
        let now = instances(&c, "web");
        now.len() == 2 && now[0].1 != victim
    });
    assert!(ok, "{:?}", c.procs("web"));
    load.wait_more(200, T);
    let report = load.finish();
    eprintln!("{}", report.summary("kill -9 under keep-alive load"));
    assert_eq!(report.refused, 0, "{:?}", report.failed);
    // Each client had at most one connection to the victim: its next request on it fails (a
    // real client retries an idempotent request on a reused connection).
    assert!(report.failed.len() <= clients, "{:?}", report.failed);
}

#[test]
fn a_stopping_app_refuses_new_connections_instead_of_queueing_them() {
    // While the only workers drain a slow request, nothing will accept new connections: the
    // daemon must let go of the port so clients are refused (and a balancer in front moves on at
    // once) rather than queued and reset when the port finally closes.
    let (c, port, mut conn) = one_worker_and_a_connection();
    let slow = std::thread::spawn(move || conn.get("/slow", true));
    c.wait_log("web", "out", "got /slow", T);
    let stop = c.command(&["stop", "web"]).spawn().expect("cohort stop");
    c.adopt(stop);
    assert!(
        wait_until(T, || c
            .procs("web")
            .iter()
            .any(|p| p["status"] == "stopping")),
        "the app never started stopping"
    );
    match std::net::TcpStream::connect(("127.0.0.1", port)) {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}"),
        Ok(mut s) => {
            // Accepted by the kernel: it must then be served, not reset.
            use std::io::{Read, Write};
            s.set_read_timeout(Some(T)).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
            let mut buf = [0u8; 64];
            let n = s
                .read(&mut buf)
                .expect("a connection accepted during stop was reset");
            assert!(
                n > 0,
                "a connection accepted during stop was closed unanswered"
            );
        }
    }
    let r = slow
        .join()
        .expect("join")
        .expect("the in-flight request failed");
    assert_eq!(r.status, 200);
}

#[test]
fn start_answers_once_the_workers_serve() {
    // The README's first command curls right after `start`: the port must already be served.
    let c = Cohort::new();
    let port = free_port();
    let o = c.cmd_env(
        &[
            "start",
            &cluster_fixture("http_app.js"),
            "--name",
            "web",
            "-i",
            "2",
        ],
        &[("PORT", &port.to_string())],
    );
    assert!(o.success(), "{}", o.stderr);
    let r = get(port, "/").expect("the first request right after start");
    assert_eq!(r.status, 200);
    assert!(c.procs("web").iter().all(|p| p["status"] == "online"));
}
