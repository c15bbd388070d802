//! The one harness of the integration tests, shared by every file in tests/ (`mod common;`).
//!
//! - [`home`]: `Cohort`, one test's own COHORT_HOME and work folder, driving the real binary.
//! - [`cleanup`]: pids remembered with their start time and killed on drop; child guards.
//! - [`ports`]: free TCP ports, never handed out twice (in this process or to another test process).
//! - [`poll`]: `poll` / `wait_until`, the only way a test waits (no fixed sleeps).
//! - [`http`]: a small HTTP/1.1 client over std sockets with one response reader.
//! - [`load`]: a bounded load generator counting ok / failed / refused requests.
//! - [`cluster`]: cluster-mode waits on `ls --json`.
//! - [`deps`]: what scripts/setup installs (tools, npm packages); a test fails naming what is missing.
//! - [`netns`]: run a test in a private network namespace (per-namespace sysctls stay out of the host).
//! - [`raise_open_files_limit`]: a test that holds thousands of sockets lifts its own soft limit.
#![allow(dead_code, unused_imports)]

pub mod cleanup;
pub mod cluster;
pub mod deps;
pub mod home;
pub mod http;
pub mod load;
pub mod netns;
pub mod poll;
pub mod ports;

pub use cleanup::*;
pub use cluster::*;
pub use deps::*;
pub use home::*;
pub use http::*;
pub use load::*;
pub use netns::*;
pub use poll::*;
pub use ports::*;

/// Raises this test process's soft open-files limit to its hard one (for a test that holds
/// thousands of sockets itself); returns the hard limit, which the test checks against its need.
pub fn raise_open_files_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    lim.rlim_max
}

/// `text` up to its last newline: a log read while it is written may end inside a line that is
/// still being written, which is not (yet) a line.
#[allow(dead_code)]
pub fn whole_lines(text: &str) -> &str {
    &text[..text.rfind('\n').map_or(0, |i| i + 1)]
}
