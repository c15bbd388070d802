//! The balancer's forwarding policy is one for both client protocols: the same request sent over
//! HTTP/1.1 and over HTTP/2 (h2c prior knowledge, through curl) reaches the upstream with the same
//! X-Forwarded-* headers, and sticky sessions (`--sticky-cookie`) pin a client the same way. The
//! real binary in front of real Node backends (tests/fixtures/backend.js: `GET /headers` answers
//! the headers it got, any other path its name), on 127.0.0.1.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    alive, fixture, free_port, parse_response, request, require_npm, signal, wait_until, Cohort,
    CookieJar, Response, BIN,
};
use std::collections::BTreeSet;

fn listening(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// Runs `cmd` (output discarded, killed when `c` drops) and waits until it listens on `port`;
/// its pid.
fn serve(c: &Cohort, mut cmd: Command, port: u16) -> u32 {
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let pid = child.id();
    c.adopt(child);
    assert!(
        wait_until(Duration::from_secs(15), || listening(port)),
        "{cmd:?} did not listen on {port}"
    );
    pid
}

/// Starts backend.js named `name` (killed when `c` drops); its port and pid.
fn backend(c: &Cohort, name: &str) -> (u16, u32) {
    let port = free_port();
    let mut cmd = Command::new("node");
    cmd.arg(fixture("backend.js"))
        .arg(port.to_string())
        .arg(name);
    (port, serve(c, cmd, port))
}

/// Starts a balancer in front of `upstreams` with `extra` arguments (killed when `c` drops); its
/// port.
fn balancer(c: &Cohort, upstreams: &[u16], extra: &[&str]) -> u16 {
    let port = free_port();
    let mut cmd = Command::new(BIN);
    cmd.args(["balance", "--no-access-log", "--listen"])
        .arg(format!("127.0.0.1:{port}"));
    for u in upstreams {
        cmd.arg("--upstream").arg(format!("127.0.0.1:{u}"));
    }
    cmd.args(extra);
    serve(c, cmd, port);
    port
}

/// Starts one backend and a balancer in front of it; the balancer's port.
fn balancer_with_backend(c: &Cohort) -> u16 {
    let (backend, _) = backend(c, "a");
    balancer(c, &[backend], &[])
}

/// The headers the backend saw for `GET /headers` sent over HTTP/1.1 with `extra` header lines.
fn headers_via_http1(port: u16, extra: &[(&str, &str)]) -> serde_json::Value {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connecting to the balancer");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req =
        format!("GET /headers HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (n, v) in extra {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // The backend answers with Content-Length (one JSON document).
    let v: serde_json::Value = serde_json::from_str(body).expect("JSON from the backend");
    v["headers"].clone()
}

/// The same over HTTP/2 (curl, h2c prior knowledge).
fn headers_via_http2(port: u16, extra: &[(&str, &str)]) -> serde_json::Value {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "--http2-prior-knowledge"]);
    for (n, v) in extra {
        cmd.arg("-H").arg(format!("{n}: {v}"));
    }
    cmd.arg("-w")
        .arg("\n%{http_version}")
        .arg(format!("http://127.0.0.1:{port}/headers"));
    let out = cmd.output().expect("curl must be installed");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, version) = text.rsplit_once('\n').expect("curl's -w line");
    assert_eq!(version, "2", "not HTTP/2: {text}");
    let v: serde_json::Value = serde_json::from_str(body).expect("JSON from the backend");
    v["headers"].clone()
}

#[test]
fn http1_and_http2_forward_the_same_x_forwarded_headers() {
    let c = Cohort::new();
    let port = balancer_with_backend(&c);
    let cases: &[&[(&str, &str)]] = &[
        &[],
        // Two X-Forwarded-For headers: the whole chain is kept, the peer appended (HTTP/2 used to
        // keep only the first).
        &[
            ("X-Forwarded-For", "10.0.0.1"),
            ("X-Forwarded-For", "10.0.0.2, 10.0.0.3"),
        ],
        // A client's X-Forwarded-Proto is replaced, its X-Forwarded-Host kept.
        &[
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "front.example"),
        ],
    ];
    for extra in cases {
        let h1 = headers_via_http1(port, extra);
        let h2 = headers_via_http2(port, extra);
        for name in ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"] {
            assert_eq!(h1[name], h2[name], "{name} for {extra:?}: {h1} vs {h2}");
        }
    }
    let h2 = headers_via_http2(
        port,
        &[
            ("X-Forwarded-For", "10.0.0.1"),
            ("X-Forwarded-For", "10.0.0.2"),
        ],
    );
    assert_eq!(
        h2["x-forwarded-for"], "10.0.0.1, 10.0.0.2, 127.0.0.1",
        "{h2}"
    );
    assert_eq!(h2["x-forwarded-proto"], "http", "{h2}");
    let h1 = headers_via_http1(port, &[("X-Forwarded-Host", "front.example")]);
    assert_eq!(h1["x-forwarded-host"], "front.example", "{h1}");
}

#[derive(Clone, Copy, Debug)]
enum Proto {
    Http1,
    Http2,
}

/// GET `path` over `proto` with the cookies in `jar`.
fn get_via(proto: Proto, port: u16, path: &str, jar: &CookieJar) -> Response {
    match proto {
        Proto::Http1 => request(port, "GET", path, &jar.header(), b""),
        Proto::Http2 => {
            let mut cmd = Command::new("curl");
            cmd.args(["-sS", "-i", "--max-time", "10", "--http2-prior-knowledge"]);
            let cookie = jar.header();
            if !cookie.is_empty() {
                cmd.arg("-H").arg(cookie.trim_end());
            }
            let out = cmd
                .arg(format!("http://127.0.0.1:{port}{path}"))
                .output()
                .expect("curl must be installed");
            assert!(
                out.status.success(),
                "curl: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let r = parse_response(&out.stdout);
            assert!(r.head.starts_with("HTTP/2 "), "not HTTP/2: {}", r.head);
            r
        }
    }
}

/// The balancer's pins (`Set-Cookie: srv=…`) in a response, whole.
fn pins(r: &Response) -> Vec<String> {
    r.set_cookies()
        .into_iter()
        .filter(|(name, _, _)| name == "srv")
        .map(|(_, _, whole)| whole)
        .collect()
}

#[test]
fn a_sticky_cookie_pins_each_client_to_the_upstream_that_served_it() {
    let c = Cohort::new();
    let backends: Vec<(u16, u32)> = ["a", "b", "c"].iter().map(|n| backend(&c, n)).collect();
    let ports: Vec<u16> = backends.iter().map(|(port, _)| *port).collect();
    let port = balancer(&c, &ports, &["--sticky-cookie", "srv"]);
    for proto in [Proto::Http1, Proto::Http2] {
        // Three new clients: round robin as without the cookie, each pinned where it landed.
        let mut clients = Vec::new();
        for _ in 0..3 {
            let mut jar = CookieJar::default();
            let r = get_via(proto, port, "/", &jar);
            assert_eq!(r.status, 200, "{proto:?}: {}", r.head);
            let pin = pins(&r);
            assert_eq!(pin.len(), 1, "{proto:?}: {}", r.head);
            assert!(
                pin[0].ends_with("; Path=/; HttpOnly; SameSite=Lax"),
                "{proto:?}: {}",
                pin[0]
            );
            jar.update(&r);
            clients.push((jar, r.body.clone()));
        }
        let served: BTreeSet<&String> = clients.iter().map(|(_, name)| name).collect();
        assert_eq!(served.len(), 3, "{proto:?}: round robin over 3: {served:?}");
        // Each comes back to its own upstream, and is not pinned again.
        for (jar, name) in &clients {
            for _ in 0..10 {
                let r = get_via(proto, port, "/", jar);
                assert_eq!(&r.body, name, "{proto:?}: the client moved ({jar:?})");
                assert!(pins(&r).is_empty(), "{proto:?}: pinned again: {}", r.head);
            }
        }
        // The app's own cookie goes through beside the pin.
        let r = get_via(proto, port, "/login", &CookieJar::default());
        let names: BTreeSet<String> = r.set_cookies().into_iter().map(|(n, _, _)| n).collect();
        assert_eq!(
            names,
            BTreeSet::from(["sid".to_string(), "srv".to_string()]),
            "{proto:?}: {}",
            r.head
        );
        // A cookie naming no upstream (or not a token at all): served, and pinned.
        for bogus in ["0000000000000000", "garbage"] {
            let mut jar = CookieJar::default();
            jar.0.insert("srv".into(), bogus.into());
            let r = get_via(proto, port, "/", &jar);
            assert_eq!(r.status, 200, "{proto:?}: {}", r.head);
            assert_eq!(pins(&r).len(), 1, "{proto:?}, srv={bogus}: {}", r.head);
        }
    }

    // The upstream a client is pinned to dies: its next request is served by another one, which
    // pins it; it stays there.
    let mut jar = CookieJar::default();
    let first = get_via(Proto::Http1, port, "/", &jar);
    jar.update(&first);
    let (_, pid) = backends[["a\n", "b\n", "c\n"]
        .iter()
        .position(|n| *n == first.body)
        .unwrap_or_else(|| panic!("served by no known backend: {:?}", first.body))];
    signal(pid as i32, libc::SIGKILL);
    assert!(
        wait_until(Duration::from_secs(10), || !alive(pid as i32)),
        "backend {pid} did not die"
    );
    let moved = get_via(Proto::Http1, port, "/", &jar);
    assert_eq!(moved.status, 200, "{}", moved.head);
    assert_ne!(moved.body, first.body, "served by the dead backend?");
    assert_eq!(pins(&moved).len(), 1, "not pinned again: {}", moved.head);
    jar.update(&moved);
    for proto in [Proto::Http1, Proto::Http2] {
        for _ in 0..5 {
            let r = get_via(proto, port, "/", &jar);
            assert_eq!(r.body, moved.body, "{proto:?}: the client moved again");
            assert!(pins(&r).is_empty(), "{proto:?}: {}", r.head);
        }
    }
}

/// Starts tests/fixtures/socketio_server.js on a free port (killed when `c` drops); its port.
fn socketio_backend(c: &Cohort) -> u16 {
    let port = free_port();
    let mut cmd = Command::new("node");
    cmd.arg(fixture("socketio_server.js"))
        .arg(port.to_string())
        .env("NODE_PATH", require_npm("socket.io"));
    serve(c, cmd, port);
    port
}

/// One Socket.IO client on the long-polling transport, speaking Engine.IO 4 by hand as a browser
/// does (keeping cookies): the handshake, the connect to the default namespace, then `whoami`
/// events, each acknowledged with the server's pid. Every request after the handshake carries the
/// session id and must reach the process that made it. Returns the pids, or the first request
/// that failed (status and body).
fn socketio_session(port: u16, rounds: usize) -> Result<Vec<i64>, String> {
    let mut jar = CookieJar::default();
    let path = "/socket.io/?EIO=4&transport=polling";
    let send = |jar: &mut CookieJar, method: &str, path: &str, body: &[u8]| {
        let extra = format!("{}Content-Type: text/plain;charset=UTF-8\r\n", jar.header());
        let r = request(port, method, path, &extra, body);
        jar.update(&r);
        match r.status {
            200 => Ok(r.body),
            s => Err(format!("{method} {path}: {s} {}", r.body)),
        }
    };
    let open = send(&mut jar, "GET", path, b"")?;
    let sid = open
        .strip_prefix('0')
        .and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok())
        .and_then(|v| v["sid"].as_str().map(str::to_string))
        .ok_or_else(|| format!("not an Engine.IO handshake: {open}"))?;
    let path = format!("{path}&sid={sid}");
    send(&mut jar, "POST", &path, b"40")?;
    let connected = send(&mut jar, "GET", &path, b"")?;
    if !connected.starts_with("40") {
        return Err(format!("not connected: {connected}"));
    }
    let mut pids = Vec::new();
    for n in 0..rounds {
        send(
            &mut jar,
            "POST",
            &path,
            format!("42{n}[\"whoami\"]").as_bytes(),
        )?;
        let ack = send(&mut jar, "GET", &path, b"")?;
        let pid = ack
            .strip_prefix(&format!("43{n}["))
            .and_then(|rest| rest.strip_suffix(']'))
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| format!("not the ack of event {n}: {ack}"))?;
        pids.push(pid);
    }
    Ok(pids)
}

#[test]
fn socket_io_long_polling_needs_a_sticky_balancer_and_works_behind_one() {
    let c = Cohort::new();
    let workers = [socketio_backend(&c), socketio_backend(&c)];
    // Round robin alone: the connect after the handshake reaches the other worker, which does not
    // know the session (what Socket.IO's docs warn of).
    let plain = balancer(&c, &workers, &[]);
    let e = socketio_session(plain, 1).expect_err("long-polling worked without stickiness?");
    assert!(e.contains("400") && e.contains("Session ID unknown"), "{e}");
    // With the sticky cookie: several clients, each kept on one worker for all its requests; the
    // clients spread over both workers.
    let sticky = balancer(&c, &workers, &["--sticky-cookie", "srv"]);
    let mut served_by = BTreeSet::new();
    for client in 0..4 {
        let pids = socketio_session(sticky, 10).unwrap_or_else(|e| panic!("client {client}: {e}"));
        let one: BTreeSet<i64> = pids.iter().copied().collect();
        assert_eq!(one.len(), 1, "client {client} moved: {pids:?}");
        served_by.extend(one);
    }
    assert_eq!(served_by.len(), 2, "clients on {served_by:?}");
}
