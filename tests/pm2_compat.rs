//! What a PM2 user types, against the real binary: the config shapes PM2 reads (a single app, the
//! `pm2` key, JavaScript-object `.json`, aliases, stdin, `NULL` logs, `~`, names with spaces,
//! append_env_to_name, instance_var, increment_var), PM2's output shapes (`jlist`, `jlist --pm2`,
//! `prettylist`, `ls --sort`), its verbs and flags (startOrRestart, startOrReload, sendSignal, pid,
//! several scripts, selectors by script / regex / namespace, -f, -x, restart --node-args,
//! --update-env), and the small things scripts rely on (closed pipes, `stop all` on nothing, ids).

mod common;

use common::*;
use serde_json::Value;
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

const T: Duration = Duration::from_secs(15);

fn names(c: &Cohort) -> Vec<String> {
    c.ls_json()
        .iter()
        .map(|p| p["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn describe(c: &Cohort, target: &str) -> Vec<Value> {
    let o = c.ok(&["describe", target, "--json"]);
    serde_json::from_str(&o.stdout).expect("describe --json is JSON")
}

/// The environment of process `id` as `cohort env` prints it.
fn env_of(c: &Cohort, id: u64) -> String {
    c.ok(&["env", &id.to_string()]).stdout
}

#[test]
fn a_pm2_json_file_that_is_a_javascript_object_with_aliases() {
    let c = Cohort::new();
    let home = c.root().join("user-home");
    std::fs::create_dir_all(&home).unwrap();
    c.write(
        "report.json",
        r#"// one app, no "apps" list, as PM2 reads it
{
  name: 'Export report',
  cmd: 'sleep 1000',
  out: 'NULL',
  err: '~/report-err.log',
  instances: 2,
  append_env_to_name: true,
  instance_var: 'APP_ID',
  increment_var: 'PORT',
  env: { PORT: 3000, },
  env_prod: { MODE: 'prod' },
}
"#,
    );
    let o = c.cmd_env(
        &["start", "report.json", "--env", "prod"],
        &[("HOME", home.to_str().unwrap())],
    );
    assert!(o.success(), "{}{}", o.stdout, o.stderr);
    assert!(!o.stderr.contains("unknown field"), "{}", o.stderr);
    let procs = c.procs("Export report-prod");
    assert_eq!(procs.len(), 2, "{:?}", names(&c));
    let d = describe(&c, "Export report-prod");
    for (i, p) in d.iter().enumerate() {
        assert_eq!(p["out_log"], "/dev/null", "NULL discards: {p}");
        assert_eq!(
            p["err_log"],
            home.join(format!("report-err-{i}.log")).to_str().unwrap(),
            "~ is the home folder: {p}"
        );
    }
    assert!(!c.work.join("NULL").exists() && !c.work.join("~").exists());
    let env0 = env_of(&c, procs[0]["id"].as_u64().unwrap());
    let env1 = env_of(&c, procs[1]["id"].as_u64().unwrap());
    assert!(
        env0.contains("APP_ID: 0") && env1.contains("APP_ID: 1"),
        "{env1}"
    );
    assert!(
        env0.contains("PORT: 3000") && env1.contains("PORT: 3001"),
        "{env1}"
    );
    assert!(env0.contains("MODE: prod"), "{env0}");
    assert!(
        !env0.contains("NODE_APP_INSTANCE"),
        "instance_var renames it: {env0}"
    );
    // A name with a space is one selector.
    c.ok(&["stop", "Export report-prod"]);
    assert!(c
        .procs("Export report-prod")
        .iter()
        .all(|p| p["status"] == "stopped"));
}

#[test]
fn the_pm2_key_a_config_on_stdin_and_default_log_names_with_spaces() {
    let c = Cohort::new();
    c.write(
        "legacy.json",
        r#"{"pm2": [{"name": "legacy", "exec": "sleep 1000", "exec_interpreter": "none"}]}"#,
    );
    c.ok(&["start", "legacy.json"]);
    assert_eq!(c.proc("legacy")["status"], "online");

    let mut cmd = c.command(&["start", "-"]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("cohort start -");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"{ apps: [ { name: 'from stdin', script: 'sh', args: ['-c', 'echo hello; exec sleep 1000'] } ] }",
        )
        .unwrap();
    let out = child
        .wait_with_output()
        .expect("waiting for cohort start -");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(c.proc("from stdin")["status"], "online");
    // Log files of a name with a space: `-` instead of the space.
    let log = c.home.join("logs").join("from-stdin-0-out.log");
    assert!(
        wait_until(T, || std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("hello")),
        "no {}",
        log.display()
    );
}

#[test]
fn jlist_and_prettylist_print_pm2s_shape() {
    let c = Cohort::new();
    c.ok(&["start", "sleep 1000", "--name", "api"]);
    c.ok(&["start", "sleep 1000", "--name", "idle"]);
    c.ok(&["stop", "idle"]);

    let both = c.jlist();
    let api = both.iter().find(|p| p["name"] == "api").unwrap();
    // cohort's fields keep their meaning …
    assert_eq!(api["id"], 0);
    assert_eq!(api["status"], "online");
    // … and PM2's are there for jq filters written for pm2.
    assert_eq!(api["pm_id"], 0);
    assert_eq!(api["pm2_env"]["status"], "online");
    assert_eq!(api["pm2_env"]["restart_time"], 0);
    assert_eq!(api["pm2_env"]["exec_mode"], "fork_mode");
    assert_eq!(api["pm2_env"]["namespace"], "default");
    assert_eq!(api["pm2_env"]["NODE_APP_INSTANCE"], 0);
    assert!(api["pm2_env"]["versioning"].is_null());
    assert!(api["pm2_env"]["pm_exec_path"]
        .as_str()
        .unwrap()
        .ends_with("/sleep"));
    assert!(api["monit"]["memory"].is_u64());

    let o = c.ok(&["jlist", "--pm2"]);
    let pm2: Vec<Value> = serde_json::from_str(o.stdout.trim()).unwrap();
    let idle = pm2.iter().find(|p| p["name"] == "idle").unwrap();
    assert_eq!(idle["pid"], 0, "PM2 shows 0 for a stopped process");
    assert!(idle.get("id").is_none() && idle.get("status").is_none());
    assert_eq!(idle["pm2_env"]["status"], "stopped");

    // prettylist: what PM2's e2e helpers grep (one status word per process).
    let pretty = c.ok(&["prettylist"]).stdout;
    assert_eq!(pretty.matches("online").count(), 1, "{pretty}");
    assert_eq!(pretty.matches("stopped").count(), 1, "{pretty}");
    assert!(pretty.contains("pm_id: 0,"), "{pretty}");
    assert!(pretty.contains("name: 'api'"), "{pretty}");
    assert!(pretty.contains("pm_out_log_path: '"), "{pretty}");

    // ls --sort
    let o = c.ok(&["ls", "--json", "--sort", "name:desc"]);
    let sorted: Vec<Value> = serde_json::from_str(o.stdout.trim()).unwrap();
    assert_eq!(sorted[0]["name"], "idle");
    let err = c.fails(&["ls", "--sort", "size"]);
    assert!(err.contains("unknown field \"size\""), "{err}");
}

#[test]
fn start_or_restart_start_or_reload_pid_and_send_signal() {
    let c = Cohort::new();
    c.write(
        "usr2.js",
        "process.on('SIGUSR2', () => console.log('got usr2'));\nconsole.log('up ' + process.pid);\nsetInterval(() => {}, 1 << 30);\n",
    );
    c.write(
        "eco.config.js",
        "module.exports = { apps: [{ name: 'sig', script: 'usr2.js' }, { name: 'other', script: 'sleep', args: '1000' }] };\n",
    );
    c.ok(&["startOrRestart", "eco.config.js"]);
    let first = c.pid("sig");
    c.ok(&["startOrRestart", "eco.config.js"]);
    assert_eq!(c.proc("sig")["restarts"], 1);
    assert_ne!(c.pid("sig"), first);
    c.ok(&["delete", "other"]);
    c.ok(&["startOrReload", "eco.config.js"]);
    assert_eq!(
        c.proc("other")["status"],
        "online",
        "the missing app is started"
    );

    let pids = c.ok(&["pid", "sig"]).stdout;
    assert_eq!(pids.trim(), c.pid("sig").to_string());
    let all = c.ok(&["pid"]).stdout;
    assert_eq!(all.lines().count(), 2, "{all}");

    c.wait_log("sig", "out", &format!("up {}", c.pid("sig")), T);
    c.ok(&["sendSignal", "SIGUSR2", "sig"]);
    c.wait_log("sig", "out", "got usr2", T);
    let err = c.fails(&["sendSignal", "SIGNOPE", "sig"]);
    assert!(err.contains("unknown signal"), "{err}");
}

#[test]
fn selectors_by_script_regex_and_namespace() {
    let c = Cohort::new();
    c.write("app.js", "setInterval(() => {}, 1 << 30);\n");
    c.write("other.js", "setInterval(() => {}, 1 << 30);\n");
    // Several scripts in one start, one of them in a namespace.
    c.ok(&["start", "app.js", "other.js", "--namespace", "web"]);
    c.ok(&["start", "sleep 1000", "--name", "api-1"]);
    c.ok(&["start", "sleep 1000", "--name", "api-2"]);
    assert_eq!(names(&c), ["app", "other", "api-1", "api-2"]);

    c.ok(&["stop", "app.js"]);
    assert_eq!(c.proc("app")["status"], "stopped");
    assert_eq!(c.proc("other")["status"], "online");
    // `start` on a stopped app's script starts it again (PM2).
    c.ok(&["start", "app.js"]);
    assert_eq!(c.proc("app")["status"], "online");
    // A running one is an error that says what to do; -f starts a second copy.
    let err = c.fails(&["start", "app.js"]);
    assert!(err.contains("-f"), "{err}");
    c.ok(&["start", "app.js", "-f"]);
    assert_eq!(c.proc("app-1")["status"], "online");

    c.ok(&["stop", "/^api-/"]);
    assert_eq!(c.proc("api-1")["status"], "stopped");
    assert_eq!(c.proc("api-2")["status"], "stopped");
    let err = c.fails(&["stop", "/^nope/"]);
    assert!(err.contains("no app name matches /^nope/"), "{err}");

    c.ok(&["stop", "web"]);
    assert_eq!(c.proc("other")["status"], "stopped");
    // `start NAME` restarts an app that exists (PM2).
    c.ok(&["start", "other"]);
    assert_eq!(c.proc("other")["status"], "online");
    // -x is PM2's plain switch; `-x cluster` still sets the mode.
    c.ok(&["start", "-x", "sleep 1000", "--name", "plain"]);
    assert_eq!(c.proc("plain")["mode"], "fork");
}

#[test]
fn ids_survive_resurrect_and_restart_from_zero_after_delete_all() {
    let c = Cohort::new();
    // Nothing to act on: done, as PM2 scripts expect.
    c.ok(&["stop", "all"]);
    c.ok(&["delete", "all"]);
    for n in ["a", "b", "c"] {
        c.ok(&["start", "sleep 1000", "--name", n]);
    }
    c.ok(&["delete", "b"]);
    c.ok(&["save"]);
    c.ok(&["kill"]);
    c.ok(&["resurrect"]);
    let ids: Vec<(String, u64)> = c
        .ls_json()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["id"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(ids, [("a".to_string(), 0), ("c".to_string(), 2)]);
    c.ok(&["start", "sleep 1000", "--name", "d"]);
    assert_eq!(c.proc("d")["id"], 3);
    c.ok(&["delete", "all"]);
    c.ok(&["start", "sleep 1000", "--name", "e"]);
    assert_eq!(
        c.proc("e")["id"],
        0,
        "ids start again from 0 after delete all"
    );
}

#[test]
fn a_closed_pipe_ends_output_quietly() {
    let c = Cohort::new();
    for i in 0..20 {
        c.ok(&["start", "sleep 1000", "--name", &format!("p{i}")]);
    }
    for args in [&["describe", "all"][..], &["prettylist"], &["ls"]] {
        let mut cmd = c.command(args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawning cohort");
        drop(child.stdout.take()); // the reader is gone before anything is written
        let out = child.wait_with_output().expect("waiting for cohort");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {:?} {stderr}", out.status);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn flags_pm2_users_type_get_cohorts_answer_not_claps() {
    let c = Cohort::new();
    c.write("app.js", "setInterval(() => {}, 1 << 30);\n");
    c.ok(&["start", "app.js"]);
    c.ok(&["restart", "app", "--update-env"]);
    c.ok(&["reload", "app", "-a"]);
    c.ok(&["restart", "app", "--node-args", "--max-old-space-size=64"]);
    assert_eq!(
        describe(&c, "app")[0]["interpreter_args"],
        serde_json::json!(["--max-old-space-size=64"])
    );
    let err = c.fails(&["restart", "app", "--name", "renamed"]);
    assert!(err.contains("cohort start SCRIPT --name renamed"), "{err}");
    let err = c.cmd(&["reloadLogs"]).stderr;
    assert!(
        !err.contains("similar") && !err.contains("unrecognized"),
        "{err}"
    );
    // node_args on something that has no interpreter: said, not silently dropped.
    let o = c.ok(&[
        "start",
        "sleep 1000",
        "--name",
        "bin",
        "--node-args",
        "--inspect",
    ]);
    assert!(o.stderr.contains("--node-args ignored"), "{}", o.stderr);
}

/// Runs `cohort ARGS` with `input` on its stdin.
fn with_stdin(c: &Cohort, args: &[&str], input: &str) -> std::process::Output {
    let mut cmd = c.command(args);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawning cohort");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().expect("waiting for cohort")
}

#[test]
fn a_fork_app_that_crashes_at_start_up_fails_its_start() {
    require_tool("node", "nodejs");
    let c = Cohort::new();
    // Throws a moment after it started (a failed connection, a missing setting): PM2 says
    // "online"; cohort's start waits min(min_uptime, 1 s) for a fork app and says why it failed.
    c.write(
        "late.js",
        "setTimeout(() => { throw new Error('no database at start') }, 200);\n",
    );
    let o = c.cmd(&["start", "late.js"]);
    assert!(
        !o.success(),
        "start said it worked:\n{}{}",
        o.stdout,
        o.stderr
    );
    assert!(
        o.stderr
            .contains("late:0 exited with code 1 before it was ready"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("cohort logs late --err"), "{}", o.stderr);
    let o = c.cmd(&[
        "start",
        "node",
        "--name",
        "exits",
        "--",
        "-e",
        "process.exit(1)",
    ]);
    assert!(!o.success(), "{}", o.stderr);
    assert!(
        o.stderr.contains("exits:0 exited with code 1"),
        "{}",
        o.stderr
    );

    // A healthy app starts; a one-shot job that ends with code 0 is no failed start.
    c.ok(&["start", "sleep 1000", "--name", "healthy"]);
    assert_eq!(c.proc("healthy")["status"], "online");
    c.ok(&["start", "true", "--name", "job", "--no-autorestart"]);
    // min_uptime 0: counted started at spawn (the window is min(min_uptime, 1 s)).
    c.ok(&[
        "start",
        "sleep 1000",
        "--name",
        "at-once",
        "--min-uptime",
        "0",
    ]);
}

#[test]
fn watch_options_use_polling_restarts_on_a_change_and_warns_about_the_rest() {
    let c = Cohort::new();
    c.write("src/conf.txt", "one\n");
    c.write(
        "polled.json",
        r#"{"apps": [{"name": "polled", "script": "sleep", "args": "1000",
            "watch": ["src"], "watch_delay": 50,
            "watch_options": {"usePolling": true, "interval": 100, "followSymlinks": true,
                              "persistent": true, "ignoreInitial": true, "depth": 3}}]}"#,
    );
    let o = c.ok(&["start", "polled.json"]);
    assert!(
        o.stderr.contains("watch_options.depth: no effect"),
        "{}",
        o.stderr
    );
    assert!(
        !o.stderr.contains("usePolling") && !o.stderr.contains("not supported"),
        "{}",
        o.stderr
    );
    let first = c.pid("polled");
    // Polling compares modification times: make sure the change is seen as one.
    std::thread::sleep(Duration::from_millis(20));
    c.write("src/conf.txt", "two, longer\n");
    let p = poll("a polled change restarts the app", T, || {
        let p = c.proc("polled");
        (p["restarts"] == 1).then_some(p)
    });
    assert_eq!(p["restart_reason"], "watch");
    assert_ne!(c.pid("polled"), first);
    assert_eq!(c.jlist()[0]["pm2_env"]["watch"], true);
    c.ok(&["stop", "polled"]);
    assert_eq!(
        c.jlist()[0]["pm2_env"]["watch"],
        false,
        "a stopped app is not watched"
    );
}

#[test]
fn what_pm2s_own_e2e_scripts_type() {
    let c = Cohort::new();
    c.write(
        "all.json",
        r#"{"apps": [{"name": "a", "script": "sleep", "args": "1000"},
                     {"name": "b", "script": "sleep", "args": "1000"}]}"#,
    );
    let config = std::fs::read_to_string(c.work.join("all.json")).unwrap();
    let o = with_stdin(&c, &["start", "-"], &config);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // A config on stdin selects its apps for the other verbs too (`cat all.json | pm2 delete -`).
    let o = with_stdin(&c, &["delete", "-"], &config);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(names(&c).is_empty(), "{:?}", names(&c));

    // Starting a stopped app again is no restart (PM2's restart_time stays); restarting a
    // running one is.
    c.ok(&["start", "sleep 1000", "--name", "s"]);
    c.ok(&["stop", "s"]);
    c.ok(&["restart", "s"]);
    assert_eq!(c.proc("s")["restarts"], 0);
    c.ok(&["stop", "s"]);
    c.ok(&["start", "s"]);
    assert_eq!(c.proc("s")["restarts"], 0);
    c.ok(&["restart", "s"]);
    assert_eq!(c.proc("s")["restarts"], 1);

    // sendSignal with several targets (PM2's signal.sh passes every `pm_id:` it greps): each
    // process gets the signal once.
    c.write(
        "usr2.js",
        "process.on('SIGUSR2', () => console.log('got usr2'));\nconsole.log('up');\nsetInterval(() => {}, 1 << 30);\n",
    );
    c.ok(&["start", "usr2.js", "--name", "sig"]);
    let id = c.proc("sig")["id"].to_string();
    c.wait_log("sig", "out", "up", T);
    c.ok(&["sendSignal", "SIGUSR2", &id, &id, "sig"]);
    c.wait_log("sig", "out", "got usr2", T);
    // The signal arrives once: a second one would be logged by now too.
    c.ok(&["sendSignal", "SIGUSR2", "s"]);
    assert_eq!(c.log("sig", "out").matches("got usr2").count(), 1);

    // prettylist in PM2's key order: the process's pm_id comes after pm2_env, with a comma.
    let pretty = c.ok(&["prettylist"]).stdout;
    let top_pm_id = pretty
        .lines()
        .filter(|l| l.starts_with("    pm_id: "))
        .collect::<Vec<_>>();
    assert_eq!(top_pm_id.len(), 2, "{pretty}");
    assert!(top_pm_id.iter().all(|l| l.ends_with(',')), "{pretty}");
    assert!(pretty.contains("watch: false"), "{pretty}");

    // restart --watch (PM2 toggles watching) says what to type.
    let err = c.fails(&["restart", "s", "--watch"]);
    assert!(err.contains("cohort start SCRIPT --watch"), "{err}");
}

#[test]
fn cron_restart_starts_a_job_that_ended_and_a_stopped_app_as_pm2() {
    let c = Cohort::new();
    // PM2's periodic-job pattern: a script that runs and exits, autorestart off, cron_restart on.
    c.ok(&[
        "start",
        "sh -c 'echo ran'",
        "--name",
        "job",
        "--no-autorestart",
        "-c",
        "* * * * * *",
        "--no-vizion",
    ]);
    let log = c.log_path("job", 0, "out");
    assert!(
        wait_until(T, || std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("ran")
            .count()
            >= 3),
        "the job did not run again on the cron ticks"
    );
    // A stopped app is started again by the next tick (PM2's cron-system.sh).
    c.ok(&[
        "start",
        "sleep 1000",
        "--name",
        "cr",
        "--cron",
        "*/2 * * * * *",
    ]);
    c.ok(&["stop", "cr"]);
    c.wait_status("cr", "online", T);
}

#[test]
fn only_picks_apps_of_a_config_for_every_verb() {
    let c = Cohort::new();
    c.write(
        "all.json",
        r#"{"apps": [{"name": "echo", "script": "sleep", "args": "1000", "max_restarts": "50"},
                     {"name": "child", "script": "sleep", "args": "1000"}]}"#,
    );
    c.ok(&["start", "all.json", "--only", "child"]);
    assert_eq!(names(&c), vec!["child"]);
    c.ok(&["start", "all.json", "--only", "echo"]);
    assert_eq!(
        describe(&c, "echo")[0]["max_restarts"],
        50,
        "\"50\" reads as 50"
    );
    c.ok(&["restart", "all.json", "--only", "child"]);
    assert_eq!(c.proc("child")["restarts"], 1);
    assert_eq!(c.proc("echo")["restarts"], 0);
    c.ok(&["delete", "all.json", "--only", "echo"]);
    assert_eq!(names(&c), vec!["child"]);
    let err = c.fails(&["stop", "child", "--only", "child"]);
    assert!(err.contains("cohort stop child"), "{err}");
}

#[test]
fn a_command_line_with_shell_syntax_runs_under_sh() {
    let c = Cohort::new();
    // PM2's start-app.sh: `pm2 start "cc hello.c; ./a.out"`.
    c.ok(&[
        "start",
        "echo first; echo second && exec sleep 1000",
        "--name",
        "two",
    ]);
    c.wait_log("two", "out", "second", T);
    assert_eq!(c.log("two", "out"), "first\nsecond\n");
    // Quoted operators are arguments: the program runs itself, without a shell.
    c.ok(&["start", "sh -c 'exec sleep 1000' ';'", "--name", "plain"]);
    let d = describe(&c, "plain");
    assert_eq!(
        d[0]["args"],
        serde_json::json!(["-c", "exec sleep 1000", ";"]),
        "{}",
        d[0]
    );
}
