//! The HTTP/2 proxy service (hyper serves the client side): one client request in, one upstream
//! attempt (or a few) out, sent as HTTP/1.1 through hyper's client. Rewrites the request for the
//! upstream (origin-form URI, and the forwarding rules of `policy.rs`: hop-by-hop headers out,
//! X-Forwarded-* in), makes the attempts `policy.rs` allows (failover, retries, 502/504), streams
//! both bodies, and writes the access log line when the response body ends. HTTP/1.x clients take
//! the faster path in `h1/`, which follows the same policy.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::conn::{checkin, checkout_idle, connect_http, Checkout, Sender, UpBody};
use super::log;
use super::policy::{self, Attempts, Failure};
use super::pool::{ActiveGuard, IdleKind, Pool, Slot};
use super::reqbody::AheadError;
use super::shared::Shared;
use super::sticky;
use super::strategy::{cookie_value, ip_key};

/// Request bodies up to this size are read whole before an upstream is picked (as the HTTP/1
/// path does).
const BUFFERED_BODY: usize = 16 * 1024;
use crate::config::balancer::{HashKey, Strategy};

/// The per-connection service.
#[derive(Clone)]
pub struct Proxy {
    pub shared: Arc<Shared>,
    pub client: SocketAddr,
    /// The client's IP as a header value, made once per connection.
    pub client_ip: HeaderValue,
    /// This connection's places in the queue for upstream connections ([`QUEUE_SHARE`]).
    pub queue_share: Arc<tokio::sync::Semaphore>,
}

/// Most of one HTTP/2 connection's streams that wait in the queue for an upstream connection at
/// once; its other streams wait behind them, so the queue stays short and FIFO across clients
/// (an HTTP/1 client has one request at a time anyway).
pub const QUEUE_SHARE: usize = 4;

impl hyper::service::Service<Request<Incoming>> for Proxy {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(req).await) })
    }
}

/// What the access log needs, captured before the request is forwarded.
struct LogInfo {
    client: std::net::IpAddr,
    method: Method,
    path: String,
    version: Version,
    status: u16,
    upstream: Option<usize>,
    start: Instant,
}

/// Work left for when the response body ends or is dropped.
struct Finish {
    pool: Arc<Pool>,
    _guard: Option<ActiveGuard>,
    /// The upstream connection, returned to the pool if the body was read to the end.
    sender: Option<(usize, Sender)>,
    log: Option<LogInfo>,
}

/// Response body: the upstream's streamed body or a short fixed one, counted for the log.
pub struct ProxyBody {
    inner: Inner,
    bytes: u64,
    ended: bool,
    fin: Option<Finish>,
}

enum Inner {
    Up(Incoming),
    Fixed(Option<Bytes>),
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let r = match &mut this.inner {
            Inner::Up(b) => Pin::new(b).poll_frame(cx),
            Inner::Fixed(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
        };
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    this.bytes += d.len() as u64;
                }
            }
            Poll::Ready(None) => this.ended = true,
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Up(b) => b.is_end_stream(),
            Inner::Fixed(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Up(b) => b.size_hint(),
            Inner::Fixed(b) => SizeHint::with_exact(b.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        let Some(mut fin) = self.fin.take() else {
            return;
        };
        let complete = self.ended || self.is_end_stream();
        if let Some((i, sender)) = fin.sender.take() {
            if complete {
                let keep = fin.pool.may_pool(i);
                checkin(&fin.pool.upstreams[i].idle, sender, keep);
                fin.pool.pooled(i, IdleKind::Senders);
            }
        }
        if let Some(l) = fin.log.take() {
            let upstream = l.upstream.map(|i| fin.pool.upstreams[i].label.as_str());
            log::write(log::Entry {
                client: l.client,
                request: format_args!("{} {} {:?}", l.method, l.path, l.version),
                status: l.status,
                bytes: self.bytes,
                upstream,
                duration: l.start.elapsed(),
            });
        }
    }
}

impl ProxyBody {
    fn fixed(text: &'static str) -> ProxyBody {
        ProxyBody {
            inner: Inner::Fixed(Some(Bytes::from_static(text.as_bytes()))),
            bytes: 0,
            ended: false,
            fin: None,
        }
    }
}

/// The hop-by-hop headers of the policy, as header names.
const HOP_BY_HOP: [HeaderName; 6] = [
    HeaderName::from_static(policy::HOP_BY_HOP[0]),
    HeaderName::from_static(policy::HOP_BY_HOP[1]),
    HeaderName::from_static(policy::HOP_BY_HOP[2]),
    HeaderName::from_static(policy::HOP_BY_HOP[3]),
    HeaderName::from_static(policy::HOP_BY_HOP[4]),
    HeaderName::from_static(policy::HOP_BY_HOP[5]),
];

/// Removes hop-by-hop headers, including those the Connection header names.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    if h.contains_key(header::CONNECTION) {
        // Only pay for parsing when a Connection header is present.
        let mut options = policy::ConnectionOptions::default();
        for v in h.get_all(header::CONNECTION) {
            options.add(v.as_bytes());
        }
        let named: Vec<HeaderName> = options
            .named
            .iter()
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for n in named {
            h.remove(n);
        }
    }
    for n in &HOP_BY_HOP {
        h.remove(n);
    }
}

/// A pooled connection handed over to a request that waited for one.
fn co_reused(sender: Sender) -> Checkout {
    Checkout {
        sender,
        reused: true,
    }
}

/// A bodiless request rebuilt from a saved head, to try again on another upstream.
fn resend(m: &Method, u: &http::Uri, h: &http::HeaderMap) -> Request<UpBody> {
    let mut r = Request::new(UpBody::empty());
    *r.method_mut() = m.clone();
    *r.uri_mut() = u.clone();
    *r.headers_mut() = h.clone();
    r
}

/// Hash key of a request for the `hash` strategy.
fn request_key(req: &Request<Incoming>, client: SocketAddr, key: &HashKey) -> u64 {
    let found = match key {
        HashKey::Ip => None,
        HashKey::Header(name) => req.headers().get(name).map(|v| v.as_bytes()),
        HashKey::Cookie(name) => req
            .headers()
            .get_all(header::COOKIE)
            .iter()
            .find_map(|v| cookie_value(v.as_bytes(), name)),
    };
    match found {
        Some(v) => xxhash_rust::xxh3::xxh3_64(v),
        None => ip_key(client.ip()),
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static(policy::X_FORWARDED_FOR);
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static(policy::X_FORWARDED_PROTO);
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static(policy::X_FORWARDED_HOST);

/// Rewrites a client request's head for the upstream: origin-form target (an absolute-form
/// target's authority stands in for a missing Host), HTTP/1.1, and the forwarding rules of
/// `policy.rs`. `client_ip` is `client`'s address as a header value. Returns whether the request
/// has no Host (the upstream's address is sent as Host).
pub fn rewrite_head(
    parts: &mut http::request::Parts,
    client: std::net::IpAddr,
    client_ip: &HeaderValue,
    https: bool,
) -> bool {
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        if !parts.headers.contains_key(header::HOST) {
            if let Some(a) = parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            {
                parts.headers.insert(header::HOST, a);
            }
        }
        let pq = parts.uri.path_and_query().cloned();
        parts.uri = pq.map_or_else(|| Uri::from_static("/"), Uri::from);
    }
    parts.version = Version::HTTP_11;
    // HTTP/1.0 clients may omit Host; HTTP/1.1 upstreams (Node among them) require it.
    let needs_host = !parts.headers.contains_key(header::HOST);
    strip_hop_by_hop(&mut parts.headers);
    // The client's chain, then the peer; no chain (the usual case): the value made per connection.
    let xff = if parts.headers.contains_key(X_FORWARDED_FOR) {
        let mut v = Vec::new();
        let chain = parts.headers.get_all(X_FORWARDED_FOR);
        policy::forwarded_for(
            &mut v,
            chain.iter().map(HeaderValue::as_bytes),
            client.to_string().as_bytes(),
        );
        HeaderValue::from_maybe_shared(Bytes::from(v)).ok()
    } else {
        Some(client_ip.clone())
    };
    if let Some(v) = xff {
        parts.headers.insert(X_FORWARDED_FOR, v);
    }
    parts.headers.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(policy::forwarded_proto(https)),
    );
    if !parts.headers.contains_key(X_FORWARDED_HOST) {
        if let Some(h) = parts.headers.get(header::HOST).cloned() {
            parts.headers.insert(X_FORWARDED_HOST, h);
        }
    }
    needs_host
}

impl Proxy {
    fn error(
        &self,
        log: Option<LogInfo>,
        status: StatusCode,
        text: &'static str,
    ) -> Response<ProxyBody> {
        self.shared.pool.stats.own_answer(status.as_u16());
        let mut body = ProxyBody::fixed(text);
        if let Some(mut l) = log {
            l.status = status.as_u16();
            body.fin = Some(Finish {
                pool: self.shared.pool.clone(),
                _guard: None,
                sender: None,
                log: Some(l),
            });
        }
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        resp
    }

    async fn handle(self, req: Request<Incoming>) -> Response<ProxyBody> {
        let s = &self.shared.settings;
        let pool = &self.shared.pool;
        let start = Instant::now();
        let mut log = s.access_log.then(|| LogInfo {
            client: self.client.ip(),
            method: req.method().clone(),
            path: req
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string(),
            version: req.version(),
            status: 0,
            upstream: None,
            start,
        });
        let key = if s.strategy == Strategy::Hash {
            request_key(&req, self.client, &s.hash_key)
        } else {
            0
        };
        let pinned = s.sticky_cookie.as_deref().and_then(|name| {
            let token = req
                .headers()
                .get_all(header::COOKIE)
                .iter()
                .find_map(|v| cookie_value(v.as_bytes(), name))
                .and_then(sticky::parse)?;
            pool.sticky_upstream(token)
        });

        // Rewrite the head for the upstream.
        let (mut parts, body) = req.into_parts();
        let needs_host = rewrite_head(
            &mut parts,
            self.client.ip(),
            &self.client_ip,
            self.shared.https,
        );

        let body_empty = body.is_end_stream();
        // Small bodies are read whole before an upstream is picked (bodiless ones cost nothing).
        let up_body = match UpBody::read_ahead(body, BUFFERED_BODY, s.idle_timeout).await {
            Ok(b) => b,
            Err(AheadError::Stalled) => {
                let text = "408 Request Timeout: the request body stalled\n";
                return self.error(log, StatusCode::REQUEST_TIMEOUT, text);
            }
            Err(AheadError::Gone) => {
                let text = "400 Bad Request: the request body broke off\n";
                return self.error(log, StatusCode::BAD_REQUEST, text);
            }
        };
        let replayable = policy::is_replayable(
            policy::is_idempotent(parts.method.as_str()),
            !body_empty,
            false,
        );
        let mut attempts = Attempts::new(s.retries, pool.upstreams.len(), replayable);
        // A copy of the head lets a failed request that may be retried be sent again.
        let retry_head = attempts.may_retry().then(|| {
            (
                parts.method.clone(),
                parts.uri.clone(),
                parts.headers.clone(),
            )
        });
        let resend_head = |attempts: &Attempts| {
            retry_head
                .as_ref()
                .filter(|_| attempts.may_retry())
                .map(|(m, u, h)| resend(m, u, h))
        };
        let mut upreq = Some(Request::from_parts(parts, up_body));

        while let Some(mut req) = upreq.take() {
            let Some(idx) = attempts.next(pool, key, pinned) else {
                break;
            };
            let guard = ActiveGuard::new(pool.clone(), idx);
            // The first attempt's clock is the request's.
            let attempt_start = if attempts.is_retry() {
                Instant::now()
            } else {
                start
            };
            if needs_host {
                if let Ok(h) = HeaderValue::from_str(&pool.upstreams[idx].label) {
                    req.headers_mut().insert(header::HOST, h);
                }
            }
            let upstream = &pool.upstreams[idx];
            let mut co = match checkout_idle(&upstream.idle, s.upstream_idle, false).await {
                Some(c) => c,
                None => {
                    // A connection handed over while waiting is taken as it is (a pooled sender
                    // that is not ready yet is skipped: the slot wait goes on).
                    let take = || {
                        let (sender, _) = upstream.idle.pop_any_ready()?;
                        Some(sender)
                    };
                    let permit = match pool
                        .conn_permit(idx, IdleKind::Senders, Some(&self.queue_share), take)
                        .await
                    {
                        Err(_) => {
                            attempts.failed(pool, idx, Failure::Busy);
                            break;
                        }
                        Ok(Slot::Idle(sender)) => co_reused(sender),
                        Ok(Slot::New(permit)) => {
                            match connect_http(upstream.addr, s.connect_timeout, Some(permit)).await
                            {
                                Ok(sender) => Checkout {
                                    sender,
                                    reused: false,
                                },
                                Err(_) => {
                                    if attempts.failed(pool, idx, Failure::ConnectFailed) {
                                        upreq = Some(req);
                                    }
                                    continue;
                                }
                            }
                        }
                    };
                    permit
                }
            };
            let sent =
                tokio::time::timeout(s.upstream_timeout, co.sender.try_send_request(req)).await;
            match sent {
                Err(_elapsed) => {
                    if attempts.failed(pool, idx, Failure::TimedOut) {
                        upreq = resend_head(&attempts);
                    }
                }
                Ok(Err(mut e)) => match e.take_message() {
                    // Never written: the connection closed before the request went out.
                    Some(r) => {
                        let failure = Failure::NotSent { reused: co.reused };
                        if attempts.failed(pool, idx, failure) {
                            upreq = Some(r);
                        }
                    }
                    None => {
                        let failure = Failure::Failed { reused: co.reused };
                        if attempts.failed(pool, idx, failure) {
                            upreq = resend_head(&attempts);
                        }
                    }
                },
                Ok(Ok(resp)) => {
                    let status = resp.status().as_u16();
                    upstream.stats.response(status, attempt_start.elapsed());
                    if let Some(l) = log.as_mut() {
                        l.upstream = Some(idx);
                        l.status = resp.status().as_u16();
                    }
                    let (mut rp, incoming) = resp.into_parts();
                    strip_hop_by_hop(&mut rp.headers);
                    if let Some(pin) = self.shared.sticky_pin(pinned, idx) {
                        rp.headers.append(header::SET_COOKIE, pin.clone());
                    }
                    let fin = Finish {
                        pool: pool.clone(),
                        _guard: Some(guard),
                        sender: Some((idx, co.sender)),
                        log,
                    };
                    let body = ProxyBody {
                        inner: Inner::Up(incoming),
                        bytes: 0,
                        ended: false,
                        fin: Some(fin),
                    };
                    return Response::from_parts(rp, body);
                }
            }
        }
        let (upstream, answer) = attempts.answer();
        if let Some(l) = log.as_mut() {
            l.upstream = upstream;
        }
        let status = StatusCode::from_u16(answer.status()).unwrap_or(StatusCode::BAD_GATEWAY);
        self.error(log, status, answer.text())
    }
}

#[cfg(test)]
mod tests {
    use super::super::h1::codec::{self, HashSource, RequestRules};
    use super::*;

    /// The headers the HTTP/1 path sends upstream for `headers`, lower-cased and sorted.
    fn via_h1(headers: &[(&str, &str)], https: bool) -> Vec<(String, String)> {
        let mut raw = String::from("GET /p HTTP/1.1\r\n");
        for (n, v) in headers {
            raw.push_str(&format!("{n}: {v}\r\n"));
        }
        raw.push_str("\r\n");
        let rules = RequestRules {
            max_header_bytes: 16 * 1024,
            hash: HashSource::Off,
            peer_key: 0,
            access_log: false,
            https,
            peer_ip: "192.0.2.7",
            sticky_cookie: None,
        };
        let mut out = Vec::new();
        codec::parse_request(raw.as_bytes(), &mut out, &rules)
            .unwrap()
            .unwrap();
        out.extend_from_slice(b"\r\n");
        let mut parsed = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut parsed);
        assert!(req.parse(&out).unwrap().is_complete());
        sorted(req.headers.iter().map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        }))
    }

    /// The same through the HTTP/2 path's rewrite.
    fn via_h2(headers: &[(&str, &str)], https: bool) -> Vec<(String, String)> {
        let mut b = Request::builder().uri("/p");
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        let (mut parts, ()) = b.body(()).unwrap().into_parts();
        let ip: std::net::IpAddr = "192.0.2.7".parse().unwrap();
        let ip_value = HeaderValue::from_static("192.0.2.7");
        rewrite_head(&mut parts, ip, &ip_value, https);
        sorted(parts.headers.iter().map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        }))
    }

    fn sorted(h: impl Iterator<Item = (String, String)>) -> Vec<(String, String)> {
        let mut v: Vec<_> = h.map(|(n, v)| (n.to_ascii_lowercase(), v)).collect();
        v.sort();
        v
    }

    #[test]
    fn both_paths_forward_the_same_headers() {
        let cases: &[(&[(&str, &str)], bool)] = &[
            (&[("host", "a.example")], false),
            (&[("host", "a.example")], true),
            // The drift this layer fixed: HTTP/2 used to keep only the first X-Forwarded-For.
            (
                &[
                    ("host", "a.example"),
                    ("x-forwarded-for", "10.0.0.1"),
                    ("x-forwarded-for", "10.0.0.2, 10.0.0.3"),
                ],
                false,
            ),
            (
                &[
                    ("host", "a.example"),
                    ("x-forwarded-proto", "https"),
                    ("x-forwarded-host", "b.example"),
                    ("x-request-id", "42"),
                ],
                false,
            ),
            (
                &[
                    ("host", "a.example"),
                    ("connection", "keep-alive, x-secret"),
                    ("x-secret", "s"),
                    ("keep-alive", "timeout=5"),
                    ("proxy-connection", "keep-alive"),
                    ("te", "trailers"),
                    ("upgrade", "websocket"),
                    ("x-kept", "k"),
                ],
                false,
            ),
        ];
        for (headers, https) in cases {
            assert_eq!(
                via_h1(headers, *https),
                via_h2(headers, *https),
                "{headers:?}"
            );
        }
        let xff = via_h2(
            &[
                ("host", "a"),
                ("x-forwarded-for", "10.0.0.1"),
                ("x-forwarded-for", "10.0.0.2"),
            ],
            false,
        );
        assert!(xff.contains(&(
            "x-forwarded-for".to_string(),
            "10.0.0.1, 10.0.0.2, 192.0.2.7".to_string()
        )));
    }
}
