//! Command-line definitions (clap): PM2's verbs and flags, so habits carry over.
//! `commands` runs them against the daemon; `render` prints the results; `options` turns the flags
//! of the commands other modules run (`run`, `startup`) into those modules' plain option structs.

mod access;
pub mod commands;
mod options;
pub mod render;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "cohort",
    version,
    about = "Process manager, cluster runner and load balancer in one binary",
    long_about = "Process manager, cluster runner and load balancer in one binary.\n\nEverything lives in $COHORT_HOME (default ~/.cohort); the daemon starts by itself on the first command that needs it.",
    after_help = "Selectors: an app name, a numeric id, `all`, or a config file (acts on the apps it declares)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start a script, a command, or the apps of a config file (cohort.toml, JSON, ecosystem.config.js).
    Start(StartArgs),
    /// Stop processes (kill_signal to the process group, then SIGKILL after kill_timeout).
    Stop(TargetArgs),
    /// Stop then start processes again.
    Restart(TargetArgs),
    /// Replace processes one at a time with no downtime (cluster mode); a restart in fork mode.
    Reload(TargetArgs),
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
    #[command(aliases = ["list", "l", "status"])]
    Ls(LsArgs),
    /// List processes as JSON (same as `ls --json`).
    Jlist,
    /// Show the last lines of the logs, then follow new ones.
    Logs(LogsArgs),
    /// Empty log files.
    Flush(OptionalTarget),
    /// Print the environment of a process.
    Env(EnvArgs),
    /// Save the running apps to $COHORT_HOME/dump.json (for `resurrect` and boot).
    #[command(alias = "dump")]
    Save(SaveArgs),
    /// Start the apps saved with `save`.
    Resurrect,
    /// Stop every app, then the daemon.
    Kill,
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
pub struct RunArgs {
    #[command(flatten)]
    pub start: StartArgs,
    /// Serve /healthz and /readyz over HTTP on this address (e.g. 0.0.0.0:9615), for probes.
    #[arg(long, value_name = "ADDR")]
    pub health: Option<String>,
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
    /// Script, command line ("sleep 1000"), or config file.
    pub target: String,
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
    #[arg(long, alias = "interpreter-args")]
    pub node_args: Option<String>,
    /// Number of instances: N, max (or 0) for every usable CPU, -N for all but N.
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
    #[arg(long = "exec-mode", short = 'x')]
    pub exec_mode: Option<String>,
    /// Print the resulting process list as JSON.
    #[arg(long)]
    pub json: bool,
    /// PM2's --watch: not supported yet (accepted with a warning).
    #[arg(long, hide = true)]
    pub watch: bool,
    /// PM2's --max-memory-restart: not supported yet (accepted with a warning).
    #[arg(long, hide = true)]
    pub max_memory_restart: Option<String>,
    /// PM2's --cron / --cron-restart: not supported yet (accepted with a warning).
    #[arg(long, hide = true, alias = "cron-restart")]
    pub cron: Option<String>,
    /// Arguments passed to the script (after --).
    #[arg(last = true)]
    pub args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct TargetArgs {
    /// App names, ids, `all`, or config files (one or more).
    #[arg(required = true, num_args = 1..)]
    pub target: Vec<String>,
    /// Print the resulting process list as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct OptionalTarget {
    /// App name, id, `all`, or config file (default: all).
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
pub struct SaveArgs {
    /// Save even when no app runs (replaces the dump with an empty list).
    #[arg(long)]
    pub force: bool,
}
