//! COHORT_HOME: where one daemon keeps everything (socket, logs, dump, lock) and how to find it.
//! The formats of the files in it that more than one module reads live beside it: `dump` (dump.json)
//! and `tail` (the last lines of a log file, for `cohort logs` and monit).
//!
//! Two different homes are two independent daemons; tests rely on that to stay apart.

pub mod dump;
pub mod tail;

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// The files of one cohort home. Paths only: creating them is the daemon's job.
#[derive(Clone, Debug)]
pub struct Home {
    pub root: PathBuf,
}

impl Home {
    /// `$COHORT_HOME`, else `~/.cohort`.
    pub fn from_env() -> Result<Home> {
        if let Some(dir) = std::env::var_os("COHORT_HOME").filter(|v| !v.is_empty()) {
            let dir = PathBuf::from(dir);
            let root = if dir.is_absolute() {
                dir
            } else {
                std::env::current_dir()
                    .context("reading the current directory to resolve COHORT_HOME")?
                    .join(dir)
            };
            return Ok(Home { root });
        }
        let home = std::env::var_os("HOME").filter(|v| !v.is_empty()).context(
            "neither COHORT_HOME nor HOME is set (set COHORT_HOME to a writable directory)",
        )?;
        Ok(Home {
            root: PathBuf::from(home).join(".cohort"),
        })
    }

    pub fn socket(&self) -> PathBuf {
        self.root.join("cohort.sock")
    }
    pub fn lock(&self) -> PathBuf {
        self.root.join("daemon.lock")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.root.join("daemon.pid")
    }
    pub fn daemon_log(&self) -> PathBuf {
        self.root.join("daemon.log")
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }
    pub fn dump(&self) -> PathBuf {
        self.root.join("dump.json")
    }
    /// Where apps send systemd-style `READY=1` (their `NOTIFY_SOCKET`).
    pub fn notify_socket(&self) -> PathBuf {
        self.root.join("notify.sock")
    }
    pub fn shim_dir(&self) -> PathBuf {
        self.root.join("shim")
    }

    /// Creates the home and its `logs/` folder, with a clear error when that is impossible.
    pub fn ensure_dirs(&self) -> Result<()> {
        for dir in [self.root.as_path(), self.logs_dir().as_path()] {
            create_dir(dir)?;
        }
        Ok(())
    }
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| {
        format!(
            "COHORT_HOME {} is not writable: cannot create {} (set COHORT_HOME to a writable directory)",
            dir.parent().unwrap_or(dir).display(),
            dir.display()
        )
    })?;
    let probe = dir.join(".write-test");
    std::fs::write(&probe, b"").with_context(|| {
        format!(
            "COHORT_HOME {} is not writable (set COHORT_HOME to a writable directory)",
            dir.display()
        )
    })?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}
