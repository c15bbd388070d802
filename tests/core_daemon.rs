//! The daemon's life: started by the first command, one per home even when CLIs race, stopped by
//! `cohort kill` after its apps, private socket, and the errors a user sees when the home or the
//! daemon is broken.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

#[test]
fn first_command_starts_the_daemon() {
    let c = Cohort::new();
    assert!(
        !c.home.exists(),
        "the home should not exist before the first command"
    );
    let o = c.ok(&["ls", "--json"]);
    assert_eq!(o.stdout.trim(), "[]");
    let pid = c.daemon_pid().expect("daemon.pid written by the daemon");
    c.track(pid);
    assert!(alive(pid), "daemon pid {pid} is not running");
    assert_eq!(comm(pid), "cohort");
    let ping = c.ok(&["ping"]);
    assert!(
        ping.stdout.contains(&format!("pid {pid}")),
        "ping answered by another daemon: {}",
        ping.stdout
    );
}

/// The pids of running `cohort daemon` processes serving this home.
fn daemons_of(c: &Cohort) -> Vec<i32> {
    c.processes_of_home()
        .into_iter()
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.get(1) == Some(&b"daemon".as_slice())
        })
        .collect()
}

#[test]
fn concurrent_first_commands_start_one_daemon() {
    let c = Cohort::new();
    let outs: Vec<Out> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| c.cmd(&["ls", "--json"])))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("ls thread"))
            .collect()
    });
    for o in &outs {
        assert!(o.success(), "a racing `cohort ls` failed: {}", o.stderr);
        assert_eq!(o.stdout.trim(), "[]");
    }
    let pid = c.daemon_pid().expect("daemon.pid");
    c.track(pid);
    // Daemons that lost the race exit by themselves; exactly one must remain.
    let mut daemons = Vec::new();
    let one = wait_until(Duration::from_secs(5), || {
        daemons = daemons_of(&c);
        daemons.len() == 1
    });
    assert!(one, "expected one daemon for the home, found {daemons:?}");
    assert_eq!(
        daemons,
        vec![pid],
        "daemon.pid does not name the running daemon"
    );
    assert!(c.ok(&["ping"]).stdout.contains(&format!("pid {pid}")));
}

#[test]
fn kill_stops_every_app_then_the_daemon() {
    let c = Cohort::new();
    c.ok(&["start", "sleep 1000", "--name", "s1"]);
    c.ok(&["start", &fixture("hold.js"), "--name", "n1"]);
    let p1 = c.pid("s1");
    let p2 = c.pid("n1");
    let daemon = c.daemon_pid().expect("daemon.pid");
    c.track(daemon);
    assert!(alive(p1) && alive(p2) && alive(daemon));

    let o = c.ok(&["kill"]);
    assert!(
        o.stdout.contains(&format!("daemon stopped (pid {daemon})")),
        "{}",
        o.stdout
    );
    // `kill` returns once the daemon is gone, and the daemon goes once its apps are gone.
    assert!(!alive(p1), "app s1 (pid {p1}) survived `cohort kill`");
    assert!(!alive(p2), "app n1 (pid {p2}) survived `cohort kill`");
    assert!(
        !alive(daemon),
        "the daemon (pid {daemon}) survived `cohort kill`"
    );
    assert!(
        !c.home.join("cohort.sock").exists(),
        "the socket was left behind"
    );
    assert!(
        c.processes_of_home().is_empty(),
        "left behind: {:?}",
        c.processes_of_home()
    );

    let again = c.ok(&["kill"]);
    assert!(
        again.stdout.contains("no daemon running"),
        "{}",
        again.stdout
    );
}

#[test]
fn socket_is_private() {
    let c = Cohort::new();
    c.ok(&["ping"]);
    let meta = std::fs::metadata(c.home.join("cohort.sock")).expect("cohort.sock exists");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
}

#[test]
fn home_that_cannot_be_created_is_a_clear_error() {
    let c = Cohort::new();
    let file = c.write("plain-file", "not a folder");
    let home = file.join("home");
    let mut cmd = c.command(&["ls"]);
    cmd.env("COHORT_HOME", &home);
    let t = Instant::now();
    let o = c.run(cmd);
    assert!(!o.success());
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    assert!(o.stderr.starts_with("error: "), "{}", o.stderr);
    assert!(o.stderr.contains("not writable"), "{}", o.stderr);
    assert!(
        o.stderr.contains("COHORT_HOME"),
        "should say how to fix it: {}",
        o.stderr
    );
}

/// Starts a python3 server on $COHORT_HOME/cohort.sock; `reply` None = accept and never answer.
fn fake_daemon(c: &Cohort, reply: Option<&str>) {
    std::fs::create_dir_all(&c.home).expect("home");
    let sock = c.home.join("cohort.sock");
    let script = r#"
import os, socket, sys
path, body = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
s.listen(16)
print("listening", flush=True)
held = []
while True:
    conn, _ = s.accept()
    if body == "-":
        held.append(conn)  # never answer
        continue
    try:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        if data:  # the harness's readiness probe connects and hangs up without a request
            b = body.encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s" % (len(b), b))
    except OSError:
        pass
    conn.close()
"#;
    let child = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&sock)
        .arg(reply.unwrap_or("-"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("python3 is needed for this test");
    c.adopt(child);
    assert!(
        wait_until(Duration::from_secs(10), || {
            std::os::unix::net::UnixStream::connect(&sock).is_ok()
        }),
        "the fake daemon never listened"
    );
}

#[test]
fn daemon_that_does_not_answer_is_reported() {
    let c = Cohort::new();
    fake_daemon(&c, None);
    let t = Instant::now();
    let o = c.cmd_env(&["ls"], &[("COHORT_CLIENT_TIMEOUT_MS", "500")]);
    assert!(!o.success());
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the client waited {:?}",
        t.elapsed()
    );
    assert!(
        o.stderr.starts_with("error: the daemon is not responding"),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr.contains("cohort.sock"),
        "should name the socket: {}",
        o.stderr
    );
}

#[test]
fn daemon_of_another_version_asks_for_update() {
    let c = Cohort::new();
    fake_daemon(
        &c,
        Some(r#"{"version":"0.0.1","pid":1,"home":"x","uptime_ms":1}"#),
    );
    let o = c.cmd(&["ls"]);
    assert!(!o.success());
    assert!(o.stderr.starts_with("error: "), "{}", o.stderr);
    assert!(
        o.stderr.contains("0.0.1"),
        "should name the daemon's version: {}",
        o.stderr
    );
    assert!(
        o.stderr.contains("cohort update"),
        "should tell to run `cohort update`: {}",
        o.stderr
    );
}

#[test]
fn stale_socket_after_a_daemon_crash_is_replaced() {
    let c = Cohort::new();
    c.ok(&["ping"]);
    let old = c.daemon_pid().expect("daemon.pid");
    c.track(old);
    // SAFETY: kill(2) on the daemon this test started.
    unsafe { libc::kill(old, libc::SIGKILL) };
    assert!(wait_until(Duration::from_secs(5), || !alive(old)));
    assert!(
        c.home.join("cohort.sock").exists(),
        "a killed daemon cannot remove its socket"
    );
    let o = c.ok(&["ls", "--json"]);
    assert_eq!(o.stdout.trim(), "[]");
    let new = c.daemon_pid().expect("daemon.pid");
    c.track(new);
    assert_ne!(new, old);
    assert!(alive(new));
}

#[test]
fn sigterm_to_the_daemon_stops_every_app() {
    let c = Cohort::new();
    c.ok(&[
        "start",
        &fixture("stubborn.js"),
        "--name",
        "stub",
        "--kill-timeout",
        "300",
    ]);
    c.ok(&["start", "sleep 1000", "--name", "s"]);
    let apps = [c.pid("stub"), c.pid("s")];
    let daemon = c.daemon_pid().expect("daemon.pid");
    c.track(daemon);
    // SAFETY: kill(2) on the daemon this test started (what systemd does on `systemctl stop`).
    unsafe { libc::kill(daemon, libc::SIGTERM) };
    assert!(
        wait_until(Duration::from_secs(10), || !alive(daemon)),
        "the daemon ignored SIGTERM"
    );
    for p in apps {
        assert!(!alive(p), "app pid {p} outlived the daemon's SIGTERM");
    }
    assert!(
        c.processes_of_home().is_empty(),
        "left behind: {:?}",
        c.processes_of_home()
    );
}

#[test]
fn kill_waits_for_an_app_that_ignores_sigint() {
    let c = Cohort::new();
    c.ok(&[
        "start",
        &fixture("stubborn.js"),
        "--name",
        "stub",
        "--kill-timeout",
        "400",
    ]);
    c.wait_log("stub", "out", "ready", Duration::from_secs(10));
    let pid = c.pid("stub");
    let t = Instant::now();
    c.ok(&["kill"]);
    assert!(
        t.elapsed() >= Duration::from_millis(350),
        "kill returned before kill_timeout: {:?}",
        t.elapsed()
    );
    assert!(!alive(pid), "the stubborn app survived `cohort kill`");
}

#[test]
fn foreground_daemon_refuses_a_home_another_daemon_holds() {
    // An init system running `cohort daemon` must learn it did not start one.
    let c = Cohort::new();
    c.ok(&["ping"]);
    let first = c.daemon_pid().expect("daemon pid");
    let err = c.fails(&["daemon"]);
    assert!(err.contains("error: a daemon already runs for"), "{err}");
    assert!(err.contains("cohort kill"), "{err}");
    assert_eq!(
        c.daemon_pid(),
        Some(first),
        "the running daemon was disturbed"
    );
    assert!(alive(first));
}
