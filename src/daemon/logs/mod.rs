//! Process output: reads each process's stdout/stderr pipes, writes whole lines to its log files
//! (with an optional timestamp prefix) and publishes them to live followers (`cohort logs`, monit).
//! `file.rs` owns the files (safe opening, one object per path, failures, reopening), `rotate.rs`
//! their rotation (policy, names, background gzip and retention).
//!
//! Nothing is lost or cut: a file of one stream alone, without timestamps or JSON (the default),
//! gets the bytes as they are read, half lines included, so nothing read waits in the daemon's
//! memory (a daemon killed with -9 loses no half-read line); files shared (`merge_logs`,
//! `log_file`, out and err in one file), timestamped or JSON get whole lines only (so they never
//! interleave mid-line), the unfinished line waiting in a `Carry`. A final line without a newline
//! is completed at EOF, and the pipe is read to its end even after the process died — also while
//! its file cannot be written (the lines are then dropped and counted, never left in the pipe to
//! block the app).

mod file;
mod rotate;

pub use file::{LogCounts, LogFile, Registry};

use crate::api::LogLine;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Lines written to log files, lines a failing write lost, lines slow followers skipped (for
/// /metrics); one relaxed add per chunk of lines, not per line.
static LINES_WRITTEN: AtomicU64 = AtomicU64::new(0);
static LINES_WRITE_ERRORS: AtomicU64 = AtomicU64::new(0);
static LINES_FOLLOWER_LAG: AtomicU64 = AtomicU64::new(0);

/// The log pipeline's counters since the daemon started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogCounters {
    pub written: u64,
    pub write_errors: u64,
    pub follower_lag: u64,
}

/// The counters now.
pub fn counters() -> LogCounters {
    LogCounters {
        written: LINES_WRITTEN.load(Relaxed),
        write_errors: LINES_WRITE_ERRORS.load(Relaxed),
        follower_lag: LINES_FOLLOWER_LAG.load(Relaxed),
    }
}

/// Adds counts carried over from an earlier daemon (an update in place, or the holder's state
/// after a death), so /metrics counters do not restart at 0.
pub fn add_counters(c: LogCounters) {
    LINES_WRITTEN.fetch_add(c.written, Relaxed);
    LINES_WRITE_ERRORS.fetch_add(c.write_errors, Relaxed);
    LINES_FOLLOWER_LAG.fetch_add(c.follower_lag, Relaxed);
}

/// A live follower fell behind and skipped `n` lines (they are still in the files).
pub fn count_follower_lag(n: u64) {
    LINES_FOLLOWER_LAG.fetch_add(n, Relaxed);
}

/// A single line longer than this is written out in pieces rather than held in memory.
const MAX_PENDING: usize = 1 << 20;

thread_local! {
    /// One read buffer for every pipe: the daemon runs on one thread, and a buffer per pipe would
    /// cost 64 KiB per process.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0u8; 64 * 1024]);
}

/// Live log lines for followers.
pub type LogHub = broadcast::Sender<Arc<LogLine>>;

pub fn new_hub() -> LogHub {
    broadcast::channel(4096).0
}

/// How to stamp lines: a chrono format translated from PM2's moment-style `log_date_format`.
#[derive(Clone)]
pub struct Stamp(String);

impl Stamp {
    pub fn new(moment: Option<&str>) -> Stamp {
        Stamp(translate_moment(moment.unwrap_or("YYYY-MM-DDTHH:mm:ss")))
    }
    fn now(&self) -> String {
        chrono::Local::now().format(&self.0).to_string()
    }
}

/// Translates moment.js tokens (as PM2 users write `log_date_format`) into chrono's strftime.
fn translate_moment(fmt: &str) -> String {
    const TOKENS: &[(&str, &str)] = &[
        ("YYYY", "%Y"),
        ("YY", "%y"),
        ("MMMM", "%B"),
        ("MMM", "%b"),
        ("MM", "%m"),
        ("DD", "%d"),
        ("HH", "%H"),
        ("hh", "%I"),
        ("mm", "%M"),
        ("ss", "%S"),
        ("SSS", "%3f"),
        ("ZZ", "%z"),
        ("Z", "%:z"),
        ("A", "%p"),
        ("dddd", "%A"),
        ("ddd", "%a"),
    ];
    let mut out = String::new();
    let mut rest = fmt;
    'outer: while !rest.is_empty() {
        for (tok, rep) in TOKENS {
            if let Some(r) = rest.strip_prefix(tok) {
                out.push_str(rep);
                rest = r;
                continue 'outer;
            }
        }
        let c = rest.chars().next().unwrap_or(' ');
        if c == '%' {
            out.push_str("%%");
        } else {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Log lines of one process so far (for `/metrics`: log lines written / dropped).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct LogCount {
    pub id: u32,
    pub name: String,
    pub instance: u32,
    /// Lines written to its log files.
    pub written: u64,
    /// Lines dropped because its log file could not be written (full disk…).
    pub dropped: u64,
}

/// Where one stream of one process goes.
pub struct Sink {
    pub id: u32,
    pub name: Arc<str>,
    pub instance: u32,
    pub stream: &'static str,
    pub file: Arc<LogFile>,
    /// `log_file`: out and err together.
    pub combined: Option<Arc<LogFile>>,
    pub stamp: Option<Stamp>,
    /// `log_type = "json"`: one JSON object per line in the files.
    pub json: bool,
    pub hub: LogHub,
    /// The process's written/dropped line counts.
    pub counts: Arc<LogCounts>,
}

impl Sink {
    fn emit(&self, lines: &[u8]) {
        let stamped;
        let bytes = match &self.stamp {
            _ if self.json => {
                stamped = json_lines(lines, self);
                &stamped
            }
            None => lines,
            Some(stamp) => {
                let prefix = format!("{}: ", stamp.now());
                let mut b = Vec::with_capacity(lines.len() + 32);
                for line in lines.split_inclusive(|c| *c == b'\n') {
                    b.extend_from_slice(prefix.as_bytes());
                    b.extend_from_slice(line);
                }
                stamped = b;
                &stamped
            }
        };
        let n = self.write_through(bytes);
        if let Some(c) = &self.combined {
            c.write_lines(bytes, n);
        }
        self.publish(lines);
    }

    /// Whether bytes may go to the file as they come, half lines included: a file of this stream
    /// alone, without a timestamp or JSON framing per line (the default). Then nothing read
    /// stays in the daemon's memory, so a daemon killed (-9) between two halves of a line loses
    /// nothing; other sinks write whole lines only (see the module doc).
    fn writes_through(&self) -> bool {
        self.stamp.is_none()
            && !self.json
            && self.combined.is_none()
            && Arc::strong_count(&self.file) == 1
    }

    /// Writes `bytes` (whole lines and maybe half of one) to this stream's file as they are and
    /// counts the lines (written or dropped); returns how many lines `bytes` ends.
    fn write_through(&self, bytes: &[u8]) -> u64 {
        let n = bytes.iter().filter(|c| **c == b'\n').count() as u64;
        let written = self.file.write_lines(bytes, n);
        self.counts.add(n, written);
        if written {
            LINES_WRITTEN.fetch_add(n, Relaxed);
        } else {
            LINES_WRITE_ERRORS.fetch_add(n, Relaxed);
        }
        n
    }

    /// Sends whole `lines` to live followers.
    fn publish(&self, lines: &[u8]) {
        if self.hub.receiver_count() > 0 {
            let at = crate::daemon::now_ms();
            for line in lines.split(|c| *c == b'\n') {
                if line.is_empty() {
                    continue;
                }
                let _ = self.hub.send(Arc::new(LogLine {
                    id: self.id,
                    name: self.name.to_string(),
                    instance: self.instance,
                    stream: self.stream.to_string(),
                    line: String::from_utf8_lossy(line).into_owned(),
                    at,
                }));
            }
        }
    }
}

/// Whole lines as PM2's JSON log objects, one per line: `{"message", "timestamp", "type",
/// "process_id", "app_name"}` (timestamp in `log_date_format` when set, else RFC 3339).
fn json_lines(lines: &[u8], sink: &Sink) -> Vec<u8> {
    let timestamp = match &sink.stamp {
        Some(stamp) => stamp.now(),
        None => chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, false),
    };
    let mut out = Vec::with_capacity(lines.len() + 128);
    for line in lines.split(|c| *c == b'\n') {
        if line.is_empty() {
            continue;
        }
        let obj = serde_json::json!({
            "message": String::from_utf8_lossy(line),
            "timestamp": timestamp,
            "type": sink.stream,
            "process_id": sink.id,
            "app_name": &*sink.name,
        });
        if serde_json::to_writer(&mut out, &obj).is_ok() {
            out.push(b'\n');
        }
    }
    out
}

/// The bytes of a pipe read but not yet written (a line without its newline yet). Shared with the
/// supervisor so an in-place re-exec (daemon::handover) carries a half-read line to the next
/// daemon instead of losing it; the pump only touches it between two awaits.
pub type Carry = Arc<Mutex<Vec<u8>>>;

/// What a pump keeps besides the shared carry: the half line written through to the file but not
/// yet to followers, and whether the file was left in the middle of a line.
#[derive(Default)]
struct Through {
    followers: Vec<u8>,
    mid_line: bool,
}

/// Reads a pipe to its end, writing whole lines to `sink`.
pub async fn pump(fd: OwnedFd, sink: Sink) {
    pump_carried(Arc::new(fd), sink, Carry::default()).await
}

/// [`pump`], starting with (and keeping its unfinished line in) `carry`. The descriptor is shared
/// with the supervisor's hand-over table (one descriptor per pipe, not a duplicate each): it is
/// closed when both are done with it.
pub async fn pump_carried(fd: Arc<OwnedFd>, sink: Sink, carry: Carry) {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on a descriptor we hold; non-blocking, as the readiness loop needs.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    // SAFETY: the descriptor stays open while registered: the AsyncFd owns an Arc of it.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
    };
    let pipe = match registered {
        Ok(p) => p,
        Err(e) => {
            crate::report!("cohort: cannot watch the output of {}: {e}", sink.name);
            return;
        }
    };
    let mut through = Through::default();
    loop {
        let Ok(mut ready) = pipe.readable().await else {
            break;
        };
        let done = SCRATCH.with(|scratch| {
            let mut buf = scratch.borrow_mut();
            // SAFETY: read into the buffer we hold, at most its length.
            let n = unsafe {
                libc::read(
                    pipe.get_ref().as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                )
            };
            match n {
                0 => true,
                n if n > 0 => {
                    let mut pending = carry.lock().unwrap_or_else(|p| p.into_inner());
                    let chunk = &buf[..n as usize];
                    if pending.is_empty() && sink.writes_through() {
                        take_through(chunk, &mut through, &sink);
                    } else {
                        through.mid_line = false;
                        take_lines(chunk, &mut pending, &sink);
                    }
                    false
                }
                _ => match std::io::Error::last_os_error().kind() {
                    std::io::ErrorKind::WouldBlock => {
                        ready.clear_ready();
                        false
                    }
                    std::io::ErrorKind::Interrupted => false,
                    _ => true,
                },
            }
        });
        if done {
            break;
        }
    }
    let mut pending = carry.lock().unwrap_or_else(|p| p.into_inner());
    if !pending.is_empty() {
        pending.push(b'\n');
        sink.emit(&pending);
        pending.clear();
    }
    if through.mid_line {
        sink.write_through(b"\n");
        through.followers.push(b'\n');
        sink.publish(&through.followers);
    }
}

/// A chunk written through to the file at once; followers get its whole lines.
fn take_through(chunk: &[u8], through: &mut Through, sink: &Sink) {
    sink.write_through(chunk);
    through.mid_line = chunk.last() != Some(&b'\n');
    if sink.hub.receiver_count() == 0 {
        through.followers.clear();
        return;
    }
    through.followers.extend_from_slice(chunk);
    if let Some(last) = through.followers.iter().rposition(|c| *c == b'\n') {
        sink.publish(&through.followers[..=last]);
        through.followers.drain(..=last);
    }
    if through.followers.len() >= MAX_PENDING {
        through.followers.clear();
    }
}

fn take_lines(chunk: &[u8], pending: &mut Vec<u8>, sink: &Sink) {
    match chunk.iter().rposition(|c| *c == b'\n') {
        Some(last) => {
            if pending.is_empty() {
                sink.emit(&chunk[..=last]);
            } else {
                pending.extend_from_slice(&chunk[..=last]);
                sink.emit(pending);
                pending.clear();
            }
            pending.extend_from_slice(&chunk[last + 1..]);
        }
        None => {
            pending.extend_from_slice(chunk);
            if pending.len() >= MAX_PENDING {
                pending.push(b'\n');
                sink.emit(pending);
                pending.clear();
            }
        }
    }
    if pending.capacity() > MAX_PENDING * 2 && pending.is_empty() {
        *pending = Vec::new();
    }
}

/// Empties a log file in place (writers append, so they carry on at the new end). A symlink at
/// `path` is refused, not followed.
pub fn truncate(path: &Path) -> Result<()> {
    match crate::home::private::open_existing(path) {
        Ok(f) => f
            .set_len(0)
            .with_context(|| format!("truncating {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("opening {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::translate_moment;

    #[test]
    fn every_moment_token() {
        // (moment token, chrono specifier): longer tokens win over their prefixes.
        let cases = [
            ("YYYY", "%Y"),
            ("YY", "%y"),
            ("MMMM", "%B"),
            ("MMM", "%b"),
            ("MM", "%m"),
            ("DD", "%d"),
            ("HH", "%H"),
            ("hh", "%I"),
            ("mm", "%M"),
            ("ss", "%S"),
            ("SSS", "%3f"),
            ("ZZ", "%z"),
            ("Z", "%:z"),
            ("A", "%p"),
            ("dddd", "%A"),
            ("ddd", "%a"),
        ];
        for (moment, chrono) in cases {
            assert_eq!(translate_moment(moment), chrono, "{moment}");
        }
    }

    #[test]
    fn other_text_passes_through_and_percent_is_escaped() {
        let cases = [
            ("", ""),
            ("YYYY-MM-DD HH:mm:ss Z", "%Y-%m-%d %H:%M:%S %:z"),
            ("YYYY-MM-DDTHH:mm:ss.SSS", "%Y-%m-%dT%H:%M:%S.%3f"),
            // Single letters and runs that are not tokens stay as they are.
            ("M D Y h s S a dd", "M D Y h s S a dd"),
            // Longest match first, then the rest: YYY is YY then Y, SSSS is SSS then S.
            ("YYY", "%yY"),
            ("SSSS", "%3fS"),
            // A literal % must not start a chrono specifier.
            ("%", "%%"),
            ("100% HH", "100%% %H"),
            ("%Y", "%%Y"),
            ("été à HH:mm", "été à %H:%M"),
            // moment's [escapes] are not understood: tokens inside them are still translated.
            ("[at] HH", "[at] %H"),
        ];
        for (moment, chrono) in cases {
            assert_eq!(translate_moment(moment), chrono, "{moment:?}");
        }
    }

    #[test]
    fn translated_formats_print_what_moment_prints() {
        let offset = chrono::FixedOffset::east_opt(9 * 3600 + 30 * 60).unwrap();
        let at = chrono::NaiveDate::from_ymd_opt(2024, 3, 5)
            .and_then(|d| d.and_hms_milli_opt(14, 7, 9, 45))
            .and_then(|t| t.and_local_timezone(offset).single())
            .unwrap();
        let cases = [
            (
                "YYYY-MM-DD HH:mm:ss.SSS Z",
                "2024-03-05 14:07:09.045 +09:30",
            ),
            ("dddd ddd MMMM MMM YY ZZ", "Tuesday Tue March Mar 24 +0930"),
            ("hh:mm A, 100%", "02:07 PM, 100%"),
        ];
        for (moment, want) in cases {
            assert_eq!(
                at.format(&translate_moment(moment)).to_string(),
                want,
                "{moment:?}"
            );
        }
    }
}
