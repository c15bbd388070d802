//! CPU and memory of each process, read from /proc/<pid>/stat: one small read per live process every
//! two seconds, on the supervisor's own task (no thread, no per-process timer).

use std::collections::HashMap;
use std::time::Instant;

pub const INTERVAL_MS: u64 = 2000;
/// Samples kept per process for charts: 5 minutes at INTERVAL_MS (12 bytes each).
pub const HISTORY: usize = 150;

/// Remembers the previous CPU time of each pid to turn totals into a percentage.
pub struct Sampler {
    ticks_per_sec: f64,
    page_size: u64,
    last: HashMap<i32, (u64, Instant)>,
}

/// One reading: CPU % of one core since the last reading, resident memory in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    pub cpu: f64,
    pub memory: u64,
}

impl Default for Sampler {
    fn default() -> Sampler {
        Sampler::new()
    }
}

impl Sampler {
    pub fn new() -> Sampler {
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        Sampler {
            ticks_per_sec: if ticks > 0 { ticks as f64 } else { 100.0 },
            page_size: if page > 0 { page as u64 } else { 4096 },
            last: HashMap::new(),
        }
    }

    /// Reads `pid`; None when it is gone.
    pub fn sample(&mut self, pid: i32) -> Option<Sample> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let ProcStat {
            cpu_ticks: total,
            rss_pages: rss,
            ..
        } = parse_stat(&text)?;
        let now = Instant::now();
        let cpu = match self.last.insert(pid, (total, now)) {
            Some((prev, at)) => {
                let secs = now.duration_since(at).as_secs_f64();
                if secs > 0.0 {
                    (total.saturating_sub(prev) as f64 / self.ticks_per_sec) / secs * 100.0
                } else {
                    0.0
                }
            }
            None => 0.0,
        };
        Some(Sample {
            cpu: (cpu * 10.0).round() / 10.0,
            memory: rss.saturating_mul(self.page_size),
        })
    }

    pub fn forget(&mut self, pid: i32) {
        self.last.remove(&pid);
    }
}

/// What one reading of `/proc/<pid>/stat` gives, in the kernel's units (the sampler and the
/// daemon's own `process_*` metrics read the same fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    /// When the process started, in clock ticks after boot.
    pub start_ticks: u64,
    /// Virtual memory size, in bytes.
    pub vsize_bytes: u64,
    /// Resident set size, in pages.
    pub rss_pages: u64,
}

/// How long `pid` has run, in ms: the boot clock now minus its start time in `/proc/<pid>/stat`
/// (both count from boot, so a wall-clock change does not move it). None when it is gone.
pub(crate) fn process_age_ms(pid: i32) -> Option<u64> {
    let stat = parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write to; CLOCK_BOOTTIME exists on Linux >= 2.6.39.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut now) } != 0 {
        return None;
    }
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let boot_ms = now.tv_sec as u64 * 1000 + now.tv_nsec as u64 / 1_000_000;
    Some(age_ms(stat.start_ticks, ticks.max(1) as u64, boot_ms))
}

/// A process's age from its start time (clock ticks after boot) and the time since boot now.
fn age_ms(start_ticks: u64, ticks_per_sec: u64, boot_now_ms: u64) -> u64 {
    boot_now_ms.saturating_sub(start_ticks.saturating_mul(1000) / ticks_per_sec)
}

/// Parses the text of `/proc/<pid>/stat`; None when it is cut short or garbled.
pub(crate) fn parse_stat(text: &str) -> Option<ProcStat> {
    // Fields after the command name, which may itself contain spaces and parentheses: the name
    // ends at the last ')'.
    let rest = text.get(text.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // rest starts at field 3 of proc(5): utime 14, stime 15, starttime 22, vsize 23, rss 24.
    let num = |i: usize| -> Option<u64> { fields.get(i)?.parse().ok() };
    Some(ProcStat {
        cpu_ticks: num(11)?.saturating_add(num(12)?),
        start_ticks: num(19)?,
        vsize_bytes: num(20)?,
        rss_pages: num(21)?,
    })
}

#[cfg(test)]
mod tests {
    use super::{age_ms, parse_stat, process_age_ms, ProcStat};

    #[test]
    fn a_process_age_is_the_boot_clock_minus_its_start() {
        for (start_ticks, hz, now_ms, want) in [
            (1_000, 100, 15_000, 5_000),
            (1_967_345, 100, 19_686_130, 12_680),
            (500, 250, 1_000, 0),
            (u64::MAX, 100, 5_000, 0),
        ] {
            assert_eq!(
                age_ms(start_ticks, hz, now_ms),
                want,
                "{start_ticks} {hz} {now_ms}"
            );
        }
        let mine = process_age_ms(std::process::id() as i32).expect("this process has an age");
        assert!(mine < 24 * 3600 * 1000, "{mine}");
        assert_eq!(process_age_ms(-1), None);
    }

    /// A /proc/<pid>/stat line with this command name, utime 150, stime 25 and rss 3000 pages.
    fn stat_line(comm: &str) -> String {
        format!(
            "4242 ({comm}) S 1 4242 4242 0 -1 4194560 1200 0 3 0 150 25 0 0 20 0 11 0 \
             987654 123456789 3000 18446744073709551615 1 1 0 0 0 0 0 16781312 17922 0 0 0 17 1 0 0 0 0 0\n"
        )
    }

    #[test]
    fn command_names_of_any_shape() {
        let want = Some(ProcStat {
            cpu_ticks: 175,
            start_ticks: 987654,
            vsize_bytes: 123456789,
            rss_pages: 3000,
        });
        for comm in [
            "node",
            "node server.js",
            "a) b",
            "(sd-pam)",
            "x) S 1 2 3 (",
            ")",
            "",
            "名前",
        ] {
            assert_eq!(parse_stat(&stat_line(comm)), want, "comm {comm:?}");
        }
    }

    #[test]
    fn short_or_garbled_lines_give_nothing() {
        let full = stat_line("node");
        let cases = [
            "",
            "4242",
            "4242 (node",
            "4242 (node)",
            "4242 (node) ",
            "4242 (node)é",
            "4242 (node) S 1 4242 4242 0 -1 4194560 1200 0 3 0 150",
            // stime is not a number.
            "4242 (node) S 1 4242 4242 0 -1 4194560 1200 0 3 0 150 xx 0 0 20 0 11 0 987654 123456789 3000",
            // rss is negative.
            "4242 (node) S 1 4242 4242 0 -1 4194560 1200 0 3 0 150 25 0 0 20 0 11 0 987654 123456789 -3",
            // cut just before rss.
            &full[..full.find(" 3000").unwrap()],
        ];
        for text in cases {
            assert_eq!(parse_stat(text), None, "{text:?}");
        }
    }

    #[test]
    fn huge_counters_saturate_instead_of_overflowing() {
        let text = format!(
            "1 (x) S 1 1 1 0 -1 0 0 0 0 0 {max} {max} 0 0 20 0 1 0 1 1 {max}",
            max = u64::MAX
        );
        assert_eq!(
            parse_stat(&text),
            Some(ProcStat {
                cpu_ticks: u64::MAX,
                start_ticks: 1,
                vsize_bytes: 1,
                rss_pages: u64::MAX,
            })
        );
    }
}
