//! Fuzz targets: plain functions that take arbitrary bytes, run one parser of the balancer (or the
//! config loader) and check its invariants, panicking on a violation. The cargo-fuzz harness
//! (`fuzz/fuzz_targets/*.rs`, nightly) and the stable driver (`tests/fuzz.rs`, `scripts/fuzz`) both
//! call them. Invariants, beyond "no panic":
//!
//! - request head: an accepted head lies within the input, a prefix of the input ending at the head
//!   parses the same, and the head written upstream parses again with the same framing (what the
//!   balancer and the upstream think the body is must agree: no smuggling);
//! - response head: the same for the head written to the client;
//! - chunked decoder: feeding a body whole, byte by byte or in any split gives the same verdict,
//!   the same end and the same payload;
//! - config: a spec that validates resolves, and an ecosystem file loads or is refused, never more.

use super::h1::chunked::Chunked;
use super::h1::codec::{self, HashSource, Parsed, ReqInfo, RequestRules};

/// A fuzz target: panics when an invariant breaks.
pub type Target = fn(&[u8]);

/// The fuzz targets by name, for drivers.
pub const TARGETS: &[(&str, Target)] = &[
    ("request_head", request_head),
    ("response_head", response_head),
    ("chunked", chunked),
    ("config", config),
];

fn rules() -> RequestRules<'static> {
    RequestRules {
        max_header_bytes: 16 * 1024,
        hash: HashSource::Header("x-key"),
        peer_key: 1,
        access_log: true,
        https: false,
        peer_ip: "192.0.2.1",
        sticky_cookie: Some("srv"),
    }
}

/// The HTTP/1 request head parser and the head it writes upstream.
pub fn request_head(data: &[u8]) {
    let mut out = Vec::new();
    let Ok(Some(info)) = codec::parse_request(data, &mut out, &rules()) else {
        return;
    };
    assert!(info.head_len <= data.len(), "head longer than the input");
    // The head alone parses the same.
    let mut again = Vec::new();
    let prefix = codec::parse_request(&data[..info.head_len], &mut again, &rules());
    assert_eq!(
        prefix,
        Ok(Some(ReqInfo {
            ..info_clone(&info)
        })),
        "prefix disagrees"
    );
    assert_eq!(again, out, "prefix wrote another upstream head");
    // The head sent upstream is a valid request with the same framing.
    if info.needs_host {
        out.extend_from_slice(b"host: upstream\r\n");
    }
    out.extend_from_slice(b"\r\n");
    let mut up = Vec::new();
    match codec::parse_request(&out, &mut up, &rules()) {
        Ok(Some(u)) => {
            assert_eq!(u.head_len, out.len(), "upstream head length");
            // (No body is sent as `content-length: 0` or not at all: both parse as none.)
            assert_eq!(u.body, info.body, "framing changed on the way upstream");
            assert_eq!(
                u.upgrade, info.upgrade,
                "upgrade changed on the way upstream"
            );
        }
        // The forwarding headers the balancer adds can take a head over the parser's own limits
        // (128 headers, the size): that is the upstream's limit to apply, not a framing change.
        Err(codec::Refuse(431, _)) => {}
        other => panic!(
            "the upstream head does not parse ({other:?}): {:?}",
            String::from_utf8_lossy(&out)
        ),
    }
}

fn info_clone(i: &ReqInfo) -> ReqInfo {
    ReqInfo {
        head_len: i.head_len,
        body: i.body,
        keep_alive: i.keep_alive,
        http10: i.http10,
        is_head: i.is_head,
        idempotent: i.idempotent,
        upgrade: i.upgrade,
        expect_continue: i.expect_continue,
        needs_host: i.needs_host,
        key: i.key,
        sticky: i.sticky,
        log_line: i.log_line.clone(),
    }
}

/// A plain keep-alive HTTP/1.1 GET, the request a response answers.
fn get_request() -> ReqInfo {
    let mut out = Vec::new();
    match codec::parse_request(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", &mut out, &rules()) {
        Ok(Some(i)) => i,
        other => panic!("the reference request does not parse: {other:?}"),
    }
}

/// The HTTP/1 response head parser and the head it writes to the client.
pub fn response_head(data: &[u8]) {
    let req = get_request();
    let mut out = Vec::new();
    let (resp, len) = match codec::parse_response(data, &mut out, &req, || false) {
        Ok(Some(Parsed::Final(resp, len))) => (resp, len),
        Ok(Some(Parsed::Interim(len))) => {
            assert!(len <= data.len() && len > 0, "interim head length");
            return;
        }
        _ => return,
    };
    assert!(len <= data.len(), "head longer than the input");
    let mut again = Vec::new();
    match codec::parse_response(&out, &mut again, &req, || false) {
        Ok(Some(Parsed::Final(r, n))) => {
            assert_eq!(n, out.len(), "client head length");
            assert_eq!(r.status, resp.status, "status changed");
            assert_eq!(
                r.body, resp.body,
                "framing changed on the way to the client"
            );
        }
        other => panic!(
            "the client head does not parse ({other:?}): {:?}",
            String::from_utf8_lossy(&out)
        ),
    }
}

/// Feeds `input` to a decoder in pieces cut at `cuts`; the verdict, the end and the payload.
fn feed_split(
    input: &[u8],
    cuts: impl Iterator<Item = usize>,
) -> (Result<usize, ()>, bool, Vec<u8>) {
    let mut d = Chunked::default();
    let mut payload = Vec::new();
    let mut at = 0;
    for cut in cuts.chain(std::iter::once(input.len())) {
        let cut = cut.clamp(at, input.len());
        match d.feed(&input[at..cut], Some(&mut payload)) {
            Err(()) => return (Err(()), false, payload),
            Ok(n) => {
                at += n;
                if d.done() {
                    return (Ok(at), true, payload);
                }
                assert_eq!(at, cut, "a decoder not done stopped early");
            }
        }
    }
    (Ok(at), d.done(), payload)
}

/// The chunked decoder: the same verdict however the body is split.
pub fn chunked(data: &[u8]) {
    // The first byte picks a split step, the rest is the body.
    let Some((&step, body)) = data.split_first() else {
        return;
    };
    let whole = feed_split(body, std::iter::empty());
    let bytes = feed_split(body, 1..body.len());
    let step = usize::from(step % 17) + 1;
    let stepped = feed_split(body, (step..body.len()).step_by(step));
    // An error may be found at a different point, but it is an error in every split.
    assert_eq!(whole.0.is_err(), bytes.0.is_err(), "byte by byte disagrees");
    assert_eq!(
        whole.0.is_err(),
        stepped.0.is_err(),
        "split by {step} disagrees"
    );
    if whole.0.is_ok() {
        assert_eq!(whole, bytes, "byte by byte disagrees");
        assert_eq!(whole, stepped, "split by {step} disagrees");
    }
    if let (Ok(end), true) = (whole.0, whole.1) {
        // The body ends where it ends: its bytes alone decode to the same.
        assert_eq!(feed_split(&body[..end], std::iter::empty()), whole);
    }
}

/// The config loader: a balancer spec (JSON) validates or not, never panics, and an ecosystem file
/// (TOML or JSON, the first byte chooses) loads or is refused.
pub fn config(data: &[u8]) {
    let Some((&kind, text)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    if let Ok(spec) = serde_json::from_str::<crate::config::balancer::BalancerSpec>(text) {
        if spec.validate().is_ok() {
            assert!(spec.resolve().is_ok(), "valid but does not resolve");
        }
    }
    let value: Option<serde_json::Value> = if kind % 2 == 0 {
        toml::from_str::<toml::Value>(text)
            .ok()
            .and_then(|v| serde_json::to_value(v).ok())
    } else {
        serde_json::from_str(text).ok()
    };
    if let Some(v) = value {
        let env = std::collections::BTreeMap::new();
        let opts = crate::config::ecosystem::LoadOptions {
            env_name: None,
            base_env: &env,
            only: None,
        };
        let dir = std::path::Path::new("/nonexistent-cohort-fuzz");
        let _ = crate::config::ecosystem::from_value(&v, "fuzz.toml", dir, &opts);
    }
}
