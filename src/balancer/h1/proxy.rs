//! The HTTP/1.x proxy loop (plain and TLS without ALPN h2): one task per client connection reads
//! each request head, has the codec rewrite it straight into the bytes sent upstream, sends it on a
//! pooled upstream connection that this task owns for the exchange, and copies the response back.
//! Bodies are streamed both ways, Upgrade requests become tunnels, pipelined requests are served
//! in order. Which attempts are made and what a failure means is `policy.rs`.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant as TokioInstant, Sleep};

use super::super::conn::{checkin_stream, checkout_stream, connect_tcp, Stream};
use super::super::log;
use super::super::policy::{self, Attempts, Failure};
use super::super::pool::{Active, IdleKind, Slot};
use super::super::shared::{DrainToken, Shared};
use super::super::strategy::ip_key;
use super::super::tcp;
use super::body::{copy_body, read_ahead, write_within, AheadError, CopyError, READ_CHUNK};
use super::codec::{self, Framing, HashSource, Parsed, Refuse, ReqInfo, RequestRules, RespInfo};
use crate::config::balancer::{HashKey, Strategy};

/// How long a keep-alive connection may stay open once the balancer drains: a request that arrives
/// in time is served (with `Connection: close`); an idle one is closed after this. Closing idle
/// connections at once would race with requests clients are sending on them right then.
pub const DRAIN_GRACE: Duration = Duration::from_millis(1000);

/// Largest response head accepted from an upstream (more is a 502).
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Most interim (1xx) responses passed on for one request; an upstream that sends more gets a 502
/// (a flood of 103s is no answer).
const MAX_INTERIM: usize = 10;
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
        peer_key: 0,
        drain_deadline: None,
        head_timer: Box::pin(tokio::time::sleep_until(TokioInstant::now())),
        up_timer: Box::pin(tokio::time::sleep_until(TokioInstant::now())),
    };
    st.xff_ip = st.c.peer.ip().to_string();
    let s = st.c.shared.clone();
    let settings = &s.settings;
    if settings.strategy == Strategy::Hash {
        st.peer_key = ip_key(st.c.peer.ip());
    }
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
    Response(Stream, RespInfo),
    /// The upstream failed; what that means is the policy's (`policy::Failure`).
    Failed(Failure),
    /// The client went away while its body was being forwarded.
    ClientGone,
    /// The client stopped sending its body (408, as NGINX's `client_body_timeout`).
    ClientStalled,
    /// The client's chunked body is malformed (400).
    ClientBadBody,
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
    /// The client's address as X-Forwarded-For ends with it.
    xff_ip: String,
    /// The `hash` strategy's key when a request has no header or cookie to hash.
    peer_key: u64,
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

    /// Parses the head at the start of `buf` (see `codec::parse_request`); the upstream head is
    /// then in `out`.
    fn parse_request(&mut self) -> Result<Option<ReqInfo>, Refuse> {
        let shared = &*self.c.shared;
        let settings = &shared.settings;
        let hash = match (settings.strategy, &settings.hash_key) {
            (Strategy::Hash, HashKey::Ip) => HashSource::Ip,
            (Strategy::Hash, HashKey::Header(k)) => HashSource::Header(k.as_str()),
            (Strategy::Hash, HashKey::Cookie(k)) => HashSource::Cookie(k.as_str()),
            _ => HashSource::Off,
        };
        let rules = RequestRules {
            max_header_bytes: settings.max_header_bytes,
            hash,
            peer_key: self.peer_key,
            access_log: settings.access_log,
            https: shared.https,
            peer_ip: &self.xff_ip,
            sticky_cookie: settings.sticky_cookie.as_deref(),
        };
        codec::parse_request(&self.buf, &mut self.out, &rules)
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
        self.c.shared.pool.stats.own_answer(code);
        if self.c.shared.settings.access_log {
            let line = codec::refused_log_line(&self.buf);
            log::write(log::Entry {
                client: self.c.peer.ip(),
                request: format_args!("{line}"),
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
        // Small bodies are read whole before an upstream is picked.
        match read_ahead(client, &mut self.buf, info.body, s.idle_timeout).await {
            Ok(()) => {}
            Err(AheadError::Gone) => return Next::Close,
            Err(AheadError::Stalled) => return self.refuse_body(client, &info, 408, start).await,
            Err(AheadError::Framing) => return self.refuse_body(client, &info, 400, start).await,
        }
        let head_end = self.out.len();
        let replayable =
            policy::is_replayable(info.idempotent, info.body != Framing::None, info.upgrade);
        let mut attempts = Attempts::new(s.retries, pool.upstreams.len(), replayable);
        let pinned = info.sticky.and_then(|t| pool.sticky_upstream(t));
        while let Some(idx) = attempts.next(pool, info.key, pinned) {
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
            let now = if attempts.is_retry() {
                Instant::now()
            } else {
                start
            };
            match self.attempt(client, &info, idx, now, shared).await {
                Attempt::Response(up, resp) => {
                    pool.upstreams[idx]
                        .stats
                        .response(resp.status, now.elapsed());
                    if let Some(pin) = shared.sticky_pin(pinned, idx) {
                        // Pins the client to the upstream that answered: a line before the head's
                        // final CRLF.
                        self.out.truncate(self.out.len().saturating_sub(2));
                        self.out.extend_from_slice(b"set-cookie: ");
                        self.out.extend_from_slice(pin.as_bytes());
                        self.out.extend_from_slice(b"\r\n\r\n");
                    }
                    return self
                        .respond(client, &info, idx, up, resp, guard, start, shared)
                        .await;
                }
                Attempt::Failed(failure) => {
                    if !attempts.failed(pool, idx, failure) {
                        break;
                    }
                }
                Attempt::ClientGone => return Next::Close,
                Attempt::ClientStalled => {
                    return self.refuse_body(client, &info, 408, start).await;
                }
                Attempt::ClientBadBody => {
                    return self.refuse_body(client, &info, 400, start).await;
                }
            }
        }
        let (upstream, answer) = attempts.answer();
        let (code, text) = (answer.status(), answer.text());
        // A request body that was not (fully) read leaves the connection unusable.
        let keep = info.keep_alive && info.body == Framing::None && !self.draining();
        pool.stats.own_answer(code);
        self.log(&info, upstream, code, text.len() as u64, start);
        match self.reply(client, code, text, keep).await {
            Ok(()) if keep => Next::KeepAlive,
            _ => Next::Close,
        }
    }

    /// Answers a request whose body stalled (408) or is malformed (400), and closes.
    async fn refuse_body<S: AsyncWrite + Unpin>(
        &mut self,
        client: &mut S,
        info: &ReqInfo,
        code: u16,
        start: Instant,
    ) -> Next {
        let text = if code == 408 {
            "408 Request Timeout: the request body stalled\n"
        } else {
            "400 Bad Request: malformed chunked body\n"
        };
        self.c.shared.pool.stats.own_answer(code);
        self.log(info, None, code, text.len() as u64, start);
        let _ = self.reply(client, code, text, false).await;
        Next::Close
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
        let pool = &shared.pool;
        let upstream = &pool.upstreams[idx];
        let idle = &upstream.idle_streams;
        let ((mut up, permit), reused) = match checkout_stream(idle, s.upstream_idle, now, false) {
            Some(c) => (c, true),
            None => {
                let take = || checkout_stream(idle, s.upstream_idle, Instant::now(), true);
                match pool.conn_permit(idx, IdleKind::Streams, None, take).await {
                    Err(_) => return Attempt::Failed(Failure::Busy),
                    Ok(Slot::Idle(c)) => (c, true),
                    Ok(Slot::New(permit)) => {
                        match connect_tcp(upstream.addr, s.connect_timeout).await {
                            Ok(stream) => ((stream, permit), false),
                            Err(_) => return Attempt::Failed(Failure::ConnectFailed),
                        }
                    }
                }
            }
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
            return Attempt::Failed(if reused && !sent_body {
                Failure::NotSent { reused }
            } else {
                Failure::Failed { reused }
            });
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
                Err(CopyError::Framing) => return Attempt::ClientBadBody,
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
        let mut interim = 0;
        loop {
            let got = tokio::select! {
                biased;
                r = up.read_buf(&mut self.up_buf) => Some(r),
                _ = self.up_timer.as_mut() => None,
            };
            match got {
                None => return Attempt::Failed(Failure::TimedOut),
                Some(Ok(0)) | Some(Err(_)) => {
                    return Attempt::Failed(if self.up_buf.is_empty() && reused && !body_failed {
                        Failure::Stale
                    } else {
                        Failure::Failed { reused }
                    });
                }
                Some(Ok(_)) => {}
            }
            // Every complete head in the buffer: 1xx ones (not 101) are passed on to an HTTP/1.1
            // client, the final one ends the attempt.
            loop {
                let draining = || *self.c.shutdown.borrow();
                match codec::parse_response(&self.up_buf, &mut self.out, info, draining) {
                    Ok(Some(Parsed::Final(resp, len))) => {
                        self.up_buf.advance(len);
                        return Attempt::Response((up, permit), resp);
                    }
                    Ok(Some(Parsed::Interim(_))) if interim == MAX_INTERIM => {
                        return Attempt::Failed(Failure::Failed { reused })
                    }
                    Ok(Some(Parsed::Interim(len))) => {
                        interim += 1;
                        if !info.http10 && client.write_all(&self.up_buf[..len]).await.is_err() {
                            return Attempt::ClientGone;
                        }
                        self.up_buf.advance(len);
                    }
                    Ok(None) if self.up_buf.len() > MAX_RESPONSE_HEAD => {
                        return Attempt::Failed(Failure::Failed { reused })
                    }
                    Ok(None) => break,
                    Err(()) => return Attempt::Failed(Failure::Failed { reused }),
                }
            }
        }
    }

    /// Sends the response head and body to the client, returns the upstream connection to the pool.
    #[allow(clippy::too_many_arguments)]
    async fn respond<S>(
        &mut self,
        client: &mut S,
        info: &ReqInfo,
        idx: usize,
        (mut up, permit): Stream,
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
                let keep = pool.may_pool(idx);
                checkin_stream(&pool.upstreams[idx].idle_streams, (up, permit), start, keep);
                pool.pooled(idx, IdleKind::Streams);
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
        if let (Err(CopyError::Framing), false) = (&result, self.out.is_empty()) {
            // The upstream's chunked framing broke before anything went to the client: a 502.
            self.out.clear();
            drop(guard);
            pool.count_error(idx);
            pool.stats.own_answer(502);
            let text = policy::Answer::Failed.text();
            self.log(info, Some(idx), 502, text.len() as u64, start);
            let _ = self.reply(client, 502, text, false).await;
            return Next::Close;
        }
        let bytes = match &result {
            Ok(n) => *n,
            Err(_) => 0,
        };
        self.log(info, Some(idx), resp.status, bytes, start);
        drop(guard);
        match result {
            Ok(_) => {
                if resp.reusable && self.up_buf.is_empty() {
                    let keep = pool.may_pool(idx);
                    checkin_stream(&pool.upstreams[idx].idle_streams, (up, permit), start, keep);
                    pool.pooled(idx, IdleKind::Streams);
                }
                if resp.client_keep_alive {
                    Next::KeepAlive
                } else {
                    Next::Close
                }
            }
            Err(CopyError::Read) | Err(CopyError::Stalled) | Err(CopyError::Framing) => {
                // The upstream broke off or went silent mid-body: the client cannot be told but by
                // a close.
                pool.count_error(idx);
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
