//! What a `start` (or `cohort run`) asks for, turned into app specs: the options the user gave, over
//! a script, a command line, or the apps of a config file. Nothing here talks to the daemon: every
//! spec comes out resolved and validated, or the whole start is refused with a reason.
//!
//! `StartOptions` is plain data; the CLI fills it from its flags.

use super::ecosystem::{self, LoadOptions};
use super::{resolve, AppSpec, ExecMode, Instances};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// The options of a start, as given (durations and lists still as text, checked here).
#[derive(Debug, Default, Clone)]
pub struct StartOptions {
    /// Script, command line ("sleep 1000"), or config file.
    pub target: String,
    pub name: Option<String>,
    pub cwd: Option<String>,
    pub interpreter: Option<String>,
    pub node_args: Option<String>,
    pub instances: Option<String>,
    /// `env_<NAME>` of the config file to apply.
    pub env: Option<String>,
    /// Only these apps of the config file (comma-separated).
    pub only: Option<String>,
    pub time: bool,
    pub no_autorestart: bool,
    pub max_restarts: Option<u32>,
    pub min_uptime: Option<String>,
    pub restart_delay: Option<String>,
    pub exp_backoff_restart_delay: Option<String>,
    pub kill_timeout: Option<String>,
    pub kill_signal: Option<String>,
    pub stop_exit_codes: Option<String>,
    pub out: Option<String>,
    pub err: Option<String>,
    pub log_file: Option<String>,
    pub merge_logs: bool,
    pub log_date_format: Option<String>,
    /// `--log-type json`.
    pub log_type: Option<String>,
    pub wait_ready: bool,
    pub listen_timeout: Option<String>,
    pub shutdown_with_message: bool,
    pub port: Option<u16>,
    pub exec_mode: Option<String>,
    /// PM2's namespace for the apps (those of a config file that declare none).
    pub namespace: Option<String>,
    /// A config given as text instead of a file (`start -` reads it from stdin).
    pub config_text: Option<String>,
    /// `--watch`: restart when files under the app's cwd change.
    pub watch: bool,
    /// `--ignore-watch`: globs, comma-separated.
    pub ignore_watch: Option<String>,
    /// `--max-memory-restart`: 150M, 1G, bytes.
    pub max_memory_restart: Option<String>,
    /// `--cron-restart`: a cron pattern.
    pub cron_restart: Option<String>,
    /// `--readiness-http /health`, `--readiness-tcp 6379`, `--readiness-exec CMD` (default timing).
    pub readiness: Option<(String, String)>,
    /// `--liveness-http`, `--liveness-tcp`, `--liveness-exec`.
    pub liveness: Option<(String, String)>,
    /// Arguments passed to the script.
    pub args: Vec<String>,
}

/// The specs of a start.
#[derive(Debug)]
pub struct StartSpecs {
    pub apps: Vec<AppSpec>,
    /// The target was a config file (its apps replace running apps of the same name).
    pub from_config_file: bool,
    /// What the config file asked for that cohort ignores.
    pub warnings: Vec<String>,
    /// The config file's `[web]` table.
    pub web: Option<super::web::WebConfig>,
}

/// Builds the app specs of a start, relative to the current directory and with the current
/// environment as the apps' base environment.
pub fn specs_for_start(a: &StartOptions) -> Result<StartSpecs> {
    let here = std::env::current_dir().context("reading the current directory")?;
    let base_env: BTreeMap<String, String> = std::env::vars().collect();
    if a.config_text.is_some() || ecosystem::is_config_file(&a.target) {
        let only: Option<Vec<String>> = a
            .only
            .as_ref()
            .map(|o| o.split(',').map(|s| s.trim().to_string()).collect());
        let load = LoadOptions {
            env_name: a.env.as_deref(),
            base_env: &base_env,
            only: only.as_deref(),
        };
        let loaded = match &a.config_text {
            Some(text) => ecosystem::load_text(text, "stdin", &here, &load),
            None => {
                let path = here.join(&a.target);
                if !path.is_file() {
                    bail!("config file not found: {} (check the path)", a.target);
                }
                ecosystem::load(&path, &a.target, &load)
            }
        }
        .map_err(|e| anyhow!(e))?;
        if a.name.is_some() && loaded.apps.len() > 1 {
            bail!(
                "--name applies to one app, and {} declares {} (use --only NAME to pick one)",
                a.target,
                loaded.apps.len()
            );
        }
        let mut apps = loaded.apps;
        for spec in &mut apps {
            let cwd = spec.cwd.clone();
            apply_options(spec, a, &cwd)?;
            if let Some(n) = &a.name {
                spec.name = n.clone();
            }
            if spec.namespace.is_none() {
                spec.namespace = a.namespace.clone();
            }
        }
        if apps.is_empty() {
            bail!("{} declares no apps", a.target);
        }
        return Ok(StartSpecs {
            apps,
            from_config_file: true,
            warnings: loaded.warnings,
            web: loaded.web,
        });
    }
    if a.env.is_some() || a.only.is_some() {
        bail!("--env and --only apply to config files, and {} is a script (put env_<name> blocks in an ecosystem file)", a.target);
    }
    let cwd = match &a.cwd {
        Some(c) => {
            let p = here.join(c);
            if !p.is_dir() {
                bail!("--cwd {c}: not a directory");
            }
            std::fs::canonicalize(&p).unwrap_or(p)
        }
        None => here,
    };
    let r = resolve::resolve(
        &a.target,
        a.interpreter.as_deref(),
        &cwd,
        base_env.get("PATH").map(String::as_str),
    )
    .map_err(|e| anyhow!(e))?;
    let name = a.name.clone().unwrap_or_else(|| r.default_name.clone());
    ecosystem::validate_name(&name).map_err(|e| anyhow!("--name: {e}"))?;
    let mut spec = AppSpec::new(name, r.script, cwd.clone());
    spec.interpreter = r.interpreter;
    spec.args = r.args;
    let mut warnings = Vec::new();
    if let Some(na) = &a.node_args {
        if spec.interpreter.is_none() {
            warnings.push(format!(
                "--node-args ignored: {} runs without an interpreter (pass the flags after --, or set --interpreter)",
                spec.script
            ));
        } else {
            spec.interpreter_args =
                shell_words::split(na).map_err(|e| anyhow!("--node-args {na:?}: {e}"))?;
        }
    }
    spec.env = base_env;
    spec.namespace = a.namespace.clone();
    apply_options(&mut spec, a, &cwd)?;
    Ok(StartSpecs {
        apps: vec![spec],
        from_config_file: false,
        warnings,
        web: None,
    })
}

fn millis(flag: &str, v: &Option<String>) -> Result<Option<u64>> {
    v.as_deref()
        .map(|s| {
            super::duration::parse_ms(s).map_err(|_| {
                anyhow!("--{flag} {s:?}: expected milliseconds (a number, or 500ms, 10s, 2m)")
            })
        })
        .transpose()
}

/// Applies the options given on the command line over a spec; relative log paths are under `cwd`.
fn apply_options(spec: &mut AppSpec, a: &StartOptions, cwd: &Path) -> Result<()> {
    if let Some(i) = &a.instances {
        match super::autoscale::Autoscale::from_range(i) {
            Some(a) => {
                let a = a.map_err(|e| anyhow!("-i {i:?}: {e}"))?;
                spec.instances = a.min;
                spec.autoscale = Some(a);
            }
            None => {
                spec.instances = Instances::parse(i).map_err(|e| anyhow!("-i {i:?}: {e}"))?;
                spec.autoscale = None;
            }
        }
        spec.exec_mode = ecosystem::default_mode(spec);
    }
    if let Some(m) = &a.exec_mode {
        spec.exec_mode = match m.as_str() {
            "fork" | "fork_mode" => ExecMode::Fork,
            "cluster" | "cluster_mode" => ExecMode::Cluster,
            other => bail!("--exec-mode {other:?}: expected fork or cluster"),
        };
    }
    if a.time {
        spec.time = true;
    }
    if a.no_autorestart {
        spec.autorestart = false;
    }
    if let Some(n) = a.max_restarts {
        spec.max_restarts = n;
    }
    if let Some(ms) = millis("min-uptime", &a.min_uptime)? {
        spec.min_uptime_ms = ms;
    }
    if let Some(ms) = millis("restart-delay", &a.restart_delay)? {
        spec.restart_delay_ms = ms;
    }
    if let Some(ms) = millis("exp-backoff-restart-delay", &a.exp_backoff_restart_delay)? {
        spec.exp_backoff_restart_delay_ms = ms;
    }
    if let Some(ms) = millis("kill-timeout", &a.kill_timeout)? {
        spec.kill_timeout_ms = ms;
    }
    if let Some(ms) = millis("listen-timeout", &a.listen_timeout)? {
        spec.listen_timeout_ms = ms;
    }
    if let Some(sig) = &a.kill_signal {
        super::parse_signal(sig).map_err(|e| anyhow!("--kill-signal: {e}"))?;
        spec.kill_signal = sig.clone();
    }
    if let Some(codes) = &a.stop_exit_codes {
        spec.stop_exit_codes = codes
            .split(',')
            .map(|c| {
                c.trim()
                    .parse::<i32>()
                    .ok()
                    .filter(|n| (0..=255).contains(n))
                    .ok_or_else(|| anyhow!("--stop-exit-codes {codes:?}: expected exit codes 0-255, comma-separated"))
            })
            .collect::<Result<_>>()?;
    }
    if let Some(o) = &a.out {
        spec.out_file = Some(ecosystem::log_path(cwd, o));
    }
    if let Some(e) = &a.err {
        spec.error_file = Some(ecosystem::log_path(cwd, e));
    }
    if let Some(l) = &a.log_file {
        spec.log_file = Some(ecosystem::log_path(cwd, l));
    }
    if let Some(ns) = &a.namespace {
        ecosystem::validate_name(ns).map_err(|e| anyhow!("--namespace: {e}"))?;
    }
    if a.merge_logs {
        spec.merge_logs = true;
    }
    if let Some(t) = &a.log_type {
        spec.log_type = super::LogType::parse(t).map_err(|e| anyhow!("--log-type: {e}"))?;
    }
    if let Some(f) = &a.log_date_format {
        spec.log_date_format = Some(f.clone());
        spec.time = true;
    }
    if a.wait_ready {
        spec.wait_ready = true;
    }
    if a.shutdown_with_message {
        spec.shutdown_with_message = true;
    }
    if let Some(p) = a.port {
        if p == 0 {
            bail!("--port 0: give the port the app should serve on (1-65535)");
        }
        spec.listen = vec![p.to_string()];
        if a.exec_mode.is_none() {
            spec.exec_mode = ExecMode::Cluster;
        }
    }
    if !a.args.is_empty() {
        spec.args.extend(a.args.iter().cloned());
    }
    if spec.autoscale.is_some() && spec.exec_mode != ExecMode::Cluster {
        bail!("-i {}: autoscaling (MIN-MAX) needs cluster mode: workers added or removed share the app's port (use a Node app, or give --port; a fork app takes a fixed count)", a.instances.as_deref().unwrap_or("MIN-MAX"));
    }
    apply_triggers(spec, a, cwd)
}

/// `--watch`, `--ignore-watch`, `--max-memory-restart`, `--cron-restart` over a spec.
fn apply_triggers(spec: &mut AppSpec, a: &StartOptions, cwd: &Path) -> Result<()> {
    use super::triggers;
    let ignore: Vec<String> = a
        .ignore_watch
        .iter()
        .flat_map(|g| g.split(','))
        .map(|g| g.trim().to_string())
        .filter(|g| !g.is_empty())
        .collect();
    triggers::check_globs(&ignore).map_err(|e| anyhow!("--ignore-watch: {e}"))?;
    if a.watch && spec.watch.is_none() {
        spec.watch = Some(triggers::WatchSpec {
            paths: vec![cwd.to_path_buf()],
            ignore: Vec::new(),
            delay_ms: triggers::DEFAULT_WATCH_DELAY_MS,
            ..Default::default()
        });
    }
    if let Some(w) = &mut spec.watch {
        w.ignore.extend(ignore);
    }
    if let Some(m) = &a.max_memory_restart {
        spec.max_memory_restart =
            Some(triggers::parse_memory(m).map_err(|e| anyhow!("--max-memory-restart {e}"))?);
    }
    if let Some(c) = &a.cron_restart {
        triggers::parse_cron(c).map_err(|e| anyhow!("--cron-restart {e}"))?;
        spec.cron_restart = Some(c.trim().to_string());
    }
    use super::probes::{from_flag, ProbeKind};
    if let Some((check, value)) = &a.readiness {
        spec.readiness =
            Some(from_flag(ProbeKind::Readiness, check, value).map_err(|e| anyhow!(e))?);
    }
    if let Some((check, value)) = &a.liveness {
        spec.liveness = Some(from_flag(ProbeKind::Liveness, check, value).map_err(|e| anyhow!(e))?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{apply_options, StartOptions};
    use crate::config::{AppSpec, ExecMode};
    use std::path::Path;

    fn applied(opts: StartOptions) -> Result<AppSpec, String> {
        let mut spec = AppSpec::new("app".into(), "/srv/app/server.sh".into(), "/srv/app".into());
        apply_options(&mut spec, &opts, Path::new("/srv/app"))
            .map(|()| spec)
            .map_err(|e| format!("{e:#}"))
    }

    #[test]
    fn options_land_in_the_spec() {
        type Check = fn(&AppSpec) -> bool;
        let cases: Vec<(StartOptions, Check)> = vec![
            (
                StartOptions {
                    exec_mode: Some("cluster_mode".into()),
                    ..Default::default()
                },
                |s| s.exec_mode == ExecMode::Cluster,
            ),
            (
                StartOptions {
                    port: Some(8080),
                    ..Default::default()
                },
                |s| s.listen == ["8080"] && s.exec_mode == ExecMode::Cluster,
            ),
            (
                StartOptions {
                    port: Some(8080),
                    exec_mode: Some("fork".into()),
                    ..Default::default()
                },
                |s| s.listen == ["8080"] && s.exec_mode == ExecMode::Fork,
            ),
            (
                StartOptions {
                    min_uptime: Some("10s".into()),
                    kill_timeout: Some("2500".into()),
                    ..Default::default()
                },
                |s| s.min_uptime_ms == 10_000 && s.kill_timeout_ms == 2500,
            ),
            (
                StartOptions {
                    log_date_format: Some("HH:mm".into()),
                    ..Default::default()
                },
                |s| s.time && s.log_date_format.as_deref() == Some("HH:mm"),
            ),
            (
                StartOptions {
                    stop_exit_codes: Some("0, 3".into()),
                    ..Default::default()
                },
                |s| s.stop_exit_codes == [0, 3],
            ),
            (
                StartOptions {
                    out: Some("logs/out.log".into()),
                    no_autorestart: true,
                    args: vec!["--verbose".into()],
                    ..Default::default()
                },
                |s| {
                    s.out_file.as_deref() == Some(Path::new("/srv/app/logs/out.log"))
                        && !s.autorestart
                        && s.args == ["--verbose"]
                },
            ),
        ];
        for (opts, check) in cases {
            let shown = format!("{opts:?}");
            let spec = applied(opts).unwrap();
            assert!(check(&spec), "{shown} gave {spec:?}");
        }
    }

    #[test]
    fn bad_options_name_the_flag() {
        let cases = [
            (
                StartOptions {
                    exec_mode: Some("thread".into()),
                    ..Default::default()
                },
                "--exec-mode",
            ),
            (
                StartOptions {
                    port: Some(0),
                    ..Default::default()
                },
                "--port 0",
            ),
            (
                StartOptions {
                    restart_delay: Some("soon".into()),
                    ..Default::default()
                },
                "--restart-delay",
            ),
            (
                StartOptions {
                    stop_exit_codes: Some("0,256".into()),
                    ..Default::default()
                },
                "--stop-exit-codes",
            ),
            (
                StartOptions {
                    kill_signal: Some("SIGNOPE".into()),
                    ..Default::default()
                },
                "--kill-signal",
            ),
            (
                StartOptions {
                    instances: Some("many".into()),
                    ..Default::default()
                },
                "-i",
            ),
        ];
        for (opts, flag) in cases {
            let err = applied(opts).unwrap_err();
            assert!(err.starts_with(flag), "{err}");
        }
    }
}
