//! The autoscaling policy, a pure function: what the app looks like now (workers, their
//! busyness, waiting connections, memory) and what the policy remembers (last change, spawn-rate
//! streak, time under the band, recent scale-downs) → add N workers, remove one, or hold, with a
//! reason that lists the inputs. No clock, no I/O: the actor (`autoscale.rs`) measures and acts.
//!
//! Prior art (docs/autoscaling.md): uWSGI's cheaper "busyness" algorithm (a band with hysteresis,
//! a penalty when a stopped worker had to come back soon, an emergency spawn on backlog) and
//! php-fpm's dynamic mode (a spawn rate that doubles while load stays high, up to a cap).

use std::collections::VecDeque;

/// The knobs, resolved for this machine (see `config::autoscale::Autoscale`).
#[derive(Clone, Debug)]
pub struct Knobs {
    pub min: u32,
    pub max: u32,
    pub up_busy: f64,
    pub down_busy: f64,
    pub down_after_ms: u64,
    pub cooldown_ms: u64,
    pub max_spawn_rate: u32,
    pub backlog: u32,
    pub max_memory: Option<u64>,
}

/// What the actor measured over the last interval.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    /// Monotonic time, ms.
    pub now_ms: u64,
    /// Workers that count (running or starting, not being removed).
    pub workers: u32,
    /// Of those, still starting (not ready yet): capacity on its way.
    pub starting: u32,
    /// A removed worker is still draining.
    pub draining: bool,
    /// Busyness (% of one core, 0–100) of each ready worker, averaged over the interval.
    pub busy: Vec<f64>,
    /// Connections waiting in the slots' accept queues (the highest reading of the interval).
    pub queued: u32,
    /// Requests in flight beyond one per worker, from the cohort balancers in front (None: none).
    pub excess_in_flight: Option<u32>,
    /// RSS of every worker, bytes.
    pub memory: u64,
}

/// What the policy remembers between decisions.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Memory {
    /// When the worker count last changed (by the policy).
    pub last_change_ms: Option<u64>,
    /// The step of the last scale-up while load stayed high (0: load was satisfied since).
    pub up_streak: u32,
    /// Since when busyness has been under the band (None: it is not).
    pub below_since_ms: Option<u64>,
    /// When workers were last removed (most recent last; a few kept).
    pub downs_ms: VecDeque<u64>,
    /// Penalty level: the wait before a scale-down is `down_after × 2^penalty`.
    pub penalty: u32,
    /// When the last scale-up happened.
    pub last_up_ms: Option<u64>,
}

/// What to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Up(u32),
    Down,
    Hold,
}

/// The highest penalty level (the wait before a scale-down grows to 16 × `down_after`).
pub const MAX_PENALTY: u32 = 4;
/// Scale-downs remembered.
const DOWNS_KEPT: usize = 8;

/// Decides; returns the decision, its reason (with the inputs) and the updated memory.
pub fn decide(k: &Knobs, i: &Inputs, m: &Memory) -> (Decision, String, Memory) {
    let mut m = m.clone();
    let avg = if i.busy.is_empty() {
        0.0
    } else {
        i.busy.iter().sum::<f64>() / i.busy.len() as f64
    };
    let waiting = i.queued + i.excess_in_flight.unwrap_or(0);
    let facts = facts(i, avg);
    let since_change = m.last_change_ms.map(|t| i.now_ms.saturating_sub(t));
    let cooling = since_change.is_some_and(|s| s < k.cooldown_ms);
    // A long calm forgives the penalty.
    if m.last_up_ms
        .is_some_and(|t| i.now_ms.saturating_sub(t) >= 10 * k.down_after_ms)
    {
        m.penalty = 0;
    }

    if i.workers < k.min {
        let n = k.min - i.workers;
        return up(k, i, m, n, format!("below min {}; {facts}", k.min));
    }
    if i.workers > k.max {
        return down(i, m, format!("above max {}; {facts}", k.max));
    }
    if i.draining {
        return (
            Decision::Hold,
            format!("hold: a removed worker is draining; {facts}"),
            m,
        );
    }
    let high = avg >= k.up_busy;
    let emergency = waiting >= k.backlog;
    if !high && !emergency {
        m.up_streak = 0;
    }
    if (high || emergency) && i.workers < k.max {
        m.below_since_ms = None;
        if i.starting > 0 {
            return (
                Decision::Hold,
                format!("hold: {} worker(s) starting; {facts}", i.starting),
                m,
            );
        }
        if cooling && !emergency {
            return (
                Decision::Hold,
                format!(
                    "hold: cooldown ({} of {} ms since the last change); {facts}",
                    since_change.unwrap_or(0),
                    k.cooldown_ms
                ),
                m,
            );
        }
        let rate = if m.up_streak == 0 {
            1
        } else {
            (m.up_streak * 2).min(k.max_spawn_rate)
        };
        let mut n = rate.min(k.max - i.workers).max(1);
        let mut why = if emergency {
            format!(
                "backlog: {waiting} waiting ≥ {} (emergency, spawn rate {rate})",
                k.backlog
            )
        } else {
            format!("busy {avg:.0}% ≥ {:.0}% (spawn rate {rate})", k.up_busy)
        };
        if let Some(ceiling) = k.max_memory {
            let per_worker = i.memory / u64::from(i.workers.max(1));
            let room = ceiling.saturating_sub(i.memory);
            let fit = room
                .checked_div(per_worker)
                .map_or(n, |k| k.min(u64::from(n)) as u32);
            if fit == 0 {
                return (
                    Decision::Hold,
                    format!(
                        "hold: {why}, but one more worker (~{} MB) would pass max_memory {} MB; {facts}",
                        per_worker >> 20,
                        ceiling >> 20
                    ),
                    m,
                );
            }
            if fit < n {
                why.push_str(&format!(
                    ", {n} cut to {fit} by max_memory {} MB",
                    ceiling >> 20
                ));
                n = fit;
            }
        }
        m.up_streak = n.max(rate);
        return up(k, i, m, n, format!("{why}; {facts}"));
    }
    if high || emergency {
        return (
            Decision::Hold,
            format!("hold: at max {}; {facts}", k.max),
            m,
        );
    }
    if avg < k.down_busy && waiting == 0 && i.workers > k.min && i.starting == 0 {
        let since = *m.below_since_ms.get_or_insert(i.now_ms);
        let wait = k.down_after_ms << m.penalty.min(MAX_PENALTY);
        let under = i.now_ms.saturating_sub(since);
        // Hysteresis: the load of the worker removed must fit under the band in the others.
        let projected = avg * f64::from(i.workers) / f64::from(i.workers - 1);
        if projected >= k.up_busy {
            return (
                Decision::Hold,
                format!(
                    "hold: one worker less would be {projected:.0}% busy, ≥ {:.0}%; {facts}",
                    k.up_busy
                ),
                m,
            );
        }
        if under < wait {
            return (
                Decision::Hold,
                format!(
                    "hold: under {:.0}% for {under} of {wait} ms{}; {facts}",
                    k.down_busy,
                    if m.penalty > 0 {
                        format!(" (penalty ×{})", 1u32 << m.penalty.min(MAX_PENALTY))
                    } else {
                        String::new()
                    }
                ),
                m,
            );
        }
        if cooling {
            return (Decision::Hold, format!("hold: cooldown; {facts}"), m);
        }
        m.below_since_ms = Some(i.now_ms);
        return down(
            i,
            m,
            format!(
                "busy {avg:.0}% < {:.0}% for {under} ms; {facts}",
                k.down_busy
            ),
        );
    }
    if avg >= k.down_busy || waiting > 0 {
        m.below_since_ms = None;
    }
    let why = if avg < k.down_busy && i.workers <= k.min {
        format!("at min {}", k.min)
    } else if avg < k.down_busy {
        "under the band, but something waits or starts".to_string()
    } else {
        "in the band".to_string()
    };
    (Decision::Hold, format!("hold: {why}; {facts}"), m)
}

/// A scale-up of `n`; a worker removed less than `down_after` ago that had to come back raises
/// the penalty (the next scale-down waits twice as long).
fn up(k: &Knobs, i: &Inputs, mut m: Memory, n: u32, why: String) -> (Decision, String, Memory) {
    let mut why = why;
    if m.downs_ms
        .back()
        .is_some_and(|d| i.now_ms.saturating_sub(*d) < k.down_after_ms)
    {
        m.penalty = (m.penalty + 1).min(MAX_PENALTY);
        why.push_str(&format!(
            "; a removed worker came back soon: penalty ×{}",
            1u32 << m.penalty
        ));
    }
    m.last_change_ms = Some(i.now_ms);
    m.last_up_ms = Some(i.now_ms);
    m.below_since_ms = None;
    (Decision::Up(n), format!("up {n}: {why}"), m)
}

fn down(i: &Inputs, mut m: Memory, why: String) -> (Decision, String, Memory) {
    m.last_change_ms = Some(i.now_ms);
    if m.downs_ms.len() == DOWNS_KEPT {
        m.downs_ms.pop_front();
    }
    m.downs_ms.push_back(i.now_ms);
    m.up_streak = 0;
    (Decision::Down, format!("down 1: {why}"), m)
}

/// The inputs, for the reason.
fn facts(i: &Inputs, avg: f64) -> String {
    let per: Vec<String> = i.busy.iter().map(|b| format!("{b:.0}")).collect();
    format!(
        "workers {} (starting {}), busy {avg:.0}% [{}], queued {}, in flight beyond workers {}, memory {} MB",
        i.workers,
        i.starting,
        per.join(" "),
        i.queued,
        i.excess_in_flight
            .map_or_else(|| "-".to_string(), |n| n.to_string()),
        i.memory >> 20
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn knobs() -> Knobs {
        Knobs {
            min: 1,
            max: 8,
            up_busy: 60.0,
            down_busy: 20.0,
            down_after_ms: 5_000,
            cooldown_ms: 2_000,
            max_spawn_rate: 4,
            backlog: 10,
            max_memory: None,
        }
    }

    fn at(now_ms: u64, workers: u32, busy: f64) -> Inputs {
        Inputs {
            now_ms,
            workers,
            busy: vec![busy; workers as usize],
            memory: u64::from(workers) * (100 << 20),
            ..Inputs::default()
        }
    }

    /// Runs a sequence of ticks from an empty memory, applying each decision to the worker count
    /// (new workers are ready at the next tick); returns the decisions.
    fn run(k: &Knobs, ticks: &[(u64, f64, u32)], start: u32) -> Vec<Decision> {
        let mut m = Memory::default();
        let mut workers = start;
        let mut out = Vec::new();
        for (now, busy_total, queued) in ticks {
            // The load is a total: spread over the workers.
            let mut i = at(*now, workers, busy_total / f64::from(workers));
            i.queued = *queued;
            let (d, why, next) = decide(k, &i, &m);
            assert!(why.contains("workers"), "{why}");
            m = next;
            match d {
                Decision::Up(n) => workers += n,
                Decision::Down => workers -= 1,
                Decision::Hold => {}
            }
            out.push(d);
        }
        out
    }

    #[test]
    fn single_decisions() {
        let k = knobs();
        let m = Memory::default();
        let mut starting = at(10_000, 2, 90.0);
        starting.starting = 1;
        let mut backlog = at(10_000, 1, 5.0);
        backlog.queued = 12;
        let mut behind_balancer = at(10_000, 1, 5.0);
        behind_balancer.excess_in_flight = Some(10);
        let cooling = Memory {
            last_change_ms: Some(9_000),
            ..Memory::default()
        };
        let mut draining = at(10_000, 2, 90.0);
        draining.draining = true;
        let cases: Vec<(&str, Inputs, Memory, Knobs, Decision)> = vec![
            (
                "idle at min",
                at(10_000, 1, 0.0),
                m.clone(),
                k.clone(),
                Decision::Hold,
            ),
            (
                "busy: one more",
                at(10_000, 1, 90.0),
                m.clone(),
                k.clone(),
                Decision::Up(1),
            ),
            (
                "in the band",
                at(10_000, 2, 40.0),
                m.clone(),
                k.clone(),
                Decision::Hold,
            ),
            (
                "busy but starting",
                starting,
                m.clone(),
                k.clone(),
                Decision::Hold,
            ),
            (
                "backlog, emergency",
                backlog.clone(),
                cooling.clone(),
                k.clone(),
                Decision::Up(1),
            ),
            (
                "in flight behind a balancer",
                behind_balancer,
                m.clone(),
                k.clone(),
                Decision::Up(1),
            ),
            (
                "busy, cooling down",
                at(10_000, 1, 90.0),
                cooling.clone(),
                k.clone(),
                Decision::Hold,
            ),
            (
                "below min",
                at(10_000, 0, 0.0),
                m.clone(),
                Knobs {
                    min: 2,
                    ..k.clone()
                },
                Decision::Up(2),
            ),
            (
                "above max",
                at(10_000, 9, 90.0),
                m.clone(),
                k.clone(),
                Decision::Down,
            ),
            (
                "at max",
                at(10_000, 8, 99.0),
                m.clone(),
                k.clone(),
                Decision::Hold,
            ),
            ("draining", draining, m.clone(), k.clone(), Decision::Hold),
            (
                "memory ceiling",
                at(10_000, 2, 90.0),
                m.clone(),
                Knobs {
                    max_memory: Some(250 << 20),
                    ..k.clone()
                },
                Decision::Hold,
            ),
            (
                "memory room for one",
                at(10_000, 2, 90.0),
                Memory {
                    up_streak: 2,
                    ..m.clone()
                },
                Knobs {
                    max_memory: Some(320 << 20),
                    ..k.clone()
                },
                Decision::Up(1),
            ),
            (
                "max clamps the step",
                at(10_000, 7, 90.0),
                Memory {
                    up_streak: 4,
                    ..m.clone()
                },
                k.clone(),
                Decision::Up(1),
            ),
        ];
        for (what, i, m, k, want) in cases {
            let (d, why, _) = decide(&k, &i, &m);
            assert_eq!(d, want, "{what}: {why}");
        }
    }

    #[test]
    fn spawn_rate_doubles_while_load_stays_high_and_resets() {
        let k = knobs();
        // 1 s ticks, cooldown 2 s: ups at 0, 2, 4, 6 s while the total load stays far above.
        let ticks: Vec<(u64, f64, u32)> = (0..8).map(|s| (s * 1000, 2000.0, 0)).collect();
        let got = run(&k, &ticks, 1);
        let ups: Vec<u32> = got
            .iter()
            .filter_map(|d| match d {
                Decision::Up(n) => Some(*n),
                _ => None,
            })
            .collect();
        assert_eq!(ups, vec![1, 2, 4], "{got:?}");
        // A satisfied tick resets the rate.
        let mut m = Memory {
            up_streak: 4,
            ..Memory::default()
        };
        m = decide(&k, &at(0, 2, 40.0), &m).2;
        assert_eq!(m.up_streak, 0);
        assert_eq!(decide(&k, &at(5_000, 2, 90.0), &m).0, Decision::Up(1));
    }

    #[test]
    fn backlog_steps_up_within_one_tick_even_cooling() {
        let k = knobs();
        let m = Memory {
            last_change_ms: Some(999),
            ..Memory::default()
        };
        let mut i = at(1_000, 1, 10.0);
        i.queued = 40;
        let (d, why, _) = decide(&k, &i, &m);
        assert_eq!(d, Decision::Up(1), "{why}");
        assert!(why.contains("backlog: 40 waiting"), "{why}");
    }

    #[test]
    fn band_hysteresis_does_not_flap_around_a_threshold() {
        let k = knobs();
        // A total load of 110% of a core: 1 worker is at 110 (up), 2 workers at 55% (in the
        // band, just under up_busy): hold for good, never back down (one less would be 110%).
        let ticks: Vec<(u64, f64, u32)> = (0..60).map(|s| (s * 1000, 110.0, 0)).collect();
        let got = run(&k, &ticks, 1);
        let changes = got.iter().filter(|d| **d != Decision::Hold).count();
        assert_eq!(changes, 1, "{got:?}");
        // 38% total over 2 workers is 19% each, under the band, but one worker alone would be
        // 38%: fine, it goes down once after down_after and stays there.
        let ticks: Vec<(u64, f64, u32)> = (0..30).map(|s| (s * 1000, 38.0, 0)).collect();
        let got = run(&k, &ticks, 2);
        assert_eq!(
            got.iter().filter(|d| **d == Decision::Down).count(),
            1,
            "{got:?}"
        );
        assert_eq!(
            got.iter().filter(|d| matches!(d, Decision::Up(_))).count(),
            0
        );
        // Load wobbling around up_busy with 2 workers (50–70% total each tick): cooldown and the
        // band keep the count to at most one change.
        let ticks: Vec<(u64, f64, u32)> = (0..30)
            .map(|s| (s * 1000, if s % 2 == 0 { 100.0 } else { 140.0 }, 0))
            .collect();
        let got = run(&k, &ticks, 2);
        assert!(
            got.iter().filter(|d| **d != Decision::Hold).count() <= 1,
            "{got:?}"
        );
    }

    #[test]
    fn scale_down_waits_down_after_and_goes_one_at_a_time() {
        let k = knobs();
        let ticks: Vec<(u64, f64, u32)> = (0..20).map(|s| (s * 1000, 0.0, 0)).collect();
        let got = run(&k, &ticks, 3);
        let downs: Vec<usize> = got
            .iter()
            .enumerate()
            .filter(|(_, d)| **d == Decision::Down)
            .map(|(t, _)| t)
            .collect();
        // Under the band from t=0: down at 5 s, then 5 s later again; then at min.
        assert_eq!(downs, vec![5, 10], "{got:?}");
        // A busy tick in between restarts the wait.
        let mut m = Memory::default();
        m = decide(&k, &at(0, 2, 5.0), &m).2;
        m = decide(&k, &at(3_000, 2, 40.0), &m).2;
        assert_eq!(m.below_since_ms, None);
        assert_eq!(decide(&k, &at(6_000, 2, 5.0), &m).0, Decision::Hold);
    }

    #[test]
    fn a_worker_that_had_to_come_back_soon_doubles_the_next_wait() {
        let k = knobs();
        let mut m = Memory::default();
        m = decide(&k, &at(0, 2, 5.0), &m).2;
        let (d, _, next) = decide(&k, &at(5_000, 2, 5.0), &m);
        assert_eq!(d, Decision::Down);
        m = next;
        // Load comes back 2 s after the removal: up, with a penalty.
        let (d, why, next) = decide(&k, &at(7_000, 1, 90.0), &m);
        assert_eq!(d, Decision::Up(1));
        assert!(why.contains("penalty ×2"), "{why}");
        m = next;
        assert_eq!(m.penalty, 1);
        // The next scale-down waits 10 s, not 5.
        m = decide(&k, &at(10_000, 2, 5.0), &m).2;
        assert_eq!(decide(&k, &at(15_000, 2, 5.0), &m).0, Decision::Hold);
        let (d, why, _) = decide(&k, &at(20_000, 2, 5.0), &m);
        assert_eq!(d, Decision::Down, "{why}");
        // A long calm forgives it.
        let calm = decide(&k, &at(7_000 + 10 * 5_000, 1, 5.0), &m).2;
        assert_eq!(calm.penalty, 0);
    }

    #[test]
    fn min_and_max_clamp() {
        let k = Knobs {
            min: 2,
            max: 3,
            ..knobs()
        };
        let ticks: Vec<(u64, f64, u32)> = (0..40).map(|s| (s * 1000, 1000.0, 50)).collect();
        let got = run(&k, &ticks, 2);
        assert_eq!(
            got.iter().filter(|d| matches!(d, Decision::Up(_))).count(),
            1,
            "{got:?}"
        );
        let ticks: Vec<(u64, f64, u32)> = (0..60).map(|s| (s * 1000, 0.0, 0)).collect();
        let got = run(&k, &ticks, 3);
        assert_eq!(
            got.iter().filter(|d| **d == Decision::Down).count(),
            1,
            "{got:?}"
        );
    }
}
