//! The HTTP/1.x proxy path (plain and TLS without ALPN h2): one task per client connection reads
//! each request head, rewrites it straight into the bytes sent upstream, sends it on a pooled
//! upstream connection that this task owns for the exchange, and copies the response back. Bodies
//! are streamed both ways (Content-Length, chunked, or until close), Upgrade requests become
//! tunnels, and pipelined requests are served in order. HTTP/2 clients are handed to hyper
//! (`server.rs`, `http.rs`).
//!
//! Why by hand and not hyper: hyper's server turns every request into a `Request` with a
//! `HeaderMap` that the proxy then rewrites and hyper's client serialises again, and its client
//! runs each upstream connection as a separate task fed through a channel. On the balancer
//! benchmark (2 Node backends, `wrk -t1 -c64`) that user-space work was 5.7 µs of the proxy's
//! 17 µs per request, while the kernel part was the same as a plain TCP relay's; it kept cohort
//! behind NGINX. Here a request costs two reads, two writes and one pass over the header bytes.
//! The parser is `httparse` (the one inside hyper); what is written here is the framing rules of
//! RFC 9112 a proxy must apply (body length, chunked bodies, hop-by-hop headers, keep-alive).

use std::io::Write as _;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant as TokioInstant, Sleep};

use super::conn::{checkin_stream, checkout_stream};
use super::http::{DrainToken, Shared};
use super::log;
use super::pool::Active;
use super::strategy::{cookie_value, ip_key};
use super::tcp;
use crate::config::balancer::{HashKey, Strategy};

/// How long a keep-alive connection may stay open once the balancer drains: a request that arrives
/// in time is served (with `Connection: close`); an idle one is closed after this. Closing idle
/// connections at once would race with requests clients are sending on them right then.
pub const DRAIN_GRACE: Duration = Duration::from_millis(1000);

/// Most headers in a request or response head (more is a 431, or a 502 from an upstream).
const MAX_HEADERS: usize = 128;
/// Most attempts remembered per request (more upstreams than this are still tried, by strategy order).
const MAX_TRIED: usize = 16;
/// Largest response head accepted from an upstream (more is a 502).
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Read size for bodies.
const READ_CHUNK: usize = 16 * 1024;
/// The HTTP/2 connection preface starts with this: such a connection goes to hyper.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// Everything a client connection needs besides its socket.
pub struct Conn {
    pub shared: Arc<Shared>,
    pub peer: SocketAddr,
    pub shutdown: watch::Receiver<bool>,
    /// Held for the connection's life (tunnels included): the drain waits for it.
    pub drain: DrainToken,
}

/// How a connection ended, for the caller.
pub enum Outcome {
    /// Served (or refused) and closed.
    Done,
    /// The client speaks HTTP/2 with prior knowledge: these bytes were read and must be replayed;
    /// the connection's context comes back for the HTTP/2 server.
    Http2(BytesMut, Conn),
}

/// A request or response body's framing (RFC 9112 section 6).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Response only: the body ends when the upstream closes.
    UntilClose,
}

/// What `parse_request` learned about a request; its head for the upstream is in the out buffer.
struct ReqInfo {
    head_len: usize,
    body: Framing,
    keep_alive: bool,
    http10: bool,
    is_head: bool,
    idempotent: bool,
    upgrade: bool,
    expect_continue: bool,
    /// The request had no Host header (HTTP/1.0): the upstream's address is sent as Host.
    needs_host: bool,
    key: u64,
    /// `METHOD PATH VERSION` for the access log (only when it is on).
    log_line: Option<String>,
}

/// Why a request head was refused: the status and the text sent back.
struct Refuse(u16, &'static str);

/// Serves HTTP/1.x requests on `client` until it closes, an error, or the drain.
pub async fn serve<S>(mut client: S, c: Conn) -> Outcome
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut st = State {
        c,
        buf: BytesMut::with_capacity(8 * 1024),
        up_buf: BytesMut::with_capacity(8 * 1024),
        out: Vec::with_capacity(1024),
        served: 0,
        xff_ip: String::new(),
        drain_deadline: None,
        head_timer: Box::pin(tokio::time::sleep_until(TokioInstant::now())),
        up_timer: Box::pin(tokio::time::sleep_until(TokioInstant::now())),
    };
    st.xff_ip = st.c.peer.ip().to_string();
    let s = st.c.shared.clone();
    let settings = &s.settings;
    loop {
        // 1. A whole request head (or the end of the connection), within one deadline for the
        // whole head: a client trickling a byte at a time (slowloris) does not extend it.
        let head_started = TokioInstant::now();
        let head_deadline = head_started + settings.header_read_timeout;
        let info = loop {
            if !st.buf.is_empty() {
                if st.served == 0 && st.buf.starts_with(&H2_PREFACE[..st.buf.len().min(16)]) {
                    if st.buf.len() >= H2_PREFACE.len() {
                        return Outcome::Http2(std::mem::take(&mut st.buf), st.c);
                    }
                } else {
                    match st.parse_request() {
                        Ok(Some(info)) => break info,
                        Ok(None) => {}
                        Err(Refuse(code, text)) => {
                            st.refuse_request(&mut client, code, text, head_started)
                                .await;
                            return Outcome::Done;
                        }
                    }
                    if st.buf.len() >= settings.max_header_bytes {
                        let text = "431 Request Header Fields Too Large\n";
                        st.refuse_request(&mut client, 431, text, head_started)
                            .await;
                        return Outcome::Done;
                    }
                }
            }
            match st.read_client(&mut client, head_deadline).await {
                ReadHead::Data => {}
                ReadHead::Closed => return Outcome::Done,
                ReadHead::TimedOut => {
                    // A client that started a head and stalled (slowloris), or never sent one, is
                    // told why (RFC 9110 408); an idle keep-alive connection just ends, as in NGINX.
                    if !st.buf.is_empty() || st.served == 0 {
                        let text = "408 Request Timeout\n";
                        st.refuse_request(&mut client, 408, text, head_started)
                            .await;
                    }
                    return Outcome::Done;
                }
            }
        };
        // 2. Proxy it; the connection goes on only if both sides allow.
        match st.proxy(&mut client, info, &s).await {
            Next::KeepAlive => st.served += 1,
            Next::Close => {
                let _ = client.shutdown().await;
                return Outcome::Done;
            }
        }
    }
}

enum ReadHead {
    Data,
    Closed,
    TimedOut,
}

enum Next {
    KeepAlive,
    Close,
}

/// The outcome of one attempt on one upstream.
enum Attempt {
    /// A response head arrived (parsed into the out buffer); the upstream connection is returned.
    Response(TcpStream, RespInfo),
    /// No connection could be made: nothing was sent.
    ConnectFailed,
    /// A pooled connection failed as the request was written: nothing reached the upstream.
    NotSent,
    /// A pooled connection closed before any response byte: the request may have been processed.
    Stale,
    /// No response head within the upstream timeout.
    TimedOut,
    /// The upstream failed (reset, closed, garbage) before a complete response head; `reused`:
    /// on a pooled connection.
    Failed { reused: bool },
    /// The client went away while its body was being forwarded.
    ClientGone,
    /// The client stopped sending its body (408, as NGINX's `client_body_timeout`).
    ClientStalled,
}

struct RespInfo {
    status: u16,
    body: Framing,
    /// The upstream connection may carry another request after this response.
    reusable: bool,
    /// Chunked body to an HTTP/1.0 client: decode it, the end is the connection's close.
    dechunk: bool,
    client_keep_alive: bool,
}

struct State {
    c: Conn,
    /// Bytes read from the client, not yet consumed.
    buf: BytesMut,
    /// Bytes read from the current upstream connection, not yet consumed.
    up_buf: BytesMut,
    /// Head being written: to the upstream (request), then to the client (response).
    out: Vec<u8>,
    served: u32,
    xff_ip: String,
    /// Set when the drain began while this connection was idle.
    drain_deadline: Option<TokioInstant>,
    /// The request head's deadline and the upstream's answer deadline: one timer each per
    /// connection, moved later for every request. tokio then only updates the deadline (one atomic
    /// operation) instead of adding a timer to its wheel and removing it again for every request.
    head_timer: Pin<Box<Sleep>>,
    up_timer: Pin<Box<Sleep>>,
}

impl State {
    fn draining(&self) -> bool {
        *self.c.shutdown.borrow()
    }

    /// Reads more of a request head, until `deadline` (and the drain grace once draining).
    async fn read_client<S: AsyncRead + Unpin>(
        &mut self,
        client: &mut S,
        deadline: TokioInstant,
    ) -> ReadHead {
        loop {
            let deadline = match self.drain_deadline {
                Some(d) if self.buf.is_empty() => d.min(deadline),
                _ => deadline,
            };
            if self.head_timer.deadline() != deadline {
                self.head_timer.as_mut().reset(deadline);
            }
            let reserve = self.buf.capacity() - self.buf.len();
            if reserve < 1024 {
                self.buf.reserve(8 * 1024);
            }
            let shutdown = &mut self.c.shutdown;
            let watching = self.drain_deadline.is_none();
            tokio::select! {
                biased;
                r = client.read_buf(&mut self.buf) => {
                    return match r {
                        Ok(0) | Err(_) => ReadHead::Closed,
                        Ok(_) => ReadHead::Data,
                    };
                }
                _ = self.head_timer.as_mut() => {
                    return if self.drain_deadline.is_some() && self.buf.is_empty() {
                        ReadHead::Closed
                    } else {
                        ReadHead::TimedOut
                    };
                }
                changed = shutdown.changed(), if watching => {
                    if changed.is_err() || *shutdown.borrow() {
                        self.drain_deadline = Some(TokioInstant::now() + DRAIN_GRACE);
                    }
                }
            }
        }
    }

    /// Parses the head at the start of `buf`; on success the upstream request head (without the
    /// final CRLF) is in `out`. `Ok(None)`: incomplete.
    fn parse_request(&mut self) -> Result<Option<ReqInfo>, Refuse> {
        let settings = &self.c.shared.settings;
        // Uninitialised: zeroing 128 headers twice per request showed in profiles.
        let mut headers = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        let head_len = match req.parse_with_uninit_headers(&self.buf, &mut headers) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(Refuse(431, "431 Request Header Fields Too Large\n"))
            }
            Err(httparse::Error::Version) if names_other_version(&self.buf) => {
                return Err(Refuse(505, "505 HTTP Version Not Supported\n"))
            }
            Err(_) => return Err(Refuse(400, "400 Bad Request\n")),
        };
        if head_len > settings.max_header_bytes {
            return Err(Refuse(431, "431 Request Header Fields Too Large\n"));
        }
        let method = req.method.unwrap_or("GET");
        let target = req.path.unwrap_or("/");
        let http10 = req.version == Some(0);
        if method == "CONNECT" {
            return Err(Refuse(
                405,
                "405 Method Not Allowed: CONNECT is not proxied\n",
            ));
        }
        // Origin-form for the upstream; an absolute-form target's authority stands in for Host.
        let (path, authority) = if target.starts_with('/') || target == "*" {
            (target, None)
        } else if let Some(rest) = target
            .strip_prefix("http://")
            .or_else(|| target.strip_prefix("https://"))
        {
            match rest.find(['/', '?']) {
                Some(i) if rest.as_bytes()[i] == b'/' => (&rest[i..], Some(&rest[..i])),
                Some(_) => return Err(Refuse(400, "400 Bad Request\n")),
                None => ("/", Some(rest)),
            }
        } else {
            return Err(Refuse(400, "400 Bad Request\n"));
        };

        // Connection options first: they decide which headers are forwarded.
        let ConnectionOptions {
            close,
            keep_alive: keep,
            upgrade: conn_upgrade,
            named,
        } = connection_options(req.headers);

        let out = &mut self.out;
        out.clear();
        out.extend_from_slice(method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(path.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");

        let mut length: Option<u64> = None;
        let mut te: Option<&[u8]> = None;
        let mut upgrade: Option<&[u8]> = None;
        let mut host: Option<&[u8]> = authority.map(str::as_bytes);
        let mut has_host_header = false;
        let mut has_xfh = false;
        let mut expect_continue = false;
        let mut xff_prev: Vec<&[u8]> = Vec::new();
        let mut key_value: Option<&[u8]> = None;
        let (hash_header, hash_cookie) = match (settings.strategy, &settings.hash_key) {
            (Strategy::Hash, HashKey::Header(k)) => (Some(k.as_str()), None),
            (Strategy::Hash, HashKey::Cookie(k)) => (None, Some(k.as_str())),
            _ => (None, None),
        };
        for h in req.headers.iter() {
            let n = h.name;
            let copy = match n.len() {
                // Matching on length first keeps the common case (a header we pass on) cheap.
                2 if n.eq_ignore_ascii_case("te") => false,
                4 if n.eq_ignore_ascii_case("host") => {
                    has_host_header = true;
                    if authority.is_none() {
                        host = Some(h.value);
                    }
                    true
                }
                6 if n.eq_ignore_ascii_case("expect") => {
                    if h.value.eq_ignore_ascii_case(b"100-continue") {
                        expect_continue = true;
                        false
                    } else {
                        true
                    }
                }
                7 if n.eq_ignore_ascii_case("upgrade") => {
                    upgrade = Some(h.value);
                    false
                }
                10 if n.eq_ignore_ascii_case("connection")
                    || n.eq_ignore_ascii_case("keep-alive") =>
                {
                    false
                }
                14 if n.eq_ignore_ascii_case("content-length") => {
                    let v = content_length(h.value)
                        .ok_or(Refuse(400, "400 Bad Request: bad Content-Length\n"))?;
                    if length.is_some_and(|l| l != v) {
                        return Err(Refuse(400, "400 Bad Request: conflicting Content-Length\n"));
                    }
                    length = Some(v);
                    false
                }
                15 if n.eq_ignore_ascii_case("x-forwarded-for") => {
                    xff_prev.push(h.value);
                    false
                }
                16 if n.eq_ignore_ascii_case("proxy-connection") => false,
                16 if n.eq_ignore_ascii_case("x-forwarded-host") => {
                    has_xfh = true;
                    true
                }
                17 if n.eq_ignore_ascii_case("transfer-encoding") => {
                    if te.is_some() {
                        return Err(Refuse(400, "400 Bad Request: repeated Transfer-Encoding\n"));
                    }
                    te = Some(h.value);
                    false
                }
                17 if n.eq_ignore_ascii_case("x-forwarded-proto") => false,
                _ => !named.iter().any(|t| t.eq_ignore_ascii_case(n)),
            };
            if hash_header.is_some_and(|k| n.eq_ignore_ascii_case(k)) {
                key_value = Some(h.value);
            }
            if let Some(k) = hash_cookie {
                if key_value.is_none() && n.eq_ignore_ascii_case("cookie") {
                    key_value = cookie_value(h.value, k);
                }
            }
            if copy {
                out.extend_from_slice(n.as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(h.value);
                out.extend_from_slice(b"\r\n");
            }
        }
        if let (Some(a), false) = (authority, has_host_header) {
            out.extend_from_slice(b"host: ");
            out.extend_from_slice(a.as_bytes());
            out.extend_from_slice(b"\r\n");
        }

        // Body framing (RFC 9112 6.1-6.3). Transfer-Encoding wins over Content-Length, which is
        // then dropped and the connection closed after the response (a smuggling defence).
        let mut must_close = false;
        let body = match te {
            Some(v) => {
                if http10 {
                    return Err(Refuse(
                        400,
                        "400 Bad Request: Transfer-Encoding in HTTP/1.0\n",
                    ));
                }
                if !chunked_last(v) {
                    return Err(Refuse(
                        501,
                        "501 Not Implemented: unsupported Transfer-Encoding\n",
                    ));
                }
                if length.is_some() {
                    must_close = true;
                }
                out.extend_from_slice(b"transfer-encoding: ");
                out.extend_from_slice(v);
                out.extend_from_slice(b"\r\n");
                Framing::Chunked
            }
            None => match length {
                Some(n) => {
                    let _ = write!(out, "content-length: {n}\r\n");
                    if n == 0 {
                        Framing::None
                    } else {
                        Framing::Length(n)
                    }
                }
                None => Framing::None,
            },
        };
        let upgrade = match upgrade {
            Some(u) if conn_upgrade && !http10 => {
                out.extend_from_slice(b"connection: upgrade\r\nupgrade: ");
                out.extend_from_slice(u);
                out.extend_from_slice(b"\r\n");
                true
            }
            _ => false,
        };
        out.extend_from_slice(b"x-forwarded-for: ");
        for p in &xff_prev {
            out.extend_from_slice(p);
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(self.xff_ip.as_bytes());
        out.extend_from_slice(if self.c.shared.https {
            b"\r\nx-forwarded-proto: https\r\n"
        } else {
            b"\r\nx-forwarded-proto: http\r\n"
        });
        if let (false, Some(h)) = (has_xfh, host) {
            out.extend_from_slice(b"x-forwarded-host: ");
            out.extend_from_slice(h);
            out.extend_from_slice(b"\r\n");
        }

        let key = if settings.strategy == Strategy::Hash {
            match key_value {
                Some(v) => xxhash_rust::xxh3::xxh3_64(v),
                None => ip_key(self.c.peer.ip()),
            }
        } else {
            0
        };
        let keep_alive = !must_close && !close && (!http10 || keep);
        let log_line = settings.access_log.then(|| {
            let target = escape_for_log(target.as_bytes());
            format!("{method} {target} HTTP/1.{}", if http10 { 0 } else { 1 })
        });
        Ok(Some(ReqInfo {
            head_len,
            body,
            keep_alive,
            http10,
            is_head: method == "HEAD",
            idempotent: matches!(
                method,
                "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
            ),
            upgrade,
            expect_continue,
            needs_host: host.is_none(),
            key,
            log_line,
        }))
    }

    /// Answers a request refused before routing (malformed, too large, too slow) and logs it as
    /// NGINX does: with the request line as far as it arrived (escaped), or `-`.
    async fn refuse_request<S: AsyncWrite + Unpin>(
        &mut self,
        client: &mut S,
        code: u16,
        text: &'static str,
        started: TokioInstant,
    ) {
        if self.c.shared.settings.access_log {
            let line = self.buf[..].split(|b| *b == b'\n').next().unwrap_or(b"");
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let line = escape_for_log(&line[..line.len().min(MAX_LOGGED_LINE)]);
            log::write(log::Entry {
                client: self.c.peer.ip(),
                request: format_args!("{}", if line.is_empty() { "-" } else { &line }),
                status: code,
                bytes: text.len() as u64,
                upstream: None,
                duration: started.elapsed(),
            });
        }
        let _ = self.reply(client, code, text, false).await;
    }

    /// Sends a short response of our own; with `keep`, the connection may go on.
    async fn reply<S: AsyncWrite + Unpin>(
        &mut self,
        client: &mut S,
        code: u16,
        text: &'static str,
        keep: bool,
    ) -> std::io::Result<()> {
        let reason = text
            .split_once(' ')
            .map(|(_, r)| r.split([':', '\n']).next().unwrap_or(""))
            .unwrap_or("");
        let head = format!(
            "HTTP/1.1 {code} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n{}\r\n",
            text.len(),
            if keep { "" } else { "connection: close\r\n" }
        );
        let mut v = head.into_bytes();
        v.extend_from_slice(text.as_bytes());
        client.write_all(&v).await?;
        client.flush().await?;
        if !keep {
            let _ = client.shutdown().await;
        }
        Ok(())
    }

    /// Proxies the request whose head starts `buf` (its upstream head is in `out`).
    /// `shared` is the connection's own reference (taking one per request would write a reference
    /// count that every worker writes).
    async fn proxy<S>(&mut self, client: &mut S, info: ReqInfo, shared: &Shared) -> Next
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let s = &shared.settings;
        let pool = &shared.pool;
        // One clock read per request: the log's start, the upstream deadline and the pool's idle
        // bookkeeping all use it.
        let start = Instant::now();
        self.buf.advance(info.head_len);
        if info.expect_continue && info.body != Framing::None {
            // The body is streamed, not buffered: the client may send it now (as NGINX answers).
            if client
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_err()
            {
                return Next::Close;
            }
        }
        let head_end = self.out.len();
        let can_retry = s.retries > 0
            && info.idempotent
            && info.body == Framing::None
            && !info.upgrade
            && pool.upstreams.len() > 1;
        let mut tried = [usize::MAX; MAX_TRIED];
        let mut ntried = 0;
        let mut retries_left = s.retries;
        let max_attempts = pool.upstreams.len() + s.retries as usize + 2;
        // The last failure: which upstream, the status and the text for the client.
        let mut failure: Option<(usize, u16, &'static str)> = None;
        const FAILED: &str = "502 Bad Gateway: the upstream failed\n";
        const UNAVAILABLE: &str = "502 Bad Gateway: no upstream available\n";
        const TIMEOUT: &str = "504 Gateway Timeout: the upstream did not answer in time\n";
        for _ in 0..max_attempts {
            let Some(idx) = pool.pick(info.key, &tried[..ntried]) else {
                break;
            };
            let remembered = ntried < MAX_TRIED;
            if remembered {
                tried[ntried] = idx;
                ntried += 1;
            }
            let guard = Active::new(&pool.upstreams[idx]);
            self.out.truncate(head_end);
            if info.needs_host {
                self.out.extend_from_slice(b"host: ");
                self.out
                    .extend_from_slice(pool.upstreams[idx].label.as_bytes());
                self.out.extend_from_slice(b"\r\n");
            }
            self.out.extend_from_slice(b"\r\n");
            // A retry gets its own deadline; the first attempt uses the request's clock read.
            let now = if ntried > 1 || failure.is_some() {
                Instant::now()
            } else {
                start
            };
            match self.attempt(client, &info, idx, now, shared).await {
                Attempt::Response(up, resp) => {
                    return self
                        .respond(client, &info, idx, up, resp, guard, start, shared)
                        .await;
                }
                Attempt::ConnectFailed => {
                    // Nothing was sent: the next upstream at once, whatever the method.
                    pool.mark_failed(idx);
                    failure = Some((idx, 502, UNAVAILABLE));
                }
                Attempt::NotSent => {
                    // A pooled connection the upstream had closed, found before the request went
                    // out: not this upstream's fault, and safe to send again whatever the method.
                    ntried -= usize::from(remembered);
                }
                Attempt::Stale => {
                    // A pooled connection closed with no response byte (the keep-alive race).
                    // Idempotent bodiless requests go again; others may have been processed.
                    ntried -= usize::from(remembered);
                    failure = Some((idx, 502, FAILED));
                    if !(info.idempotent && info.body == Framing::None && !info.upgrade) {
                        break;
                    }
                }
                Attempt::TimedOut => {
                    // Too slow: an error of this upstream, and an idempotent bodiless request goes
                    // to another one, as NGINX's `proxy_next_upstream timeout` does.
                    pool.upstreams[idx].errors.fetch_add(1, Relaxed);
                    failure = Some((idx, 504, TIMEOUT));
                    if can_retry && retries_left > 0 {
                        retries_left -= 1;
                        continue;
                    }
                    break;
                }
                Attempt::Failed { reused } => {
                    // A fresh connection that fails says the upstream is in trouble: out of the
                    // rotation. One pooled connection failing is counted, not more.
                    if reused {
                        pool.upstreams[idx].errors.fetch_add(1, Relaxed);
                    } else {
                        pool.mark_failed(idx);
                    }
                    failure = Some((idx, 502, FAILED));
                    if can_retry && retries_left > 0 {
                        retries_left -= 1;
                        continue;
                    }
                    break;
                }
                Attempt::ClientGone => return Next::Close,
                Attempt::ClientStalled => {
                    let _ = self
                        .reply(
                            client,
                            408,
                            "408 Request Timeout: the request body stalled\n",
                            false,
                        )
                        .await;
                    return Next::Close;
                }
            }
        }
        let (upstream, code, text) = match failure {
            Some((i, code, text)) => (Some(i), code, text),
            None => (None, 502, UNAVAILABLE),
        };
        // A request body that was not (fully) read leaves the connection unusable.
        let keep = info.keep_alive && info.body == Framing::None && !self.draining();
        self.log(&info, upstream, code, text.len() as u64, start);
        match self.reply(client, code, text, keep).await {
            Ok(()) if keep => Next::KeepAlive,
            _ => Next::Close,
        }
    }

    /// One try on upstream `idx`: connect (or reuse), send the head and body, read the response head.
    async fn attempt<S>(
        &mut self,
        client: &mut S,
        info: &ReqInfo,
        idx: usize,
        now: Instant,
        shared: &Shared,
    ) -> Attempt
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let s = &shared.settings;
        let (mut up, reused) =
            match checkout_stream(&shared.pool, idx, s.connect_timeout, s.upstream_idle, now).await
            {
                Ok(c) => c,
                Err(_) => return Attempt::ConnectFailed,
            };
        self.up_buf.clear();
        // Small bodies already read go out with the head, in one write.
        let mut sent_body = false;
        if let Framing::Length(n) = info.body {
            if (self.buf.len() as u64) >= n && n <= READ_CHUNK as u64 {
                self.out.extend_from_slice(&self.buf[..n as usize]);
                self.buf.advance(n as usize);
                sent_body = true;
            }
        }
        if up.write_all(&self.out).await.is_err() {
            return if reused && !sent_body {
                Attempt::NotSent
            } else {
                Attempt::Failed { reused }
            };
        }
        let mut body_failed = false;
        if !sent_body && info.body != Framing::None {
            let mut no_head = Vec::new();
            let body = copy_body(
                client,
                &mut self.buf,
                &mut up,
                &mut no_head,
                info.body,
                false,
                s.idle_timeout,
            );
            match body.await {
                Ok(_) => {}
                Err(CopyError::Read) => return Attempt::ClientGone,
                Err(CopyError::Stalled) => return Attempt::ClientStalled,
                // The upstream may have answered early (413, say) and closed: read that answer.
                Err(CopyError::Write) => body_failed = true,
            }
        }
        // The upstream's time to answer starts once the whole request is sent.
        let sent_at = if sent_body || info.body == Framing::None {
            TokioInstant::from_std(now)
        } else {
            TokioInstant::now()
        };
        self.up_timer.as_mut().reset(sent_at + s.upstream_timeout);
        loop {
            let got = tokio::select! {
                biased;
                r = up.read_buf(&mut self.up_buf) => Some(r),
                _ = self.up_timer.as_mut() => None,
            };
            match got {
                None => return Attempt::TimedOut,
                Some(Ok(0)) | Some(Err(_)) => {
                    return if self.up_buf.is_empty() && reused && !body_failed {
                        Attempt::Stale
                    } else {
                        Attempt::Failed { reused }
                    };
                }
                Some(Ok(_)) => {}
            }
            // Every complete head in the buffer: 1xx ones (not 101) are passed on to an HTTP/1.1
            // client, the final one ends the attempt.
            loop {
                match self.parse_response(info) {
                    Ok(Some(Parsed::Final(resp))) => return Attempt::Response(up, resp),
                    Ok(Some(Parsed::Interim(len))) => {
                        if !info.http10 && client.write_all(&self.up_buf[..len]).await.is_err() {
                            return Attempt::ClientGone;
                        }
                        self.up_buf.advance(len);
                    }
                    Ok(None) if self.up_buf.len() > MAX_RESPONSE_HEAD => {
                        return Attempt::Failed { reused }
                    }
                    Ok(None) => break,
                    Err(()) => return Attempt::Failed { reused },
                }
            }
        }
    }

    /// Parses the response head at the start of `up_buf`. A final response's head for the client
    /// replaces `out`; the head's bytes are consumed from `up_buf`.
    fn parse_response(&mut self, info: &ReqInfo) -> Result<Option<Parsed>, ()> {
        let mut headers = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut resp,
            &self.up_buf,
            &mut headers,
        ) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(()),
        };
        let status = resp.code.unwrap_or(502);
        if (100..200).contains(&status) && status != 101 {
            return Ok(Some(Parsed::Interim(len)));
        }
        let up_http10 = resp.version == Some(0);
        // Framing and connection options first: they decide which headers are passed on.
        let ConnectionOptions {
            close,
            keep_alive: keep,
            named,
            ..
        } = connection_options(resp.headers);
        let mut chunked = false;
        let mut te_other = false;
        for h in resp.headers.iter() {
            if h.name.eq_ignore_ascii_case("transfer-encoding") {
                if chunked_last(h.value) {
                    chunked = true;
                } else {
                    te_other = true;
                }
            }
        }
        let tunnel = status == 101 && info.upgrade;
        let out = &mut self.out;
        out.clear();
        let _ = write!(out, "HTTP/1.1 {status} ");
        out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\n");
        let mut length: Option<u64> = None;
        let mut upgrade: Option<&[u8]> = None;
        for h in resp.headers.iter() {
            let n = h.name;
            let copy = match n.len() {
                2 if n.eq_ignore_ascii_case("te") => false,
                7 if n.eq_ignore_ascii_case("upgrade") => {
                    upgrade = Some(h.value);
                    false
                }
                10 if n.eq_ignore_ascii_case("connection")
                    || n.eq_ignore_ascii_case("keep-alive") =>
                {
                    false
                }
                // With Transfer-Encoding, Content-Length is wrong by definition: dropped.
                14 if n.eq_ignore_ascii_case("content-length") => {
                    let v = content_length(h.value).ok_or(())?;
                    if length.is_some_and(|l| l != v) {
                        return Err(());
                    }
                    length = Some(v);
                    !(chunked || te_other)
                }
                16 if n.eq_ignore_ascii_case("proxy-connection") => false,
                // Passed on, unless a chunked body is decoded for an HTTP/1.0 client.
                17 if n.eq_ignore_ascii_case("transfer-encoding") => !(info.http10 && chunked),
                _ => !named.iter().any(|t| t.eq_ignore_ascii_case(n)),
            };
            if copy {
                out.extend_from_slice(n.as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(h.value);
                out.extend_from_slice(b"\r\n");
            }
        }
        let body = if tunnel {
            Framing::UntilClose
        } else if info.is_head || status == 204 || status == 304 || status == 101 {
            Framing::None
        } else if chunked {
            Framing::Chunked
        } else if te_other {
            Framing::UntilClose
        } else {
            match length {
                Some(0) => Framing::None,
                Some(n) => Framing::Length(n),
                None => Framing::UntilClose,
            }
        };
        let reusable = !tunnel
            && status != 101
            && !close
            && (!up_http10 || keep)
            && body != Framing::UntilClose;
        let dechunk = info.http10 && body == Framing::Chunked;
        let client_keep_alive = !tunnel
            && info.keep_alive
            && body != Framing::UntilClose
            && !dechunk
            && !*self.c.shutdown.borrow();
        if tunnel {
            out.extend_from_slice(b"connection: upgrade\r\nupgrade: ");
            out.extend_from_slice(upgrade.unwrap_or(b""));
            out.extend_from_slice(b"\r\n");
        } else if !client_keep_alive {
            out.extend_from_slice(b"connection: close\r\n");
        } else if info.http10 {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
        self.up_buf.advance(len);
        Ok(Some(Parsed::Final(RespInfo {
            status,
            body,
            reusable,
            dechunk,
            client_keep_alive,
        })))
    }

    /// Sends the response head and body to the client, returns the upstream connection to the pool.
    #[allow(clippy::too_many_arguments)]
    async fn respond<S>(
        &mut self,
        client: &mut S,
        info: &ReqInfo,
        idx: usize,
        mut up: TcpStream,
        resp: RespInfo,
        guard: Active<'_>,
        start: Instant,
        shared: &Shared,
    ) -> Next
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let pool = &shared.pool;
        let tunnel = resp.status == 101 && info.upgrade;
        let idle = shared.settings.idle_timeout;
        // The usual case: the whole response is already read. The upstream's part is over before
        // the client write, so its connection goes back to the pool and the request stops counting
        // as active first (a client's next request must not see it still in flight).
        let complete = match resp.body {
            Framing::None => self.up_buf.is_empty(),
            Framing::Length(n) => self.up_buf.len() as u64 == n,
            _ => false,
        };
        if complete && !tunnel {
            let bytes = self.up_buf.len() as u64;
            self.out.extend_from_slice(&self.up_buf);
            self.up_buf.clear();
            if resp.reusable {
                checkin_stream(pool, idx, up, start);
            }
            drop(guard);
            let sent = write_within(client, &self.out, idle).await;
            self.out.clear();
            self.log(info, Some(idx), resp.status, bytes, start);
            return match sent {
                Ok(()) if resp.client_keep_alive => Next::KeepAlive,
                _ => Next::Close,
            };
        }
        if tunnel {
            // Ends when either side closes; the connection is done after it either way.
            let _ = self.tunnel(client, &mut up, idle).await;
            self.log(info, Some(idx), resp.status, 0, start);
            return Next::Close;
        }
        let result = copy_body(
            &mut up,
            &mut self.up_buf,
            client,
            &mut self.out,
            resp.body,
            resp.dechunk,
            idle,
        )
        .await;
        let bytes = match &result {
            Ok(n) => *n,
            Err(_) => 0,
        };
        self.log(info, Some(idx), resp.status, bytes, start);
        drop(guard);
        match result {
            Ok(_) => {
                if resp.reusable && self.up_buf.is_empty() {
                    checkin_stream(pool, idx, up, start);
                }
                if resp.client_keep_alive {
                    Next::KeepAlive
                } else {
                    Next::Close
                }
            }
            Err(CopyError::Read) | Err(CopyError::Stalled) => {
                // The upstream broke off or went silent mid-body: the client cannot be told but by
                // a close.
                pool.upstreams[idx].errors.fetch_add(1, Relaxed);
                Next::Close
            }
            Err(CopyError::Write) => Next::Close,
        }
    }

    /// The access log line of a routed request (`upstream`: the last one tried, if any).
    fn log(
        &self,
        info: &ReqInfo,
        upstream: Option<usize>,
        status: u16,
        bytes: u64,
        start: Instant,
    ) {
        if let Some(line) = &info.log_line {
            let pool = &self.c.shared.pool;
            log::write(log::Entry {
                client: self.c.peer.ip(),
                request: format_args!("{line}"),
                status,
                bytes,
                upstream: upstream.map(|i| pool.upstreams[i].label.as_str()),
                duration: start.elapsed(),
            });
        }
    }

    /// After a 101: the head and any bytes already read each way go out, then bytes are copied both
    /// ways until either side closes, or nothing moved either way for `idle` (as TCP mode's
    /// tunnels, and NGINX's `proxy_read_timeout` for WebSockets).
    async fn tunnel<S>(
        &mut self,
        client: &mut S,
        up: &mut TcpStream,
        idle: Duration,
    ) -> std::io::Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.out.extend_from_slice(&self.up_buf);
        self.up_buf.clear();
        client.write_all(&self.out).await?;
        if !self.buf.is_empty() {
            up.write_all(&self.buf).await?;
            self.buf.clear();
        }
        let start = Instant::now();
        let moved = AtomicU64::new(0);
        let mut client = tcp::Active::new(client, &moved, start);
        let mut up = tcp::Active::new(up, &moved, start);
        tokio::select! {
            r = tokio::io::copy_bidirectional(&mut client, &mut up) => r.map(|_| ()),
            _ = tcp::idle_watch(&moved, start, idle) => Err(std::io::ErrorKind::TimedOut.into()),
        }
    }
}

enum Parsed {
    Final(RespInfo),
    /// A 1xx interim response of this many bytes.
    Interim(usize),
}

/// Which side of a copy failed.
#[derive(Debug)]
enum CopyError {
    Read,
    Write,
    /// No byte to read for `timeouts.idle`.
    Stalled,
}

/// Writes `head` (if not yet sent) together with `data` in one write.
async fn send<W: AsyncWrite + Unpin>(
    w: &mut W,
    head: &mut Vec<u8>,
    data: &[u8],
    idle: Duration,
) -> Result<(), CopyError> {
    if head.is_empty() {
        write_within(w, data, idle).await
    } else {
        head.extend_from_slice(data);
        let r = write_within(w, head, idle).await;
        head.clear();
        r
    }
}

/// Writes all of `data` and flushes (TLS streams hold bytes until then; a no-op on TCP); a peer
/// that takes nothing for `idle` is a write error, as NGINX's `send_timeout`.
async fn write_within<W: AsyncWrite + Unpin>(
    w: &mut W,
    data: &[u8],
    idle: Duration,
) -> Result<(), CopyError> {
    let done = within(idle, async {
        w.write_all(data).await?;
        w.flush().await
    });
    match done.await {
        Some(Ok(())) => Ok(()),
        _ => Err(CopyError::Write),
    }
}

/// Runs `fut` with a time limit, armed only if it does not complete at once (a timer costs a clock
/// read and a timer-wheel entry, which most reads and writes of small messages never need).
async fn within<F: std::future::Future>(limit: Duration, fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let first = std::future::poll_fn(|cx| match fut.as_mut().poll(cx) {
        std::task::Poll::Ready(v) => std::task::Poll::Ready(Some(v)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await;
    match first {
        Some(v) => Some(v),
        None => tokio::time::timeout(limit, fut).await.ok(),
    }
}

/// Copies one body framed by `framing` from `src` (bytes already in `buf` first) to `dst`, the
/// head (if any) going out with the first bytes or alone, so that a slow body never holds it back.
/// With `dechunk`, a chunked body is decoded (for an HTTP/1.0 client). Returns the bytes written.
/// A read that waits longer than `idle` is `Stalled` (a client that stops sending its body, an
/// upstream silent mid-body: NGINX's `client_body_timeout` and `proxy_read_timeout`).
async fn copy_body<R, W>(
    src: &mut R,
    buf: &mut BytesMut,
    dst: &mut W,
    head: &mut Vec<u8>,
    framing: Framing,
    dechunk: bool,
    idle: Duration,
) -> Result<u64, CopyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut left = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    let mut dec = Chunked::default();
    let mut decoded = Vec::new();
    let mut total = 0u64;
    loop {
        // How much of `buf` belongs to the body, and whether that ends it.
        let (n, done) = match framing {
            Framing::None => (0, true),
            Framing::Length(_) => {
                let n = (buf.len() as u64).min(left);
                left -= n;
                (n as usize, left == 0)
            }
            Framing::Chunked => {
                decoded.clear();
                let out = dechunk.then_some(&mut decoded);
                let n = dec.feed(buf, out).map_err(|_| CopyError::Read)?;
                (n, dec.done())
            }
            Framing::UntilClose => (buf.len(), false),
        };
        let data = if dechunk { &decoded[..] } else { &buf[..n] };
        total += data.len() as u64;
        send(dst, head, data, idle).await?;
        buf.advance(n);
        if done {
            return Ok(total);
        }
        buf.reserve(READ_CHUNK);
        match within(idle, src.read_buf(buf)).await {
            None => return Err(CopyError::Stalled),
            Some(Ok(0)) if framing == Framing::UntilClose => return Ok(total),
            Some(Ok(0)) | Some(Err(_)) => return Err(CopyError::Read),
            Some(Ok(_)) => {}
        }
    }
}

/// The chunked transfer coding's framing (RFC 9112 section 7.1), scanned byte by byte to find where
/// a body ends, and optionally decoded. Trailer fields are passed through (or dropped when decoding).
#[derive(Default)]
struct Chunked {
    state: CState,
    size: u64,
    digits: u8,
    line: usize,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum CState {
    #[default]
    Size,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
}

/// Longest chunk-size line (with extensions) or trailer line accepted.
const MAX_CHUNK_LINE: usize = 4096;

impl Chunked {
    fn done(&self) -> bool {
        self.state == CState::Done
    }

    /// The one byte the grammar allows here, then `next`.
    fn expect(&mut self, b: u8, want: u8, next: CState) -> Result<(), ()> {
        if b != want {
            return Err(());
        }
        self.state = next;
        Ok(())
    }

    /// A byte of a chunk extension or trailer line (bounded); its CR leads to `on_cr`.
    fn line_byte(&mut self, b: u8, on_cr: CState) -> Result<(), ()> {
        self.line += 1;
        if self.line > MAX_CHUNK_LINE || b == b'\n' {
            return Err(());
        }
        if b == b'\r' {
            self.state = on_cr;
        }
        Ok(())
    }

    /// Consumes bytes of `input` that belong to the body (stopping at its end) and returns how many;
    /// with `data`, appends the payload bytes to it.
    fn feed(&mut self, input: &[u8], mut data: Option<&mut Vec<u8>>) -> Result<usize, ()> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                CState::Size => match (b as char).to_digit(16) {
                    Some(v) => {
                        if self.digits >= 15 {
                            return Err(());
                        }
                        self.size = self.size * 16 + u64::from(v);
                        self.digits += 1;
                    }
                    None if self.digits == 0 => return Err(()),
                    None => match b {
                        b';' | b' ' | b'\t' => self.state = CState::Ext,
                        b'\r' => self.state = CState::SizeLf,
                        _ => return Err(()),
                    },
                },
                CState::Ext => self.line_byte(b, CState::SizeLf)?,
                CState::SizeLf => {
                    let next = if self.size == 0 {
                        CState::TrailerStart
                    } else {
                        CState::Data
                    };
                    self.expect(b, b'\n', next)?;
                    self.line = 0;
                    self.digits = 0;
                }
                CState::Data => {
                    let n = (self.size.min((input.len() - i) as u64)) as usize;
                    if let Some(d) = data.as_deref_mut() {
                        d.extend_from_slice(&input[i..i + n]);
                    }
                    self.size -= n as u64;
                    i += n;
                    if self.size == 0 {
                        self.state = CState::DataCr;
                    }
                    continue;
                }
                CState::DataCr => self.expect(b, b'\r', CState::DataLf)?,
                CState::DataLf => self.expect(b, b'\n', CState::Size)?,
                CState::TrailerStart => {
                    self.line = 0;
                    self.state = if b == b'\r' {
                        CState::EndLf
                    } else {
                        CState::TrailerLine
                    };
                }
                CState::TrailerLine => self.line_byte(b, CState::TrailerLf)?,
                CState::TrailerLf => self.expect(b, b'\n', CState::TrailerStart)?,
                CState::EndLf => {
                    self.expect(b, b'\n', CState::Done)?;
                    return Ok(i + 1);
                }
                CState::Done => return Ok(i),
            }
            i += 1;
        }
        Ok(i)
    }
}

/// Whether a request line that httparse refused ends in a well-formed version other than 1.x
/// (`HTTP/2.0`, `HTTP/3.0`): that is a 505, anything else a 400.
fn names_other_version(buf: &[u8]) -> bool {
    let line = buf.split(|b| *b == b'\n').next().unwrap_or(b"");
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    match line.len().checked_sub(8).map(|i| &line[i..]) {
        Some(v) => {
            v.starts_with(b"HTTP/")
                && v[5].is_ascii_digit()
                && v[6] == b'.'
                && v[7].is_ascii_digit()
        }
        None => false,
    }
}

/// What a message's Connection headers say (RFC 9110 section 7.6.1).
struct ConnectionOptions<'a> {
    close: bool,
    keep_alive: bool,
    upgrade: bool,
    /// Other headers it names: they belong to this connection and are not forwarded.
    named: Vec<&'a str>,
}

fn connection_options<'a>(headers: &[httparse::Header<'a>]) -> ConnectionOptions<'a> {
    let mut o = ConnectionOptions {
        close: false,
        keep_alive: false,
        upgrade: false,
        named: Vec::new(),
    };
    for h in headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            for t in std::str::from_utf8(h.value).unwrap_or("").split(',') {
                let t = t.trim();
                if t.eq_ignore_ascii_case("close") {
                    o.close = true;
                } else if t.eq_ignore_ascii_case("keep-alive") {
                    o.keep_alive = true;
                } else if t.eq_ignore_ascii_case("upgrade") {
                    o.upgrade = true;
                } else if !t.is_empty() {
                    o.named.push(t);
                }
            }
        }
    }
    o
}

/// Whether a Transfer-Encoding value's last coding is chunked (which then frames the body).
fn chunked_last(value: &[u8]) -> bool {
    let last = value.rsplit(|b| *b == b',').next().unwrap_or(b"");
    last.trim_ascii().eq_ignore_ascii_case(b"chunked")
}

/// Longest request line written to the access log for a refused request.
const MAX_LOGGED_LINE: usize = 200;

/// Bytes as they may appear inside the log's quoted request field: printable ASCII except `"` and
/// `\` as they are, everything else as `\xHH` (as NGINX escapes its log).
fn escape_for_log(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02X}"));
        }
    }
    out
}

/// A Content-Length field value: digits, or a list of identical values (RFC 9110 section 8.6).
fn content_length(value: &[u8]) -> Option<u64> {
    let mut length = None;
    for part in value.split(|b| *b == b',') {
        let v = parse_length(part.trim_ascii())?;
        if length.is_some_and(|l| l != v) {
            return None;
        }
        length = Some(v);
    }
    length
}

/// A Content-Length value: digits only.
fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(input: &[u8]) -> Result<(usize, bool, Vec<u8>), ()> {
        let mut d = Chunked::default();
        let mut out = Vec::new();
        let n = d.feed(input, Some(&mut out))?;
        Ok((n, d.done(), out))
    }

    #[test]
    fn chunked_bodies_end_where_the_last_chunk_ends() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
        let (n, done, out) = scan(body).unwrap();
        assert!(done);
        assert_eq!(&body[n..], b"GET / HTTP/1.1\r\n");
        assert_eq!(out, b"hello world");
    }

    #[test]
    fn chunked_trailers_and_byte_by_byte_feeding() {
        let body = b"3\r\nabc\r\n0\r\nx-sum: 1\r\n\r\n";
        let mut d = Chunked::default();
        let mut out = Vec::new();
        for (i, b) in body.iter().enumerate() {
            assert!(!d.done(), "done early at {i}");
            assert_eq!(d.feed(std::slice::from_ref(b), Some(&mut out)), Ok(1));
        }
        assert!(d.done());
        assert_eq!(out, b"abc");
    }

    #[test]
    fn chunked_garbage_is_an_error() {
        assert!(scan(b"zz\r\n").is_err());
        assert!(scan(b"3\r\nabcX\r\n").is_err());
        assert!(scan(b"3\nabc").is_err());
        assert!(scan(b"ffffffffffffffff1\r\n").is_err());
    }

    #[test]
    fn unsupported_versions_are_told_apart_from_garbage() {
        assert!(names_other_version(b"GET / HTTP/3.0\r\n"));
        assert!(!names_other_version(b"THIS IS NOT HTTP\r\n\r\n"));
        assert!(!names_other_version(b"GET"));
    }

    #[test]
    fn log_lines_are_escaped() {
        assert_eq!(
            escape_for_log(b"GET /a?b=\"c\" x"),
            "GET /a?b=\\x22c\\x22 x"
        );
        assert_eq!(escape_for_log(b"\x01\\"), "\\x01\\x5C");
    }

    #[test]
    fn content_length_values() {
        assert_eq!(parse_length(b"42"), Some(42));
        assert_eq!(parse_length(b""), None);
        assert_eq!(parse_length(b"+1"), None);
        assert_eq!(parse_length(b"1 2"), None);
        assert_eq!(content_length(b"5, 5"), Some(5));
        assert_eq!(content_length(b"5, 6"), None);
    }
}
