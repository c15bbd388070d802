//! The daemon's own figures for the `process_*` metrics: CPU time, memory and start time from
//! `/proc/self/stat` (parsed by a pure function), open descriptors from `/proc/self/fd`, the
//! descriptor limit from getrlimit.

use super::DaemonStats;
use crate::daemon::sampler::parse_stat;

/// `btime` of `/proc/stat`: when the machine booted, in seconds since the epoch.
fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// Reads the daemon's figures now (zeros for what cannot be read).
pub fn read() -> DaemonStats {
    // SAFETY: sysconf has no preconditions.
    let ticks = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        t if t > 0 => t as u64,
        _ => 100,
    };
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        p if p > 0 => p as u64,
        _ => 4096,
    };
    let stat = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|t| parse_stat(&t));
    // The boot time does not change: read once.
    static BOOT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let boot = *BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|t| parse_boot_time(&t))
            .unwrap_or(0)
    });
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count().saturating_sub(1) as u64) // the listing's own descriptor
        .unwrap_or(0);
    let max_fds = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(0);
    match stat {
        Some(s) => DaemonStats {
            cpu_seconds: s.cpu_ticks as f64 / ticks as f64,
            resident_bytes: s.rss_pages.saturating_mul(page),
            virtual_bytes: s.vsize_bytes,
            open_fds,
            max_fds,
            start_time_seconds: boot + s.start_ticks / ticks,
        },
        None => DaemonStats {
            open_fds,
            max_fds,
            ..DaemonStats::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_time() {
        let cases = [
            (
                "cpu  1 2 3\nbtime 1700000000\nprocesses 5\n",
                Some(1_700_000_000),
            ),
            ("btime 12\n", Some(12)),
            ("cpu 1\n", None),
            ("btime x\n", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_boot_time(text), want, "{text:?}");
        }
    }

    #[test]
    fn reads_this_process() {
        let s = read();
        assert!(s.resident_bytes > 0 && s.open_fds > 0 && s.max_fds > 0);
        assert!(s.start_time_seconds > 1_600_000_000);
    }
}
