//! `cohort run`: the foreground mode for containers. Run as PID 1 of a new PID namespace (we are
//! root), it reaps orphans of any origin, answers /healthz and /readyz, serves `cohort ls` on the same
//! COHORT_HOME, and stops the apps gracefully on SIGTERM; its exit code tells how the apps ended.

mod common;

use common::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The processes below `root` (host pids): (pid, state letter, command name, parent pid).
fn descendants(root: i32) -> Vec<(i32, char, String, i32)> {
    let mut all = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head
            .split_once('(')
            .map(|x| x.1.to_string())
            .unwrap_or_default();
        let mut f = rest.split_whitespace();
        let state = f.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid: i32 = f.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        all.push((pid, ppid, state, comm));
    }
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (pid, ppid, state, comm) in &all {
            if *ppid == p {
                out.push((*pid, *state, comm.clone(), *ppid));
                frontier.push(*pid);
            }
        }
    }
    out
}

/// Kills what a `cohort run` under unshare left (PID 1 of the namespace takes the rest with it).
struct NsGuard {
    unshare: Child,
    pid1: Option<i32>,
}

impl Drop for NsGuard {
    fn drop(&mut self) {
        if let Some(p) = self.pid1 {
            signal(p, libc::SIGKILL);
        }
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

fn wait_exit(child: &mut Child, secs: u64) -> std::process::ExitStatus {
    poll("cohort run to exit", Duration::from_secs(secs), || {
        child.try_wait().ok().flatten()
    })
}

/// GET on a new connection: (status, body), or None when nothing answers.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    get(port, path).ok().map(|r| (r.status, r.body))
}

/// Writes `text` into the work folder of `c`.
fn write(c: &Cohort, name: &str, text: &str) {
    c.write(name, text);
}

#[test]
fn run_as_pid1_reaps_orphans_answers_probes_and_stops_gracefully() {
    require_tool("unshare", "util-linux");
    let home = Cohort::new();
    let dir = &home.work;
    write(
        &home,
        "web.js",
        "console.log('web up');\n\
         process.on('SIGINT', () => { console.log('web got SIGINT, closing'); setTimeout(() => process.exit(0), 100); });\n\
         setInterval(() => {}, 1000);\n",
    );
    // Five orphans: each subshell starts a background job and exits at once, so the job is
    // re-parented to PID 1 (cohort) and must be reaped there when it ends. They outlive the
    // start window of a fork app (up to 1 s), so they are still there once /readyz answers.
    write(
        &home,
        "orphaner.sh",
        "for i in 1 2 3 4 5; do ( (sleep 3; touch \"$MARK_DIR/orphan-$i\") & ); done\nexec sleep 1000\n",
    );
    write(
        &home,
        "cohort.toml",
        &format!(
            "[[apps]]\nname = \"web\"\nscript = \"./web.js\"\n\n[[apps]]\nname = \"orphaner\"\nscript = \"./orphaner.sh\"\ninterpreter = \"sh\"\n[apps.env]\nMARK_DIR = \"{}\"\n",
            dir.display()
        ),
    );
    let port = free_port();
    let out_path = dir.join("run.out");
    let err_path = dir.join("run.err");
    let started = Instant::now();
    let unshare = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", BIN, "run"])
        .arg(dir.join("cohort.toml"))
        .args(["--health", &format!("127.0.0.1:{port}")])
        .env("COHORT_HOME", &home.home)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("run unshare");
    let mut guard = NsGuard {
        unshare,
        pid1: None,
    };
    let upid = guard.unshare.id() as i32;
    let stderr = || std::fs::read_to_string(&err_path).unwrap_or_default();
    let pid1 = poll("cohort under unshare", Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{upid}/task/{upid}/children"))
            .ok()
            .and_then(|c| {
                c.split_whitespace()
                    .next()
                    .and_then(|p| p.parse::<i32>().ok())
            })
    });
    guard.pid1 = Some(pid1);
    let status = std::fs::read_to_string(format!("/proc/{pid1}/status")).unwrap_or_default();
    let nspid = status
        .lines()
        .find(|l| l.starts_with("NSpid:"))
        .unwrap_or("")
        .to_string();
    assert!(
        nspid.trim_end().ends_with("\t1"),
        "cohort is PID 1 in its namespace: {nspid:?}"
    );

    // Probes: alive at once, ready once every app is online.
    let body = poll("/readyz 200", Duration::from_secs(15), || {
        match http_get(port, "/readyz") {
            Some((200, b)) => Some(b),
            _ => None,
        }
    });
    eprintln!(
        "cohort run: start to /readyz 200 in {} ms",
        started.elapsed().as_millis()
    );
    assert!(body.contains("ready: 2 processes online"), "{body}");
    assert_eq!(http_get(port, "/healthz").map(|r| r.0), Some(200));

    // The CLI works against the same COHORT_HOME while it runs.
    let list = home.jlist();
    let mut names: Vec<&str> = list.iter().map(|p| p["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["orphaner", "web"]);

    // The orphans were adopted by PID 1 (the shells that started them are gone)...
    poll(
        "an orphan adopted by cohort",
        Duration::from_secs(10),
        || {
            descendants(pid1)
                .iter()
                .any(|d| d.3 == pid1 && d.2 == "sh")
                .then_some(())
        },
    );
    // ...ran to their end, and none is left a zombie.
    poll("the orphans to finish", Duration::from_secs(10), || {
        (1..=5)
            .all(|i| dir.join(format!("orphan-{i}")).exists())
            .then_some(())
    });
    poll("no zombie under cohort", Duration::from_secs(5), || {
        let z: Vec<_> = descendants(pid1)
            .into_iter()
            .filter(|d| d.1 == 'Z')
            .collect();
        z.is_empty().then_some(())
    });
    assert!(
        descendants(pid1).iter().any(|d| d.2 == "sleep"),
        "the orphaner app itself still runs"
    );

    // Not ready while one app is stopped, and the body says which.
    home.ok(&["stop", "orphaner"]);
    let (code, body) = http_get(port, "/readyz").expect("readyz answers");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("orphaner:0 is stopped"), "{body}");

    // SIGTERM: every app is stopped with its kill_signal; web's own handler runs; exit code 0.
    signal(pid1, libc::SIGTERM);
    let st = wait_exit(&mut guard.unshare, 15);
    guard.pid1 = None;
    let out = std::fs::read_to_string(&out_path).unwrap();
    assert!(out.contains("web|0 | web up"), "stdout:\n{out}");
    assert!(
        out.contains("web|0 | web got SIGINT, closing"),
        "stdout:\n{out}\nstderr:\n{}",
        stderr()
    );
    assert_eq!(st.code(), Some(0), "stderr:\n{}", stderr());
    assert!(stderr().contains("SIGTERM: stopping every app"));
    assert!(
        !home.home.join("cohort.sock").exists(),
        "the socket is removed on exit"
    );
}

fn run_plain(c: &Cohort, args: &[&str]) -> (Option<i32>, String, String) {
    let dir = &c.work;
    let mut child = ChildGuard::new(
        Command::new(BIN)
            .arg("run")
            .args(args)
            .env("COHORT_HOME", &c.home)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("o")).unwrap())
            .stderr(std::fs::File::create(dir.join("e")).unwrap())
            .spawn()
            .expect("run cohort"),
    );
    let st = child.wait_exit(Duration::from_secs(20));
    let read = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap_or_default();
    (st.code(), read("o"), read("e"))
}

#[test]
fn run_exit_code_follows_how_the_apps_ended() {
    let home = Cohort::new();
    write(&home, "ok.js", "console.log('all done');\n");
    write(
        &home,
        "bad.js",
        "console.error('failing'); process.exit(3);\n",
    );

    let (code, out, err) = run_plain(&home, &["ok.js", "--no-autorestart"]);
    assert_eq!(code, Some(0), "stderr: {err}");
    assert!(out.contains("ok|0 | all done"), "{out}");

    let (code, _, err) = run_plain(&home, &["bad.js", "--no-autorestart"]);
    assert_eq!(code, Some(1), "stderr: {err}");
    assert!(
        // It exits before the start window closed: the start itself fails, saying so.
        err.contains("bad|0 | failing") && err.contains("bad:0 exited with code 3"),
        "{err}"
    );

    // Crashing in a loop ends errored: code 1. --json prints raw log objects.
    let (code, out, err) = run_plain(
        &home,
        &[
            "bad.js",
            "--max-restarts",
            "1",
            "--min-uptime",
            "10s",
            "--json",
        ],
    );
    assert_eq!(code, Some(1), "stderr: {err}");
    assert!(err.contains("it is errored"), "{err}");
    let first: serde_json::Value =
        serde_json::from_str(out.lines().next().unwrap_or("")).expect("JSON lines");
    assert_eq!(first["name"], "bad");
    assert_eq!(first["line"], "failing");
}

#[test]
fn run_refuses_bad_input_clearly() {
    let home = Cohort::new();
    write(&home, "ok.js", "setInterval(() => {}, 1000);\n");
    let (code, _, err) = run_plain(&home, &["ok.js", "--health", "nowhere"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("error: --health \"nowhere\": expected an address like 0.0.0.0:9615"),
        "{err}"
    );
    let (code, _, err) = run_plain(&home, &["missing.js"]);
    assert_eq!(code, Some(1));
    assert!(err.starts_with("error: "), "{err}");

    // A background daemon already owns this COHORT_HOME.
    home.ok(&["ping"]);
    let (code, _, err) = run_plain(&home, &["ok.js"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("error: a cohort daemon already runs for"),
        "{err}"
    );
    assert!(err.contains("cohort kill"), "{err}");
}
