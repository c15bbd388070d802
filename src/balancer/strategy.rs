//! Upstream selection strategies: smooth weighted round robin (NGINX's algorithm), least connections
//! (weighted), random with two choices, and consistent hashing on a ring of virtual nodes.
//! Every strategy skips upstreams that are down or already tried for this request. Also the `hash`
//! strategy's keys (client IP, cookie). Selection sees the upstreams through [`Members`] only, so it
//! does not depend on how their state is kept (`pool.rs`).

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

use crate::config::balancer::Strategy;

/// What selection needs to know of the upstreams, by index `0..len()`.
pub trait Members {
    fn len(&self) -> usize;
    /// May receive traffic now.
    fn is_up(&self, i: usize) -> bool;
    fn weight(&self, i: usize) -> u32;
    /// Requests (or tunnels) in flight.
    fn active(&self, i: usize) -> usize;
}

/// Virtual nodes per unit of weight on the hash ring.
const VNODES_PER_WEIGHT: u32 = 160;

/// State written on every pick sits alone on its cache line, so that the workers' writes do not
/// also evict what they read on every request (the pool's upstream list).
#[repr(align(64))]
pub struct Padded<T>(T);

pub enum Selector {
    /// Smooth weighted round robin: per-upstream current weights.
    RoundRobin(Padded<Mutex<Vec<i64>>>),
    /// Round robin when all weights are equal: a lock-free counter.
    Rotate(Padded<AtomicUsize>),
    /// Least active requests relative to weight; ties rotate from a moving start.
    LeastConn(Padded<AtomicUsize>),
    /// Two random upstreams, the less loaded wins.
    Random,
    /// Sorted ring of (point, upstream index).
    Hash(Vec<(u64, usize)>),
}

impl Selector {
    pub fn new(strategy: Strategy, weights: &[u32], labels: &[String]) -> Selector {
        match strategy {
            Strategy::RoundRobin if weights.windows(2).all(|w| w[0] == w[1]) => {
                Selector::Rotate(Padded(AtomicUsize::new(0)))
            }
            Strategy::RoundRobin => {
                Selector::RoundRobin(Padded(Mutex::new(vec![0; weights.len()])))
            }
            Strategy::LeastConn => Selector::LeastConn(Padded(AtomicUsize::new(0))),
            Strategy::Random => Selector::Random,
            Strategy::Hash => {
                let mut ring = Vec::new();
                for (i, (w, label)) in weights.iter().zip(labels).enumerate() {
                    for v in 0..w * VNODES_PER_WEIGHT {
                        let point = xxhash_rust::xxh3::xxh3_64(format!("{label}#{v}").as_bytes());
                        ring.push((point, i));
                    }
                }
                ring.sort_unstable();
                Selector::Hash(ring)
            }
        }
    }

    /// Picks an upstream that is up and not in `tried`; `key` is the hash key for `hash`.
    pub fn pick<M: Members>(&self, pool: &M, key: u64, tried: &[usize]) -> Option<usize> {
        let n = pool.len();
        let eligible = |i: usize| !tried.contains(&i) && pool.is_up(i);
        match self {
            Selector::RoundRobin(current) => {
                // NGINX's smooth weighted round robin: add each weight to its current value, pick the
                // largest, subtract the total from the winner. Exact rotation for equal weights and
                // an even interleaving for unequal ones.
                let mut cw = current.0.lock().unwrap_or_else(|e| e.into_inner());
                let mut total = 0i64;
                let mut best: Option<usize> = None;
                for i in 0..n {
                    if !eligible(i) {
                        continue;
                    }
                    let w = pool.weight(i) as i64;
                    cw[i] += w;
                    total += w;
                    if best.is_none_or(|b| cw[i] > cw[b]) {
                        best = Some(i);
                    }
                }
                if let Some(b) = best {
                    cw[b] -= total;
                }
                best
            }
            Selector::Rotate(next) => {
                // The (s mod m)-th of the m eligible upstreams: an even split even when some are out.
                let m = (0..n).filter(|&i| eligible(i)).count();
                if m == 0 {
                    return None;
                }
                let s = next.0.fetch_add(1, Relaxed) % m;
                (0..n).filter(|&i| eligible(i)).nth(s)
            }
            Selector::LeastConn(start) => {
                let s = start.0.fetch_add(1, Relaxed);
                let mut best: Option<(usize, u64)> = None;
                for k in 0..n {
                    let i = (s + k) % n;
                    if !eligible(i) {
                        continue;
                    }
                    // active/weight in fixed point (x1000), no floats.
                    let load = (pool.active(i) as u64 * 1000) / pool.weight(i) as u64;
                    if best.is_none_or(|(_, l)| load < l) {
                        best = Some((i, load));
                    }
                }
                best.map(|(i, _)| i)
            }
            Selector::Random => {
                let up: Vec<usize> = (0..n).filter(|&i| eligible(i)).collect();
                match up.len() {
                    0 => None,
                    1 => Some(up[0]),
                    len => {
                        let a = up[fastrand::usize(..len)];
                        let mut b = up[fastrand::usize(..len - 1)];
                        if b == a {
                            b = up[len - 1];
                        }
                        let load =
                            |i: usize| (pool.active(i) as u64 * 1000) / pool.weight(i) as u64;
                        Some(if load(b) < load(a) { b } else { a })
                    }
                }
            }
            Selector::Hash(ring) => {
                if ring.is_empty() {
                    return None;
                }
                let start = ring.partition_point(|(p, _)| *p < key);
                for k in 0..ring.len() {
                    let (_, i) = ring[(start + k) % ring.len()];
                    if eligible(i) {
                        return Some(i);
                    }
                    if k > 4 * n * VNODES_PER_WEIGHT as usize {
                        break;
                    }
                }
                (0..n).find(|&i| eligible(i))
            }
        }
    }
}

/// The `hash` strategy's key for a client address (`hash_key = "ip"`, and the fallback when the
/// header or cookie named by `hash_key` is missing).
pub fn ip_key(ip: std::net::IpAddr) -> u64 {
    match ip {
        std::net::IpAddr::V4(a) => xxhash_rust::xxh3::xxh3_64(&a.octets()),
        std::net::IpAddr::V6(a) => xxhash_rust::xxh3::xxh3_64(&a.octets()),
    }
}

/// The value of cookie `name` in a Cookie header value (`hash_key = "cookie:NAME"`).
pub fn cookie_value<'a>(header: &'a [u8], name: &str) -> Option<&'a [u8]> {
    header.split(|b| *b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|b| *b == b'=')?;
        (&pair[..eq] == name.as_bytes()).then(|| &pair[eq + 1..])
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn cookie_lookup() {
        assert_eq!(
            super::cookie_value(b"a=1; sid=xyz; b=2", "sid"),
            Some(&b"xyz"[..])
        );
        assert_eq!(super::cookie_value(b"a=1", "sid"), None);
    }

    use super::super::pool::Pool;
    use super::*;
    use std::time::Duration;

    fn pool(strategy: Strategy, weights: &[u32]) -> Pool {
        let labels: Vec<String> = (0..weights.len())
            .map(|i| format!("127.0.0.1:{}", 1000 + i))
            .collect();
        let members = labels
            .iter()
            .zip(weights)
            .map(|(l, w)| (l.clone(), l.parse().unwrap(), *w))
            .collect();
        Pool::new(
            members,
            Selector::new(strategy, weights, &labels),
            Duration::from_secs(10),
            false,
            1,
        )
    }

    #[test]
    fn smooth_weighted_round_robin_matches_nginx() {
        let p = pool(Strategy::RoundRobin, &[5, 1, 1]);
        let seq: Vec<usize> = (0..7).map(|_| p.pick(0, &[]).unwrap()).collect();
        assert_eq!(seq, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn round_robin_skips_tried_and_down() {
        let p = pool(Strategy::RoundRobin, &[1, 1, 1]);
        p.mark_failed(1);
        let seq: Vec<usize> = (0..4).map(|_| p.pick(0, &[]).unwrap()).collect();
        assert_eq!(seq, vec![0, 2, 0, 2]);
        assert_eq!(p.pick(0, &[0, 2]), None);
    }

    #[test]
    fn hash_is_stable_and_moves_little() {
        let p = pool(Strategy::Hash, &[1, 1, 1, 1]);
        let keys: Vec<u64> = (0..1000u64)
            .map(|k| xxhash_rust::xxh3::xxh3_64(&k.to_le_bytes()))
            .collect();
        let before: Vec<usize> = keys.iter().map(|k| p.pick(*k, &[]).unwrap()).collect();
        assert_eq!(
            before,
            keys.iter()
                .map(|k| p.pick(*k, &[]).unwrap())
                .collect::<Vec<_>>()
        );
        p.mark_failed(2);
        let moved = keys
            .iter()
            .zip(&before)
            .filter(|(k, b)| **b != 2 && p.pick(**k, &[]).unwrap() != **b)
            .count();
        assert_eq!(moved, 0, "keys of healthy upstreams must not move");
        for i in 0..4 {
            assert!(
                before.iter().filter(|b| **b == i).count() > 150,
                "uneven ring"
            );
        }
    }

    #[test]
    fn random_two_choices_prefers_the_less_loaded() {
        let p = pool(Strategy::Random, &[1, 1]);
        p.upstreams[1].set_active(5);
        for _ in 0..50 {
            assert_eq!(p.pick(0, &[]), Some(0));
        }
        let p = pool(Strategy::Random, &[1, 1, 1, 1]);
        let mut seen = [0; 4];
        for _ in 0..400 {
            seen[p.pick(0, &[]).unwrap()] += 1;
        }
        assert!(seen.iter().all(|&n| n > 40), "uneven: {seen:?}");
    }

    #[test]
    fn least_conn_prefers_idle() {
        let p = pool(Strategy::LeastConn, &[1, 1]);
        p.upstreams[0].set_active(3);
        for _ in 0..4 {
            assert_eq!(p.pick(0, &[]), Some(1));
        }
    }
}
