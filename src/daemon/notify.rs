//! systemd's readiness protocol for the apps: the daemon listens on COHORT_HOME/notify.sock (a
//! datagram socket, credentials passed by the kernel) and hands its path to every non-Node process
//! as `NOTIFY_SOCKET`. A process that sends `READY=1` (sd_notify, gunicorn, uvicorn, Go/Rust
//! libraries) is ready; which process sent it is known from SCM_CREDENTIALS, not from the message.

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
    let sock = UnixDatagram::bind(path).with_context(|| format!("binding {}", path.display()))?;
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
                    crate::report!("cohort: notify socket: {e}");
                    break;
                }
            }
        }
    });
    Ok(())
}
