//! Unit tests of the HTTP/1.x codec: request framing (the smuggling cases), the head written
//! upstream, response framing and the head written to the client.

use super::*;

fn rules() -> RequestRules<'static> {
    RequestRules {
        max_header_bytes: 16 * 1024,
        hash: HashSource::Off,
        peer_key: 7,
        access_log: false,
        https: false,
        peer_ip: "127.0.0.1",
        sticky_cookie: None,
    }
}

fn request(raw: &str) -> Result<Option<ReqInfo>, Refuse> {
    let mut out = Vec::new();
    parse_request(raw.as_bytes(), &mut out, &rules())
}

/// The upstream head for `raw` (which must parse).
fn upstream_head(raw: &str) -> String {
    let mut out = Vec::new();
    parse_request(raw.as_bytes(), &mut out, &rules())
        .unwrap()
        .unwrap();
    String::from_utf8(out).unwrap()
}

/// What a request head becomes: its framing and keep-alive, or the status it is refused with.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Ok(Framing, bool),
    Refused(u16),
    Incomplete,
}

fn verdict(raw: &str) -> Verdict {
    match request(raw) {
        Ok(Some(i)) => Verdict::Ok(i.body, i.keep_alive),
        Ok(None) => Verdict::Incomplete,
        Err(Refuse(code, _)) => Verdict::Refused(code),
    }
}

#[test]
fn request_framing_and_smuggling_cases() {
    use Framing::*;
    use Verdict::*;
    let table: &[(&str, &str, Verdict)] = &[
        ("plain GET", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", Ok(None, true)),
        ("Content-Length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n", Ok(Length(5), true)),
        ("Content-Length 0", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", Ok(None, true)),
        ("chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", Ok(Chunked, true)),
        ("chunked, any case", "POST / HTTP/1.1\r\nHost: a\r\ntransfer-encoding: ChUnKeD\r\n\r\n", Ok(Chunked, true)),
        ("gzip then chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", Ok(Chunked, true)),
        // CL.TE / TE.CL: Transfer-Encoding wins, and the connection is not reused after.
        ("CL + TE", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n", Ok(Chunked, false)),
        ("TE + CL", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n", Ok(Chunked, false)),
        ("duplicate equal CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", Ok(Length(5), true)),
        ("CL list of equal values", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", Ok(Length(5), true)),
        ("conflicting CL headers", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", Refused(400)),
        ("conflicting CL list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n", Refused(400)),
        ("CL with a sign", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", Refused(400)),
        ("negative CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", Refused(400)),
        ("CL in hex", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n", Refused(400)),
        ("CL with inner space", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n", Refused(400)),
        ("empty CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", Refused(400)),
        ("CL over u64", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", Refused(400)),
        ("TE not ending in chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", Refused(501)),
        ("chunked then gzip", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", Refused(501)),
        ("TE chunked with junk", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", Refused(501)),
        ("repeated TE", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", Refused(400)),
        ("TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", Refused(400)),
        ("obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n", Refused(400)),
        ("obs-fold of TE", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n", Refused(400)),
        ("space before colon", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\n", Refused(400)),
        ("space before TE colon", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n", Refused(400)),
        ("NUL in a value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\0b\r\n\r\n", Refused(400)),
        ("CONNECT", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", Refused(405)),
        ("HTTP/2.0 request line", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", Refused(505)),
        ("garbage", "THIS IS NOT HTTP\r\n\r\n", Refused(400)),
        ("relative target", "GET a/b HTTP/1.1\r\nHost: a\r\n\r\n", Refused(400)),
        ("absolute target with query only", "GET http://a?x HTTP/1.1\r\n\r\n", Refused(400)),
        ("partial head", "GET / HTTP/1.1\r\nHost: a\r\n", Incomplete),
        ("HTTP/1.0 closes", "GET / HTTP/1.0\r\n\r\n", Ok(None, false)),
        ("HTTP/1.0 keep-alive", "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", Ok(None, true)),
        ("Connection: close", "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", Ok(None, false)),
        ("HTTP/1.1 without Host", "GET / HTTP/1.1\r\nX-A: 1\r\n\r\n", Refused(400)),
        ("two Host headers", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", Refused(400)),
        ("two Host headers, same value", "GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", Refused(400)),
        ("two Host headers in HTTP/1.0", "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", Refused(400)),
        ("absolute form needs no Host", "GET http://a/ HTTP/1.1\r\n\r\n", Ok(None, true)),
    ];
    for (what, raw, want) in table {
        assert_eq!(&verdict(raw), want, "{what}");
    }
}

#[test]
fn too_many_or_too_large_headers_are_431() {
    let many: String = (0..200).map(|i| format!("X-{i}: v\r\n")).collect();
    assert_eq!(
        verdict(&format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n")),
        Verdict::Refused(431)
    );
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "b".repeat(17_000)
    );
    assert_eq!(verdict(&big), Verdict::Refused(431));
}

#[test]
fn the_upstream_head_drops_hop_by_hop_and_adds_forwarding_headers() {
    let head = upstream_head(
        "POST /p?q=1 HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive, X-Secret\r\n\
         Keep-Alive: timeout=5\r\nX-Secret: s\r\nTE: trailers\r\nProxy-Connection: x\r\n\
         X-Forwarded-Proto: https\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2\r\n\
         Content-Length: 3\r\nX-Keep: k\r\n\r\n",
    );
    assert_eq!(
        head,
        "POST /p?q=1 HTTP/1.1\r\nHost: example.com\r\nX-Keep: k\r\ncontent-length: 3\r\n\
         x-forwarded-for: 10.0.0.1, 10.0.0.2, 127.0.0.1\r\nx-forwarded-proto: http\r\n\
         x-forwarded-host: example.com\r\n"
    );
}

#[test]
fn absolute_form_targets_become_origin_form() {
    let head = upstream_head("GET http://example.com:8080/a/b?c HTTP/1.1\r\n\r\n");
    assert!(
        head.starts_with("GET /a/b?c HTTP/1.1\r\nhost: example.com:8080\r\n"),
        "{head}"
    );
    assert!(
        head.contains("x-forwarded-host: example.com:8080\r\n"),
        "{head}"
    );
    let info = request("GET http://example.com HTTP/1.1\r\n\r\n")
        .unwrap()
        .unwrap();
    assert!(!info.needs_host);
    let info = request("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
    assert!(info.needs_host);
}

#[test]
fn a_kept_x_forwarded_host_and_a_smuggled_content_length_with_te() {
    let head = upstream_head(
        "POST / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Host: b\r\nContent-Length: 4\r\n\
         Transfer-Encoding: chunked\r\n\r\n",
    );
    assert!(
        !head.to_ascii_lowercase().contains("content-length"),
        "{head}"
    );
    assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
    assert!(head.contains("X-Forwarded-Host: b\r\n"), "{head}");
    assert!(!head.contains("x-forwarded-host: a"), "{head}");
}

#[test]
fn upgrades_need_connection_upgrade_and_http11() {
    let raw = "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
    let info = request(raw).unwrap().unwrap();
    assert!(info.upgrade);
    assert!(upstream_head(raw).contains("connection: upgrade\r\nupgrade: websocket\r\n"));
    let info = request("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n")
        .unwrap()
        .unwrap();
    assert!(!info.upgrade);
}

#[test]
fn methods_expect_and_hash_keys() {
    let info = request("HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap()
        .unwrap();
    assert!(info.is_head && info.idempotent);
    let info =
        request("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
            .unwrap()
            .unwrap();
    assert!(!info.idempotent && info.expect_continue);
    assert_eq!(info.key, 0);

    let parse = |hash, raw: &str| {
        let r = RequestRules { hash, ..rules() };
        parse_request(raw.as_bytes(), &mut Vec::new(), &r)
            .unwrap()
            .unwrap()
            .key
    };
    let raw = "GET / HTTP/1.1\r\nHost: a\r\nX-User: u1\r\nCookie: a=1; sid=s1\r\n\r\n";
    assert_eq!(
        parse(HashSource::Header("x-user"), raw),
        xxhash_rust::xxh3::xxh3_64(b"u1")
    );
    assert_eq!(
        parse(HashSource::Cookie("sid"), raw),
        xxhash_rust::xxh3::xxh3_64(b"s1")
    );
    assert_eq!(
        parse(HashSource::Cookie("none"), raw),
        7,
        "missing: the peer's key"
    );
    assert_eq!(parse(HashSource::Ip, raw), 7);
}

#[test]
fn the_sticky_cookie_is_read_from_any_cookie_header() {
    let r = RequestRules {
        sticky_cookie: Some("srv"),
        ..rules()
    };
    let sticky = |raw: &str| {
        parse_request(raw.as_bytes(), &mut Vec::new(), &r)
            .unwrap()
            .unwrap()
            .sticky
    };
    let head = "GET / HTTP/1.1\r\nHost: a\r\n";
    assert_eq!(
        sticky(&format!("{head}Cookie: a=1; srv=00000000000000ab\r\n\r\n")),
        Some(0xab)
    );
    assert_eq!(
        sticky(&format!(
            "{head}Cookie: a=1\r\nCookie: srv=00000000000000cd\r\n\r\n"
        )),
        Some(0xcd),
        "a second Cookie header (HTTP/2 sends one per cookie)"
    );
    assert_eq!(
        sticky(&format!("{head}Cookie: srv=not-a-token\r\n\r\n")),
        None
    );
    assert_eq!(sticky(&format!("{head}\r\n")), None);
    // The cookie goes on to the upstream as it was.
    let mut out = Vec::new();
    let raw = format!("{head}Cookie: srv=00000000000000ab\r\n\r\n");
    parse_request(raw.as_bytes(), &mut out, &r)
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&out).contains("Cookie: srv=00000000000000ab\r\n"));
}

#[test]
fn access_log_lines_are_escaped() {
    let r = RequestRules {
        access_log: true,
        ..rules()
    };
    let info = parse_request(b"GET /a?b=\"c\" HTTP/1.0\r\n\r\n", &mut Vec::new(), &r)
        .unwrap()
        .unwrap();
    assert_eq!(
        info.log_line.as_deref(),
        Some("GET /a?b=\\x22c\\x22 HTTP/1.0")
    );
    assert_eq!(refused_log_line(b"\x01\\ x\r\nHost: a"), "\\x01\\x5C x");
    assert_eq!(refused_log_line(b"\r\n"), "-");
    assert_eq!(refused_log_line(&[b'a'; 300]).len(), MAX_LOGGED_LINE);
}

#[test]
fn unsupported_versions_are_told_apart_from_garbage() {
    assert!(names_other_version(b"GET / HTTP/3.0\r\n"));
    assert!(!names_other_version(b"THIS IS NOT HTTP\r\n\r\n"));
    assert!(!names_other_version(b"GET"));
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

/// The request `raw` as parsed, to answer in the response tests.
fn req(raw: &str) -> ReqInfo {
    request(raw).unwrap().unwrap()
}

fn response(req: &ReqInfo, raw: &str, draining: bool) -> Result<Option<Parsed>, ()> {
    let mut out = Vec::new();
    parse_response(raw.as_bytes(), &mut out, req, || draining)
}

#[test]
fn response_framing() {
    use Framing::*;
    let get = req("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    let head = req("HEAD / HTTP/1.1\r\nHost: a\r\n\r\n");
    let old = req("GET / HTTP/1.0\r\n\r\n");
    // (what, request, response, framing, upstream reusable, client keep-alive, dechunk)
    let table: &[(&str, &ReqInfo, &str, Framing, bool, bool, bool)] = &[
        (
            "length",
            &get,
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
            Length(5),
            true,
            true,
            false,
        ),
        (
            "empty",
            &get,
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            None,
            true,
            true,
            false,
        ),
        (
            "chunked",
            &get,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            Chunked,
            true,
            true,
            false,
        ),
        (
            "CL + TE: chunked wins",
            &get,
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            Chunked,
            true,
            true,
            false,
        ),
        (
            "TE other: until close",
            &get,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            UntilClose,
            false,
            false,
            false,
        ),
        (
            "no length: until close",
            &get,
            "HTTP/1.1 200 OK\r\n\r\n",
            UntilClose,
            false,
            false,
            false,
        ),
        (
            "204",
            &get,
            "HTTP/1.1 204 No Content\r\n\r\n",
            None,
            true,
            true,
            false,
        ),
        (
            "304 with a length",
            &get,
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
            None,
            true,
            true,
            false,
        ),
        (
            "HEAD",
            &head,
            "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",
            None,
            true,
            true,
            false,
        ),
        (
            "upstream closes",
            &get,
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
            Length(1),
            false,
            true,
            false,
        ),
        (
            "HTTP/1.0 upstream",
            &get,
            "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n",
            Length(1),
            false,
            true,
            false,
        ),
        (
            "HTTP/1.0 upstream keep-alive",
            &get,
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n",
            Length(1),
            true,
            true,
            false,
        ),
        (
            "chunked to HTTP/1.0 client",
            &old,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            Chunked,
            true,
            false,
            true,
        ),
    ];
    for (what, r, raw, framing, reusable, keep, dechunk) in table {
        match response(r, raw, false) {
            Ok(Some(Parsed::Final(info, len))) => {
                assert_eq!(len, raw.len(), "{what}");
                assert_eq!(
                    (
                        info.body,
                        info.reusable,
                        info.client_keep_alive,
                        info.dechunk
                    ),
                    (*framing, *reusable, *keep, *dechunk),
                    "{what}"
                );
            }
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[test]
fn broken_and_interim_responses() {
    let get = req("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    for raw in [
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        "HTTP/1.1 OK\r\n\r\n",
        "garbage\r\n\r\n",
    ] {
        assert_eq!(response(&get, raw, false), Err(()), "{raw:?}");
    }
    assert_eq!(response(&get, "HTTP/1.1 200 OK\r\n", false), Ok(None));
    let raw = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n";
    assert_eq!(response(&get, raw, false), Ok(Some(Parsed::Interim(25))));
}

#[test]
fn the_client_head_drops_hop_by_hop_and_says_close_when_needed() {
    let get = req("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    let raw = "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\n\
               Keep-Alive: timeout=5\r\nContent-Length: 2\r\nX-Keep: k\r\n\r\n";
    let mut out = Vec::new();
    parse_response(raw.as_bytes(), &mut out, &get, || false).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Keep: k\r\n\r\n"
    );
    let mut out = Vec::new();
    parse_response(raw.as_bytes(), &mut out, &get, || true).unwrap();
    assert!(String::from_utf8(out)
        .unwrap()
        .ends_with("connection: close\r\n\r\n"));
}

#[test]
fn switching_protocols_is_a_tunnel_only_when_asked() {
    let ws = req("GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n");
    let raw =
        "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
    let mut out = Vec::new();
    match parse_response(raw.as_bytes(), &mut out, &ws, || false) {
        Ok(Some(Parsed::Final(info, _))) => {
            assert_eq!(info.body, Framing::UntilClose);
            assert!(!info.reusable && !info.client_keep_alive);
        }
        other => panic!("{other:?}"),
    }
    assert!(String::from_utf8(out)
        .unwrap()
        .contains("connection: upgrade\r\nupgrade: websocket\r\n"));
    let get = req("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    match response(&get, raw, false) {
        Ok(Some(Parsed::Final(info, _))) => assert_eq!(info.body, Framing::None),
        other => panic!("{other:?}"),
    }
}

#[test]
fn status_codes_outside_100_to_599_are_broken_responses() {
    let req = request("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap()
        .unwrap();
    for raw in [
        "HTTP/1.1 001 X\r\n\r\n",
        "HTTP/1.1 099 X\r\n\r\n",
        "HTTP/1.1 600 X\r\n\r\n",
    ] {
        let mut out = Vec::new();
        assert_eq!(
            parse_response(raw.as_bytes(), &mut out, &req, || false),
            Err(()),
            "{raw}"
        );
    }
}
