//! The forwarding policy of HTTP mode, written once and followed by both the HTTP/1 path (`h1/`)
//! and the HTTP/2 path (`h2.rs`):
//!
//! - attempts: which upstream failures send a request to another upstream, which may be retried
//!   (idempotent, bodiless, not an upgrade: at most `retries` times), which are free (nothing
//!   reached an upstream), what each failure does to the upstream's state, and which answer the
//!   client gets when every attempt failed (the last failure's: 502 or 504) — [`Attempts`];
//! - headers: which are hop-by-hop and never forwarded (RFC 9110 section 7.6.1, plus those the
//!   Connection header names), and the X-Forwarded-* rules: X-Forwarded-For is the client's chain
//!   (every X-Forwarded-For it sent, in order) with the peer's address appended, as NGINX's
//!   `$proxy_add_x_forwarded_for`; X-Forwarded-Proto is set by the balancer (`http` or `https`);
//!   X-Forwarded-Host is the client's if it sent one, otherwise its Host.

use super::pool::Pool;

/// Most attempts remembered per request (more upstreams than this are still tried, by strategy
/// order).
pub const MAX_TRIED: usize = 16;

/// Methods whose requests may be sent again (RFC 9110 section 9.2.2).
pub fn is_idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
    )
}

/// Whether a request can be replayed on another upstream: idempotent, no body, not an upgrade.
pub fn is_replayable(idempotent: bool, has_body: bool, upgrade: bool) -> bool {
    idempotent && !has_body && !upgrade
}

/// How one attempt on an upstream failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No connection could be made: nothing was sent.
    ConnectFailed,
    /// The connection failed before the request went out: nothing reached the upstream. A pooled
    /// connection (`reused`) that the upstream had closed is not its fault; a fresh one is.
    NotSent { reused: bool },
    /// A pooled connection closed before any response byte (the keep-alive race): the request
    /// may have been processed.
    Stale,
    /// No response head within the upstream timeout.
    TimedOut,
    /// The upstream failed (reset, closed, garbage) before a complete response head.
    Failed { reused: bool },
    /// The connection caps were reached and no slot came free within `timeouts.queue` (or the
    /// queue was full): nothing was sent.
    Busy,
}

/// What a failure does to the upstream's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    Nothing,
    /// Counted as an error; stays in rotation.
    Error,
    /// Counted and taken out of rotation (passive health).
    Down,
}

/// What comes after a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Then {
    /// Try again at once, at no cost to the retry budget.
    Again,
    /// Try again if the request may be retried and budget is left.
    Retry,
    /// Answer the client.
    GiveUp,
}

/// The answer when no attempt succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Unavailable,
    /// No upstream is up and some are held out by the daemon: their app is not ready.
    NotReady,
    Failed,
    Timeout,
    Busy,
}

impl Answer {
    pub fn status(self) -> u16 {
        match self {
            Answer::Unavailable | Answer::Failed => 502,
            Answer::Timeout => 504,
            Answer::Busy | Answer::NotReady => 503,
        }
    }

    /// The body sent to the client (its first line starts with the status).
    pub fn text(self) -> &'static str {
        match self {
            Answer::Unavailable => "502 Bad Gateway: no upstream available\n",
            Answer::Failed => "502 Bad Gateway: the upstream failed\n",
            Answer::Timeout => "504 Gateway Timeout: the upstream did not answer in time\n",
            Answer::Busy => "503 Service Unavailable: every upstream connection is busy\n",
            Answer::NotReady => "503 Service Unavailable: no upstream is ready\n",
        }
    }
}

/// The policy's verdict on one failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub mark: Mark,
    /// The upstream leaves the tried list: it may be picked again for this request.
    pub forget: bool,
    pub then: Then,
    /// The client's answer if nothing later succeeds (`None`: the previous one stands).
    pub answer: Option<Answer>,
}

/// The policy: what a failure means, for a request that is (or is not) replayable.
pub fn decide(failure: Failure, replayable: bool) -> Decision {
    let d = |mark, forget, then, answer| Decision {
        mark,
        forget,
        then,
        answer,
    };
    match failure {
        // Nothing was sent: the next upstream at once, whatever the method.
        Failure::ConnectFailed | Failure::NotSent { reused: false } => {
            d(Mark::Down, false, Then::Again, Some(Answer::Unavailable))
        }
        // A pooled connection the upstream had closed, found before the request went out: not
        // this upstream's fault, and safe to send again whatever the method.
        Failure::NotSent { reused: true } => d(Mark::Nothing, true, Then::Again, None),
        // The keep-alive race: replayable requests go again; others may have been processed.
        Failure::Stale => d(
            Mark::Nothing,
            true,
            if replayable {
                Then::Again
            } else {
                Then::GiveUp
            },
            Some(Answer::Failed),
        ),
        // Too slow: an error of this upstream (the health checks take a dead host out), and a
        // retryable request goes to another one, as NGINX's `proxy_next_upstream timeout` does.
        Failure::TimedOut => d(Mark::Error, false, Then::Retry, Some(Answer::Timeout)),
        // A fresh connection that fails says the upstream is in trouble: out of the rotation. One
        // pooled connection failing is counted, not more.
        Failure::Failed { reused } => d(
            if reused { Mark::Error } else { Mark::Down },
            false,
            Then::Retry,
            Some(Answer::Failed),
        ),
        // The request already waited its turn (NGINX Plus answers a queue timeout at once too).
        Failure::Busy => d(Mark::Nothing, false, Then::GiveUp, Some(Answer::Busy)),
    }
}

/// The attempts of one request: picks upstreams (none twice, unless forgotten), applies
/// [`decide`] to failures, keeps the retry budget and the answer. Lives on the stack: no
/// allocation per request.
pub struct Attempts {
    tried: [usize; MAX_TRIED],
    ntried: usize,
    /// The last pick went into `tried` (there was room).
    last_remembered: bool,
    retries_left: u32,
    may_retry: bool,
    replayable: bool,
    /// Picks left: every upstream, every retry and two more (pooled connections that had closed).
    picks_left: usize,
    made: usize,
    failure: Option<(usize, Answer)>,
}

impl Attempts {
    /// For a request to one of `upstreams`, with `retries` allowed by the settings.
    pub fn new(retries: u32, upstreams: usize, replayable: bool) -> Attempts {
        Attempts {
            tried: [usize::MAX; MAX_TRIED],
            ntried: 0,
            last_remembered: false,
            retries_left: retries,
            may_retry: retries > 0 && replayable && upstreams > 1,
            replayable,
            picks_left: upstreams + retries as usize + 2,
            made: 0,
            failure: None,
        }
    }

    /// The request may be retried after a failure that reached an upstream (keep what resending
    /// it needs).
    pub fn may_retry(&self) -> bool {
        self.may_retry
    }

    /// The next upstream to try, if any is left: `pinned` (the upstream a sticky cookie names)
    /// while it is up and not tried (a stale pooled connection is forgotten, so it comes again),
    /// else as the strategy picks.
    pub fn next(&mut self, pool: &Pool, key: u64, pinned: Option<usize>) -> Option<usize> {
        self.picks_left = self.picks_left.checked_sub(1)?;
        let tried = &self.tried[..self.ntried];
        let pinned = pinned.filter(|i| !tried.contains(i) && pool.is_up(*i));
        let Some(idx) = pinned.or_else(|| pool.pick(key, tried)) else {
            if self.failure.is_none() && pool.any_held() {
                self.failure = Some((usize::MAX, Answer::NotReady));
            }
            return None;
        };
        self.last_remembered = self.ntried < MAX_TRIED;
        if self.last_remembered {
            self.tried[self.ntried] = idx;
            self.ntried += 1;
        }
        self.made += 1;
        Some(idx)
    }

    /// This is not the request's first attempt.
    pub fn is_retry(&self) -> bool {
        self.made > 1
    }

    /// Applies the policy to a failure of `idx` (the last upstream picked); true: try again.
    /// Counted in the upstream's figures: a connect error, and a retry when another attempt follows.
    pub fn failed(&mut self, pool: &Pool, idx: usize, failure: Failure) -> bool {
        let d = decide(failure, self.replayable);
        match d.mark {
            Mark::Nothing => {}
            Mark::Error => pool.count_error(idx),
            Mark::Down => pool.mark_failed(idx),
        }
        let stats = &pool.upstreams[idx].stats;
        if matches!(
            failure,
            Failure::ConnectFailed | Failure::NotSent { reused: false }
        ) {
            stats.connect_failed();
        }
        if d.forget {
            self.ntried -= usize::from(self.last_remembered);
            self.last_remembered = false;
        }
        if let Some(a) = d.answer {
            self.failure = Some((idx, a));
        }
        let again = self.then(d.then);
        if again {
            stats.retried();
        }
        again
    }

    fn then(&mut self, then: Then) -> bool {
        match then {
            Then::Again => true,
            Then::Retry if self.may_retry && self.retries_left > 0 => {
                self.retries_left -= 1;
                true
            }
            Then::Retry | Then::GiveUp => false,
        }
    }

    /// The client's answer when no attempt succeeded: the last failure's (and its upstream), or
    /// 502 when no upstream was available at all (503 when the daemon holds them out: not ready).
    pub fn answer(&self) -> (Option<usize>, Answer) {
        match self.failure {
            Some((_, Answer::NotReady)) => (None, Answer::NotReady),
            Some((i, a)) => (Some(i), a),
            None => (None, Answer::Unavailable),
        }
    }
}

/// Headers that belong to one connection (RFC 9110 section 7.6.1), never forwarded either way.
pub const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
];

/// The balancer sets these; the client's X-Forwarded-For is kept as the start of the chain.
pub const X_FORWARDED_FOR: &str = "x-forwarded-for";
pub const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
pub const X_FORWARDED_HOST: &str = "x-forwarded-host";

/// What the forwarding rules do with a request header (by name, ASCII case-insensitive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestHeader {
    /// Passed on as it is (unless the Connection header names it).
    Forward,
    /// Hop-by-hop: not passed on.
    Drop,
    Host,
    Expect,
    /// Hop-by-hop, but a tunnel's upgrade is passed on when Connection names it.
    Upgrade,
    ContentLength,
    /// Hop-by-hop, but it frames the body: passed on after the framing rules.
    TransferEncoding,
    XForwardedFor,
    XForwardedHost,
    /// Replaced by the balancer's own.
    XForwardedProto,
}

/// Classifies a request header name. Matching on the length first keeps the common case (a header
/// passed on) to one comparison or none.
#[inline]
pub fn request_header(n: &str) -> RequestHeader {
    match n.len() {
        2 if n.eq_ignore_ascii_case("te") => RequestHeader::Drop,
        4 if n.eq_ignore_ascii_case("host") => RequestHeader::Host,
        6 if n.eq_ignore_ascii_case("expect") => RequestHeader::Expect,
        7 if n.eq_ignore_ascii_case("upgrade") => RequestHeader::Upgrade,
        10 if n.eq_ignore_ascii_case("connection") || n.eq_ignore_ascii_case("keep-alive") => {
            RequestHeader::Drop
        }
        14 if n.eq_ignore_ascii_case("content-length") => RequestHeader::ContentLength,
        15 if n.eq_ignore_ascii_case(X_FORWARDED_FOR) => RequestHeader::XForwardedFor,
        16 if n.eq_ignore_ascii_case("proxy-connection") => RequestHeader::Drop,
        16 if n.eq_ignore_ascii_case(X_FORWARDED_HOST) => RequestHeader::XForwardedHost,
        17 if n.eq_ignore_ascii_case("transfer-encoding") => RequestHeader::TransferEncoding,
        17 if n.eq_ignore_ascii_case(X_FORWARDED_PROTO) => RequestHeader::XForwardedProto,
        _ => RequestHeader::Forward,
    }
}

/// What the forwarding rules do with a response header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseHeader {
    Forward,
    Drop,
    Upgrade,
    ContentLength,
    TransferEncoding,
}

/// Classifies a response header name.
#[inline]
pub fn response_header(n: &str) -> ResponseHeader {
    match n.len() {
        2 if n.eq_ignore_ascii_case("te") => ResponseHeader::Drop,
        7 if n.eq_ignore_ascii_case("upgrade") => ResponseHeader::Upgrade,
        10 if n.eq_ignore_ascii_case("connection") || n.eq_ignore_ascii_case("keep-alive") => {
            ResponseHeader::Drop
        }
        14 if n.eq_ignore_ascii_case("content-length") => ResponseHeader::ContentLength,
        16 if n.eq_ignore_ascii_case("proxy-connection") => ResponseHeader::Drop,
        17 if n.eq_ignore_ascii_case("transfer-encoding") => ResponseHeader::TransferEncoding,
        _ => ResponseHeader::Forward,
    }
}

/// What a message's Connection headers say (RFC 9110 section 7.6.1).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ConnectionOptions<'a> {
    pub close: bool,
    pub keep_alive: bool,
    pub upgrade: bool,
    /// Other headers it names: they belong to this connection and are not forwarded.
    pub named: Vec<&'a str>,
}

impl<'a> ConnectionOptions<'a> {
    /// Adds the options of one Connection header value.
    pub fn add(&mut self, value: &'a [u8]) {
        for t in std::str::from_utf8(value).unwrap_or("").split(',') {
            let t = t.trim();
            if t.eq_ignore_ascii_case("close") {
                self.close = true;
            } else if t.eq_ignore_ascii_case("keep-alive") {
                self.keep_alive = true;
            } else if t.eq_ignore_ascii_case("upgrade") {
                self.upgrade = true;
            } else if !t.is_empty() {
                self.named.push(t);
            }
        }
    }

    /// Whether the Connection header named this header (it is then not forwarded).
    pub fn names(&self, header: &str) -> bool {
        self.named.iter().any(|t| t.eq_ignore_ascii_case(header))
    }
}

/// Appends the X-Forwarded-For value for the upstream to `out`: each value of the client's
/// X-Forwarded-For headers in order, then `peer` (the client's address), joined by `", "`.
pub fn forwarded_for<'a>(
    out: &mut Vec<u8>,
    chain: impl IntoIterator<Item = &'a [u8]>,
    peer: &[u8],
) {
    for p in chain {
        out.extend_from_slice(p);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(peer);
}

/// The X-Forwarded-Proto value.
pub fn forwarded_proto(https: bool) -> &'static str {
    if https {
        "https"
    } else {
        "http"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_table() {
        use Answer::*;
        use Failure::*;
        use Mark::*;
        use Then::*;
        // (failure, replayable) → (mark, forget, then, answer)
        let table = [
            (
                ConnectFailed,
                false,
                (Down, false, Again, Some(Unavailable)),
            ),
            (ConnectFailed, true, (Down, false, Again, Some(Unavailable))),
            (
                NotSent { reused: true },
                false,
                (Nothing, true, Again, None),
            ),
            (
                NotSent { reused: false },
                false,
                (Down, false, Again, Some(Unavailable)),
            ),
            (Stale, true, (Nothing, true, Again, Some(Failed))),
            (Stale, false, (Nothing, true, GiveUp, Some(Failed))),
            (TimedOut, true, (Error, false, Retry, Some(Timeout))),
            (
                Failure::Failed { reused: true },
                true,
                (Error, false, Retry, Some(Answer::Failed)),
            ),
            (
                Failure::Failed { reused: false },
                true,
                (Down, false, Retry, Some(Answer::Failed)),
            ),
            (
                Failure::Busy,
                true,
                (Nothing, false, GiveUp, Some(Answer::Busy)),
            ),
        ];
        for (f, replayable, (mark, forget, then, answer)) in table {
            let want = Decision {
                mark,
                forget,
                then,
                answer,
            };
            assert_eq!(decide(f, replayable), want, "{f:?} replayable={replayable}");
        }
    }

    fn pool(n: usize) -> Pool {
        use super::super::strategy::Selector;
        use crate::config::balancer::Strategy;
        let labels: Vec<String> = (0..n).map(|i| format!("127.0.0.1:{}", 1000 + i)).collect();
        let weights = vec![1; n];
        let members = labels
            .iter()
            .map(|l| (l.clone(), l.parse().unwrap(), 1))
            .collect();
        Pool::new(
            members,
            Selector::new(Strategy::RoundRobin, &weights, &labels),
            std::time::Duration::from_secs(10),
            false,
            1,
        )
    }

    #[test]
    fn retries_spend_the_budget_and_the_last_failure_answers() {
        let p = pool(3);
        let mut a = Attempts::new(1, 3, true);
        assert!(a.may_retry());
        let first = a.next(&p, 0, None).unwrap();
        assert!(!a.is_retry());
        assert!(a.failed(&p, first, Failure::TimedOut));
        let second = a.next(&p, 0, None).unwrap();
        assert_ne!(first, second);
        assert!(a.is_retry());
        // The budget is spent: the next failure that needs it gives up, with its own answer.
        assert!(!a.failed(&p, second, Failure::Failed { reused: true }));
        assert_eq!(a.answer(), (Some(second), Answer::Failed));
        assert_eq!(
            p.upstreams[first]
                .errors
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        assert!(
            p.is_up(first) && p.is_up(second),
            "errors on pooled connections keep them up"
        );
    }

    #[test]
    fn free_attempts_and_no_retries_for_bodies() {
        let p = pool(2);
        let mut a = Attempts::new(3, 2, false);
        assert!(!a.may_retry());
        let i = a.next(&p, 0, None).unwrap();
        // A stale pooled connection is forgotten: the same upstream may come again.
        assert!(a.failed(&p, i, Failure::NotSent { reused: true }));
        let j = a.next(&p, 0, None).unwrap();
        assert!(
            !a.failed(&p, j, Failure::TimedOut),
            "a request with a body is never retried"
        );
        assert_eq!(a.answer(), (Some(j), Answer::Timeout));
        // Connect failures fail over whatever the request, and take the upstream out.
        let p = pool(2);
        let mut a = Attempts::new(0, 2, false);
        let i = a.next(&p, 0, None).unwrap();
        assert!(a.failed(&p, i, Failure::ConnectFailed));
        assert!(!p.is_up(i));
        let j = a.next(&p, 0, None).unwrap();
        assert_ne!(i, j);
        assert!(a.failed(&p, j, Failure::ConnectFailed));
        assert_eq!(a.next(&p, 0, None), None);
        assert_eq!(a.answer(), (Some(j), Answer::Unavailable));
    }

    #[test]
    fn a_sticky_upstream_goes_first_and_a_failure_there_fails_over() {
        let p = pool(3);
        let token = p.upstreams[2].sticky_token;
        assert_eq!(p.sticky_upstream(token), Some(2));
        assert_eq!(
            p.sticky_upstream(token ^ 1),
            None,
            "no upstream has that token"
        );
        // Every request with the cookie goes to its upstream, whatever the rotation says.
        for _ in 0..5 {
            let mut a = Attempts::new(1, 3, true);
            assert_eq!(a.next(&p, 0, p.sticky_upstream(token)), Some(2));
        }
        // A stale pooled connection to it is not its failure: the client stays on it.
        let mut a = Attempts::new(1, 3, true);
        let pinned = p.sticky_upstream(token);
        assert_eq!(a.next(&p, 0, pinned), Some(2));
        assert!(a.failed(&p, 2, Failure::Stale));
        assert_eq!(a.next(&p, 0, pinned), Some(2));
        // A timeout there: the retry goes elsewhere (the pin holds for the next requests).
        let mut a = Attempts::new(1, 3, true);
        assert_eq!(a.next(&p, 0, pinned), Some(2));
        assert!(a.failed(&p, 2, Failure::TimedOut));
        assert_ne!(a.next(&p, 0, pinned), Some(2));
        assert_eq!(p.sticky_upstream(token), Some(2));
        // It fails to connect: the retry goes elsewhere, and the upstream (down now) no longer
        // pins anyone.
        let mut a = Attempts::new(1, 3, true);
        let pinned = p.sticky_upstream(token);
        assert_eq!(a.next(&p, 0, pinned), Some(2));
        assert!(a.failed(&p, 2, Failure::ConnectFailed));
        let other = a.next(&p, 0, pinned).unwrap();
        assert_ne!(other, 2);
        assert_eq!(p.sticky_upstream(token), None);
    }

    #[test]
    fn picks_are_bounded() {
        let p = pool(1);
        let mut a = Attempts::new(0, 1, true);
        let mut n = 0;
        while let Some(i) = a.next(&p, 0, None) {
            n += 1;
            assert!(a.failed(&p, i, Failure::NotSent { reused: true }));
        }
        assert_eq!(n, 3, "one upstream, no retries, two more");
    }

    #[test]
    fn idempotent_methods() {
        for (m, want) in [
            ("GET", true),
            ("HEAD", true),
            ("PUT", true),
            ("DELETE", true),
            ("OPTIONS", true),
            ("TRACE", true),
            ("POST", false),
            ("PATCH", false),
            ("get", false),
        ] {
            assert_eq!(is_idempotent(m), want, "{m}");
        }
    }

    #[test]
    fn hop_by_hop_headers_are_dropped_both_ways() {
        for name in HOP_BY_HOP {
            let upper = name.to_ascii_uppercase();
            assert_ne!(request_header(&upper), RequestHeader::Forward, "{name}");
            assert_ne!(response_header(&upper), ResponseHeader::Forward, "{name}");
        }
        assert_eq!(
            request_header("X-Forwarded-For"),
            RequestHeader::XForwardedFor
        );
        assert_eq!(request_header("X-Request-Id"), RequestHeader::Forward);
        assert_eq!(response_header("Content-Type"), ResponseHeader::Forward);
    }

    #[test]
    fn connection_options() {
        let mut o = ConnectionOptions::default();
        o.add(b"keep-alive, X-Secret");
        o.add(b"Upgrade,,close");
        assert!(o.keep_alive && o.upgrade && o.close);
        assert!(o.names("x-secret") && !o.names("x-other"));
    }

    #[test]
    fn forwarded_for_appends_the_peer_to_the_chain() {
        let table: [(&[&[u8]], &[u8]); 3] = [
            (&[], b"127.0.0.1"),
            (&[b"10.0.0.1"], b"10.0.0.1, 127.0.0.1"),
            (
                &[b"10.0.0.1, 10.0.0.2", b"10.0.0.3"],
                b"10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.1",
            ),
        ];
        for (chain, want) in table {
            let mut out = Vec::new();
            forwarded_for(&mut out, chain.iter().copied(), b"127.0.0.1");
            assert_eq!(out, want);
        }
    }
}
