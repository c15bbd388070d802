//! Ecosystem files: `cohort.toml` (`[[apps]]`), JSON (`{"apps": [...]}`) and PM2's
//! `ecosystem.config.js`/`.cjs`/`.mjs` (evaluated with node, so it may compute values).
//!
//! Every format is read into one JSON value and validated by the same code, so errors name the file,
//! the app and the field the same way whatever the format: `ecosystem.config.js: apps[1].instances: …`.

use super::resolve::resolve;
use super::{AppSpec, ExecMode, Instances};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// PM2 fields accepted but not implemented yet: each one used gets a warning, never silence.
const NOT_YET: &[&str] = &[
    "watch_options",
    "source_map_support",
    "instance_var",
    "filter_env",
    "vizion",
    "post_update",
    "force",
    "append_env_to_name",
    "namespace",
    "increment_var",
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
    "exec_interpreter",
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
    let value = read_value(path, display)?;
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    from_value(&value, display, &dir, opts)
}

fn read_value(path: &Path, display: &str) -> Result<Value, String> {
    let lower = display.to_ascii_lowercase();
    if lower.ends_with(".yml") || lower.ends_with(".yaml") {
        return Err(format!(
            "{display}: YAML ecosystem files are not supported (write the same fields as JSON, TOML or ecosystem.config.js)"
        ));
    }
    if lower.ends_with(".js") || lower.ends_with(".cjs") || lower.ends_with(".mjs") {
        return eval_js(path, display);
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{display}: cannot read: {e}"))?;
    if lower.ends_with(".toml") {
        let v: toml::Value =
            toml::from_str(&text).map_err(|e| format!("{display}: invalid TOML: {e}"))?;
        serde_json::to_value(v).map_err(|e| format!("{display}: {e}"))
    } else {
        serde_json::from_str(&text).map_err(|e| format!("{display}: invalid JSON: {e}"))
    }
}

/// Evaluates a PM2 ecosystem file with node and reads the exported object as JSON.
fn eval_js(path: &Path, display: &str) -> Result<Value, String> {
    if !path.is_file() {
        return Err(format!("{display}: no such file (check the path)"));
    }
    const LOADER: &str = r#"
const p = require('path').resolve(process.argv[1]);
const load = async () => {
  let m;
  if (p.endsWith('.mjs')) m = await import(require('url').pathToFileURL(p).href);
  else {
    try { m = require(p); }
    catch (e) {
      if (e && (e.code === 'ERR_REQUIRE_ESM' || e.code === 'ERR_REQUIRE_ASYNC_MODULE')) m = await import(require('url').pathToFileURL(p).href);
      else throw e;
    }
  }
  if (m && m.default && !m.apps && !m.balancers) m = m.default;
  return m;
};
load().then((m) => process.stdout.write(JSON.stringify(m === undefined ? null : m)),
  (e) => { process.stderr.write(String((e && e.stack) || e)); process.exit(1); });
"#;
    let node = super::resolve::find_program("node", Path::new("/"), std::env::var("PATH").ok().as_deref())
        .ok_or_else(|| format!("{display}: node is needed to read a .js ecosystem file and is not on PATH (install Node.js, or use cohort.toml / JSON)"))?;
    let out = std::process::Command::new(node)
        .arg("-e")
        .arg(LOADER)
        .arg(path)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("{display}: cannot run node to evaluate it: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first: Vec<&str> = err.lines().take(6).collect();
        return Err(format!(
            "{display}: node could not evaluate it:\n{}",
            first.join("\n")
        ));
    }
    serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("{display}: the exported value is not JSON-serialisable: {e}"))
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
        if !matches!(key.as_str(), "apps" | "balancers" | "deploy" | "web") {
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
    let apps = match obj.get("apps") {
        None if obj.contains_key("balancers") => Vec::new(),
        None => return Err(format!("{file}: no \"apps\" list (declare apps as {{\"apps\": [{{\"name\": …, \"script\": …}}]}} or [[apps]] in TOML)")),
        Some(Value::Array(a)) => a.clone(),
        Some(Value::Object(o)) => vec![Value::Object(o.clone())],
        Some(other) => return Err(format!("{file}: apps: expected a list of apps, got {}", kind(other))),
    };
    let mut names = BTreeSet::new();
    for (i, app) in apps.iter().enumerate() {
        let at = format!("{file}: apps[{i}]");
        let spec = app_from_value(app, &at, dir, opts, &mut loaded.warnings)?;
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
    "err_file",
    "log_file",
    "merge_logs",
    "combine_logs",
    "time",
    "log_date_format",
    "log_type",
    "wait_ready",
    "listen_timeout",
    "shutdown_with_message",
    "port",
    "listen",
    "output",
    "error",
    "watch",
    "ignore_watch",
    "watch_delay",
    "cron_restart",
    "cron",
    "max_memory_restart",
];

fn app_from_value(
    value: &Value,
    at: &str,
    dir: &Path,
    opts: &LoadOptions,
    warnings: &mut Vec<String>,
) -> Result<AppSpec, String> {
    let Value::Object(obj) = value else {
        return Err(format!(
            "{at}: expected an app object {{\"name\": …, \"script\": …}}, got {}",
            kind(value)
        ));
    };
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
            let p = dir.join(c);
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
    let name = f
        .string("name")?
        .unwrap_or_else(|| resolved.default_name.clone());
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
    spec.interpreter_args = iargs;

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
            other => return Err(f.err("instances", "a number or \"max\"", other)),
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
    let path = |p: String| -> PathBuf { cwd.join(p) };
    spec.out_file = f.string("out_file")?.or(f.string("output")?).map(path);
    spec.error_file = f
        .string("error_file")?
        .or(f.string("err_file")?)
        .or(f.string("error")?)
        .map(path);
    spec.log_file = f.string("log_file")?.map(path);
    spec.merge_logs = f
        .bool("merge_logs")?
        .or(f.bool("combine_logs")?)
        .unwrap_or(false);
    spec.time = f.bool("time")?.unwrap_or(false);
    spec.log_date_format = f.string("log_date_format")?;
    if let Some(t) = f.string("log_type")? {
        spec.log_type = super::LogType::parse(&t).map_err(|e| format!("{at}.log_type: {e}"))?;
    }
    if spec.log_date_format.is_some() {
        spec.time = true;
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
    spec.watch = triggers.watch;
    spec.cron_restart = triggers.cron_restart;
    spec.max_memory_restart = triggers.max_memory_restart;
    // The rules a dump is held to as well (resurrect runs the same check).
    super::validate::app(&spec, &at_named)?;
    Ok(spec)
}

/// A `balancers[i]` entry as an app the daemon supervises: `cohort balance` on a socket the daemon
/// holds (so a reload of the balancer never refuses a connection).
fn balancer_app(value: &Value, at: &str, dir: &Path) -> Result<AppSpec, String> {
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
    super::validate::app(&app, at)?;
    Ok(app)
}

/// PM2's rule: several instances of a Node app run in cluster mode unless told otherwise.
pub fn default_mode(spec: &AppSpec) -> ExecMode {
    if spec.instances != Instances::Count(1) && spec.is_node() {
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
}
