//! A bounded load generator: client threads sending GETs to 127.0.0.1:PORT, counting ok / failed /
//! refused requests and who answered (the `pid` of a JSON body, the `x-backend` header).

use crate::common::http::{Conn, Fail};
use crate::common::poll::wait_until;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How the load opens connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// HTTP/1.1 keep-alive: one connection per client thread, reopened only when the server says
    /// `Connection: close` or after an error.
    KeepAlive,
    /// A new connection per request (`Connection: close`).
    NewConn,
}

/// Upper bounds of every load: requests per client thread and wall time.
pub const MAX_REQUESTS_PER_CLIENT: usize = 20_000;
pub const MAX_LOAD_TIME: Duration = Duration::from_secs(25);
/// Pause between two requests of one client (keeps 2 cores usable for the daemon and workers).
pub const PACE: Duration = Duration::from_millis(1);

#[derive(Default)]
struct Stats {
    ok: AtomicUsize,
    refused: AtomicUsize,
    failed: Mutex<Vec<String>>,
    pids: Mutex<HashMap<i32, usize>>,
    backends: Mutex<HashMap<String, usize>>,
}

/// What a load saw in the end.
#[derive(Debug)]
pub struct Report {
    pub ok: usize,
    /// Connections refused (ECONNREFUSED): also counted in `failed`.
    pub refused: usize,
    /// Every failed request with its reason (refused, reset, closed without a response, status ≠ 200).
    pub failed: Vec<String>,
    /// Which pid answered how many requests.
    pub pids: HashMap<i32, usize>,
}

impl Report {
    /// One line for the test output (these numbers go into the issue notes).
    pub fn summary(&self, what: &str) -> String {
        format!(
            "{what}: ok={} failed={} refused={} pids={:?}",
            self.ok,
            self.failed.len(),
            self.refused,
            self.pids
        )
    }

    pub fn assert_no_failure(&self, what: &str) {
        eprintln!("{}", self.summary(what));
        assert!(
            self.failed.is_empty(),
            "{}; first failures: {:?}",
            self.summary(what),
            &self.failed[..self.failed.len().min(5)]
        );
    }
}

/// A running load: `clients` threads sending GET `path` to 127.0.0.1:`port` until `finish`
/// (or their bounds: [`MAX_REQUESTS_PER_CLIENT`], [`MAX_LOAD_TIME`]).
pub struct Load {
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    pub fn start(port: u16, mode: Mode, clients: usize) -> Load {
        Load::start_path(port, mode, clients, "/")
    }

    pub fn start_path(port: u16, mode: Mode, clients: usize, path: &str) -> Load {
        Load::start_paced(port, mode, clients, path, PACE)
    }

    /// [`Load::start_path`] with `pace` between two requests of one client (a light load).
    pub fn start_paced(port: u16, mode: Mode, clients: usize, path: &str, pace: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats::default());
        let threads = (0..clients)
            .map(|_| {
                let (stop, stats, path) = (stop.clone(), stats.clone(), path.to_string());
                std::thread::spawn(move || client(port, mode, &path, pace, &stop, &stats))
            })
            .collect();
        Load {
            stop,
            stats,
            threads,
        }
    }

    pub fn ok(&self) -> usize {
        self.stats.ok.load(Ordering::Relaxed)
    }

    pub fn failed(&self) -> usize {
        self.stats.failed.lock().map(|f| f.len()).unwrap_or(0)
    }

    /// Waits until `more` requests beyond the ones done now have succeeded (fails the test if not
    /// within `timeout`).
    pub fn wait_more(&self, more: usize, timeout: Duration) {
        let target = self.ok() + more;
        let ok = wait_until(timeout, || self.ok() >= target);
        assert!(
            ok,
            "the load did not get {more} more answers within {timeout:?} (ok={}, failed={})",
            self.ok(),
            self.failed()
        );
    }

    /// Waits until `pid` has answered at least one request.
    pub fn wait_pid(&self, pid: i32, timeout: Duration) {
        let ok = wait_until(timeout, || self.pids().contains_key(&pid));
        assert!(
            ok,
            "pid {pid} answered nothing within {timeout:?}; answered: {:?}",
            self.pids()
        );
    }

    /// Waits until backend `name` (its `x-backend` header) has answered `n` more requests than now.
    pub fn wait_backend(&self, name: &str, n: usize, timeout: Duration) {
        let target = self.backend(name) + n;
        let ok = wait_until(timeout, || self.backend(name) >= target);
        assert!(
            ok,
            "backend {name} did not answer {n} more requests within {timeout:?} (ok={}, failed={})",
            self.ok(),
            self.failed()
        );
    }

    pub fn pids(&self) -> HashMap<i32, usize> {
        self.stats
            .pids
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default()
    }

    /// How many requests backend `name` (its `x-backend` header) answered.
    pub fn backend(&self, name: &str) -> usize {
        self.stats
            .backends
            .lock()
            .map(|b| b.get(name).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Forgets which pids answered so far.
    pub fn clear_pids(&self) {
        if let Ok(mut p) = self.stats.pids.lock() {
            p.clear();
        }
    }

    /// Stops the clients and returns what they saw.
    pub fn finish(mut self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        Report {
            ok: self.ok(),
            refused: self.stats.refused.load(Ordering::Relaxed),
            failed: self
                .stats
                .failed
                .lock()
                .map(|f| f.clone())
                .unwrap_or_default(),
            pids: self.pids(),
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn client(port: u16, mode: Mode, path: &str, pace: Duration, stop: &AtomicBool, stats: &Stats) {
    let end = Instant::now() + MAX_LOAD_TIME;
    let keep_alive = mode == Mode::KeepAlive;
    let fail = |why: String| {
        if let Ok(mut f) = stats.failed.lock() {
            f.push(why);
        }
    };
    let mut conn: Option<Conn> = None;
    for _ in 0..MAX_REQUESTS_PER_CLIENT {
        if stop.load(Ordering::Relaxed) || Instant::now() > end {
            break;
        }
        let reused = conn.is_some();
        let mut c = match conn.take() {
            Some(c) => c,
            None => match Conn::open(port) {
                Ok(c) => c,
                Err(Fail::Refused) => {
                    stats.refused.fetch_add(1, Ordering::Relaxed);
                    fail("connect: connection refused".into());
                    std::thread::sleep(pace);
                    continue;
                }
                Err(Fail::Other(e)) => {
                    fail(e);
                    std::thread::sleep(pace);
                    continue;
                }
            },
        };
        match c.get(path, keep_alive) {
            Ok(r) if r.status == 200 => {
                stats.ok.fetch_add(1, Ordering::Relaxed);
                if let (Some(pid), Ok(mut p)) = (r.pid(), stats.pids.lock()) {
                    *p.entry(pid).or_default() += 1;
                }
                if let (Some(name), Ok(mut b)) = (r.header("x-backend"), stats.backends.lock()) {
                    *b.entry(name.to_string()).or_default() += 1;
                }
                if keep_alive && !r.closes() {
                    conn = Some(c);
                }
            }
            Ok(r) => fail(format!("status {}: {}", r.status, r.body)),
            Err(e) => fail(format!(
                "{}: {e}",
                if reused {
                    "on a kept-alive connection"
                } else {
                    "on a new connection"
                }
            )),
        }
        std::thread::sleep(pace);
    }
}
