//! The balancer's forwarding policy is one for both client protocols: the same request sent over
//! HTTP/1.1 and over HTTP/2 (h2c prior knowledge, through curl) reaches the upstream with the same
//! X-Forwarded-* headers. The real binary in front of a real Node backend
//! (tests/fixtures/backend.js, whose `GET /headers` answers the headers it got), on 127.0.0.1.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{fixture, free_port, wait_until, Cohort, BIN};

fn listening(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// Starts the backend and a balancer in front of it (both killed when `c` drops); the balancer's
/// port.
fn balancer_with_backend(c: &Cohort) -> u16 {
    let backend = free_port();
    let child = Command::new("node")
        .arg(fixture("backend.js"))
        .arg(backend.to_string())
        .arg("a")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("node must be installed");
    c.adopt(child);
    assert!(
        wait_until(Duration::from_secs(15), || listening(backend)),
        "backend on {backend} did not start"
    );
    let port = free_port();
    let child = Command::new(BIN)
        .args(["balance", "--no-access-log", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--upstream")
        .arg(format!("127.0.0.1:{backend}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("running cohort balance");
    c.adopt(child);
    assert!(
        wait_until(Duration::from_secs(15), || listening(port)),
        "balancer on {port} did not start"
    );
    port
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
