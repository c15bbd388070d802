//! dump.json: what `save` stores and `resurrect` starts again (and what `startup` reads to size its
//! stop timeout). Written atomically (temp file, fsync, rename, fsync of the folder), so a crash
//! mid-save leaves the previous dump intact. It holds the apps' environments (secrets): 0600, never
//! read through a link. The temp file has one fixed name (`.dump.json.tmp`, created with O_EXCL
//! after removing a leftover), so kills mid-save leave at most that one file, removed by the next
//! save or daemon start.
//!
//! The file format is owned here; what an app's spec is belongs to `config`, so the spec is a type
//! parameter (`config::AppSpec` in practice) and `home` stays below `config`.

use super::private;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The dump format this cohort writes and reads.
pub const FORMAT_VERSION: u32 = 1;
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
}

pub fn write<S: Serialize>(path: &Path, apps: Vec<SavedApp<S>>) -> Result<()> {
    let saved_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let dump = Dump {
        version: FORMAT_VERSION,
        saved_at,
        apps,
    };
    let bytes = serde_json::to_vec_pretty(&dump).context("encoding the dump")?;
    private::write_atomic(path, &bytes)
}

/// Removes temp files of saves that were killed midway: the fixed `.dump.json.tmp` and the
/// `.dump.json.<pid>.tmp` of older cohorts.
pub fn remove_stale_temps(path: &Path) {
    let _ = std::fs::remove_file(private::temp_path(path));
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let n = entry.file_name();
        let n = n.to_string_lossy();
        if n.starts_with(&prefix) && n.ends_with(".tmp") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

pub fn read<S: serde::de::DeserializeOwned>(path: &Path) -> Result<Dump<S>> {
    let bytes = match private::open_read(path).and_then(|mut f| {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut b).map(|_| b)
    }) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!(
                "nothing saved yet: {} does not exist (run `cohort save` first)",
                path.display()
            )
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    // The version first: a newer format may not parse as this one, and that is the real news.
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    let invalid = || {
        format!(
            "{} is not a valid dump (fix or remove it, then `cohort save` again)",
            path.display()
        )
    };
    let version = serde_json::from_slice::<Version>(&bytes)
        .with_context(invalid)?
        .version;
    if version > FORMAT_VERSION {
        bail!(
            "{} was written by a newer cohort (dump format {version}; this cohort reads format {FORMAT_VERSION}) (upgrade cohort, or `cohort save` again with this one)",
            path.display()
        );
    }
    serde_json::from_slice(&bytes).with_context(invalid)
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
        std::fs::write(&path, br#"{"version": 2, "apps": "changed"}"#).unwrap();
        let newer = format!("{:#}", read::<String>(&path).unwrap_err());
        assert!(newer.contains("written by a newer cohort"), "{newer}");
    }

    #[test]
    fn leftover_temps_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dump.json");
        for name in [
            ".dump.json.tmp",
            ".dump.json.123.tmp",
            "dump.json",
            "keep.tmp",
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        super::remove_stale_temps(&path);
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["dump.json", "keep.tmp"]);
    }
}
