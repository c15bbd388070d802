//! Cluster mode with real Node workers, hosted by the internal `cohort __cluster-demo` harness:
//! an unchanged `http.createServer().listen(port)` app shares one port across workers that accept
//! straight from the daemon's sockets.

mod cluster_util;

use std::collections::{HashMap, HashSet};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster_util::*;

/// The unchanged app: it knows nothing about cohort. `/slow` answers after 400 ms.
const APP: &str = r#"
const http = require('http');
const cluster = require('cluster');
const server = http.createServer((req, res) => {
  const body = JSON.stringify({ pid: process.pid, isWorker: cluster.isWorker });
  if (req.url === '/slow') { console.log('got /slow'); setTimeout(() => res.end(body), 400); }
  else res.end(body);
});
server.on('error', (e) => { console.log('listen error ' + e.code); process.exit(5); });
server.listen(Number(process.env.APP_PORT || process.env.PORT));
"#;

fn setup(name: &str) -> (std::path::PathBuf, u16) {
    let dir = temp_dir(name);
    std::fs::write(dir.join("app.js"), APP).expect("write app");
    (dir, free_port())
}

fn start(dir: &std::path::Path, port: u16, extra: &[&str]) -> Demo {
    let app = dir.join("app.js");
    let port_s = port.to_string();
    let mut args = vec!["--workers", "2", "--port", &port_s];
    args.extend_from_slice(extra);
    args.push(app.to_str().expect("utf8 path"));
    let d = Demo::start(&dir.join("home"), &args);
    d.wait_line("live slot 0 gen", 20);
    d.wait_line("live slot 1 gen", 20);
    d
}

fn pid_in(body: &str) -> i32 {
    let v: serde_json::Value = serde_json::from_str(body).expect("json body");
    v["pid"].as_i64().expect("pid") as i32
}

#[test]
fn requests_spread_over_workers_that_are_cluster_workers() {
    let (dir, port) = setup("spread");
    let d = start(&dir, port, &[]);
    let mut per_pid: HashMap<i32, usize> = HashMap::new();
    for _ in 0..100 {
        let r = get(port, "/").expect("request");
        assert_eq!(r.status, 200);
        let v: serde_json::Value = serde_json::from_str(&r.body).expect("json");
        assert_eq!(v["isWorker"], true, "cluster.isWorker must be true");
        *per_pid.entry(pid_in(&r.body)).or_default() += 1;
    }
    let expected: HashSet<i32> = [d.pid_of(0, 1), d.pid_of(1, 2)].into();
    assert_eq!(per_pid.keys().copied().collect::<HashSet<_>>(), expected);
    // Random steering, Binomial(100, 1/2): below 20 is practically impossible.
    assert!(per_pid.values().all(|n| *n >= 20), "uneven: {per_pid:?}");
}

#[test]
fn kill_9_of_a_worker_under_load_refuses_no_connection() {
    let (dir, port) = setup("kill9");
    let d = start(&dir, port, &[]);
    let victim = d.pid_of(1, 2);
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let pids = Arc::new(Mutex::new(HashMap::<i32, usize>::new()));
    let done = Arc::new(AtomicUsize::new(0));
    let load = {
        let (stop, failures, pids, done) =
            (stop.clone(), failures.clone(), pids.clone(), done.clone());
        std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(20);
            for _ in 0..5000 {
                if stop.load(Ordering::Relaxed) || Instant::now() > end {
                    break;
                }
                let mut conn = match TcpStream::connect(("127.0.0.1", port)) {
                    Ok(c) => c,
                    Err(e) => {
                        failures.lock().expect("f").push(format!("connect: {e}"));
                        continue;
                    }
                };
                match get_on(&mut conn, "/") {
                    Ok(r) if r.status == 200 => {
                        *pids
                            .lock()
                            .expect("pids")
                            .entry(pid_in(&r.body))
                            .or_default() += 1
                    }
                    Ok(r) => failures
                        .lock()
                        .expect("f")
                        .push(format!("status {}", r.status)),
                    Err(e) => failures.lock().expect("f").push(e.to_string()),
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    poll("some load", 10, || {
        (done.load(Ordering::Relaxed) > 50).then_some(())
    });
    // SAFETY: kill(2) on a worker pid our demo started.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    d.wait_line("exited slot 1 gen 2", 10);
    d.wait_line("live slot 1 gen 3", 20);
    let replacement = d.pid_of(1, 3);
    poll("replacement serving", 20, || {
        pids.lock()
            .expect("pids")
            .contains_key(&replacement)
            .then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    load.join().expect("load thread");
    let failures = failures.lock().expect("f");
    // No connection may be refused. The one request the victim was serving when SIGKILLed dies
    // with it (reset): the load loop is sequential, so that is at most one.
    let refused: Vec<_> = failures
        .iter()
        .filter(|f| f.starts_with("connect"))
        .collect();
    assert!(refused.is_empty(), "refused: {refused:?}");
    assert!(failures.len() <= 1, "failed requests: {failures:?}");
}

/// A client that keeps its connection alive, reconnecting only when told `Connection: close`.
fn keepalive_client(
    port: u16,
    stop: Arc<AtomicBool>,
    failures: Arc<Mutex<Vec<String>>>,
    pids: Arc<Mutex<HashSet<i32>>>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(30);
        let mut conn: Option<TcpStream> = None;
        let mut n = 0;
        while n < 20000 && !stop.load(Ordering::Relaxed) && Instant::now() < end {
            let s = match conn.take() {
                Some(s) => s,
                None => match TcpStream::connect(("127.0.0.1", port)) {
                    Ok(s) => s,
                    Err(e) => {
                        failures.lock().expect("f").push(format!("connect: {e}"));
                        continue;
                    }
                },
            };
            let mut s = s;
            match get_on(&mut s, "/") {
                Ok(r) if r.status == 200 => {
                    pids.lock().expect("p").insert(pid_in(&r.body));
                    if !r.closes() {
                        conn = Some(s);
                    }
                }
                Ok(r) => failures
                    .lock()
                    .expect("f")
                    .push(format!("status {}", r.status)),
                Err(e) => failures.lock().expect("f").push(e.to_string()),
            }
            n += 1;
        }
        n
    })
}

#[test]
fn reload_with_keepalive_clients_fails_no_request() {
    let (dir, port) = setup("reload");
    let d = start(&dir, port, &["--kill-timeout", "5000"]);
    let old: HashSet<i32> = [d.pid_of(0, 1), d.pid_of(1, 2)].into();
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let pids = Arc::new(Mutex::new(HashSet::new()));
    let clients: Vec<_> = (0..4)
        .map(|_| keepalive_client(port, stop.clone(), failures.clone(), pids.clone()))
        .collect();
    poll("clients on the old workers", 10, || {
        let p = pids.lock().expect("p");
        (!p.is_empty() && p.is_subset(&old)).then_some(())
    });
    d.signal(libc::SIGHUP);
    d.wait_line("reloaded", 30);
    // Old workers drain and exit by themselves (status 0), well before the kill timeout.
    let a = d.wait_line("exited slot 0 gen 1", 10);
    let b = d.wait_line("exited slot 1 gen 2", 10);
    assert!(
        a.contains("unix_wait_status(0)") && b.contains("unix_wait_status(0)"),
        "{a} / {b}"
    );
    let new: HashSet<i32> = [d.pid_of(0, 3), d.pid_of(1, 4)].into();
    pids.lock().expect("p").clear();
    // Keep-alive clients stay where they reconnected (4 connections may all land on one worker).
    poll("clients on the new workers", 10, || {
        (!pids.lock().expect("p").is_empty()).then_some(())
    });
    let after = pids.lock().expect("p").clone();
    assert!(
        after.is_subset(&new),
        "responses from old workers after they exited: {after:?}"
    );
    stop.store(true, Ordering::Relaxed);
    let total: usize = clients.into_iter().map(|c| c.join().expect("client")).sum();
    assert!(!d.has("kill -9"), "a worker had to be killed");
    assert!(old.is_disjoint(&new));
    let failures = failures.lock().expect("f");
    assert!(
        failures.is_empty(),
        "{} of {total} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

#[test]
fn stop_finishes_in_flight_requests_with_connection_close() {
    let (dir, port) = setup("stop");
    let mut d = start(&dir, port, &["--kill-timeout", "5000"]);
    // A keep-alive connection with one request done, then a slow one in flight during the stop.
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let first = get_on(&mut s, "/").expect("first");
    assert!(!first.closes());
    let slow = std::thread::spawn(move || get_on(&mut s, "/slow"));
    d.wait_line("got /slow", 10);
    d.signal(libc::SIGTERM);
    let r = slow.join().expect("join").expect("slow request failed");
    assert_eq!(r.status, 200);
    assert!(
        r.closes(),
        "in-flight response during a drain must say Connection: close"
    );
    assert_eq!(d.wait_exit(10), Some(0));
    assert!(!d.has("kill -9"));
}

#[test]
fn listen_on_a_port_taken_elsewhere_fails_with_eaddrinuse() {
    let (dir, _) = setup("inuse");
    let taken = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let app = dir.join("app.js");
    let d = Demo::start(
        &dir.join("home"),
        &[
            "--workers",
            "1",
            "--port",
            &port,
            app.to_str().expect("utf8"),
        ],
    );
    d.wait_line("queryServer", 20);
    d.wait_line("listen error EADDRINUSE", 20);
    drop(taken);
}
