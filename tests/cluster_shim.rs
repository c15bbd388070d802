//! The Node preload (src/shim/node.cjs) on its own: `node --require shim app`, no daemon.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

const SHIM: &str = include_str!("../src/shim/node.cjs");

/// `node --require shim APP` with its stdout lines followed; killed on drop.
struct Node {
    out: Follower,
}

impl Node {
    fn start(dir: &Path, app: &str, env: &[(&str, &str)]) -> Node {
        let shim = dir.join("shim.cjs");
        std::fs::write(&shim, SHIM).expect("write shim");
        let mut cmd = Command::new("node");
        cmd.arg("--require")
            .arg(&shim)
            .arg(dir.join(app))
            .envs(env.iter().copied());
        Node {
            out: Follower::spawn_command(cmd, |_| {}),
        }
    }
    fn wait_line(&mut self, needle: &str) {
        let found = self
            .out
            .until(Duration::from_secs(15), |l| l.contains(needle));
        assert!(
            found.is_some(),
            "node never printed {needle:?}; it printed {:?}",
            self.out.lines
        );
    }
    fn signal(&self, sig: i32) {
        signal(self.out.pid(), sig);
    }
    fn wait_exit(&mut self) -> Option<i32> {
        let status = self.out.wait_exit(Duration::from_secs(15));
        assert!(status.is_some(), "node did not exit");
        status.and_then(|s| s.code())
    }
}

#[test]
fn an_apps_own_sigint_handler_runs_and_decides() {
    let tmp = scratch_dir("shim");
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
    let tmp = scratch_dir("shim");
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
    let tmp = scratch_dir("shim");
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
