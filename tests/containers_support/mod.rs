//! What tests/ops_containers.rs and tests/ops_systemd.rs need around the engine, kept apart from the
//! shared harness: commands with a deadline (podman with this host's containers.conf), loopback HTTP,
//! polling, the images (`systemd`: systemd as a container's PID 1), and cleanup.
#![allow(dead_code)]

pub mod cleanup;
pub mod host;
pub mod image;
pub mod systemd;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// target/containers: the engine's config, the cached rootfs tarball, build contexts.
pub fn work_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo("target"));
    let dir = target.join("containers");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

pub fn tag(scenario: &str) -> String {
    format!("cohort-test-{scenario}-{}", std::process::id())
}

pub struct Out {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

/// Runs `cmd` to its end (stdin closed), killing it (our own child) after `timeout`.
pub fn run(mut cmd: Command, timeout: Duration) -> Out {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what}: {e}"));
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what} did not finish within {timeout:?}");
            }
        }
    };
    Out {
        code: status.code(),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

pub fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_string(&mut s);
        }
        s
    })
}

pub fn podman_cmd(args: &[&str]) -> Command {
    let mut c = Command::new("podman");
    c.env("CONTAINERS_CONF", host::engine_conf()).args(args);
    c
}

pub fn podman(args: &[&str]) -> Out {
    run(podman_cmd(args), Duration::from_secs(120))
}

/// `podman ARGS`, which must succeed: its stdout.
pub fn podman_ok(args: &[&str]) -> String {
    let out = podman(args);
    assert!(
        out.ok(),
        "podman {} failed ({:?}):\n{}{}",
        args.join(" "),
        out.code,
        out.stdout,
        out.stderr
    );
    out.stdout
}

/// Every line a container printed (stdout and stderr).
pub fn container_log(name: &str) -> String {
    let out = podman(&["logs", name]);
    format!("{}{}", out.stdout, out.stderr)
}

pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// GET http://127.0.0.1:PORT/PATH: (status, body), or None when nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let status = raw.split_whitespace().nth(1)?.parse().ok()?;
    let body = raw.split_once("\r\n\r\n").map(|x| x.1.to_string())?;
    Some((status, body))
}

/// Polls GET PORT/PATH until `want` answers it; the last answer otherwise.
pub fn wait_http(
    port: u16,
    path: &str,
    timeout: Duration,
    want: impl Fn(u16, &str) -> bool,
) -> String {
    let mut last = None;
    let ok = wait_until(timeout, || {
        last = http_get(port, path);
        matches!(&last, Some((code, body)) if want(*code, body))
    });
    assert!(ok, "GET :{port}{path}: {last:?} after {timeout:?}");
    last.map(|x| x.1).unwrap_or_default()
}
