//! The host side of the engine: the tools scripts/setup installs, the containers.conf these tests
//! point podman to (CONTAINERS_CONF) with the two settings hosts like this one need, and the apt
//! mirror the base image is bootstrapped from.

use super::work_dir;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The cached base image; bump the suffix when `make_base_image` changes what goes in it.
pub const BASE_IMAGE: &str = "localhost/cohort-test-base:bookworm-node-1";
/// The pause image `podman kube play` builds for a pod's infra container (from catatonit).
pub const PAUSE_REPO: &str = "localhost/podman-pause";
/// Tools the tests run and the Debian package scripts/setup installs for each.
const TOOLS: &[(&str, &str)] = &[
    ("podman", "podman"),
    ("runc", "runc"),
    ("/usr/lib/podman/netavark", "netavark"),
    ("iptables", "iptables"),
    ("catatonit", "catatonit"),
    ("debootstrap", "debootstrap"),
    ("strip", "binutils"),
];

/// The containers.conf for hosts like this one. Ulimits: podman otherwise raises nofile and nproc
/// to values above the hard limits it runs with, and without CAP_SYS_RESOURCE runc's setrlimit fails.
fn containers_conf(nofile_hard: u64, nproc_hard: u64) -> String {
    let nofile = (nofile_hard / 2).clamp(1024, 16384);
    let nproc = (nproc_hard / 2).clamp(1024, 16384);
    format!(
        "# Written by tests/ops_containers.rs (see docs/containers.md).\n\
         [containers]\n\
         default_ulimits = [\"nofile={nofile}:{nofile}\", \"nproc={nproc}:{nproc}\"]\n\
         [network]\n\
         network_backend = \"netavark\"\n\
         [engine]\n\
         runtime = \"runc\"\n\
         cgroup_manager = \"cgroupfs\"\n\
         events_logger = \"file\"\n"
    )
}

/// The hard limit named `what` in /proc/self/limits ("Max open files"); unlimited → u64::MAX.
fn hard_limit(limits: &str, what: &str) -> Option<u64> {
    let rest = limits.lines().find_map(|l| l.strip_prefix(what))?;
    let hard = rest.split_whitespace().nth(1)?;
    Some(hard.parse().unwrap_or(u64::MAX))
}

/// The path of the containers.conf (written once per run), after checking the tools are here.
pub fn engine_conf() -> &'static Path {
    static CONF: OnceLock<PathBuf> = OnceLock::new();
    CONF.get_or_init(|| {
        let missing: Vec<String> = TOOLS
            .iter()
            .filter(|(cmd, _)| !tool_exists(cmd))
            .map(|(cmd, pkg)| format!("{cmd} (package {pkg})"))
            .collect();
        assert!(
            missing.is_empty(),
            "error: missing {} (scripts/setup installs them: run scripts/setup as root)",
            missing.join(", ")
        );
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "error: these tests drive rootful podman (run them as root)"
        );
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let conf = containers_conf(
            hard_limit(&limits, "Max open files").unwrap_or(4096),
            hard_limit(&limits, "Max processes").unwrap_or(4096),
        );
        let path = work_dir().join("containers.conf");
        std::fs::write(&path, conf).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        path
    })
}

fn tool_exists(cmd: &str) -> bool {
    if cmd.contains('/') {
        return Path::new(cmd).is_file();
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
        .unwrap_or(false)
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| Path::new(d).join(cmd).is_file())
}

/// The Debian mirror of the apt sources (deb822 `.sources` or one-line `.list` texts): the first
/// `deb` source that serves the `bookworm` suite.
fn debian_mirror(sources: &[String]) -> Option<String> {
    for text in sources {
        for stanza in text.split("\n\n") {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(':')))
                    .map(str::trim)
            };
            let is_deb = field("Types").is_some_and(|t| t.split_whitespace().any(|t| t == "deb"));
            let bookworm =
                field("Suites").is_some_and(|s| s.split_whitespace().any(|s| s == "bookworm"));
            let enabled = field("Enabled").is_none_or(|e| e != "no");
            if let (true, true, true, Some(uris)) = (enabled, is_deb, bookworm, field("URIs")) {
                return uris.split_whitespace().next().map(str::to_string);
            }
        }
        for line in text.lines().map(str::trim) {
            let Some(rest) = line.strip_prefix("deb ") else {
                continue;
            };
            // `deb [signed-by=…] URI SUITE COMPONENTS…`
            let rest = match rest.trim_start().strip_prefix('[') {
                Some(opts) => opts.split_once(']').map_or("", |x| x.1),
                None => rest,
            };
            let words: Vec<&str> = rest.split_whitespace().collect();
            if words.get(1) == Some(&"bookworm") {
                return Some(words[0].to_string());
            }
        }
    }
    None
}

pub fn host_mirror() -> String {
    let mut texts = Vec::new();
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    for f in files {
        let name = f.to_string_lossy();
        if name.ends_with(".list") || name.ends_with(".sources") {
            texts.extend(std::fs::read_to_string(&f).ok());
        }
    }
    debian_mirror(&texts).unwrap_or_else(|| "http://deb.debian.org/debian".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mirror_is_the_first_enabled_deb_source_of_bookworm() {
        let deb822 = "Types: deb\n# snapshot\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n\
                      Components: main\n\nTypes: deb\nURIs: http://security.example\nSuites: bookworm-security\n";
        let disabled =
            "Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nEnabled: no\n";
        let src_only = "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n";
        let one_line = "# deb http://commented.example bookworm main\n\
                        deb [signed-by=/k.gpg] http://line.example/debian bookworm main\n";
        let other = "deb https://packages.example/apt cloud-sdk-bookworm main\n";
        let cases: &[(&[&str], Option<&str>)] = &[
            (&[deb822], Some("http://mirror.example/debian")),
            (
                &[disabled, src_only, one_line],
                Some("http://line.example/debian"),
            ),
            (
                &[other, "deb http://plain.example/debian bookworm main"],
                Some("http://plain.example/debian"),
            ),
            (&[other, src_only, disabled], None),
            (&[], None),
        ];
        for (texts, want) in cases {
            let texts: Vec<String> = texts.iter().map(|s| s.to_string()).collect();
            assert_eq!(debian_mirror(&texts).as_deref(), *want, "{texts:?}");
        }
    }

    #[test]
    fn the_engine_conf_sets_runc_and_ulimits_below_the_hard_limits() {
        for (nofile, nproc, want) in [
            (20000, 96369, "nofile=10000:10000\", \"nproc=16384:16384"),
            (1024, 1024, "nofile=1024:1024\", \"nproc=1024:1024"),
            (
                u64::MAX,
                u64::MAX,
                "nofile=16384:16384\", \"nproc=16384:16384",
            ),
        ] {
            let conf = containers_conf(nofile, nproc);
            assert!(conf.contains(want), "{conf}");
            assert!(conf.contains("runtime = \"runc\""), "{conf}");
        }
        let limits = "Limit  Soft Limit  Hard Limit  Units\nMax processes             96369                96369                processes\n\
                      Max open files            1024                 20000                files\n\
                      Max file size             unlimited            unlimited            bytes\n";
        assert_eq!(hard_limit(limits, "Max open files"), Some(20000));
        assert_eq!(hard_limit(limits, "Max processes"), Some(96369));
        assert_eq!(hard_limit(limits, "Max file size"), Some(u64::MAX));
        assert_eq!(hard_limit(limits, "Max locked memory"), None);
    }
}
