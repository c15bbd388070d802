//! Command-line definitions (clap): PM2's verbs and flags, so habits carry over.
//! `commands` runs them against the daemon; `render` prints the results; `options` turns the flags
//! of the commands other modules run (`run`, `startup`) into those modules' plain option structs.

mod access;
pub mod commands;
mod list;
mod logrotate;
mod observe;
mod options;
mod output;
mod pm2;
pub mod render;
mod select;
mod start;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "cohort",
    version,
    about = "Process manager, cluster runner and load balancer in one binary",
    long_about = "Process manager, cluster runner and load balancer in one binary.\n\nEverything lives in $COHORT_HOME (default ~/.cohort); the daemon starts by itself on the first command that needs it.",
    after_help = "Selectors: an app name, a numeric id, `all`, a config file (acts on the apps it declares), a script file (the apps running it), a namespace, or /regex/ (app names matching it)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start scripts, commands, or the apps of config files (cohort.toml, JSON, ecosystem.config.js; `-` reads one from stdin).
    Start(StartArgs),
    /// Start the apps of a config file, restarting those that run (PM2's startOrRestart; same as `start CONFIG`).
    #[command(name = "startOrRestart")]
    StartOrRestart(StartArgs),
    /// Start the apps of a config file, reloading those that run (PM2's startOrReload).
    #[command(name = "startOrReload", alias = "startOrGracefulReload")]
    StartOrReload(StartArgs),
    /// Stop processes (kill_signal to the process group, then SIGKILL after kill_timeout).
    Stop(TargetArgs),
    /// Stop then start processes again (a config file is read again; apps of it not running start).
    Restart(RestartArgs),
    /// Replace processes one at a time with no downtime (cluster mode); a restart in fork mode.
    Reload(RestartArgs),
    /// Stop processes and forget them.
    #[command(alias = "del")]
    Delete(TargetArgs),
    /// Reset the restart counters.
    Reset(TargetArgs),
    /// Change the number of instances of a cluster app: N, +N or -N.
    Scale(ScaleArgs),
    /// Show everything about a process (script, args, cwd, env keys, logs, last exit).
    #[command(alias = "show")]
    Describe(TargetArgs),
    /// List processes.
    #[command(aliases = ["list", "l", "ps", "status"])]
    Ls(LsArgs),
    /// List processes as JSON: `ls --json`'s fields plus PM2's (pm_id, pm2_env, monit); --pm2 for PM2's only.
    Jlist(JlistArgs),
    /// List processes as PM2's `prettylist` prints them (Node's util.inspect layout, for scripts that grep it).
    Prettylist(SortArg),
    /// Print the pids of an app's processes (or of every process), one per line.
    Pid(OptionalTarget),
    /// Send a signal to processes (e.g. `cohort sendSignal SIGUSR2 api`).
    #[command(name = "sendSignal")]
    SendSignal(SignalArgs),
    /// Show the last lines of the logs, then follow new ones.
    Logs(LogsArgs),
    /// Empty log files (and open them again).
    Flush(OptionalTarget),
    /// Open every log file again at its path (after an external logrotate moved them; as SIGUSR2).
    #[command(name = "reloadLogs", alias = "reload-logs")]
    ReloadLogs,
    /// Show or set the daemon-wide log rotation defaults (on by default: 10M × 5 per log file).
    Logrotate(LogrotateArgs),
    /// Print the environment of a process.
    Env(EnvArgs),
    /// Save the running apps to $COHORT_HOME/dump.json (for `resurrect` and boot).
    #[command(alias = "dump")]
    Save(SaveArgs),
    /// Start the apps saved with `save`.
    Resurrect,
    /// Stop every app, then the daemon.
    Kill(KillArgs),
    /// Check that the daemon answers (starts it if needed).
    Ping,
    /// Replace the daemon with this version of cohort in place: no app restarts, no socket closes.
    Update(UpdateArgs),
    /// Run the daemon in the foreground (what the CLI starts in the background; for init systems).
    #[command(hide = true)]
    Daemon(DaemonArgs),
    /// Run an HTTP or TCP load balancer in the foreground.
    Balance(crate::balancer::BalanceArgs),
    /// Open the terminal dashboard: processes, cpu/memory charts and logs, with restart/reload/stop keys.
    Monit,
    /// Start the daemon at boot and resurrect the saved apps (writes a systemd, OpenRC or launchd unit).
    Startup(StartupArgs),
    /// Remove the boot unit written by `startup`.
    Unstartup(StartupArgs),
    /// Run apps in the foreground with no background daemon (containers, PID 1; like pm2-runtime).
    Run(RunArgs),
    /// Show or change who besides you (and root) may use this daemon: a group, full or read-only.
    Access(AccessArgs),
    /// Print the daemon's Prometheus metrics (what GET /metrics answers).
    Metrics,
    /// Serve the web dashboard, the API and /metrics on a TCP address; alone, print its state.
    Web(WebArgs),
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("full").args(["token", "token_file"]).multiple(false)))]
#[command(group(clap::ArgGroup::new("read").args(["read_only_token", "read_only_token_file"]).multiple(false)))]
pub struct WebArgs {
    /// Address to listen on, e.g. 127.0.0.1:9615 (kept across daemon restarts).
    #[arg(long, value_name = "ADDR", conflicts_with = "off")]
    pub listen: Option<String>,
    /// The token that grants everything (Authorization: Bearer, or the login page).
    #[arg(long, requires = "listen")]
    pub token: Option<String>,
    /// Read the token from this file (its first line, trimmed).
    #[arg(long, value_name = "FILE", requires = "listen")]
    pub token_file: Option<String>,
    /// A token that may only look (lists, charts, logs, metrics), not act.
    #[arg(long, requires = "listen")]
    pub read_only_token: Option<String>,
    /// Read the read-only token from this file.
    #[arg(long, value_name = "FILE", requires = "listen")]
    pub read_only_token_file: Option<String>,
    /// Serve /metrics without a token (for Prometheus scrape configs).
    #[arg(long, requires = "listen")]
    pub public_metrics: bool,
    /// Turn the listener off.
    #[arg(long)]
    pub off: bool,
    /// Print the state as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct StartupArgs {
    /// Init system (default: detected from the running system).
    #[arg(value_enum)]
    pub init: Option<InitArg>,
    /// User the daemon runs as (default: the current user).
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// That user's home directory (default: from the user database).
    #[arg(long, alias = "hp")]
    pub home: Option<String>,
    /// Print the unit to stdout instead of installing it.
    #[arg(long)]
    pub print: bool,
}

/// The init systems `startup` knows (`startup::InitSystem`, as clap spells them).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitArg {
    Systemd,
    Openrc,
    Launchd,
}

#[derive(Args, Debug)]
#[command(mut_arg("json", |a| a.help("Print log lines as raw JSON objects (one per line) instead of `name|instance | line`")))]
#[command(mut_arg("targets", |a| a.action(clap::ArgAction::Set).num_args(1).value_name("TARGET").help("Script, command line, or config file")))]
pub struct RunArgs {
    #[command(flatten)]
    pub start: StartArgs,
    /// Serve /healthz and /readyz over HTTP on this address (e.g. 0.0.0.0:9615), for probes.
    #[arg(long, value_name = "ADDR")]
    pub health: Option<String>,
}

/// `cohort logrotate`: with no flags, prints the defaults; each flag sets one (apps' own
/// `log_rotate` settings still win).
#[derive(Args, Debug)]
pub struct LogrotateArgs {
    /// Rotate a log file when it would grow past this size (10M, 512K, 1G; 0: never by size).
    #[arg(long, value_name = "SIZE")]
    pub max_size: Option<String>,
    /// Rotated files kept per log file (older ones are deleted).
    #[arg(long, value_name = "N")]
    pub retain: Option<u32>,
    /// gzip rotated files in the background (`--compress false` turns it off).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub compress: Option<bool>,
    /// Also rotate by time: hourly, daily, weekly, monthly, or never.
    #[arg(long, value_name = "INTERVAL")]
    pub interval: Option<String>,
    /// Date in rotated names, moment.js tokens (default YYYY-MM-DD_HH-mm-ss).
    #[arg(long, value_name = "FORMAT")]
    pub date_format: Option<String>,
}

#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// Exit quietly (status 0) when a daemon already runs for this home; what the CLI uses when
    /// it starts one. Without it, that is an error (an init system must not think it started one).
    #[arg(long, hide = true)]
    pub if_absent: bool,
    /// Print the binary's version and state format, then exit (the pre-flight of `cohort update`).
    #[arg(long, hide = true)]
    pub preflight: bool,
    /// Run the holder of this home: it keeps the apps' sockets, log pipes and IPC channels open
    /// while no daemon runs (started by the daemon).
    #[arg(long, hide = true)]
    pub holder: bool,
    /// Take over from the daemon this process was re-executed from (`cohort update`): its state
    /// is in this descriptor.
    #[arg(long, hide = true)]
    pub adopt_state_fd: Option<i32>,
    /// With --adopt-state-fd: the previous binary, executed again if the take-over fails.
    #[arg(long, hide = true)]
    pub fallback_exe_fd: Option<i32>,
    /// With --adopt-state-fd: this is the previous binary again, after the new one failed so.
    #[arg(long, hide = true)]
    pub failed_update: Option<String>,
}

#[derive(Args, Debug, Default)]
pub struct UpdateArgs {
    /// The binary the daemon re-executes (default: this one). For tests of the pre-flight.
    #[arg(long, hide = true)]
    pub binary: Option<std::path::PathBuf>,
}

#[derive(Args, Debug, Default)]
pub struct StartArgs {
    /// Scripts, command lines ("sleep 1000"), config files, or `-` for a config on stdin
    /// (default: ./ecosystem.config.js or ./cohort.toml). An app name or id restarts that app.
    pub targets: Vec<String>,
    /// App name (default: the script's file name without extension).
    #[arg(long, short = 'n')]
    pub name: Option<String>,
    /// Working directory (default: the current one; for config files, the file's folder).
    #[arg(long)]
    pub cwd: Option<String>,
    /// Interpreter (default from the extension: .js node, .py python3, .sh bash); `none` runs the file itself.
    #[arg(long)]
    pub interpreter: Option<String>,
    /// Arguments for the interpreter, e.g. "--max-old-space-size=512".
    #[arg(long, alias = "interpreter-args", allow_hyphen_values = true)]
    pub node_args: Option<String>,
    /// Number of instances: N, max (or 0) for every usable CPU, -N for all but N; MIN-MAX (1-max,
    /// 2-8) autoscales a cluster app by load between MIN and MAX (docs/autoscaling.md).
    #[arg(long, short = 'i', allow_hyphen_values = true)]
    pub instances: Option<String>,
    /// Apply env_<NAME> from the config file.
    #[arg(long)]
    pub env: Option<String>,
    /// Only these apps of the config file (comma-separated).
    #[arg(long)]
    pub only: Option<String>,
    /// Prefix log lines with a timestamp.
    #[arg(long)]
    pub time: bool,
    /// Do not restart the app when it exits.
    #[arg(long)]
    pub no_autorestart: bool,
    /// PM2's switches for its own services (`--no-vizion`, `--no-pmx`, `--no-automation`): cohort
    /// runs none of them, so they are accepted and change nothing.
    #[arg(long = "no-vizion", aliases = ["no-pmx", "no-automation"], hide = true)]
    #[allow(dead_code)]
    pub pm2_services_off: bool,
    /// Crashes within min_uptime allowed in a row before the app is `errored`.
    #[arg(long)]
    pub max_restarts: Option<u32>,
    /// A run shorter than this counts as a crash (ms, or 10s, 1m).
    #[arg(long)]
    pub min_uptime: Option<String>,
    /// Wait this long before restarting (ms).
    #[arg(long)]
    pub restart_delay: Option<String>,
    /// Restart delay that grows ×1.5 per crash up to 15 s (ms).
    #[arg(long)]
    pub exp_backoff_restart_delay: Option<String>,
    /// How long a stop waits before SIGKILL (ms).
    #[arg(long)]
    pub kill_timeout: Option<String>,
    /// Signal sent first on stop (default SIGINT).
    #[arg(long)]
    pub kill_signal: Option<String>,
    /// Exit codes that mean "done": no restart (comma-separated).
    #[arg(long)]
    pub stop_exit_codes: Option<String>,
    /// stdout log file.
    #[arg(long, short = 'o', alias = "output")]
    pub out: Option<String>,
    /// stderr log file.
    #[arg(long, short = 'e', alias = "error")]
    pub err: Option<String>,
    /// Combined stdout+stderr log file.
    #[arg(long, short = 'l', alias = "log")]
    pub log_file: Option<String>,
    /// Instances share one log file instead of one per instance.
    #[arg(long)]
    pub merge_logs: bool,
    /// Moment-style date format for --time (e.g. "YYYY-MM-DD HH:mm:ss").
    #[arg(long)]
    pub log_date_format: Option<String>,
    /// `json`: write each log line as a JSON object (message, timestamp, type, process_id, app_name).
    #[arg(long, value_name = "TYPE")]
    pub log_type: Option<String>,
    /// The app is online only once it sends process.send('ready').
    #[arg(long)]
    pub wait_ready: bool,
    /// How long to wait for 'ready' or listening (ms).
    #[arg(long)]
    pub listen_timeout: Option<String>,
    /// Ask the app to stop with a 'shutdown' message instead of a signal.
    #[arg(long)]
    pub shutdown_with_message: bool,
    /// Port the daemon binds for a cluster app in any language (socket activation).
    #[arg(long)]
    pub port: Option<u16>,
    /// Run in fork or cluster mode.
    #[arg(long = "exec-mode")]
    pub exec_mode: Option<String>,
    /// PM2's -x/--execute-command (fork mode, the default): accepted and ignored; `-x cluster`
    /// and `-x fork` still set the mode.
    #[arg(short = 'x', long = "execute-command", num_args = 0..=1, value_name = "MODE", hide = true)]
    pub execute_command: Option<Option<String>>,
    /// Start a second copy of a script that already runs (it gets the name NAME-1, NAME-2, …).
    #[arg(long, short = 'f')]
    pub force: bool,
    /// PM2's namespace: a group of apps that selectors can name (`cohort stop NAMESPACE`).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Print the resulting process list as JSON.
    #[arg(long)]
    pub json: bool,
    /// Restart (cluster: reload) when files under the working directory change.
    #[arg(long)]
    pub watch: bool,
    /// Paths or globs the watch ignores (comma-separated; node_modules and .git always are).
    #[arg(long, value_name = "GLOBS")]
    pub ignore_watch: Option<String>,
    /// Restart (cluster: reload) a process whose memory goes above this (150M, 1G, bytes).
    #[arg(long, value_name = "SIZE")]
    pub max_memory_restart: Option<String>,
    /// Restart (cluster: reload) on a cron schedule ("0 3 * * *"; 6 fields: seconds first).
    #[arg(
        long = "cron-restart",
        alias = "cron",
        short = 'c',
        value_name = "PATTERN"
    )]
    pub cron: Option<String>,
    /// Readiness probe: HTTP GET of this path (or URL) on the app's port (docs/health.md).
    #[arg(long, value_name = "PATH", group = "readiness")]
    pub readiness_http: Option<String>,
    /// Readiness probe: a TCP connect to this port (or host:port).
    #[arg(long, value_name = "PORT", group = "readiness")]
    pub readiness_tcp: Option<String>,
    /// Readiness probe: this command (sh -c) exits 0.
    #[arg(long, value_name = "COMMAND", group = "readiness")]
    pub readiness_exec: Option<String>,
    /// Liveness probe: HTTP GET of this path (or URL); failing restarts (cluster: reloads) it.
    #[arg(long, value_name = "PATH", group = "liveness")]
    pub liveness_http: Option<String>,
    /// Liveness probe: a TCP connect to this port (or host:port).
    #[arg(long, value_name = "PORT", group = "liveness")]
    pub liveness_tcp: Option<String>,
    /// Liveness probe: this command (sh -c) exits 0.
    #[arg(long, value_name = "COMMAND", group = "liveness")]
    pub liveness_exec: Option<String>,
    /// Arguments passed to the script (after --).
    #[arg(last = true)]
    pub args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct TargetArgs {
    /// App names, ids, `all`, config files, script files, namespaces or /regex/ (one or more).
    #[arg(required = true, num_args = 1..)]
    pub target: Vec<String>,
    /// Print the resulting process list as JSON.
    #[arg(long)]
    pub json: bool,
    /// With config files: only these of their apps (comma-separated names, as PM2's --only).
    #[arg(long, value_name = "NAMES")]
    pub only: Option<String>,
}

#[derive(Args, Debug)]
pub struct RestartArgs {
    #[command(flatten)]
    pub targets: TargetArgs,
    /// Give the processes the environment of this shell, merged over the app's (PM2's --update-env).
    #[arg(long, short = 'a')]
    pub update_env: bool,
    /// With a config file: apply its env_<NAME> block.
    #[arg(long, value_name = "NAME")]
    pub env: Option<String>,
    /// New interpreter arguments for the apps, e.g. "--max-old-space-size=512".
    #[arg(long, alias = "interpreter-args", allow_hyphen_values = true)]
    pub node_args: Option<String>,
    /// PM2 renames the app on restart; cohort does not (the error says what to type).
    #[arg(long, short = 'n', hide = true)]
    pub name: Option<String>,
    /// PM2 toggles watching on restart; cohort's watch is set at start (the error says what to type).
    #[arg(long, short = 'w', hide = true)]
    pub watch: bool,
}

#[derive(Args, Debug)]
pub struct SignalArgs {
    /// Signal name or number (SIGUSR2, USR2, 12).
    pub signal: String,
    /// App names, ids, `all`, namespace, script or /regex/ (several: each process once).
    #[arg(required = true, num_args = 1..)]
    pub target: Vec<String>,
}

#[derive(Args, Debug, Default)]
pub struct SortArg {
    /// Order by name, id, pid, uptime, cpu, memory, restarts or status; `:desc` reverses (PM2's --sort).
    #[arg(long, value_name = "FIELD[:asc|desc]")]
    pub sort: Option<String>,
}

#[derive(Args, Debug)]
pub struct JlistArgs {
    /// PM2's layout only (pid 0 when stopped), without cohort's own fields.
    #[arg(long)]
    pub pm2: bool,
    #[command(flatten)]
    pub sort: SortArg,
}

#[derive(Args, Debug)]
pub struct OptionalTarget {
    /// App name, id, `all`, config file, script, namespace or /regex/ (default: all).
    pub target: Option<String>,
}

#[derive(Args, Debug)]
pub struct ScaleArgs {
    pub name: String,
    /// N, +N or -N.
    #[arg(allow_hyphen_values = true)]
    pub count: String,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// One JSON array, one object per process.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub sort: SortArg,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// App name, id, `all`, or config file (default: all).
    pub target: Option<String>,
    /// How many past lines of each file to show.
    #[arg(long, default_value_t = 15)]
    pub lines: usize,
    /// Print the past lines and exit instead of following.
    #[arg(long)]
    pub nostream: bool,
    /// Only stderr.
    #[arg(long)]
    pub err: bool,
    /// Only stdout.
    #[arg(long)]
    pub out: bool,
    /// Prefix followed lines with the time they were read.
    #[arg(long)]
    pub timestamp: bool,
    /// Lines only, without the `name|instance` prefix.
    #[arg(long)]
    pub raw: bool,
    /// One JSON object per line: {"id", "name", "instance", "stream", "line", "at"} (at: Unix ms
    /// when the daemon read it; 0 for lines from the files).
    #[arg(long, conflicts_with_all = ["raw", "timestamp"])]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct EnvArgs {
    /// Process id.
    pub id: u32,
}

#[derive(Args, Debug)]
pub struct AccessArgs {
    /// Let the members of this group (a name or a gid) use the daemon.
    #[arg(long, value_name = "NAME", conflicts_with = "off")]
    pub group: Option<String>,
    /// With --group: members may only look (ls, describe, logs), not start or stop anything.
    #[arg(long, requires = "group")]
    pub read_only: bool,
    /// Stop sharing: only you and root.
    #[arg(long)]
    pub off: bool,
}

#[derive(Args, Debug)]
pub struct KillArgs {
    /// As systemd's `ExecStop=` (the unit `startup` writes): stop only when systemd says the
    /// daemon still runs ($MAINPID set: a requested stop or restart); when it already exited
    /// (`cohort kill` by hand, or a crash) do nothing, so a restarted daemon adopts running apps.
    #[arg(long, hide = true)]
    pub exec_stop: bool,
}

#[derive(Args, Debug)]
pub struct SaveArgs {
    /// Save even when no app runs (replaces the dump with an empty list).
    #[arg(long)]
    pub force: bool,
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// clap checks the definitions (positionals, aliases, conflicts) only when it builds them.
    #[test]
    fn every_command_definition_is_valid() {
        let cli = Cli::command();
        for sub in cli.get_subcommands() {
            let name = sub.get_name().to_string();
            let sub = sub.clone();
            let r =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || sub.debug_assert()));
            assert!(r.is_ok(), "`cohort {name}` has an invalid definition");
        }
        cli.debug_assert();
    }
}
