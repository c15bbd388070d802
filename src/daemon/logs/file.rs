//! Log files: opened safely (no symlink followed, close-on-exec, 0600 when created), one shared
//! object per path (so processes writing one file with `merge_logs` rotate and reopen it together),
//! rotated under their lock at a line boundary, reopened on `reloadLogs`/SIGUSR2/`flush`.
//!
//! A file is open only while it is written: it is created when its process starts, opened at its
//! first write and closed after [`IDLE_CLOSE_MS`] without one (`Registry::close_idle`), so hundreds
//! of quiet apps cost the daemon their two pipes each, not two more log descriptors — 300 apps
//! then fit in the 1024 descriptors of a plain `ulimit -n 1024`.
//!
//! A write never fails the caller: when the disk is full (or any write error), the lines are
//! dropped and counted, daemon.log hears it once when the episode starts and once when writing
//! works again, and the next write simply tries again — so logging resumes by itself when space
//! returns, and the pipe is always drained.

use super::rotate;
use crate::config::log_rotate::{LogRotate, Rotation};
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// Lines a process sent to its log files: written, or dropped because the file could not be
/// written. Shared by the process's pipe readers; read by `/metrics`.
#[derive(Default, Debug)]
pub struct LogCounts {
    pub written: std::sync::atomic::AtomicU64,
    pub dropped: std::sync::atomic::AtomicU64,
}

impl LogCounts {
    pub fn add(&self, lines: u64, written: bool) {
        let c = if written {
            &self.written
        } else {
            &self.dropped
        };
        c.fetch_add(lines, std::sync::atomic::Ordering::Relaxed);
    }
    /// Counts carried over from an earlier daemon.
    pub fn starting_at(written: u64, dropped: u64) -> LogCounts {
        LogCounts {
            written: written.into(),
            dropped: dropped.into(),
        }
    }
    /// (written, dropped) so far.
    pub fn get(&self) -> (u64, u64) {
        (
            self.written.load(std::sync::atomic::Ordering::Relaxed),
            self.dropped.load(std::sync::atomic::Ordering::Relaxed),
        )
    }
}

/// A log file not written for this long is closed (reopened by path at its next write).
pub const IDLE_CLOSE_MS: u64 = 10_000;

/// An append-only log file, shared by the two pipes of a process (and by processes with merge_logs).
pub struct LogFile {
    path: PathBuf,
    inner: Mutex<Inner>,
}

struct Inner {
    /// Open while written; None after [`IDLE_CLOSE_MS`] without a write.
    file: Option<File>,
    /// When it was last written (ms since the epoch).
    last_write_ms: u64,
    /// The last write ended in the middle of a line (a pipe written through): no rotation until
    /// the line is complete, so a line never spans two files.
    mid_line: bool,
    /// Bytes in the file (what we wrote since it was opened, plus what it held).
    size: u64,
    /// This file's settings, over the daemon-wide defaults.
    own: Option<LogRotate>,
    rotation: Rotation,
    /// When the current time period ends (ms since the epoch; `u64::MAX`: never).
    period_end_ms: u64,
    /// After a failed rotation, none is tried again before this (ms since the epoch).
    rotate_after_ms: u64,
    /// Writes fail: lines dropped since, and whether the last failure cut a line.
    failing: Option<(u64, bool)>,
}

/// Opens `path` for appending: creating its folder (0700), never following a symlink at its name
/// (nor, in COHORT_HOME, at `logs/`), close-on-exec, mode 0600 when the file is created
/// (`home::private`).
fn open_append(path: &Path) -> Result<File> {
    if let Some(dir) = path.parent() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(crate::home::private::DIR_MODE)
            .create(dir)
            .with_context(|| format!("creating log folder {}", dir.display()))?;
    }
    crate::home::private::open_append(path)
}

impl LogFile {
    /// Opens a log file on its own, outside any registry, with the built-in rotation defaults.
    pub fn open(path: &Path) -> Result<Arc<LogFile>> {
        LogFile::open_with(path, None, &Rotation::default())
    }

    fn open_with(
        path: &Path,
        own: Option<&LogRotate>,
        defaults: &Rotation,
    ) -> Result<Arc<LogFile>> {
        // Created (and checked) now; opened again at the first write.
        let size = open_append(path)?.metadata().map(|m| m.len()).unwrap_or(0);
        let rotation = own
            .map(|o| o.over(defaults))
            .unwrap_or_else(|| defaults.clone());
        Ok(Arc::new(LogFile {
            path: path.to_path_buf(),
            inner: Mutex::new(Inner {
                file: None,
                last_write_ms: 0,
                mid_line: false,
                size,
                own: own.cloned(),
                period_end_ms: rotate::period_end_ms(rotation.interval),
                rotation,
                rotate_after_ms: 0,
                failing: None,
            }),
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Appends whole lines (`lines` of them, for the counts), rotating first when due. Returns
    /// whether they were written; on failure they are dropped (see the module doc).
    pub fn write_lines(&self, bytes: &[u8], lines: u64) -> bool {
        let mut inner = self.lock();
        let now = crate::daemon::now_ms();
        inner.last_write_ms = now;
        if inner.file.is_none() {
            match open_append(&self.path) {
                Ok(file) => {
                    inner.size = file.metadata().map(|m| m.len()).unwrap_or(inner.size);
                    inner.file = Some(file);
                }
                Err(e) => return self.failed(&mut inner, lines, false, &format!("{e:#}")),
            }
        }
        let mut bytes = bytes;
        let mut lines = lines;
        if now >= inner.rotate_after_ms
            && rotate::due(
                &inner.rotation,
                inner.size,
                bytes.len() as u64,
                now,
                inner.period_end_ms,
            )
        {
            // A line written in part (a pipe written through) ends in this file first, so no
            // line spans two files; without its end in these bytes, the rotation waits.
            let finish = match inner.mid_line {
                false => Some(0),
                true => bytes.iter().position(|c| *c == b'\n').map(|end| end + 1),
            };
            if let Some(head) = finish {
                if head > 0 {
                    let _ = self.write_locked(&mut inner, &bytes[..head], 1);
                    bytes = &bytes[head..];
                    lines = lines.saturating_sub(1);
                }
                self.rotate(&mut inner, now);
            }
        }
        self.write_locked(&mut inner, bytes, lines)
    }

    /// Appends `bytes` under the lock (ending a line a failure cut first); see [`Self::write_lines`].
    fn write_locked(&self, inner: &mut Inner, bytes: &[u8], lines: u64) -> bool {
        if bytes.is_empty() {
            return true;
        }
        if let Some((_, true)) = inner.failing {
            // The last failure left half a line: end it, so the next line starts clean.
            if inner
                .file
                .as_ref()
                .is_some_and(|f| write_whole(f, b"\n").0.is_ok())
            {
                inner.size += 1;
                if let Some(f) = inner.failing.as_mut() {
                    f.1 = false;
                }
            }
        }
        let (result, wrote) = match inner.file.as_ref() {
            Some(f) => write_whole(f, bytes),
            None => (Err(std::io::ErrorKind::NotFound.into()), 0),
        };
        inner.size += wrote as u64;
        if wrote > 0 {
            inner.mid_line = bytes[wrote - 1] != b'\n';
        }
        match result {
            Ok(()) => {
                if let Some((dropped, _)) = inner.failing.take() {
                    crate::report!(
                        "cohort: writing {} again ({dropped} lines were dropped while it failed)",
                        self.path.display()
                    );
                }
                true
            }
            Err(e) => self.failed(inner, lines, wrote > 0, &e.to_string()),
        }
    }

    /// Counts `lines` dropped (`cut`: part of them went in), saying so once per episode.
    fn failed(&self, inner: &mut Inner, lines: u64, cut: bool, why: &str) -> bool {
        match inner.failing.as_mut() {
            Some(f) => {
                f.0 += lines;
                f.1 |= cut;
            }
            None => {
                crate::report!(
                    "cohort: cannot write {} ({why}); its lines are dropped (and counted) until it can be written again",
                    self.path.display()
                );
                inner.failing = Some((lines, cut));
            }
        }
        false
    }

    /// Closes the file when it was not written for [`IDLE_CLOSE_MS`] (and is not failing: an
    /// episode stays open so its end is seen).
    fn close_if_idle(&self, now: u64) {
        let mut inner = self.lock();
        if inner.file.is_some()
            && inner.failing.is_none()
            && now.saturating_sub(inner.last_write_ms) >= IDLE_CLOSE_MS
        {
            inner.file = None;
        }
    }

    /// Appends text that is not an app's output (cohort's own notes in an app's log).
    pub fn write_all(&self, bytes: &[u8]) {
        let lines = bytes.iter().filter(|c| **c == b'\n').count() as u64;
        let _ = self.write_lines(bytes, lines);
    }

    /// Renames the file to its rotated name, opens a new one at its path, and leaves compression
    /// and retention to the background worker. On failure, writes go on to the current file and
    /// no rotation is tried for a while.
    fn rotate(&self, inner: &mut Inner, now: u64) {
        // Only regular files rotate: a log sent to /dev/null (PM2's "NULL"), a FIFO or a device is
        // never renamed.
        let regular = inner.file.as_ref().and_then(|f| f.metadata().ok());
        if !regular.is_some_and(|m| m.is_file()) {
            inner.rotate_after_ms = u64::MAX;
            return;
        }
        let stamp = chrono::Local::now()
            .format(&super::translate_moment(&inner.rotation.date_format))
            .to_string()
            .replace('/', "-");
        let rotated = rotate::rotated_name(&self.path, &stamp, |p| p.symlink_metadata().is_ok());
        let renamed = std::fs::rename(&self.path, &rotated);
        if let Err(e) = &renamed {
            if e.kind() != std::io::ErrorKind::NotFound {
                crate::report!(
                    "cohort: cannot rotate {} ({e}); writing on to it",
                    self.path.display()
                );
                inner.rotate_after_ms = now + 10_000;
                return;
            }
        }
        match open_append(&self.path) {
            Ok(file) => {
                inner.file = Some(file);
                inner.size = 0;
            }
            Err(e) => {
                // Lines keep going to the renamed file, which is still ours.
                crate::report!("cohort: {e:#}; writing on to {}", rotated.display());
                inner.rotate_after_ms = now + 10_000;
            }
        }
        inner.period_end_ms = rotate::period_end_ms(inner.rotation.interval);
        if renamed.is_ok() {
            rotate::enqueue(rotate::Job {
                path: self.path.clone(),
                rotated,
                compress: inner.rotation.compress,
                retain: inner.rotation.retain,
            });
        }
    }

    /// Opens the file at its path again (after an external `mv`, or a `flush`); lines written
    /// from now on go there.
    pub fn reopen(&self) -> Result<()> {
        let file = open_append(&self.path)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut inner = self.lock();
        inner.file = Some(file);
        inner.last_write_ms = crate::daemon::now_ms();
        inner.mid_line = false;
        inner.size = size;
        inner.rotate_after_ms = 0;
        Ok(())
    }

    /// Applies new daemon-wide defaults (this file's own settings still win).
    fn set_defaults(&self, defaults: &Rotation) {
        let mut inner = self.lock();
        inner.rotation = match &inner.own {
            Some(own) => own.over(defaults),
            None => defaults.clone(),
        };
        inner.period_end_ms = rotate::period_end_ms(inner.rotation.interval);
    }
}

impl Drop for LogFile {
    /// A file closed in the middle of a failure episode still says what it dropped.
    fn drop(&mut self) {
        let failing = match self.inner.get_mut() {
            Ok(inner) => inner.failing.take(),
            Err(poisoned) => poisoned.into_inner().failing.take(),
        };
        if let Some((dropped, _)) = failing {
            crate::report!(
                "cohort: closed {} while it could not be written ({dropped} lines were dropped)",
                self.path.display()
            );
        }
    }
}

/// Writes all of `bytes`, as one write(2) when the kernel takes it whole (a short write, as on a
/// nearly full disk, is continued). Returns the outcome and how many bytes went in.
fn write_whole(mut file: &File, bytes: &[u8]) -> (std::io::Result<()>, usize) {
    let mut done = 0;
    while done < bytes.len() {
        match file.write(&bytes[done..]) {
            Ok(0) => return (Err(std::io::ErrorKind::WriteZero.into()), done),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return (Err(e), done),
        }
    }
    (Ok(()), done)
}

/// Every log file the daemon has open, one object per path, and the daemon-wide rotation defaults
/// (kept in COHORT_HOME/logrotate.json, mode 0600). Owned by the supervisor.
pub struct Registry {
    files: HashMap<PathBuf, Weak<LogFile>>,
    defaults: Rotation,
    settings_path: Option<PathBuf>,
}

impl Registry {
    /// A registry whose defaults are read from (and saved to) `settings_path`; `None`: the built-in
    /// defaults, never saved (tests).
    pub fn new(settings_path: Option<PathBuf>) -> Registry {
        let defaults = settings_path
            .as_deref()
            .map(load_defaults)
            .unwrap_or_default();
        Registry {
            files: HashMap::new(),
            defaults,
            settings_path,
        }
    }

    /// The open log file at `path`, or opens it with `own` settings over the defaults.
    pub fn open(&mut self, path: &Path, own: Option<&LogRotate>) -> Result<Arc<LogFile>> {
        if let Some(f) = self.files.get(path).and_then(Weak::upgrade) {
            return Ok(f);
        }
        self.files.retain(|_, f| f.strong_count() > 0);
        let f = LogFile::open_with(path, own, &self.defaults)?;
        self.files.insert(path.to_path_buf(), Arc::downgrade(&f));
        Ok(f)
    }

    fn live(&self) -> Vec<Arc<LogFile>> {
        self.files.values().filter_map(Weak::upgrade).collect()
    }

    /// Reopens every open log file (those under `only`, when given); returns how many were
    /// reopened, and reports those that could not be.
    pub fn reopen(&self, only: Option<&[PathBuf]>) -> usize {
        let mut n = 0;
        for f in self.live() {
            if only.is_some_and(|paths| !paths.iter().any(|p| p == f.path())) {
                continue;
            }
            match f.reopen() {
                Ok(()) => n += 1,
                Err(e) => crate::report!("cohort: reopening logs: {e:#}"),
            }
        }
        n
    }

    /// Closes the files not written for [`IDLE_CLOSE_MS`]; returns how many stay open.
    pub fn close_idle(&self) -> usize {
        let now = crate::daemon::now_ms();
        let live = self.live();
        for f in &live {
            f.close_if_idle(now);
        }
        live.iter().filter(|f| f.lock().file.is_some()).count()
    }

    pub fn defaults(&self) -> &Rotation {
        &self.defaults
    }

    /// Sets the daemon-wide defaults (the fields given), saves them, applies them to open files.
    pub fn set_defaults(&mut self, change: &LogRotate) -> Result<Rotation, String> {
        let next = change.over(&self.defaults);
        if let Some(path) = &self.settings_path {
            save_defaults(path, &next).map_err(|e| format!("{e:#}"))?;
        }
        self.defaults = next;
        for f in self.live() {
            f.set_defaults(&self.defaults);
        }
        Ok(self.defaults.clone())
    }
}

/// The saved defaults, or the built-in ones (a bad file is reported, not fatal).
fn load_defaults(path: &Path) -> Rotation {
    match std::fs::read(path) {
        Ok(bytes) => match serde_json::from_slice::<LogRotate>(&bytes) {
            Ok(saved) => saved.over(&Rotation::default()),
            Err(e) => {
                crate::report!(
                    "cohort: {} is not valid ({e}); using the built-in log rotation defaults (fix it with `cohort logrotate`)",
                    path.display()
                );
                Rotation::default()
            }
        },
        Err(_) => Rotation::default(),
    }
}

/// Writes the defaults atomically (temp file 0600, fsync, rename).
fn save_defaults(path: &Path, r: &Rotation) -> Result<()> {
    let saved = LogRotate {
        max_size: Some(r.max_size),
        retain: Some(r.retain),
        compress: Some(r.compress),
        interval: Some(r.interval),
        date_format: Some(r.date_format.clone()),
    };
    let bytes = serde_json::to_vec_pretty(&saved).context("encoding the rotation defaults")?;
    crate::home::private::write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_0600_and_never_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("logs/a-0-out.log");
        let f = LogFile::open(&p).unwrap();
        assert!(f.write_lines(b"one\n", 1));
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let target = dir.path().join("target");
        std::fs::write(&target, "").unwrap();
        let link = dir.path().join("logs/link.log");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(LogFile::open(&link).is_err());
    }

    #[test]
    fn rotation_by_size_keeps_lines_whole_and_one_object_per_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r-0-out.log");
        let mut reg = Registry::new(None);
        let own = LogRotate {
            max_size: Some(10),
            retain: Some(100),
            ..LogRotate::default()
        };
        let a = reg.open(&p, Some(&own)).unwrap();
        let b = reg.open(&p, None).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        for i in 0..20 {
            assert!(a.write_lines(format!("line {i}\n").as_bytes(), 1));
        }
        // Every line exactly once, whole, across the file and its rotated copies.
        let poll_until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut lines: Vec<String>;
        loop {
            lines = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| !p.to_string_lossy().ends_with(".part"))
                .flat_map(|p| {
                    std::fs::read_to_string(p)
                        .unwrap()
                        .lines()
                        .map(str::to_string)
                        .collect::<Vec<_>>()
                })
                .collect();
            if lines.len() == 20 || std::time::Instant::now() > poll_until {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        lines.sort_by_key(|l| l[5..].parse::<u32>().unwrap());
        let want: Vec<String> = (0..20).map(|i| format!("line {i}")).collect();
        assert_eq!(lines, want);
        assert!(std::fs::read_dir(dir.path()).unwrap().count() > 5);
    }

    #[test]
    fn reopen_after_a_move_writes_at_the_original_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m-0-out.log");
        let mut reg = Registry::new(None);
        let f = reg.open(&p, None).unwrap();
        f.write_all(b"before\n");
        let moved = dir.path().join("m-0-out.log.1");
        std::fs::rename(&p, &moved).unwrap();
        f.write_all(b"still old\n");
        assert_eq!(reg.reopen(None), 1);
        f.write_all(b"after\n");
        assert_eq!(
            std::fs::read_to_string(&moved).unwrap(),
            "before\nstill old\n"
        );
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "after\n");
    }

    #[test]
    fn defaults_are_saved_0600_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logrotate.json");
        let mut reg = Registry::new(Some(path.clone()));
        assert_eq!(reg.defaults(), &Rotation::default());
        let change = LogRotate {
            retain: Some(9),
            compress: Some(true),
            ..LogRotate::default()
        };
        let now = reg.set_defaults(&change).unwrap();
        assert_eq!(
            (now.retain, now.compress, now.max_size),
            (9, true, 10 << 20)
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(Registry::new(Some(path)).defaults(), &now);
    }
}
