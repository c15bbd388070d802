//! Horizontal scaling across machines, for real: three "hosts" built from network namespaces on one
//! bridge. Hosts A and B each run their own cohort (own COHORT_HOME, daemon started inside the
//! namespace) with a Node app in cluster mode; host C runs a cohort balancer from a config file
//! over both, with active health checks and retries. Under bounded load from C, A's app is stopped
//! and A's whole cohort killed: no request may fail except one already in flight at the stop,
//! traffic must move to B and C's `describe` must show A down; then A comes back and traffic
//! returns to both.
//!
//! Needs root (`ip netns add`) and iproute2 (scripts/setup installs it); where either is missing
//! the test fails saying so.
//! Addresses (10.231.7.0/24) exist only inside the namespaces this test creates; nothing is routed
//! elsewhere. A guard deletes the namespaces and kills whatever still runs in them, pass or fail.

mod common;
use common::*;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The hosts' addresses: C (balancer) owns the bridge at .1, A is .11, B is .12.
const ADDR_C: &str = "10.231.7.1";
const ADDR_A: &str = "10.231.7.11";
const ADDR_B: &str = "10.231.7.12";
/// Where each host's app listens (any port is free in a fresh namespace).
const APP_PORT: u16 = 3000;
/// The balancer's listen port (tests/fixtures/netns/balancer.toml).
const EDGE_PORT: u16 = 8080;
/// The balancer's active health-check interval (balancer.toml).
const HEALTH_INTERVAL: Duration = Duration::from_millis(200);

/// Runs `ip ARGS`; Err(stderr) when it fails.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Network namespaces this test created; dropping it kills every process still inside them and
/// deletes them.
struct Netns {
    names: Vec<String>,
}

impl Netns {
    /// Adds namespace `name`; the error says what the machine lacks.
    fn add(&mut self, name: &str) -> Result<(), String> {
        let out = Command::new("ip")
            .args(["netns", "add", name])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("needs iproute2's `ip` ({e}): scripts/setup installs it"))?;
        if out.status.success() {
            self.names.push(name.to_string());
            return Ok(());
        }
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if err.contains("Operation not permitted") || err.contains("Permission denied") {
            return Err(format!(
                "needs root with network namespaces allowed (run the suite as root): ip netns add {name}: {err}"
            ));
        }
        Err(format!("ip netns add {name} failed: {err}"))
    }

    /// The pids of the processes inside namespace `name`.
    fn pids(name: &str) -> Vec<i32> {
        Command::new("ip")
            .args(["netns", "pids", name])
            .stdin(Stdio::null())
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for name in &self.names {
            // Everything in the namespace was started by this test (its daemons, apps, load).
            wait_until(Duration::from_secs(5), || {
                let pids = Netns::pids(name);
                for pid in &pids {
                    // SAFETY: plain kill(2) on a process inside a namespace this test created.
                    unsafe {
                        libc::kill(*pid, libc::SIGKILL);
                    }
                }
                pids.iter().all(|p| !alive(*p))
            });
            if let Err(e) = ip(&["netns", "delete", name]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

/// Builds the three hosts: C holds a bridge with A's and B's veth peers; lo up everywhere.
fn topology(a: &str, b: &str, c: &str) -> Result<Netns, String> {
    let mut net = Netns { names: Vec::new() };
    for name in [a, b, c] {
        net.add(name)?;
    }
    ip(&["-n", c, "link", "add", "br0", "type", "bridge"])?;
    for (ns, peer, addr) in [(a, "va", ADDR_A), (b, "vb", ADDR_B)] {
        // Created directly in the namespaces: nothing ever appears in the test's own namespace.
        ip(&[
            "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", peer, "netns", c,
        ])?;
        ip(&["-n", c, "link", "set", peer, "master", "br0"])?;
        ip(&["-n", c, "link", "set", peer, "up"])?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", ns, "link", "set", "eth0", "up"])?;
    }
    ip(&[
        "-n",
        c,
        "addr",
        "add",
        &format!("{ADDR_C}/24"),
        "dev",
        "br0",
    ])?;
    ip(&["-n", c, "link", "set", "br0", "up"])?;
    for ns in [a, b, c] {
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
    }
    Ok(net)
}

/// `cohort ARGS` for home `c`, run inside namespace `ns` (a daemon it starts lives there too).
fn ns_cmd(c: &Cohort, ns: &str, args: &[&str]) -> Out {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, BIN])
        .args(args)
        .env("COHORT_HOME", &c.home)
        .env_remove("COHORT_CLIENT_TIMEOUT_MS")
        .current_dir(&c.work)
        .stdin(Stdio::null());
    c.run(cmd)
}

fn ns_ok(c: &Cohort, ns: &str, args: &[&str]) -> Out {
    let o = ns_cmd(c, ns, args);
    assert!(
        o.success(),
        "[{ns}] cohort {args:?} failed ({}):\n{}{}",
        o.status,
        o.stdout,
        o.stderr
    );
    o
}

/// `cohort ls --json` inside `ns` (never outside: that would start a daemon in the test's own
/// namespace); every pid is remembered for cleanup.
fn ns_ls(c: &Cohort, ns: &str) -> Vec<serde_json::Value> {
    let o = ns_ok(c, ns, &["ls", "--json"]);
    let list: Vec<serde_json::Value> = serde_json::from_str(o.stdout.trim())
        .unwrap_or_else(|e| panic!("ls --json printed invalid JSON ({e}): {}", o.stdout));
    for p in &list {
        if let Some(pid) = p["pid"].as_i64() {
            c.track(pid as i32);
        }
    }
    list
}

/// Waits until app `name` in `ns` has `n` processes, all online with a pid.
fn wait_online(c: &Cohort, ns: &str, name: &str, n: usize, timeout: Duration) {
    let mut last = Vec::new();
    let ok = wait_until(timeout, || {
        last = ns_ls(c, ns)
            .into_iter()
            .filter(|p| p["name"] == name)
            .collect();
        last.len() == n
            && last
                .iter()
                .all(|p| p["status"] == "online" && p["pid"].is_i64())
    });
    assert!(
        ok,
        "[{ns}] {name} not {n}× online within {timeout:?}: {last:?}"
    );
}

/// One upstream line of `cohort describe edge`:
/// `10.231.7.11:3000  down  weight 1  requests 52  errors 1  active 0`.
#[derive(Debug)]
struct Upstream {
    addr: String,
    state: String,
    requests: u64,
}

/// The upstreams in `cohort describe edge` on the balancer host (and the whole text).
fn upstream_states(c: &Cohort, ns: &str) -> (String, Vec<Upstream>) {
    let o = ns_ok(c, ns, &["describe", "edge"]);
    let states = o
        .stdout
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            match w.as_slice() {
                [addr, state, "weight", _, "requests", n, ..] if addr.starts_with("10.231.7.") => {
                    Some(Upstream {
                        addr: addr.to_string(),
                        state: state.to_string(),
                        requests: n.parse().ok()?,
                    })
                }
                _ => None,
            }
        })
        .collect();
    (o.stdout, states)
}

/// Waits until `describe edge` shows upstream `addr` in `state`.
/// Returns that upstream's line and the whole text.
fn wait_upstream(
    c: &Cohort,
    ns: &str,
    addr: &str,
    state: &str,
    timeout: Duration,
) -> (Upstream, String) {
    let mut text = String::new();
    let mut found = None;
    let ok = wait_until(timeout, || {
        let (t, states) = upstream_states(c, ns);
        text = t;
        found = states
            .into_iter()
            .find(|u| u.addr == addr && u.state == state);
        found.is_some()
    });
    match found {
        Some(u) if ok => (u, text),
        _ => panic!("upstream {addr} not {state} within {timeout:?}; describe edge:\n{text}"),
    }
}

/// Milliseconds since the epoch (the load script stamps requests with the same clock).
fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// One request of the load script.
#[derive(Clone, Debug)]
struct Req {
    start: f64,
    end: f64,
    /// `Ok((host, pid))` or `Err(code)`.
    result: Result<(String, u32), String>,
    mode: String,
}

impl Req {
    fn parse(line: &str) -> Option<Req> {
        let w: Vec<&str> = line.split_whitespace().collect();
        let (start, end) = (w.get(1)?.parse().ok()?, w.get(2)?.parse().ok()?);
        match (w.first()?, w.len()) {
            (&"ok", 6) => Some(Req {
                start,
                end,
                result: Ok((w[3].to_string(), w[4].parse().ok()?)),
                mode: w[5].to_string(),
            }),
            (&"err", 5) => Some(Req {
                start,
                end,
                result: Err(w[3].to_string()),
                mode: w[4].to_string(),
            }),
            _ => None,
        }
    }

    fn host(&self) -> Option<&str> {
        self.result.as_ref().ok().map(|(h, _)| h.as_str())
    }
}

/// The load script running in the balancer's namespace; killed on drop.
struct Load {
    child: Child,
    reqs: Arc<Mutex<Vec<Req>>>,
    done: Arc<Mutex<bool>>,
}

impl Load {
    fn spawn(ns: &str, url: &str, max: Duration) -> Load {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "node", &fixture("netns/load.js"), url])
            .arg(max.as_millis().to_string())
            .args(["4", "2", "2"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning the load script");
        let stdout = child.stdout.take().expect("load stdout");
        let reqs = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(Mutex::new(false));
        let (r, d) = (reqs.clone(), done.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line == "done" {
                    *d.lock().unwrap_or_else(|e| e.into_inner()) = true;
                } else if let Some(req) = Req::parse(&line) {
                    r.lock().unwrap_or_else(|e| e.into_inner()).push(req);
                } else {
                    eprintln!("load: unexpected line {line:?}");
                }
            }
        });
        Load { child, reqs, done }
    }

    fn snapshot(&self) -> Vec<Req> {
        self.reqs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until the finished requests satisfy `cond`.
    fn wait(&self, timeout: Duration, what: &str, cond: impl Fn(&[Req]) -> bool) {
        let ok = wait_until(timeout, || cond(&self.snapshot()));
        let reqs = self.snapshot();
        assert!(
            ok,
            "load: {what} did not happen within {timeout:?} ({} requests, last 10: {:?})",
            reqs.len(),
            &reqs[reqs.len().saturating_sub(10)..]
        );
    }

    /// Ends the load (stdin closed) and returns every request once the script has exited.
    fn finish(mut self) -> Vec<Req> {
        drop(self.child.stdin.take());
        let exited = wait_until(Duration::from_secs(10), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        assert!(
            exited,
            "the load script did not end within 10 s of its stdin closing"
        );
        let done = wait_until(Duration::from_secs(2), || {
            *self.done.lock().unwrap_or_else(|e| e.into_inner())
        });
        assert!(
            done,
            "the load script exited without printing its last line"
        );
        self.snapshot()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn count_by_host(reqs: &[Req]) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for r in reqs {
        let key = match &r.result {
            Ok((h, _)) => h.clone(),
            Err(code) => format!("failed:{code}"),
        };
        *m.entry(key).or_insert(0) += 1;
    }
    m
}

#[test]
fn balancer_moves_traffic_off_a_dead_host_and_back() {
    let t0 = Instant::now();
    static RUN: AtomicU32 = AtomicU32::new(0);
    let tag = format!(
        "cohort-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::SeqCst)
    );
    let (ns_a, ns_b, ns_c) = (format!("{tag}-a"), format!("{tag}-b"), format!("{tag}-c"));
    // Declared first, dropped last: the cohorts below are killed before the namespaces go.
    require_tool("ip", "iproute2");
    let _net =
        topology(&ns_a, &ns_b, &ns_c).unwrap_or_else(|e| panic!("building the namespaces: {e}"));
    let (host_a, host_b, edge) = (Cohort::new(), Cohort::new(), Cohort::new());
    let app = fixture("netns/app.js");
    let port = APP_PORT.to_string();
    let start_app = |c: &Cohort, ns: &str, host: &str| {
        ns_ok(
            c,
            ns,
            &["start", &app, "-i", "2", "--name", "app", "--", host, &port],
        );
    };
    start_app(&host_a, &ns_a, "a");
    start_app(&host_b, &ns_b, "b");
    ns_ok(&edge, &ns_c, &["start", &fixture("netns/balancer.toml")]);
    wait_online(&host_a, &ns_a, "app", 2, Duration::from_secs(15));
    wait_online(&host_b, &ns_b, "app", 2, Duration::from_secs(15));
    wait_online(&edge, &ns_c, "edge", 1, Duration::from_secs(15));
    let row = ns_ls(&edge, &ns_c);
    assert_eq!(row[0]["mode"], "balancer", "ls: {row:?}");
    let up_a = format!("{ADDR_A}:{APP_PORT}");
    let up_b = format!("{ADDR_B}:{APP_PORT}");
    wait_upstream(&edge, &ns_c, &up_a, "up", Duration::from_secs(10));
    wait_upstream(&edge, &ns_c, &up_b, "up", Duration::from_secs(10));
    let setup = t0.elapsed();

    // Load from inside the balancer's host, bounded at 15 s (it is ended as soon as we are done).
    let load = Load::spawn(
        &ns_c,
        &format!("http://{ADDR_C}:{EDGE_PORT}/"),
        Duration::from_secs(15),
    );
    let host_seen = |reqs: &[Req], host: &str, after: f64, n: usize| {
        reqs.iter()
            .filter(|r| r.start >= after && r.host() == Some(host))
            .count()
            >= n
    };
    load.wait(Duration::from_secs(5), "both hosts answering", |r| {
        host_seen(r, "a", 0.0, 20) && host_seen(r, "b", 0.0, 20)
    });

    // Host A goes away: its app first (drained by cohort), then its whole cohort.
    let stop_begin = now_ms();
    ns_ok(&host_a, &ns_a, &["stop", "app"]);
    let stop_end = now_ms();
    ns_ok(&host_a, &ns_a, &["kill"]);
    let kill_end = now_ms();
    let (down_a, down_text) = wait_upstream(&edge, &ns_c, &up_a, "down", Duration::from_secs(5));
    let down_seen = now_ms();
    // Several health intervals of traffic while A is dead: A stays down (its checks fail) and the
    // balancer sends it nothing (its request counter, attempts included, does not move).
    let quiet_until = down_seen + 5.0 * HEALTH_INTERVAL.as_secs_f64() * 1000.0;
    load.wait(Duration::from_secs(5), "B answering alone", |r| {
        host_seen(r, "b", kill_end, 50) && host_seen(r, "b", quiet_until, 1)
    });
    let (still_a, _) = wait_upstream(&edge, &ns_c, &up_a, "down", Duration::from_secs(1));
    assert_eq!(
        still_a.requests, down_a.requests,
        "the balancer kept sending requests to the dead host A"
    );

    // Host A comes back.
    let start_begin = now_ms();
    start_app(&host_a, &ns_a, "a");
    wait_online(&host_a, &ns_a, "app", 2, Duration::from_secs(15));
    let online = now_ms();
    load.wait(Duration::from_secs(5), "traffic back on A", |r| {
        host_seen(r, "a", start_begin, 1)
    });
    let back = load
        .snapshot()
        .iter()
        .filter(|r| r.start >= start_begin && r.host() == Some("a"))
        .map(|r| r.end)
        .fold(f64::INFINITY, f64::min);
    wait_upstream(&edge, &ns_c, &up_a, "up", Duration::from_secs(5));
    load.wait(Duration::from_secs(5), "both hosts answering again", |r| {
        host_seen(r, "a", back, 20) && host_seen(r, "b", back, 20)
    });
    let reqs = load.finish();

    // What happened, for the test log.
    let rel = |t: f64| (t - stop_begin) / 1000.0;
    let phase = |from: f64, to: f64| {
        let v: Vec<Req> = reqs
            .iter()
            .filter(|r| r.start >= from && r.start < to)
            .cloned()
            .collect();
        v
    };
    let before = phase(0.0, stop_begin);
    let stopping = phase(stop_begin, stop_end);
    let without_a = phase(stop_end, start_begin);
    let returning = phase(start_begin, back);
    let after = phase(back, f64::INFINITY);
    eprintln!(
        "setup {:.1}s; {} requests in all ({} keep-alive, {} new-connection)",
        setup.as_secs_f64(),
        reqs.len(),
        reqs.iter().filter(|r| r.mode == "keepalive").count(),
        reqs.iter().filter(|r| r.mode == "newconn").count()
    );
    eprintln!("  before stop:               {:?}", count_by_host(&before));
    eprintln!(
        "  during `stop app` ({:.2}s): {:?}",
        rel(stop_end),
        count_by_host(&stopping)
    );
    eprintln!(
        "  A stopped/killed (`kill` done at +{:.2}s, describe down at +{:.2}s): {:?}",
        rel(kill_end),
        rel(down_seen),
        count_by_host(&without_a)
    );
    eprintln!(
        "  A restarting (start at +{:.2}s, online +{:.2}s, first A response +{:.2}s): {:?}",
        rel(start_begin),
        rel(online),
        rel(back),
        count_by_host(&returning)
    );
    eprintln!("  after A is back:           {:?}", count_by_host(&after));
    let pids = |host: &str| {
        let mut p: Vec<u32> = reqs
            .iter()
            .filter_map(|r| match &r.result {
                Ok((h, pid)) if h == host => Some(*pid),
                _ => None,
            })
            .collect();
        p.sort_unstable();
        p.dedup();
        p
    };
    eprintln!("  worker pids: a {:?}, b {:?}", pids("a"), pids("b"));
    eprintln!("  describe edge after the kill:\n{down_text}");
    let failed: Vec<&Req> = reqs.iter().filter(|r| r.result.is_err()).collect();
    for r in &failed {
        eprintln!(
            "  FAILED {:?} {} started {:+.3}s ended {:+.3}s",
            r.result,
            r.mode,
            rel(r.start),
            rel(r.end)
        );
    }
    eprintln!("failed requests: {}", failed.len());

    // No request failed, except one already in flight when the stop began.
    let unexcused: Vec<&&Req> = failed
        .iter()
        .filter(|r| !(r.start < stop_begin && r.end >= stop_begin))
        .collect();
    assert!(
        unexcused.is_empty(),
        "requests failed that were not in flight at the stop: {unexcused:?}"
    );
    assert!(failed.len() <= 6, "more failures than clients: {failed:?}");
    // Both hosts served before; only B while A was gone; both again after.
    assert!(host_seen(&before, "a", 0.0, 1) && host_seen(&before, "b", 0.0, 1));
    let on_a: Vec<&Req> = without_a.iter().filter(|r| r.host() == Some("a")).collect();
    assert!(
        on_a.is_empty(),
        "requests sent after `stop app` returned were answered by A: {on_a:?}"
    );
    assert!(host_seen(&without_a, "b", 0.0, 50), "B did not take over");
    assert!(host_seen(&after, "a", 0.0, 20) && host_seen(&after, "b", 0.0, 20));
    // A's upstream came back within a few health intervals of its workers being online (rise 2;
    // generous for a loaded 2-core machine running a debug build).
    let delay = Duration::from_secs_f64(((back - online) / 1000.0).max(0.0));
    assert!(
        delay <= HEALTH_INTERVAL * 10,
        "A got traffic {delay:?} after it was online (health interval {HEALTH_INTERVAL:?})"
    );
    eprintln!("test time {:.1}s", t0.elapsed().as_secs_f64());
}
