//! Updating apps before a restart or reload: `--update-env` (the caller's environment merged over
//! each selected app's, the caller's values winning, as PM2) and a config file read again
//! (`restart|reload CONFIG [--env NAME]`: its apps take the new specs, grow or shrink to the new
//! instance count, and those not running start, as PM2's startOrRestart / startOrReload).

use super::{slots, Supervisor};
use crate::config::AppSpec;
use std::collections::BTreeMap;
use tokio::sync::oneshot;

/// What applying a config did: processes it started anew (not to be restarted again) and what
/// to wait for.
#[derive(Default)]
pub(super) struct Applied {
    pub(super) started: Vec<u32>,
    pub(super) waits: Vec<oneshot::Receiver<()>>,
}

impl Supervisor {
    /// Merges `env` over the environment of every app that has one of processes `ids`.
    pub(super) fn update_env(&mut self, ids: &[u32], env: &BTreeMap<String, String>) {
        let mut names: Vec<String> = ids
            .iter()
            .filter_map(|id| self.procs.get(id).map(|p| p.app.clone()))
            .collect();
        names.dedup();
        for name in names {
            if let Some(app) = self.apps.get_mut(&name) {
                app.spec
                    .env
                    .extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
    }

    /// The apps of a config file read again: checked first (a bad file changes nothing), then
    /// each running app takes its new spec and instance count, and the others start.
    pub(super) fn apply_config(&mut self, specs: Vec<AppSpec>) -> Result<Applied, String> {
        if self.shutting_down {
            return Err("the daemon is shutting down (run the command again in a moment)".into());
        }
        for spec in &specs {
            crate::config::ecosystem::validate_name(&spec.name)?;
            crate::config::parse_signal(&spec.kill_signal)?;
            slots::check_spec(spec)?;
        }
        self.check_dependencies(&specs)?;
        let mut applied = Applied::default();
        for spec in specs {
            let name = spec.name.clone();
            let count = self.count_for(&spec);
            let before: Vec<u32> = match self.apps.get_mut(&name) {
                Some(app) => {
                    app.spec = spec;
                    let before = app.procs.clone();
                    applied.waits.extend(self.resize(&name, count));
                    before
                }
                None => {
                    self.create_app(spec, count, true);
                    Vec::new()
                }
            };
            let now = self
                .apps
                .get(&name)
                .map(|a| a.procs.clone())
                .unwrap_or_default();
            applied
                .started
                .extend(now.into_iter().filter(|id| !before.contains(id)));
        }
        Ok(applied)
    }
}
