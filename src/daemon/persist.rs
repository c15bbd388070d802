//! dump.json: what `save` stores and `resurrect` starts again. Written atomically (temp file, fsync,
//! rename, fsync of the folder), so a crash mid-save leaves the previous dump intact.

use crate::config::AppSpec;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

#[derive(Serialize, Deserialize, Debug)]
pub struct Dump {
    pub version: u32,
    pub saved_at: u64,
    pub apps: Vec<SavedApp>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct SavedApp {
    pub spec: AppSpec,
    /// The number of processes that ran (the resolved instance count).
    pub instances: u32,
    /// Every instance was stopped by the user: resurrect recreates it stopped.
    pub stopped: bool,
}

pub fn write(path: &Path, apps: Vec<SavedApp>) -> Result<()> {
    let dump = Dump {
        version: 1,
        saved_at: super::now_ms(),
        apps,
    };
    let bytes = serde_json::to_vec_pretty(&dump).context("encoding the dump")?;
    let dir = path.parent().context("dump path has no folder")?;
    let tmp = dir.join(format!(".dump.json.{}.tmp", std::process::id()));
    let result = (|| -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(&bytes)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("syncing {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", dir.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

pub fn read(path: &Path) -> Result<Dump> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!(
                "nothing saved yet: {} does not exist (run `cohort save` first)",
                path.display()
            )
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "{} is not a valid dump (fix or remove it, then `cohort save` again)",
            path.display()
        )
    })
}
