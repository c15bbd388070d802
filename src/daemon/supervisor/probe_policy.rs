//! The probe thresholds, a pure function (Kubernetes semantics): what one check's result does to
//! a process's probe state. Readiness starts *not ready* and turns ready after
//! `success_threshold` consecutive successes, not ready again after `failure_threshold`
//! consecutive failures; liveness asks for a restart after `failure_threshold` consecutive
//! failures. The state belongs to one run of the process (its `gen`): a result of an earlier run
//! is ignored, and the first result of a new run starts from fresh counters.

use crate::config::probes::ProbeKind;

/// One probe's counters for one run of a process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct ProbeCounters {
    /// The run these counters belong to.
    pub(super) gen: u64,
    pub(super) successes: u32,
    pub(super) failures: u32,
    /// Readiness: passed (and not failed since). Liveness: unused.
    pub(super) ready: bool,
}

/// What a result changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Transition {
    /// Nothing visible (counters moved, or a stale result was dropped).
    None,
    /// Readiness passed: the process takes new work.
    Ready,
    /// Readiness failed `failure_threshold` times in a row: no new work.
    NotReady,
    /// Liveness failed `failure_threshold` times in a row: restart the process.
    Restart,
}

/// The thresholds of a probe.
#[derive(Clone, Copy, Debug)]
pub(super) struct Thresholds {
    pub(super) failure: u32,
    pub(super) success: u32,
}

/// Applies the result `ok` of a check made for run `gen` of the process to `c` (the counters
/// of run `c.gen`). A result of an older run changes nothing; one of a newer run resets first.
pub(super) fn on_result(
    kind: ProbeKind,
    t: Thresholds,
    c: &mut ProbeCounters,
    gen: u64,
    ok: bool,
) -> Transition {
    if gen < c.gen {
        return Transition::None;
    }
    if gen > c.gen {
        *c = ProbeCounters {
            gen,
            ..Default::default()
        };
    }
    if ok {
        c.successes = c.successes.saturating_add(1);
        c.failures = 0;
    } else {
        c.failures = c.failures.saturating_add(1);
        c.successes = 0;
    }
    match kind {
        ProbeKind::Readiness => {
            if !c.ready && ok && c.successes >= t.success.max(1) {
                c.ready = true;
                Transition::Ready
            } else if c.ready && !ok && c.failures >= t.failure.max(1) {
                c.ready = false;
                Transition::NotReady
            } else {
                Transition::None
            }
        }
        ProbeKind::Liveness => {
            if !ok && c.failures >= t.failure.max(1) {
                // The restart starts a new run; until it does, count again from zero so one
                // restart is asked for per `failure_threshold` failures.
                c.failures = 0;
                Transition::Restart
            } else {
                Transition::None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProbeKind::{Liveness, Readiness};
    use Transition::{NotReady, Ready, Restart};

    const N: Transition = Transition::None;

    /// (kind, failure, success, results as (gen, ok), transitions expected after each).
    #[test]
    fn thresholds_as_kubernetes() {
        type Case = (
            ProbeKind,
            u32,
            u32,
            &'static [(u64, bool)],
            &'static [Transition],
        );
        let table: &[Case] = &[
            // Readiness with success 1: ready at the first success.
            (Readiness, 3, 1, &[(1, true), (1, true)], &[Ready, N]),
            // Not ready until the first success, whatever fails before.
            (
                Readiness,
                1,
                1,
                &[(1, false), (1, false), (1, true)],
                &[N, N, Ready],
            ),
            // success_threshold 2: two in a row; a failure in between starts over.
            (
                Readiness,
                3,
                2,
                &[(1, true), (1, false), (1, true), (1, true)],
                &[N, N, N, Ready],
            ),
            // Ready, then failure_threshold 3 consecutive failures.
            (
                Readiness,
                3,
                1,
                &[
                    (1, true),
                    (1, false),
                    (1, false),
                    (1, true),
                    (1, false),
                    (1, false),
                    (1, false),
                ],
                &[Ready, N, N, N, N, N, NotReady],
            ),
            // Not ready again, then back after success_threshold.
            (
                Readiness,
                1,
                2,
                &[(1, true), (1, true), (1, false), (1, true), (1, true)],
                &[N, Ready, NotReady, N, Ready],
            ),
            // A restarted process (gen 2) starts over, not ready; gen 1's late result is ignored.
            (
                Readiness,
                1,
                1,
                &[(1, true), (2, false), (1, true), (2, true)],
                &[Ready, N, N, Ready],
            ),
            // Liveness: restart after failure_threshold consecutive failures, not before.
            (
                Liveness,
                3,
                1,
                &[
                    (1, false),
                    (1, false),
                    (1, true),
                    (1, false),
                    (1, false),
                    (1, false),
                ],
                &[N, N, N, N, N, Restart],
            ),
            // Liveness: after asking for a restart, three more failures of the same run ask again.
            (
                Liveness,
                1,
                1,
                &[(1, false), (1, false)],
                &[Restart, Restart],
            ),
            // Liveness: the new run's counters start at zero; the old run's failures are dropped.
            (
                Liveness,
                2,
                1,
                &[(1, false), (2, false), (1, false), (2, false)],
                &[N, N, N, Restart],
            ),
        ];
        for (i, (kind, failure, success, results, want)) in table.iter().enumerate() {
            let t = Thresholds {
                failure: *failure,
                success: *success,
            };
            let mut c = ProbeCounters::default();
            let got: Vec<Transition> = results
                .iter()
                .map(|(gen, ok)| on_result(*kind, t, &mut c, *gen, *ok))
                .collect();
            assert_eq!(&got, want, "case {i}: {kind:?} {results:?}");
        }
    }
}
