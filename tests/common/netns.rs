//! A private network namespace for one test: the test body runs on a thread of its own that
//! `unshare(CLONE_NEWNET)`s (a namespace is per thread), brings loopback up, and runs there; every
//! process it starts (the CLI, the daemon it auto-starts, the apps) inherits that namespace, so
//! per-namespace settings (`net.ipv4.tcp_migrate_req`) never leak into the host. The namespace
//! goes away with its last process. Needs root and iproute2 (`ip`); fails saying so otherwise.

use std::process::{Command, Stdio};

/// Runs `body` in a fresh network namespace (loopback up) and returns what it returns; a panic in
/// `body` fails the calling test with the same message.
pub fn in_private_netns<T: Send + 'static>(body: impl FnOnce() -> T + Send + 'static) -> T {
    let outcome = std::thread::spawn(move || {
        // SAFETY: unshare(2) with CLONE_NEWNET changes only this thread's network namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            panic!(
                "unshare(CLONE_NEWNET): {} (this test needs root)",
                std::io::Error::last_os_error()
            );
        }
        let up = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .stdin(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("cannot run ip: {e} (install iproute2: scripts/setup)"));
        assert!(up.success(), "ip link set lo up failed: {up}");
        body()
    })
    .join();
    match outcome {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// A per-namespace sysctl under /proc/sys as this thread sees it (`None` when absent).
pub fn sysctl(path: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/sys/{path}"))
        .ok()
        .map(|s| s.trim().to_string())
}
