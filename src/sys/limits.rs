//! The daemon's own resource limits: the soft `RLIMIT_NOFILE` is raised to the hard limit when the
//! daemon (or a balancer) starts, so holding sockets, pipes and log files for hundreds of apps never
//! hits the 1024 a login shell gives. Apps get back the soft limit the user had: the limit the
//! daemon started with is remembered here and restored in each child between fork and exec
//! (daemon::spawn), as systemd does for its services (soft 1024, raise it yourself if you need to).

use std::sync::OnceLock;

/// The soft and hard `RLIMIT_NOFILE` this process started with, before [`raise_nofile`].
static ORIGINAL_NOFILE: OnceLock<libc::rlimit> = OnceLock::new();

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (remembering the original, once) and returns
/// the new soft limit, or why it could not. Safe to call more than once.
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

/// The limit children should get back: the original soft limit (capped by today's hard limit), or
/// None when nothing was raised (the child inherits ours, which is then the original).
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

/// What a child gets: the original soft limit under today's hard limit; None when they agree.
fn restored(original: libc::rlimit, now: libc::rlimit) -> Option<libc::rlimit> {
    let soft = original.rlim_cur.min(now.rlim_max);
    (soft != now.rlim_cur).then_some(libc::rlimit {
        rlim_cur: soft,
        rlim_max: now.rlim_max,
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
        let back: &[(&str, Limits, Limits, Option<Limits>)] = &[
            ("the user's soft limit comes back", (1024, 524_288), (524_288, 524_288), Some((1024, 524_288))),
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
