//! Any language through systemd-style socket activation: a Python server that takes its
//! listening socket from fd 3 (LISTEN_FDS=1), hosted by `cohort __cluster-demo --listen-fds`.

mod cluster_util;

use std::collections::HashMap;

use cluster_util::*;

const SERVER: &str = r#"
import os, socket
# sd_listen_fds(3) rules: the fds are for us only if LISTEN_PID is our pid.
assert os.environ["LISTEN_PID"] == str(os.getpid()), "LISTEN_PID is not ours"
assert os.environ["LISTEN_FDS"] == "1"
s = socket.socket(fileno=3)
s.setblocking(True)
name = os.environ["LISTEN_FDNAMES"]
while True:
    c, _ = s.accept()
    c.recv(65536)
    body = ("%d %s" % (os.getpid(), name)).encode()
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    c.close()
"#;

#[test]
fn python_workers_share_a_port_via_listen_fds() {
    let dir = temp_dir("listenfds");
    let script = dir.join("server.py");
    std::fs::write(&script, SERVER).expect("write");
    let port = free_port();
    let port_s = port.to_string();
    let d = Demo::start(
        &dir.join("home"),
        &[
            "--workers",
            "2",
            "--port",
            &port_s,
            "--listen-fds",
            "python3",
            script.to_str().expect("utf8"),
        ],
    );
    let pids = [d.pid_of(0, 1), d.pid_of(1, 2)];
    let mut seen: HashMap<i32, usize> = HashMap::new();
    for _ in 0..60 {
        let r = poll("a response", 10, || get(port, "/").ok());
        let (pid, name) = r.body.split_once(' ').expect("body");
        assert_eq!(name, "http");
        *seen.entry(pid.parse().expect("pid")).or_default() += 1;
    }
    let mut got: Vec<i32> = seen.keys().copied().collect();
    got.sort();
    let mut want = pids.to_vec();
    want.sort();
    assert_eq!(
        got, want,
        "both workers (with the pids cohort started) must serve"
    );
    assert!(
        !d.has("exited"),
        "a worker died (LISTEN_PID or fd 3 wrong?)"
    );
}
