//! Child exits: one task waits for SIGCHLD and reaps every exited child with `waitpid(-1)`, turning
//! each into a message for the supervisor. Because the daemon is a child subreaper, orphaned
//! grandchildren land here too and are reaped, never left as zombies.

use anyhow::{Context, Result};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc::UnboundedSender;

/// How a process ended.
#[derive(Debug, Clone, Copy)]
pub struct Exit {
    pub pid: i32,
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

/// Starts the reaper; exits are sent on `tx` as they happen.
pub fn start<M: Send + 'static>(tx: UnboundedSender<M>, wrap: fn(Exit) -> M) -> Result<()> {
    let mut sigchld = signal(SignalKind::child()).context("watching SIGCHLD")?;
    tokio::spawn(async move {
        loop {
            reap_all(&tx, wrap);
            if sigchld.recv().await.is_none() {
                break;
            }
        }
    });
    Ok(())
}

fn reap_all<M>(tx: &UnboundedSender<M>, wrap: fn(Exit) -> M) {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => {
                let _ = tx.send(wrap(Exit {
                    pid: pid.as_raw(),
                    code: Some(code),
                    signal: None,
                }));
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) => {
                let _ = tx.send(wrap(Exit {
                    pid: pid.as_raw(),
                    code: None,
                    signal: Some(sig as i32),
                }));
            }
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            Ok(_) => continue,
        }
    }
}
