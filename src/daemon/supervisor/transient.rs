//! Spawns that fail for a transient reason (the daemon or the system short of file descriptors,
//! processes or memory) are retried with backoff instead of leaving the process `errored` for
//! good; the policy is `policy::after_spawn_failure`. Each attempt's reason goes to daemon.log and
//! to the app's error log, the process shows `waiting_restart`, and `describe` shows the last
//! attempt (`spawn retry`: attempt count, errno, the error, the delay).

use super::policy::{self, SpawnDecision};
use super::table::Want;
use super::{Event, Supervisor};
use crate::api::Status;
use crate::daemon::logs::LogFile;

impl Supervisor {
    /// Starting process `id` failed with `err`: retried when the reason is transient (and no
    /// reload keeps an old process running), else recorded as `spawn_failed` does.
    pub(super) fn spawn_error(&mut self, id: u32, keep_old: bool, err: &anyhow::Error) {
        let why = format!("{err:#}");
        let Some(p) = self.procs.get_mut(&id) else {
            return;
        };
        if (keep_old && p.pid.is_some()) || self.shutting_down {
            self.spawn_failed(id, keep_old, &why);
            return;
        }
        let decision = policy::after_spawn_failure(errno_of(err), p.run.spawn_failures);
        let SpawnDecision::Retry { after_ms } = decision else {
            self.spawn_failed(id, keep_old, &why);
            return;
        };
        p.run.spawn_failures += 1;
        p.spawn_retry = Some(crate::api::SpawnRetry {
            attempt: p.run.spawn_failures,
            errno: errno_of(err)
                .map(|e| format!("{:?}", nix::errno::Errno::from_raw(e)))
                .unwrap_or_default(),
            reason: why.clone(),
            retry_in_ms: after_ms,
        });
        let msg = format!(
            "cohort: cannot start {}:{}: {why}; a transient shortage: retrying in {after_ms} ms (attempt {})",
            p.app, p.instance, p.run.spawn_failures
        );
        eprintln!("{msg}");
        if let Ok(f) = LogFile::open(&p.err) {
            f.write_all(format!("{msg}\n").as_bytes());
        }
        p.gen += 1;
        p.want = Want::Run;
        p.pid = None;
        p.status = Status::WaitingRestart;
        let gen = p.gen;
        self.after(
            after_ms,
            Event::SpawnRetry {
                id,
                gen,
                keep_old: false,
            },
        );
    }
}

/// The OS error number somewhere in `err`'s chain, if any.
fn errno_of(err: &anyhow::Error) -> Option<i32> {
    err.chain().find_map(|e| {
        e.downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
            .or_else(|| e.downcast_ref::<nix::errno::Errno>().map(|n| *n as i32))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn the_errno_is_found_through_contexts() {
        let io = || std::io::Error::from_raw_os_error(libc::EMFILE);
        let cases: Vec<(&str, anyhow::Error, Option<i32>)> = vec![
            ("io::Error", anyhow::Error::new(io()), Some(libc::EMFILE)),
            (
                "under a context",
                Err::<(), _>(io()).context("opening a log").unwrap_err(),
                Some(libc::EMFILE),
            ),
            (
                "nix Errno",
                Err::<(), _>(nix::errno::Errno::EAGAIN)
                    .context("fork")
                    .unwrap_err(),
                Some(libc::EAGAIN),
            ),
            ("no OS error", anyhow::anyhow!("bad argument"), None),
        ];
        for (what, err, want) in cases {
            assert_eq!(errno_of(&err), want, "{what}");
        }
    }
}
