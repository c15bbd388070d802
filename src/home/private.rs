//! Keeping COHORT_HOME private: the folder's owner and mode are checked (and an old, too-open home
//! tightened once), folders are created 0700 and files 0600 from the first instant, and every file
//! is opened without following a symbolic link (`O_NOFOLLOW`, `O_CLOEXEC`). Files in the home are
//! also reached through their folder opened with `O_NOFOLLOW`, so a link planted at `logs/` is
//! refused as surely as one planted at `logs/web-0-out.log`.
//!
//! The verdict on a home's owner and mode is a pure function (`judge_home`), table-tested below.

use anyhow::{bail, Context, Result};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Folders cohort creates: owner only.
pub const DIR_MODE: u32 = 0o700;
/// Files cohort creates: owner read/write only.
pub const FILE_MODE: u32 = 0o600;
/// The home when a group shares control (`cohort access`): the group may reach the socket, and
/// nothing else (it can't list the folder nor read a file in it).
pub const SHARED_HOME_MODE: u32 = 0o710;

/// The home of the daemon running in this process (set once when it claims its home): files
/// under it are opened through a folder that must not be a link either.
static DAEMON_HOME: OnceLock<PathBuf> = OnceLock::new();

/// Records the home this process serves (the daemon calls it once, when it claims the home).
pub fn set_daemon_home(root: &Path) {
    let _ = DAEMON_HOME.set(root.to_path_buf());
}

/// What to do with an existing home folder, given its owner and mode.
#[derive(Debug, PartialEq, Eq)]
pub enum HomeVerdict {
    /// As it should be.
    Keep,
    /// Owned by us and not writable by others, but its mode is not the wanted one: set it.
    SetMode { from: u32, to: u32 },
    /// Unsafe to use: the message says why and how to fix it.
    Refuse(String),
}

/// Judges a home owned by `owner` with permission bits `mode`, for a process running as `me`,
/// when its mode should be `wanted` (0700, or 0710 with a shared group).
pub fn judge_home(path: &Path, owner: u32, mode: u32, me: u32, wanted: u32) -> HomeVerdict {
    let p = path.display();
    if owner != me {
        return HomeVerdict::Refuse(format!(
            "COHORT_HOME {p} belongs to uid {owner}, not to you (uid {me}) (choose another COHORT_HOME, or run cohort as uid {owner})"
        ));
    }
    if mode & 0o002 != 0 {
        return HomeVerdict::Refuse(format!(
            "COHORT_HOME {p} is writable by others (chmod 700 {p}, or choose another COHORT_HOME)"
        ));
    }
    if mode & 0o020 != 0 {
        return HomeVerdict::Refuse(format!(
            "COHORT_HOME {p} is writable by its group (chmod 700 {p}, or choose another COHORT_HOME)"
        ));
    }
    let bits = mode & 0o777;
    if bits == wanted {
        HomeVerdict::Keep
    } else {
        HomeVerdict::SetMode {
            from: bits,
            to: wanted,
        }
    }
}

/// Creates (0700) or checks the home folder and brings its mode to `wanted` and its group to
/// `group`; returns a note to print when an existing home was opened up less than before.
pub fn secure_home(root: &Path, wanted: u32, group: Option<u32>) -> Result<Option<String>> {
    open_home(root)?.set_mode(wanted, group)
}

/// A home folder that passed the owner and writability checks, held open.
pub struct HomeDir {
    root: PathBuf,
    dir: File,
    meta: std::fs::Metadata,
}

/// Creates the home (0700) if missing, opens it and refuses it when another user owns it or
/// others may write to it. Its mode is not changed yet (`HomeDir::set_mode`).
pub fn open_home(root: &Path) -> Result<HomeDir> {
    if let Some(parent) = root.parent() {
        std::fs::create_dir_all(parent).with_context(|| {
            format!(
                "COHORT_HOME {} is not writable: cannot create {} (set COHORT_HOME to a writable directory)",
                parent.display(),
                root.display()
            )
        })?;
    }
    match std::fs::DirBuilder::new().mode(DIR_MODE).create(root) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "COHORT_HOME {} is not writable: cannot create it (set COHORT_HOME to a writable directory)",
                    root.display()
                )
            })
        }
    }
    let me = nix::unistd::geteuid().as_raw();
    // The home itself may be a link (~/.cohort → /data/cohort), but only one that we or root made.
    let link = std::fs::symlink_metadata(root)
        .with_context(|| format!("reading COHORT_HOME {}", root.display()))?;
    if link.file_type().is_symlink() && link.uid() != me && link.uid() != 0 {
        bail!(
            "COHORT_HOME {} is a symbolic link owned by uid {}, not by you (uid {me}) or root (remove it, or choose another COHORT_HOME)",
            root.display(),
            link.uid()
        );
    }
    let dir = open_dir(root, false)?;
    let meta = dir
        .metadata()
        .with_context(|| format!("reading COHORT_HOME {}", root.display()))?;
    if !meta.is_dir() {
        bail!(
            "COHORT_HOME {} is not a folder (remove it, or choose another COHORT_HOME)",
            root.display()
        );
    }
    // Judged against its own mode: only the refusals apply here.
    if let HomeVerdict::Refuse(why) =
        judge_home(root, meta.uid(), meta.mode(), me, meta.mode() & 0o777)
    {
        bail!(why);
    }
    Ok(HomeDir {
        root: root.to_path_buf(),
        dir,
        meta,
    })
}

impl HomeDir {
    /// Sets the home's mode to `wanted` (and its group to `group`); returns a note when an
    /// existing home was narrowed (an upgrade from an older cohort), `None` otherwise.
    pub fn set_mode(&self, wanted: u32, group: Option<u32>) -> Result<Option<String>> {
        let me = nix::unistd::geteuid().as_raw();
        let root = self.root.display();
        let note = match judge_home(&self.root, self.meta.uid(), self.meta.mode(), me, wanted) {
            HomeVerdict::Keep => None,
            HomeVerdict::Refuse(why) => bail!(why),
            HomeVerdict::SetMode { from, to } => {
                set_mode(&self.dir, to)
                    .with_context(|| format!("setting the mode of COHORT_HOME {root} to {to:o}"))?;
                // Opening up (0700 → 0710 for a group) is what the user asked for; narrowing is news.
                (from & !to != 0).then(|| {
                    format!(
                        "cohort: COHORT_HOME {root} was {from:o}; it is now {to:o}, as it holds your apps' secrets (see docs/security.md)"
                    )
                })
            }
        };
        if let Some(gid) = group {
            if self.meta.gid() != gid {
                nix::unistd::fchown(self.dir.as_raw_fd(), None, Some(nix::unistd::Gid::from_raw(gid)))
                    .with_context(|| {
                        format!(
                            "cannot hand COHORT_HOME {root} to group {gid} (the owner must be a member of that group, or run the daemon as root)"
                        )
                    })?;
            }
        }
        Ok(note)
    }
}

/// Creates `dir` (0700) inside the home if missing and checks it is a real folder of ours, not a
/// link; an older, wider mode is narrowed to 0700.
pub fn private_subdir(dir: &Path) -> Result<()> {
    match std::fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "COHORT_HOME {} is not writable: cannot create {} (set COHORT_HOME to a writable directory)",
                    dir.parent().unwrap_or(dir).display(),
                    dir.display()
                )
            })
        }
    }
    let fd = open_dir(dir, true)?;
    let meta = fd
        .metadata()
        .with_context(|| format!("reading {}", dir.display()))?;
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        bail!(
            "{} belongs to uid {}, not to you (uid {me}) (remove it; cohort recreates it)",
            dir.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o077 != 0 {
        set_mode(&fd, DIR_MODE).with_context(|| format!("narrowing {}", dir.display()))?;
    }
    Ok(())
}

/// Narrows every regular file of `dir` that others may read to 0600 (files of an older cohort).
/// Links and sockets are left as they are; returns how many files changed.
pub fn narrow_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut changed = 0;
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.file_type().is_file() || meta.mode() & 0o077 == 0 {
            continue;
        }
        if let Ok(f) = open_nofollow(&entry.path(), OFlag::O_RDONLY | OFlag::O_NONBLOCK) {
            if set_mode(&f, FILE_MODE).is_ok() {
                changed += 1;
            }
        }
    }
    changed
}

/// Opens a file for appending, creating it 0600 (logs, daemon.log).
pub fn open_append(path: &Path) -> Result<File> {
    open_nofollow(path, OFlag::O_WRONLY | OFlag::O_APPEND | OFlag::O_CREAT)
        .with_context(|| describe_failure(path))
}

/// Opens a file for writing from its start, creating it 0600 (pid file, the Node preload).
pub fn open_truncate(path: &Path) -> Result<File> {
    open_nofollow(path, OFlag::O_WRONLY | OFlag::O_TRUNC | OFlag::O_CREAT)
        .with_context(|| describe_failure(path))
}

/// Opens (creating 0600, never truncating) a file to lock or write in place (the lock file).
pub fn open_write(path: &Path) -> Result<File> {
    open_nofollow(path, OFlag::O_WRONLY | OFlag::O_CREAT).with_context(|| describe_failure(path))
}

/// Creates a new file 0600; fails if anything (a file, a link) is already there (temp files).
pub fn create_new(path: &Path) -> std::io::Result<File> {
    open_nofollow(path, OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL)
}

/// Opens an existing file for writing (never creating it), e.g. to empty it.
pub fn open_existing(path: &Path) -> std::io::Result<File> {
    open_nofollow(path, OFlag::O_WRONLY)
}

/// Opens a file for reading without following a link at its name.
pub fn open_read(path: &Path) -> std::io::Result<File> {
    open_nofollow(path, OFlag::O_RDONLY)
}

/// Writes `bytes` to `path` atomically: a fixed temp name beside it (created with O_EXCL after
/// removing a leftover of a killed writer), fsync, rename, fsync of the folder. Writers of one
/// path must not run concurrently (the daemon's actor, or the CLI with no daemon running).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().context("the path has no folder")?;
    let tmp = temp_path(path);
    let _ = std::fs::remove_file(&tmp);
    let result = (|| -> Result<()> {
        let mut f = create_new(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("syncing {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", dir.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The one temp name `write_atomic` uses for `path`: `.NAME.tmp` beside it.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// Binds a Unix socket whose file is created with `mode` from the first instant (a umask during
/// the bind: the daemon's other threads create no files meanwhile).
pub fn bind_with_mode<T>(
    mode: u32,
    bind: impl FnOnce() -> std::io::Result<T>,
) -> std::io::Result<T> {
    let mask = (!mode & 0o777) as libc::mode_t;
    // SAFETY: umask only changes this process's file mode mask.
    let old = unsafe { libc::umask(mask) };
    let r = bind();
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    r
}

fn describe_failure(path: &Path) -> String {
    format!("opening {}", path.display())
}

fn set_mode(f: &File, mode: u32) -> std::io::Result<()> {
    f.set_permissions(std::fs::Permissions::from_mode(mode))
}

/// Opens a folder; with `nofollow`, a link there is refused.
fn open_dir(dir: &Path, nofollow: bool) -> Result<File> {
    let mut flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    if nofollow {
        flags |= OFlag::O_NOFOLLOW;
    }
    match nix::fcntl::open(dir, flags, Mode::empty()) {
        // SAFETY: open returned a new descriptor that nothing else owns.
        Ok(fd) => Ok(unsafe { File::from_raw_fd(fd) }),
        Err(nix::errno::Errno::ELOOP) | Err(nix::errno::Errno::ENOTDIR) if nofollow => bail!(
            "{} is a symbolic link or not a folder: cohort does not follow links in COHORT_HOME (remove it; cohort recreates the folder)",
            dir.display()
        ),
        Err(e) => Err(e).with_context(|| format!("opening {}", dir.display())),
    }
}

/// Opens `path` with O_NOFOLLOW | O_CLOEXEC (and mode 0600 when created). A file under the
/// daemon's home is opened relative to its folder, itself opened with O_NOFOLLOW.
fn open_nofollow(path: &Path, flags: OFlag) -> std::io::Result<File> {
    let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mode = Mode::from_bits_truncate(FILE_MODE as libc::mode_t);
    let in_home = DAEMON_HOME.get().is_some_and(|h| path.starts_with(h));
    let (Some(parent), Some(name), true) = (path.parent(), path.file_name(), in_home) else {
        return match nix::fcntl::open(path, flags, mode) {
            // SAFETY: open returned a new descriptor that nothing else owns.
            Ok(fd) => Ok(unsafe { File::from_raw_fd(fd) }),
            Err(e) => Err(explain(path, e, false)),
        };
    };
    // The home itself may be a link its owner made (checked by `secure_home`); folders in it may not.
    let mut dir_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    if DAEMON_HOME.get().is_none_or(|h| h != parent) {
        dir_flags |= OFlag::O_NOFOLLOW;
    }
    let dirfd =
        nix::fcntl::open(parent, dir_flags, Mode::empty()).map_err(|e| explain(parent, e, true))?;
    // SAFETY: open returned a new descriptor that nothing else owns; dropped at the end.
    let dir = unsafe { File::from_raw_fd(dirfd) };
    match nix::fcntl::openat(Some(dir.as_raw_fd()), name, flags, mode) {
        // SAFETY: openat returned a new descriptor that nothing else owns.
        Ok(fd) => Ok(unsafe { File::from_raw_fd(fd) }),
        Err(e) => Err(explain(path, e, false)),
    }
}

/// ELOOP/ENOTDIR from O_NOFOLLOW mean a link was planted there: say so and how to fix it
/// (callers name the file they were opening; a folder on the way is named here).
fn explain(path: &Path, e: nix::errno::Errno, is_folder: bool) -> std::io::Error {
    match e {
        nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR if is_folder => std::io::Error::other(format!(
            "its folder {} is a symbolic link or not a folder: cohort does not follow links in COHORT_HOME (remove the link; cohort recreates the folder)",
            path.display()
        )),
        nix::errno::Errno::ELOOP => std::io::Error::other(
            "it is a symbolic link: cohort does not follow links to its files (remove the link)",
        ),
        e => std::io::Error::from(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_verdicts() {
        let p = Path::new("/h");
        let cases: &[(u32, u32, u32, u32, &str)] = &[
            // (owner, mode, me, wanted, verdict)
            (1000, 0o700, 1000, 0o700, "keep"),
            (1000, 0o755, 1000, 0o700, "set 755→700"),
            (1000, 0o711, 1000, 0o700, "set 711→700"),
            (1000, 0o700, 1000, 0o710, "set 700→710"),
            (1000, 0o750, 1000, 0o710, "set 750→710"),
            (1000, 0o777, 1000, 0o700, "refuse others"),
            (1000, 0o702, 1000, 0o700, "refuse others"),
            (1000, 0o770, 1000, 0o700, "refuse group"),
            (1000, 0o1777, 1000, 0o700, "refuse others"),
            (1001, 0o700, 1000, 0o700, "refuse owner"),
            (1000, 0o700, 0, 0o700, "refuse owner"),
            (0, 0o700, 0, 0o700, "keep"),
        ];
        for &(owner, mode, me, wanted, want) in cases {
            let got = match judge_home(p, owner, mode, me, wanted) {
                HomeVerdict::Keep => "keep".to_string(),
                HomeVerdict::SetMode { from, to } => format!("set {from:o}→{to:o}"),
                HomeVerdict::Refuse(why) if why.contains("belongs to uid") => "refuse owner".into(),
                HomeVerdict::Refuse(why) if why.contains("writable by others") => {
                    "refuse others".into()
                }
                HomeVerdict::Refuse(why) if why.contains("writable by its group") => {
                    "refuse group".into()
                }
                HomeVerdict::Refuse(why) => why,
            };
            assert_eq!(got, want, "owner {owner} mode {mode:o} me {me}");
        }
        let HomeVerdict::Refuse(why) = judge_home(p, 1000, 0o757, 1000, 0o700) else {
            panic!("must refuse")
        };
        assert_eq!(
            why,
            "COHORT_HOME /h is writable by others (chmod 700 /h, or choose another COHORT_HOME)"
        );
    }

    #[test]
    fn files_are_created_private_and_links_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.log");
        drop(open_append(&file).unwrap());
        let mode = std::fs::metadata(&file).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let target = dir.path().join("target");
        std::fs::write(&target, b"keep").unwrap();
        let link = dir.path().join("b.log");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = format!("{:#}", open_append(&link).unwrap_err());
        assert!(err.contains("is a symbolic link"), "{err}");
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    }

    #[test]
    fn atomic_writes_leave_only_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        // A leftover of a killed writer is replaced, not an obstacle.
        std::fs::write(temp_path(&path), b"half").unwrap();
        write_atomic(&path, b"{}").unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("x.json")]);
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
    }
}
