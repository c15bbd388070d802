//! Rotation of log files: when a file is due (pure functions: size and time periods), what a rotated
//! file is called (PM2-logrotate's `<name>__<date>.log`), and the background worker that gzips
//! rotated files and deletes those beyond `retain`, so a pipe reader never waits on either.
//!
//! The rename itself happens in `file.rs`, under the file's lock and between two whole writes, so
//! no line is cut or lost across a rotation.

use crate::config::log_rotate::{Interval, Rotation};
use chrono::{Datelike, Duration as Days, NaiveDate, NaiveDateTime, TimeZone, Timelike};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

/// True when writing `incoming` bytes to a file of `size` bytes must first rotate it: by size, when
/// the file would grow past `max_size` (a file is never left empty for a write, so one chunk larger
/// than `max_size` still goes in whole); by time, when the current period ended.
pub fn due(rotation: &Rotation, size: u64, incoming: u64, now_ms: u64, period_end_ms: u64) -> bool {
    if size == 0 {
        return false;
    }
    let by_size = rotation.max_size > 0 && size.saturating_add(incoming) > rotation.max_size;
    by_size || now_ms >= period_end_ms
}

/// When the period that contains local time `now` ends, for time rotation; `None` for `Never`.
pub fn period_end(interval: Interval, now: NaiveDateTime) -> Option<NaiveDateTime> {
    let midnight = |d: NaiveDate| d.and_hms_opt(0, 0, 0);
    match interval {
        Interval::Never => None,
        Interval::Hourly => now
            .date()
            .and_hms_opt(now.hour(), 0, 0)
            .map(|h| h + Days::hours(1)),
        Interval::Daily => midnight(now.date() + Days::days(1)),
        Interval::Weekly => {
            let days_to_monday = 7 - i64::from(now.weekday().num_days_from_monday());
            midnight(now.date() + Days::days(days_to_monday))
        }
        Interval::Monthly => {
            let (y, m) = if now.month() == 12 {
                (now.year() + 1, 1)
            } else {
                (now.year(), now.month() + 1)
            };
            NaiveDate::from_ymd_opt(y, m, 1).and_then(midnight)
        }
    }
}

/// [`period_end`] of the local time now, in ms since the epoch (`u64::MAX`: never).
pub fn period_end_ms(interval: Interval) -> u64 {
    let now = chrono::Local::now();
    period_end(interval, now.naive_local())
        .and_then(|end| chrono::Local.from_local_datetime(&end).earliest())
        .map(|end| end.timestamp_millis().max(0) as u64)
        .unwrap_or(u64::MAX)
}

/// The name a rotated copy of `path` gets: `<stem>__<stamp><ext>` beside it (`app-0-out.log` →
/// `app-0-out__2024-03-05_14-07-09.log`), with `_1`, `_2`… after the stamp while that name (or
/// its `.gz`) is taken.
pub fn rotated_name(path: &Path, stamp: &str, taken: impl Fn(&Path) -> bool) -> PathBuf {
    let (stem, ext) = split_name(path);
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut n = 0u32;
    loop {
        let suffix = if n == 0 {
            String::new()
        } else {
            format!("_{n}")
        };
        let candidate = dir.join(format!("{stem}__{stamp}{suffix}{ext}"));
        let gz = PathBuf::from(format!("{}.gz", candidate.display()));
        if !taken(&candidate) && !taken(&gz) {
            return candidate;
        }
        n += 1;
    }
}

/// A file name as (stem, extension with its dot): `app-0-out.log` → (`app-0-out`, `.log`).
fn split_name(path: &Path) -> (String, String) {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.rfind('.') {
        Some(dot) if dot > 0 => (name[..dot].to_string(), name[dot..].to_string()),
        _ => (name, String::new()),
    }
}

/// True when `file_name` is a rotated copy of the log file `path` (compressed or not, finished).
pub fn is_rotated_copy(path: &Path, file_name: &str) -> bool {
    let (stem, ext) = split_name(path);
    let prefix = format!("{stem}__");
    let Some(rest) = file_name.strip_prefix(&prefix) else {
        return false;
    };
    let rest = rest.strip_suffix(".gz").unwrap_or(rest);
    !rest.is_empty() && rest.ends_with(&ext)
}

/// Of rotated copies as (name, modified time), those to delete to keep `retain`: the oldest.
pub fn beyond_retain(mut copies: Vec<(String, std::time::SystemTime)>, retain: u32) -> Vec<String> {
    copies.sort_by(|a, b| {
        b.1.cmp(&a.1)
            .then_with(|| natural_key(&b.0).cmp(&natural_key(&a.0)))
    });
    copies
        .into_iter()
        .skip(retain as usize)
        .map(|(name, _)| name)
        .collect()
}

/// Orders `x_2.log` before `x_10.log` (the collision counter) when times are equal.
fn natural_key(name: &str) -> (String, u64) {
    let base = name.strip_suffix(".gz").unwrap_or(name);
    let (stem, _) = split_name(Path::new(base));
    match stem.rsplit_once('_') {
        Some((head, n)) if n.chars().all(|c| c.is_ascii_digit()) && !n.is_empty() => {
            (head.to_string(), n.parse().unwrap_or(0))
        }
        _ => (stem, 0),
    }
}

/// Work for the background worker after a rotation.
pub struct Job {
    /// The log file (its folder and name select its rotated copies).
    pub path: PathBuf,
    /// The copy just made.
    pub rotated: PathBuf,
    pub compress: bool,
    pub retain: u32,
}

/// Hands a job to the worker thread (started on first use), so the pipe readers never gzip or scan
/// a folder themselves.
pub fn enqueue(job: Job) {
    static WORKER: OnceLock<Mutex<Option<mpsc::Sender<Job>>>> = OnceLock::new();
    let slot = WORKER.get_or_init(|| Mutex::new(None));
    let mut guard = match slot.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    if guard.is_none() {
        let (tx, rx) = mpsc::channel::<Job>();
        let started = std::thread::Builder::new()
            .name("cohort-logrotate".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    run(&job);
                }
            });
        match started {
            Ok(_) => *guard = Some(tx),
            Err(e) => {
                crate::report!("cohort: log rotation: cannot start its worker thread ({e}); rotated files are kept uncompressed");
                return;
            }
        }
    }
    if let Some(tx) = guard.as_ref() {
        if let Err(mpsc::SendError(job)) = tx.send(job) {
            *guard = None;
            run(&job);
        }
    }
}

/// Compresses the new copy (when asked), then deletes the copies beyond `retain`.
fn run(job: &Job) {
    if job.compress {
        if let Err(e) = gzip(&job.rotated) {
            crate::report!(
                "cohort: log rotation: cannot compress {} ({e}); it is kept uncompressed",
                job.rotated.display()
            );
        }
    }
    prune(&job.path, job.retain);
}

/// `file` → `file.gz` (through `file.gz.part`, keeping its modified time), then removes `file`.
fn gzip(file: &Path) -> std::io::Result<()> {
    let part = PathBuf::from(format!("{}.gz.part", file.display()));
    let done = PathBuf::from(format!("{}.gz", file.display()));
    let result = (|| {
        let mut input = std::fs::File::open(file)?;
        let modified = input.metadata()?.modified()?;
        let _ = std::fs::remove_file(&part); // a leftover of a killed daemon
        let out = crate::home::private::create_new(&part)?;
        let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::default());
        std::io::copy(&mut input, &mut enc)?;
        let out = enc.finish()?;
        out.set_modified(modified)?;
        out.sync_all()?;
        std::fs::rename(&part, &done)?;
        std::fs::remove_file(file)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    result
}

/// Deletes the rotated copies of `path` beyond the newest `retain`.
fn prune(path: &Path, retain: u32) {
    let dir = path.parent().unwrap_or(Path::new("."));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let copies = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if !is_rotated_copy(path, &name) {
                return None;
            }
            let modified = e.metadata().ok()?.modified().ok()?;
            Some((name, modified))
        })
        .collect();
    for name in beyond_retain(copies, retain) {
        match std::fs::remove_file(dir.join(&name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => crate::report!(
                "cohort: log rotation: cannot delete {} ({e})",
                dir.join(&name).display()
            ),
        }
    }
}

/// Writes `bytes` to a new file (tests of the worker only).
#[cfg(test)]
fn touch(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(bytes).unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn rot(max_size: u64) -> Rotation {
        Rotation {
            max_size,
            ..Rotation::default()
        }
    }

    #[test]
    fn when_a_file_is_due() {
        // (max_size, size, incoming, now, period end, due)
        let cases = [
            (100, 0, 500, 0, u64::MAX, false), // an empty file takes any chunk whole
            (100, 50, 50, 0, u64::MAX, false),
            (100, 50, 51, 0, u64::MAX, true),
            (0, 1 << 40, 1, 0, u64::MAX, false), // no size limit
            (0, 1, 1, 10, 10, true),             // the period ended
            (0, 1, 1, 9, 10, false),
            (0, 0, 1, 10, 10, false), // nothing to rotate
        ];
        for (max, size, incoming, now, end, want) in cases {
            assert_eq!(
                due(&rot(max), size, incoming, now, end),
                want,
                "{max} {size} {incoming} {now} {end}"
            );
        }
    }

    #[test]
    fn periods_end_on_local_boundaries() {
        let at = |y, mo, d, h, mi| {
            NaiveDate::from_ymd_opt(y, mo, d)
                .and_then(|d| d.and_hms_opt(h, mi, 7))
                .unwrap()
        };
        let day = |y, mo, d| NaiveDate::from_ymd_opt(y, mo, d).and_then(|d| d.and_hms_opt(0, 0, 0));
        // 2024-03-05 is a Tuesday.
        let now = at(2024, 3, 5, 14, 7);
        let cases = [
            (Interval::Never, None),
            (
                Interval::Hourly,
                NaiveDate::from_ymd_opt(2024, 3, 5).and_then(|d| d.and_hms_opt(15, 0, 0)),
            ),
            (Interval::Daily, day(2024, 3, 6)),
            (Interval::Weekly, day(2024, 3, 11)),
            (Interval::Monthly, day(2024, 4, 1)),
        ];
        for (interval, want) in cases {
            assert_eq!(period_end(interval, now), want, "{interval:?}");
        }
        assert_eq!(
            period_end(Interval::Monthly, at(2024, 12, 31, 23, 59)),
            day(2025, 1, 1)
        );
        assert_eq!(
            period_end(Interval::Hourly, at(2024, 12, 31, 23, 59)),
            day(2025, 1, 1)
        );
        // On a Monday, the week ends next Monday.
        assert_eq!(
            period_end(Interval::Weekly, at(2024, 3, 11, 0, 0)),
            day(2024, 3, 18)
        );
    }

    #[test]
    fn rotated_names_and_which_files_are_copies() {
        let p = Path::new("/h/logs/app-0-out.log");
        let free = |_: &Path| false;
        assert_eq!(
            rotated_name(p, "2024-03-05_14-07-09", free),
            Path::new("/h/logs/app-0-out__2024-03-05_14-07-09.log")
        );
        let taken = |q: &Path| {
            let s = q.to_string_lossy();
            s.ends_with("09.log") || s.ends_with("09_1.log.gz")
        };
        assert_eq!(
            rotated_name(p, "2024-03-05_14-07-09", taken),
            Path::new("/h/logs/app-0-out__2024-03-05_14-07-09_2.log")
        );
        assert_eq!(
            rotated_name(Path::new("/x/plain"), "s", free),
            Path::new("/x/plain__s")
        );
        let cases = [
            ("app-0-out__2024-03-05_14-07-09.log", true),
            ("app-0-out__2024-03-05_14-07-09_3.log.gz", true),
            ("app-0-out__2024.log.gz.part", false),
            ("app-0-out.log", false),
            ("app-0-err__2024.log", false),
            ("app-0-out__.log", true),
            ("app-0-out__x.txt", false),
        ];
        for (name, want) in cases {
            assert_eq!(is_rotated_copy(p, name), want, "{name}");
        }
    }

    #[test]
    fn retention_keeps_the_newest() {
        let t = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let copies = vec![
            ("a__1.log".to_string(), t(1)),
            ("a__3.log.gz".to_string(), t(3)),
            ("a__2.log".to_string(), t(2)),
            ("a__s_2.log".to_string(), t(4)),
            ("a__s_10.log".to_string(), t(4)),
        ];
        let mut gone = beyond_retain(copies.clone(), 2);
        gone.sort();
        assert_eq!(gone, ["a__1.log", "a__2.log", "a__3.log.gz"]);
        assert_eq!(beyond_retain(copies.clone(), 4), ["a__1.log"]);
        assert_eq!(beyond_retain(copies.clone(), 0).len(), 5);
        assert!(beyond_retain(copies, 9).is_empty());
    }

    #[test]
    fn the_worker_compresses_and_prunes() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("w-0-out.log");
        for (i, name) in ["w-0-out__a.log", "w-0-out__b.log", "w-0-out__c.log"]
            .iter()
            .enumerate()
        {
            let p = dir.path().join(name);
            touch(&p, format!("copy {i}\n").as_bytes());
            let f = std::fs::File::options().write(true).open(&p).unwrap();
            f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1000 + i as u64))
                .unwrap();
        }
        run(&Job {
            path: log.clone(),
            rotated: dir.path().join("w-0-out__c.log"),
            compress: true,
            retain: 2,
        });
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["w-0-out__b.log", "w-0-out__c.log.gz"]);
        let gz = std::fs::File::open(dir.path().join("w-0-out__c.log.gz")).unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(gz), &mut text).unwrap();
        assert_eq!(text, "copy 2\n");
    }
}
