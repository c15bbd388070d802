//! The control API between the CLI and the daemon: request/response types (this file) and the
//! HTTP-over-Unix-socket client (`client`). The daemon's routes live in `daemon::routes`.

pub mod client;
pub mod web;

use crate::config::AppSpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Header carrying the CLI's version; the daemon refuses a different one (except on ping and kill).
pub const VERSION_HEADER: &str = "x-cohort-version";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Which processes a command acts on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Selector {
    All,
    Id(u32),
    Name(String),
    /// The apps a config file declares (those of them that exist).
    Names(Vec<String>),
    /// Several targets at once (`stop api worker 3`).
    Many(Vec<Selector>),
}

impl Selector {
    /// `all`, a numeric id, or a name (config files are resolved by the CLI into `Names`).
    pub fn parse(text: &str) -> Selector {
        if text == "all" {
            Selector::All
        } else if let Ok(id) = text.parse::<u32>() {
            Selector::Id(id)
        } else {
            Selector::Name(text.to_string())
        }
    }
}

/// Who may use the daemon (`GET`/`POST /access`): its owner and root, and the shared group if any.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct AccessReply {
    pub owner_uid: u32,
    pub shared: Option<crate::home::access::GroupAccess>,
}

/// Process status, as PM2 names them.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Launching,
    Online,
    Stopping,
    Stopped,
    WaitingRestart,
    Errored,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Launching => "launching",
            Status::Online => "online",
            Status::Stopping => "stopping",
            Status::Stopped => "stopped",
            Status::WaitingRestart => "waiting_restart",
            Status::Errored => "errored",
        }
    }
}

/// One row of `ls --json` (design.md fixes these fields; more may be added).
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct ProcessInfo {
    pub id: u32,
    pub name: String,
    pub instance: u32,
    pub pid: Option<i32>,
    pub status: Status,
    pub restarts: u32,
    pub uptime_ms: u64,
    pub cpu: f64,
    pub memory: u64,
    pub mode: String,
    #[serde(default)]
    pub unstable_restarts: u32,
    /// `restarts` split by reason (`crash`, `manual`, `reload`); reasons with no restart are absent.
    #[serde(default)]
    pub restart_reasons: BTreeMap<String, u32>,
    /// Why the process last restarted (null if it never did).
    #[serde(default)]
    pub restart_reason: Option<RestartReason>,
    /// Whether the process takes new work: online, signalled ready (listening, 'ready',
    /// READY=1) and its readiness probe (if any) passing. Null for a stopped or errored process
    /// (docs/health.md, "Probes").
    #[serde(default)]
    pub ready: Option<bool>,
    /// The app's autoscaling (`instances = { min, max }`): bounds and the current count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<AutoscaleInfo>,
}

/// An autoscaled app's bounds, the count it wants now, and (in `describe`) its last decisions.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AutoscaleInfo {
    pub min: u32,
    pub max: u32,
    /// Workers the app should run now (the autoscaler's current count).
    pub desired: u32,
    pub scale_ups: u64,
    pub scale_downs: u64,
    /// The last decision's reason, with its inputs (`describe` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub now: Option<String>,
    /// The last scale events, oldest first (`describe` only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<ScaleEvent>,
}

/// One change of an autoscaled app's worker count.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ScaleEvent {
    /// When (ms since the Unix epoch).
    pub at: u64,
    pub from: u32,
    pub to: u32,
    /// The policy's reason, with the inputs it saw.
    pub reason: String,
}

/// Why a process restarted (`restart_reason` in `ls --json`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RestartReason {
    /// It ended on its own and the restart policy started it again.
    Crash,
    /// Its memory went above max_memory_restart.
    Memory,
    /// cron_restart's schedule.
    Cron,
    /// A watched file changed.
    Watch,
    /// `restart` (or a config file started again).
    Manual,
    /// `reload`.
    Reload,
    /// A failing liveness probe.
    Probe,
}

impl RestartReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RestartReason::Crash => "crash",
            RestartReason::Memory => "memory",
            RestartReason::Cron => "cron",
            RestartReason::Watch => "watch",
            RestartReason::Manual => "manual",
            RestartReason::Reload => "reload",
            RestartReason::Probe => "probe",
        }
    }
}

/// `describe`: the row plus how the process is run and where its logs go.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct ProcessDetail {
    #[serde(flatten)]
    pub info: ProcessInfo,
    pub script: String,
    pub args: Vec<String>,
    pub cwd: String,
    pub interpreter: Option<String>,
    pub interpreter_args: Vec<String>,
    pub env_keys: Vec<String>,
    pub out_log: String,
    pub err_log: String,
    pub combined_log: Option<String>,
    pub last_exit_code: Option<i32>,
    pub last_signal: Option<String>,
    /// Unix milliseconds.
    pub created_at: u64,
    pub started_at: Option<u64>,
    pub autorestart: bool,
    pub max_restarts: u32,
    pub min_uptime_ms: u64,
    pub kill_timeout_ms: u64,
    pub kill_signal: String,
    pub listen: Vec<String>,
    /// For a balancer: where its `GET /status` answers (per-upstream state and counters).
    #[serde(default)]
    pub balancer_admin: Option<String>,
    /// PM2's namespace of the app (None = "default").
    #[serde(default)]
    pub namespace: Option<String>,
    /// The variable carrying the instance number when not NODE_APP_INSTANCE (PM2's instance_var).
    #[serde(default)]
    pub instance_var: Option<String>,
    /// What is watched (empty: no watch).
    #[serde(default)]
    pub watch: Vec<String>,
    #[serde(default)]
    pub cron_restart: Option<String>,
    /// Bytes.
    #[serde(default)]
    pub max_memory_restart: Option<u64>,
    /// The app's dependencies with the condition each waits for: `redis (ready)`.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// While its start is held: what it waits for and where that stands.
    #[serde(default)]
    pub waiting_for: Option<String>,
    /// The app's probes, each with its last result for this process.
    #[serde(default)]
    pub probes: Vec<ProbeStatus>,
    /// While `waiting_restart` after spawns that failed for a transient reason: why and how often.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spawn_retry: Option<SpawnRetry>,
}

/// One probe of a process, for `describe`.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct ProbeStatus {
    pub kind: crate::config::probes::ProbeKind,
    pub spec: crate::config::probes::ProbeSpec,
    /// `http GET :3000/health`, `tcp 127.0.0.1:6379`, `exec redis-cli ping`.
    pub check: String,
    /// The last result for the current run (None: not checked yet).
    pub last: Option<ProbeResult>,
    pub consecutive_successes: u32,
    pub consecutive_failures: u32,
}

/// The result of one check.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ProbeResult {
    /// Unix milliseconds when it finished.
    pub at: u64,
    pub ok: bool,
    /// What it saw: `HTTP 200`, `connected`, `exit 0`, or why it failed.
    pub message: String,
    /// How long the check took, in milliseconds.
    pub took_ms: u64,
}

/// A spawn being retried after a transient failure (the daemon or the system short of file
/// descriptors, processes or memory).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SpawnRetry {
    /// Failed attempts in a row so far.
    pub attempt: u32,
    /// The OS error's name: EMFILE, ENFILE, EAGAIN or ENOMEM.
    pub errno: String,
    /// The whole error, as daemon.log has it.
    pub reason: String,
    /// The next attempt is due after this many milliseconds (from when it failed).
    pub retry_in_ms: u64,
}

/// Where one process's logs are, for `logs` to read the backlog itself.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct LogFiles {
    pub id: u32,
    pub name: String,
    pub instance: u32,
    pub out: String,
    pub err: String,
}

/// One log line as streamed by `GET /logs/stream` (newline-delimited JSON).
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct LogLine {
    pub id: u32,
    pub name: String,
    pub instance: u32,
    /// "out" or "err".
    pub stream: String,
    pub line: String,
    /// Unix milliseconds when the daemon read it.
    pub at: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct StartRequest {
    pub apps: Vec<AppSpec>,
    /// Apps that already exist are restarted with the new spec (starting a config file, as PM2 does)
    /// instead of being an error (starting a script).
    pub restart_existing: bool,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Stop,
    Restart,
    Reload,
    Delete,
    Reset,
    Flush,
    /// Send `ActionRequest::signal` to each selected process (PM2's sendSignal).
    Signal,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Stop => "stop",
            Action::Restart => "restart",
            Action::Reload => "reload",
            Action::Delete => "delete",
            Action::Reset => "reset",
            Action::Flush => "flush",
            Action::Signal => "sendSignal",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct ActionRequest {
    pub action: Action,
    pub selector: Selector,
    /// `restart|reload --update-env`: the caller's environment, merged over the apps' env
    /// (the caller's values win, as PM2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_env: Option<BTreeMap<String, String>>,
    /// `restart|reload CONFIG`: the config file read again; its apps take these specs first
    /// (those not running start), as PM2's startOrRestart / startOrReload.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<AppSpec>,
    /// `restart|reload --node-args "…"`: new interpreter arguments for the selected apps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_args: Option<Vec<String>>,
    /// `sendSignal SIGNAL target`: the signal to send (Action::Signal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
}

impl ActionRequest {
    /// A plain action on a selection (no environment update, no new specs or arguments).
    pub fn new(action: Action, selector: Selector) -> ActionRequest {
        ActionRequest {
            action,
            selector,
            update_env: None,
            apps: Vec::new(),
            node_args: None,
            signal: None,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct ScaleRequest {
    pub name: String,
    /// "N", "+N" or "-N".
    pub target: String,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct SaveRequest {
    pub force: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct SaveReply {
    pub path: String,
    pub apps: usize,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct ResurrectReply {
    pub started: Vec<String>,
    pub skipped: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Ping {
    pub version: String,
    pub pid: u32,
    pub home: String,
    pub uptime_ms: u64,
    /// How many times this daemon was updated in place (`cohort update`).
    #[serde(default)]
    pub reexecs: u32,
    /// Why the last `cohort update` failed after the exec (the previous binary took over again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_update: Option<String>,
}

/// `cohort update`: the binary the daemon re-executes itself with (the CLI's own).
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct UpdateRequest {
    pub binary: String,
}

/// Every error reply: what went wrong and how to fix it; the CLI prints `error: <message>`.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct ErrorReply {
    pub error: String,
}

/// Recent samples of one process (oldest first), for monit's charts.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct History {
    pub id: u32,
    pub interval_ms: u64,
    pub cpu: Vec<f32>,
    pub memory: Vec<u64>,
}
