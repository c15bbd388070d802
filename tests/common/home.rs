//! One test's cohort: its own temporary COHORT_HOME (so its own daemon) and work folder, the real
//! `cohort` binary run against them with stdin closed and a deadline, and on drop no process left
//! behind, whether the test passed or panicked.

use crate::common::cleanup::{alive, signal, Tracked};
use crate::common::poll::wait_until;
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

/// Absolute path of a file in the repository.
pub fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A scratch folder (removed on drop) for tests that need one outside a `Cohort`.
pub fn scratch_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("cohort-test-{tag}-"))
        .tempdir()
        .expect("creating a temp dir")
}

/// What one command run produced.
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

/// Reads a child's pipe to its end on a thread.
fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// Runs `c` to its end (stdout and stderr captured); fails the test if it runs over a minute.
pub fn run_bounded(mut c: Command) -> Out {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap_or_else(|e| panic!("spawning {c:?}: {e}"));
    let out = drain(child.stdout.take().expect("stdout is piped"));
    let err = drain(child.stderr.take().expect("stderr is piped"));
    let deadline = Instant::now() + CMD_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting for a child") {
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

/// One test's cohort: its own COHORT_HOME (`home`) and a work folder (`work`) the CLI runs in.
pub struct Cohort {
    _tmp: tempfile::TempDir,
    pub home: PathBuf,
    pub work: PathBuf,
    /// Every process seen in `ls --json` or tracked by the test.
    tracked: Tracked,
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
        let tmp = scratch_dir("cohort");
        let home = tmp.path().join("home");
        let work = tmp.path().join("work");
        std::fs::create_dir_all(&work).expect("creating the work dir");
        Cohort {
            _tmp: tmp,
            home,
            work,
            tracked: Tracked::default(),
            children: Mutex::new(Vec::new()),
        }
    }

    /// The folder holding `home` and `work` (removed on drop).
    pub fn root(&self) -> &Path {
        self._tmp.path()
    }

    /// A `cohort` command for this home, run in the work folder, stdin closed.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args);
        self.configure(&mut c);
        c
    }

    /// Gives any command this cohort's environment: COHORT_HOME, the work folder, stdin closed.
    /// The daemon leaves `net.ipv4.tcp_migrate_req` alone (a root daemon would turn it on in the
    /// host's namespace); tests/cluster_recovery.rs asks for `auto` in a private namespace.
    pub fn configure(&self, c: &mut Command) {
        c.env("COHORT_HOME", &self.home)
            .env("COHORT_TCP_MIGRATE_REQ", "never")
            .env_remove("COHORT_CLIENT_TIMEOUT_MS")
            .current_dir(&self.work)
            .stdin(Stdio::null());
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
    pub fn run(&self, c: Command) -> Out {
        run_bounded(c)
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

    /// `cohort start ARGS` of an app that exits (non-zero) at start-up: the start fails saying
    /// so, while the restart policy goes on; returns its stderr.
    pub fn start_crashing(&self, args: &[&str]) -> String {
        let err = self.fails(args);
        assert!(
            err.contains("before it was ready"),
            "cohort {args:?}: {err}"
        );
        err
    }

    /// `cohort ls --json`, parsed; every pid in it is remembered for cleanup.
    pub fn ls_json(&self) -> Vec<Value> {
        self.list(&["ls", "--json"])
    }

    /// `cohort jlist` (PM2's name), parsed; every pid in it is remembered for cleanup.
    pub fn jlist(&self) -> Vec<Value> {
        self.list(&["jlist"])
    }

    fn list(&self, args: &[&str]) -> Vec<Value> {
        let o = self.ok(args);
        let v: Value = serde_json::from_str(o.stdout.trim())
            .unwrap_or_else(|e| panic!("{args:?} printed invalid JSON ({e}): {}", o.stdout));
        let list = v
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("{args:?} did not print an array: {v}"));
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
        self.tracked.track(pid);
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

    /// The value of the sample `name` (with its labels as printed, if any) in `cohort metrics`.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let out = self.cmd(&["metrics"]);
        out.stdout.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(' ')?;
            rest.trim().parse().ok()
        })
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
                wait_until(Duration::from_secs(20), || {
                    !matches!(child.try_wait(), Ok(None))
                });
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        self.tracked.kill_all();
        for pid in self.processes_of_home() {
            // The process carries this test's unique COHORT_HOME.
            signal(pid, libc::SIGKILL);
        }
    }
}

impl Cohort {
    /// The holder processes of this home (`cohort daemon --holder`).
    pub fn holders(&self) -> Vec<i32> {
        self.processes_of_home()
            .into_iter()
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|cmd| cmd.split(|b| *b == 0).any(|a| a == b"--holder"))
                    .unwrap_or(false)
            })
            .collect()
    }
}

/// How many pipes process `pid` holds open (a holder holds two per process it keeps).
pub fn pipes_held(pid: i32) -> usize {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("pipe:"))
        .count()
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
        cmd.stderr(Stdio::null());
        Follower::spawn_command(cmd, |pid| c.track(pid))
    }

    /// Follows the stdout of any command; `track` is told its pid.
    pub fn spawn_command(mut cmd: Command, track: impl FnOnce(i32)) -> Follower {
        cmd.stdout(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        track(child.id() as i32);
        let stdout = child.stdout.take().expect("stdout is piped");
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

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
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

    /// Waits until the process exits; its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = &mut self.child;
        crate::common::poll::try_poll(timeout, || child.try_wait().ok().flatten())
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
