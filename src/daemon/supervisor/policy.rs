//! The restart policy, as a pure function: given an app's restart rules, what its process's last
//! runs were like, and how the process just ended (on its own, not asked to stop), decide whether
//! it stays stopped, is `errored`, or restarts after a delay. These are PM2's semantics:
//! `autorestart`, `stop_exit_codes`, `max_restarts` counted over runs shorter than `min_uptime`,
//! `restart_delay`, and `exp_backoff_restart_delay` (grows ×1.5 up to 15 s, resets after a 30 s run).
//!
//! A second policy decides what follows a spawn that failed: a transient shortage (EMFILE, ENFILE,
//! EAGAIN, ENOMEM, ENOBUFS — also creating a cluster slot's socket) is retried with backoff (100 ms doubling to 10 s, for as long as it lasts);
//! anything else (a missing program, a bad cwd) is `errored` at once.
//!
//! The supervisor applies the decisions (lifecycle.rs, transient.rs); nothing here touches a
//! process or a clock.

use crate::config::AppSpec;

/// Exponential backoff grows by this factor up to this cap, and resets after a run this long (PM2's values).
const BACKOFF_FACTOR: f64 = 1.5;
const BACKOFF_CAP_MS: u64 = 15_000;
const BACKOFF_RESET_MS: u64 = 30_000;

/// The longest `start` waits for a fork-mode process without a readiness signal to prove it runs.
pub const FORK_READY_WINDOW_MAX_MS: u64 = 1000;

/// How long a fork-mode process with no readiness signal (no `wait_ready`) must run before it
/// counts as started, so `start` sees a crash at start-up: `min_uptime` (PM2's line between a
/// crash at start and a run), at most 1 s; `min_uptime: 0` means at once.
pub fn fork_ready_window_ms(min_uptime_ms: u64) -> u64 {
    min_uptime_ms.min(FORK_READY_WINDOW_MAX_MS)
}

/// Whether a process that exits with `code` before it counted as started finished its job (code 0
/// or one of `stop_exit_codes`: a one-shot command) rather than failed to start.
pub fn finished_cleanly(rules: &Rules, code: Option<i32>) -> bool {
    code.is_some_and(|c| c == 0 || rules.stop_exit_codes.contains(&c))
}

/// The restart rules of an app (the part of its spec the policy reads).
#[derive(Clone, Copy, Debug)]
pub struct Rules<'a> {
    pub autorestart: bool,
    pub stop_exit_codes: &'a [i32],
    pub max_restarts: u32,
    pub min_uptime_ms: u64,
    pub restart_delay_ms: u64,
    pub exp_backoff_restart_delay_ms: u64,
}

impl<'a> Rules<'a> {
    pub fn of(spec: &'a AppSpec) -> Rules<'a> {
        Rules {
            autorestart: spec.autorestart,
            stop_exit_codes: &spec.stop_exit_codes,
            max_restarts: spec.max_restarts,
            min_uptime_ms: spec.min_uptime_ms,
            restart_delay_ms: spec.restart_delay_ms,
            exp_backoff_restart_delay_ms: spec.exp_backoff_restart_delay_ms,
        }
    }
}

/// What the policy remembers of a process's runs between exits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunState {
    /// Runs in a row shorter than `min_uptime`.
    pub unstable: u32,
    /// The last exponential backoff delay (0: none yet, or reset).
    pub backoff_ms: u64,
    /// Spawns in a row that failed for a transient reason (0 after a spawn that worked).
    pub spawn_failures: u32,
}

/// How a process ended.
#[derive(Clone, Copy, Debug)]
pub struct Ended {
    /// Its exit code (None when a signal killed it).
    pub code: Option<i32>,
    /// How long it ran.
    pub uptime_ms: u64,
    /// The daemon is stopping every app: nothing restarts.
    pub daemon_stopping: bool,
}

/// What happens to a process that ended on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Done: `stopped` (a stop exit code, autorestart off, or the daemon is stopping).
    Stop,
    /// Crashed too often within min_uptime: `errored`, not restarted.
    Errored,
    /// Start it again after this many milliseconds (0: at once).
    Restart { after_ms: u64 },
}

/// Decides what follows an unrequested exit, and the run state to keep for the next one.
pub fn after_exit(rules: &Rules, run: RunState, ended: Ended) -> (RunState, Decision) {
    let mut next = run;
    next.unstable = if ended.uptime_ms < rules.min_uptime_ms {
        run.unstable + 1
    } else {
        0
    };
    if ended.uptime_ms >= BACKOFF_RESET_MS {
        next.backoff_ms = 0;
    }
    let clean_stop = ended
        .code
        .is_some_and(|c| rules.stop_exit_codes.contains(&c));
    if clean_stop || !rules.autorestart || ended.daemon_stopping {
        return (next, Decision::Stop);
    }
    if next.unstable > rules.max_restarts {
        return (next, Decision::Errored);
    }
    let after_ms = if rules.exp_backoff_restart_delay_ms > 0 {
        next.backoff_ms = if next.backoff_ms == 0 {
            rules.exp_backoff_restart_delay_ms
        } else {
            ((next.backoff_ms as f64 * BACKOFF_FACTOR) as u64).min(BACKOFF_CAP_MS)
        };
        next.backoff_ms
    } else {
        rules.restart_delay_ms
    };
    (next, Decision::Restart { after_ms })
}

/// The first retry of a spawn that failed for a transient reason, the factor and the cap.
const SPAWN_RETRY_FIRST_MS: u64 = 100;
const SPAWN_RETRY_CAP_MS: u64 = 10_000;

/// What follows a spawn that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpawnDecision {
    /// A transient shortage: try again after this many milliseconds.
    Retry { after_ms: u64 },
    /// It will not work by waiting: `errored`.
    Errored,
}

/// Whether `errno` says a resource is short for now (file descriptors of the daemon or the
/// system, processes, memory, socket buffers) rather than that the spawn (or the creation of a
/// cluster slot's listening socket) cannot work. EADDRINUSE and the like are not.
pub fn is_transient(errno: i32) -> bool {
    matches!(
        errno,
        libc::EMFILE | libc::ENFILE | libc::EAGAIN | libc::ENOMEM | libc::ENOBUFS
    )
}

/// Decides what follows a spawn that failed with `errno` (None: no OS error, e.g. a bad
/// argument) after `failures` transient failures in a row.
pub fn after_spawn_failure(errno: Option<i32>, failures: u32) -> SpawnDecision {
    match errno {
        Some(e) if is_transient(e) => SpawnDecision::Retry {
            after_ms: SPAWN_RETRY_FIRST_MS
                .saturating_mul(1u64 << failures.min(20))
                .min(SPAWN_RETRY_CAP_MS),
        },
        _ => SpawnDecision::Errored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Decision::*;

    #[test]
    fn fork_ready_window() {
        for (min_uptime, want) in [(0, 0), (300, 300), (1000, 1000), (5000, 1000)] {
            assert_eq!(fork_ready_window_ms(min_uptime), want, "{min_uptime}");
        }
        let codes = [3];
        let rules = Rules {
            stop_exit_codes: &codes,
            ..defaults()
        };
        for (code, want) in [
            (Some(0), true),
            (Some(3), true),
            (Some(1), false),
            (None, false),
        ] {
            assert_eq!(finished_cleanly(&rules, code), want, "{code:?}");
        }
    }

    #[test]
    fn spawn_failures() {
        use SpawnDecision::Retry;
        #[rustfmt::skip]
        let cases: &[(&str, Option<i32>, u32, SpawnDecision)] = &[
            ("EMFILE: retried soon", Some(libc::EMFILE), 0, Retry { after_ms: 100 }),
            ("ENFILE: retried", Some(libc::ENFILE), 0, Retry { after_ms: 100 }),
            ("EAGAIN (fork): retried", Some(libc::EAGAIN), 0, Retry { after_ms: 100 }),
            ("ENOMEM: retried", Some(libc::ENOMEM), 0, Retry { after_ms: 100 }),
            ("ENOBUFS (a socket): retried", Some(libc::ENOBUFS), 0, Retry { after_ms: 100 }),
            ("the delay doubles", Some(libc::EMFILE), 1, Retry { after_ms: 200 }),
            ("and doubles", Some(libc::EMFILE), 3, Retry { after_ms: 800 }),
            ("up to 10 s", Some(libc::EMFILE), 7, Retry { after_ms: 10_000 }),
            ("and stays there", Some(libc::EMFILE), 1000, Retry { after_ms: 10_000 }),
            ("ENOENT: errored", Some(libc::ENOENT), 0, SpawnDecision::Errored),
            ("EACCES: errored", Some(libc::EACCES), 0, SpawnDecision::Errored),
            ("EADDRINUSE: errored", Some(libc::EADDRINUSE), 0, SpawnDecision::Errored),
            ("no OS error: errored", None, 0, SpawnDecision::Errored),
        ];
        for (what, errno, failures, want) in cases {
            assert_eq!(after_spawn_failure(*errno, *failures), *want, "{what}");
        }
    }

    /// PM2's defaults: autorestart, max_restarts 16, min_uptime 1 s, no delay, no backoff.
    fn defaults() -> Rules<'static> {
        Rules {
            autorestart: true,
            stop_exit_codes: &[],
            max_restarts: 16,
            min_uptime_ms: 1000,
            restart_delay_ms: 0,
            exp_backoff_restart_delay_ms: 0,
        }
    }

    fn run(unstable: u32, backoff_ms: u64) -> RunState {
        RunState {
            unstable,
            backoff_ms,
            spawn_failures: 0,
        }
    }

    fn ended(code: Option<i32>, uptime_ms: u64) -> Ended {
        Ended {
            code,
            uptime_ms,
            daemon_stopping: false,
        }
    }

    #[test]
    fn decisions() {
        let no_auto = Rules {
            autorestart: false,
            ..defaults()
        };
        let stop_codes = Rules {
            stop_exit_codes: &[0, 3],
            ..defaults()
        };
        let max3 = Rules {
            max_restarts: 3,
            ..defaults()
        };
        let max0 = Rules {
            max_restarts: 0,
            ..defaults()
        };
        let delay = Rules {
            restart_delay_ms: 500,
            ..defaults()
        };
        let backoff = Rules {
            exp_backoff_restart_delay_ms: 100,
            restart_delay_ms: 500,
            ..defaults()
        };
        let big_backoff = Rules {
            exp_backoff_restart_delay_ms: 20_000,
            ..defaults()
        };
        #[rustfmt::skip]
        let cases: &[(&str, Rules, RunState, Ended, RunState, Decision)] = &[
            // (what, rules, state before, how it ended, state after, decision)
            ("crash restarts at once", defaults(), run(0, 0), ended(Some(1), 5000), run(0, 0), Restart { after_ms: 0 }),
            ("killed by a signal restarts", defaults(), run(0, 0), ended(None, 5000), run(0, 0), Restart { after_ms: 0 }),
            ("a short run counts as unstable", defaults(), run(2, 0), ended(Some(1), 10), run(3, 0), Restart { after_ms: 0 }),
            ("a long run resets unstable", defaults(), run(5, 0), ended(Some(1), 1000), run(0, 0), Restart { after_ms: 0 }),
            ("exit 0 restarts too (no stop codes)", defaults(), run(0, 0), ended(Some(0), 5000), run(0, 0), Restart { after_ms: 0 }),
            ("autorestart off: stopped", no_auto, run(0, 0), ended(Some(1), 5000), run(0, 0), Stop),
            ("autorestart off still counts unstable", no_auto, run(0, 0), ended(Some(1), 10), run(1, 0), Stop),
            ("a stop exit code: stopped", stop_codes, run(0, 0), ended(Some(3), 10), run(1, 0), Stop),
            ("other codes restart", stop_codes, run(0, 0), ended(Some(1), 5000), run(0, 0), Restart { after_ms: 0 }),
            ("a signal is no stop code", stop_codes, run(0, 0), ended(None, 5000), run(0, 0), Restart { after_ms: 0 }),
            ("within max_restarts: restart", max3, run(2, 0), ended(Some(1), 10), run(3, 0), Restart { after_ms: 0 }),
            ("over max_restarts: errored", max3, run(3, 0), ended(Some(1), 10), run(4, 0), Errored),
            ("over max_restarts but a long run: restart", max3, run(3, 0), ended(Some(1), 2000), run(0, 0), Restart { after_ms: 0 }),
            ("max_restarts 0: first short run errors", max0, run(0, 0), ended(Some(1), 10), run(1, 0), Errored),
            ("max_restarts 0: a long run restarts", max0, run(0, 0), ended(Some(1), 2000), run(0, 0), Restart { after_ms: 0 }),
            ("a stop code wins over errored", Rules { max_restarts: 0, ..stop_codes }, run(0, 0), ended(Some(0), 10), run(1, 0), Stop),
            ("restart_delay", delay, run(0, 0), ended(Some(1), 5000), run(0, 0), Restart { after_ms: 500 }),
            ("backoff starts at its base (over restart_delay)", backoff, run(0, 0), ended(Some(1), 5000), run(0, 100), Restart { after_ms: 100 }),
            ("backoff grows x1.5", backoff, run(0, 100), ended(Some(1), 5000), run(0, 150), Restart { after_ms: 150 }),
            ("backoff is capped at 15 s", backoff, run(0, 12_000), ended(Some(1), 5000), run(0, 15_000), Restart { after_ms: 15_000 }),
            ("backoff resets after a 30 s run", backoff, run(0, 12_000), ended(Some(1), 30_000), run(0, 100), Restart { after_ms: 100 }),
            ("backoff just under the reset grows", backoff, run(0, 1000), ended(Some(1), 29_999), run(0, 1500), Restart { after_ms: 1500 }),
            ("a base over the cap is used as is", big_backoff, run(0, 0), ended(Some(1), 5000), run(0, 20_000), Restart { after_ms: 20_000 }),
            ("then capped", big_backoff, run(0, 20_000), ended(Some(1), 5000), run(0, 15_000), Restart { after_ms: 15_000 }),
            ("errored keeps the backoff", Rules { max_restarts: 0, ..backoff }, run(0, 150), ended(Some(1), 10), run(1, 150), Errored),
            ("a stop resets the backoff after 30 s", Rules { autorestart: false, ..backoff }, run(0, 150), ended(Some(1), 40_000), run(0, 0), Stop),
        ];
        for (what, rules, before, how, after, decision) in cases {
            assert_eq!(
                after_exit(rules, *before, *how),
                (*after, *decision),
                "{what}"
            );
        }
    }

    #[test]
    fn nothing_restarts_while_the_daemon_stops() {
        let stopping = Ended {
            daemon_stopping: true,
            ..ended(Some(1), 10)
        };
        for rules in [
            defaults(),
            Rules {
                max_restarts: 0,
                ..defaults()
            },
        ] {
            assert_eq!(after_exit(&rules, run(0, 0), stopping), (run(1, 0), Stop));
        }
    }

    #[test]
    fn a_crash_loop_ends_errored_after_max_restarts_restarts() {
        // Three restarts allowed: runs 1..=4 crash fast; the 4th is the one that errors.
        let rules = Rules {
            max_restarts: 3,
            ..defaults()
        };
        let mut state = RunState::default();
        let mut restarts = 0;
        loop {
            let (next, d) = after_exit(&rules, state, ended(Some(1), 50));
            state = next;
            match d {
                Restart { .. } => restarts += 1,
                Errored => break,
                Stop => panic!("a crash loop never stops cleanly"),
            }
            assert!(restarts <= 3, "too many restarts");
        }
        assert_eq!(restarts, 3);
    }
}
