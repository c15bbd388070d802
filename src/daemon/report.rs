//! The daemon's own log: daemon.log (the daemon's stderr when the CLI starts it; the console under
//! `cohort run`). Every message of the daemon goes through [`report!`], never `eprintln!`:
//!
//! - a message is one whole line, written with one write(2), so lines of concurrent writers never
//!   interleave and a reader never sees half a line;
//! - a write never panics and never blocks the daemon: when stderr fails (ENOSPC, EIO, EPIPE,
//!   EBADF, EAGAIN…) the line is dropped and counted; the first failure of an episode is said
//!   (attempted) once, and when writing works again one line says how many were dropped;
//! - the same message repeated within [`REPEAT_WINDOW`] is written once, and its next appearance
//!   after the window says how many repeats were held back.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Writes one line to daemon.log, formatted like `format!`. Never panics.
#[macro_export]
macro_rules! report {
    ($($arg:tt)*) => {
        $crate::daemon::report::line(&format!($($arg)*))
    };
}

/// Repeats of one message within this window are held back.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(10);

/// At most this many distinct recent messages are remembered for the repeat check.
const REMEMBERED: usize = 256;

/// What the daemon log remembers between lines.
struct State {
    /// Lines dropped since stderr started failing (`Some` while it fails), with the first error.
    failing: Option<(u64, std::io::Error)>,
    /// Recent messages: when each was last written, and how many repeats were held back since.
    recent: HashMap<String, (Instant, u64)>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

/// Lines dropped because daemon.log could not be written, since the daemon started.
static DROPPED_TOTAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Lines of daemon.log dropped so far (its writes failed).
pub fn dropped_total() -> u64 {
    DROPPED_TOTAL.load(std::sync::atomic::Ordering::Relaxed)
}

/// Writes `text` as one line of daemon.log (see the module doc). Prefer the [`report!`] macro.
pub fn line(text: &str) {
    let mut guard = match STATE.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    let state = guard.get_or_insert_with(|| State {
        failing: None,
        recent: HashMap::new(),
    });
    let now = Instant::now();
    let held = match repeat_verdict(&mut state.recent, text, now) {
        Verdict::Hold => return,
        Verdict::Write { held } => held,
    };
    let mut out = String::with_capacity(text.len() + 48);
    out.push_str(text);
    if held > 0 {
        out.push_str(&format!(" [and {held} more like it held back]"));
    }
    out.push('\n');
    match write_line(out.as_bytes()) {
        Ok(()) => {
            if let Some((dropped, first)) = state.failing.take() {
                let note = format!(
                    "cohort: daemon.log could be written again: {dropped} lines were dropped while it failed ({first})\n"
                );
                let _ = write_line(note.as_bytes());
            }
        }
        Err(e) => {
            DROPPED_TOTAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match &mut state.failing {
                Some((dropped, _)) => *dropped += 1,
                None => {
                    // Said once per episode (it may well be dropped too: the recovery line counts).
                    let note = format!(
                        "cohort: cannot write daemon.log ({e}); dropping its lines until it works again\n"
                    );
                    let _ = write_line(note.as_bytes());
                    state.failing = Some((1, e));
                }
            }
        }
    }
}

/// Whether a message is written now or held back as a repeat.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Write it; `held` repeats were held back since it was last written.
    Write {
        held: u64,
    },
    Hold,
}

/// The repeat rule, pure but for the table it keeps: a message seen less than [`REPEAT_WINDOW`] ago
/// is held (and counted); otherwise it is written with the count of those held.
fn repeat_verdict(
    recent: &mut HashMap<String, (Instant, u64)>,
    text: &str,
    now: Instant,
) -> Verdict {
    if let Some((last, held)) = recent.get_mut(text) {
        if now.duration_since(*last) < REPEAT_WINDOW {
            *held += 1;
            return Verdict::Hold;
        }
        let n = *held;
        *last = now;
        *held = 0;
        return Verdict::Write { held: n };
    }
    if recent.len() >= REMEMBERED {
        recent.retain(|_, (last, _)| now.duration_since(*last) < REPEAT_WINDOW);
        if recent.len() >= REMEMBERED {
            recent.clear();
        }
    }
    recent.insert(text.to_string(), (now, 0));
    Verdict::Write { held: 0 }
}

/// One write(2) of a whole line to fd 2; a short write is finished (a file on a nearly full disk),
/// an interrupted one retried; EAGAIN (a non-blocking console) drops the line rather than wait.
fn write_line(mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: writes from a valid buffer of the given length to fd 2; no memory is retained.
        let n = unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::WriteZero));
        }
        bytes = &bytes[n as usize..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_within_the_window_are_held_and_counted() {
        let mut recent = HashMap::new();
        let t0 = Instant::now();
        let s = Duration::from_secs;
        // (message, seconds after t0, verdict)
        let cases = [
            ("a", 0, Verdict::Write { held: 0 }),
            ("a", 1, Verdict::Hold),
            ("b", 1, Verdict::Write { held: 0 }),
            ("a", 9, Verdict::Hold),
            ("a", 10, Verdict::Write { held: 2 }),
            ("a", 11, Verdict::Hold),
            ("a", 25, Verdict::Write { held: 1 }),
            ("a", 40, Verdict::Write { held: 0 }),
            ("b", 40, Verdict::Write { held: 0 }),
        ];
        for (text, at, want) in cases {
            assert_eq!(
                repeat_verdict(&mut recent, text, t0 + s(at)),
                want,
                "{text} at {at}s"
            );
        }
    }

    #[test]
    fn the_table_stays_bounded() {
        let mut recent = HashMap::new();
        let t0 = Instant::now();
        for i in 0..(REMEMBERED * 3) {
            let _ = repeat_verdict(&mut recent, &format!("m{i}"), t0);
            assert!(recent.len() <= REMEMBERED);
        }
    }
}
