//! systemd as PID 1 of a container: the cached image (the base plus Debian's systemd), the run
//! options that let it boot on this host's cgroup layout, and the wait for its boot.

use super::host::host_mirror;
use super::image::{base_image, made_once};
use super::{podman, podman_ok, wait_until, work_dir};
use std::sync::Mutex;
use std::time::Duration;

/// The cached systemd image; bump the suffix when `systemd_image` changes what goes in it.
pub const SYSTEMD_IMAGE: &str = "localhost/cohort-test-systemd:bookworm-node-1-systemd-2";

/// The Containerfile of the systemd image: the base, and Debian's systemd (with systemd-sysv's
/// /sbin/init, and dbus, which systemd recommends and systemctl needs for a non-root user) from
/// the same mirror the base was bootstrapped from, without other recommends, docs or apt lists.
fn containerfile(base: &str, mirror: &str) -> String {
    format!(
        "FROM {base}\n\
         RUN echo 'deb {mirror} bookworm main' > /etc/apt/sources.list \\\n \
         && apt-get update \\\n \
         && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends systemd systemd-sysv dbus \\\n \
         && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb \\\n \
                   /usr/share/doc /usr/share/man /usr/share/info /usr/share/locale\n\
         CMD [\"/sbin/init\"]\n"
    )
}

/// The systemd image, made once: the tag if the store has it, else the cached archive
/// (`podman save` under target/containers), else a build on the base image (which is made first if
/// needed), saved to the archive. Only the build reaches the apt mirror (host network, like the
/// base's debootstrap); the tag or the archive make it offline.
pub fn systemd_image() -> &'static str {
    static MADE: Mutex<bool> = Mutex::new(false);
    made_once(SYSTEMD_IMAGE, &MADE, "systemd", |archive| {
        if archive.is_file() {
            podman_ok(&["load", "--quiet", "--input", &archive.to_string_lossy()]);
            return;
        }
        let base = base_image();
        let ctx = work_dir().join(format!("systemd-context-{}", std::process::id()));
        std::fs::create_dir_all(&ctx).unwrap_or_else(|e| panic!("{}: {e}", ctx.display()));
        let file = ctx.join("Containerfile");
        std::fs::write(&file, containerfile(base, &host_mirror()))
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let built = podman(&[
            "build",
            "--quiet",
            "--layers=false",
            "--network=host",
            "-f",
            &file.to_string_lossy(),
            "-t",
            SYSTEMD_IMAGE,
            &ctx.to_string_lossy(),
        ]);
        let _ = std::fs::remove_dir_all(&ctx);
        assert!(
            built.ok(),
            "building {SYSTEMD_IMAGE} (apt-get install systemd from {}):\n{}{}",
            host_mirror(),
            built.stdout,
            built.stderr
        );
        let tmp = archive.with_extension("tar.tmp");
        let _ = std::fs::remove_file(&tmp);
        podman_ok(&[
            "save",
            "--quiet",
            "--output",
            &tmp.to_string_lossy(),
            SYSTEMD_IMAGE,
        ]);
        std::fs::rename(&tmp, archive)
            .unwrap_or_else(|e| panic!("{} → {}: {e}", tmp.display(), archive.display()));
    })
}

/// How the host mounts cgroups, from /proc/self/mountinfo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupLayout {
    /// cgroup2 at /sys/fs/cgroup.
    Unified,
    /// cgroup v1 controllers, and a cgroup2 tree at /sys/fs/cgroup/unified.
    Hybrid,
    /// cgroup v1 only.
    Legacy,
}

impl CgroupLayout {
    /// This host's layout.
    pub fn of_this_host() -> CgroupLayout {
        cgroup_layout(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())
    }

    /// Where the cgroup2 tree is mounted, if there is one.
    pub fn cgroup2_root(self) -> Option<&'static str> {
        match self {
            CgroupLayout::Unified => Some("/sys/fs/cgroup"),
            CgroupLayout::Hybrid => Some("/sys/fs/cgroup/unified"),
            CgroupLayout::Legacy => None,
        }
    }
}

pub fn cgroup_layout(mountinfo: &str) -> CgroupLayout {
    let cgroup2_at = |dir: &str| {
        mountinfo.lines().any(|l| {
            let mut halves = l.splitn(2, " - ");
            let point = halves.next().and_then(|a| a.split_whitespace().nth(4));
            let fstype = halves.next().and_then(|b| b.split_whitespace().next());
            point == Some(dir) && fstype == Some("cgroup2")
        })
    };
    if cgroup2_at("/sys/fs/cgroup") {
        CgroupLayout::Unified
    } else if cgroup2_at("/sys/fs/cgroup/unified") {
        CgroupLayout::Hybrid
    } else {
        CgroupLayout::Legacy
    }
}

/// The `podman run` options for systemd as PID 1 here, beyond `--systemd=always` (which gives it
/// a tmpfs /run and /tmp, STOPSIGNAL RTMIN+3, `container=podman`, and a writable cgroup of its
/// own). On a hybrid host podman mounts only the v1 hierarchies, so systemd would fall back to
/// legacy mode (v1 name=systemd) and cohort to its no-cgroup fallback; the host's cgroup2 tree,
/// mounted at the same place (the container shares the host's cgroup namespace, as podman does
/// on cgroup v1, so /proc/self/cgroup paths are the tree's), makes it boot in hybrid mode like the
/// host's own systemd, and cohort gets its cgroup cells under the unit's cgroup. systemd only writes
/// below its own cgroup (the container's), which the engine removes with the container.
pub fn systemd_run_opts(layout: CgroupLayout) -> Vec<String> {
    let mut opts = vec!["--systemd=always".to_string()];
    if layout == CgroupLayout::Hybrid {
        opts.push("--volume".into());
        opts.push("/sys/fs/cgroup/unified:/sys/fs/cgroup/unified:rw".into());
    }
    opts
}

/// Waits for `systemctl is-system-running` to report the boot finished (`running`, or `degraded`
/// with the failed units printed); panics with the container's log otherwise.
pub fn wait_for_boot(container: &str, timeout: Duration) -> String {
    let mut state = String::new();
    let booted = wait_until(timeout, || {
        state = podman(&["exec", container, "systemctl", "is-system-running"])
            .stdout
            .trim()
            .to_string();
        state == "running" || state == "degraded"
    });
    assert!(
        booted,
        "systemd in {container} did not finish booting within {timeout:?} (state {state:?}):\n{}",
        super::container_log(container)
    );
    if state == "degraded" {
        let failed = podman(&["exec", container, "systemctl", "--failed", "--no-pager"]);
        eprintln!("[systemd] degraded boot:\n{}", failed.stdout);
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cgroup_layout_is_read_from_mountinfo() {
        let hybrid = "30 24 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
                      31 30 0:27 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
                      32 30 0:28 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n";
        let unified =
            "30 24 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        let legacy = "30 24 0:26 / /sys/fs/cgroup ro - tmpfs tmpfs ro\n\
                      31 30 0:28 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n";
        assert_eq!(cgroup_layout(hybrid), CgroupLayout::Hybrid);
        assert_eq!(cgroup_layout(unified), CgroupLayout::Unified);
        assert_eq!(cgroup_layout(legacy), CgroupLayout::Legacy);
        assert_eq!(cgroup_layout(""), CgroupLayout::Legacy);
        assert!(systemd_run_opts(CgroupLayout::Hybrid)
            .contains(&"/sys/fs/cgroup/unified:/sys/fs/cgroup/unified:rw".to_string()));
        assert_eq!(
            systemd_run_opts(CgroupLayout::Unified),
            ["--systemd=always"]
        );
    }

    #[test]
    fn the_containerfile_installs_systemd_from_the_mirror() {
        let f = containerfile("localhost/base:1", "http://mirror.example/debian");
        assert!(f.starts_with("FROM localhost/base:1\n"), "{f}");
        assert!(
            f.contains("'deb http://mirror.example/debian bookworm main'"),
            "{f}"
        );
        assert!(f.contains("install -y --no-install-recommends systemd systemd-sysv dbus"));
    }
}
