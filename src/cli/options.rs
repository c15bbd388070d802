//! From clap's argument structs to the plain option structs owned by the modules that act on them
//! (`config::start`, `daemon::foreground`, `startup`), so that no module below the CLI knows clap's
//! types or imports `cli`.

use super::{InitArg, RunArgs, StartArgs, StartupArgs};
use crate::config::start::StartOptions;
use crate::daemon::foreground::RunOptions;
use crate::startup::{InitSystem, StartupOptions};

impl StartArgs {
    /// The options that shape the app specs of one target (`--json`, `-f` and the unsupported PM2
    /// flags are the CLI's).
    pub fn options_for(&self, target: &str) -> StartOptions {
        StartOptions {
            target: target.to_string(),
            name: self.name.clone(),
            cwd: self.cwd.clone(),
            interpreter: self.interpreter.clone(),
            node_args: self.node_args.clone(),
            instances: self.instances.clone(),
            env: self.env.clone(),
            only: self.only.clone(),
            time: self.time,
            no_autorestart: self.no_autorestart,
            max_restarts: self.max_restarts,
            min_uptime: self.min_uptime.clone(),
            restart_delay: self.restart_delay.clone(),
            exp_backoff_restart_delay: self.exp_backoff_restart_delay.clone(),
            kill_timeout: self.kill_timeout.clone(),
            kill_signal: self.kill_signal.clone(),
            stop_exit_codes: self.stop_exit_codes.clone(),
            out: self.out.clone(),
            err: self.err.clone(),
            log_file: self.log_file.clone(),
            merge_logs: self.merge_logs,
            log_date_format: self.log_date_format.clone(),
            log_type: self.log_type.clone(),
            wait_ready: self.wait_ready,
            listen_timeout: self.listen_timeout.clone(),
            shutdown_with_message: self.shutdown_with_message,
            port: self.port,
            exec_mode: self.exec_mode.clone(),
            namespace: self.namespace.clone(),
            config_text: None,
            watch: self.watch,
            ignore_watch: self.ignore_watch.clone(),
            max_memory_restart: self.max_memory_restart.clone(),
            cron_restart: self.cron.clone(),
            readiness: probe_flag(
                &self.readiness_http,
                &self.readiness_tcp,
                &self.readiness_exec,
            ),
            liveness: probe_flag(&self.liveness_http, &self.liveness_tcp, &self.liveness_exec),
            args: self.args.clone(),
        }
    }
}

impl From<RunArgs> for RunOptions {
    fn from(a: RunArgs) -> RunOptions {
        RunOptions {
            // clap takes exactly one target for `run`.
            start: a
                .start
                .options_for(a.start.targets.first().map(String::as_str).unwrap_or("")),
            health: a.health,
            json: a.start.json,
        }
    }
}

impl From<InitArg> for InitSystem {
    fn from(a: InitArg) -> InitSystem {
        match a {
            InitArg::Systemd => InitSystem::Systemd,
            InitArg::Openrc => InitSystem::Openrc,
            InitArg::Launchd => InitSystem::Launchd,
        }
    }
}

impl From<StartupArgs> for StartupOptions {
    fn from(a: StartupArgs) -> StartupOptions {
        StartupOptions {
            init: a.init.map(InitSystem::from),
            user: a.user,
            home: a.home,
            print: a.print,
        }
    }
}

/// The one probe flag given of a kind (clap's groups allow one): (check, value).
fn probe_flag(
    http: &Option<String>,
    tcp: &Option<String>,
    exec: &Option<String>,
) -> Option<(String, String)> {
    [("http", http), ("tcp", tcp), ("exec", exec)]
        .into_iter()
        .find_map(|(check, v)| v.clone().map(|v| (check.to_string(), v)))
}
