//! Log rotation and reopening: a 100k-line burst rotated at a small size loses and cuts no line
//! (counted across every file, gzipped ones included); `mv` + `reloadLogs` (and SIGUSR2, and
//! `flush`) move writing to a new file at the original path; `logrotate` shows and sets the
//! daemon-wide defaults (0600 file in COHORT_HOME) and `retain` bounds the rotated copies.

mod common;

use common::*;
use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// Every file in `dir` whose name starts with `prefix` (rotated copies and the live file).
fn files_of(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(prefix))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The text of a log file, decompressed when it is a `.gz`.
fn text_of(p: &Path) -> String {
    let Ok(mut f) = std::fs::File::open(p) else {
        return String::new();
    };
    let mut text = String::new();
    if p.extension().is_some_and(|e| e == "gz") {
        let _ = flate2::read::GzDecoder::new(f).read_to_string(&mut text);
    } else {
        let _ = f.read_to_string(&mut text);
    }
    text
}

#[test]
fn a_burst_rotated_at_a_small_size_keeps_every_line_exactly_once() {
    let c = Cohort::new();
    c.write(
        "cohort.toml",
        &format!(
            "[[apps]]\nname = \"burst\"\nscript = {:?}\nargs = [\"100000\"]\nautorestart = false\n\
             log_rotate = {{ max_size = \"64K\", retain = 1000, compress = true }}\n",
            fixture("spam.js")
        ),
    );
    c.ok(&["start", "cohort.toml"]);
    c.wait_log("burst", "err", "done", T);
    let logs = c.root().join("home/logs");
    let want: HashSet<u32> = (1..=100_000).collect();
    let mut report = String::new();
    // Done when every line is there once and the worker compressed every rotated copy.
    let done = wait_until(T, || {
        let files = files_of(&logs, "burst-0-out");
        let pending = files.iter().any(|p| {
            let n = p.to_string_lossy();
            n.contains("__") && !n.ends_with(".gz")
        });
        let mut seen = HashSet::new();
        let mut dupes = 0;
        let mut bad = Vec::new();
        for f in &files {
            for line in text_of(f).lines() {
                match line
                    .strip_prefix("line ")
                    .and_then(|n| n.parse::<u32>().ok())
                {
                    Some(n) => {
                        if !seen.insert(n) {
                            dupes += 1;
                        }
                    }
                    None => bad.push(line.to_string()),
                }
            }
        }
        report = format!(
            "{} files, {} distinct lines, {dupes} duplicated, cut/foreign: {:?}, uncompressed copies left: {pending}",
            files.len(),
            seen.len(),
            bad.iter().take(3).collect::<Vec<_>>()
        );
        !pending && dupes == 0 && bad.is_empty() && seen == want
    });
    assert!(done, "{report}");
    let files = files_of(&logs, "burst-0-out");
    assert!(files.len() >= 10, "the burst was rotated: {files:?}");
    for f in &files {
        let len = std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
        if !f.to_string_lossy().ends_with(".gz") {
            assert!(len <= 64 * 1024, "{} holds {len} bytes", f.display());
        }
    }
}

#[test]
fn mv_then_reload_logs_or_sigusr2_or_flush_writes_a_new_file_at_the_path() {
    let c = Cohort::new();
    c.ok(&["start", &fixture("ticker.js"), "--name", "tick"]);
    let path = c.log_path("tick", 0, "out");
    c.wait_log("tick", "out", "tick 2", T);
    let moved = c.root().join("moved-1.log");
    let fresh_file_appears = |how: &str| {
        let ok = wait_until(T, || {
            std::fs::read_to_string(&path).is_ok_and(|t| t.contains("tick"))
        });
        assert!(ok, "after mv + {how}, no new lines at {}", path.display());
    };
    // reloadLogs
    std::fs::rename(&path, &moved).expect("mv the log away");
    let o = c.ok(&["reloadLogs"]);
    assert!(o.stderr.contains("log files reopened"), "{}", o.stderr);
    fresh_file_appears("reloadLogs");
    let frozen = std::fs::read_to_string(&moved)
        .expect("the moved file")
        .len();
    // The moved file gets no more lines: poll a little past a few ticks of the new file.
    let before = std::fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .count();
    assert!(wait_until(T, || std::fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .count()
        >= before + 3));
    assert_eq!(
        std::fs::read_to_string(&moved).expect("moved").len(),
        frozen
    );
    // The alias, then SIGUSR2 to the daemon, then flush.
    std::fs::rename(&path, c.root().join("moved-2.log")).expect("mv");
    c.ok(&["reload-logs"]);
    fresh_file_appears("reload-logs");
    std::fs::rename(&path, c.root().join("moved-3.log")).expect("mv");
    let daemon = c.daemon_pid().expect("daemon pid");
    signal(daemon, libc::SIGUSR2);
    fresh_file_appears("SIGUSR2");
    std::fs::rename(&path, c.root().join("moved-4.log")).expect("mv");
    c.ok(&["flush", "tick"]);
    fresh_file_appears("flush");
    let log = std::fs::read_to_string(c.root().join("home/daemon.log")).unwrap_or_default();
    assert!(log.contains("SIGUSR2: 2 log files reopened"), "{log}");
}

#[test]
fn logrotate_shows_and_sets_defaults_and_retain_bounds_the_copies() {
    let c = Cohort::new();
    let o = c.ok(&["logrotate"]);
    for want in [
        "max_size     10M",
        "retain       5",
        "compress     false",
        "interval     never",
    ] {
        assert!(o.stdout.contains(want), "{}", o.stdout);
    }
    let o = c.ok(&[
        "logrotate",
        "--max-size",
        "4K",
        "--retain",
        "2",
        "--interval",
        "daily",
    ]);
    assert!(o.stdout.contains("max_size     4K"), "{}", o.stdout);
    assert!(o.stdout.contains("interval     daily"), "{}", o.stdout);
    let settings = c.root().join("home/logrotate.json");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&settings)
        .expect("logrotate.json")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let err = c.fails(&["logrotate", "--max-size", "huge"]);
    assert!(err.contains("--max-size"), "{err}");
    // Printed again (no flags): what was set.
    assert!(c.ok(&["logrotate"]).stdout.contains("retain       2"));

    c.ok(&[
        "start",
        &fixture("spam.js"),
        "--name",
        "few",
        "--no-autorestart",
        "--",
        "20000",
    ]);
    c.wait_log("few", "err", "done", T);
    let ended = wait_until(T, || c.log("few", "out").ends_with("line 20000\n"));
    assert!(ended, "the live file ends with the last line");
    let logs = c.root().join("home/logs");
    let mut copies = Vec::new();
    // Retention runs in the background: wait for it to settle at 2 copies.
    let settled = wait_until(T, || {
        copies = files_of(&logs, "few-0-out__");
        copies.len() == 2
    });
    assert!(settled, "rotated copies: {copies:?}");
}
