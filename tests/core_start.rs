//! `cohort start`: scripts run by the interpreter their extension names, command lines run the
//! program itself, flags reach the app, and bad input starts nothing.

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

/// The JSON line hold.js prints at start.
fn hold_line(c: &Cohort, name: &str) -> Value {
    let log = c.wait_log(name, "out", "{", T);
    let line = log.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("hold.js printed {line:?}: {e}"))
}

#[test]
fn extension_picks_the_interpreter() {
    let c = Cohort::new();
    c.ok(&["start", &fixture("hold.js"), "--name", "js"]);
    c.ok(&["start", &fixture("hold.py"), "--name", "py"]);
    c.ok(&["start", &fixture("hold.sh"), "--name", "sh"]);
    for (name, program) in [("js", "node"), ("py", "python3"), ("sh", "bash")] {
        let pid = c.pid(name);
        assert_eq!(c.proc(name)["status"], "online");
        // python3 may be a versioned binary (python3.11), or a shim script (pyenv) that execs it:
        // wait for the exec and compare the prefix.
        let runs = wait_until(T, || comm(pid).starts_with(program));
        assert!(
            runs,
            "{name}: pid {pid} runs {:?}, not {program}",
            comm(pid)
        );
    }
    let js = hold_line(&c, "js");
    assert_eq!(
        js["pid"].as_i64(),
        Some(c.pid("js") as i64),
        "the managed pid is node itself"
    );
    c.wait_log("py", "out", &format!("python 3 {}", c.pid("py")), T);
    c.wait_log("sh", "out", &format!("bash {}", c.pid("sh")), T);
}

#[test]
fn command_line_runs_the_program_itself() {
    let c = Cohort::new();
    let o = c.ok(&["start", "sleep 1000", "--name", "s"]);
    assert!(o.stderr.contains("started s"), "{}", o.stderr);
    let pid = c.pid("s");
    assert_eq!(
        comm(pid),
        "sleep",
        "the managed pid must be sleep's, not a shell's"
    );
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
    assert!(
        cmdline.ends_with(b"sleep\x001000\x00"),
        "{:?}",
        String::from_utf8_lossy(&cmdline)
    );
}

#[test]
fn default_name_is_the_script_stem() {
    let c = Cohort::new();
    c.ok(&["start", &fixture("hold.js")]);
    assert_eq!(c.proc("hold")["status"], "online");
}

#[test]
fn args_after_double_dash_reach_the_app() {
    let c = Cohort::new();
    c.ok(&[
        "start",
        &fixture("hold.js"),
        "--name",
        "a",
        "--",
        "--port",
        "8080",
        "two words",
    ]);
    let line = hold_line(&c, "a");
    assert_eq!(
        line["args"],
        serde_json::json!(["--port", "8080", "two words"])
    );
}

#[test]
fn cwd_flag_sets_the_working_directory() {
    let c = Cohort::new();
    let sub = c.work.join("sub dir");
    std::fs::create_dir_all(&sub).expect("mkdir");
    c.ok(&[
        "start",
        &fixture("hold.js"),
        "--name",
        "a",
        "--cwd",
        "sub dir",
    ]);
    let line = hold_line(&c, "a");
    let want = std::fs::canonicalize(&sub).expect("canonical");
    assert_eq!(line["cwd"].as_str(), want.to_str());
    // Without --cwd, the app runs where the CLI ran.
    c.ok(&["start", &fixture("hold.js"), "--name", "b"]);
    let line = hold_line(&c, "b");
    assert_eq!(
        line["cwd"].as_str(),
        std::fs::canonicalize(&c.work).expect("canonical").to_str()
    );
}

#[test]
fn relative_script_is_found_from_the_cwd() {
    let c = Cohort::new();
    c.write(
        "app/server.js",
        "console.log('hi from server'); setInterval(() => {}, 1 << 30);",
    );
    c.ok(&["start", "app/server.js"]);
    c.wait_log("server", "out", "hi from server", T);
}

#[test]
fn missing_script_is_an_error_and_starts_nothing() {
    let c = Cohort::new();
    let o = c.cmd(&["start", "./nope.js"]);
    assert!(!o.success());
    assert!(
        o.stderr.starts_with("error: script not found: ./nope.js"),
        "{}",
        o.stderr
    );
    assert!(
        !c.home.join("cohort.sock").exists(),
        "a failed start should not even start the daemon"
    );
    assert!(c.ls_json().is_empty());
}

#[test]
fn duplicate_name_is_an_error_and_changes_nothing() {
    let c = Cohort::new();
    c.ok(&["start", "sleep 1000", "--name", "s"]);
    let before = c.ls_json();
    let err = c.fails(&["start", "sleep 2000", "--name", "s"]);
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains("\"s\" already exists"), "{err}");
    let after = c.ls_json();
    assert_eq!(after.len(), 1);
    assert_eq!(
        after[0]["pid"], before[0]["pid"],
        "the running app was touched"
    );
    assert_eq!(after[0]["restarts"], 0);
    let pid = after[0]["pid"].as_i64().unwrap_or_default() as i32;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
    assert!(cmdline.ends_with(b"1000\x00"));
}

#[test]
fn bad_flag_values_are_clear_errors() {
    let c = Cohort::new();
    let cases: &[(&[&str], &str)] = &[
        (&["--kill-timeout", "soon"], "--kill-timeout \"soon\""),
        (&["-i", "lots"], "-i \"lots\": expected a number or \"max\""),
        (&["--min-uptime", "a while"], "--min-uptime"),
        (&["--kill-signal", "SIGNOPE"], "--kill-signal"),
        (&["--stop-exit-codes", "0,x"], "--stop-exit-codes"),
        (&["--exec-mode", "turbo"], "--exec-mode \"turbo\""),
        (&["--name", "all"], "--name"),
        (&["--name", "12"], "--name"),
        (&["--cwd", "no-such-dir"], "--cwd no-such-dir"),
    ];
    for (flags, want) in cases {
        let mut args = vec!["start", "sleep 1000"];
        args.extend_from_slice(flags);
        let o = c.cmd(&args);
        assert!(!o.success(), "{flags:?} was accepted");
        assert!(o.stderr.starts_with("error: "), "{flags:?}: {}", o.stderr);
        assert!(
            o.stderr.contains(want),
            "{flags:?}: expected {want:?} in {}",
            o.stderr
        );
    }
    // clap's own errors (wrong type) are errors too.
    let o = c.cmd(&["start", "sleep 1000", "--max-restarts", "many"]);
    assert!(!o.success());
    assert!(o.stderr.contains("--max-restarts"), "{}", o.stderr);
    assert!(c.ls_json().is_empty(), "a bad start started something");
}
