//! Sticky sessions by an inserted cookie (`sticky_cookie = "NAME"`, HAProxy's `cookie NAME insert`,
//! NGINX's `sticky cookie`): the token that names an upstream, reading it back from a request's
//! Cookie header, and the `Set-Cookie` that pins a client to the upstream that served it.
//!
//! The token is a hash of the upstream's address as written, so it stays the same across balancer
//! reloads and restarts and among every balancer in front of the same upstreams, and it does not
//! show the address. A token that names no upstream, or one that is down, is ignored: the request
//! goes where the strategy sends it and the answer pins the client again.

/// The token of the upstream written as `label` (host:port).
pub fn token(label: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(label.as_bytes())
}

/// The token in a cookie's value (16 lower-case hex digits, as [`set_cookie`] writes), if valid.
pub fn parse(value: &[u8]) -> Option<u64> {
    if value.len() != 16 || !value.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(value).ok()?, 16).ok()
}

/// The value of a `Set-Cookie` header pinning the client to the upstream of `token`: a session
/// cookie (gone when the browser closes, as HAProxy's default) for the whole site, not readable by
/// scripts, sent on top-level navigations from other sites (`SameSite=Lax`), and only over TLS
/// when clients connect over TLS.
pub fn set_cookie(name: &str, token: u64, https: bool) -> String {
    let secure = if https { "; Secure" } else { "" };
    format!("{name}={token:016x}; Path=/; HttpOnly; SameSite=Lax{secure}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_written_in_a_cookie_reads_back() {
        for label in ["127.0.0.1:3000", "[::1]:8080", "backend.internal:80"] {
            let t = token(label);
            let header = set_cookie("srv", t, false);
            let value = header
                .strip_prefix("srv=")
                .and_then(|v| v.split(';').next())
                .unwrap_or_default();
            assert_eq!(parse(value.as_bytes()), Some(t), "{header}");
        }
        assert_ne!(token("127.0.0.1:3000"), token("127.0.0.1:3001"));
    }

    #[test]
    fn cookie_attributes() {
        assert_eq!(
            set_cookie("srv", 0xab, false),
            "srv=00000000000000ab; Path=/; HttpOnly; SameSite=Lax"
        );
        assert!(set_cookie("srv", 1, true).ends_with("; Secure"));
    }

    #[test]
    fn malformed_tokens_are_ignored() {
        for bad in [
            &b""[..],
            b"abc",
            b"00000000000000AB",
            b"00000000000000ag",
            b"000000000000000ab",
            b"0000000000000 ab",
        ] {
            assert_eq!(parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
