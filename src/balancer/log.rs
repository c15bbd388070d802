//! The access log: one line per HTTP request or TCP connection on stdout, buffered in memory and
//! written by a background thread every 100 ms (or at once when the buffer grows past 64 KiB), so the
//! request path never waits on a write(2).
//!
//! Line shape (space-separated, `-` for a missing field):
//! `TIME CLIENT_IP "METHOD PATH VERSION" STATUS BYTES UPSTREAM DURATION_MS`, e.g.
//! `2025-01-31T12:00:00Z 127.0.0.1 "GET /users?id=1 HTTP/1.1" 200 1234 127.0.0.1:3000 0.812`.
//! TCP connections log `"TCP"` in place of the request and bytes sent to the client.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Mutex;
use std::time::Duration;

struct Buf {
    text: String,
    /// Second of the cached timestamp and its text.
    sec: i64,
    stamp: String,
}

static BUF: Mutex<Buf> = Mutex::new(Buf {
    text: String::new(),
    sec: -1,
    stamp: String::new(),
});

const FLUSH_AT: usize = 64 * 1024;

/// Starts the flusher thread.
pub fn start() {
    let _ = std::thread::Builder::new()
        .name("access-log".into())
        .spawn(|| loop {
            std::thread::sleep(Duration::from_millis(100));
            flush();
        });
}

/// Writes out whatever is buffered.
pub fn flush() {
    let text = match BUF.lock() {
        Ok(mut b) => std::mem::take(&mut b.text),
        Err(_) => return,
    };
    if !text.is_empty() {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }
}

/// One log record.
pub struct Entry<'a> {
    pub client: std::net::IpAddr,
    /// `METHOD PATH VERSION`, or `TCP`.
    pub request: std::fmt::Arguments<'a>,
    pub status: u16,
    pub bytes: u64,
    pub upstream: Option<&'a str>,
    pub duration: Duration,
}

/// Appends one line.
pub fn write(e: Entry<'_>) {
    let Ok(mut b) = BUF.lock() else { return };
    let now = chrono::Utc::now();
    let sec = now.timestamp();
    if sec != b.sec {
        b.sec = sec;
        b.stamp = now.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    }
    let Buf { text, stamp, .. } = &mut *b;
    let _ = writeln!(
        text,
        "{stamp} {} \"{}\" {} {} {} {:.3}",
        e.client,
        e.request,
        e.status,
        e.bytes,
        e.upstream.unwrap_or("-"),
        e.duration.as_secs_f64() * 1000.0
    );
    if text.len() >= FLUSH_AT {
        let t = std::mem::take(text);
        drop(b);
        let _ = std::io::stdout().lock().write_all(t.as_bytes());
    }
}
