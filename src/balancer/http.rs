//! The HTTP/2 proxy service (hyper serves the client side): one client request in, one upstream
//! attempt (or a few) out, sent as HTTP/1.1 through hyper's client. Rewrites the request for the
//! upstream (hop-by-hop headers out, X-Forwarded-* in, origin-form URI), picks an upstream, fails
//! over on connect errors, retries idempotent requests, maps failures to 502/504, streams both
//! bodies, and writes the access log line when the response body ends. HTTP/1.x clients take the
//! faster path in `h1.rs`, which follows the same rules.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Empty};
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::conn::{checkin, checkout, Sender, UpBody};
use super::log;
use super::pool::{ActiveGuard, Pool};
use super::strategy::{cookie_value, ip_key};
use crate::config::balancer::{HashKey, Settings, Strategy};

/// Keeps the drain waiting while any clone is alive (connections and tunnels hold one).
pub type DrainToken = tokio::sync::mpsc::Sender<()>;

/// State shared by every connection of one balancer.
pub struct Shared {
    pub settings: Settings,
    pub pool: Arc<Pool>,
    pub https: bool,
}

/// The per-connection service.
#[derive(Clone)]
pub struct Proxy {
    pub shared: Arc<Shared>,
    pub client: SocketAddr,
    /// The client's IP as a header value, made once per connection.
    pub client_ip: HeaderValue,
}

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
                checkin(&fin.pool, i, sender);
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

/// Headers that belong to one connection (RFC 9110 section 7.6.1), never forwarded.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including those the Connection header names.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    if h.contains_key(header::CONNECTION) {
        // Only pay for parsing when a Connection header is present.
        let mut named: Vec<HeaderName> = Vec::new();
        for v in h.get_all(header::CONNECTION) {
            for t in v.to_str().unwrap_or("").split(',').map(str::trim) {
                if t.eq_ignore_ascii_case("close") || t.eq_ignore_ascii_case("keep-alive") {
                    continue;
                }
                if let Ok(n) = HeaderName::from_bytes(t.as_bytes()) {
                    named.push(n);
                }
            }
        }
        for n in named {
            h.remove(n);
        }
    }
    for n in &HOP_BY_HOP {
        h.remove(n);
    }
}

/// A bodiless request rebuilt from a saved head, to try again on another upstream.
fn resend(
    m: &Method,
    u: &http::Uri,
    h: &http::HeaderMap,
) -> Request<Either<Incoming, Empty<Bytes>>> {
    let mut r = Request::new(Either::Right(Empty::new()));
    *r.method_mut() = m.clone();
    *r.uri_mut() = u.clone();
    *r.headers_mut() = h.clone();
    r
}

fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
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

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Most attempts remembered per request (more upstreams than this are still tried, by strategy order).
const MAX_TRIED: usize = 16;

impl Proxy {
    fn error(
        &self,
        log: Option<LogInfo>,
        status: StatusCode,
        text: &'static str,
    ) -> Response<ProxyBody> {
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

        // Rewrite the head for the upstream.
        let (mut parts, body) = req.into_parts();
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
        let xff = match parts
            .headers
            .get(X_FORWARDED_FOR)
            .and_then(|v| v.to_str().ok())
        {
            Some(prev) => HeaderValue::from_str(&format!("{prev}, {}", self.client.ip())).ok(),
            None => Some(self.client_ip.clone()),
        };
        if let Some(v) = xff {
            parts.headers.insert(X_FORWARDED_FOR, v);
        }
        parts.headers.insert(
            X_FORWARDED_PROTO,
            HeaderValue::from_static(if self.shared.https { "https" } else { "http" }),
        );
        if !parts.headers.contains_key(X_FORWARDED_HOST) {
            if let Some(h) = parts.headers.get(header::HOST).cloned() {
                parts.headers.insert(X_FORWARDED_HOST, h);
            }
        }

        let body_empty = body.is_end_stream();
        let up_body: UpBody = if body_empty {
            Either::Right(Empty::new())
        } else {
            Either::Left(body)
        };
        // A copy of the head lets a failed idempotent, bodiless request be sent again.
        let can_retry =
            s.retries > 0 && body_empty && is_idempotent(&parts.method) && pool.upstreams.len() > 1;
        let retry_head = can_retry.then(|| {
            (
                parts.method.clone(),
                parts.uri.clone(),
                parts.headers.clone(),
            )
        });
        let mut upreq = Some(Request::from_parts(parts, up_body));

        let mut tried = [usize::MAX; MAX_TRIED];
        let mut ntried = 0;
        let mut retries_left = s.retries;
        let max_attempts = pool.upstreams.len() + s.retries as usize + 2;
        let mut timed_out: Option<usize> = None;
        for _ in 0..max_attempts {
            let Some(req) = upreq.take() else { break };
            let Some(idx) = pool.pick(key, &tried[..ntried]) else {
                break;
            };
            let remembered = ntried < MAX_TRIED;
            if remembered {
                tried[ntried] = idx;
                ntried += 1;
            }
            let guard = ActiveGuard::new(pool.clone(), idx);
            let mut req = req;
            if needs_host {
                if let Ok(h) = HeaderValue::from_str(&pool.upstreams[idx].label) {
                    req.headers_mut().insert(header::HOST, h);
                }
            }
            let mut co = match checkout(pool, idx, s.connect_timeout, s.upstream_idle).await {
                Ok(c) => c,
                Err(_) => {
                    // Nothing was sent: try the next upstream at once, whatever the method.
                    pool.mark_failed(idx);
                    upreq = Some(req);
                    continue;
                }
            };
            let sent =
                tokio::time::timeout(s.upstream_timeout, co.sender.try_send_request(req)).await;
            match sent {
                Err(_elapsed) => {
                    // Too slow: an error of this upstream (a host that fell off the network looks
                    // like this; the health checks take it out), and an idempotent bodiless
                    // request goes to another upstream, as NGINX's `proxy_next_upstream timeout`
                    // does. With none left, the answer is 504.
                    pool.upstreams[idx].errors.fetch_add(1, Relaxed);
                    timed_out = Some(idx);
                    match &retry_head {
                        Some((m, u, h)) if retries_left > 0 => {
                            retries_left -= 1;
                            upreq = Some(resend(m, u, h));
                            continue;
                        }
                        _ => break, // answered with 504 below
                    }
                }
                Ok(Err(mut e)) => {
                    if let Some(r) = e.take_message() {
                        // Never written: a pooled connection that had just closed. Try again.
                        if co.reused {
                            ntried -= usize::from(remembered);
                        } else {
                            pool.mark_failed(idx);
                        }
                        upreq = Some(r);
                        continue;
                    }
                    if co.reused {
                        pool.upstreams[idx].errors.fetch_add(1, Relaxed);
                    } else {
                        pool.mark_failed(idx);
                    }
                    match &retry_head {
                        Some((m, u, h)) if retries_left > 0 => {
                            retries_left -= 1;
                            upreq = Some(resend(m, u, h));
                            continue;
                        }
                        _ => {
                            if let Some(l) = log.as_mut() {
                                l.upstream = Some(idx);
                            }
                            return self.error(
                                log,
                                StatusCode::BAD_GATEWAY,
                                "502 Bad Gateway: the upstream failed\n",
                            );
                        }
                    }
                }
                Ok(Ok(resp)) => {
                    if let Some(l) = log.as_mut() {
                        l.upstream = Some(idx);
                        l.status = resp.status().as_u16();
                    }
                    let (mut rp, incoming) = resp.into_parts();
                    strip_hop_by_hop(&mut rp.headers);
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
        if let Some(idx) = timed_out {
            if let Some(l) = log.as_mut() {
                l.upstream = Some(idx);
            }
            return self.error(
                log,
                StatusCode::GATEWAY_TIMEOUT,
                "504 Gateway Timeout: the upstream did not answer in time\n",
            );
        }
        self.error(
            log,
            StatusCode::BAD_GATEWAY,
            "502 Bad Gateway: no upstream available\n",
        )
    }
}
