//! Who besides its owner may use a daemon: `cohort access --group NAME [--read-only]`, stored in
//! COHORT_HOME/access.json (0600). Without that file only the owner and root are let in.
//!
//! This module owns the file and what sharing means for the file system: the home becomes 0710
//! with the group (members can reach the socket, not list or read anything), the socket 0660 with
//! the group. The daemon checks every connection's credentials on top (`daemon::access`).

use super::private::{self, DIR_MODE, SHARED_HOME_MODE};
use super::Home;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

/// A group allowed to use the daemon.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct GroupAccess {
    /// As the owner named it (a group name, or a number).
    pub group: String,
    pub gid: u32,
    /// Members may only look (ls, describe, logs), not start, stop or change anything.
    pub read_only: bool,
}

impl GroupAccess {
    /// Resolves `name` (a group name, or a numeric gid) into an access entry.
    pub fn for_group(name: &str, read_only: bool) -> Result<GroupAccess> {
        let gid = match name.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => match nix::unistd::Group::from_name(name) {
                Ok(Some(g)) => g.gid.as_raw(),
                Ok(None) => bail!(
                    "there is no group named {name:?} (create it with `groupadd {name}`, or give a numeric gid)"
                ),
                Err(e) => bail!("cannot look up group {name:?}: {e}"),
            },
        };
        Ok(GroupAccess {
            group: name.to_string(),
            gid,
            read_only,
        })
    }

    /// One line for `cohort access`.
    pub fn describe(&self) -> String {
        format!(
            "members of group {} (gid {}){}",
            self.group,
            self.gid,
            if self.read_only {
                ", read-only (ls, describe, logs; env values hidden)"
            } else {
                ", with full control"
            }
        )
    }
}

/// The home's mode and group for this access setting.
pub fn home_mode(access: Option<&GroupAccess>) -> (u32, Option<u32>) {
    match access {
        Some(a) => (SHARED_HOME_MODE, Some(a.gid)),
        None => (DIR_MODE, None),
    }
}

/// The socket's mode for this access setting.
pub fn socket_mode(access: Option<&GroupAccess>) -> u32 {
    if access.is_some() {
        0o660
    } else {
        0o600
    }
}

/// Reads COHORT_HOME/access.json; `None` when absent (owner and root only).
pub fn load(home: &Home) -> Result<Option<GroupAccess>> {
    let path = home.access();
    let bytes = match private::open_read(&path) {
        Ok(mut f) => {
            let mut b = Vec::new();
            std::io::Read::read_to_end(&mut f, &mut b)
                .with_context(|| format!("reading {}", path.display()))?;
            b
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    serde_json::from_slice(&bytes).map(Some).with_context(|| {
        format!(
            "{} is not valid (set it again with `cohort access --group NAME`, or `cohort access --off`)",
            path.display()
        )
    })
}

/// Stores (or with `None` removes) the access setting and applies it to the home and the socket.
pub fn store(home: &Home, access: Option<&GroupAccess>) -> Result<()> {
    match access {
        Some(a) => {
            let bytes = serde_json::to_vec_pretty(a).context("encoding the access setting")?;
            private::write_atomic(&home.access(), &bytes)?;
        }
        None => match std::fs::remove_file(home.access()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("removing {}", home.access().display()))
            }
        },
    }
    let (mode, group) = home_mode(access);
    private::secure_home(&home.root, mode, group)?;
    apply_to_socket(&home.socket(), access)
}

/// Gives the socket the mode and group of this access setting (when it exists).
pub fn apply_to_socket(sock: &Path, access: Option<&GroupAccess>) -> Result<()> {
    let meta = match std::fs::symlink_metadata(sock) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", sock.display())),
    };
    if !meta.file_type().is_socket() {
        bail!(
            "{} is not a socket (remove it and run the command again)",
            sock.display()
        );
    }
    if let Some(a) = access {
        if meta.gid() != a.gid {
            std::os::unix::fs::lchown(sock, None, Some(a.gid)).with_context(|| {
                format!(
                    "cannot hand {} to group {} (the owner must be a member of it, or run the daemon as root)",
                    sock.display(),
                    a.group
                )
            })?;
        }
    }
    std::fs::set_permissions(sock, std::fs::Permissions::from_mode(socket_mode(access)))
        .with_context(|| format!("setting the mode of {}", sock.display()))
}

/// The folders above the home that members of `gid` can't search (so can't reach the socket).
pub fn unreachable_ancestors(root: &Path, gid: u32) -> Vec<String> {
    root.ancestors()
        .skip(1)
        .filter_map(|dir| {
            let meta = std::fs::metadata(dir).ok()?;
            let mode = meta.mode();
            let searchable = mode & 0o001 != 0 || (meta.gid() == gid && mode & 0o010 != 0);
            (!searchable).then(|| dir.display().to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_follow_the_setting() {
        let a = GroupAccess {
            group: "deploy".into(),
            gid: 4242,
            read_only: true,
        };
        assert_eq!(home_mode(None), (0o700, None));
        assert_eq!(home_mode(Some(&a)), (0o710, Some(4242)));
        assert_eq!(socket_mode(None), 0o600);
        assert_eq!(socket_mode(Some(&a)), 0o660);
        assert!(a.describe().contains("read-only"));
    }

    #[test]
    fn numeric_groups_need_no_entry_and_unknown_names_say_how_to_fix() {
        let a = GroupAccess::for_group("4242", false).unwrap();
        assert_eq!(a.gid, 4242);
        let e = format!(
            "{:#}",
            GroupAccess::for_group("no-such-group-cohort", false).unwrap_err()
        );
        assert!(e.contains("groupadd"), "{e}");
    }
}
