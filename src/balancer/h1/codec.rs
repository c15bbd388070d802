//! The HTTP/1.x codec of the proxy, pure (no I/O): parses a client's request head and writes the
//! head sent upstream, parses an upstream's response head and writes the head sent to the client,
//! and makes the framing decisions of RFC 9112 a proxy must get right (body length, chunked or
//! not, keep-alive, upgrades). What is forwarded follows `policy.rs`.
//!
//! Request framing rules (the smuggling defences):
//! - Transfer-Encoding must end in `chunked` (else 501), may appear once (else 400), not in
//!   HTTP/1.0 (400); with Content-Length too, Transfer-Encoding wins, Content-Length is dropped
//!   and the connection closes after the response;
//! - Content-Length is digits only; repeated, its values must agree (else 400);
//! - an HTTP/1.1 request without Host (origin-form target), or any request with two, is a 400;
//! - obs-fold, spaces before the colon and other malformed heads are a 400 (httparse's strict
//!   mode); CONNECT is a 405; a request line naming HTTP/2 or later is a 505.
//!
//! The parser is `httparse` (the one inside hyper).

use std::io::Write as _;
use std::mem::MaybeUninit;

use super::super::policy::{self, ConnectionOptions, RequestHeader, ResponseHeader};
use super::super::sticky;
use super::super::strategy::cookie_value;

/// Most headers in a request or response head (more is a 431, or a 502 from an upstream).
const MAX_HEADERS: usize = 128;

/// A request or response body's framing (RFC 9112 section 6).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Response only: the body ends when the upstream closes.
    UntilClose,
}

/// What the request parser needs besides the bytes: fixed for a connection.
pub struct RequestRules<'a> {
    /// Largest head accepted (431 beyond).
    pub max_header_bytes: usize,
    /// The `hash` strategy's key source, if that strategy is on.
    pub hash: HashSource<'a>,
    /// The key when the header or cookie is missing (the client's IP hashed).
    pub peer_key: u64,
    /// Make the access log's request line.
    pub access_log: bool,
    /// Clients connect over TLS.
    pub https: bool,
    /// The client's address as text, appended to X-Forwarded-For.
    pub peer_ip: &'a str,
    /// The sticky cookie's name (`sticky_cookie`), if the balancer pins clients.
    pub sticky_cookie: Option<&'a str>,
}

/// Where the `hash` strategy's key comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashSource<'a> {
    /// Not hashing: the key is 0.
    Off,
    Ip,
    Header(&'a str),
    Cookie(&'a str),
}

/// What `parse_request` learned about a request; its head for the upstream is in the out buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct ReqInfo {
    pub head_len: usize,
    pub body: Framing,
    pub keep_alive: bool,
    pub http10: bool,
    pub is_head: bool,
    pub idempotent: bool,
    pub upgrade: bool,
    pub expect_continue: bool,
    /// The request had no Host header (HTTP/1.0): the upstream's address is sent as Host.
    pub needs_host: bool,
    pub key: u64,
    /// The upstream token in the sticky cookie, if the request has a valid one.
    pub sticky: Option<u64>,
    /// `METHOD PATH VERSION` for the access log (only when it is on).
    pub log_line: Option<String>,
}

/// Why a request head was refused: the status and the text sent back.
#[derive(Debug, PartialEq, Eq)]
pub struct Refuse(pub u16, pub &'static str);

const TOO_LARGE: Refuse = Refuse(431, "431 Request Header Fields Too Large\n");
const BAD: Refuse = Refuse(400, "400 Bad Request\n");

/// What `parse_response` learned about a final response; its head for the client is in the out
/// buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct RespInfo {
    pub status: u16,
    pub body: Framing,
    /// The upstream connection may carry another request after this response.
    pub reusable: bool,
    /// Chunked body to an HTTP/1.0 client: decode it, the end is the connection's close.
    pub dechunk: bool,
    pub client_keep_alive: bool,
}

/// A complete response head.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// The final response, whose head is this many bytes.
    Final(RespInfo, usize),
    /// A 1xx interim response of this many bytes (passed on as it is).
    Interim(usize),
}

/// Parses the request head at the start of `buf`; on success the upstream request head (without
/// the final CRLF: the Host line may follow, per upstream) is in `out`. `Ok(None)`: incomplete.
pub fn parse_request(
    buf: &[u8],
    out: &mut Vec<u8>,
    rules: &RequestRules<'_>,
) -> Result<Option<ReqInfo>, Refuse> {
    // Uninitialised: zeroing 128 headers twice per request showed in profiles.
    let mut headers = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(TOO_LARGE),
        Err(httparse::Error::Version) if names_other_version(buf) => {
            return Err(Refuse(505, "505 HTTP Version Not Supported\n"))
        }
        Err(_) => return Err(BAD),
    };
    if head_len > rules.max_header_bytes {
        return Err(TOO_LARGE);
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
            Some(_) => return Err(BAD),
            None => ("/", Some(rest)),
        }
    } else {
        return Err(BAD);
    };

    // Connection options first: they decide which headers are forwarded.
    let conn = connection_options(req.headers);

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
    let mut sticky: Option<u64> = None;
    let (hash_header, hash_cookie) = match rules.hash {
        HashSource::Header(k) => (Some(k), None),
        HashSource::Cookie(k) => (None, Some(k)),
        HashSource::Off | HashSource::Ip => (None, None),
    };
    for h in req.headers.iter() {
        let n = h.name;
        let copy = match policy::request_header(n) {
            RequestHeader::Forward => !conn.names(n),
            RequestHeader::Drop | RequestHeader::XForwardedProto => false,
            RequestHeader::Host => {
                // RFC 9112 section 3.2: more than one Host is a 400 (which one would the app see?).
                if has_host_header {
                    return Err(Refuse(400, "400 Bad Request: more than one Host header\n"));
                }
                has_host_header = true;
                if authority.is_none() {
                    host = Some(h.value);
                }
                true
            }
            RequestHeader::Expect => {
                if h.value.eq_ignore_ascii_case(b"100-continue") {
                    expect_continue = true;
                    false
                } else {
                    true
                }
            }
            RequestHeader::Upgrade => {
                upgrade = Some(h.value);
                false
            }
            RequestHeader::ContentLength => {
                let v = content_length(h.value)
                    .ok_or(Refuse(400, "400 Bad Request: bad Content-Length\n"))?;
                if length.is_some_and(|l| l != v) {
                    return Err(Refuse(400, "400 Bad Request: conflicting Content-Length\n"));
                }
                length = Some(v);
                false
            }
            RequestHeader::XForwardedFor => {
                xff_prev.push(h.value);
                false
            }
            RequestHeader::XForwardedHost => {
                has_xfh = true;
                true
            }
            RequestHeader::TransferEncoding => {
                if te.is_some() {
                    return Err(Refuse(400, "400 Bad Request: repeated Transfer-Encoding\n"));
                }
                te = Some(h.value);
                false
            }
        };
        if hash_header.is_some_and(|k| n.eq_ignore_ascii_case(k)) {
            key_value = Some(h.value);
        }
        if let Some(k) = hash_cookie {
            if key_value.is_none() && n.eq_ignore_ascii_case("cookie") {
                key_value = cookie_value(h.value, k);
            }
        }
        if let Some(k) = rules.sticky_cookie {
            if sticky.is_none() && n.eq_ignore_ascii_case("cookie") {
                sticky = cookie_value(h.value, k).and_then(sticky::parse);
            }
        }
        if copy {
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(h.value);
            out.extend_from_slice(b"\r\n");
        }
    }
    // RFC 9112 section 3.2: an HTTP/1.1 request needs a Host (an absolute-form target's authority
    // stands in for it, as NGINX accepts).
    if !http10 && !has_host_header && authority.is_none() {
        return Err(Refuse(400, "400 Bad Request: missing Host header\n"));
    }
    if let (Some(a), false) = (authority, has_host_header) {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    // Body framing (RFC 9112 6.1-6.3). Transfer-Encoding wins over Content-Length, which is then
    // dropped and the connection closed after the response (a smuggling defence).
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
        Some(u) if conn.upgrade && !http10 => {
            out.extend_from_slice(b"connection: upgrade\r\nupgrade: ");
            out.extend_from_slice(u);
            out.extend_from_slice(b"\r\n");
            true
        }
        _ => false,
    };
    out.extend_from_slice(b"x-forwarded-for: ");
    policy::forwarded_for(out, xff_prev.iter().copied(), rules.peer_ip.as_bytes());
    out.extend_from_slice(b"\r\nx-forwarded-proto: ");
    out.extend_from_slice(policy::forwarded_proto(rules.https).as_bytes());
    out.extend_from_slice(b"\r\n");
    if let (false, Some(h)) = (has_xfh, host) {
        out.extend_from_slice(b"x-forwarded-host: ");
        out.extend_from_slice(h);
        out.extend_from_slice(b"\r\n");
    }

    let key = match rules.hash {
        HashSource::Off => 0,
        _ => key_value.map_or(rules.peer_key, xxhash_rust::xxh3::xxh3_64),
    };
    let keep_alive = !must_close && !conn.close && (!http10 || conn.keep_alive);
    let log_line = rules.access_log.then(|| {
        let target = escape_for_log(target.as_bytes());
        format!("{method} {target} HTTP/1.{}", if http10 { 0 } else { 1 })
    });
    Ok(Some(ReqInfo {
        head_len,
        body,
        keep_alive,
        http10,
        is_head: method == "HEAD",
        idempotent: policy::is_idempotent(method),
        upgrade,
        expect_continue,
        needs_host: host.is_none(),
        key,
        sticky,
        log_line,
    }))
}

/// Parses the response head at the start of `buf`, answering request `req`. A final response's
/// head for the client replaces `out`. `draining` is asked only when the client's connection
/// could otherwise stay open. `Ok(None)`: incomplete; `Err`: a broken response (502).
pub fn parse_response(
    buf: &[u8],
    out: &mut Vec<u8>,
    req: &ReqInfo,
    draining: impl FnOnce() -> bool,
) -> Result<Option<Parsed>, ()> {
    let mut headers = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut headers,
    ) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    let status = resp.code.unwrap_or(502);
    // RFC 9110 section 15: 100-599. httparse takes any three digits ("001" is 1), which would be
    // written on as an invalid status line (found by fuzzing).
    if !(100..=599).contains(&status) {
        return Err(());
    }
    if (100..200).contains(&status) && status != 101 {
        return Ok(Some(Parsed::Interim(len)));
    }
    let up_http10 = resp.version == Some(0);
    // Framing and connection options first: they decide which headers are passed on.
    let conn = connection_options(resp.headers);
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
    let tunnel = status == 101 && req.upgrade;
    out.clear();
    let _ = write!(out, "HTTP/1.1 {status} ");
    out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut length: Option<u64> = None;
    let mut upgrade: Option<&[u8]> = None;
    for h in resp.headers.iter() {
        let n = h.name;
        let copy = match policy::response_header(n) {
            ResponseHeader::Forward => !conn.names(n),
            ResponseHeader::Drop => false,
            ResponseHeader::Upgrade => {
                upgrade = Some(h.value);
                false
            }
            // With Transfer-Encoding, Content-Length is wrong by definition: dropped.
            ResponseHeader::ContentLength => {
                let v = content_length(h.value).ok_or(())?;
                if length.is_some_and(|l| l != v) {
                    return Err(());
                }
                length = Some(v);
                !(chunked || te_other)
            }
            // Passed on, unless a chunked body is decoded for an HTTP/1.0 client.
            ResponseHeader::TransferEncoding => !(req.http10 && chunked),
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
    } else if req.is_head || status == 204 || status == 304 || status == 101 {
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
        && !conn.close
        && (!up_http10 || conn.keep_alive)
        && body != Framing::UntilClose;
    let dechunk = req.http10 && body == Framing::Chunked;
    let client_keep_alive =
        !tunnel && req.keep_alive && body != Framing::UntilClose && !dechunk && !draining();
    if tunnel {
        out.extend_from_slice(b"connection: upgrade\r\nupgrade: ");
        out.extend_from_slice(upgrade.unwrap_or(b""));
        out.extend_from_slice(b"\r\n");
    } else if !client_keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if req.http10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(Parsed::Final(
        RespInfo {
            status,
            body,
            reusable,
            dechunk,
            client_keep_alive,
        },
        len,
    )))
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

/// The options of every Connection header of a head.
fn connection_options<'a>(headers: &[httparse::Header<'a>]) -> ConnectionOptions<'a> {
    let mut o = ConnectionOptions::default();
    for h in headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            o.add(h.value);
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

/// The request line of a refused head as the access log shows it: as far as it arrived, escaped,
/// at most `MAX_LOGGED_LINE` bytes, or `-`.
pub fn refused_log_line(buf: &[u8]) -> String {
    let line = buf.split(|b| *b == b'\n').next().unwrap_or(b"");
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = escape_for_log(&line[..line.len().min(MAX_LOGGED_LINE)]);
    if line.is_empty() {
        "-".to_string()
    } else {
        line
    }
}

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
mod tests;
