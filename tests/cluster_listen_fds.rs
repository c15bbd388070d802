//! Cluster mode for any language through systemd socket activation: `cohort start server.py -i 2
//! --port P` gives each worker its slot's socket at fd 3 (LISTEN_FDS=1, LISTEN_PID = the worker's
//! own pid). Python workers share the port, and reload replaces them without a failed request.

mod common;

use common::*;
use std::collections::HashSet;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

/// Starts the Python fixture as `py` with `-i 2 --port P` and waits until both workers answer.
fn start_py(c: &Cohort, script: &str, extra: &[&str]) -> (u16, Vec<(u32, i32)>) {
    let port = free_port();
    let port_s = port.to_string();
    let mut args = vec![
        "start", script, "--name", "py", "-i", "2", "--port", &port_s,
    ];
    args.extend_from_slice(extra);
    c.ok(&args);
    let procs = wait_online(c, "py", 2, T);
    wait_serving(port, T);
    let pids: Vec<i32> = procs.iter().map(|p| p.1).collect();
    wait_all_answer(port, &pids, 500);
    (port, procs)
}

#[test]
fn python_workers_share_a_port_by_socket_activation() {
    let c = Cohort::new();
    let (port, procs) = start_py(&c, &cluster_fixture("server.py"), &[]);
    for row in c.procs("py") {
        assert_eq!(row["mode"], "cluster", "{row}");
    }
    let mut seen: HashSet<i32> = HashSet::new();
    for _ in 0..100 {
        let v = get(port, "/").expect("request").json();
        let pid = v["pid"].as_i64().expect("pid") as i32;
        // sd_listen_fds(3): LISTEN_PID must be the worker's own pid (not a shell's, not the daemon's).
        assert_eq!(v["listen_pid"], pid.to_string(), "{v}");
        assert_eq!(v["listen_fds"], "1", "{v}");
        assert_eq!(v["fdnames"], format!("port{port}"), "{v}");
        seen.insert(pid);
    }
    let want: HashSet<i32> = procs.iter().map(|p| p.1).collect();
    assert_eq!(seen, want, "both workers (the pids in ls) must serve");
}

#[test]
fn python_reload_under_new_connection_load_fails_no_request() {
    let c = Cohort::new();
    // SIGTERM is what Python servers (gunicorn, uvicorn) treat as "stop gracefully".
    let (port, old) = start_py(
        &c,
        &cluster_fixture("server.py"),
        &["--kill-signal", "SIGTERM"],
    );
    let load = Load::start(port, Mode::NewConn, 2);
    load.wait_more(50, T);
    c.ok(&["reload", "py"]);
    let new = wait_online(&c, "py", 2, T);
    for (o, n) in old.iter().zip(&new) {
        assert_ne!(o.1, n.1, "instance {} was not replaced", o.0);
        assert!(
            !alive(o.1),
            "old worker {} still runs after reload returned",
            o.1
        );
    }
    load.clear_pids();
    for (_, pid) in &new {
        load.wait_pid(*pid, T);
    }
    let report = load.finish();
    report.assert_no_failure("python reload under new-connection load");
    for (_, pid) in &old {
        let log = c.log("py", "out")
            + &std::fs::read_to_string(c.log_path("py", 1, "out")).unwrap_or_default();
        assert!(
            log.contains(&format!("pid {pid} stopped")),
            "old worker {pid} did not stop gracefully:\n{log}"
        );
    }
}

#[test]
fn notify_socket_ready_makes_a_wait_ready_program_online() {
    // A non-Node program with --wait-ready is online only once it sends READY=1 to NOTIFY_SOCKET
    // (systemd's protocol; the daemon knows the sender from its credentials), and `start` waits.
    let c = Cohort::new();
    let script = c.write(
        "notify.py",
        r#"import os, socket, time
time.sleep(0.6)
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b"STATUS=warming up\nREADY=1\n", os.environ["NOTIFY_SOCKET"])
print("sent READY=1", flush=True)
time.sleep(1000)
"#,
    );
    let started = std::time::Instant::now();
    c.ok(&[
        "start",
        &script.to_string_lossy(),
        "--name",
        "nt",
        "--wait-ready",
        "--listen-timeout",
        "8000",
    ]);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(550),
        "start returned after {took:?}, before the program said READY=1"
    );
    assert!(
        took < Duration::from_secs(6),
        "start waited {took:?}: READY=1 was not seen (listen_timeout is 8 s)"
    );
    assert_eq!(c.proc("nt")["status"], "online");
    assert!(c.log("nt", "out").contains("sent READY=1"));
}
