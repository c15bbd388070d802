//! Moving bytes of the HTTP/1.x path: writes with a stall limit, and copying one framed body
//! (length, chunked, until close) from one side to the other, the head going out with its first
//! bytes.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::chunked::Chunked;
use super::codec::Framing;

/// Read size for bodies.
pub const READ_CHUNK: usize = 16 * 1024;

/// Request bodies up to this size are read whole before an upstream is picked (NGINX's
/// `proxy_request_buffering` for small bodies): a client that never finishes one never holds an
/// upstream connection. Larger bodies stream.
pub const BUFFERED_BODY: usize = READ_CHUNK;

/// How reading a small body ahead ended, when not with the body read.
#[derive(Debug, PartialEq, Eq)]
pub enum AheadError {
    Gone,
    Stalled,
    Framing,
}

/// Reads a request body framed by `framing` into `buf` (which may hold its start) while it is at
/// most [`BUFFERED_BODY`] bytes; returns with the body whole in `buf`, or once it is known to be
/// larger (the rest then streams). Bodiless requests return at once.
pub async fn read_ahead<R: AsyncRead + Unpin>(
    src: &mut R,
    buf: &mut BytesMut,
    framing: Framing,
    idle: Duration,
) -> Result<(), AheadError> {
    let mut dec = Chunked::default();
    let mut scanned = 0;
    loop {
        match framing {
            Framing::Length(n) if n <= BUFFERED_BODY as u64 => {
                if buf.len() as u64 >= n {
                    return Ok(());
                }
                buf.reserve(n as usize - buf.len());
            }
            Framing::Chunked => {
                scanned += dec
                    .feed(&buf[scanned..], None)
                    .map_err(|_| AheadError::Framing)?;
                if dec.done() || buf.len() >= BUFFERED_BODY {
                    return Ok(());
                }
                buf.reserve(BUFFERED_BODY - buf.len());
            }
            _ => return Ok(()),
        }
        match within(idle, src.read_buf(buf)).await {
            None => return Err(AheadError::Stalled),
            Some(Ok(0)) | Some(Err(_)) => return Err(AheadError::Gone),
            Some(Ok(_)) => {}
        }
    }
}

/// Which side of a copy failed.
#[derive(Debug)]
pub enum CopyError {
    Read,
    Write,
    /// No byte to read for `timeouts.idle`.
    Stalled,
    /// The chunked framing of the body is broken (a 400 from a client, a 502 from an upstream
    /// while the response head is still unsent).
    Framing,
}

/// Writes `head` (if not yet sent) together with `data` in one write.
async fn send<W: AsyncWrite + Unpin>(
    w: &mut W,
    head: &mut Vec<u8>,
    data: &[u8],
    idle: Duration,
) -> Result<(), CopyError> {
    if head.is_empty() {
        write_within(w, data, idle).await
    } else {
        head.extend_from_slice(data);
        let r = write_within(w, head, idle).await;
        head.clear();
        r
    }
}

/// Writes all of `data` and flushes (TLS streams hold bytes until then; a no-op on TCP); a peer
/// that takes nothing for `idle` is a write error, as NGINX's `send_timeout`.
pub async fn write_within<W: AsyncWrite + Unpin>(
    w: &mut W,
    data: &[u8],
    idle: Duration,
) -> Result<(), CopyError> {
    let done = within(idle, async {
        w.write_all(data).await?;
        w.flush().await
    });
    match done.await {
        Some(Ok(())) => Ok(()),
        _ => Err(CopyError::Write),
    }
}

/// Runs `fut` with a time limit, armed only if it does not complete at once (a timer costs a clock
/// read and a timer-wheel entry, which most reads and writes of small messages never need).
pub async fn within<F: std::future::Future>(limit: Duration, fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let first = std::future::poll_fn(|cx| match fut.as_mut().poll(cx) {
        std::task::Poll::Ready(v) => std::task::Poll::Ready(Some(v)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await;
    match first {
        Some(v) => Some(v),
        None => tokio::time::timeout(limit, fut).await.ok(),
    }
}

/// Copies one body framed by `framing` from `src` (bytes already in `buf` first) to `dst`, the
/// head (if any) going out with the first bytes or alone, so that a slow body never holds it back.
/// With `dechunk`, a chunked body is decoded (for an HTTP/1.0 client). Returns the bytes written.
/// A read that waits longer than `idle` is `Stalled` (a client that stops sending its body, an
/// upstream silent mid-body: NGINX's `client_body_timeout` and `proxy_read_timeout`).
pub async fn copy_body<R, W>(
    src: &mut R,
    buf: &mut BytesMut,
    dst: &mut W,
    head: &mut Vec<u8>,
    framing: Framing,
    dechunk: bool,
    idle: Duration,
) -> Result<u64, CopyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut left = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    let mut dec = Chunked::default();
    let mut decoded = Vec::new();
    let mut total = 0u64;
    loop {
        // How much of `buf` belongs to the body, and whether that ends it.
        let (n, done) = match framing {
            Framing::None => (0, true),
            Framing::Length(_) => {
                let n = (buf.len() as u64).min(left);
                left -= n;
                (n as usize, left == 0)
            }
            Framing::Chunked => {
                decoded.clear();
                let out = dechunk.then_some(&mut decoded);
                let n = dec.feed(buf, out).map_err(|_| CopyError::Framing)?;
                (n, dec.done())
            }
            Framing::UntilClose => (buf.len(), false),
        };
        let data = if dechunk { &decoded[..] } else { &buf[..n] };
        total += data.len() as u64;
        send(dst, head, data, idle).await?;
        buf.advance(n);
        if done {
            return Ok(total);
        }
        buf.reserve(READ_CHUNK);
        match within(idle, src.read_buf(buf)).await {
            None => return Err(CopyError::Stalled),
            Some(Ok(0)) if framing == Framing::UntilClose => return Ok(total),
            Some(Ok(0)) | Some(Err(_)) => return Err(CopyError::Read),
            Some(Ok(_)) => {}
        }
    }
}
