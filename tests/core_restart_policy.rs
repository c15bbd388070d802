//! The restart policy as a user sees it in `ls` and in the app's log: crash loops end `errored`,
//! restart_delay and exp_backoff_restart_delay space the runs, stop_exit_codes and --no-autorestart
//! leave the app `stopped`.

mod common;

use common::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(15);

/// A crasher that starts in a few ms (node takes 50-300 ms, too noisy to time delays with): prints
/// "run <unix ms>" like crash.js, then exits 1.
const SH_CRASH: &str = "sh -c 'echo run $(date +%s%3N); exit 1'";

/// The start times crash.js (or SH_CRASH) logged ("run <unix ms>"), in order.
fn runs(c: &Cohort, name: &str) -> Vec<u64> {
    c.log(name, "out")
        .lines()
        .filter_map(|l| l.strip_prefix("run ")?.trim().parse().ok())
        .collect()
}

#[test]
fn crash_loop_ends_errored_after_max_restarts() {
    let c = Cohort::new();
    c.start_crashing(&[
        "start",
        &fixture("crash.js"),
        "--name",
        "loop",
        "--min-uptime",
        "2000",
        "--max-restarts",
        "3",
    ]);
    let p = c.wait_status("loop", "errored", T);
    assert_eq!(p["restarts"], 3, "{p}");
    assert!(p["pid"].is_null());
    // One first run and three restarts: four runs in the log, then nothing.
    let n = runs(&c, "loop").len();
    assert!(
        wait_until(Duration::from_secs(5), || runs(&c, "loop").len() == 4),
        "runs logged: {n}"
    );
    let d = c.ok(&["describe", "loop"]).stdout;
    assert!(d.contains("errored"), "{d}");
    // A restart gives it a fresh budget (and says the process crashed at start-up again).
    c.start_crashing(&["restart", "loop"]);
    let p = c.wait_status("loop", "errored", T);
    assert_eq!(p["restarts"], 3 + 1 + 3, "{p}");
}

#[test]
fn restart_delay_waits_before_restarting() {
    let c = Cohort::new();
    c.start_crashing(&[
        "start",
        SH_CRASH,
        "--name",
        "slow",
        "--restart-delay",
        "700",
        "--max-restarts",
        "50",
    ]);
    c.wait_status("slow", "waiting_restart", T);
    assert!(
        wait_until(T, || runs(&c, "slow").len() >= 3),
        "only {:?}",
        runs(&c, "slow")
    );
    c.ok(&["stop", "slow"]);
    let r = runs(&c, "slow");
    for w in r.windows(2) {
        assert!(
            w[1] - w[0] >= 700,
            "restarted {} ms after the previous start (delay 700): {r:?}",
            w[1] - w[0]
        );
    }
    assert_eq!(
        c.proc("slow")["status"],
        "stopped",
        "stop during waiting_restart must cancel the restart"
    );
}

#[test]
fn exp_backoff_delay_grows() {
    let c = Cohort::new();
    c.start_crashing(&[
        "start",
        SH_CRASH,
        "--name",
        "back",
        "--exp-backoff-restart-delay",
        "200",
        "--max-restarts",
        "50",
    ]);
    assert!(
        wait_until(T, || runs(&c, "back").len() >= 5),
        "only {:?}",
        runs(&c, "back")
    );
    c.ok(&["stop", "back"]);
    let r = runs(&c, "back");
    let gaps: Vec<u64> = r.windows(2).map(|w| w[1] - w[0]).collect();
    // Delays 200, 300, 450, 675 ms (×1.5), plus the few ms sh takes to start and exit (more on a
    // loaded machine: the margin of the last check is 275 ms).
    for (gap, min) in gaps.iter().zip([200, 300, 450, 675]) {
        assert!(*gap >= min, "gap {gap} ms < backoff {min} ms: {gaps:?}");
    }
    assert!(gaps[3] > gaps[0] + 200, "the delay did not grow: {gaps:?}");
}

#[test]
fn waiting_restart_is_visible_between_runs() {
    let c = Cohort::new();
    c.start_crashing(&[
        "start",
        &fixture("crash.js"),
        "--name",
        "w",
        "--restart-delay",
        "5000",
    ]);
    let p = c.wait_status("w", "waiting_restart", T);
    assert!(p["pid"].is_null(), "{p}");
    assert_eq!(
        p["restarts"], 0,
        "the restart counts when it happens, not before: {p}"
    );
    let table = c.ok(&["ls"]).stdout;
    assert!(table.contains("waiting_restart"), "{table}");
}

#[test]
fn stop_exit_code_means_done() {
    let c = Cohort::new();
    // Exiting with a stop exit code at start-up is a job done, not a failed start.
    c.ok(&[
        "start",
        &fixture("crash.js"),
        "--name",
        "done",
        "--stop-exit-codes",
        "0,3",
        "--",
        "3",
    ]);
    let p = c.wait_status("done", "stopped", T);
    assert_eq!(p["restarts"], 0);
    assert_eq!(runs(&c, "done").len(), 1);
    let d = c.ok(&["describe", "done"]).stdout;
    assert!(
        d.lines()
            .any(|l| l.contains("last exit code") && l.trim_end().ends_with(" 3")),
        "{d}"
    );
}

#[test]
fn other_exit_codes_still_restart() {
    let c = Cohort::new();
    c.start_crashing(&[
        "start",
        &fixture("crash.js"),
        "--name",
        "again",
        "--stop-exit-codes",
        "0",
        "--max-restarts",
        "2",
        "--",
        "4",
    ]);
    let p = c.wait_status("again", "errored", T);
    assert_eq!(p["restarts"], 2);
}

#[test]
fn no_autorestart_leaves_it_stopped() {
    let c = Cohort::new();
    c.start_crashing(&[
        "start",
        &fixture("crash.js"),
        "--name",
        "once",
        "--no-autorestart",
    ]);
    let p = c.wait_status("once", "stopped", T);
    assert_eq!(p["restarts"], 0);
    assert_eq!(runs(&c, "once").len(), 1);
}

#[test]
fn one_crash_within_budget_restarts_and_stays_online() {
    // crash_once.js exits 7 on its first (short) run, then stays up: max_restarts 1 allows that one
    // restart, so it ends online with restarts 1 and describe shows the exit code of the crash.
    let c = Cohort::new();
    c.start_crashing(&[
        "start",
        &fixture("crash_once.js"),
        "--name",
        "co",
        "--max-restarts",
        "1",
    ]);
    c.wait_log("co", "out", "up again", T);
    let p = c.wait_status("co", "online", T);
    assert_eq!(p["restarts"], 1, "{p}");
    let d = c.ok(&["describe", "co"]).stdout;
    assert!(
        d.lines()
            .any(|l| l.contains("last exit code") && l.trim_end().ends_with(" 7")),
        "{d}"
    );
}
