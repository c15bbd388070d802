//! Who may do what on the TCP listener: the token a request presents (`Authorization: Bearer`, or
//! the `cohort_token` cookie the login form sets) is hashed and compared in constant time with the
//! stored digests; the route decides which access it needs. Pure functions, table-tested.

use crate::api::web::{token_digest, WebSettings};
use subtle::ConstantTimeEq;

/// The cookie the login form sets (HttpOnly, SameSite=Strict).
pub const COOKIE: &str = "cohort_token";

/// What a presented token grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    None,
    ReadOnly,
    Full,
}

/// What the route asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// The login page and its assets.
    Public,
    /// `/metrics`: public when `public_metrics` is set, else read access.
    Metrics,
    Read,
    Full,
}

/// The outcome for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// A browser with no valid token: send it to the login page.
    Login,
    /// No valid token (API clients): 401.
    Unauthorized,
    /// A valid token that does not reach this route (read-only token, action), or a cross-site
    /// request: 403.
    Forbidden,
}

/// The access `presented` grants; every stored digest is compared, in constant time.
pub fn access_of(presented: Option<&str>, s: &WebSettings) -> Access {
    let Some(token) = presented.filter(|t| !t.is_empty()) else {
        return Access::None;
    };
    let digest = token_digest(token);
    let matches = |stored: &Option<String>| -> bool {
        stored
            .as_deref()
            .is_some_and(|d| bool::from(d.as_bytes().ct_eq(digest.as_bytes())))
    };
    // Both comparisons run whatever the first gives.
    let full = matches(&s.token_sha256);
    let read = matches(&s.read_only_token_sha256);
    if full {
        Access::Full
    } else if read {
        Access::ReadOnly
    } else {
        Access::None
    }
}

/// Which access a route needs: reading routes (GETs, and the POSTs that only read) need read
/// access; anything that changes state needs the full token.
pub fn need_of(method: &str, path: &str) -> Need {
    match (method, path) {
        (_, "/login") | ("GET", "/favicon.ico") => Need::Public,
        ("GET", p) if p.starts_with("/assets/") => Need::Public,
        ("GET", "/metrics") => Need::Metrics,
        ("GET" | "HEAD", _) => Need::Read,
        ("POST", "/logout" | "/describe" | "/history" | "/logs/files" | "/logs/stream") => {
            Need::Read
        }
        _ => Need::Full,
    }
}

/// The decision for a request: what it needs, what it has, whether it comes from a browser page
/// (`wants_html`) and whether it is cross-site (an `Origin` that is not this host).
pub fn decide(
    need: Need,
    access: Access,
    public_metrics: bool,
    wants_html: bool,
    cross_site: bool,
) -> Decision {
    if cross_site && need != Need::Public {
        return Decision::Forbidden;
    }
    let required = match need {
        Need::Public => return Decision::Allow,
        Need::Metrics if public_metrics => return Decision::Allow,
        Need::Metrics | Need::Read => Access::ReadOnly,
        Need::Full => Access::Full,
    };
    if access >= required {
        Decision::Allow
    } else if access == Access::None {
        if wants_html {
            Decision::Login
        } else {
            Decision::Unauthorized
        }
    } else {
        Decision::Forbidden
    }
}

/// The token of a request: the Bearer header first, else the login cookie.
pub fn presented_token<'a>(
    authorization: Option<&'a str>,
    cookie_header: Option<&'a str>,
) -> Option<String> {
    if let Some(t) = authorization.and_then(|a| a.strip_prefix("Bearer ")) {
        return Some(t.trim().to_string());
    }
    cookie_header?
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| percent_decode(v))
}

/// True when `origin` (an `Origin` header) names another host than `host` (the `Host` header).
pub fn is_cross_site(origin: Option<&str>, host: Option<&str>) -> bool {
    let Some(origin) = origin else { return false };
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(origin);
    Some(origin_host) != host
}

/// The `Set-Cookie` value that logs a browser in (or out, with an empty token).
pub fn cookie_header(token: &str) -> String {
    if token.is_empty() {
        format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
    } else {
        format!(
            "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
            percent_encode(token)
        )
    }
}

/// The `token` field of a login form (`application/x-www-form-urlencoded`).
pub fn form_token(body: &str) -> Option<String> {
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "token")
        .map(|(_, v)| percent_decode(&v.replace('+', " ")))
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> WebSettings {
        WebSettings {
            listen: Some("127.0.0.1:0".into()),
            token_sha256: Some(token_digest("full-secret")),
            read_only_token_sha256: Some(token_digest("read-secret")),
            public_metrics: false,
        }
    }

    #[test]
    fn tokens_grant_access() {
        let s = settings();
        let cases = [
            (None, Access::None),
            (Some(""), Access::None),
            (Some("full-secret"), Access::Full),
            (Some("read-secret"), Access::ReadOnly),
            (Some("full-secreT"), Access::None),
            (Some("full-secret "), Access::None),
            (Some(s.token_sha256.as_deref().unwrap_or("")), Access::None),
        ];
        for (presented, want) in cases {
            assert_eq!(access_of(presented, &s), want, "{presented:?}");
        }
        let no_tokens = WebSettings::default();
        assert_eq!(access_of(Some("x"), &no_tokens), Access::None);
    }

    #[test]
    fn routes_need() {
        let cases = [
            ("GET", "/login", Need::Public),
            ("POST", "/login", Need::Public),
            ("GET", "/assets/app.js", Need::Public),
            ("GET", "/metrics", Need::Metrics),
            ("GET", "/", Need::Read),
            ("GET", "/events", Need::Read),
            ("GET", "/processes", Need::Read),
            ("POST", "/history", Need::Read),
            ("POST", "/logs/stream", Need::Read),
            ("POST", "/action", Need::Full),
            ("POST", "/scale", Need::Full),
            ("POST", "/start", Need::Full),
            ("POST", "/env", Need::Full),
            ("POST", "/kill", Need::Full),
            ("DELETE", "/", Need::Full),
            ("POST", "/assets/app.js", Need::Full),
        ];
        for (m, p, want) in cases {
            assert_eq!(need_of(m, p), want, "{m} {p}");
        }
    }

    #[test]
    fn decisions() {
        use Access::*;
        use Decision::*;
        // (need, access, public_metrics, wants_html, cross_site, decision)
        let cases = [
            (Need::Public, None, false, true, false, Allow),
            (Need::Public, None, false, false, true, Allow),
            (Need::Metrics, None, true, false, false, Allow),
            (Need::Metrics, None, false, false, false, Unauthorized),
            (Need::Metrics, ReadOnly, false, false, false, Allow),
            (Need::Read, None, false, true, false, Login),
            (Need::Read, None, true, true, false, Login),
            (Need::Read, None, false, false, false, Unauthorized),
            (Need::Read, ReadOnly, false, true, false, Allow),
            (Need::Read, Full, false, true, false, Allow),
            (Need::Full, ReadOnly, false, false, false, Forbidden),
            (Need::Full, Full, false, false, false, Allow),
            (Need::Full, Full, false, false, true, Forbidden),
            (Need::Read, Full, false, true, true, Forbidden),
        ];
        for (need, access, public, html, cross, want) in cases {
            assert_eq!(
                decide(need, access, public, html, cross),
                want,
                "{need:?} {access:?} public={public} html={html} cross={cross}"
            );
        }
    }

    #[test]
    fn tokens_from_headers_and_forms() {
        let cases = [
            (Some("Bearer abc"), None, Some("abc")),
            (Some("Bearer abc"), Some("cohort_token=zzz"), Some("abc")),
            (None, Some("a=1; cohort_token=s%20t%25; b=2"), Some("s t%")),
            (None, Some("cohort_tokenx=1"), None),
            (Some("Basic abc"), None, None),
            (None, None, None),
        ];
        for (auth, cookie, want) in cases {
            assert_eq!(
                presented_token(auth, cookie).as_deref(),
                want,
                "{auth:?} {cookie:?}"
            );
        }
        for (body, want) in [
            ("token=abc", Some("abc")),
            ("x=1&token=a%2Bb+c", Some("a+b c")),
            ("x=1", None),
            ("token=%zz%4", Some("%zz%4")),
        ] {
            assert_eq!(form_token(body).as_deref(), want, "{body:?}");
        }
    }

    #[test]
    fn cookies_round_trip() {
        for token in ["plain", "with space;and=semicolon", "ünï", "%41"] {
            let set = cookie_header(token);
            assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"));
            let value = set.split(';').next().unwrap_or("");
            assert_eq!(
                presented_token(None, Some(value)).as_deref(),
                Some(token),
                "{set}"
            );
        }
        assert!(cookie_header("").contains("Max-Age=0"));
    }

    #[test]
    fn cross_site_origins() {
        let cases = [
            (None, Some("127.0.0.1:9615"), false),
            (Some("http://127.0.0.1:9615"), Some("127.0.0.1:9615"), false),
            (Some("http://evil.example"), Some("127.0.0.1:9615"), true),
            (Some("http://127.0.0.1:9616"), Some("127.0.0.1:9615"), true),
            (Some("null"), Some("127.0.0.1:9615"), true),
        ];
        for (origin, host, want) in cases {
            assert_eq!(is_cross_site(origin, host), want, "{origin:?} {host:?}");
        }
    }
}
