//! `cohort run`: the foreground mode for containers. Run as PID 1 of a new PID namespace (we are
//! root), it reaps orphans of any origin, answers /healthz and /readyz, serves `cohort ls` on the same
//! COHORT_HOME, and stops the apps gracefully on SIGTERM; its exit code tells how the apps ended.

mod ops_support;

use ops_support::*;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

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
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

fn wait_exit(child: &mut Child, secs: u64) -> std::process::ExitStatus {
    wait_for(secs, "cohort run to exit", || {
        child.try_wait().ok().flatten()
    })
}

#[test]
fn run_as_pid1_reaps_orphans_answers_probes_and_stops_gracefully() {
    let home = Home::new("run-pid1");
    let dir = home.path();
    write(
        dir,
        "web.js",
        "console.log('web up');\n\
         process.on('SIGINT', () => { console.log('web got SIGINT, closing'); setTimeout(() => process.exit(0), 100); });\n\
         setInterval(() => {}, 1000);\n",
    );
    // Five orphans: each subshell starts a background job and exits at once, so the job is
    // re-parented to PID 1 (cohort) and must be reaped there when it ends.
    write(
        dir,
        "orphaner.sh",
        "for i in 1 2 3 4 5; do ( (sleep 1; touch \"$MARK_DIR/orphan-$i\") & ); done\nexec sleep 1000\n",
    );
    write(
        dir,
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
        .env("COHORT_HOME", dir)
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
    let pid1 = wait_for(10, "cohort under unshare", || {
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
    let body = wait_for(15, "/readyz 200", || match http_get(port, "/readyz") {
        Some((200, b)) => Some(b),
        _ => None,
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
    wait_for(10, "an orphan adopted by cohort", || {
        descendants(pid1)
            .iter()
            .any(|d| d.3 == pid1 && d.2 == "sh")
            .then_some(())
    });
    // ...ran to their end, and none is left a zombie.
    wait_for(10, "the orphans to finish", || {
        (1..=5)
            .all(|i| dir.join(format!("orphan-{i}")).exists())
            .then_some(())
    });
    wait_for(5, "no zombie under cohort", || {
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
    let out = home.run(&["stop", "orphaner"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, body) = http_get(port, "/readyz").expect("readyz answers");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("orphaner:0 is stopped"), "{body}");

    // SIGTERM: every app is stopped with its kill_signal; web's own handler runs; exit code 0.
    unsafe { libc::kill(pid1, libc::SIGTERM) };
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
        !dir.join("cohort.sock").exists(),
        "the socket is removed on exit"
    );
}

fn run_plain(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let mut child = ChildGuard(
        Command::new(BIN)
            .arg("run")
            .args(args)
            .env("COHORT_HOME", dir)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("o")).unwrap())
            .stderr(std::fs::File::create(dir.join("e")).unwrap())
            .spawn()
            .expect("run cohort"),
    );
    let st = wait_exit(&mut child.0, 20);
    let read = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap_or_default();
    (st.code(), read("o"), read("e"))
}

#[test]
fn run_exit_code_follows_how_the_apps_ended() {
    let home = Home::new("run-codes");
    let dir = home.path();
    write(dir, "ok.js", "console.log('all done');\n");
    write(
        dir,
        "bad.js",
        "console.error('failing'); process.exit(3);\n",
    );

    let (code, out, err) = run_plain(dir, &["ok.js", "--no-autorestart"]);
    assert_eq!(code, Some(0), "stderr: {err}");
    assert!(out.contains("ok|0 | all done"), "{out}");

    let (code, _, err) = run_plain(dir, &["bad.js", "--no-autorestart"]);
    assert_eq!(code, Some(1), "stderr: {err}");
    assert!(
        err.contains("bad|0 | failing") && err.contains("bad:0 (exit code 3)"),
        "{err}"
    );

    // Crashing in a loop ends errored: code 1. --json prints raw log objects.
    let (code, out, err) = run_plain(
        dir,
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
    assert!(err.contains("bad:0 (errored)"), "{err}");
    let first: serde_json::Value =
        serde_json::from_str(out.lines().next().unwrap_or("")).expect("JSON lines");
    assert_eq!(first["name"], "bad");
    assert_eq!(first["line"], "failing");
}

#[test]
fn run_refuses_bad_input_clearly() {
    let home = Home::new("run-bad");
    let dir = home.path();
    write(dir, "ok.js", "setInterval(() => {}, 1000);\n");
    let (code, _, err) = run_plain(dir, &["ok.js", "--health", "nowhere"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("error: --health \"nowhere\": expected an address like 0.0.0.0:9615"),
        "{err}"
    );
    let (code, _, err) = run_plain(dir, &["missing.js"]);
    assert_eq!(code, Some(1));
    assert!(err.starts_with("error: "), "{err}");

    // A background daemon already owns this COHORT_HOME.
    assert!(home.run(&["ping"]).status.success());
    let (code, _, err) = run_plain(dir, &["ok.js"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("error: a cohort daemon already runs for"),
        "{err}"
    );
    assert!(err.contains("cohort kill"), "{err}");
}
