//! Ecosystem files: `cohort.toml` (`[[apps]]`), JSON (`{"apps": [...]}`) and PM2's
//! `ecosystem.config.js`/`.cjs`/`.mjs`, in every shape PM2 reads (`apps`, `pm2`, a bare list, a
//! single app object) and with PM2's field aliases (`cmd`, `exec`, `out`, `err`, `log`, …).
//!
//! Every format is read into one JSON value (`read`) and validated by the same code, so errors name
//! the file, the app and the field the same way whatever the format:
//! `ecosystem.config.js: apps[1].instances: …`.

use super::resolve::resolve;
use super::{AppSpec, ExecMode, Instances};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// PM2 fields accepted but not implemented yet: each one used gets a warning, never silence.
const NOT_YET: &[&str] = &[
    "source_map_support",
    "filter_env",
    "vizion",
    "post_update",
    "force",
    "treekill",
    "pmx",
    "automation",
    "disable_trace",
    "trace",
    "disable_logs",
    "combine_logs_date",
    "pid_file",
    "node_version",
    "version",
    "deep_monitoring",
    "autostart",
    "uid",
    "gid",
];

/// What a config file declares, ready for the daemon.
#[derive(Debug, Default)]
pub struct Loaded {
    pub apps: Vec<AppSpec>,
    /// The `[web]` table: the web listener to turn on with these apps.
    pub web: Option<super::web::WebConfig>,
    pub warnings: Vec<String>,
}

/// The caller's context: which `env_<name>` to apply and the environment apps inherit.
pub struct LoadOptions<'a> {
    pub env_name: Option<&'a str>,
    pub base_env: &'a BTreeMap<String, String>,
    pub only: Option<&'a [String]>,
}

/// True when `arg` names a config file rather than a script (PM2's rule, plus TOML).
pub fn is_config_file(arg: &str) -> bool {
    let lower = arg.to_ascii_lowercase();
    lower.ends_with(".json")
        || lower.ends_with(".toml")
        || lower.ends_with(".yml")
        || lower.ends_with(".yaml")
        || [".config.js", ".config.cjs", ".config.mjs"]
            .iter()
            .any(|s| lower.ends_with(s))
}

/// Reads `path` and turns it into app specs; every problem is one message naming file, app and field.
pub fn load(path: &Path, display: &str, opts: &LoadOptions) -> Result<Loaded, String> {
    let value = super::read::file(path, display)?;
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    from_value(&value, display, &dir, opts)
}

/// Reads a config given as text (`start -` reads it from stdin), relative to `dir`.
pub fn load_text(
    text: &str,
    display: &str,
    dir: &Path,
    opts: &LoadOptions,
) -> Result<Loaded, String> {
    let value = super::read::json_like(text, display)?;
    from_value(&value, display, dir, opts)
}

/// True when an object is one app rather than a file of apps (PM2 reads both).
fn is_single_app(obj: &Map<String, Value>) -> bool {
    !obj.contains_key("apps")
        && !obj.contains_key("pm2")
        && !obj.contains_key("balancers")
        && ["script", "cmd", "command", "exec"]
            .iter()
            .any(|k| obj.contains_key(*k))
}

/// Validates a config value (any format) into app specs.
pub fn from_value(
    value: &Value,
    file: &str,
    dir: &Path,
    opts: &LoadOptions,
) -> Result<Loaded, String> {
    let mut loaded = Loaded::default();
    let obj = match value {
        Value::Object(o) if is_single_app(o) => {
            let mut wrapped = Map::new();
            wrapped.insert("apps".into(), Value::Array(vec![value.clone()]));
            wrapped
        }
        Value::Object(o) => o.clone(),
        // PM2 accepts a bare array of apps too.
        Value::Array(a) => {
            let mut o = Map::new();
            o.insert("apps".into(), Value::Array(a.clone()));
            o
        }
        other => {
            return Err(format!(
                "{file}: expected an object with an \"apps\" list, got {}",
                kind(other)
            ))
        }
    };
    for key in obj.keys() {
        if !matches!(
            key.as_str(),
            "apps" | "pm2" | "balancers" | "deploy" | "web"
        ) {
            loaded
                .warnings
                .push(format!("{file}: unknown top-level field {key:?} ignored"));
        }
    }
    if obj.contains_key("deploy") {
        loaded.warnings.push(format!(
            "{file}: \"deploy\" is not supported by cohort; ignored"
        ));
    }
    if let Some(w) = obj.get("web") {
        loaded.web = Some(super::web::from_value(w, &format!("{file}: web"), dir)?);
    }
    // PM2 reads `pm2` when there is no `apps`.
    let apps = match obj.get("apps").or(obj.get("pm2")) {
        None if obj.contains_key("balancers") => Vec::new(),
        None => return Err(format!("{file}: no \"apps\" list (declare apps as {{\"apps\": [{{\"name\": …, \"script\": …}}]}} or [[apps]] in TOML)")),
        Some(Value::Array(a)) => a.clone(),
        Some(Value::Object(o)) => vec![Value::Object(o.clone())],
        Some(other) => return Err(format!("{file}: apps: expected a list of apps, got {}", kind(other))),
    };
    let mut names = BTreeSet::new();
    // Apps that wrote `autorestart = true` (a one-shot dependency must not: depends::check_file).
    let mut explicit_autorestart = BTreeSet::new();
    for (i, app) in apps.iter().enumerate() {
        let at = format!("{file}: apps[{i}]");
        let spec = app_from_value(app, &at, dir, opts, &mut loaded.warnings)?;
        if matches!(app.get("autorestart"), Some(Value::Bool(true)))
            || matches!(app.get("autorestart"), Some(Value::String(s)) if s == "true")
        {
            explicit_autorestart.insert(spec.name.clone());
        }
        if !names.insert(spec.name.clone()) {
            return Err(format!(
                "{at}.name: {:?} is declared twice (app names must be unique)",
                spec.name
            ));
        }
        if opts
            .only
            .is_none_or(|only| only.iter().any(|n| n == &spec.name))
        {
            loaded.apps.push(spec);
        }
    }
    match obj.get("balancers") {
        None => {}
        Some(Value::Array(b)) => {
            for (i, value) in b.iter().enumerate() {
                let at = format!("{file}: balancers[{i}]");
                let spec = balancer_app(value, &at, dir)?;
                if !names.insert(spec.name.clone()) {
                    return Err(format!(
                        "{at}.name: {:?} is already used by an app or balancer of this file",
                        spec.name
                    ));
                }
                if opts
                    .only
                    .is_none_or(|only| only.iter().any(|n| n == &spec.name))
                {
                    loaded.apps.push(spec);
                }
            }
        }
        Some(other) => {
            return Err(format!(
                "{file}: balancers: expected a list, got {}",
                kind(other)
            ))
        }
    }
    super::depends::check_file(&mut loaded.apps, &explicit_autorestart)
        .map_err(|e| format!("{file}: {e}"))?;
    if let Some(only) = opts.only {
        for n in only {
            if !names.contains(n) {
                return Err(format!(
                    "{file}: --only {n}: no app of that name in the file (it declares: {})",
                    names.iter().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
        }
    }
    Ok(loaded)
}

fn kind(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// Field accessors that produce `<at>.<field>: expected …, got …`.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    at: &'a str,
}

impl Fields<'_> {
    fn err(&self, field: &str, expected: &str, got: &Value) -> String {
        format!(
            "{}.{}: expected {}, got {}",
            self.at,
            field,
            expected,
            kind(got)
        )
    }
    fn get(&self, field: &str) -> Option<&Value> {
        self.obj.get(field).filter(|v| !v.is_null())
    }
    fn string(&self, field: &str) -> Result<Option<String>, String> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(v) => Err(self.err(field, "a string", v)),
        }
    }
    fn bool(&self, field: &str) -> Result<Option<bool>, String> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if s == "true" || s == "false" => Ok(Some(s == "true")),
            Some(v) => Err(self.err(field, "true or false", v)),
        }
    }
    fn count(&self, field: &str) -> Result<Option<u32>, String> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n <= u32::MAX as u64) => {
                Ok(n.as_u64().map(|n| n as u32))
            }
            // PM2 reads numbers written as strings ("50"), as in many real configs.
            Some(Value::String(s)) if s.trim().parse::<u32>().is_ok() => {
                Ok(s.trim().parse::<u32>().ok())
            }
            Some(v) => Err(self.err(field, "a whole number ≥ 0", v)),
        }
    }
    /// Milliseconds: a number, or a string with a unit ("500ms", "10s", "2m", "1h").
    fn millis(&self, field: &str) -> Result<Option<u64>, String> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Number(n)) if n.as_f64().is_some_and(|f| f >= 0.0) => {
                Ok(n.as_f64().map(|f| f as u64))
            }
            Some(Value::String(s)) => super::duration::parse_ms(s).map(Some).map_err(|_| {
                self.err(
                    field,
                    "milliseconds (a number, or \"500ms\", \"10s\", \"2m\")",
                    &Value::String(s.clone()),
                )
            }),
            Some(v) => Err(self.err(
                field,
                "milliseconds (a number, or \"500ms\", \"10s\", \"2m\")",
                v,
            )),
        }
    }
    fn words(&self, field: &str) -> Result<Option<Vec<String>>, String> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => shell_words::split(s).map(Some).map_err(|e| {
                format!(
                    "{}.{}: cannot split {s:?} into arguments: {e}",
                    self.at, field
                )
            }),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    Value::Number(n) => Ok(n.to_string()),
                    Value::Bool(b) => Ok(b.to_string()),
                    other => Err(self.err(field, "a string or a list of strings", other)),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(v) => Err(self.err(field, "a string or a list of strings", v)),
        }
    }
    fn env(&self, field: &str) -> Result<Option<BTreeMap<String, String>>, String> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Object(o)) => {
                let mut env = BTreeMap::new();
                for (k, v) in o {
                    let s = match v {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        Value::Null => continue,
                        other => {
                            // PM2 passes objects as JSON strings.
                            serde_json::to_string(other).unwrap_or_default()
                        }
                    };
                    if k.is_empty() || k.contains('=') || k.contains('\0') {
                        return Err(format!(
                            "{}.{}: {k:?} is not a valid variable name",
                            self.at, field
                        ));
                    }
                    env.insert(k.clone(), s);
                }
                Ok(Some(env))
            }
            Some(v) => Err(self.err(field, "an object of NAME: value", v)),
        }
    }
}

/// Checks an app name (kept here for its callers; the rule lives in `validate`).
pub use super::validate::name as validate_name;

const KNOWN: &[&str] = &[
    "name",
    "script",
    "args",
    "interpreter",
    "interpreter_args",
    "node_args",
    "cwd",
    "env",
    "instances",
    "exec_mode",
    "autorestart",
    "max_restarts",
    "min_uptime",
    "restart_delay",
    "exp_backoff_restart_delay",
    "kill_timeout",
    "kill_signal",
    "stop_exit_codes",
    "out_file",
    "error_file",
    "log_file",
    "merge_logs",
    "time",
    "log_date_format",
    "log_rotate",
    "log_type",
    "wait_ready",
    "listen_timeout",
    "shutdown_with_message",
    "port",
    "listen",
    "namespace",
    "instance_var",
    "increment_var",
    "append_env_to_name",
    "watch",
    "ignore_watch",
    "watch_delay",
    "watch_options",
    "cron_restart",
    "max_memory_restart",
    "depends_on",
    "depends_timeout",
    "readiness",
    "liveness",
];

/// PM2's aliases (its schema.json and `verifyConfs`): each names the canonical field it stands for.
const ALIASES: &[(&str, &str)] = &[
    ("cmd", "script"),
    ("command", "script"),
    ("exec", "script"),
    ("exec_interpreter", "interpreter"),
    ("interpreterArgs", "interpreter_args"),
    ("out", "out_file"),
    ("output", "out_file"),
    ("out_log", "out_file"),
    ("err", "error_file"),
    ("error", "error_file"),
    ("err_file", "error_file"),
    ("err_log", "error_file"),
    ("log", "log_file"),
    ("combine_logs", "merge_logs"),
    ("cron", "cron_restart"),
    ("pid", "pid_file"),
    ("user", "uid"),
];

/// The app object with PM2's aliases renamed to the fields they stand for; when both are given
/// the canonical field wins and the alias gets a warning.
fn with_canonical_names(
    obj: &Map<String, Value>,
    at: &str,
    warnings: &mut Vec<String>,
) -> Map<String, Value> {
    let mut out = obj.clone();
    for (alias, canonical) in ALIASES {
        if let Some(v) = out.remove(*alias) {
            if out.contains_key(*canonical) {
                warnings.push(format!(
                    "{at}.{alias}: ignored: {canonical} is given too (they mean the same)"
                ));
            } else {
                out.insert(canonical.to_string(), v);
            }
        }
    }
    out
}

/// `~/…` is the user's home, as PM2 reads it.
pub fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix('~'), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => {
            PathBuf::from(home).join(rest.trim_start_matches('/'))
        }
        _ => PathBuf::from(path),
    }
}

/// A log path as written in a config or flag: `"NULL"` and `"/dev/null"` discard the output (PM2),
/// `~` is the home folder, a relative path is under the app's folder.
pub fn log_path(cwd: &Path, given: &str) -> PathBuf {
    if given == "NULL" || given == super::DISCARD {
        return PathBuf::from(super::DISCARD);
    }
    cwd.join(expand_home(given))
}

/// Where `log_file: true` puts the combined log: `$COHORT_HOME/logs/<name>.log`.
fn default_combined_log(name: &str) -> PathBuf {
    let home = std::env::var_os("COHORT_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cohort")))
        .unwrap_or_else(|| PathBuf::from(".cohort"));
    home.join("logs")
        .join(format!("{}.log", log_file_stem(name)))
}

/// An app name as it appears in log file names: whitespace becomes `-` (`Export report` →
/// `Export-report`), as PM2 does.
pub fn log_file_stem(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_whitespace() { '-' } else { c })
        .collect()
}

fn app_from_value(
    value: &Value,
    at: &str,
    dir: &Path,
    opts: &LoadOptions,
    warnings: &mut Vec<String>,
) -> Result<AppSpec, String> {
    let Value::Object(given) = value else {
        return Err(format!(
            "{at}: expected an app object {{\"name\": …, \"script\": …}}, got {}",
            kind(value)
        ));
    };
    let obj = &with_canonical_names(given, at, warnings);
    let f = Fields { obj, at };
    for key in obj.keys() {
        if NOT_YET.contains(&key.as_str()) {
            warnings.push(format!("{at}.{key}: not supported by cohort yet; ignored"));
        } else if !KNOWN.contains(&key.as_str()) && !key.starts_with("env_") {
            warnings.push(format!("{at}.{key}: unknown field; ignored"));
        }
    }
    let script = f.string("script")?.ok_or_else(|| {
        format!("{at}.script: missing (every app needs the script or command to run)")
    })?;
    let cwd = match f.string("cwd")? {
        Some(c) => {
            let p = dir.join(expand_home(&c));
            if !p.is_dir() {
                return Err(format!("{at}.cwd: {} is not a directory", p.display()));
            }
            std::fs::canonicalize(&p).unwrap_or(p)
        }
        None => dir.to_path_buf(),
    };
    let interpreter = f.string("interpreter")?;
    let mut env = opts.base_env.clone();
    let path_var = env.get("PATH").cloned();
    let resolved = resolve(&script, interpreter.as_deref(), &cwd, path_var.as_deref())
        .map_err(|e| format!("{at}.script: {e}"))?;
    let mut name = f
        .string("name")?
        .unwrap_or_else(|| resolved.default_name.clone());
    // PM2's append_env_to_name: `--env production` makes `api` into `api-production`.
    if let (Some(true), Some(env_name)) = (f.bool("append_env_to_name")?, opts.env_name) {
        name = format!("{name}-{env_name}");
    }
    validate_name(&name).map_err(|e| format!("{at}.name: {e}"))?;
    let at_named = at.to_string();
    let f = Fields { obj, at: &at_named };

    let mut spec = AppSpec::new(name, resolved.script, cwd.clone());
    spec.interpreter = resolved.interpreter;
    spec.args = resolved.args;
    if let Some(args) = f.words("args")? {
        spec.args.extend(args);
    }
    let mut iargs = f.words("interpreter_args")?.unwrap_or_default();
    iargs.extend(f.words("node_args")?.unwrap_or_default());
    if !iargs.is_empty() && spec.interpreter.is_none() {
        warnings.push(format!(
            "{at}.node_args: ignored: {} runs without an interpreter (put the flags in args, or set interpreter)",
            spec.script
        ));
        iargs.clear();
    }
    spec.interpreter_args = iargs;
    spec.namespace = f.string("namespace")?;
    if let Some(ns) = &spec.namespace {
        validate_name(ns).map_err(|e| format!("{at}.namespace: {e}"))?;
    }
    spec.instance_var = f.string("instance_var")?;
    spec.increment_var = f.string("increment_var")?;
    for (field, var) in [
        ("instance_var", &spec.instance_var),
        ("increment_var", &spec.increment_var),
    ] {
        if let Some(v) = var {
            if v.is_empty() || v.contains('=') || v.contains('\0') {
                return Err(format!("{at}.{field}: {v:?} is not a valid variable name"));
            }
        }
    }

    let mut keys = BTreeSet::new();
    if let Some(e) = f.env("env")? {
        keys.extend(e.keys().cloned());
        env.extend(e);
    }
    if let Some(env_name) = opts.env_name {
        let field = format!("env_{env_name}");
        match f.env(&field)? {
            Some(e) => {
                keys.extend(e.keys().cloned());
                env.extend(e);
            }
            None => warnings.push(format!(
                "{at_named}: --env {env_name}: no {field} block; using env only"
            )),
        }
    }
    spec.env = env;
    spec.app_env_keys = keys.into_iter().collect();

    if let Some(v) = f.get("instances") {
        spec.instances = match v {
            Value::Number(n) if n.as_i64().is_some() => Instances::parse(&n.to_string())
                .map_err(|e| format!("{at_named}.instances: {e}"))?,
            Value::String(s) => {
                Instances::parse(s).map_err(|e| format!("{at_named}.instances: {e}"))?
            }
            Value::Object(table) => {
                let a = super::autoscale::Autoscale::from_table(
                    table,
                    &format!("{at_named}.instances"),
                )?;
                let start = a.min;
                spec.autoscale = Some(a);
                start
            }
            other => return Err(f.err("instances", "a number, \"max\" or { min, max }", other)),
        };
    }
    spec.exec_mode = match f.string("exec_mode")?.as_deref() {
        None => default_mode(&spec),
        Some("fork" | "fork_mode") => ExecMode::Fork,
        Some("cluster" | "cluster_mode") => ExecMode::Cluster,
        Some(other) => {
            return Err(f.err(
                "exec_mode",
                "\"fork\" or \"cluster\"",
                &Value::String(other.into()),
            ))
        }
    };
    if let Some(b) = f.bool("autorestart")? {
        spec.autorestart = b;
    }
    if let Some(n) = f.count("max_restarts")? {
        spec.max_restarts = n;
    }
    if let Some(ms) = f.millis("min_uptime")? {
        spec.min_uptime_ms = ms;
    }
    if let Some(ms) = f.millis("restart_delay")? {
        spec.restart_delay_ms = ms;
    }
    if let Some(ms) = f.millis("exp_backoff_restart_delay")? {
        spec.exp_backoff_restart_delay_ms = ms;
    }
    if let Some(ms) = f.millis("kill_timeout")? {
        spec.kill_timeout_ms = ms;
    }
    if let Some(sig) = f.string("kill_signal")? {
        super::parse_signal(&sig).map_err(|e| format!("{at_named}.kill_signal: {e}"))?;
        spec.kill_signal = sig;
    }
    if let Some(v) = f.get("stop_exit_codes") {
        let items = match v {
            Value::Array(a) => a.clone(),
            other => vec![other.clone()],
        };
        spec.stop_exit_codes = items
            .iter()
            .map(|v| match v.as_i64() {
                Some(n) if (0..=255).contains(&n) => Ok(n as i32),
                _ => Err(f.err(
                    "stop_exit_codes",
                    "exit codes (0-255) as a number or a list",
                    v,
                )),
            })
            .collect::<Result<_, _>>()?;
    }
    spec.out_file = f.string("out_file")?.map(|p| log_path(&cwd, &p));
    spec.error_file = f.string("error_file")?.map(|p| log_path(&cwd, &p));
    spec.log_file = match f.get("log_file") {
        None | Some(Value::Bool(false)) => None,
        // PM2's `log: true`: a combined log in the default folder.
        Some(Value::Bool(true)) => Some(default_combined_log(&spec.name)),
        Some(_) => f.string("log_file")?.map(|p| log_path(&cwd, &p)),
    };
    spec.merge_logs = f.bool("merge_logs")?.unwrap_or(false);
    spec.time = f.bool("time")?.unwrap_or(false);
    spec.log_date_format = f.string("log_date_format")?;
    if let Some(t) = f.string("log_type")? {
        spec.log_type = super::LogType::parse(&t).map_err(|e| format!("{at}.log_type: {e}"))?;
    }
    if spec.log_date_format.is_some() {
        spec.time = true;
    }
    if let Some(v) = f.get("log_rotate") {
        let at = format!("{at_named}.log_rotate");
        spec.log_rotate = Some(super::log_rotate::LogRotate::from_value(v, &at)?);
    }
    spec.wait_ready = f.bool("wait_ready")?.unwrap_or(false);
    if let Some(ms) = f.millis("listen_timeout")? {
        spec.listen_timeout_ms = ms;
    }
    spec.shutdown_with_message = f.bool("shutdown_with_message")?.unwrap_or(false);
    if let Some(v) = f.get("port") {
        match v.as_u64() {
            Some(p) if p > 0 && p < 65536 => spec.listen.push(p.to_string()),
            _ => return Err(f.err("port", "a TCP port (1-65535)", v)),
        }
    }
    if let Some(l) = f.words("listen")? {
        spec.listen.extend(l);
    }
    if !spec.listen.is_empty() && f.get("exec_mode").is_none() {
        spec.exec_mode = ExecMode::Cluster;
    }
    let triggers = super::triggers::from_fields(obj, &at_named, &cwd)?;
    warnings.extend(triggers.warnings);
    spec.watch = triggers.watch;
    spec.cron_restart = triggers.cron_restart;
    spec.max_memory_restart = triggers.max_memory_restart;
    (spec.depends_on, spec.depends_timeout_ms) =
        super::depends::from_fields(obj, &spec.name, &at_named)?;
    (spec.readiness, spec.liveness) = super::probes::from_fields(obj, &at_named, &spec.name)?;
    // The rules a dump is held to as well (resurrect runs the same check).
    super::validate::app(&spec, &at_named)?;
    Ok(spec)
}

/// A `balancers[i]` entry as an app the daemon supervises: `cohort balance` on a socket the daemon
/// holds (so a reload of the balancer never refuses a connection).
fn balancer_app(value: &Value, at: &str, dir: &Path) -> Result<AppSpec, String> {
    // `depends_on` / `depends_timeout` are the app's, not the proxy's: taken out before the
    // balancer spec is read.
    let mut value = value.clone();
    let mut dep_fields = Map::new();
    if let Value::Object(o) = &mut value {
        for k in ["depends_on", "depends_timeout"] {
            if let Some(v) = o.remove(k) {
                dep_fields.insert(k.to_string(), v);
            }
        }
    }
    let value = &value;
    let spec: super::balancer::BalancerSpec =
        serde_json::from_value(value.clone()).map_err(|e| format!("{at}: {e}"))?;
    spec.validate().map_err(|e| format!("{at}.{e}"))?;
    let name = spec.name.clone().ok_or_else(|| {
        format!("{at}.name: missing (every balancer needs a name, e.g. \"edge\")")
    })?;
    validate_name(&name).map_err(|e| format!("{at}.name: {e}"))?;
    let exe = std::env::current_exe()
        .map_err(|e| format!("{at}: cannot find the cohort executable: {e}"))?;
    let mut app = AppSpec::new(name, exe.to_string_lossy().into_owned(), dir.to_path_buf());
    app.exec_mode = ExecMode::Cluster;
    app.listen = vec![spec.listen.clone()];
    app.kill_signal = "SIGTERM".into();
    app.kill_timeout_ms = 5000;
    app.balancer = Some(value.clone());
    (app.depends_on, app.depends_timeout_ms) =
        super::depends::from_fields(&dep_fields, &app.name, at)?;
    // A balancer waits for the apps of its `app:NAME` upstreams to start, and stops before them.
    for up in &spec.upstreams {
        let address = match up {
            super::balancer::UpstreamEntry::Text(t) => t.split_whitespace().next().unwrap_or(""),
            super::balancer::UpstreamEntry::Object { address, .. } => address.as_str(),
        };
        if let Some(target) = address.strip_prefix("app:") {
            if !app.depends_on.iter().any(|d| d.app == target) {
                app.depends_on.push(super::depends::Dependency {
                    app: target.to_string(),
                    condition: Some(super::depends::Condition::Started),
                    implicit: true,
                });
            }
        }
    }
    super::validate::app(&app, at)?;
    Ok(app)
}

/// PM2's rule: several instances of a Node app run in cluster mode unless told otherwise.
pub fn default_mode(spec: &AppSpec) -> ExecMode {
    if (spec.instances != Instances::Count(1) || spec.autoscale.is_some()) && spec.is_node() {
        ExecMode::Cluster
    } else {
        ExecMode::Fork
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(env: &BTreeMap<String, String>) -> LoadOptions<'_> {
        LoadOptions {
            env_name: None,
            base_env: env,
            only: None,
        }
    }

    #[test]
    fn bad_instances_name_file_app_and_field() {
        let env = BTreeMap::from([("PATH".to_string(), "/usr/bin:/bin".to_string())]);
        let v: Value = serde_json::json!({"apps": [
            {"name": "a", "script": "sleep 1"},
            {"name": "b", "script": "sleep 1", "instances": "lots"}]});
        let e = from_value(&v, "ecosystem.config.js", Path::new("/"), &opts(&env)).unwrap_err();
        assert_eq!(
            e,
            "ecosystem.config.js: apps[1].instances: expected a number or \"max\", got \"lots\""
        );
    }

    #[test]
    fn not_yet_fields_warn_once_each() {
        let env = BTreeMap::new();
        let v: Value = serde_json::json!({"apps": [{"name": "a", "script": "/bin/sleep 1", "vizion": true, "pmx": false, "watch": false}]});
        let l = from_value(&v, "c.json", Path::new("/"), &opts(&env)).unwrap();
        assert_eq!(l.warnings.len(), 2, "{:?}", l.warnings);
        assert_eq!(l.apps[0].args, vec!["1"]);
    }

    #[test]
    fn pm2_shapes_and_aliases_read_the_same() {
        let env = BTreeMap::new();
        let cases = [
            (serde_json::json!({"name": "a", "cmd": "/bin/sleep 1"}), "a"),
            (
                serde_json::json!({"pm2": [{"name": "b", "exec": "/bin/sleep 1"}]}),
                "b",
            ),
            (
                serde_json::json!([{"name": "c", "command": "/bin/sleep 1"}]),
                "c",
            ),
            (
                serde_json::json!({"apps": {"name": "d", "script": "/bin/sleep 1", "out": "o.log", "err": "e.log", "log": "all.log"}}),
                "d",
            ),
        ];
        for (v, name) in cases {
            let l = from_value(&v, "c.json", Path::new("/srv"), &opts(&env)).unwrap();
            assert_eq!(l.apps[0].name, name, "{v}");
            assert!(l.apps[0].script.ends_with("/sleep"), "{v}");
            assert!(l.warnings.is_empty(), "{v}: {:?}", l.warnings);
        }
        let v = serde_json::json!({"name": "d", "script": "/bin/sleep 1", "out": "o.log", "err": "e.log", "log": "all.log"});
        let d = &from_value(&v, "c.json", Path::new("/srv"), &opts(&env))
            .unwrap()
            .apps[0];
        assert_eq!(d.out_file.as_deref(), Some(Path::new("/srv/o.log")));
        assert_eq!(d.error_file.as_deref(), Some(Path::new("/srv/e.log")));
        assert_eq!(d.log_file.as_deref(), Some(Path::new("/srv/all.log")));
    }

    #[test]
    fn log_paths_as_pm2_reads_them() {
        let home = std::env::var("HOME").unwrap_or_default();
        let cases = [
            ("NULL", "/dev/null".to_string()),
            ("/dev/null", "/dev/null".to_string()),
            ("logs/a.log", "/srv/logs/a.log".to_string()),
            ("/var/log/a.log", "/var/log/a.log".to_string()),
            ("~/a.log", format!("{home}/a.log")),
        ];
        for (given, want) in cases {
            assert_eq!(
                log_path(Path::new("/srv"), given),
                PathBuf::from(&want),
                "{given}"
            );
        }
    }

    #[test]
    fn names() {
        let cases = [
            ("Export report", true),
            ("api", true),
            ("all", false),
            ("42", false),
            ("a/b", false),
            ("tab\there", false),
            (" padded", false),
            ("", false),
        ];
        for (name, ok) in cases {
            assert_eq!(validate_name(name).is_ok(), ok, "{name:?}");
        }
        assert_eq!(log_file_stem("Export report"), "Export-report");
    }
}
