//! A small HTTP/1.1 client over std sockets, enough to check what a proxy or an app answers: one
//! response reader (Content-Length, chunked, or up to the close) used for live connections and
//! for bytes already read, plus raw exchanges for framing tests.

use crate::common::poll::{poll, wait_until};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// How long a client waits for a response before it gives up.
const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// A response: status, head (status line and headers as sent), headers (lower-case names), body.
#[derive(Debug, Clone)]
pub struct Response {
    /// 0 when no response came (`head` then says why).
    pub status: u16,
    pub head: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// The response of a request that got none: status 0, `why` in the head.
    pub fn none(why: String) -> Response {
        Response {
            status: 0,
            head: why,
            headers: Vec::new(),
            body: String::new(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every `Set-Cookie` of the response as (name, value, the whole header value).
    pub fn set_cookies(&self) -> Vec<(String, String, String)> {
        self.headers
            .iter()
            .filter(|(n, _)| n == "set-cookie")
            .filter_map(|(_, v)| {
                let (name, value) = v.split(';').next()?.split_once('=')?;
                Some((name.trim().to_string(), value.trim().to_string(), v.clone()))
            })
            .collect()
    }

    /// The server said it closes the connection after this response.
    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }

    /// The `pid` field of a JSON body (the cluster fixtures answer with one).
    pub fn pid(&self) -> Option<i32> {
        let v: serde_json::Value = serde_json::from_str(&self.body).ok()?;
        v["pid"].as_i64().map(|p| p as i32)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {:?}", self.body))
    }
}

fn eof(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::UnexpectedEof, what.to_string())
}

/// Reads one response from `r`: up to Content-Length, the last chunk, or the end of the stream
/// (no body for HEAD, 1xx, 204 and 304). Stops right after the response: a server keeping a
/// `Connection: close` socket open is not waited for.
pub fn read_response(r: &mut impl BufRead, head_request: bool) -> std::io::Result<Response> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(eof("connection closed before a response"));
    }
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut head = line.trim_end().to_string();
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(eof("connection closed in the headers"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        head.push_str("\r\n");
        head.push_str(l);
        if let Some((n, v)) = l.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v): &(String, String)| v.clone())
    };
    let mut body = Vec::new();
    let bodiless = head_request || status < 200 || status == 204 || status == 304;
    if bodiless {
    } else if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 {
                return Err(eof("connection closed in a chunked body"));
            }
            let n = usize::from_str_radix(line.trim(), 16)
                .map_err(|_| std::io::Error::other(format!("bad chunk size {line:?}")))?;
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok(Response {
        status,
        head,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Parses a response already read (e.g. one part of a pipelined exchange); status 0 if it is not one.
pub fn parse_response(raw: &[u8]) -> Response {
    let mut r = raw;
    read_response(&mut r, false)
        .unwrap_or_else(|e| Response::none(format!("{e}: {:?}", String::from_utf8_lossy(raw))))
}

/// Why a connection could not be opened: refused, or anything else.
#[derive(Debug)]
pub enum Fail {
    Refused,
    Other(String),
}

/// One client connection to 127.0.0.1 (buffered reads, keep-alive if asked for).
pub struct Conn {
    port: u16,
    r: BufReader<TcpStream>,
}

impl Conn {
    pub fn open(port: u16) -> Result<Conn, Fail> {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => {
                let _ = s.set_read_timeout(Some(READ_TIMEOUT));
                let _ = s.set_nodelay(true);
                Ok(Conn {
                    port,
                    r: BufReader::new(s),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Err(Fail::Refused),
            Err(e) => Err(Fail::Other(format!("connect to port {port}: {e}"))),
        }
    }

    /// Sends `GET path` (asking to keep the connection alive or not) and reads the response.
    pub fn get(&mut self, path: &str, keep_alive: bool) -> std::io::Result<Response> {
        self.request("GET", path, "", b"", keep_alive)
    }

    /// Sends one request (`extra`: raw header lines, each ending in \r\n) and reads the response.
    /// Content-Length goes with a body, or with a method other than GET and HEAD.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        extra: &str,
        body: &[u8],
        keep_alive: bool,
    ) -> std::io::Result<Response> {
        let conn = if keep_alive { "keep-alive" } else { "close" };
        let length = if body.is_empty() && matches!(method, "GET" | "HEAD") {
            String::new()
        } else {
            format!("Content-Length: {}\r\n", body.len())
        };
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: {conn}\r\n{length}{extra}\r\n",
            self.port
        );
        let s = self.r.get_mut();
        s.write_all(head.as_bytes())?;
        s.write_all(body)?;
        read_response(&mut self.r, method == "HEAD")
    }
}

/// One GET on a new connection (`Connection: close`).
pub fn get(port: u16, path: &str) -> Result<Response, String> {
    let mut c = Conn::open(port).map_err(|e| format!("{e:?}"))?;
    c.get(path, false).map_err(|e| e.to_string())
}

/// One request on a new connection (`Connection: close`); a failure is a response with status 0
/// whose head says what went wrong.
pub fn request(port: u16, method: &str, path: &str, extra: &str, body: &[u8]) -> Response {
    let mut c = match Conn::open(port) {
        Ok(c) => c,
        Err(e) => return Response::none(format!("connect to port {port}: {e:?}")),
    };
    c.request(method, path, extra, body, false)
        .unwrap_or_else(|e| Response::none(format!("{method} {path} on port {port}: {e}")))
}

/// Writes `bytes` on a new connection and returns everything read until the server closes it
/// (or 10 s pass).
pub fn raw(port: u16, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connect to port {port}: {e}"));
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).to_string()
}

/// Reads from `s` until `want` appears (or the deadline); returns everything read.
pub fn read_until(s: &mut TcpStream, want: &str, timeout: Duration) -> String {
    let end = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
    while Instant::now() < end && !String::from_utf8_lossy(&out).contains(want) {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    String::from_utf8_lossy(&out).to_string()
}

/// Waits until something accepts connections on 127.0.0.1:`port`.
pub fn wait_port(port: u16, timeout: Duration) {
    poll(&format!("port {port} to accept"), timeout, || {
        TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
    });
}

/// Waits until `port` answers a GET / with 200; fails the test otherwise.
pub fn wait_serving(port: u16, timeout: Duration) {
    let mut last = String::new();
    let ok = wait_until(timeout, || match get(port, "/") {
        Ok(r) if r.status == 200 => true,
        Ok(r) => {
            last = format!("status {}", r.status);
            false
        }
        Err(e) => {
            last = e;
            false
        }
    });
    assert!(ok, "port {port} did not serve within {timeout:?}: {last}");
}

/// A browser's cookie jar, as far as tests need one: keeps what `Set-Cookie` sets, sends it back.
#[derive(Default, Debug, Clone)]
#[allow(dead_code)]
pub struct CookieJar(pub std::collections::BTreeMap<String, String>);

#[allow(dead_code)]
impl CookieJar {
    /// Keeps the cookies `r` sets.
    pub fn update(&mut self, r: &Response) {
        for (name, value, _) in r.set_cookies() {
            self.0.insert(name, value);
        }
    }

    /// The `Cookie:` header line (with CRLF) for the next request; empty when the jar is.
    pub fn header(&self) -> String {
        if self.0.is_empty() {
            return String::new();
        }
        let pairs: Vec<String> = self.0.iter().map(|(n, v)| format!("{n}={v}")).collect();
        format!("Cookie: {}\r\n", pairs.join("; "))
    }
}
