//! Shared helpers for the cluster tests: run `cohort __cluster-demo` (killed with its whole process
//! group on drop), watch its event lines, and a tiny HTTP/1.1 client over std sockets.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// A fresh temp dir for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "cohort-test-{name}-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// Polls `f` until it returns Some or the deadline passes.
pub fn poll<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running `cohort __cluster-demo`, in its own process group (workers included).
pub struct Demo {
    pub child: Child,
    pub lines: Arc<Mutex<Vec<String>>>,
    pub home: PathBuf,
}

impl Demo {
    pub fn start(home: &Path, args: &[&str]) -> Demo {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cohort"))
            .arg("__cluster-demo")
            .args(args)
            .env("COHORT_HOME", home)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .expect("start cohort");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("stdout");
        let l2 = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                eprintln!("| {line}");
                l2.lock().expect("lines").push(line);
            }
        });
        Demo {
            child,
            lines,
            home: home.to_path_buf(),
        }
    }

    pub fn has(&self, needle: &str) -> bool {
        self.lines
            .lock()
            .expect("lines")
            .iter()
            .any(|l| l.contains(needle))
    }

    pub fn wait_line(&self, needle: &str, secs: u64) -> String {
        poll(needle, secs, || {
            self.lines
                .lock()
                .expect("lines")
                .iter()
                .find(|l| l.contains(needle))
                .cloned()
        })
    }

    /// The pid printed for `slot`/`gen` by "spawned slot S gen G pid P".
    pub fn pid_of(&self, slot: usize, gen: u64) -> i32 {
        let l = self.wait_line(&format!("spawned slot {slot} gen {gen} pid "), 10);
        l.rsplit(' ')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("pid")
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on the pid we started.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits for the demo to exit; returns its exit code.
    pub fn wait_exit(&mut self, secs: u64) -> Option<i32> {
        let child = &mut self.child;
        poll("demo exit", secs, || child.try_wait().ok().flatten()).code()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group of the child we started (its workers).
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// A response: status, headers (lower-case names), body.
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
    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// Sends GET `path` on `s` and reads the response (Content-Length bodies, or until EOF).
pub fn get_on(s: &mut TcpStream, path: &str) -> std::io::Result<Response> {
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before a response",
            ));
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    let body = match len {
        Some(n) => {
            let mut b = vec![0u8; n];
            s.read_exact(&mut b)?;
            b
        }
        None => {
            let mut b = Vec::new();
            s.read_to_end(&mut b)?;
            b
        }
    };
    Ok(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).to_string(),
    })
}

/// One request on a new connection to 127.0.0.1:`port`.
pub fn get(port: u16, path: &str) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    get_on(&mut s, path)
}
