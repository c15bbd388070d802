//! The daemon's client of a balancer's admin endpoint: a plain HTTP/1.0 `GET /status` on the
//! loopback address the daemon chose for it, bounded in time and size. Used by /metrics, the
//! dashboard and the autoscaler (in-flight requests). Written by hand (a dozen lines over a
//! `TcpStream`) rather than with hyper's client: one request per connection to a peer we launched,
//! no pooling or TLS to gain.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one balancer may take to answer before it counts as down.
const DEADLINE: Duration = Duration::from_millis(500);
/// A status document larger than this is refused (a balancer has a few dozen upstreams).
const MAX_BODY: usize = 1 << 20;

/// The whole status document of one balancer, as JSON (the dashboard, the autoscaler).
pub async fn fetch_json(addr: &str) -> Result<serde_json::Value, String> {
    let body = fetch(addr).await?;
    serde_json::from_slice(&body).map_err(|e| format!("{addr}: the status is not JSON: {e}"))
}

/// The body of `GET /status` from the balancer admin at `addr`.
pub async fn fetch(addr: &str) -> Result<Vec<u8>, String> {
    let get = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        s.write_all(b"GET /status HTTP/1.0\r\nHost: cohort\r\n\r\n")
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        let mut buf = Vec::with_capacity(4096);
        (&mut s)
            .take(MAX_BODY as u64 + 4096)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        Ok::<_, String>(buf)
    };
    let raw = tokio::time::timeout(DEADLINE, get)
        .await
        .map_err(|_| format!("{addr}: no answer within {} ms", DEADLINE.as_millis()))??;
    body_of(&raw).map(<[u8]>::to_vec)
}

/// The body of a 200 response, or why there is none.
fn body_of(raw: &[u8]) -> Result<&[u8], String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the answer has no end of headers")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "the headers are not text")?;
    let status = head.split(' ').nth(1).unwrap_or("");
    if status != "200" {
        return Err(format!("status {status:?} instead of 200"));
    }
    Ok(&raw[end + 4..])
}

#[cfg(test)]
mod tests {
    use super::body_of;

    #[test]
    fn bodies_of_answers() {
        type Case<'a> = (&'a [u8], Result<&'a [u8], ()>);
        let cases: [Case; 5] = [
            (b"HTTP/1.0 200 OK\r\ncontent-type: x\r\n\r\n{}", Ok(b"{}")),
            (b"HTTP/1.1 200 OK\r\n\r\n", Ok(b"")),
            (b"HTTP/1.1 404 Not Found\r\n\r\n{}", Err(())),
            (b"HTTP/1.1 200 OK\r\n", Err(())),
            (b"", Err(())),
        ];
        for (raw, want) in cases {
            assert_eq!(
                body_of(raw).map_err(|_| ()),
                want,
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }
}
