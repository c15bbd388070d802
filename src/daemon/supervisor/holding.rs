//! Keeping the holder (`daemon::holder`) up to date: after every change to the tables (a process
//! started or gone, a socket opened), and every few seconds in any case, the daemon hands it the
//! state and copies of every descriptor an update would hand over, so the apps outlive a kill -9
//! of the daemon. A holder that is gone (killed) is started again.

use super::Supervisor;
use std::time::{Duration, Instant};

/// How often the holder gets the state even when nothing changed (it may have been restarted).
const REFRESH: Duration = Duration::from_secs(5);

/// What was last handed to the holder.
#[derive(Default)]
pub(super) struct HolderSync {
    /// The tables' shape last stored (None: nothing stored yet, or the last store failed).
    last: Option<String>,
    at: Option<Instant>,
    /// When a holder was last started (not again before it had time to bind).
    spawned: Option<Instant>,
}

/// Whether this daemon keeps a holder (`COHORT_HOLDER=0` turns it off).
pub fn enabled() -> bool {
    std::env::var_os("COHORT_HOLDER").is_none_or(|v| v != "0")
}

impl Supervisor {
    /// What of the tables the holder must follow: processes (pid, status) and sockets.
    fn holder_shape(&self) -> String {
        let mut shape = String::new();
        for p in self.procs.values() {
            shape.push_str(&format!("{}:{:?}:{:?};", p.id, p.pid, p.status));
        }
        for a in self.apps.keys() {
            shape.push_str(a);
            shape.push(',');
        }
        // Every socket by descriptor: a closed one must leave the holder at once, or it stays in
        // its reuseport group with nobody accepting.
        for g in self.sockets.held() {
            for l in &g.listeners {
                for fd in l
                    .socks
                    .iter()
                    .map(|s| s.1)
                    .chain(l.unix.iter().map(|u| u.1))
                {
                    shape.push_str(&format!("{fd},"));
                }
            }
        }
        shape
    }

    /// Hands the holder the current state if it changed (or is due), starting a holder if none
    /// answers. Off in the foreground (`cohort run`), while shutting down, and with COHORT_HOLDER=0.
    pub(super) fn sync_holder(&mut self) {
        if self.daemon_fds.is_none() || self.shutting_down || !enabled() {
            return;
        }
        let shape = self.holder_shape();
        let due = self.holder.at.is_none_or(|t| t.elapsed() >= REFRESH);
        if self.holder.last.as_deref() == Some(shape.as_str()) && !due {
            return;
        }
        let Some((state, fds)) = self.holder_state() else {
            return;
        };
        let root = self.home.root.clone();
        if fds.is_empty() {
            // Nothing to hold (yet, or any more): no holder until there is.
            if self.holder.at.take().is_some() {
                crate::daemon::holder::dismiss(&root);
            }
            self.holder.last = None;
            return;
        }
        match crate::daemon::holder::store(&root, &state, &fds) {
            Ok(()) => {
                self.holder.last = Some(shape);
                self.holder.at = Some(Instant::now());
            }
            Err(_) => {
                self.holder.last = None;
                if self
                    .holder
                    .spawned
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
                {
                    self.holder.spawned = Some(Instant::now());
                    if let Err(e) = crate::daemon::holder::spawn(&root) {
                        eprintln!("cohort: cannot start the holder: {e:#}");
                    }
                    // Store as soon as it listens, whatever else happens meanwhile (one more
                    // sample does no harm).
                    self.after(250, super::Event::SampleTick);
                }
            }
        }
    }
}
