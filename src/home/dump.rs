//! dump.json: what `save` stores and `resurrect` starts again (and what `startup` reads to size its
//! stop timeout). Written atomically (temp file, fsync, rename, fsync of the folder), so a crash
//! mid-save leaves the previous dump intact.
//!
//! The file format is owned here; what an app's spec is belongs to `config`, so the spec is a type
//! parameter (`config::AppSpec` in practice) and `home` stays below `config`.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Serialize, Deserialize, Debug)]
pub struct Dump<S> {
    pub version: u32,
    pub saved_at: u64,
    pub apps: Vec<SavedApp<S>>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct SavedApp<S> {
    pub spec: S,
    /// The number of processes that ran (the resolved instance count).
    pub instances: u32,
    /// Every instance was stopped by the user: resurrect recreates it stopped.
    pub stopped: bool,
    /// The process ids by instance, so `resurrect` and `update` keep them (PM2's pm_id).
    #[serde(default)]
    pub ids: Vec<u32>,
}

pub fn write<S: Serialize>(path: &Path, apps: Vec<SavedApp<S>>) -> Result<()> {
    let saved_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let dump = Dump {
        version: 1,
        saved_at,
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

pub fn read<S: serde::de::DeserializeOwned>(path: &Path) -> Result<Dump<S>> {
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

#[cfg(test)]
mod tests {
    use super::{read, write, SavedApp};

    #[test]
    fn written_dump_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dump.json");
        let apps = vec![SavedApp {
            spec: "api".to_string(),
            instances: 2,
            stopped: false,
            ids: vec![3, 4],
        }];
        write(&path, apps).unwrap();
        let dump = read::<String>(&path).unwrap();
        assert_eq!(dump.version, 1);
        assert_eq!(dump.apps.len(), 1);
        assert_eq!(
            (
                dump.apps[0].spec.as_str(),
                dump.apps[0].instances,
                dump.apps[0].stopped
            ),
            ("api", 2, false)
        );
        // Only dump.json is left: the temp file was renamed over it.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("dump.json")]);
    }

    #[test]
    fn missing_and_invalid_dumps_say_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dump.json");
        let missing = format!("{:#}", read::<String>(&path).unwrap_err());
        assert!(missing.contains("run `cohort save` first"), "{missing}");
        std::fs::write(&path, b"{not json").unwrap();
        let invalid = format!("{:#}", read::<String>(&path).unwrap_err());
        assert!(invalid.contains("is not a valid dump"), "{invalid}");
    }
}
