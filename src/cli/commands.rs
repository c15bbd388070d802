//! Runs each CLI command: turns what the user typed into API requests (the specs of a `start` come
//! from `config::start` via `start`; targets are resolved by `select`), sends them to the daemon and
//! prints the result (through `output`, so a closed pipe ends a command quietly).

use super::output::{self, out, outln};
use super::start::{self, Existing};
use super::*;
use super::{list, render, select};
use crate::api::client::Client;
use crate::api::{
    Action, ActionRequest, LogFiles, LogLine, Ping, ProcessDetail, ProcessInfo, ResurrectReply,
    SaveReply, SaveRequest, ScaleRequest, Selector, UpdateRequest,
};
use crate::config::ecosystem;
use crate::config::start::{specs_for_start, StartOptions};
use crate::home::tail::tail_lines;
use crate::home::Home;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// Runs a client command; the daemon is started when the command needs one. A command whose
/// reader closed stdout (`| head`) ends quietly with success.
pub async fn run(command: Command, home: Home) -> Result<()> {
    match dispatch(command, home).await {
        Err(e) if output::is_stdout_closed(&e) => Ok(()),
        other => other,
    }
}

async fn dispatch(command: Command, home: Home) -> Result<()> {
    match command {
        Command::Start(args) | Command::StartOrRestart(args) => {
            start::start(args, home, Existing::Restart).await
        }
        Command::StartOrReload(args) => start::start(args, home, Existing::Reload).await,
        Command::Stop(t) => action(ActionArgs::plain(Action::Stop, t), home).await,
        Command::Restart(r) => action(ActionArgs::restart(Action::Restart, r)?, home).await,
        Command::Reload(r) => action(ActionArgs::restart(Action::Reload, r)?, home).await,
        Command::Delete(t) => action(ActionArgs::plain(Action::Delete, t), home).await,
        Command::Reset(t) => action(ActionArgs::plain(Action::Reset, t), home).await,
        Command::SendSignal(s) => send_signal(s, home).await,
        Command::Scale(s) => scale(s, home).await,
        Command::Describe(t) => describe(t, home).await,
        Command::Ls(a) => list::ls(a, home).await,
        Command::Jlist(a) => list::jlist(a, home).await,
        Command::Prettylist(a) => list::prettylist(a, home).await,
        Command::Pid(t) => list::pid(t, home).await,
        Command::Logs(a) => logs(a, home).await,
        Command::Flush(t) => flush(t, home).await,
        Command::ReloadLogs => super::logrotate::reload_logs(home).await,
        Command::Logrotate(a) => super::logrotate::logrotate(a, home).await,
        Command::Env(e) => env(e, home).await,
        Command::Save(s) => save(s, home).await,
        Command::Resurrect => resurrect(home).await,
        Command::Kill(args) => kill(home, args).await,
        Command::Ping => ping(home).await,
        Command::Update(args) => update(home, args).await,
        Command::Monit => crate::monit::run(home).await,
        Command::Access(a) => super::access::run(a, home).await,
        Command::Metrics => super::observe::metrics(home).await,
        Command::Web(a) => super::observe::web(a, home).await,
        Command::Daemon(_)
        | Command::Balance(_)
        | Command::Startup(_)
        | Command::Unstartup(_)
        | Command::Run(_) => {
            unreachable!("dispatched in main")
        }
    }
}

fn cli_env() -> BTreeMap<String, String> {
    std::env::vars().collect()
}

/// Resolves targets into one selector (the process list is asked for only when a target needs it).
async fn selector_of(targets: select::Targets, client: &Client) -> Result<Selector> {
    targets.resolve(client).await
}

/// An action as typed: the verb, its targets and the restart/reload options.
struct ActionArgs {
    action: Action,
    targets: TargetArgs,
    update_env: bool,
    node_args: Option<Vec<String>>,
    /// `--env NAME` with a config file: its `env_NAME` block.
    env: Option<String>,
}

impl ActionArgs {
    fn plain(action: Action, targets: TargetArgs) -> ActionArgs {
        ActionArgs {
            action,
            targets,
            update_env: false,
            node_args: None,
            env: None,
        }
    }

    fn restart(action: Action, r: RestartArgs) -> Result<ActionArgs> {
        if let Some(name) = &r.name {
            bail!(
                "cohort does not rename a running app on {} (delete it and start it again under the new name: `cohort delete {} && cohort start SCRIPT --name {name}`)",
                action.as_str(),
                r.targets.target.join(" ")
            );
        }
        if r.watch {
            let t = r.targets.target.join(" ");
            bail!(
                "cohort does not turn watching on or off on {} (PM2 toggles it): watch is set when the app starts: `cohort delete {t} && cohort start SCRIPT --watch`, or `watch` in its config and `cohort start CONFIG`",
                action.as_str(),
            );
        }
        let node_args = r
            .node_args
            .as_deref()
            .map(|na| shell_words::split(na).map_err(|e| anyhow!("--node-args {na:?}: {e}")))
            .transpose()?;
        Ok(ActionArgs {
            action,
            targets: r.targets,
            update_env: r.update_env,
            node_args,
            env: r.env,
        })
    }
}

/// stop / restart / reload / delete / reset. For restart and reload a config file is read again
/// (with `--env NAME`): its apps take the new specs, and those not running start.
async fn action(a: ActionArgs, home: Home) -> Result<()> {
    let rereads = matches!(a.action, Action::Restart | Action::Reload);
    let mut sels = Vec::new();
    let mut apps = Vec::new();
    let mut others = Vec::new();
    let only = a.targets.only.clone();
    if let Some(o) = &only {
        if !a
            .targets
            .target
            .iter()
            .any(|t| ecosystem::is_config_file(t))
        {
            bail!("--only {o} picks apps of a config file, and no target is one (name the apps instead: `cohort {} {}`)", a.action.as_str(), o.replace(',', " "));
        }
    }
    for target in &a.targets.target {
        if ecosystem::is_config_file(target) && (rereads || only.is_some()) {
            let opts = StartOptions {
                target: target.clone(),
                env: a.env.clone(),
                only: only.clone(),
                ..Default::default()
            };
            let specs = specs_for_start(&opts)?;
            for w in &specs.warnings {
                eprintln!("warning: {w}");
            }
            sels.push(Selector::Names(
                specs.apps.iter().map(|s| s.name.clone()).collect(),
            ));
            if rereads {
                apps.extend(specs.apps);
            }
        } else {
            if let Some(env) = &a.env {
                bail!("--env {env} applies to a config file, and {target} is not one (restart the config file, or use --update-env to take this shell's environment)");
            }
            others.push(target.clone());
        }
    }
    let targets = select::Targets::parse(&others)?;
    let client = Client::connect_or_start(home).await?;
    if !others.is_empty() {
        sels.push(selector_of(targets, &client).await?);
    }
    let sel = if sels.len() == 1 {
        sels.remove(0)
    } else {
        Selector::Many(sels)
    };
    let mut req = ActionRequest::new(a.action, sel);
    req.apps = apps;
    req.update_env = a.update_env.then(cli_env);
    req.node_args = a.node_args;
    let procs: Vec<ProcessInfo> = client.post_long("/action", &req).await?;
    if a.targets.json {
        outln!("{}", serde_json::to_string(&procs)?)?;
    } else {
        eprintln!(
            "cohort: {} {}: done",
            a.action.as_str(),
            a.targets.target.join(" ")
        );
        out(&render::table(&procs))?;
    }
    Ok(())
}

async fn send_signal(s: SignalArgs, home: Home) -> Result<()> {
    crate::config::parse_signal(&s.signal).map_err(|e| anyhow!("sendSignal: {e}"))?;
    let targets = select::Targets::parse(&s.target)?;
    let client = Client::connect_or_start(home).await?;
    let mut req = ActionRequest::new(Action::Signal, selector_of(targets, &client).await?);
    req.signal = Some(s.signal.clone());
    let _: Vec<ProcessInfo> = client.post_long("/action", &req).await?;
    eprintln!("cohort: sent {} to {}", s.signal, s.target.join(" "));
    Ok(())
}

async fn scale(s: ScaleArgs, home: Home) -> Result<()> {
    let client = Client::connect_or_start(home).await?;
    let procs: Vec<ProcessInfo> = client
        .post_long(
            "/scale",
            &ScaleRequest {
                name: s.name.clone(),
                target: s.count.clone(),
            },
        )
        .await?;
    eprintln!(
        "cohort: scaled {} to {}",
        s.name,
        procs.iter().filter(|p| p.name == s.name).count()
    );
    out(&render::table(&procs))?;
    Ok(())
}

async fn describe(t: TargetArgs, home: Home) -> Result<()> {
    if let Some(o) = &t.only {
        bail!(
            "--only {o}: describe takes app names (`cohort describe {}`)",
            o.replace(',', " ")
        );
    }
    let targets = select::Targets::parse(&t.target)?;
    let client = Client::connect_or_start(home).await?;
    let sel = selector_of(targets, &client).await?;
    let details: Vec<ProcessDetail> = client.post("/describe", &sel).await?;
    if t.json {
        outln!("{}", serde_json::to_string_pretty(&details)?)?;
    } else {
        for d in &details {
            out(&render::detail(d))?;
            if let (Some(admin), true) = (&d.balancer_admin, d.info.pid.is_some()) {
                match balancer_status(admin).await {
                    Ok(status) => out(&render::upstreams(&status))?,
                    Err(e) => outln!("  upstreams          (cannot read {admin}/status: {e:#})")?,
                }
            }
        }
    }
    Ok(())
}

/// A running balancer's counters, from its admin endpoint (`GET /status`).
async fn balancer_status(admin: &str) -> Result<serde_json::Value> {
    use http_body_util::BodyExt;
    let fut = async {
        let stream = tokio::net::TcpStream::connect(admin).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let req = hyper::Request::get("/status")
            .header("host", admin)
            .body(http_body_util::Empty::<bytes::Bytes>::new())?;
        let body = sender
            .send_request(req)
            .await?
            .into_body()
            .collect()
            .await?
            .to_bytes();
        Ok::<_, anyhow::Error>(serde_json::from_slice(&body)?)
    };
    tokio::time::timeout(std::time::Duration::from_secs(2), fut)
        .await
        .map_err(|_| anyhow!("no answer within 2 s"))?
}

/// The selector of an optional target (none = all), resolved against the daemon.
async fn optional_selector(target: &Option<String>, client: &Client) -> Result<Selector> {
    match target {
        Some(t) => selector_of(select::Targets::parse(std::slice::from_ref(t))?, client).await,
        None => Ok(Selector::All),
    }
}

async fn logs(a: LogsArgs, home: Home) -> Result<()> {
    if let Some(t) = &a.target {
        select::Targets::parse(std::slice::from_ref(t))?;
    }
    let client = Client::connect_or_start(home).await?;
    let sel = optional_selector(&a.target, &client).await?;
    let files: Vec<LogFiles> = client.post("/logs/files", &sel).await?;
    let want_out = !a.err || a.out;
    let want_err = !a.out || a.err;
    // Subscribe before reading the backlog so no line falls between the two.
    let stream = if a.nostream {
        None
    } else {
        Some(client.stream("/logs/stream", &sel).await?)
    };
    let width = files
        .iter()
        .map(|f| f.name.len() + 1 + f.instance.to_string().len())
        .max()
        .unwrap_or(0);
    let prefix = |name: &str, instance: u32| {
        if a.raw {
            String::new()
        } else {
            format!("{:<width$} | ", format!("{name}|{instance}"))
        }
    };
    {
        let mut out = std::io::stdout().lock();
        let mut seen = std::collections::HashSet::new();
        for f in &files {
            for (wanted, path, kind) in [(want_out, &f.out, "out"), (want_err, &f.err, "err")] {
                if !wanted || !seen.insert(path.clone()) {
                    continue;
                }
                if !a.raw && !a.json {
                    writeln!(out, "── {} ({kind}) last {} lines ──", path, a.lines)
                        .map_err(output::closed_or)?;
                }
                for line in tail_lines(Path::new(path), a.lines) {
                    if a.json {
                        let l = LogLine {
                            id: f.id,
                            name: f.name.clone(),
                            instance: f.instance,
                            stream: kind.to_string(),
                            line,
                            at: 0,
                        };
                        writeln!(out, "{}", serde_json::to_string(&l)?)
                            .map_err(output::closed_or)?;
                    } else {
                        writeln!(out, "{}{}", prefix(&f.name, f.instance), line)
                            .map_err(output::closed_or)?;
                    }
                }
            }
        }
        out.flush().map_err(output::closed_or)?;
    }
    let Some(resp) = stream else { return Ok(()) };
    use http_body_util::BodyExt;
    let mut body = resp.into_body();
    let mut pending: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| anyhow!("the daemon stopped streaming logs: {e}"))?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        pending.extend_from_slice(data);
        let mut out = std::io::stdout().lock();
        while let Some(nl) = pending.iter().position(|c| *c == b'\n') {
            let line: Vec<u8> = pending.drain(..=nl).collect();
            let Ok(l) = serde_json::from_slice::<LogLine>(&line) else {
                continue;
            };
            // "cohort" lines are the daemon's own notes (lines skipped): always shown.
            if (l.stream == "out" && !want_out) || (l.stream == "err" && !want_err) {
                continue;
            }
            if a.json {
                if writeln!(out, "{}", serde_json::to_string(&l)?).is_err() {
                    return Ok(());
                }
                continue;
            }
            let ts = if a.timestamp {
                chrono::DateTime::from_timestamp_millis(l.at as i64)
                    .map(|t| {
                        t.with_timezone(&chrono::Local)
                            .format("%Y-%m-%dT%H:%M:%S ")
                            .to_string()
                    })
                    .unwrap_or_default()
            } else {
                String::new()
            };
            if writeln!(out, "{}{}{}", prefix(&l.name, l.instance), ts, l.line).is_err() {
                return Ok(()); // stdout closed (e.g. piped into head)
            }
        }
        let _ = out.flush();
    }
    Ok(())
}

async fn flush(t: OptionalTarget, home: Home) -> Result<()> {
    if let Some(target) = &t.target {
        select::Targets::parse(std::slice::from_ref(target))?;
    }
    let client = Client::connect_or_start(home).await?;
    let sel = optional_selector(&t.target, &client).await?;
    let _: Vec<ProcessInfo> = client
        .post_long("/action", &ActionRequest::new(Action::Flush, sel))
        .await?;
    eprintln!("cohort: logs flushed");
    Ok(())
}

async fn env(e: EnvArgs, home: Home) -> Result<()> {
    let client = Client::connect_or_start(home).await?;
    let vars: BTreeMap<String, String> = client.post("/env", &e.id).await?;
    let mut out = std::io::stdout().lock();
    for (k, v) in vars {
        writeln!(out, "{k}: {v}").map_err(output::closed_or)?;
    }
    Ok(())
}

async fn save(s: SaveArgs, home: Home) -> Result<()> {
    let client = Client::connect_or_start(home).await?;
    let r: SaveReply = client
        .post("/save", &SaveRequest { force: s.force })
        .await?;
    outln!("saved {} app(s) to {}", r.apps, r.path)?;
    Ok(())
}

async fn resurrect(home: Home) -> Result<()> {
    let client = Client::connect_or_start(home).await?;
    let r: ResurrectReply = client.post_long("/resurrect", &()).await?;
    if !r.started.is_empty() {
        outln!("resurrected: {}", r.started.join(", "))?;
    }
    if !r.skipped.is_empty() {
        outln!(
            "already running, left as they are: {}",
            r.skipped.join(", ")
        )?;
    }
    if r.started.is_empty() && r.skipped.is_empty() {
        outln!("the dump is empty: nothing to resurrect")?;
    }
    Ok(())
}

async fn kill(home: Home, args: super::KillArgs) -> Result<()> {
    if args.exec_stop && std::env::var_os("MAINPID").is_none_or(|p| p.is_empty()) {
        // systemd unsets $MAINPID for ExecStop= once the main process has exited on its own. systemd
        // 252 runs ExecStop= then only after a clean exit (`cohort kill` by hand: the apps are
        // already stopped); after a crash or kill it skips it, and Restart= brings the next daemon,
        // which adopts the apps. Either way there is nothing to stop here.
        outln!(
            "the daemon already exited: nothing to stop; a restarted daemon adopts any app still running ({})",
            home.root.display()
        )?;
        return Ok(());
    }
    let Some(client) = Client::connect_existing(home.clone()).await? else {
        outln!("no daemon running for {}", home.root.display())?;
        return Ok(());
    };
    let ping = client.ping().await?;
    let _: serde_json::Value = client.post_long("/kill", &()).await?;
    // Wait until the daemon process is gone, so the next command starts a fresh one.
    let pid = nix::unistd::Pid::from_raw(ping.pid as i32);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while process_exists(pid) && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    outln!("daemon stopped (pid {})", ping.pid)?;
    Ok(())
}

/// True while `pid` runs. A zombie counts as gone: the daemon is not our child, so it stays a zombie
/// until its parent (often PID 1, which may reap slowly in containers) collects it.
fn process_exists(pid: nix::unistd::Pid) -> bool {
    if nix::sys::signal::kill(pid, None).is_err() {
        return false;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, Some("Z") | Some("X"))
}

async fn ping(home: Home) -> Result<()> {
    let client = Client::connect_or_start(home).await?;
    let p: Ping = client.ping().await?;
    outln!("pong: daemon {} pid {} home {}", p.version, p.pid, p.home)?;
    Ok(())
}

async fn update(home: Home, args: UpdateArgs) -> Result<()> {
    let Some(client) = Client::connect_existing(home.clone()).await? else {
        let client = Client::connect_or_start(home).await?;
        let p = client.ping().await?;
        outln!("started daemon {} (pid {})", p.version, p.pid)?;
        return Ok(());
    };
    let binary = match args.binary {
        Some(b) => b,
        None => {
            std::env::current_exe().context("finding this cohort binary (pass it with --binary)")?
        }
    };
    let binary = std::fs::canonicalize(&binary)
        .with_context(|| format!("finding {} (is it installed?)", binary.display()))?;
    let before = client.ping().await?;
    let sent = std::time::Instant::now();
    // On success the daemon re-executes before it can answer: the connection just closes.
    let asked: Result<serde_json::Value> = client
        .post_long(
            "/update",
            &UpdateRequest {
                binary: binary.to_string_lossy().into_owned(),
            },
        )
        .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        if let Ok(now) = client.ping().await {
            if now.reexecs > before.reexecs || now.pid != before.pid {
                let procs: Vec<ProcessInfo> = client.get("/processes").await.unwrap_or_default();
                let running = procs.iter().filter(|p| p.pid.is_some()).count();
                outln!(
                    "daemon updated in place: cohort {} → {} (pid {}); {running} processes kept running, none restarted",
                    before.version, now.version, now.pid
                )?;
                return Ok(());
            }
            // A daemon image younger than the request went back to the previous binary.
            let fresh = u128::from(now.uptime_ms) <= sent.elapsed().as_millis();
            if let Some(why) = now.failed_update.filter(|_| asked.is_err() && fresh) {
                bail!("cannot update the daemon in place: the new binary could not take over ({why}); the previous one runs again, with every app (see daemon.log)");
            }
            if let Err(e) = &asked {
                bail!("cannot update the daemon in place: {e:#}");
            }
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "the daemon did not come back after the update ({}; see daemon.log in COHORT_HOME)",
                asked.err().map(|e| format!("{e:#}")).unwrap_or_default()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
