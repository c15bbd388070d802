//! systemd's readiness protocol for the apps: the daemon listens on COHORT_HOME/notify.sock (a
//! datagram socket, credentials passed by the kernel) and hands its path to every non-Node process
//! as `NOTIFY_SOCKET`. A process that sends `READY=1` (sd_notify, gunicorn, uvicorn, Go/Rust
//! libraries) is ready; which process sent it is known from SCM_CREDENTIALS, not from the message.
//!
//! Only processes cohort manages are heard: the socket is 0600 in the private home, and a sender
//! must be a managed process or one of its descendants (like systemd's `NotifyAccess=all` within a
//! unit: a wrapper script's child may speak for it); the message counts for that managed process.
//! Anything else is ignored and said in daemon.log (a bounded number of times).

use anyhow::{Context, Result};
use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};
use std::io::IoSliceMut;
use std::os::fd::AsRawFd;
use std::path::Path;
use tokio::io::Interest;
use tokio::net::UnixDatagram;
use tokio::sync::mpsc::UnboundedSender;

/// Binds `path` and forwards the pid of every `READY=1` sender on `tx` (wrapped by `wrap`).
pub fn start<M: Send + 'static>(
    path: &Path,
    tx: UnboundedSender<M>,
    wrap: fn(i32) -> M,
) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let sock = crate::home::private::bind_with_mode(0o600, || UnixDatagram::bind(path))
        .with_context(|| format!("binding {}", path.display()))?;
    setsockopt(&sock, sockopt::PassCred, &true)
        .context("enabling SO_PASSCRED on the notify socket")?;
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        let mut cmsg = nix::cmsg_space!(nix::libc::ucred);
        loop {
            let got = sock
                .async_io(Interest::READABLE, || {
                    let mut iov = [IoSliceMut::new(&mut buf)];
                    let msg = recvmsg::<()>(
                        sock.as_raw_fd(),
                        &mut iov,
                        Some(&mut cmsg),
                        MsgFlags::MSG_DONTWAIT,
                    )
                    .map_err(std::io::Error::from)?;
                    let pid = msg.cmsgs().ok().and_then(|mut c| {
                        c.find_map(|m| match m {
                            ControlMessageOwned::ScmCredentials(cred) => Some(cred.pid()),
                            _ => None,
                        })
                    });
                    Ok((msg.bytes, pid))
                })
                .await;
            match got {
                Ok((n, Some(pid))) => {
                    let text = String::from_utf8_lossy(&buf[..n]);
                    if text.lines().any(|l| l.trim() == "READY=1") && tx.send(wrap(pid)).is_err() {
                        break;
                    }
                }
                Ok((_, None)) => {}
                Err(e) => {
                    eprintln!("cohort: notify socket: {e}");
                    break;
                }
            }
        }
    });
    Ok(())
}

/// How many ancestors are walked looking for a managed process.
const MAX_DEPTH: usize = 64;

/// The managed process `pid` speaks for: itself, or its nearest managed ancestor. `parent_of`
/// gives a process's parent (None when gone); the walk stops at pid 1 or after `MAX_DEPTH` steps.
pub fn managed_ancestor(
    pid: i32,
    is_managed: impl Fn(i32) -> bool,
    parent_of: impl Fn(i32) -> Option<i32>,
) -> Option<i32> {
    let mut p = pid;
    for _ in 0..MAX_DEPTH {
        if is_managed(p) {
            return Some(p);
        }
        match parent_of(p) {
            Some(parent) if parent > 1 && parent != p => p = parent,
            _ => return None,
        }
    }
    None
}

/// The parent of `pid`, from /proc/<pid>/stat (the field after the command name, which may hold
/// spaces and parentheses itself).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_ppid(&stat)
}

fn parse_ppid(stat: &str) -> Option<i32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The managed process a `READY=1` from `pid` counts for; logs (boundedly) when there is none.
pub fn managed_sender(pid: i32, is_managed: impl Fn(i32) -> bool) -> Option<i32> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static REFUSED: AtomicU32 = AtomicU32::new(0);
    let found = managed_ancestor(pid, is_managed, parent_of);
    if found.is_none() {
        // The first 20, then every 1000th: enough to notice, never enough to fill a disk.
        let n = REFUSED.fetch_add(1, Ordering::Relaxed) + 1;
        if n <= 20 || n % 1000 == 0 {
            eprintln!(
                "cohort: notify.sock: ignored READY=1 from pid {pid}: not a process cohort manages nor one of their children ({n} so far)"
            );
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::{managed_ancestor, parse_ppid};

    #[test]
    fn a_sender_counts_for_itself_or_its_nearest_managed_ancestor() {
        // 100 managed; 200 its child, 300 a grandchild; 400 a stranger under init; 500 loops.
        let parent = |p: i32| match p {
            200 => Some(100),
            300 => Some(200),
            100 | 400 => Some(1),
            500 => Some(500),
            _ => None,
        };
        let managed = |p: i32| p == 100;
        let cases = [
            (100, Some(100)),
            (200, Some(100)),
            (300, Some(100)),
            (400, None),
            (500, None),
            (999, None),
        ];
        for (pid, want) in cases {
            assert_eq!(managed_ancestor(pid, managed, parent), want, "pid {pid}");
        }
        // A chain deeper than the walk allows is not followed to its end.
        let deep = |p: i32| Some(p + 1);
        assert_eq!(managed_ancestor(2, |p| p == 1000, deep), None);
    }

    #[test]
    fn ppid_is_read_after_the_command_name() {
        let cases = [
            ("42 (node) S 7 42 42 0", Some(7)),
            ("42 (a) b (c) R 9 1 1", Some(9)),
            ("42 (x y) S 1234 1 1", Some(1234)),
            ("garbage", None),
        ];
        for (stat, want) in cases {
            assert_eq!(parse_ppid(stat), want, "{stat}");
        }
    }
}
