//! `cohort monit` driven for real in tmux: the dashboard shows a live app with its figures, `r`
//! restarts it, `q` gives the shell back as it was; a small terminal gets a message; no TTY an error.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

/// A tmux server of our own (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(tag: &str, width: u16, height: u16, home: &std::path::Path) -> Tmux {
        require_tool("tmux", "tmux");
        let t = Tmux {
            socket: format!("cohort-ops-{tag}-{}", std::process::id()),
        };
        let ok = t
            .cmd()
            .args([
                "new-session",
                "-d",
                "-x",
                &width.to_string(),
                "-y",
                &height.to_string(),
            ])
            .arg("-e")
            .arg(format!("COHORT_HOME={}", home.display()))
            .args(["env", "PS1=ops-prompt$ ", "bash", "--norc", "--noprofile"])
            .status()
            .expect("run tmux");
        assert!(ok.success(), "tmux new-session failed");
        t
    }
    fn cmd(&self) -> Command {
        let mut c = Command::new("/usr/bin/tmux");
        c.args(["-L", &self.socket]);
        c
    }
    fn send(&self, keys: &[&str]) {
        let ok = self
            .cmd()
            .arg("send-keys")
            .args(keys)
            .status()
            .expect("tmux send-keys");
        assert!(ok.success());
    }
    fn type_line(&self, line: &str) {
        self.send(&["-l", line]);
        self.send(&["Enter"]);
    }
    fn capture(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    fn alternate_on(&self) -> bool {
        let out = self
            .cmd()
            .args(["display-message", "-p", "#{alternate_on}"])
            .output()
            .expect("tmux display");
        String::from_utf8_lossy(&out.stdout).trim() == "1"
    }
    /// Waits until the pane satisfies `f`; the panic shows the last capture.
    fn wait_pane(&self, secs: u64, what: &str, f: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let found = try_poll(Duration::from_secs(secs), || {
            last = self.capture();
            f(&last).then(|| last.clone())
        });
        found.unwrap_or_else(|| panic!("timed out waiting for {what}; the pane shows:\n{last}"))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").status();
    }
}

const APP: &str = "setInterval(() => console.log('tick ' + Date.now()), 300);\n";

#[test]
fn monit_shows_the_app_restarts_it_and_gives_the_terminal_back() {
    let home = Cohort::new();
    let app = home.write("monitapp.js", APP);
    home.ok(&["start", app.to_str().unwrap(), "--name", "monit-app"]);
    let pid = poll("the app online", Duration::from_secs(10), || {
        let l = home.jlist();
        (l[0]["status"] == "online").then(|| l[0]["pid"].as_i64().unwrap())
    });

    let tmux = Tmux::start("monit", 100, 30, &home.home);
    tmux.wait_pane(10, "the shell prompt", |p| p.contains("ops-prompt$"));
    tmux.type_line("echo BEFORE-MONIT");
    tmux.wait_pane(10, "the marker", |p| p.contains("\nBEFORE-MONIT"));
    tmux.type_line(&format!("{BIN} monit"));

    // The table row: name, status, pid and a memory figure; the log pane shows the app's lines.
    let pane = tmux.wait_pane(15, "monit showing the app", |p| {
        p.contains("cohort monit │")
            && p.lines().any(|l| {
                l.contains("monit-app")
                    && l.contains("online")
                    && l.contains(&pid.to_string())
                    && l.contains("MB")
            })
            && p.contains("tick ")
    });
    assert!(tmux.alternate_on(), "monit draws on the alternate screen");
    for key in ["restart", "reload", "stop", "filter", "quit"] {
        assert!(pane.contains(key), "footer lacks {key}:\n{pane}");
    }

    tmux.send(&["r"]);
    let new_pid = poll("restart count to increase", Duration::from_secs(15), || {
        let l = home.jlist();
        (l[0]["restarts"].as_u64().unwrap_or(0) >= 1 && l[0]["status"] == "online")
            .then(|| l[0]["pid"].as_i64().unwrap())
    });
    assert_ne!(new_pid, pid);
    // The dashboard follows: the new pid appears within a refresh or two.
    tmux.wait_pane(10, "the new pid in monit", |p| {
        p.contains(&new_pid.to_string()) && p.contains("restart monit-app:0: done")
    });

    tmux.send(&["q"]);
    let pane = tmux.wait_pane(10, "the shell back", |p| {
        !p.contains("cohort monit │") && p.contains("BEFORE-MONIT")
    });
    assert!(!tmux.alternate_on(), "the alternate screen is left");
    assert!(!pane.contains("┌"), "no dashboard leftovers:\n{pane}");
    // The shell reads lines normally again (not raw mode).
    tmux.type_line("echo AFTER-$((40+2))");
    tmux.wait_pane(10, "the shell to answer", |p| p.contains("AFTER-42"));
}

#[test]
fn monit_in_a_small_terminal_says_so_and_quits() {
    let home = Cohort::new();
    let tmux = Tmux::start("small", 50, 12, &home.home);
    tmux.wait_pane(10, "the shell prompt", |p| p.contains("ops-prompt$"));
    tmux.type_line(&format!("{BIN} monit"));
    tmux.wait_pane(15, "the too-small message", |p| {
        p.contains("terminal too small: 50x12") && p.contains("60x16")
    });
    // Growing the window brings the dashboard.
    let ok = tmux
        .cmd()
        .args(["resize-window", "-x", "80", "-y", "24"])
        .status()
        .expect("resize");
    assert!(ok.success());
    tmux.wait_pane(10, "the dashboard at 80x24", |p| {
        p.contains("cohort monit │") && p.contains("no apps")
    });
    tmux.send(&["q"]);
    // (tmux 3.3 copies the alternate screen into the main one when a window is resized while it is
    // on, for `less` too; so only the prompt and the screen mode are checked here.)
    tmux.wait_pane(10, "the shell back", |p| {
        !p.contains("cohort monit │")
            && p.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .is_some_and(|l| l.trim_end().ends_with("ops-prompt$"))
    });
    assert!(!tmux.alternate_on());
}

#[test]
fn monit_without_a_terminal_is_a_clear_error() {
    let home = Cohort::new();
    let out = home.cmd(&["monit"]);
    assert!(!out.success());
    let err = &out.stderr;
    assert!(
        err.contains("error: monit needs a terminal (run it in an interactive shell; for scripts use cohort ls --json)"),
        "stderr: {err}"
    );
    assert!(
        !home.home.join("cohort.sock").exists(),
        "no daemon is started for nothing"
    );
}
