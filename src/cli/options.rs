//! From clap's argument structs to the plain option structs owned by the modules that act on them
//! (`config::start`, `daemon::foreground`, `startup`), so that no module below the CLI knows clap's
//! types or imports `cli`.

use super::{InitArg, RunArgs, StartArgs, StartupArgs};
use crate::config::start::StartOptions;
use crate::daemon::foreground::RunOptions;
use crate::startup::{InitSystem, StartupOptions};

impl StartArgs {
    /// The options that shape the app specs (`--json` is the CLI's).
    pub fn options(&self) -> StartOptions {
        StartOptions {
            target: self.target.clone(),
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
            watch: self.watch,
            ignore_watch: self.ignore_watch.clone(),
            max_memory_restart: self.max_memory_restart.clone(),
            cron_restart: self.cron.clone(),
            args: self.args.clone(),
        }
    }
}

impl From<RunArgs> for RunOptions {
    fn from(a: RunArgs) -> RunOptions {
        RunOptions {
            start: a.start.options(),
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
