//! The Node preload (src/shim/node.cjs) on its own: `node --require shim app`, no daemon.

mod cluster_util;
mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cluster_util::*;
use common::*;

const SHIM: &str = include_str!("../src/shim/node.cjs");

/// A node process killed on drop, with its stdout lines collected.
struct Node {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Node {
    fn start(dir: &Path, app: &str, env: &[(&str, &str)]) -> Node {
        let shim = dir.join("shim.cjs");
        std::fs::write(&shim, SHIM).expect("write shim");
        let mut child = Command::new("node")
            .arg("--require")
            .arg(&shim)
            .arg(dir.join(app))
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start node");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("stdout");
        let l2 = lines.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                l2.lock().expect("lines").push(l);
            }
        });
        Node { child, lines }
    }
    fn wait_line(&self, needle: &str) {
        let ok = wait_until(Duration::from_secs(15), || {
            self.lines
                .lock()
                .expect("l")
                .iter()
                .any(|l| l.contains(needle))
        });
        assert!(ok, "node never printed {needle:?}");
    }
    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the pid we started.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
    fn wait_exit(&mut self) -> Option<i32> {
        let mut status = None;
        let c = &mut self.child;
        let ok = wait_until(Duration::from_secs(15), || {
            status = c.try_wait().ok().flatten();
            status.is_some()
        });
        assert!(ok, "node did not exit");
        status.and_then(|s| s.code())
    }
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("cohort-shim-")
        .tempdir()
        .expect("temp dir")
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_apps_own_sigint_handler_runs_and_decides() {
    let tmp = tempdir();
    let dir = tmp.path();
    let port = free_port();
    std::fs::write(
        dir.join("app.js"),
        r#"
const http = require('http');
const server = http.createServer((q, s) => s.end('ok')).listen(process.env.PORT, () => console.log('listening'));
process.on('SIGINT', () => {
  console.log('app handler ran');
  // Exit later and with our own code: the shim must not exit behind our back.
  setTimeout(() => process.exit(7), 300);
});
"#,
    )
    .expect("write");
    let mut n = Node::start(dir, "app.js", &[("PORT", &port.to_string())]);
    n.wait_line("listening");
    n.signal(libc::SIGINT);
    n.wait_line("app handler ran");
    assert_eq!(n.wait_exit(), Some(7));
}

#[test]
fn esm_app_without_handler_drains_keepalive_and_exits_0() {
    let tmp = tempdir();
    let dir = tmp.path();
    let port = free_port();
    std::fs::write(
        dir.join("app.mjs"),
        r#"
import http from 'node:http';
http.createServer((req, res) => {
  if (req.url === '/slow') { console.log('got /slow'); setTimeout(() => res.end('slow'), 300); }
  else res.end('fast');
}).listen(Number(process.env.PORT), () => console.log('listening'));
"#,
    )
    .expect("write");
    let mut n = Node::start(
        dir,
        "app.mjs",
        &[("PORT", &port.to_string()), ("COHORT_KILL_TIMEOUT", "5000")],
    );
    n.wait_line("listening");
    // One idle keep-alive connection and one with a request in flight.
    let mut idle = Conn::open(port).expect("connect");
    assert!(!idle.get("/", true).expect("fast").closes());
    let mut busy = Conn::open(port).expect("connect");
    let slow = std::thread::spawn(move || busy.get("/slow", true));
    n.wait_line("got /slow");
    n.signal(libc::SIGTERM);
    let r = slow
        .join()
        .expect("join")
        .expect("in-flight request failed");
    assert_eq!(r.body, "slow");
    assert!(r.closes());
    // The idle connection may still send one request during the grace period: answered, closed.
    let again = idle
        .get("/", true)
        .expect("request on the idle connection during the drain");
    assert_eq!(again.body, "fast");
    assert!(again.closes());
    assert_eq!(n.wait_exit(), Some(0));
}

#[test]
fn app_without_servers_exits_0_on_sigterm() {
    let tmp = tempdir();
    let dir = tmp.path();
    std::fs::write(
        dir.join("app.js"),
        "setInterval(() => {}, 1000); console.log('up');",
    )
    .expect("write");
    let mut n = Node::start(dir, "app.js", &[]);
    n.wait_line("up");
    n.signal(libc::SIGTERM);
    assert_eq!(n.wait_exit(), Some(0));
}
