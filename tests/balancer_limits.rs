//! The balancer under abuse (issue 12): upstream connection caps with a queue, HTTP/2 stream
//! limits, memory given back after a burst, the per-IP limit, and the HTTP/1 hygiene answers
//! (Host, chunked framing, interim responses). Real binary, real Node backends
//! (tests/fixtures/backend.js), hand-written hostile peers on real sockets.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_port, wait_until, BIN};

/// A child process killed (and reaped) when dropped.
struct Proc(Child);

impl Proc {
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_port(port: u16) {
    assert!(
        wait_until(Duration::from_secs(15), || TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()),
        "port {port} never opened"
    );
}

fn backend() -> (Proc, u16) {
    let port = free_port();
    let child = Command::new("node")
        .arg(format!(
            "{}/tests/fixtures/backend.js",
            env!("CARGO_MANIFEST_DIR")
        ))
        .arg(port.to_string())
        .arg(format!("b{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("node must be installed (scripts/setup)");
    let p = Proc(child);
    wait_port(port);
    (p, port)
}

/// `cohort balance --listen 127.0.0.1:PORT --no-access-log ARGS`, serving.
fn balancer(args: &[&str]) -> (Proc, u16) {
    let port = free_port();
    let child = Command::new(BIN)
        .args(["balance", "--no-access-log", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cohort binary");
    let p = Proc(child);
    wait_port(port);
    (p, port)
}

/// Sends `raw` on a new connection and returns everything read until the peer closes (or 15 s:
/// longer than the default queue timeout).
fn exchange(port: u16, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(raw).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// One GET over a new connection: the status, or 0 when the exchange failed.
fn get(port: u16, path: &str) -> u16 {
    let raw = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    status_of(&exchange(port, raw.as_bytes()))
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// TCP connections (established or opening) to any of `ports` on this host, from /proc/net/tcp:
/// the balancer's upstream side (the remote port is the backend's).
/// The file is read in pieces while it changes, so one socket may show twice: counted once.
fn conns_to(ports: &[u16]) -> usize {
    let t = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    t.lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let remote_port = f
                .get(2)
                .and_then(|r| r.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            let state = f.get(3).copied().unwrap_or("");
            matches!(state, "01" | "02")
                && remote_port.is_some_and(|p| ports.contains(&p))
                && seen.insert((f.get(1).copied(), f.get(2).copied()))
        })
        .count()
}

/// Samples `conns_to(ports)` every 10 ms until `stop`; the highest count seen.
fn sample_conns(ports: Vec<u16>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut max = 0;
        while !stop.load(Ordering::Relaxed) {
            max = max.max(conns_to(&ports));
            std::thread::sleep(Duration::from_millis(10));
        }
        max
    })
}

/// `conns` HTTP/2 cleartext (prior knowledge) connections, each sending `streams` bodiless POSTs
/// as fast as the server's stream limit lets it; returns (200s, other answers, failed streams).
fn h2_burst(port: u16, conns: usize, streams: usize) -> (usize, usize, usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ok = Arc::new(AtomicUsize::new(0));
    let other = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..conns {
            let (ok, other, failed) = (ok.clone(), other.clone(), failed.clone());
            tasks.push(tokio::spawn(async move {
                let Ok(tcp) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
                    failed.fetch_add(streams, Ordering::Relaxed);
                    return;
                };
                let Ok((client, conn)) = h2::client::handshake(tcp).await else {
                    failed.fetch_add(streams, Ordering::Relaxed);
                    return;
                };
                tokio::spawn(conn);
                let mut pending = Vec::new();
                for _ in 0..streams {
                    let req = http::Request::post(format!("http://127.0.0.1:{port}/burst"))
                        .body(())
                        .unwrap();
                    let sent = match client.clone().ready().await {
                        Ok(mut c) => c.send_request(req, true).map(|(r, _)| r),
                        Err(e) => Err(e),
                    };
                    match sent {
                        Ok(r) => pending.push(tokio::spawn(r)),
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                for p in pending {
                    match p.await {
                        Ok(Ok(resp)) => {
                            let counter = if resp.status() == 200 { &ok } else { &other };
                            counter.fetch_add(1, Ordering::Relaxed);
                            // Read the body so the stream ends cleanly.
                            let mut body = resp.into_body();
                            while let Some(Ok(d)) = body.data().await {
                                let _ = body.flow_control().release_capacity(d.len());
                            }
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(90), t).await;
        }
    });
    (
        ok.load(Ordering::Relaxed),
        other.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    )
}

/// The figures: 100 h2c connections × 200 bodiless POSTs against a balancer with default
/// limits over two Node backends. Other clients keep getting 200s, upstream connections stay under
/// the default cap (1,024), and RSS comes back within 2× its start + 64 MiB within 15 s.
#[test]
fn h2_burst_is_capped_and_memory_comes_back() {
    let (_a, pa) = backend();
    let (_b, pb) = backend();
    let (bal, port) = balancer(&[
        "--upstream",
        &format!("127.0.0.1:{pa}"),
        "--upstream",
        &format!("127.0.0.1:{pb}"),
    ]);
    for _ in 0..50 {
        assert_eq!(get(port, "/warm"), 200);
    }
    let rss_start = rss_kib(bal.pid());

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_conns(vec![pa, pb], stop.clone());
    // Other clients: keep-alive HTTP/1.1 GETs all through the burst.
    let others: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut ok, mut bad) = (0usize, Vec::new());
                while !stop.load(Ordering::Relaxed) && ok + bad.len() < 5000 {
                    match get(port, "/other") {
                        200 => ok += 1,
                        s => bad.push(s),
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                (ok, bad)
            })
        })
        .collect();
    let started = Instant::now();
    let (h2_ok, h2_other, h2_failed) = h2_burst(port, 100, 200);
    let burst = started.elapsed();
    let rss_peak = rss_kib(bal.pid());
    stop.store(true, Ordering::Relaxed);
    let max_upstream = sampler.join().unwrap();
    let (mut ok, mut bad) = (0, Vec::new());
    for o in others {
        let (k, b) = o.join().unwrap();
        ok += k;
        bad.extend(b);
    }
    let ended = Instant::now();
    let limit = 2 * rss_start + 64 * 1024;
    let back = wait_until(Duration::from_secs(15), || rss_kib(bal.pid()) <= limit);
    let rss_after = rss_kib(bal.pid());
    eprintln!(
        "h2 burst: {h2_ok} ok, {h2_other} other, {h2_failed} failed in {burst:?}; others: {ok} ok, \
         {} bad {:?}; max upstream conns {max_upstream}; RSS start {rss_start} KiB, right after \
         {rss_peak} KiB, {:?} later {rss_after} KiB",
        bad.len(),
        &bad[..bad.len().min(10)],
        ended.elapsed()
    );
    // /proc/net/tcp is read bucket by bucket while connections churn, not as one snapshot: a
    // connection closed early in a read and the one opened in its place later in the same read
    // are both counted (1,025 was seen once, on a loaded machine). The pool closes a socket
    // before it gives its slot back (conn.rs), so the real count never passes 1,024; the slack
    // covers the reading, and an uncapped balancer would open thousands here (100 × 200 streams).
    assert!(
        max_upstream <= 1024 + 16,
        "upstream connections reached {max_upstream}"
    );
    assert!(ok > 0, "other clients got nothing through");
    assert!(
        bad.len() * 100 <= ok + bad.len(),
        "other clients: {} errors out of {}",
        bad.len(),
        ok + bad.len()
    );
    assert!(h2_ok > 0, "the burst itself got no 200");
    assert!(
        back,
        "RSS {rss_after} KiB not back under {limit} KiB within 15 s"
    );
    // Still serving.
    assert_eq!(get(port, "/after"), 200);
}

/// NGINX's `max_conns` with a queue: requests beyond an upstream's cap wait (and are served when a
/// connection frees up) rather than opening more connections; one that waits longer than
/// `timeouts.queue` gets 503.
#[test]
fn max_conns_queues_then_answers_503() {
    let (_a, pa) = backend();
    let (_bal, port) = balancer(&[
        "--upstream",
        &format!("127.0.0.1:{pa} max_conns=2"),
        "--queue-timeout",
        "1500ms",
    ]);
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_conns(vec![pa], stop.clone());
    // Four slow requests through a cap of two: all served, in two rounds.
    let t = Instant::now();
    let slow: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(move || get(port, "/slow?ms=400")))
        .collect();
    let codes: Vec<u16> = slow.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(codes, [200; 4]);
    assert!(
        t.elapsed() >= Duration::from_millis(800),
        "{:?}",
        t.elapsed()
    );
    // Two requests hold both connections for 4 s: a third waits 1.5 s in the queue, then 503.
    let hold: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || get(port, "/slow?ms=4000")))
        .collect();
    assert!(wait_until(Duration::from_secs(5), || conns_to(&[pa]) >= 2));
    let t = Instant::now();
    let resp = exchange(port, b"GET /queued HTTP/1.1\r\nHost: t\r\n\r\n");
    let waited = t.elapsed();
    assert_eq!(status_of(&resp), 503, "{resp}");
    assert!(
        waited >= Duration::from_millis(1400),
        "answered after {waited:?}"
    );
    for h in hold {
        assert_eq!(h.join().unwrap(), 200);
    }
    stop.store(true, Ordering::Relaxed);
    let max = sampler.join().unwrap();
    assert!(max <= 2, "{max} connections to an upstream capped at 2");
}

/// A client that sends part of a small body and stalls does not hold the only upstream slot:
/// the body is read before an upstream is picked (NGINX's proxy_request_buffering).
#[test]
fn a_stalled_small_body_holds_no_upstream_connection() {
    let (_a, pa) = backend();
    let (_bal, port) = balancer(&["--upstream", &format!("127.0.0.1:{pa} max_conns=1")]);
    let mut stalled = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nhalf")
            .unwrap();
        stalled.push(s);
    }
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
    )
    .unwrap();
    stalled.push(s);
    for _ in 0..5 {
        assert_eq!(get(port, "/fine"), 200);
    }
    // The stalled bodies, once finished, are served.
    stalled[0].write_all(b"56789X").unwrap();
    let mut buf = [0u8; 512];
    stalled[0]
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let n = stalled[0].read(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

/// `max_conns_per_ip`: the connections beyond it get 503 and are closed; others are served.
#[test]
fn per_ip_connection_limit() {
    let (_a, pa) = backend();
    let (_bal, port) = balancer(&[
        "--upstream",
        &format!("127.0.0.1:{pa}"),
        "--max-conns-per-ip",
        "2",
    ]);
    // Two keep-alive connections, each answered once, so the balancer has counted both. (Idle
    // connections raced wait_port's probe: while the balancer had not yet seen the probe close,
    // it still counted it and refused both with 503, and the test then saw only 200s.)
    let held: Vec<common::http::Conn> = (0..2)
        .map(|_| {
            common::poll(
                "a connection answered with 200",
                Duration::from_secs(5),
                || {
                    let mut c = common::http::Conn::open(port).ok()?;
                    (c.get("/held", true).ok()?.status == 200).then_some(c)
                },
            )
        })
        .collect();
    // Counted while they are open: the next connection is refused.
    let mut seen = Vec::new();
    let refused = wait_until(Duration::from_secs(5), || {
        seen.push(get(port, "/x"));
        seen.last() == Some(&503)
    });
    assert!(
        refused,
        "statuses seen: {seen:?}\nsockets on :{port}:\n{}",
        common::ports::sockets_on(port)
    );
    drop(held);
    assert!(wait_until(Duration::from_secs(5), || get(port, "/x") == 200));
}

/// A hand-written upstream: answers every request on every connection with `answer`.
fn fake_upstream(answer: &'static [u8]) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                if let Ok(n) = s.read(&mut buf) {
                    if n > 0 {
                        let _ = s.write_all(answer);
                    }
                }
                let _ = s.shutdown(std::net::Shutdown::Write);
                let _ = s.read(&mut buf);
            });
        }
    });
    port
}

/// RFC 9112's answers: no Host or two Hosts → 400, malformed chunked framing → 400 from a client
/// and 502 from an upstream, a flood of interim responses → 502 (a few pass).
#[test]
fn http1_hygiene_answers() {
    let (_a, pa) = backend();
    let (_bal, port) = balancer(&["--upstream", &format!("127.0.0.1:{pa}")]);
    let cases: &[(&str, &[u8], u16)] = &[
        ("no Host", b"GET / HTTP/1.1\r\n\r\n", 400),
        ("two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (
            "bad chunk size",
            b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            400,
        ),
        (
            "bare LF in the trailer section",
            b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\nGET /x HTTP/1.1\r\n\r\n",
            400,
        ),
        ("HTTP/1.0 without Host is fine", b"GET / HTTP/1.0\r\n\r\n", 200),
    ];
    for (what, raw, want) in cases {
        let got = exchange(port, raw);
        assert_eq!(status_of(&got), *want, "{what}: {got}");
    }

    let bad_chunks = fake_upstream(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nnot-hex\r\nxx\r\n0\r\n\r\n",
    );
    let interim_flood: &'static [u8] = Box::leak(
        ("HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n".repeat(50)
            + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .into_bytes()
            .into_boxed_slice(),
    );
    let flood = fake_upstream(interim_flood);
    let few = fake_upstream(
        b"HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    );
    for (up, want, what) in [
        (bad_chunks, 502, "bad chunked framing from the upstream"),
        (flood, 502, "50 interim responses"),
        (few, 200, "2 interim responses"),
    ] {
        let (_bal, port) = balancer(&["--upstream", &format!("127.0.0.1:{up}"), "--retries", "0"]);
        let got = exchange(
            port,
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        );
        // Interim responses come first; the final status is the last status line.
        let last = got
            .match_indices("HTTP/1.1 ")
            .last()
            .map(|(i, _)| &got[i..])
            .unwrap_or("");
        assert_eq!(status_of(last), want, "{what}: {got}");
        if want == 200 {
            assert_eq!(got.matches("HTTP/1.1 103").count(), 2, "{got}");
        }
    }
}
