//! Shared harness for the integration tests: a `Cohort` owns one temporary COHORT_HOME (so one
//! daemon) and a work folder, runs the real `cohort` binary against it, and on drop leaves no process
//! behind, whether the test passed or panicked.
//!
//! Rules it enforces for every test: no fixed sleeps (poll with `wait_until`), no process killed by
//! name (only pids this harness saw, checked against their start time so a recycled pid is never hit),
//! every command bounded in time.
#![allow(dead_code)]

use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_cohort");

/// How long one CLI command may run before the harness kills it and fails the test.
const CMD_TIMEOUT: Duration = Duration::from_secs(60);

/// Absolute path of a file in tests/fixtures.
pub fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// What one CLI run produced.
#[derive(Debug)]
pub struct Out {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

/// Polls `cond` every 20 ms until it is true (→ true) or `timeout` passes (→ false).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// The start time of `pid` in clock ticks since boot (field 22 of /proc/<pid>/stat) and its state.
fn stat(pid: i32) -> Option<(char, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

/// True when `pid` exists and is not a zombie (kill(pid, 0) alone counts zombies as alive).
pub fn alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let exists = unsafe { libc::kill(pid, 0) } == 0;
    exists && !matches!(stat(pid), Some(('Z', _)) | Some(('X', _)))
}

/// `/proc/<pid>/comm`, trimmed.
pub fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Reads a child's pipe to its end on a thread.
fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// One test's cohort: its own COHORT_HOME (`home`) and a work folder (`work`) the CLI runs in.
pub struct Cohort {
    _tmp: tempfile::TempDir,
    pub home: PathBuf,
    pub work: PathBuf,
    /// (pid, start time) of every process seen in `ls --json` or tracked by the test.
    seen: Mutex<Vec<(i32, u64)>>,
    /// Helper processes a test started (fake daemons, log followers): killed first on drop.
    children: Mutex<Vec<Child>>,
}

impl Default for Cohort {
    fn default() -> Self {
        Self::new()
    }
}

impl Cohort {
    pub fn new() -> Cohort {
        let tmp = tempfile::Builder::new()
            .prefix("cohort-test-")
            .tempdir()
            .expect("creating a temp dir");
        let home = tmp.path().join("home");
        let work = tmp.path().join("work");
        std::fs::create_dir_all(&work).expect("creating the work dir");
        Cohort {
            _tmp: tmp,
            home,
            work,
            seen: Mutex::new(Vec::new()),
            children: Mutex::new(Vec::new()),
        }
    }

    /// A `cohort` command for this home, run in the work folder, stdin closed.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("COHORT_HOME", &self.home)
            .env_remove("COHORT_CLIENT_TIMEOUT_MS")
            .current_dir(&self.work)
            .stdin(Stdio::null());
        c
    }

    /// Runs `cohort ARGS` and returns what it printed (fails the test if it runs over a minute).
    pub fn cmd(&self, args: &[&str]) -> Out {
        self.run(self.command(args))
    }

    /// Runs `cohort ARGS` with extra environment variables.
    pub fn cmd_env(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let mut c = self.command(args);
        for (k, v) in env {
            c.env(k, v);
        }
        self.run(c)
    }

    /// Runs `cohort ARGS` from another directory.
    pub fn cmd_in(&self, dir: &Path, args: &[&str]) -> Out {
        let mut c = self.command(args);
        c.current_dir(dir);
        self.run(c)
    }

    /// Runs a prepared command with the harness's deadline.
    pub fn run(&self, mut c: Command) -> Out {
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawning cohort");
        let out = drain(child.stdout.take().expect("stdout"));
        let err = drain(child.stderr.take().expect("stderr"));
        let deadline = Instant::now() + CMD_TIMEOUT;
        let status = loop {
            if let Some(s) = child.try_wait().expect("waiting for cohort") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{c:?} ran for more than {CMD_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        Out {
            status,
            stdout: String::from_utf8_lossy(&out.join().unwrap_or_default()).into_owned(),
            stderr: String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned(),
        }
    }

    /// Runs `cohort ARGS` and fails the test (showing stderr) unless it succeeds.
    pub fn ok(&self, args: &[&str]) -> Out {
        let o = self.cmd(args);
        assert!(
            o.success(),
            "cohort {args:?} failed ({}):\n{}{}",
            o.status,
            o.stdout,
            o.stderr
        );
        o
    }

    /// Runs `cohort ARGS`, expects a failure and returns its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let o = self.cmd(args);
        assert!(
            !o.success(),
            "cohort {args:?} should have failed:\n{}{}",
            o.stdout,
            o.stderr
        );
        o.stderr
    }

    /// `cohort ls --json`, parsed; every pid in it is remembered for cleanup.
    pub fn ls_json(&self) -> Vec<Value> {
        let o = self.ok(&["ls", "--json"]);
        let v: Value = serde_json::from_str(o.stdout.trim())
            .unwrap_or_else(|e| panic!("ls --json printed invalid JSON ({e}): {}", o.stdout));
        let list = v
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("ls --json is not an array: {v}"));
        for p in &list {
            if let Some(pid) = p["pid"].as_i64() {
                self.track(pid as i32);
            }
        }
        list
    }

    /// The processes of app `name` in `ls --json`.
    pub fn procs(&self, name: &str) -> Vec<Value> {
        self.ls_json()
            .into_iter()
            .filter(|p| p["name"] == name)
            .collect()
    }

    /// The (first) process of app `name`; fails the test when there is none.
    pub fn proc(&self, name: &str) -> Value {
        self.procs(name)
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no process named {name} in ls --json"))
    }

    /// The pid of app `name`'s first process, once it has one.
    pub fn pid(&self, name: &str) -> i32 {
        let mut pid = None;
        let found = wait_until(Duration::from_secs(10), || {
            pid = self.proc(name)["pid"].as_i64().map(|p| p as i32);
            pid.is_some()
        });
        assert!(found, "{name} never got a pid: {:?}", self.ls_json());
        pid.unwrap_or_default()
    }

    /// Waits until app `name`'s first process has `status`; returns that row.
    pub fn wait_status(&self, name: &str, status: &str, timeout: Duration) -> Value {
        let mut last = Value::Null;
        let ok = wait_until(timeout, || {
            last = self.proc(name);
            last["status"] == status
        });
        assert!(
            ok,
            "{name} did not become {status} within {timeout:?}; last seen: {last}"
        );
        last
    }

    /// Remembers a pid (with its start time) so drop kills it if it is still alive.
    pub fn track(&self, pid: i32) {
        if let Some((_, start)) = stat(pid) {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if !seen.contains(&(pid, start)) {
                seen.push((pid, start));
            }
        }
    }

    /// Hands a helper process to the harness: it is killed when the test ends.
    pub fn adopt(&self, child: Child) {
        self.track(child.id() as i32);
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(child);
    }

    /// The daemon's pid from $COHORT_HOME/daemon.pid.
    pub fn daemon_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.home.join("daemon.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// Path of a log file of app `name`, instance `instance`: kind is "out" or "err".
    pub fn log_path(&self, name: &str, instance: u32, kind: &str) -> PathBuf {
        self.home
            .join("logs")
            .join(format!("{name}-{instance}-{kind}.log"))
    }

    /// The text of a log file ("" when it does not exist yet).
    pub fn log(&self, name: &str, kind: &str) -> String {
        std::fs::read_to_string(self.log_path(name, 0, kind)).unwrap_or_default()
    }

    /// Waits until the out (or err) log of `name` contains `needle`; returns the log.
    pub fn wait_log(&self, name: &str, kind: &str, needle: &str, timeout: Duration) -> String {
        let mut text = String::new();
        let ok = wait_until(timeout, || {
            text = self.log(name, kind);
            text.contains(needle)
        });
        assert!(
            ok,
            "{name} {kind} log never contained {needle:?}; it has:\n{text}"
        );
        text
    }

    /// Writes a file under the work folder (creating folders) and returns its absolute path.
    pub fn write(&self, rel: &str, content: &str) -> PathBuf {
        let p = self.work.join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).expect("creating a folder in the work dir");
        }
        std::fs::write(&p, content).expect("writing a file in the work dir");
        p
    }

    /// Every live process whose environment says it belongs to this home (apps and their children
    /// get COHORT_HOME from the daemon, and the daemon from the CLI).
    pub fn processes_of_home(&self) -> Vec<i32> {
        let needle = format!("COHORT_HOME={}", self.home.display());
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| *pid as u32 != std::process::id())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/environ"))
                    .map(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
                    .unwrap_or(false)
            })
            .filter(|pid| alive(*pid))
            .collect()
    }
}

impl Drop for Cohort {
    fn drop(&mut self) {
        // Helpers first: a fake daemon on the socket would make `cohort kill` wait on it.
        for mut c in self
            .children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(pid) = self.daemon_pid() {
            self.track(pid);
        }
        if self.home.join("cohort.sock").exists() {
            let mut c = self.command(&["kill"]);
            c.env("COHORT_CLIENT_TIMEOUT_MS", "5000")
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if let Ok(mut child) = c.spawn() {
                let deadline = Instant::now() + Duration::from_secs(20);
                while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (pid, start) in seen {
            // Same pid and same start time: the very process we saw, not a recycled pid.
            if matches!(stat(pid), Some((_, s)) if s == start) && alive(pid) {
                // SAFETY: plain kill(2) on a pid this test owns (app pids lead their own group).
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        for pid in self.processes_of_home() {
            // SAFETY: as above; the process carries this test's unique COHORT_HOME.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// A `cohort logs` (or any) process whose stdout is read line by line on a thread; killed on drop.
pub struct Follower {
    child: Child,
    rx: std::sync::mpsc::Receiver<String>,
    pub lines: Vec<String>,
}

impl Follower {
    pub fn spawn(c: &Cohort, args: &[&str]) -> Follower {
        let mut cmd = c.command(args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = cmd.spawn().expect("spawning cohort");
        c.track(child.id() as i32);
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Follower {
            child,
            rx,
            lines: Vec::new(),
        }
    }

    /// Reads lines until one satisfies `pred` (→ that line) or `timeout` passes (→ None).
    pub fn until(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.lines.push(line.clone());
                    if pred(&line) {
                        return Some(line);
                    }
                }
                Err(_) => return None,
            }
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
