//! COHORT_HOME: where one daemon keeps everything (socket, logs, dump, lock) and how to find it.
//! The formats of the files in it that more than one module reads live beside it: `dump` (dump.json)
//! and `tail` (the last lines of a log file, for `cohort logs` and monit).
//!
//! Two different homes are two independent daemons; tests rely on that to stay apart. The home is
//! private to its owner (`private`: 0700 folders, 0600 files, no links followed), unless the owner
//! shares it with a group (`access`).

pub mod access;
pub mod dump;
pub mod private;
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
    /// Names the systemd service that runs this home's daemon (written by a daemon a unit
    /// started; a CLI finding no daemon waits for that unit's restart instead of starting one).
    pub fn systemd_unit_file(&self) -> PathBuf {
        self.root.join("systemd.unit")
    }
    /// The service named in `systemd_unit_file`, if any.
    pub fn systemd_unit(&self) -> Option<String> {
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut private::open_read(&self.systemd_unit_file()).ok()?,
            &mut text,
        )
        .ok()?;
        let unit = text.trim();
        (unit.ends_with(".service") && !unit.contains('/')).then(|| unit.to_string())
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
    /// Who besides the owner may use the daemon (`cohort access`).
    pub fn access(&self) -> PathBuf {
        self.root.join("access.json")
    }

    /// Creates the home (0700) and its `logs/` folder, or checks an existing one: a home owned by
    /// another user or writable by others is refused; an older, more open home (0755) is narrowed
    /// to 0700 once (0710 with a shared group), saying so, and so are its files (0600).
    pub fn ensure_dirs(&self) -> Result<()> {
        // Owner and writability first, before anything in the home is read.
        let dir = private::open_home(&self.root)?;
        let shared = access::load(self)?;
        let (mode, group) = access::home_mode(shared.as_ref());
        if let Some(note) = dir.set_mode(mode, group)? {
            let files = private::narrow_files(&self.root) + private::narrow_files(&self.logs_dir());
            eprintln!(
                "{note}{}",
                if files > 0 {
                    format!("; {files} files in it are now 0600")
                } else {
                    String::new()
                }
            );
        }
        private::private_subdir(&self.logs_dir())?;
        probe_writable(&self.root)
    }
}

fn probe_writable(dir: &Path) -> Result<()> {
    let probe = dir.join(".write-test");
    private::create_new(&probe)
        .or_else(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                private::open_write(&probe).map_err(std::io::Error::other)
            }
            _ => Err(e),
        })
        .with_context(|| {
            format!(
                "COHORT_HOME {} is not writable (set COHORT_HOME to a writable directory)",
                dir.display()
            )
        })?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}
