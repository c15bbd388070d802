//! The unit `cohort startup systemd` writes, for root and for a user (`-u node`), under a real
//! systemd as PID 1: a rootful Podman container of the systemd image (containers_support::systemd:
//! the offline base plus Debian's systemd 252), booted with `--systemd=always` (and, on a
//! hybrid-cgroup host, the host's cgroup2 tree so systemd and cohort use it as on the host).
//! Inside, as the README says: `cohort startup` as root, `systemctl enable --now`, a cluster app
//! and a fork app that logs, `cohort save` (as the unit's user). Then what a user sees:
//! - the daemon killed (`systemctl kill -s KILL --kill-who=main`): `Restart=` starts the next one,
//!   which adopts every app (same pids, online, the same holder, uptimes going on); requests made
//!   all the while from inside the container never fail; the app's log goes on; a `cohort` command
//!   run meanwhile waits for the unit's daemon instead of starting its own;
//! - `systemctl stop`: `ExecStop=cohort kill --exec-stop` stops the apps with their kill_signal;
//!   nothing is left in the unit's cgroup or the container;
//! - `systemctl start`: the unit's `ExecStartPost=cohort resurrect` brings the saved apps back;
//! - `systemctl restart`: the apps are stopped gracefully and resurrected (new pids), as
//!   docs/startup.md says;
//! - `cohort kill` by hand: a clean exit, not restarted; `ExecStop` then runs without $MAINPID and
//!   does nothing;
//! - a daemon started by a script inside another service names no unit (it is not its main process).

mod containers_support;

use containers_support::cleanup::Engine;
use containers_support::image::strip_cohort_to;
use containers_support::systemd::CgroupLayout;
use containers_support::systemd::{systemd_image, systemd_run_opts, wait_for_boot};
use containers_support::*;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const PORT: u16 = 3000;

/// One container with systemd, and the user whose unit `cohort startup` installed in it.
struct Target {
    /// The container's name.
    c: String,
    user: &'static str,
    /// `cohort-USER.service`.
    unit: String,
    /// The user's COHORT_HOME (`~/.cohort`).
    home: String,
}

impl Target {
    /// Runs `script` (with `cohort` commands) in /srv/app as the unit's user, as they would.
    fn cohort(&self, script: &str) -> Out {
        let script = format!("cd /srv/app && {script}");
        if self.user == "root" {
            return sh(&self.c, &script);
        }
        let home = format!("HOME=/home/{}", self.user);
        podman(&[
            "exec", &self.c, "runuser", "-u", self.user, "--", "env", &home, "sh", "-c", &script,
        ])
    }

    fn cohort_ok(&self, script: &str) -> String {
        let out = self.cohort(script);
        assert!(
            out.ok(),
            "in {} as {}: {script}: exit {:?}\n{}{}",
            self.c,
            self.user,
            out.code,
            out.stdout,
            out.stderr
        );
        out.stdout
    }
}

/// Cluster app: answers `web <pid>`.
const WEB_JS: &str = r#"
const http = require('http');
http.createServer((req, res) => res.end(`web ${process.pid}\n`)).listen(Number(process.env.PORT));
"#;

/// Fork app: a numbered line every 20 ms; a line on SIGINT (cohort's default kill_signal), so a
/// stop by cohort (not by systemd's SIGTERM) shows in its log.
const TICKER_JS: &str = r#"
let n = 0;
setInterval(() => console.log(`tick ${++n}`), 20);
process.on('SIGINT', () => { console.log('ticker: SIGINT, exiting'); process.exit(0); });
"#;

/// `node poll.js PORT DIR`: GET / on a new connection after another until DIR/stop exists; writes
/// DIR/progress ("ok failed") as it goes and DIR/done (JSON: ok, failed, the first errors, the
/// pids that answered) at the end.
const POLL_JS: &str = r#"
const http = require('http'), fs = require('fs');
const port = Number(process.argv[2]), dir = process.argv[3];
let ok = 0, failed = 0; const errors = [], pids = new Set();
function one() {
  if (fs.existsSync(dir + '/stop')) {
    fs.writeFileSync(dir + '/done', JSON.stringify({ ok, failed, errors: errors.slice(0, 10), pids: [...pids] }));
    return;
  }
  let settled = false;
  const end = (good, why) => {
    if (settled) return; settled = true;
    if (good) ok++; else { failed++; errors.push(why); }
    if ((ok + failed) % 10 === 0) fs.writeFileSync(dir + '/progress', `${ok} ${failed}`);
    setImmediate(one);
  };
  const req = http.get({ host: '127.0.0.1', port, path: '/', agent: false, timeout: 5000 }, res => {
    let body = '';
    res.on('data', c => body += c);
    res.on('end', () => {
      const m = /^web (\d+)/.exec(body);
      if (m) pids.add(Number(m[1]));
      end(res.statusCode === 200 && m !== null, `status ${res.statusCode}: ${body}`);
    });
    res.on('error', e => end(false, e.message));
  });
  req.on('timeout', () => req.destroy(new Error('timeout')));
  req.on('error', e => end(false, e.message));
}
fs.mkdirSync(dir, { recursive: true });
one();
"#;

/// `node get.js PORT`: one GET /, prints "STATUS BODY".
const GET_JS: &str = r#"
require('http').get({ host: '127.0.0.1', port: Number(process.argv[2]), path: '/' }, res => {
  let b = ''; res.on('data', c => b += c); res.on('end', () => console.log(`${res.statusCode} ${b.trim()}`));
}).on('error', e => { console.log(`error ${e.message}`); process.exit(1); });
"#;

fn sh(container: &str, script: &str) -> Out {
    podman(&["exec", container, "sh", "-c", script])
}

fn sh_ok(container: &str, script: &str) -> String {
    let out = sh(container, script);
    assert!(
        out.ok(),
        "in {container}: {script}: exit {:?}\n{}{}",
        out.code,
        out.stdout,
        out.stderr
    );
    out.stdout
}

#[derive(Debug, Default, Clone)]
struct UnitState {
    main_pid: u32,
    active: String,
    sub: String,
    result: String,
    restarts: u32,
}

fn unit_state(t: &Target) -> UnitState {
    let out = sh_ok(
        &t.c,
        &format!(
            "systemctl show -p MainPID -p ActiveState -p SubState -p Result -p NRestarts {}",
            t.unit
        ),
    );
    let mut s = UnitState::default();
    for line in out.lines() {
        match line.split_once('=') {
            Some(("MainPID", v)) => s.main_pid = v.parse().unwrap_or(0),
            Some(("ActiveState", v)) => s.active = v.into(),
            Some(("SubState", v)) => s.sub = v.into(),
            Some(("Result", v)) => s.result = v.into(),
            Some(("NRestarts", v)) => s.restarts = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    s
}

fn wait_unit(t: &Target, what: &str, cond: impl Fn(&UnitState) -> bool) -> UnitState {
    let mut last = UnitState::default();
    let ok = wait_until(Duration::from_secs(40), || {
        last = unit_state(t);
        cond(&last)
    });
    assert!(ok, "{}: {what}; last {last:?}\n{}", t.unit, journal(t));
    last
}

fn journal(t: &Target) -> String {
    let cmd = format!("journalctl -u {} --no-pager -o short-precise", t.unit);
    sh(&t.c, &cmd).stdout
}

/// What the unit's processes printed.
fn unit_output(t: &Target) -> String {
    sh(&t.c, &format!("journalctl -u {} --no-pager -o cat", t.unit)).stdout
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Proc {
    name: String,
    instance: u64,
    pid: u32,
    status: String,
    ready: bool,
    uptime_ms: u64,
}

/// `cohort ls --json` inside (only while the unit's daemon runs: a CLI finding no daemon would
/// start one outside the unit).
fn ls(t: &Target) -> Vec<Proc> {
    let json = t.cohort_ok("cohort ls --json");
    let rows: Vec<serde_json::Value> = serde_json::from_str(json.trim())
        .unwrap_or_else(|e| panic!("cohort ls --json: {e}: {json}"));
    let mut procs: Vec<Proc> = rows
        .iter()
        .map(|r| Proc {
            name: r["name"].as_str().unwrap_or_default().into(),
            instance: r["instance"].as_u64().unwrap_or_default(),
            pid: r["pid"].as_u64().unwrap_or_default() as u32,
            status: r["status"].as_str().unwrap_or_default().into(),
            ready: r["ready"].as_bool().unwrap_or(false),
            uptime_ms: r["uptime_ms"].as_u64().unwrap_or(0),
        })
        .collect();
    procs.sort();
    procs
}

/// Waits for web:0, web:1 and ticker to be online and ready.
fn wait_apps_online(t: &Target) -> Vec<Proc> {
    let mut procs = Vec::new();
    let ok = wait_until(Duration::from_secs(30), || {
        procs = ls(t);
        procs.len() == 3
            && procs
                .iter()
                .all(|p| p.status == "online" && p.ready && p.pid > 0)
    });
    assert!(ok, "three processes online and ready: {procs:?}");
    procs
}

fn pids(procs: &[Proc]) -> BTreeSet<u32> {
    procs.iter().map(|p| p.pid).collect()
}

/// Every process of the container: (pid, command line).
fn container_processes(container: &str) -> Vec<(u32, String)> {
    let out = sh_ok(
        container,
        "for p in /proc/[0-9]*; do c=$(tr '\\0' ' ' < $p/cmdline 2>/dev/null) && [ -n \"$c\" ] && echo \"${p#/proc/} $c\"; done; true",
    );
    parse_processes(&out)
}

/// The processes in the unit's cgroup (and its children: cohort's cells).
fn unit_processes(t: &Target) -> Vec<(u32, String)> {
    let out = sh_ok(
        &t.c,
        &format!(
            "cg=$(systemctl show -p ControlGroup --value {}); [ -n \"$cg\" ] || exit 0
             for d in /sys/fs/cgroup/unified /sys/fs/cgroup/systemd /sys/fs/cgroup; do
               if [ -d \"$d$cg\" ]; then find \"$d$cg\" -name cgroup.procs -exec cat {{}} +; break; fi
             done | sort -un | while read p; do echo \"$p $(tr '\\0' ' ' < /proc/$p/cmdline 2>/dev/null)\"; done",
            t.unit
        ),
    );
    parse_processes(&out)
}

fn parse_processes(out: &str) -> Vec<(u32, String)> {
    out.lines()
        .filter_map(|l| {
            let (pid, cmd) = l.split_once(' ')?;
            Some((pid.parse().ok()?, cmd.trim().to_string()))
        })
        .collect()
}

fn holder_pid(t: &Target) -> Option<u32> {
    unit_processes(t)
        .into_iter()
        .find(|(_, c)| c.contains("daemon --holder"))
        .map(|p| p.0)
}

/// The ticker's log: the numbers of its `tick N` lines, and how often it printed its SIGINT line.
fn ticker_log(t: &Target) -> (Vec<u64>, usize) {
    let log = sh(&t.c, &format!("cat {}/logs/ticker-0-out.log", t.home)).stdout;
    let ticks = log
        .lines()
        .filter_map(|l| l.strip_prefix("tick ")?.trim().parse().ok())
        .collect();
    (ticks, log.matches("ticker: SIGINT, exiting").count())
}

fn get(container: &str) -> String {
    sh(container, &format!("node /srv/app/get.js {PORT}"))
        .stdout
        .trim()
        .to_string()
}

/// The poller's (ok, failed) so far.
fn poll_progress(container: &str) -> (u64, u64) {
    let p = sh(container, "cat /srv/app/poll/progress 2>/dev/null").stdout;
    let mut w = p.split_whitespace().map(|x| x.parse().unwrap_or(0));
    (w.next().unwrap_or(0), w.next().unwrap_or(0))
}

fn write_app(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for (file, text) in [
        ("web.js", WEB_JS),
        ("ticker.js", TICKER_JS),
        ("poll.js", POLL_JS),
        ("get.js", GET_JS),
    ] {
        std::fs::write(dir.join(file), text).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
}

/// The whole life of the unit under systemd 252 as PID 1 (see the top of this file), for `user`
/// (its unit installed with `startup`); returns the container (removed when the Engine drops).
fn life_of_the_unit(scenario: &str, user: &'static str, startup: &str) -> (Engine, Target) {
    let mut engine = Engine::new(scenario);
    let image = systemd_image();
    let layout = CgroupLayout::of_this_host();
    let name = tag(scenario);
    let files = work_dir().join(tag(&format!("{scenario}-files")));
    engine.paths.push(files.clone());
    write_app(&files.join("app"));
    strip_cohort_to(&files.join("cohort"));

    let mut args: Vec<String> = ["run", "--detach", "--name", &name, "--network=none"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(systemd_run_opts(layout));
    args.extend([image.to_string(), "/sbin/init".to_string()]);
    engine.containers.push(name.clone());
    let booting = Instant::now();
    podman_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let state = wait_for_boot(&name, Duration::from_secs(60));
    eprintln!(
        "[systemd] {user}: cgroups {layout:?}: booted ({state}) in {:.2} s",
        booting.elapsed().as_secs_f64()
    );
    podman_ok(&[
        "cp",
        &files.join("cohort").to_string_lossy(),
        &format!("{name}:/usr/local/bin/cohort"),
    ]);
    podman_ok(&[
        "cp",
        &files.join("app").to_string_lossy(),
        &format!("{name}:/srv/app"),
    ]);
    sh_ok(&name, "chmod -R a+rX /srv/app");
    let t = Target {
        c: name.clone(),
        user,
        unit: format!("cohort-{user}.service"),
        home: match user {
            "root" => "/root/.cohort".to_string(),
            _ => format!("/home/{user}/.cohort"),
        },
    };
    let unit = t.unit.clone();

    // As the README says (`sudo cohort startup`, or `sudo env PATH=$PATH cohort startup systemd
    // -u alice --hp /home/alice`), as root.
    let installed = sh_ok(&name, startup);
    assert!(
        installed.contains(&format!("wrote /etc/systemd/system/{unit}"))
            && installed.contains(&format!("enabled {unit}")),
        "{installed}"
    );
    sh_ok(&name, &format!("systemctl enable --now {unit}"));
    let marker = sh_ok(&name, &format!("cat {}/systemd.unit", t.home));
    assert_eq!(marker.trim(), unit, "the daemon names its unit in its home");
    let props = sh_ok(
        &name,
        &format!("systemctl show -p Type -p KillMode -p Restart -p Delegate -p User {unit}"),
    );
    let user_line = format!("User={user}");
    for want in [
        "Type=notify",
        "KillMode=process",
        "Restart=on-failure",
        "Delegate=yes",
        &user_line,
    ] {
        assert!(props.lines().any(|l| l == want), "{want} in {props}");
    }
    let first = wait_unit(&t, "running", |s| s.sub == "running");
    t.cohort_ok(&format!(
        "PORT={PORT} cohort start web.js -i 2 --name web && cohort start ticker.js --name ticker && cohort save"
    ));
    let before = wait_apps_online(&t);
    assert!(get(&name).starts_with("200 web "), "{}", get(&name));
    let unit_pids: BTreeSet<u32> = unit_processes(&t).iter().map(|p| p.0).collect();
    let holder = holder_pid(&t).expect("cohort's holder runs in the unit's cgroup");
    assert!(
        pids(&before)
            .iter()
            .chain([&first.main_pid, &holder])
            .all(|p| unit_pids.contains(p)),
        "the daemon, holder and apps are in {unit}'s cgroup: {unit_pids:?} {before:?}"
    );
    if layout != CgroupLayout::Legacy {
        // cohort's cells (a cgroup per run) live below the unit's cgroup.
        let cg = sh_ok(
            &name,
            &format!("systemctl show -p ControlGroup --value {unit}"),
        );
        for p in &before {
            let own = sh_ok(&name, &format!("grep '^0::' /proc/{}/cgroup", p.pid));
            assert!(
                own.trim().starts_with(&format!("0::{}/cohort-", cg.trim())),
                "{}:{} in a cell below the unit: {own}",
                p.name,
                p.instance
            );
        }
    }

    // 1. The daemon killed: systemd restarts it, it adopts the apps; requests never fail.
    sh_ok(&name, "rm -rf /srv/app/poll");
    podman_ok(&[
        "exec",
        "--detach",
        &name,
        "node",
        "/srv/app/poll.js",
        &PORT.to_string(),
        "/srv/app/poll",
    ]);
    assert!(
        wait_until(Duration::from_secs(20), || poll_progress(&name).0 >= 50),
        "the poller runs: {:?}",
        poll_progress(&name)
    );
    let (ticks_before, _) = ticker_log(&t);
    let uptimes_before = ls(&t);
    let killed = Instant::now();
    sh_ok(
        &name,
        &format!("systemctl kill -s KILL --kill-who=main {unit}"),
    );
    // A command run while Restart= waits (RestartSec=2) waits for the unit's next daemon rather
    // than starting one of its own (which would take the home from the unit's).
    let pong = t.cohort("cohort ping");
    let second = wait_unit(&t, "restarted after the kill", |s| {
        s.restarts == 1 && s.sub == "running" && s.main_pid != 0 && s.main_pid != first.main_pid
    });
    let back_s = killed.elapsed().as_secs_f64();
    assert!(
        pong.ok()
            && pong
                .stderr
                .contains(&format!("waiting for {unit} to bring the daemon back"))
            && pong.stdout.contains(&format!(" pid {} ", second.main_pid)),
        "`cohort ping` during the restart waited for the unit's daemon {}: {}{}",
        second.main_pid,
        pong.stdout,
        pong.stderr
    );
    let at_restart = poll_progress(&name);
    let after = wait_apps_online(&t);
    assert_eq!(
        pids(&after),
        pids(&before),
        "the same processes after the daemon's kill: {before:?} → {after:?}"
    );
    assert_eq!(holder_pid(&t), Some(holder), "the same holder");
    let since = killed.elapsed().as_millis() as u64;
    let uptimes_after = ls(&t);
    for (b, a) in uptimes_before.iter().zip(&uptimes_after) {
        assert!(
            a.uptime_ms >= b.uptime_ms + since,
            "{}:{} uptime {} ms before the kill, {} ms {since} ms later",
            b.name,
            b.instance,
            b.uptime_ms,
            a.uptime_ms
        );
    }
    assert!(
        wait_until(Duration::from_secs(20), || poll_progress(&name).0
            >= at_restart.0 + 100),
        "the poller goes on after the restart: {:?}",
        poll_progress(&name)
    );
    sh_ok(&name, "touch /srv/app/poll/stop");
    let mut done = String::new();
    assert!(
        wait_until(Duration::from_secs(20), || {
            done = sh(&name, "cat /srv/app/poll/done 2>/dev/null").stdout;
            !done.is_empty()
        }),
        "the poller finished"
    );
    let polled: serde_json::Value =
        serde_json::from_str(done.trim()).unwrap_or_else(|e| panic!("poll result {done}: {e}"));
    let answered: BTreeSet<u32> = polled["pids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_u64())
                .map(|p| p as u32)
                .collect()
        })
        .unwrap_or_default();
    let mut ticks_after = Vec::new();
    let at = *ticks_before.last().unwrap_or(&0);
    assert!(
        wait_until(Duration::from_secs(10), || {
            ticks_after = ticker_log(&t).0;
            ticks_after.last().is_some_and(|t| *t >= at + 100)
        }),
        "the ticker's log goes on after the kill (last tick before {at}, now {:?})",
        ticks_after.last()
    );
    let lost: Vec<u64> = (1..=*ticks_after.last().unwrap_or(&0))
        .filter(|n| !ticks_after.contains(n))
        .collect();
    eprintln!(
        "[systemd] {user}: daemon kill -9: MainPID {} → {} back in {back_s:.2} s; pids {:?} → {:?}, holder {holder}; \
         requests {} ok, {} failed (answered by {answered:?}); ticker lines missing: {lost:?}; \
         uptimes (ms) {:?} → {:?}",
        first.main_pid,
        second.main_pid,
        pids(&before),
        pids(&after),
        polled["ok"],
        polled["failed"],
        uptimes_before.iter().map(|p| p.uptime_ms).collect::<Vec<_>>(),
        uptimes_after.iter().map(|p| p.uptime_ms).collect::<Vec<_>>(),
    );
    assert_eq!(
        polled["failed"].as_u64(),
        Some(0),
        "no failed request: {polled}"
    );
    assert!(
        answered.len() == 2 && answered.is_subset(&pids(&before)),
        "both workers answered: {answered:?}"
    );
    assert!(
        lost.is_empty(),
        "every ticker line is in its log: missing {lost:?}"
    );
    let output = unit_output(&t);
    for line in [
        "cohort: the previous daemon died; adopting 3 running processes from the holder",
        "already running, left as they are: ticker, web",
    ] {
        assert!(
            output.contains(line),
            "{line:?} in the unit's output:\n{output}"
        );
    }
    // systemd 252 skips ExecStop= after a main process killed by a signal (docs/startup.md).
    assert!(
        !output.contains("the daemon already exited"),
        "ExecStop= ran after the kill:\n{output}"
    );

    // 2. `systemctl stop`: ExecStop stops the apps (with their kill_signal); nothing is left.
    let everyone: BTreeSet<u32> = pids(&after)
        .into_iter()
        .chain([holder, second.main_pid])
        .collect();
    let stopping = Instant::now();
    sh_ok(&name, &format!("systemctl stop {unit}"));
    let stop_s = stopping.elapsed().as_secs_f64();
    let stopped = unit_state(&t);
    assert!(
        stopped.active == "inactive" && stopped.result == "success",
        "{stopped:?}\n{}",
        journal(&t)
    );
    assert_eq!(unit_processes(&t), [], "nothing left in the unit's cgroup");
    let left: Vec<(u32, String)> = container_processes(&name)
        .into_iter()
        .filter(|(p, c)| everyone.contains(p) || c.contains("/srv/app/") || c.contains("cohort"))
        .collect();
    assert_eq!(left, [], "no app, holder or daemon left in the container");
    assert_eq!(
        ticker_log(&t).1,
        1,
        "the ticker got its kill_signal (SIGINT) from cohort"
    );
    let output = unit_output(&t);
    assert!(
        output.contains(&format!("daemon stopped (pid {})", second.main_pid)),
        "ExecStop's `cohort kill` stopped the daemon:\n{output}"
    );
    eprintln!(
        "[systemd] {user}: systemctl stop: {stop_s:.2} s; {} processes gone",
        everyone.len()
    );

    // 3. `systemctl start`: ExecStartPost resurrects the saved apps.
    sh_ok(&name, &format!("systemctl start {unit}"));
    let third = wait_unit(&t, "running again", |s| s.sub == "running");
    let resurrected = wait_apps_online(&t);
    assert!(
        pids(&resurrected).is_disjoint(&everyone),
        "new processes: {resurrected:?}"
    );
    assert!(get(&name).starts_with("200 web "), "{}", get(&name));
    assert!(
        unit_output(&t).contains("resurrected: ticker, web"),
        "{}",
        unit_output(&t)
    );

    // 4. `systemctl restart`: the apps are stopped gracefully and resurrected (docs/startup.md).
    let restarting = Instant::now();
    sh_ok(&name, &format!("systemctl restart {unit}"));
    let fourth = wait_unit(&t, "running after restart", |s| {
        s.sub == "running" && s.main_pid != third.main_pid
    });
    let restarted = wait_apps_online(&t);
    let restart_s = restarting.elapsed().as_secs_f64();
    assert!(
        pids(&restarted).is_disjoint(&pids(&resurrected)),
        "restart stops and resurrects: {resurrected:?} → {restarted:?}"
    );
    assert_eq!(
        ticker_log(&t).1,
        2,
        "the ticker was stopped by cohort again"
    );
    assert!(get(&name).starts_with("200 web "), "{}", get(&name));
    eprintln!(
        "[systemd] {user}: systemctl restart: MainPID {} → {}, pids {:?} → {:?}, apps online in {restart_s:.2} s",
        third.main_pid,
        fourth.main_pid,
        pids(&resurrected),
        pids(&restarted)
    );

    // 5. `cohort kill` by hand: a clean exit, not restarted; ExecStop runs without $MAINPID.
    t.cohort_ok("cohort kill");
    let last = wait_unit(&t, "inactive after cohort kill", |s| s.active == "inactive");
    assert_eq!(last.result, "success", "{last:?}");
    let output = unit_output(&t);
    assert_eq!(
        output
            .matches("the daemon already exited: nothing to stop")
            .count(),
        1,
        "ExecStop ran once without $MAINPID, after this clean exit, and did nothing:\n{output}"
    );
    assert_eq!(unit_processes(&t), [], "nothing left after cohort kill");

    (engine, t)
}

#[test]
fn the_unit_of_root_under_real_systemd_keeps_apps_across_daemon_kills_and_stops_on_request() {
    let began = Instant::now();
    let (_engine, t) = life_of_the_unit("systemd-root", "root", "cd /root && cohort startup");
    let name = t.c.as_str();
    // A daemon started by a script inside some other service is not that service's main
    // process: it names no unit, so commands never wait for that service.
    sh_ok(
        name,
        "systemd-run --quiet --unit=script.service --setenv=COHORT_HOME=/tmp/other-home \
         sh -c 'cohort daemon & wait'",
    );
    assert!(
        wait_until(Duration::from_secs(20), || sh(
            name,
            "test -S /tmp/other-home/cohort.sock && test -s /tmp/other-home/daemon.pid"
        )
        .ok()),
        "the script's daemon runs:\n{}",
        sh(name, "journalctl -u script.service --no-pager").stdout
    );
    assert!(
        !sh(name, "test -e /tmp/other-home/systemd.unit").ok(),
        "a daemon that is not its service's main process names no unit"
    );
    sh_ok(name, "systemctl stop script.service");
    eprintln!(
        "[systemd] root: whole test {:.1} s",
        began.elapsed().as_secs_f64()
    );
}

/// The same for a user's unit (`User=node`), as most installs are: the daemon, holder and apps run
/// as that user, cohort's cells are made in the delegated cgroup, and `cohort` run by the user
/// during the restart waits for the unit (systemctl answering them over D-Bus).
#[test]
fn the_unit_of_a_user_under_real_systemd_keeps_apps_across_daemon_kills_and_stops_on_request() {
    let began = Instant::now();
    let (_engine, t) = life_of_the_unit(
        "systemd-node",
        "node",
        "env PATH=$PATH cohort startup systemd -u node --hp /home/node",
    );
    eprintln!(
        "[systemd] node: whole test {:.1} s",
        began.elapsed().as_secs_f64()
    );
    drop(t);
}
