//! App specifications: what the CLI resolves from flags and ecosystem files and sends to the daemon,
//! and what `save` writes to dump.json. Defaults follow PM2's so habits carry over.
//! `start` turns a start's options into specs, `ecosystem` validates config files (`read` parses
//! their formats), `resolve` finds scripts and interpreters.

pub mod autoscale;
pub mod balancer;
pub mod depends;
pub mod duration;
pub mod ecosystem;
pub mod log_rotate;
pub mod probes;
pub mod read;
pub mod resolve;
pub mod start;
pub mod triggers;
pub mod validate;
pub mod web;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// How log lines are written: as the app printed them (optionally time-stamped), or as JSON
/// objects (`{"message", "timestamp", "type", "process_id", "app_name"}`, PM2's fields).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogType {
    #[default]
    Raw,
    Json,
}

impl LogType {
    /// `json` or `raw` (what `--log-type` and `log_type` accept).
    pub fn parse(text: &str) -> Result<LogType, String> {
        match text {
            "json" => Ok(LogType::Json),
            "raw" | "" => Ok(LogType::Raw),
            other => Err(format!(
                "{other:?} is not a log type (use \"json\", or leave it out)"
            )),
        }
    }
}

/// How an app's processes are run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ExecMode {
    /// Each instance is an independent process (PM2's fork mode).
    Fork,
    /// Instances share listening sockets held by the daemon.
    Cluster,
}

impl ExecMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecMode::Fork => "fork",
            ExecMode::Cluster => "cluster",
        }
    }
}

/// `instances` as the user wrote it (PM2 meanings): a count, `max`/0 (all usable CPUs), or -N (CPUs minus N).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Instances {
    Count(u32),
    Max,
    MaxMinus(u32),
}

impl Instances {
    /// Parses `-i` values: `N`, `max`, `0`, `-N`.
    pub fn parse(text: &str) -> Result<Instances, String> {
        let t = text.trim();
        if t.eq_ignore_ascii_case("max") {
            return Ok(Instances::Max);
        }
        match t.parse::<i64>() {
            Ok(0) => Ok(Instances::Max),
            Ok(n) if n > 0 && n <= i64::from(validate::MAX_INSTANCES) => {
                Ok(Instances::Count(n as u32))
            }
            Ok(n) if (-i64::from(validate::MAX_INSTANCES)..0).contains(&n) => {
                Ok(Instances::MaxMinus((-n) as u32))
            }
            _ => Err(format!(
                "expected a number or \"max\", got {}",
                serde_json::Value::String(text.to_string())
            )),
        }
    }

    /// The number of processes on a machine where `cpus` CPUs are usable (never below 1).
    pub fn resolve(self, cpus: u32) -> u32 {
        match self {
            Instances::Count(n) => n.max(1),
            Instances::Max => cpus.max(1),
            Instances::MaxMinus(k) => cpus.saturating_sub(k).max(1),
        }
    }
}

/// Everything the daemon needs to run (and re-run after `resurrect`) one app.
/// Paths are absolute; the interpreter is resolved; `env` is the full environment of its processes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AppSpec {
    pub name: String,
    /// The script or program, as an absolute path (or a bare program name found on PATH at start).
    pub script: String,
    pub args: Vec<String>,
    /// Absolute path of the interpreter; `None` runs `script` directly.
    pub interpreter: Option<String>,
    pub interpreter_args: Vec<String>,
    pub cwd: PathBuf,
    /// Full environment of the processes (the CLI's environment, then the app's `env`).
    pub env: BTreeMap<String, String>,
    /// The keys the app itself declared (`env`, `env_<name>`), shown by `describe`.
    pub app_env_keys: Vec<String>,
    pub instances: Instances,
    pub exec_mode: ExecMode,
    pub autorestart: bool,
    pub max_restarts: u32,
    pub min_uptime_ms: u64,
    pub restart_delay_ms: u64,
    pub exp_backoff_restart_delay_ms: u64,
    pub kill_timeout_ms: u64,
    /// Signal sent first on stop (then SIGKILL after `kill_timeout_ms`), e.g. "SIGINT".
    pub kill_signal: String,
    pub stop_exit_codes: Vec<i32>,
    pub out_file: Option<PathBuf>,
    pub error_file: Option<PathBuf>,
    pub log_file: Option<PathBuf>,
    pub merge_logs: bool,
    pub time: bool,
    pub log_date_format: Option<String>,
    /// `log_type = "json"` (PM2's name): each line is written as a JSON object for log shippers.
    #[serde(default)]
    pub log_type: LogType,
    pub wait_ready: bool,
    pub listen_timeout_ms: u64,
    pub shutdown_with_message: bool,
    /// Addresses the daemon binds for a cluster app in any language (`port` / `listen`); Node apps
    /// also get every address they `listen()` on at run time.
    #[serde(default)]
    pub listen: Vec<String>,
    /// For a load balancer (`balancers` in a config file): its spec as JSON. The daemon runs it as
    /// `cohort balance --spec-json …` with `app:NAME` upstreams resolved, on the socket it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balancer: Option<serde_json::Value>,
    /// PM2's namespace: a group of apps that `stop NAMESPACE` and the like act on (None = "default").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// PM2's `instance_var`: the variable that carries the instance number (default NODE_APP_INSTANCE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_var: Option<String>,
    /// PM2's `increment_var`: a variable of `env` (a number) that grows by one per instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub increment_var: Option<String>,
    /// `log_rotate`: this app's rotation settings over the daemon-wide defaults (`cohort logrotate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_rotate: Option<log_rotate::LogRotate>,
    /// Restart (cluster: reload) when files change (PM2's watch, ignore_watch, watch_delay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch: Option<triggers::WatchSpec>,
    /// Restart (cluster: reload) on this cron schedule (5 fields, or 6 with seconds first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron_restart: Option<String>,
    /// Restart (cluster: reload) a process whose memory (RSS, bytes) goes above this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_restart: Option<u64>,
    /// `instances = { min, max, ... }`: the worker count follows the load between min and max
    /// (cluster mode only); `instances` then holds the count to start with (min).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<autoscale::Autoscale>,
    /// Apps this one waits for before it starts, each with its condition (`depends_on`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<depends::Dependency>,
    /// How long it waits for them (`depends_timeout`; None: [`depends::DEFAULT_TIMEOUT_MS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depends_timeout_ms: Option<u64>,
    /// Readiness probe: a process is not ready (gets no new connections) while it fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<probes::ProbeSpec>,
    /// Liveness probe: a process that fails it is restarted (cluster: reloaded), reason `probe`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<probes::ProbeSpec>,
}

/// The path a log field set to PM2's `"NULL"` or `"/dev/null"` gets: output is discarded.
pub const DISCARD: &str = "/dev/null";

impl AppSpec {
    /// A spec with PM2's defaults for everything but what identifies the app.
    pub fn new(name: String, script: String, cwd: PathBuf) -> AppSpec {
        AppSpec {
            name,
            script,
            args: Vec::new(),
            interpreter: None,
            interpreter_args: Vec::new(),
            cwd,
            env: BTreeMap::new(),
            app_env_keys: Vec::new(),
            instances: Instances::Count(1),
            exec_mode: ExecMode::Fork,
            autorestart: true,
            max_restarts: 16,
            min_uptime_ms: 1000,
            restart_delay_ms: 0,
            exp_backoff_restart_delay_ms: 0,
            kill_timeout_ms: 1600,
            kill_signal: "SIGINT".to_string(),
            stop_exit_codes: Vec::new(),
            out_file: None,
            error_file: None,
            log_file: None,
            merge_logs: false,
            time: false,
            log_date_format: None,
            log_type: LogType::Raw,
            wait_ready: false,
            listen_timeout_ms: 3000,
            shutdown_with_message: false,
            listen: Vec::new(),
            balancer: None,
            namespace: None,
            instance_var: None,
            increment_var: None,
            log_rotate: None,
            watch: None,
            cron_restart: None,
            max_memory_restart: None,
            autoscale: None,
            depends_on: Vec::new(),
            depends_timeout_ms: None,
            readiness: None,
            liveness: None,
        }
    }

    /// The namespace as PM2 shows it (`default` when none was given).
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or("default")
    }

    /// True when the processes run under Node.js (they get the IPC channel and the preload).
    pub fn is_node(&self) -> bool {
        let program = self.interpreter.as_deref().unwrap_or(&self.script);
        let base = std::path::Path::new(program)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("");
        base == "node"
            || base.starts_with("node") && base[4..].chars().all(|c| c.is_ascii_digit() || c == '.')
    }
}

/// Parses a signal name (`SIGINT`, `INT`, `sigterm`) or number.
pub fn parse_signal(text: &str) -> Result<nix::sys::signal::Signal, String> {
    use std::str::FromStr;
    let t = text.trim();
    if let Ok(n) = t.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n)
            .map_err(|_| format!("unknown signal number {n}"));
    }
    let upper = t.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    nix::sys::signal::Signal::from_str(&name).map_err(|_| {
        format!(
            "unknown signal {:?} (use a name like SIGINT or SIGTERM)",
            text
        )
    })
}
