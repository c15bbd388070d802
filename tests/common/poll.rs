//! Waiting with a deadline: the only way a test waits for something (no fixed sleeps).

use std::time::{Duration, Instant};

/// How often a condition is checked.
const EVERY: Duration = Duration::from_millis(20);

/// Calls `f` every 20 ms until it returns `Some` (→ that value) or `timeout` passes (→ None).
pub fn try_poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(EVERY);
    }
}

/// Like [`try_poll`], but fails the test ("timed out after … waiting for `what`") on the deadline.
pub fn poll<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    try_poll(timeout, f).unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Polls `cond` until it is true (→ true) or `timeout` passes (→ false), for tests that build
/// their own failure message.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    try_poll(timeout, || cond().then_some(())).is_some()
}
