//! `start` as PM2 users know it: several targets at once, `-` for a config on stdin, the default
//! config file when none is given, an app name / id / namespace restarts that app, a stopped app's
//! script starts it again, `-f` starts a second copy under a new name; and `startOrRestart` /
//! `startOrReload` (apps of a config that run are restarted / reloaded, the others started).

use super::output::outln;
use super::{render, select, StartArgs};
use crate::api::client::Client;
use crate::api::{
    Action, ActionRequest, ProcessDetail, ProcessInfo, Selector, StartRequest, Status,
};
use crate::config::ecosystem;
use crate::config::start::{specs_for_start, StartOptions, StartSpecs};
use crate::config::AppSpec;
use crate::home::Home;
use anyhow::{anyhow, bail, Context, Result};
use std::io::Read;
use std::path::Path;

/// What happens to the apps of a config file that already run.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    Restart,
    Reload,
}

/// One thing a start does.
enum Step {
    /// Start these apps (a config file's apps replace running ones of the same name).
    Start(StartSpecs),
    /// Restart apps that exist (`start api`, `start 3`, a stopped app's script).
    Restart(Selector, String),
}

/// The config files `start` reads when given no target, in this order.
const DEFAULT_CONFIGS: &[&str] = &["ecosystem.config.js", "ecosystem.config.cjs", "cohort.toml"];

pub async fn start(mut a: StartArgs, home: Home, existing: Existing) -> Result<()> {
    fold_execute_command(&mut a);
    if a.targets.is_empty() {
        let found = DEFAULT_CONFIGS.iter().find(|f| Path::new(f).is_file());
        match found {
            Some(f) => a.targets.push(f.to_string()),
            None => bail!(
                "nothing to start: give a script, a command or a config file (no {} here)",
                DEFAULT_CONFIGS.join(" or ")
            ),
        }
    }
    if a.name.is_some() && a.targets.len() > 1 {
        bail!("--name applies to one app, and {} targets were given (start them one at a time to name each)", a.targets.len());
    }
    if a.targets.iter().filter(|t| *t == "-").count() > 1 {
        bail!("`-` (a config on stdin) can be given once");
    }
    // Specs of files and commands first: a bad one starts nothing and starts no daemon.
    let mut pending: Vec<(String, Option<StartSpecs>)> = Vec::new();
    for t in &a.targets {
        let specs = if may_name_an_app(t) {
            None
        } else {
            Some(build(&a, t)?)
        };
        pending.push((t.clone(), specs));
    }
    let client = Client::connect_or_start(home).await?;
    let mut known = select::processes(&client).await?;
    let mut steps = Vec::new();
    for (target, specs) in pending {
        let step = match specs {
            Some(specs) => plan_specs(specs, &a, &mut known)?,
            None => match existing_selector(&target, &known) {
                Some(sel) => Step::Restart(sel, target.clone()),
                None => plan_specs(build(&a, &target)?, &a, &mut known)?,
            },
        };
        steps.push(step);
    }
    let mut procs: Vec<ProcessInfo> = Vec::new();
    for step in steps {
        procs = run_step(&client, step, existing).await?;
    }
    if a.json {
        outln!("{}", serde_json::to_string(&procs)?)?;
    } else {
        super::output::out(&render::table(&procs))?;
    }
    Ok(())
}

/// PM2's `-x` is a plain switch (fork mode, the default); `-x cluster` / `-x fork` set the mode,
/// and anything else after `-x` was the script.
fn fold_execute_command(a: &mut StartArgs) {
    if let Some(Some(v)) = a.execute_command.take() {
        let is_mode = matches!(
            v.as_str(),
            "fork" | "cluster" | "fork_mode" | "cluster_mode"
        );
        if is_mode && a.exec_mode.is_none() {
            a.exec_mode = Some(v);
        } else if !is_mode {
            a.targets.insert(0, v);
        }
    }
}

/// PM2's rule: a target with no slash and no extension, or a number, may be an app to restart.
fn may_name_an_app(t: &str) -> bool {
    t != "-"
        && !ecosystem::is_config_file(t)
        && (t.parse::<u32>().is_ok()
            || (!t.contains('/') && Path::new(t).extension().is_none() && !Path::new(t).is_file()))
}

/// The apps a word names: `all`, an id, an app name, or a namespace.
fn existing_selector(t: &str, known: &[ProcessDetail]) -> Option<Selector> {
    match Selector::parse(t) {
        Selector::All => Some(Selector::All),
        Selector::Id(id) => Some(Selector::Id(id)),
        _ if known.iter().any(|p| p.info.name == t) => Some(Selector::Name(t.to_string())),
        _ => {
            let names: std::collections::BTreeSet<String> = known
                .iter()
                .filter(|p| p.namespace.as_deref() == Some(t))
                .map(|p| p.info.name.clone())
                .collect();
            (!names.is_empty()).then(|| Selector::Names(names.into_iter().collect()))
        }
    }
}

/// The specs of one target (`-` reads a config from stdin).
fn build(a: &StartArgs, target: &str) -> Result<StartSpecs> {
    let mut opts: StartOptions = a.options_for(target);
    if target == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the config from stdin")?;
        opts.config_text = Some(text);
    }
    let specs = specs_for_start(&opts)?;
    for w in &specs.warnings {
        eprintln!("warning: {w}");
    }
    Ok(specs)
}

/// A script whose app exists: started again when stopped (PM2), an error when it runs (unless -f,
/// which starts a second copy under a free name).
fn plan_specs(
    mut specs: StartSpecs,
    a: &StartArgs,
    known: &mut Vec<ProcessDetail>,
) -> Result<Step> {
    if specs.from_config_file {
        return Ok(Step::Start(specs));
    }
    let Some(spec) = specs.apps.first_mut() else {
        return Ok(Step::Start(specs));
    };
    let mine: Vec<&ProcessDetail> = known.iter().filter(|p| p.info.name == spec.name).collect();
    if let Some(first) = mine.first() {
        let same_script = first.script == spec.script && first.args == spec.args;
        let all_down = mine.iter().all(|p| {
            matches!(
                p.info.status,
                Status::Stopped | Status::Errored | Status::Stopping
            )
        });
        if a.force {
            spec.name = free_name(&spec.name, known);
        } else if same_script && all_down {
            return Ok(Step::Restart(
                Selector::Name(spec.name.clone()),
                spec.name.clone(),
            ));
        } else if same_script {
            bail!(
                "{} already runs {} (id {}): restart it with `cohort restart {}`, or add -f to start a second copy",
                spec.name,
                spec.script,
                first.info.id,
                spec.name
            );
        }
        // Another script under that name: the daemon says what to do.
    }
    remember(known, spec);
    Ok(Step::Start(specs))
}

/// `NAME-1`, `NAME-2`, …: the first name no app has.
fn free_name(name: &str, known: &[ProcessDetail]) -> String {
    (1..)
        .map(|k| format!("{name}-{k}"))
        .find(|n| !known.iter().any(|p| &p.info.name == n))
        .unwrap_or_else(|| name.to_string())
}

/// Counts an app about to start as known, so a later target of the same start sees it.
fn remember(known: &mut Vec<ProcessDetail>, spec: &AppSpec) {
    known.push(ProcessDetail {
        info: ProcessInfo {
            id: u32::MAX,
            name: spec.name.clone(),
            instance: 0,
            pid: None,
            status: Status::Launching,
            restarts: 0,
            uptime_ms: 0,
            cpu: 0.0,
            memory: 0,
            mode: spec.exec_mode.as_str().into(),
            unstable_restarts: 0,
            restart_reason: None,
            ready: None,
            restart_reasons: Default::default(),
            autoscale: None,
        },
        script: spec.script.clone(),
        args: Vec::new(),
        cwd: String::new(),
        interpreter: None,
        interpreter_args: Vec::new(),
        env_keys: Vec::new(),
        out_log: String::new(),
        err_log: String::new(),
        combined_log: None,
        last_exit_code: None,
        last_signal: None,
        created_at: 0,
        started_at: None,
        autorestart: true,
        max_restarts: 0,
        min_uptime_ms: 0,
        kill_timeout_ms: 0,
        kill_signal: String::new(),
        listen: Vec::new(),
        balancer_admin: None,
        namespace: spec.namespace.clone(),
        instance_var: None,
        watch: Vec::new(),
        cron_restart: None,
        max_memory_restart: None,
        spawn_retry: None,
        depends_on: Vec::new(),
        waiting_for: None,
        probes: Vec::new(),
    });
}

async fn run_step(client: &Client, step: Step, existing: Existing) -> Result<Vec<ProcessInfo>> {
    // A config file's `[web]` table turns the daemon's web listener on once its apps are started.
    let web = match &step {
        Step::Start(specs) => specs.web.clone(),
        Step::Restart(..) => None,
    };
    let procs = start_step(client, step, existing).await?;
    if let Some(w) = &web {
        super::observe::apply_config(client, w).await?;
    }
    Ok(procs)
}

async fn start_step(client: &Client, step: Step, existing: Existing) -> Result<Vec<ProcessInfo>> {
    match step {
        Step::Restart(sel, label) => {
            let procs = client
                .post_long("/action", &ActionRequest::new(Action::Restart, sel))
                .await?;
            eprintln!("cohort: {label} existed: restarted");
            Ok(procs)
        }
        Step::Start(specs) if specs.from_config_file && existing == Existing::Reload => {
            start_or_reload(client, specs).await
        }
        Step::Start(specs) => {
            let names: Vec<String> = specs.apps.iter().map(|s| s.name.clone()).collect();
            let procs = client
                .post_long(
                    "/start",
                    &StartRequest {
                        apps: specs.apps,
                        restart_existing: specs.from_config_file,
                    },
                )
                .await?;
            eprintln!("cohort: started {}", names.join(", "));
            Ok(procs)
        }
    }
}

/// `startOrReload`: `reload CONFIG` — the config's apps take its specs, those that run are
/// reloaded and the others start.
async fn start_or_reload(client: &Client, specs: StartSpecs) -> Result<Vec<ProcessInfo>> {
    let names: Vec<String> = specs.apps.iter().map(|s| s.name.clone()).collect();
    let mut req = ActionRequest::new(Action::Reload, Selector::Names(names.clone()));
    req.apps = specs.apps;
    let procs = client
        .post_long("/action", &req)
        .await
        .map_err(|e| anyhow!("reloading {}: {e:#}", names.join(", ")))?;
    eprintln!("cohort: started or reloaded {}", names.join(", "));
    Ok(procs)
}
