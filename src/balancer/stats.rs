//! Traffic figures of a balancer, HAProxy's exporter as the model: responses by status class
//! (per upstream, and for the balancer as a whole, its own answers included), a response-time
//! histogram per upstream, retries, connection and response errors, and how many requests had to
//! wait in the connection-cap queue. Read by the admin `/status`.
//!
//! The request path reads the clock once and adds to three relaxed atomics of the current
//! worker's shard of its upstream (one shard per worker runtime, cache-line aligned, summed when
//! read): no lock, no allocation, no line that two workers write on every request. Rare events
//! (the balancer's own answers, errors, retries, queueing) are plain shared atomics. Classifying a status and bucketing a duration are pure, table-tested functions.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use super::worker;

/// Status classes, in the order of the counters (HAProxy's `code` label values).
pub const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

/// Upper bounds of the response-time buckets, in microseconds (Prometheus's default buckets
/// from 5 ms to 10 s, with 0.5, 1 and 2.5 ms added below them: a proxy on one host answers in
/// well under 5 ms). The last bucket, `+Inf`, is implicit.
pub const BUCKETS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// Buckets including `+Inf`.
pub const NBUCKETS: usize = BUCKETS_US.len() + 1;

/// The class index (into [`CLASSES`]) of an HTTP status.
pub fn class_of(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        500..=599 => 4,
        _ => 5,
    }
}

/// The bucket index of a duration in microseconds: the first bound it does not exceed
/// (Prometheus's `le`), or the `+Inf` bucket.
pub fn bucket_of(micros: u64) -> usize {
    BUCKETS_US
        .iter()
        .position(|&b| micros <= b)
        .unwrap_or(BUCKETS_US.len())
}

#[repr(align(64))]
#[derive(Default)]
struct TimeShard {
    responses: [AtomicU64; 6],
    buckets: [AtomicU64; NBUCKETS],
    sum_us: AtomicU64,
}

/// The current worker's shard (the runtimes are numbered from 0, one shard each; no division).
#[inline]
fn shard<T>(shards: &[T]) -> &T {
    shards.get(worker::current()).unwrap_or(&shards[0])
}

fn sum_classes<'a>(it: impl Iterator<Item = &'a [AtomicU64; 6]>) -> [u64; 6] {
    let mut out = [0u64; 6];
    for a in it {
        for (o, c) in out.iter_mut().zip(a) {
            *o += c.load(Relaxed);
        }
    }
    out
}

/// The balancer's own answers by class (502/503/504 when no upstream answered, 400/408/431 for
/// refused requests). What the balancer sent its clients is these plus its upstreams' responses:
/// a proxied response is counted once, under its upstream, so the request path adds to one shard
/// only. (The one response counted twice: an upstream's whose chunked body broke before anything
/// reached the client, which the client gets as a 502 — under its upstream's class and here.)
#[derive(Default)]
pub struct BalancerStats {
    own: [AtomicU64; 6],
}

impl BalancerStats {
    /// Counts one answer of the balancer's own.
    pub fn own_answer(&self, status: u16) {
        self.own[class_of(status)].fetch_add(1, Relaxed);
    }

    /// Its own answers by class (in the order of [`CLASSES`]).
    pub fn own_answers(&self) -> [u64; 6] {
        sum_classes(std::iter::once(&self.own))
    }
}

/// One upstream's figures.
pub struct UpstreamStats {
    shards: Box<[TimeShard]>,
    /// Attempts made again after this upstream failed (on another upstream, or on a fresh
    /// connection after a pooled one had closed).
    retries: AtomicU64,
    /// Connections that could not be made (refused, unreachable, connect timeout).
    connect_errors: AtomicU64,
    /// Requests that had to wait in the queue for a connection to it.
    queued: AtomicU64,
}

/// A response-time histogram, summed over shards; `buckets` are not cumulative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Histogram {
    pub buckets: [u64; NBUCKETS],
    pub sum_us: u64,
}

impl Histogram {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

impl UpstreamStats {
    pub fn new(workers: usize) -> UpstreamStats {
        UpstreamStats {
            shards: (0..workers.max(1)).map(|_| TimeShard::default()).collect(),
            retries: AtomicU64::new(0),
            connect_errors: AtomicU64::new(0),
            queued: AtomicU64::new(0),
        }
    }

    /// Counts a response head received from the upstream `took` after its attempt started
    /// (queue wait and connect included).
    #[inline]
    pub fn response(&self, status: u16, took: Duration) {
        let s = shard(&self.shards);
        let us = took.as_micros().min(u64::MAX as u128) as u64;
        s.responses[class_of(status)].fetch_add(1, Relaxed);
        s.buckets[bucket_of(us)].fetch_add(1, Relaxed);
        s.sum_us.fetch_add(us, Relaxed);
    }

    pub fn retried(&self) {
        self.retries.fetch_add(1, Relaxed);
    }

    pub fn connect_failed(&self) {
        self.connect_errors.fetch_add(1, Relaxed);
    }

    pub fn queued(&self) {
        self.queued.fetch_add(1, Relaxed);
    }

    /// Responses by class (in the order of [`CLASSES`]).
    pub fn responses(&self) -> [u64; 6] {
        sum_classes(self.shards.iter().map(|s| &s.responses))
    }

    pub fn histogram(&self) -> Histogram {
        let mut h = Histogram::default();
        for s in self.shards.iter() {
            for (o, b) in h.buckets.iter_mut().zip(&s.buckets) {
                *o += b.load(Relaxed);
            }
            h.sum_us += s.sum_us.load(Relaxed);
        }
        h
    }

    pub fn retries(&self) -> u64 {
        self.retries.load(Relaxed)
    }

    pub fn connect_errors(&self) -> u64 {
        self.connect_errors.load(Relaxed)
    }

    pub fn queued_total(&self) -> u64 {
        self.queued.load(Relaxed)
    }
}

/// The `q` quantile (0..=1) estimated from a histogram as Prometheus's `histogram_quantile` does
/// (linear within the bucket; the `+Inf` bucket answers its lower bound), in seconds; None
/// without observations.
pub fn quantile(buckets_us: &[u64], counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut below = 0u64;
    for (i, &n) in counts.iter().enumerate() {
        if n > 0 && (below + n) as f64 >= rank {
            let lower = if i == 0 { 0 } else { buckets_us[i - 1] };
            let Some(&upper) = buckets_us.get(i) else {
                return Some(lower as f64 / 1e6);
            };
            let within = (rank - below as f64) / n as f64;
            return Some((lower as f64 + (upper - lower) as f64 * within) / 1e6);
        }
        below += n;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_fall_in_their_class() {
        let cases: [(u16, &str); 12] = [
            (100, "1xx"),
            (101, "1xx"),
            (200, "2xx"),
            (204, "2xx"),
            (299, "2xx"),
            (301, "3xx"),
            (404, "4xx"),
            (431, "4xx"),
            (500, "5xx"),
            (599, "5xx"),
            (600, "other"),
            (99, "other"),
        ];
        for (status, class) in cases {
            assert_eq!(CLASSES[class_of(status)], class, "{status}");
        }
    }

    #[test]
    fn durations_fall_in_the_first_bucket_they_do_not_exceed() {
        // (microseconds, the bucket's `le` in seconds)
        let cases: [(u64, &str); 10] = [
            (0, "0.0005"),
            (500, "0.0005"),
            (501, "0.001"),
            (1_000, "0.001"),
            (4_999, "0.005"),
            (99_000, "0.1"),
            (1_000_000, "1"),
            (10_000_000, "10"),
            (10_000_001, "+Inf"),
            (u64::MAX, "+Inf"),
        ];
        let le = |i: usize| match BUCKETS_US.get(i) {
            Some(b) => (*b as f64 / 1e6).to_string(),
            None => "+Inf".to_string(),
        };
        for (us, want) in cases {
            assert_eq!(le(bucket_of(us)), want, "{us} µs");
        }
    }

    #[test]
    fn observations_land_in_counts_buckets_and_sum() {
        let s = UpstreamStats::new(2);
        s.response(200, Duration::from_micros(300));
        s.response(200, Duration::from_millis(3));
        s.response(503, Duration::from_secs(20));
        let h = s.histogram();
        assert_eq!(h.count(), 3);
        assert_eq!(h.buckets[0], 1);
        assert_eq!(h.buckets[bucket_of(3_000)], 1);
        assert_eq!(h.buckets[NBUCKETS - 1], 1);
        assert_eq!(h.sum_us, 300 + 3_000 + 20_000_000);
        assert_eq!(s.responses(), [0, 2, 0, 0, 1, 0]);
    }

    #[test]
    fn quantiles_from_buckets() {
        let b = [1_000u64, 2_000, 4_000];
        // (counts incl. +Inf, q, expected seconds)
        let cases: [(&[u64], f64, Option<f64>); 6] = [
            (&[0, 0, 0, 0], 0.5, None),
            (&[10, 0, 0, 0], 0.5, Some(0.0005)),
            (&[0, 10, 0, 0], 0.5, Some(0.0015)),
            (&[5, 5, 0, 0], 0.5, Some(0.001)),
            (&[0, 0, 10, 0], 0.99, Some(0.00398)),
            (&[0, 0, 0, 4], 0.5, Some(0.004)),
        ];
        for (counts, q, want) in cases {
            let got = quantile(&b, counts, q);
            match (got, want) {
                (None, None) => {}
                (Some(g), Some(w)) => assert!((g - w).abs() < 1e-9, "{counts:?} q{q}: {g}"),
                _ => panic!("{counts:?} q{q}: {got:?}, want {want:?}"),
            }
        }
    }
}
