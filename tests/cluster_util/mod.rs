//! Shared helpers for the cluster tests (on top of tests/common): a small HTTP/1.1 client over std
//! sockets, a bounded load generator that counts ok / failed / refused requests and which pid
//! answered, cluster-specific waits on `ls --json`, and the Express install (npm, once per run).
#![allow(dead_code)]

use crate::common::*;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Absolute path of a file in tests/fixtures/cluster.
pub fn cluster_fixture(name: &str) -> String {
    fixture(&format!("cluster/{name}"))
}

// ----- HTTP client -----

/// A response: status, headers (lower-case names), body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The server said it closes the connection after this response.
    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }

    /// The `pid` field of a JSON body (every fixture answers with one).
    pub fn pid(&self) -> Option<i32> {
        let v: serde_json::Value = serde_json::from_str(&self.body).ok()?;
        v["pid"].as_i64().map(|p| p as i32)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {:?}", self.body))
    }
}

/// One client connection (buffered reads).
pub struct Conn {
    r: BufReader<TcpStream>,
}

/// Why a request failed: refused at connect, or anything after.
#[derive(Debug)]
pub enum Fail {
    Refused,
    Other(String),
}

impl Conn {
    pub fn open(port: u16) -> Result<Conn, Fail> {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let _ = s.set_nodelay(true);
                Ok(Conn {
                    r: BufReader::new(s),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Err(Fail::Refused),
            Err(e) => Err(Fail::Other(format!("connect: {e}"))),
        }
    }

    /// Sends `GET path` (asking to keep the connection alive or not) and reads the response.
    pub fn get(&mut self, path: &str, keep_alive: bool) -> std::io::Result<Response> {
        let conn = if keep_alive { "keep-alive" } else { "close" };
        write!(
            self.r.get_mut(),
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: {conn}\r\n\r\n"
        )?;
        read_response(&mut self.r)
    }
}

fn eof(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::UnexpectedEof, what.to_string())
}

fn read_response(r: &mut BufReader<TcpStream>) -> std::io::Result<Response> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(eof("connection closed before a response"));
    }
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(eof("connection closed in the headers"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((n, v)) = l.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if let Some(n) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let n = usize::from_str_radix(line.trim(), 16)
                .map_err(|_| std::io::Error::other(format!("bad chunk size {line:?}")))?;
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// One request on a new connection (`Connection: close`).
pub fn get(port: u16, path: &str) -> Result<Response, String> {
    let mut c = Conn::open(port).map_err(|e| format!("{e:?}"))?;
    c.get(path, false).map_err(|e| e.to_string())
}

/// Waits until `port` answers a request with 200; fails the test otherwise.
pub fn wait_serving(port: u16, timeout: Duration) {
    let mut last = String::new();
    let ok = wait_until(timeout, || match get(port, "/") {
        Ok(r) if r.status == 200 => true,
        Ok(r) => {
            last = format!("status {}", r.status);
            false
        }
        Err(e) => {
            last = e;
            false
        }
    });
    assert!(ok, "port {port} did not serve within {timeout:?}: {last}");
}

// ----- load generator -----

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
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats::default());
        let threads = (0..clients)
            .map(|_| {
                let (stop, stats, path) = (stop.clone(), stats.clone(), path.to_string());
                std::thread::spawn(move || client(port, mode, &path, &stop, &stats))
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

    pub fn pids(&self) -> HashMap<i32, usize> {
        self.stats
            .pids
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default()
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

fn client(port: u16, mode: Mode, path: &str, stop: &AtomicBool, stats: &Stats) {
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
                    std::thread::sleep(PACE);
                    continue;
                }
                Err(Fail::Other(e)) => {
                    fail(e);
                    std::thread::sleep(PACE);
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
        std::thread::sleep(PACE);
    }
}

// ----- cluster state -----

/// (instance, pid) of the running processes of app `name`, sorted by instance.
pub fn instances(c: &Cohort, name: &str) -> Vec<(u32, i32)> {
    let mut v: Vec<(u32, i32)> = c
        .procs(name)
        .iter()
        .filter_map(|p| Some((p["instance"].as_u64()? as u32, p["pid"].as_i64()? as i32)))
        .collect();
    v.sort();
    v
}

/// Waits until app `name` has exactly `n` processes, all online with a pid; returns
/// (instance, pid) sorted by instance.
pub fn wait_online(c: &Cohort, name: &str, n: usize, timeout: Duration) -> Vec<(u32, i32)> {
    let mut last = Vec::new();
    let ok = wait_until(timeout, || {
        last = c.procs(name);
        last.len() == n
            && last
                .iter()
                .all(|p| p["status"] == "online" && p["pid"].as_i64().is_some())
    });
    assert!(
        ok,
        "{name} did not get {n} online processes within {timeout:?}: {last:?}"
    );
    instances(c, name)
}

/// Sends requests on new connections until every pid in `pids` has answered (at most `max`
/// answered requests, 10 s); fails the test otherwise. For "the new workers serve" checks.
pub fn wait_all_answer(port: u16, pids: &[i32], max: usize) {
    let mut seen = HashMap::<i32, usize>::new();
    let mut answered = 0;
    let ok = wait_until(Duration::from_secs(10), || {
        while answered < max {
            if pids.iter().all(|p| seen.contains_key(p)) {
                return true;
            }
            match get(port, "/") {
                Ok(r) => {
                    answered += 1;
                    if let Some(pid) = r.pid() {
                        *seen.entry(pid).or_default() += 1;
                    }
                }
                Err(_) => return false, // not serving yet: poll again
            }
        }
        pids.iter().all(|p| seen.contains_key(p))
    });
    assert!(
        ok,
        "not every one of {pids:?} answered ({answered} answers): {seen:?}"
    );
}

/// Starts `script` as app `name` with `-i n` and PORT=`port` (plus `extra` flags); waits until
/// every worker answers. Returns (instance, pid) by instance.
pub fn start_cluster(
    c: &Cohort,
    name: &str,
    script: &str,
    port: u16,
    n: usize,
    extra: &[&str],
) -> Vec<(u32, i32)> {
    let n_s = n.to_string();
    let mut args = vec!["start", script, "--name", name, "-i", &n_s];
    args.extend_from_slice(extra);
    let o = c.cmd_env(&args, &[("PORT", &port.to_string())]);
    assert!(o.success(), "start failed: {}{}", o.stdout, o.stderr);
    let procs = wait_online(c, name, n, Duration::from_secs(10));
    wait_serving(port, Duration::from_secs(10));
    let pids: Vec<i32> = procs.iter().map(|p| p.1).collect();
    wait_all_answer(port, &pids, 500);
    procs
}

/// A fresh, free TCP port for the app (the daemon binds it on `[::]`).
pub fn app_port() -> u16 {
    free_port()
}

// ----- npm packages for the Express test -----

/// A folder with `express` installed from npm (node_modules/ inside), made once per test run (and
/// kept under target/tmp, which is not committed). Concurrent test binaries each install into their
/// own folder and the first rename wins.
pub fn express_install() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cluster-npm");
        let dir = base.join("express");
        if dir.join("node_modules/express/package.json").is_file() {
            return dir;
        }
        let tmp = base.join(format!("express.tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).expect("creating the npm folder");
        std::fs::write(
            tmp.join("package.json"),
            r#"{"name":"cohort-cluster-test","private":true,"version":"1.0.0"}"#,
        )
        .expect("writing package.json");
        let out = std::process::Command::new("npm")
            .args([
                "install",
                "express@5",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
            ])
            .current_dir(&tmp)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("running npm (npm must be on PATH for the Express test)");
        assert!(
            out.status.success(),
            "npm install express failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if std::fs::rename(&tmp, &dir).is_err() {
            // Another test binary got there first.
            let _ = std::fs::remove_dir_all(&tmp);
        }
        assert!(
            dir.join("node_modules/express/package.json").is_file(),
            "express is not installed in {}",
            dir.display()
        );
        dir
    })
    .clone()
}
