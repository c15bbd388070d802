//! `net.ipv4.tcp_migrate_req`: whether the kernel moves the connections queued on a closing
//! listener to another listener of its `SO_REUSEPORT` group (instead of resetting them), and the
//! daemon's one-time decision to turn it on.
//!
//! With it on, a dead worker's queue is served by a live worker at once: the supervisor closes the
//! dead slot's socket (`SocketGroup::hand_over_queue`) and the kernel re-queues every connection on
//! a live slot's socket (with our classic BPF program attached, `reuseport_migrate_sock` picks a
//! listener by hash among the group's listening sockets). The setting is per network namespace and
//! applies to every reuseport group in it, so the daemon enables it only when it may (root, or
//! `CAP_NET_ADMIN` in its namespace) and only when it is 0 now, once, saying so in daemon.log;
//! `COHORT_TCP_MIGRATE_REQ=never` leaves it alone. See docs/cluster.md ("A dead worker's queue").

use std::io;
use std::path::Path;

/// Where the kernel exposes the setting (per network namespace of the reading thread).
pub const SYSCTL_PATH: &str = "/proc/sys/net/ipv4/tcp_migrate_req";

/// The environment variable that tells the daemon whether it may change the setting.
pub const ENV: &str = "COHORT_TCP_MIGRATE_REQ";

/// What the kernel says now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    On,
    Off,
    /// No such sysctl (kernel < 5.14) or /proc/sys not readable.
    Unsupported,
}

/// What the operator allows (`COHORT_TCP_MIGRATE_REQ`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    /// Default (`auto`, unset): turn it on when it is off and the daemon may.
    Enable,
    /// `never`: use it when on, never change it.
    Never,
}

/// What the daemon does at its first cluster socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing to do: already on, unsupported, or not ours to change.
    Nothing,
    /// Write 1.
    Enable,
}

/// Parses `COHORT_TCP_MIGRATE_REQ` (`None`: unset).
pub fn parse_permission(value: Option<&str>) -> Result<Permission, String> {
    match value.map(str::trim) {
        None | Some("") | Some("auto") => Ok(Permission::Enable),
        Some("never") | Some("0") | Some("off") => Ok(Permission::Never),
        Some(other) => Err(format!(
            "{ENV}={other:?}: expected `auto` (turn net.ipv4.tcp_migrate_req on when permitted) or `never`"
        )),
    }
}

/// Parses the sysctl file's content.
pub fn parse_setting(text: &str) -> Setting {
    match text.trim() {
        "0" => Setting::Off,
        "" => Setting::Unsupported,
        _ => Setting::On,
    }
}

/// The decision: enable only when it is off and the operator did not say `never`.
pub fn decide(setting: Setting, permission: Permission) -> Action {
    match (setting, permission) {
        (Setting::Off, Permission::Enable) => Action::Enable,
        _ => Action::Nothing,
    }
}

/// Reads the setting at `path` (the real one is [`SYSCTL_PATH`]).
pub fn read_setting(path: &Path) -> Setting {
    std::fs::read_to_string(path)
        .map(|t| parse_setting(&t))
        .unwrap_or(Setting::Unsupported)
}

/// Whether the kernel migrates queued connections off a closing listener right now.
pub fn enabled() -> bool {
    read_setting(Path::new(SYSCTL_PATH)) == Setting::On
}

/// Applies the decision once (the daemon calls it at its first cluster TCP socket) and returns the
/// line for daemon.log, if there is something to say.
pub fn prepare() -> Option<String> {
    let permission = match parse_permission(std::env::var(ENV).ok().as_deref()) {
        Ok(p) => p,
        Err(e) => return Some(format!("cohort: ignoring {e}; leaving the setting alone")),
    };
    let setting = read_setting(Path::new(SYSCTL_PATH));
    match (decide(setting, permission), setting) {
        (Action::Enable, _) => Some(match write_on(Path::new(SYSCTL_PATH)) {
            Ok(()) => "cohort: set net.ipv4.tcp_migrate_req=1 in this network namespace, so the connections queued on a dead cluster worker's socket move to a live worker (COHORT_TCP_MIGRATE_REQ=never leaves it alone)".to_string(),
            Err(e) => format!(
                "cohort: cannot set net.ipv4.tcp_migrate_req=1 ({e}): connections queued on a dead cluster worker wait for its replacement (run `sysctl -w net.ipv4.tcp_migrate_req=1` as root to change that)"
            ),
        }),
        (Action::Nothing, Setting::Off) => Some(
            "cohort: net.ipv4.tcp_migrate_req is 0 and COHORT_TCP_MIGRATE_REQ=never: connections queued on a dead cluster worker wait for its replacement".to_string(),
        ),
        (Action::Nothing, Setting::Unsupported) => Some(
            "cohort: no net.ipv4.tcp_migrate_req (Linux < 5.14?): connections queued on a dead cluster worker wait for its replacement".to_string(),
        ),
        (Action::Nothing, Setting::On) => None,
    }
}

fn write_on(path: &Path) -> io::Result<()> {
    std::fs::write(path, b"1")?;
    // Some containers mount /proc/sys read-only but let the write "succeed" elsewhere: check.
    match read_setting(path) {
        Setting::On => Ok(()),
        _ => Err(io::Error::other("the setting did not change")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::sockets::tests::{connect_n, lo, queues};
    use crate::cluster::sockets::SocketTable;
    use std::io::{Read, Write};
    use std::time::Duration;

    #[test]
    fn permission_from_the_environment() {
        let table: &[(Option<&str>, Result<Permission, ()>)] = &[
            (None, Ok(Permission::Enable)),
            (Some(""), Ok(Permission::Enable)),
            (Some("auto"), Ok(Permission::Enable)),
            (Some("never"), Ok(Permission::Never)),
            (Some(" off "), Ok(Permission::Never)),
            (Some("0"), Ok(Permission::Never)),
            (Some("yes"), Err(())),
        ];
        for (input, want) in table {
            assert_eq!(
                parse_permission(*input).map_err(|_| ()),
                *want,
                "input {input:?}"
            );
        }
    }

    #[test]
    fn setting_from_the_sysctl_file() {
        let table = [
            ("0\n", Setting::Off),
            ("1\n", Setting::On),
            ("2", Setting::On),
            ("", Setting::Unsupported),
        ];
        for (text, want) in table {
            assert_eq!(parse_setting(text), want, "text {text:?}");
        }
        assert_eq!(
            read_setting(Path::new("/nonexistent/tcp_migrate_req")),
            Setting::Unsupported
        );
    }

    #[test]
    fn enable_only_when_off_and_permitted() {
        use Setting::{Off, On, Unsupported};
        let (enable, never) = (Permission::Enable, Permission::Never);
        let table = [
            (Off, enable, Action::Enable),
            (Off, never, Action::Nothing),
            (On, enable, Action::Nothing),
            (On, never, Action::Nothing),
            (Unsupported, enable, Action::Nothing),
            (Unsupported, never, Action::Nothing),
        ];
        for (setting, permission, want) in table {
            assert_eq!(
                decide(setting, permission),
                want,
                "{setting:?} {permission:?}"
            );
        }
    }

    /// Runs `f` on a thread of its own in a fresh network namespace (loopback up) with
    /// `tcp_migrate_req` on, so the host's setting is never touched. Needs root.
    fn in_private_netns_with_migration(f: impl FnOnce() -> io::Result<()> + Send + 'static) {
        let outcome = std::thread::spawn(move || -> io::Result<()> {
            // SAFETY: unshare only changes this thread's namespace (CLONE_NEWNET is per task).
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                let e = io::Error::last_os_error();
                return Err(io::Error::other(format!(
                    "unshare(CLONE_NEWNET): {e} (run the tests as root)"
                )));
            }
            let up = std::process::Command::new("ip")
                .args(["link", "set", "lo", "up"])
                .status()
                .map_err(|e| {
                    io::Error::other(format!("ip link set lo up: {e} (install iproute2)"))
                })?;
            if !up.success() {
                return Err(io::Error::other("ip link set lo up failed"));
            }
            std::fs::write(SYSCTL_PATH, b"1")?;
            assert!(enabled());
            f()
        })
        .join();
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{e}"),
            Err(p) => std::panic::resume_unwind(p),
        }
    }

    #[test]
    fn a_dead_slots_queue_moves_to_a_live_slot() {
        in_private_netns_with_migration(|| {
            let addr = lo(0);
            let mut t = SocketTable::new();
            for s in 0..3 {
                t.socket_for("a", s, &addr)?;
            }
            let g = t.group("a");
            let port = g.local_addr(&addr).map(|a| a.port()).unwrap_or(0);
            // Everything new goes to slot 1, which then "dies" with 20 connections queued.
            g.set_live(1, true)?;
            let clients = connect_n(port, 20);
            assert_eq!(queues(g, &addr, &[0, 1, 2], 20), vec![0, 20, 0]);
            // A copy of the fd elsewhere (a lingering child of the dead worker) must not matter.
            let lingering = g.socket_for(1, &addr)?.try_clone_to_owned()?;
            g.set_live(1, false)?;
            // No live slot: nothing moves (the queue waits for the replacement).
            assert!(!g.hand_over_queue(1)?);
            g.set_live(0, true)?;
            g.set_live(2, true)?;
            assert!(g.hand_over_queue(1)?);
            // The kernel picks by hash among the listening sockets left (both live here; a slot
            // that is down but open would get its share too, see docs/cluster.md).
            let q = queues(g, &addr, &[0, 2], 20);
            assert_eq!(q.iter().sum::<u32>(), 20, "{q:?}");
            // The live slots' workers accept them, and they work.
            let mut accepted = Vec::new();
            for s in [0, 2] {
                let l = std::net::TcpListener::from(g.socket_for(s, &addr)?.try_clone_to_owned()?);
                while let Ok((c, _)) = l.accept() {
                    accepted.push(c);
                }
            }
            assert_eq!(accepted.len(), 20);
            for s in &mut accepted {
                s.set_nonblocking(false)?;
                s.write_all(b"x")?;
            }
            for mut c in clients {
                c.set_read_timeout(Some(Duration::from_secs(2)))?;
                let mut b = [0u8; 1];
                assert_eq!(c.read(&mut b)?, 1);
            }
            drop(lingering);
            // The replacement gets a fresh socket, and steering still matches the kernel's array.
            t.socket_for("a", 1, &addr)?;
            let g = t.group("a");
            g.set_live(1, true)?;
            g.set_live(0, false)?;
            g.set_live(2, false)?;
            let _late = connect_n(port, 30);
            assert_eq!(queues(g, &addr, &[0, 1, 2], 30), vec![0, 30, 0]);
            Ok(())
        });
    }
}
