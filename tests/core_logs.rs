//! Logs: every line reaches the file in order (even at full speed, even from a crashing app, even
//! without a final newline), `--time` stamps, `logs` shows the tail and follows, `flush` empties.

mod common;

use common::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(15);

#[test]
fn a_hundred_thousand_lines_arrive_complete_and_in_order() {
    let c = Cohort::new();
    c.ok(&[
        "start",
        &fixture("spam.js"),
        "--name",
        "spam",
        "--no-autorestart",
        "--",
        "100000",
    ]);
    c.wait_status("spam", "stopped", T);
    c.wait_log("spam", "err", "done", T);
    let mut count = 0;
    // The pipe is read to its end after the exit: wait for the last line, then check them all.
    let complete = wait_until(T, || {
        count = c.log("spam", "out").lines().count();
        count >= 100_000
    });
    assert!(complete, "only {count} of 100000 lines reached the log");
    let log = c.log("spam", "out");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 100_000, "lines were duplicated");
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(
            *l,
            format!("line {}", i + 1),
            "line {} is out of order or cut",
            i + 1
        );
    }
    assert!(log.ends_with("line 100000\n"));
}

#[test]
fn last_line_before_a_crash_is_kept() {
    let c = Cohort::new();
    c.start_crashing(&[
        "start",
        &fixture("last_words.js"),
        "--name",
        "lw",
        "--no-autorestart",
    ]);
    c.wait_status("lw", "stopped", T);
    let log = c.wait_log("lw", "out", "last words before the crash", T);
    assert_eq!(log, "last words before the crash\n");
}

#[test]
fn line_without_newline_is_completed_at_exit() {
    let c = Cohort::new();
    c.start_crashing(&[
        "start",
        &fixture("last_words.js"),
        "--name",
        "nonl",
        "--no-autorestart",
        "--",
        "nonl",
    ]);
    c.wait_status("nonl", "stopped", T);
    let log = c.wait_log("nonl", "out", "no newline at the end", T);
    assert_eq!(
        log, "no newline at the end\n",
        "the line should be kept and completed"
    );
}

/// True for "YYYY-MM-DDTHH:MM:SS: " at the start of `line` (the default --time format).
fn stamped(line: &str) -> bool {
    let b = line.as_bytes();
    if b.len() < 21 {
        return false;
    }
    let digits = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18];
    digits.iter().all(|i| b[*i].is_ascii_digit())
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && &b[19..21] == b": "
}

#[test]
fn time_flag_stamps_every_line() {
    let c = Cohort::new();
    c.ok(&[
        "start",
        &fixture("spam.js"),
        "--name",
        "ts",
        "--time",
        "--no-autorestart",
        "--",
        "50",
    ]);
    c.wait_status("ts", "stopped", T);
    assert!(wait_until(T, || c.log("ts", "out").lines().count() == 50));
    let log = c.log("ts", "out");
    for (i, l) in log.lines().enumerate() {
        assert!(stamped(l), "line {i} has no timestamp: {l:?}");
        assert!(l.ends_with(&format!(": line {}", i + 1)), "{l:?}");
    }
    let err = c.wait_log("ts", "err", "done", T);
    assert!(
        stamped(err.lines().next().unwrap_or_default()),
        "stderr lines are stamped too: {err:?}"
    );
    // Without --time nothing is added.
    c.ok(&[
        "start",
        &fixture("spam.js"),
        "--name",
        "plain",
        "--no-autorestart",
        "--",
        "3",
    ]);
    assert!(
        wait_until(T, || c.log("plain", "out") == "line 1\nline 2\nline 3\n"),
        "{:?}",
        c.log("plain", "out")
    );
}

#[test]
fn nostream_shows_the_last_lines_prefixed() {
    let c = Cohort::new();
    c.ok(&[
        "start",
        &fixture("spam.js"),
        "--name",
        "tail",
        "--no-autorestart",
        "--",
        "200",
    ]);
    c.wait_status("tail", "stopped", T);
    assert!(wait_until(T, || c.log("tail", "out").lines().count() == 200));
    let o = c.ok(&["logs", "tail", "--nostream", "--lines", "5", "--out"]);
    let shown: Vec<&str> = o
        .stdout
        .lines()
        .filter(|l| l.starts_with("tail|0"))
        .collect();
    let want: Vec<String> = (196..=200).map(|i| format!("line {i}")).collect();
    assert_eq!(shown.len(), 5, "{}", o.stdout);
    for (l, w) in shown.iter().zip(&want) {
        assert!(l.ends_with(w.as_str()), "{l:?} should end with {w:?}");
    }
    // By id too, and --raw drops the prefix.
    let raw = c
        .ok(&["logs", "0", "--nostream", "--lines", "2", "--out", "--raw"])
        .stdout;
    assert_eq!(raw, "line 199\nline 200\n");
}

#[test]
fn err_and_out_flags_filter_streams() {
    let c = Cohort::new();
    c.ok(&["start", &fixture("both.js"), "--name", "b"]);
    c.wait_log("b", "out", "to-out", T);
    c.wait_log("b", "err", "to-err", T);
    let all = c.ok(&["logs", "b", "--nostream"]).stdout;
    assert!(all.contains("to-out") && all.contains("to-err"), "{all}");
    let err = c.ok(&["logs", "b", "--nostream", "--err"]).stdout;
    assert!(err.contains("to-err") && !err.contains("to-out"), "{err}");
    let out = c.ok(&["logs", "b", "--nostream", "--out"]).stdout;
    assert!(out.contains("to-out") && !out.contains("to-err"), "{out}");
}

#[test]
fn logs_follows_new_lines() {
    let c = Cohort::new();
    c.ok(&["start", &fixture("ticker.js"), "--name", "tick"]);
    c.wait_log("tick", "out", "tick 3", T);
    let mut f = Follower::spawn(&c, &["logs", "tick", "--lines", "3"]);
    let tick_of = |l: &str| {
        l.rsplit("tick ")
            .next()
            .and_then(|n| n.trim().parse::<u64>().ok())
    };
    // The backlog comes first; a tick newer than all of it can only come from following.
    let first = f
        .until(T, |l| l.contains("tick "))
        .expect("the backlog was not shown");
    let first = tick_of(&first).unwrap_or_default();
    let newer = f.until(T, |l| tick_of(l).is_some_and(|n| n > first + 5));
    assert!(
        newer.is_some(),
        "no new line was followed; saw {:?}",
        f.lines
    );
    assert!(
        newer.unwrap_or_default().starts_with("tick|0"),
        "followed lines carry the prefix"
    );
    // Lines logged after the follower started are also in the file (the follower is not the writer).
    assert!(c.log("tick", "out").lines().count() as u64 >= first + 5);
}

#[test]
fn logs_follow_of_unknown_app_is_an_error() {
    let c = Cohort::new();
    c.ok(&["start", "sleep 1000", "--name", "s"]);
    let err = c.fails(&["logs", "nope"]);
    assert!(err.contains("\"nope\""), "{err}");
}

#[test]
fn flush_empties_the_files() {
    let c = Cohort::new();
    c.ok(&["start", &fixture("both.js"), "--name", "f1"]);
    c.ok(&["start", &fixture("both.js"), "--name", "f2"]);
    for n in ["f1", "f2"] {
        c.wait_log(n, "out", "to-out", T);
        c.wait_log(n, "err", "to-err", T);
    }
    c.ok(&["flush", "f1"]);
    assert_eq!(c.log("f1", "out"), "");
    assert_eq!(c.log("f1", "err"), "");
    assert_eq!(c.log("f2", "out"), "to-out\n", "flush f1 touched f2");
    c.ok(&["flush"]);
    assert_eq!(c.log("f2", "out"), "");
    assert_eq!(c.log("f2", "err"), "");
    // The app keeps logging into the emptied file, from its start (no hole of zeros).
    c.ok(&["restart", "f1"]);
    let log = c.wait_log("f1", "out", "to-out", T);
    assert_eq!(log, "to-out\n");
}
