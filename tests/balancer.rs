//! Integration tests of `cohort balance`: the real binary in front of real Node backends
//! (tests/fixtures/backend.js), spoken to over real sockets on 127.0.0.1.

mod common;

use common::*;
use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a backend or balancer may take to accept connections.
const UP: Duration = Duration::from_secs(15);

fn backend_on(port: u16, name: &str) -> ChildGuard {
    backend_with(port, name, &[])
}

/// A backend with extra arguments (see tests/fixtures/backend.js: the keep-alive timeout).
fn backend_with(port: u16, name: &str, extra: &[&str]) -> ChildGuard {
    let child = Command::new("node")
        .arg(fixture("backend.js"))
        .arg(port.to_string())
        .arg(name)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("node must be installed");
    let p = ChildGuard::new(child);
    wait_port(port, UP);
    p
}

fn backend(name: &str) -> (ChildGuard, u16) {
    let port = free_port();
    (backend_on(port, name), port)
}

/// The request lines ("METHOD URL") a backend has received, in order (its GET /seen).
fn seen_by(port: u16) -> Vec<String> {
    let r = request(port, "GET", "/seen", "", b"");
    assert_eq!(r.status, 200, "GET /seen on the backend: {}", r.head);
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("/seen is not JSON ({e}): {}", r.body))
}

struct Balancer {
    proc: ChildGuard,
    port: u16,
    admin: u16,
    dir: tempfile::TempDir,
}

impl Balancer {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("out.log")).unwrap_or_default()
    }
    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("err.log")).unwrap_or_default()
    }
    fn status(&self) -> serde_json::Value {
        let r = request(self.admin, "GET", "/status", "", b"");
        serde_json::from_str(&r.body)
            .unwrap_or_else(|e| panic!("admin /status is not JSON ({e}): {}", r.head))
    }
}

/// Starts `cohort balance --listen 127.0.0.1:PORT --admin ... ARGS` and waits until it accepts.
fn balancer(args: &[&str]) -> Balancer {
    let port = free_port();
    let admin = free_port();
    let mut cmd = Command::new(BIN);
    cmd.arg("balance")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--admin")
        .arg(format!("127.0.0.1:{admin}"))
        .args(args);
    let b = spawn_balancer(cmd, port, admin);
    // The admin listener may open a moment after the proxy's: tests ask both.
    wait_port(b.port, UP);
    wait_port(b.admin, UP);
    b
}

fn spawn_balancer(mut cmd: Command, port: u16, admin: u16) -> Balancer {
    let dir = scratch_dir("balancer");
    let out = std::fs::File::create(dir.path().join("out.log")).expect("creating out.log");
    let err = std::fs::File::create(dir.path().join("err.log")).expect("creating err.log");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawning cohort balance");
    Balancer {
        proc: ChildGuard::new(child),
        port,
        admin,
        dir,
    }
}

/// One GET on a fresh connection (`Connection: close`); status 0 when nothing answered.
fn get(port: u16, path: &str) -> Response {
    request(port, "GET", path, "", b"")
}

fn up(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

#[test]
fn round_robin_is_exact_over_sequential_requests() {
    let (_a, pa) = backend("a");
    let (_b, pb) = backend("b");
    let (_c, pc) = backend("c");
    let bal = balancer(&[
        "--upstream",
        &up(pa),
        "--upstream",
        &up(pb),
        "--upstream",
        &up(pc),
    ]);
    let seq: Vec<String> = (0..9)
        .map(|_| get(bal.port, "/").body.trim().to_string())
        .collect();
    assert_eq!(seq, ["a", "b", "c", "a", "b", "c", "a", "b", "c"]);
    // The access log has one line per request with status and upstream.
    let log = poll("access log", Duration::from_secs(5), || {
        let l = bal.log();
        (l.lines().count() >= 9).then_some(l)
    });
    assert!(
        log.lines()
            .all(|l| l.contains("\"GET / HTTP/1.1\" 200 2 127.0.0.1:")),
        "{log}"
    );
    let st = bal.status();
    assert_eq!(st["upstreams"][0]["requests"], 3);
    assert_eq!(st["upstreams"][2]["state"], "up");
}

#[test]
fn weights_split_traffic() {
    let (_a, pa) = backend("a");
    let (_b, pb) = backend("b");
    let wa = format!("{} weight=3", up(pa));
    let bal = balancer(&["--upstream", &wa, "--upstream", &up(pb)]);
    let seq: Vec<String> = (0..8)
        .map(|_| get(bal.port, "/").body.trim().to_string())
        .collect();
    assert_eq!(seq.iter().filter(|s| *s == "a").count(), 6, "{seq:?}");
    assert_eq!(seq.iter().filter(|s| *s == "b").count(), 2, "{seq:?}");
    // Smooth: b never waits for three a's in a row at the start of a cycle.
    assert_eq!(seq[..4], ["a", "a", "b", "a"]);
}

#[test]
fn least_conn_avoids_the_busy_backend() {
    let (_a, pa) = backend("a");
    let (_b, pb) = backend("b");
    let bal = balancer(&[
        "--strategy",
        "least_conn",
        "--upstream",
        &up(pa),
        "--upstream",
        &up(pb),
    ]);
    let port = bal.port;
    let slow = std::thread::spawn(move || get(port, "/slow?ms=3000").body.trim().to_string());
    // Wait until the slow request is in flight on one upstream.
    let busy = poll("a busy upstream", Duration::from_secs(5), || {
        let st = bal.status();
        (0..2).find(|&i| st["upstreams"][i]["active"] == 1)
    });
    let idle_name = if busy == 0 { "b" } else { "a" };
    for _ in 0..6 {
        assert_eq!(get(bal.port, "/").body.trim(), idle_name);
    }
    let busy_name = slow.join().unwrap();
    assert_ne!(busy_name, idle_name);
}

#[test]
fn hash_is_sticky_on_header_and_cookie() {
    let (_a, pa) = backend("a");
    let (_b, pb) = backend("b");
    let (_c, pc) = backend("c");
    let ups = [
        "--upstream",
        &up(pa),
        "--upstream",
        &up(pb),
        "--upstream",
        &up(pc),
    ];
    let bal = balancer(
        &[
            &["--strategy", "hash", "--hash-key", "header:X-User"][..],
            &ups[..],
        ]
        .concat(),
    );
    let mut seen = std::collections::HashSet::new();
    for u in 0..20 {
        let h = format!("X-User: user{u}\r\n");
        let first = request(bal.port, "GET", "/", &h, b"").body;
        for _ in 0..3 {
            assert_eq!(
                request(bal.port, "GET", "/", &h, b"").body,
                first,
                "user{u} moved"
            );
        }
        seen.insert(first);
    }
    assert!(
        seen.len() >= 2,
        "hash sent every key to one upstream: {seen:?}"
    );

    let bal = balancer(
        &[
            &["--strategy", "hash", "--hash-key", "cookie:sid"][..],
            &ups[..],
        ]
        .concat(),
    );
    let mut seen = std::collections::HashSet::new();
    for u in 0..20 {
        let h = format!("Cookie: theme=dark; sid=s{u}\r\n");
        let first = request(bal.port, "GET", "/", &h, b"").body;
        assert_eq!(request(bal.port, "GET", "/", &h, b"").body, first);
        seen.insert(first);
    }
    assert!(seen.len() >= 2);
}

#[test]
fn backend_killed_and_restarted_under_load() {
    let (_a, pa) = backend("a");
    let (b, pb) = backend("b");
    let mut b = Some(b);
    let bal = balancer(&[
        "--upstream",
        &up(pa),
        "--upstream",
        &up(pb),
        "--health-path",
        "/health",
        "--health-interval",
        "100ms",
        "--health-rise",
        "2",
    ]);
    // Every request on a new connection, as the old test's clients did.
    let load = Load::start(bal.port, Mode::NewConn, 4);
    load.wait_backend("b", 20, Duration::from_secs(10));
    b.take().expect("backend b").kill();
    load.wait_more(100, Duration::from_secs(10));
    let _b2 = backend_on(pb, "b");
    load.wait_backend("b", 10, Duration::from_secs(10));
    load.finish()
        .assert_no_failure("backend b killed and restarted, 4 new-connection clients");
}

#[test]
fn all_upstreams_down_is_a_fast_502() {
    let bal = balancer(&[
        "--upstream",
        &up(free_port()),
        "--upstream",
        &up(free_port()),
    ]);
    for _ in 0..3 {
        let t = Instant::now();
        let r = get(bal.port, "/");
        assert_eq!(r.status, 502, "{}", r.head);
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "502 took {:?}",
            t.elapsed()
        );
    }
    let st = bal.status();
    assert_eq!(st["upstreams"][0]["state"], "down");
    assert!(st["upstreams"][0]["errors"].as_u64().unwrap() >= 1);
}

#[test]
fn slow_upstream_is_a_504() {
    let (_a, pa) = backend("a");
    let bal = balancer(&["--upstream", &up(pa), "--upstream-timeout", "300ms"]);
    let r = get(bal.port, "/slow?ms=3000");
    assert_eq!(r.status, 504, "{}", r.head);
    assert_eq!(get(bal.port, "/slow?ms=10").status, 200);
}

#[test]
fn idempotent_request_to_a_silent_upstream_is_retried_elsewhere() {
    // Upstream A accepts connections and never answers (a host that fell off the network looks
    // like this to a proxy); B answers. Every GET must come back 200 from B. A keeps every byte it
    // receives, so the test can count which requests reached it.
    let silent = TcpListener::bind("127.0.0.1:0").expect("binding the silent upstream");
    let pa = silent.local_addr().expect("its address").port();
    let received_by_a = Arc::new(Mutex::new(Vec::<u8>::new()));
    let received = received_by_a.clone();
    std::thread::spawn(move || {
        for s in silent.incoming().flatten() {
            let received = received.clone();
            // Reads until the balancer gives up on the connection; never answers.
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = s.read(&mut buf) {
                    received
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend_from_slice(&buf[..n]);
                }
            });
        }
    });
    let at_a = |line: &str| {
        let bytes = received_by_a.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&bytes).matches(line).count()
    };
    let (_b, pb) = backend("b");
    let bal = balancer(&[
        "--upstream",
        &up(pa),
        "--upstream",
        &up(pb),
        "--upstream-timeout",
        "300ms",
    ]);
    for _ in 0..4 {
        let t = Instant::now();
        let r = get(bal.port, "/");
        assert_eq!(r.status, 200, "{}", r.head);
        assert_eq!(r.body.trim(), "b", "{}", r.head);
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "took {:?}",
            t.elapsed()
        );
    }
    // A POST is never retried (it may have had effects): each reaches exactly one upstream, once.
    // One sent to the silent upstream ends in a 504 and never reaches B; one sent to B is a 200.
    // POSTs go on (at most 10) until both cases happened.
    let mut posts: Vec<(String, u16)> = Vec::new();
    for i in 0..10 {
        let path = format!("/echo?post={i}");
        let status = request(bal.port, "POST", &path, "", b"x").status;
        posts.push((path, status));
        if posts.iter().any(|p| p.1 == 200) && posts.iter().any(|p| p.1 == 504) {
            break;
        }
    }
    // A's reader threads may lag the 504s by a moment.
    let timed_out = posts.iter().filter(|p| p.1 == 504).count();
    wait_until(Duration::from_secs(5), || {
        at_a("POST /echo?post=") >= timed_out
    });
    let seen_b = seen_by(pb);
    for (path, status) in &posts {
        let line = format!("POST {path}");
        let reached_a = at_a(&format!("{line} HTTP/1.1\r\n"));
        let reached_b = seen_b.iter().filter(|l| **l == line).count();
        assert_eq!(
            reached_a + reached_b,
            1,
            "{line} (answered {status}) reached A {reached_a}× and B {reached_b}×: a POST must be sent once; all: {posts:?}"
        );
        let want = if reached_a == 1 { 504 } else { 200 };
        assert_eq!(
            *status,
            want,
            "{line} reached {}; all: {posts:?}",
            if reached_a == 1 { "the silent A" } else { "B" }
        );
    }
    assert!(
        posts.iter().any(|p| p.1 == 504),
        "no POST went to the silent upstream, so nothing was tested: {posts:?}"
    );
}

#[test]
fn websocket_upgrade_is_tunnelled() {
    let (_a, pa) = backend("a");
    let bal = balancer(&["--upstream", &up(pa), "--idle-timeout", "1s"]);
    let mut s = TcpStream::connect(("127.0.0.1", bal.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut byte).unwrap(),
            1,
            "connection closed during handshake"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    assert!(head.contains("upgrade: websocket"), "{head}");
    for msg in [&b"hello through the proxy"[..], &[0u8, 255, 1, 2, 3][..]] {
        s.write_all(msg).unwrap();
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).unwrap();
        assert_eq!(got, msg);
    }
    // A tunnel with traffic lives on; one idle for `timeouts.idle` is closed.
    let t = Instant::now();
    let mut rest = Vec::new();
    assert!(matches!(s.read_to_end(&mut rest), Ok(0)), "{rest:?}");
    assert!(
        t.elapsed() >= Duration::from_millis(800) && t.elapsed() < Duration::from_secs(5),
        "{:?}",
        t.elapsed()
    );
}

fn curl(args: &[&str]) -> String {
    require_tool("curl", "curl");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn tls_with_alpn_h2_and_http11() {
    let (_a, pa) = backend("a");
    let dir = scratch_dir("tls");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cf, kf) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cf, cert.cert.pem()).unwrap();
    std::fs::write(&kf, cert.key_pair.serialize_pem()).unwrap();
    let bal = balancer(&[
        "--upstream",
        &up(pa),
        "--tls-cert",
        cf.to_str().unwrap(),
        "--tls-key",
        kf.to_str().unwrap(),
    ]);
    let url = format!("https://localhost:{}/headers", bal.port);
    let h2 = curl(&[
        "--cacert",
        cf.to_str().unwrap(),
        "--http2",
        "-w",
        "\n%{http_version}",
        &url,
    ]);
    assert!(h2.ends_with("\n2"), "{h2}");
    assert!(h2.contains("\"x-forwarded-proto\":\"https\""), "{h2}");
    let h1 = curl(&[
        "--cacert",
        cf.to_str().unwrap(),
        "--http1.1",
        "-w",
        "\n%{http_version}",
        &url,
    ]);
    assert!(h1.ends_with("\n1.1"), "{h1}");
}

#[test]
fn h2c_prior_knowledge_and_forwarded_headers() {
    let (_a, pa) = backend("a");
    let bal = balancer(&["--upstream", &up(pa)]);
    let out = curl(&[
        "--http2-prior-knowledge",
        "-w",
        "\n%{http_version}",
        &format!("http://127.0.0.1:{}/headers", bal.port),
    ]);
    assert!(out.ends_with("\n2"), "{out}");
    let r = request(
        bal.port,
        "GET",
        "/headers",
        "X-Forwarded-For: 10.0.0.1\r\nConnection: keep-alive, x-drop-me\r\nX-Drop-Me: 1\r\nKeep-Alive: timeout=5\r\n",
        b"",
    );
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let h = &v["headers"];
    assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], format!("127.0.0.1:{}", bal.port));
    assert!(
        h.get("x-drop-me").is_none() && h.get("keep-alive").is_none(),
        "{h}"
    );
    // The backend's `Connection: keep-alive, x-secret` names a hop-by-hop header: not forwarded.
    assert!(
        !r.head.to_ascii_lowercase().contains("x-secret"),
        "{}",
        r.head
    );
}

#[test]
fn request_bodies_stream_both_ways() {
    let (_a, pa) = backend("a");
    let bal = balancer(&["--upstream", &up(pa)]);
    let body: Vec<u8> = (0..2_000_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let r = request(bal.port, "POST", "/echo", "", &body);
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), body.len());
    assert!(r.body.as_bytes() == &body[..]);
}

#[test]
fn tcp_mode_proxies_bytes_and_fails_over() {
    let (_a, pa) = backend("a");
    let dead = free_port();
    let bal = balancer(&[
        "--mode",
        "tcp",
        "--upstream",
        &up(dead),
        "--upstream",
        &up(pa),
    ]);
    for _ in 0..4 {
        let r = get(bal.port, "/headers");
        assert_eq!(r.status, 200);
        // L4: the backend sees the request untouched (no X-Forwarded-For).
        assert!(!r.body.contains("x-forwarded-for"), "{}", r.body);
    }
    let st = bal.status();
    assert_eq!(st["mode"], "tcp");
    assert_eq!(st["upstreams"][0]["state"], "down", "{st}");
    // 4 requests plus the readiness probe of wait_port.
    assert!(st["upstreams"][1]["requests"].as_u64().unwrap() >= 4);
}

#[test]
fn tcp_mode_closes_idle_tunnels() {
    let (_a, pa) = backend("a");
    let bal = balancer(&[
        "--mode",
        "tcp",
        "--idle-timeout",
        "300ms",
        "--upstream",
        &up(pa),
    ]);
    let mut s = TcpStream::connect(("127.0.0.1", bal.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 16];
    assert_eq!(
        s.read(&mut buf).unwrap(),
        0,
        "an idle tunnel must be closed"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "closed too early: {:?}",
        t.elapsed()
    );
}

#[test]
fn http10_client_without_host_is_served() {
    let (_a, pa) = backend("a");
    let bal = balancer(&["--upstream", &up(pa)]);
    let r = parse_response(raw(bal.port, b"GET /headers HTTP/1.0\r\n\r\n").as_bytes());
    assert_eq!(r.status, 200, "{}", r.head);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["headers"]["host"], up(pa));
}

#[test]
fn malformed_oversize_and_slow_requests_are_refused() {
    let (_a, pa) = backend("a");
    let bal = balancer(&["--upstream", &up(pa), "--header-timeout", "500ms"]);
    assert!(raw(bal.port, b"THIS IS NOT HTTP\r\n\r\n").starts_with("HTTP/1.1 400"));
    assert!(raw(bal.port, b"GET / HTTP/1.1\r\nHost x\r\n\r\n").starts_with("HTTP/1.1 400"));
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "y".repeat(40_000)
    );
    assert!(raw(bal.port, big.as_bytes()).starts_with("HTTP/1.1 431"));
    // Slowloris: half a request head, then silence.
    let t = Instant::now();
    let slow = raw(bal.port, b"GET / HTTP/1.1\r\nHost: x\r\n");
    assert!(slow.starts_with("HTTP/1.1 408"), "{slow:?}");
    assert!(t.elapsed() < Duration::from_secs(5));
    // Slowloris that trickles: a byte every 100 ms never completes a head; the 500 ms limit is for
    // the whole head, not per byte.
    let mut s = TcpStream::connect(("127.0.0.1", bal.port)).unwrap();
    let t = Instant::now();
    let mut answered = String::new();
    for b in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: "
        .iter()
        .chain([b'y'; 200].iter())
    {
        if s.write_all(&[*b]).is_err() {
            break;
        }
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut buf = [0u8; 256];
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                answered.push_str(&String::from_utf8_lossy(&buf[..n]));
                break;
            }
            Err(_) => {}
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "trickling head never cut off"
        );
    }
    assert!(answered.starts_with("HTTP/1.1 408"), "{answered:?}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // Each refusal has its access log line, with the request line as far as it arrived.
    let log = poll(
        "the refusals in the access log",
        Duration::from_secs(5),
        || {
            let log = bal.log();
            (log.contains(" 408 ") && log.contains(" 431 ")).then_some(log)
        },
    );
    assert!(log.contains("\"THIS IS NOT HTTP\" 400 "), "{log}");
    assert!(log.contains("\"GET / HTTP/1.1\" 431 "), "{log}");
    assert!(log.contains("\"GET / HTTP/1.1\" 408 "), "{log}");
    // Still serving.
    assert_eq!(get(bal.port, "/").status, 200);
}

#[test]
fn sigterm_drains_in_flight_requests() {
    let (_a, pa) = backend("a");
    let mut bal = balancer(&["--upstream", &up(pa), "--drain-timeout", "10s"]);
    let port = bal.port;
    let slow = std::thread::spawn(move || get(port, "/slow?ms=1500"));
    // A keep-alive client with a request in flight: it gets its response, then the connection closes.
    let keepalive = std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(b"GET /slow?ms=1500 HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut reader = BufReader::new(s);
        let r = read_response(&mut reader, false).expect("the in-flight response");
        let mut rest = Vec::new();
        let closed = matches!(reader.read_to_end(&mut rest), Ok(0));
        (r.status, closed)
    });
    poll("requests in flight", Duration::from_secs(5), || {
        (bal.status()["upstreams"][0]["active"] == 2).then_some(())
    });
    bal.proc.signal(libc::SIGTERM);
    // New connections are refused while the old request finishes.
    poll("listener closed", Duration::from_secs(5), || {
        TcpStream::connect(("127.0.0.1", port))
            .is_err()
            .then_some(())
    });
    let r = slow.join().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body.trim(), "a");
    assert_eq!(
        keepalive.join().unwrap(),
        (200, true),
        "keep-alive client: response, then close"
    );
    let code = bal.proc.wait_exit(Duration::from_secs(10));
    assert_eq!(code.code(), Some(0), "{}", bal.stderr());
}

#[test]
fn socket_activation_uses_fd_3() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let (_a, pa) = backend("a");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let fd = listener.as_raw_fd();
    let admin = free_port();
    let mut cmd = Command::new("sh");
    // `exec` keeps the shell's pid, so LISTEN_PID=$$ is the balancer's pid.
    cmd.args([
        "-c",
        "export LISTEN_PID=$$ LISTEN_FDS=1; exec \"$0\" \"$@\"",
        BIN,
        "balance",
    ])
    .args([
        "--listen",
        "127.0.0.1:1",
        "--admin",
        &format!("127.0.0.1:{admin}"),
        "--upstream",
        &up(pa),
    ]);
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself would keep FD_CLOEXEC: clear it in that case.
            let rc = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let bal = spawn_balancer(cmd, port, admin);
    drop(listener);
    wait_port(admin, UP);
    assert_eq!(get(bal.port, "/").body.trim(), "a", "{}", bal.stderr());
}

#[test]
fn spec_json_and_validation_errors() {
    let (_a, pa) = backend("a");
    let port = free_port();
    let admin = free_port();
    let spec = serde_json::json!({
        "name": "edge", "listen": format!("127.0.0.1:{port}"), "admin": format!("127.0.0.1:{admin}"),
        "strategy": "random", "upstreams": [{"address": up(pa), "weight": 2}],
        "timeouts": {"connect": "1s"}, "health": {"interval": "200ms"}
    });
    let mut cmd = Command::new(BIN);
    cmd.args(["balance", "--spec-json", &spec.to_string()]);
    let bal = spawn_balancer(cmd, port, admin);
    wait_port(port, UP);
    assert_eq!(get(port, "/").body.trim(), "a");
    assert_eq!(bal.status()["name"], "edge");

    let out = Command::new(BIN)
        .args([
            "balance",
            "--listen",
            "127.0.0.1:1",
            "--upstream",
            "127.0.0.1:2",
            "--strategy",
            "foo",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: invalid balancer: strategy: expected one of round_robin, least_conn, random, hash; got \"foo\""),
        "{err}"
    );
    let out = Command::new(BIN)
        .args([
            "balance",
            "--spec-json",
            &spec.to_string(),
            "--strategy",
            "hash",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("--spec-json: other flags cannot be combined"));
    let out = Command::new(BIN)
        .args(["balance", "--spec-json", "{\"listen\": 1}"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("error: invalid balancer: --spec-json:")
    );
}

#[test]
fn max_connections_holds_extra_clients_in_the_backlog() {
    let (_a, pa) = backend("a");
    let bal = balancer(&["--upstream", &up(pa), "--max-connections", "1"]);
    // wait_port's probe connection may still hold the only slot for a moment: let it go first.
    poll("probe connection gone", Duration::from_secs(5), || {
        (get(bal.port, "/").status == 200).then_some(())
    });
    let port = bal.port;
    // The upstream answers the slow request 1 s after it gets it, so its slot is free 1 s after
    // this instant at the earliest. (Comparing with the instant the slow client read its answer
    // raced: under load that thread ran after the second client had already been served.)
    let slow_sent = Instant::now();
    let slow = std::thread::spawn(move || get(port, "/slow?ms=1000").status);
    poll("slow request in flight", Duration::from_secs(5), || {
        (bal.status()["upstreams"][0]["active"] == 1).then_some(())
    });
    let fast = get(bal.port, "/");
    let fast_done = Instant::now();
    let sockets = sockets_on(bal.port);
    let slow_status = slow.join().unwrap();
    assert_eq!((slow_status, fast.status), (200, 200));
    assert!(
        fast_done >= slow_sent + Duration::from_secs(1),
        "the second client was served {:?} after the slow request was sent, while it held the \
         only slot; sockets on :{}:\n{sockets}",
        fast_done - slow_sent,
        bal.port
    );
}

#[test]
fn a_port_in_use_is_an_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = Command::new(BIN)
        .args([
            "balance",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--upstream",
            "127.0.0.1:9",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!("error: cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
}

#[test]
fn http1_pipelining_chunked_bodies_head_and_keep_alive() {
    let (_a, pa) = backend("a");
    let bal = balancer(&["--upstream", &up(pa)]);
    // Three requests in one write: a GET, a HEAD, and a POST with a chunked body that ends the
    // connection. The answers come back in order, the HEAD's without a body.
    let out = raw(
        bal.port,
        b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n\
          HEAD /x HTTP/1.1\r\nHost: t\r\n\r\n\
          POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    );
    let parts: Vec<&str> = out.split("HTTP/1.1 ").skip(1).collect();
    assert_eq!(parts.len(), 3, "three responses expected: {out:?}");
    assert!(
        parts[0].starts_with("200") && parts[0].ends_with("\r\n\r\na\n"),
        "{out:?}"
    );
    assert!(
        parts[1].starts_with("200") && parts[1].ends_with("\r\n\r\n"),
        "HEAD has no body: {out:?}"
    );
    let third = parse_response(format!("HTTP/1.1 {}", parts[2]).as_bytes());
    assert_eq!(third.body, "hello world", "{out:?}");
    assert!(
        third
            .head
            .to_ascii_lowercase()
            .contains("connection: close"),
        "{out:?}"
    );

    // A chunked response to an HTTP/1.0 client is decoded and ends with the connection.
    let old = raw(bal.port, b"GET /stream?ms=10 HTTP/1.0\r\nHost: t\r\n\r\n");
    let (head, body) = old.split_once("\r\n\r\n").unwrap();
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{old:?}"
    );
    assert_eq!(body, "part1part2");
}

#[test]
fn http1_framing_errors_are_refused_and_smuggling_is_defused() {
    let (_a, pa) = backend("a");
    let bal = balancer(&["--upstream", &up(pa)]);
    let conflicting = raw(
        bal.port,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    );
    assert!(conflicting.starts_with("HTTP/1.1 400"), "{conflicting:?}");
    let bad_te = raw(
        bal.port,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n",
    );
    assert!(bad_te.starts_with("HTTP/1.1 501"), "{bad_te:?}");
    let h3 = raw(bal.port, b"GET / HTTP/3.0\r\nHost: t\r\n\r\n");
    assert!(h3.starts_with("HTTP/1.1 505"), "{h3:?}");
    // Transfer-Encoding and Content-Length together: the chunked framing wins, Content-Length is
    // not forwarded, and the connection ends after the response, so the bytes after the chunked
    // body ("GET /smuggled") are never read as a request.
    let both = raw(
        bal.port,
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n\
          3\r\nabc\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!(both.matches("HTTP/1.1 ").count(), 1, "{both:?}");
    let r = parse_response(both.as_bytes());
    assert_eq!((r.status, r.body.as_str()), (200, "abc"), "{both:?}");
}

#[test]
fn expect_100_continue_and_streamed_responses_are_not_held_back() {
    let (_a, pa) = backend("a");
    let bal = balancer(&["--upstream", &up(pa)]);
    let mut s = TcpStream::connect(("127.0.0.1", bal.port)).unwrap();
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let cont = read_until(&mut s, "\r\n\r\n", Duration::from_secs(5));
    assert!(cont.starts_with("HTTP/1.1 100"), "{cont:?}");
    s.write_all(b"hello").unwrap();
    let resp = read_until(&mut s, "hello", Duration::from_secs(5));
    assert!(
        resp.starts_with("HTTP/1.1 200") && resp.contains("hello"),
        "{resp:?}"
    );

    // The upstream sends its head and "part1" at once and "part2" 2 s later: the client has the
    // head and "part1" long before the body ends.
    let mut s = TcpStream::connect(("127.0.0.1", bal.port)).unwrap();
    let t = Instant::now();
    s.write_all(b"GET /stream?ms=2000 HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let first = read_until(&mut s, "part1", Duration::from_secs(5));
    assert!(first.contains("part1"), "{first:?}");
    assert!(!first.contains("part2"), "{first:?}");
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "head held back for {:?}",
        t.elapsed()
    );
    let rest = read_until(&mut s, "0\r\n\r\n", Duration::from_secs(5));
    assert!(rest.contains("part2"), "{rest:?}");
}

/// Whether a connection to 127.0.0.1:`port` is in CLOSE-WAIT (the peer closed it, we have not).
fn close_wait_to(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let remote = format!("0100007F:{port:04X}");
    table.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3 && f[2] == remote && f[3] == "08"
    })
}

#[test]
fn upstream_closing_idle_keep_alive_connections_costs_no_request() {
    let pa = free_port();
    // The backend closes keep-alive connections soon after they go idle (Node's keepAliveTimeout,
    // 150 ms here; Node adds about a second of its own).
    let _a = backend_with(pa, "a", &["150"]);
    let bal = balancer(&["--upstream", &up(pa), "--workers", "1"]);
    for i in 0..3 {
        let r = get(bal.port, "/x");
        assert_eq!(r.status, 200, "request {i}: {}", r.head);
        // The pooled connection is now closed by the backend; the next request must not fail on it.
        poll(
            "the backend to close the idle connection",
            Duration::from_secs(10),
            || close_wait_to(pa).then_some(()),
        );
    }
    let r = get(bal.port, "/x");
    assert_eq!(r.status, 200, "{}", r.head);
    let st = bal.status();
    assert_eq!(st["upstreams"][0]["errors"], 0, "{st}");
    assert_eq!(st["upstreams"][0]["state"], "up", "{st}");
}

#[test]
fn stalled_bodies_end_at_the_idle_timeout() {
    let (_a, pa) = backend("a");
    let bal = balancer(&["--upstream", &up(pa), "--idle-timeout", "400ms"]);
    // A client that stops halfway through its request body gets a 408, not a connection held open.
    let mut s = TcpStream::connect(("127.0.0.1", bal.port)).unwrap();
    let t = Instant::now();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        .unwrap();
    let got = read_until(&mut s, "\r\n\r\n", Duration::from_secs(5));
    assert!(got.starts_with("HTTP/1.1 408"), "{got:?}");
    assert!(
        t.elapsed() >= Duration::from_millis(350),
        "{:?}",
        t.elapsed()
    );
    // An upstream that stops mid-body: the client gets what was sent, then the connection ends
    // (it cannot be told otherwise), long before the upstream would have finished.
    let mut s = TcpStream::connect(("127.0.0.1", bal.port)).unwrap();
    let t = Instant::now();
    s.write_all(b"GET /stream?ms=5000 HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    let all = String::from_utf8_lossy(&all);
    assert!(all.contains("part1") && !all.contains("part2"), "{all:?}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    poll(
        "the aborted request to be counted",
        Duration::from_secs(5),
        || {
            let st = bal.status();
            (st["upstreams"][0]["active"] == 0 && st["upstreams"][0]["errors"] == 1).then_some(())
        },
    );
    // Still serving.
    assert_eq!(get(bal.port, "/x").status, 200);
}
