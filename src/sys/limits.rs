//! The daemon's own resource limits: the soft `RLIMIT_NOFILE` is raised to the hard limit when the
//! daemon, its holder or a balancer starts, so holding sockets, pipes and log files for hundreds of
//! apps never hits the 1024 a login shell gives. Where the process may (root, or
//! `CAP_SYS_RESOURCE`), the hard limit is raised first, to `fs.nr_open` capped at 524,288 (systemd's
//! default hard limit for services), so even a plain `ulimit -n 1024` (soft and hard) leaves room.
//! Apps get back the limits the user had, soft and hard: the limits the daemon started with are
//! remembered here and restored in each child between fork and exec (daemon::spawn), so an app
//! sees what it would have seen started from that shell (systemd does the same with its 1024 soft
//! default: a service that needs more raises it itself, as Node does at start-up).

use std::sync::OnceLock;

/// The soft and hard `RLIMIT_NOFILE` this process started with, before [`raise_nofile`].
static ORIGINAL_NOFILE: OnceLock<libc::rlimit> = OnceLock::new();

/// The highest hard limit the daemon gives itself when it may raise it: systemd's default for
/// services. Enough for thousands of apps; the kernel's fd table grows only as fds are opened.
const HARD_CEILING: u64 = 524_288;

/// The kernel's ceiling for any open-files limit (`fs.nr_open`), 1,048,576 when unreadable.
fn nr_open() -> u64 {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 20)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (remembering the original, once) and returns
/// the new soft limit, or why it could not. The hard limit is raised first where permitted
/// (`CAP_SYS_RESOURCE`); where not, the hard limit stays. Safe to call more than once.
pub fn raise_nofile() -> Result<u64, std::io::Error> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    ORIGINAL_NOFILE.get_or_init(|| lim);
    if let Some(higher) = raised_hard(lim, nr_open()) {
        // SAFETY: setrlimit reads the struct we own. EPERM (no CAP_SYS_RESOURCE) leaves `lim`.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &higher) } == 0 {
            lim = higher;
        }
    }
    let target = raised(lim);
    if target.rlim_cur != lim.rlim_cur {
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &target) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(target.rlim_cur)
}

/// Raises the limit and says so in daemon.log only when it fails (the figure is in `/proc/<pid>/limits`).
pub fn raise_nofile_or_report(who: &str) {
    if let Err(e) = raise_nofile() {
        eprintln!("cohort: {who}: cannot raise the open-files limit to its hard limit: {e}");
    }
}

/// The limits children should get back: the original soft and hard limits (capped by today's hard
/// limit), or None when nothing was raised (the child inherits ours, which is then the original).
pub fn child_nofile() -> Option<libc::rlimit> {
    let original = *ORIGINAL_NOFILE.get()?;
    let mut now = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut now) } != 0 {
        return None;
    }
    restored(original, now)
}

/// The soft limit raised to the hard limit (`RLIM_INFINITY` hard limits are left alone: the kernel
/// refuses a soft limit over `fs.nr_open`).
fn raised(lim: libc::rlimit) -> libc::rlimit {
    if lim.rlim_max == libc::RLIM_INFINITY || lim.rlim_cur >= lim.rlim_max {
        return lim;
    }
    libc::rlimit {
        rlim_cur: lim.rlim_max,
        rlim_max: lim.rlim_max,
    }
}

/// Soft and hard both raised to `min(nr_open, HARD_CEILING)` when the hard limit is below it (and
/// not infinite); None when there is nothing to raise.
fn raised_hard(lim: libc::rlimit, nr_open: u64) -> Option<libc::rlimit> {
    let ceiling = nr_open.min(HARD_CEILING);
    (lim.rlim_max != libc::RLIM_INFINITY && lim.rlim_max < ceiling).then_some(libc::rlimit {
        rlim_cur: ceiling,
        rlim_max: ceiling,
    })
}

/// What a child gets: the original soft and hard limits under today's hard limit; None when they
/// agree with ours.
fn restored(original: libc::rlimit, now: libc::rlimit) -> Option<libc::rlimit> {
    let hard = original.rlim_max.min(now.rlim_max);
    let soft = original.rlim_cur.min(hard);
    (soft != now.rlim_cur || hard != now.rlim_max).then_some(libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim(cur: u64, max: u64) -> libc::rlimit {
        libc::rlimit {
            rlim_cur: cur,
            rlim_max: max,
        }
    }

    fn pair(l: libc::rlimit) -> (u64, u64) {
        (l.rlim_cur, l.rlim_max)
    }

    type Limits = (u64, u64);

    #[test]
    fn raising_and_restoring() {
        let inf = libc::RLIM_INFINITY;
        #[rustfmt::skip]
        let cases: &[(&str, Limits, Limits)] = &[
            ("a login shell", (1024, 524_288), (524_288, 524_288)),
            ("already at the hard limit", (20_000, 20_000), (20_000, 20_000)),
            ("an infinite hard limit is left alone", (1024, inf), (1024, inf)),
        ];
        for (what, before, after) in cases {
            assert_eq!(pair(raised(lim(before.0, before.1))), *after, "{what}");
        }
        #[rustfmt::skip]
        let hard: &[(&str, Limits, u64, Option<Limits>)] = &[
            ("a plain ulimit -n 1024", (1024, 1024), 1 << 20, Some((524_288, 524_288))),
            ("a small nr_open caps it", (1024, 1024), 65_536, Some((65_536, 65_536))),
            ("already at the ceiling", (1024, 524_288), 1 << 20, None),
            ("above the ceiling is left", (1024, 1 << 20), 1 << 20, None),
            ("an infinite hard limit is left", (1024, inf), 1 << 20, None),
        ];
        for (what, before, nr_open, want) in hard {
            let got = raised_hard(lim(before.0, before.1), *nr_open).map(pair);
            assert_eq!(got, *want, "{what}");
        }
        #[rustfmt::skip]
        let back: &[(&str, Limits, Limits, Option<Limits>)] = &[
            ("the user's soft limit comes back", (1024, 524_288), (524_288, 524_288), Some((1024, 524_288))),
            ("and the user's hard limit", (1024, 1024), (524_288, 524_288), Some((1024, 1024))),
            ("nothing was raised", (1024, 1024), (1024, 1024), None),
            ("a hard limit lowered since caps it", (4096, 8192), (2048, 2048), None),
            ("a lowered hard limit under the soft one", (4096, 8192), (8192, 2048), Some((2048, 2048))),
        ];
        for (what, original, now, want) in back {
            let got = restored(lim(original.0, original.1), lim(now.0, now.1)).map(pair);
            assert_eq!(got, *want, "{what}");
        }
    }
}
