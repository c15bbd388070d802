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
        // Fields after the command name, which may itself contain spaces and parentheses.
        let rest = &text[text.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
        // rest starts at field 3 (state): utime = 14, stime = 15, rss = 24 (1-based in proc(5)).
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        let rss: u64 = fields.get(21)?.parse().ok()?;
        let total = utime + stime;
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
            memory: rss * self.page_size,
        })
    }

    pub fn forget(&mut self, pid: i32) {
        self.last.remove(&pid);
    }
}
