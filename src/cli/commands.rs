//! Runs each CLI command: turns what the user typed into API requests (the specs of a `start` come
//! from `config::start`; selectors, config files included, are resolved here), sends them to the
//! daemon and prints the result.

use super::render;
use super::*;
use crate::api::client::Client;
use crate::api::{
    Action, ActionRequest, LogFiles, LogLine, Ping, ProcessDetail, ProcessInfo, ResurrectReply,
    SaveReply, SaveRequest, ScaleRequest, Selector, StartRequest, UpdateRequest,
};
use crate::config::ecosystem::{self, LoadOptions};
use crate::config::start::{specs_for_start, StartSpecs};
use crate::home::tail::tail_lines;
use crate::home::Home;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Runs a client command; the daemon is started when the command needs one.
pub async fn run(command: Command, home: Home) -> Result<()> {
    match command {
        Command::Start(args) => start(args, home).await,
        Command::Stop(t) => action(Action::Stop, t, home).await,
        Command::Restart(r) => restart(Action::Restart, r, home).await,
        Command::Reload(r) => restart(Action::Reload, r, home).await,
        Command::Delete(t) => action(Action::Delete, t, home).await,
        Command::Reset(t) => action(Action::Reset, t, home).await,
        Command::Scale(s) => scale(s, home).await,
        Command::Describe(t) => describe(t, home).await,
        Command::Ls(a) => ls(a.json, home).await,
        Command::Jlist => ls(true, home).await,
        Command::Logs(a) => logs(a, home).await,
        Command::Flush(t) => flush(t, home).await,
        Command::Env(e) => env(e, home).await,
        Command::Save(s) => save(s, home).await,
        Command::Resurrect => resurrect(home).await,
        Command::Kill => kill(home).await,
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

fn current_dir() -> Result<PathBuf> {
    std::env::current_dir().context("reading the current directory")
}

async fn start(a: StartArgs, home: Home) -> Result<()> {
    let StartSpecs {
        apps,
        from_config_file,
        warnings,
        web,
    } = specs_for_start(&a.options())?;
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let names: Vec<String> = apps.iter().map(|s| s.name.clone()).collect();
    let client = Client::connect_or_start(home).await?;
    let procs: Vec<ProcessInfo> = client
        .post_long(
            "/start",
            &StartRequest {
                apps,
                restart_existing: from_config_file,
            },
        )
        .await?;
    if let Some(w) = &web {
        super::observe::apply_config(&client, w).await?;
    }
    if a.json {
        println!("{}", serde_json::to_string(&procs)?);
    } else {
        eprintln!("cohort: started {}", names.join(", "));
        print!("{}", render::table(&procs));
    }
    Ok(())
}

/// Turns a target argument into a selector; config files select the apps they declare.
fn selector(target: &str) -> Result<Selector> {
    if ecosystem::is_config_file(target) && Path::new(target).is_file() {
        let path = current_dir()?.join(target);
        let env = cli_env();
        let loaded = ecosystem::load(
            &path,
            target,
            &LoadOptions {
                env_name: None,
                base_env: &env,
                only: None,
            },
        )
        .map_err(|e| anyhow!(e))?;
        return Ok(Selector::Names(
            loaded.apps.into_iter().map(|a| a.name).collect(),
        ));
    }
    if ecosystem::is_config_file(target) {
        bail!("config file not found: {target} (check the path)");
    }
    Ok(Selector::parse(target))
}

/// One selector for several targets (`cohort stop api worker 3`).
fn selectors(targets: &[String]) -> Result<Selector> {
    let mut all: Vec<Selector> = targets.iter().map(|t| selector(t)).collect::<Result<_>>()?;
    Ok(if all.len() == 1 {
        all.remove(0)
    } else {
        Selector::Many(all)
    })
}

async fn action(act: Action, t: TargetArgs, home: Home) -> Result<()> {
    let sel = selectors(&t.target)?;
    let client = Client::connect_or_start(home).await?;
    let procs: Vec<ProcessInfo> = client
        .post_long("/action", &ActionRequest::new(act, sel))
        .await?;
    if t.json {
        println!("{}", serde_json::to_string(&procs)?);
    } else {
        eprintln!("cohort: {} {}: done", act.as_str(), t.target.join(" "));
        print!("{}", render::table(&procs));
    }
    Ok(())
}

/// `restart` / `reload`: config files are read again (with `--env NAME`), `--update-env` sends
/// this shell's environment.
async fn restart(act: Action, r: RestartArgs, home: Home) -> Result<()> {
    let mut sels = Vec::new();
    let mut apps = Vec::new();
    for target in &r.targets.target {
        if ecosystem::is_config_file(target) {
            let opts = crate::config::start::StartOptions {
                target: target.clone(),
                env: r.env.clone(),
                ..Default::default()
            };
            let specs = specs_for_start(&opts)?;
            for w in &specs.warnings {
                eprintln!("warning: {w}");
            }
            sels.push(Selector::Names(
                specs.apps.iter().map(|a| a.name.clone()).collect(),
            ));
            apps.extend(specs.apps);
        } else {
            if let Some(env) = &r.env {
                bail!("--env {env} applies to a config file, and {target} is not one (restart the config file, or use --update-env to take this shell's environment)");
            }
            sels.push(selector(target)?);
        }
    }
    let sel = if sels.len() == 1 {
        sels.remove(0)
    } else {
        Selector::Many(sels)
    };
    let mut req = ActionRequest::new(act, sel);
    req.apps = apps;
    if r.update_env {
        req.update_env = Some(cli_env());
    }
    let client = Client::connect_or_start(home).await?;
    let procs: Vec<ProcessInfo> = client.post_long("/action", &req).await?;
    if r.targets.json {
        println!("{}", serde_json::to_string(&procs)?);
    } else {
        eprintln!(
            "cohort: {} {}: done",
            act.as_str(),
            r.targets.target.join(" ")
        );
        print!("{}", render::table(&procs));
    }
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
    print!("{}", render::table(&procs));
    Ok(())
}

async fn describe(t: TargetArgs, home: Home) -> Result<()> {
    let sel = selectors(&t.target)?;
    let client = Client::connect_or_start(home).await?;
    let details: Vec<ProcessDetail> = client.post("/describe", &sel).await?;
    if t.json {
        println!("{}", serde_json::to_string_pretty(&details)?);
    } else {
        for d in &details {
            print!("{}", render::detail(d));
            if let (Some(admin), true) = (&d.balancer_admin, d.info.pid.is_some()) {
                match balancer_status(admin).await {
                    Ok(status) => print!("{}", render::upstreams(&status)),
                    Err(e) => println!("  upstreams          (cannot read {admin}/status: {e:#})"),
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

async fn ls(json: bool, home: Home) -> Result<()> {
    let client = Client::connect_or_start(home).await?;
    let procs: Vec<ProcessInfo> = client.get("/processes").await?;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(&procs)?)?;
    } else {
        write!(out, "{}", render::table(&procs))?;
    }
    Ok(())
}

async fn logs(a: LogsArgs, home: Home) -> Result<()> {
    let sel = match &a.target {
        Some(t) => selector(t)?,
        None => Selector::All,
    };
    let client = Client::connect_or_start(home).await?;
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
                    writeln!(out, "── {} ({kind}) last {} lines ──", path, a.lines)?;
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
                        writeln!(out, "{}", serde_json::to_string(&l)?)?;
                    } else {
                        writeln!(out, "{}{}", prefix(&f.name, f.instance), line)?;
                    }
                }
            }
        }
        out.flush()?;
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
    let sel = match &t.target {
        Some(t) => selector(t)?,
        None => Selector::All,
    };
    let client = Client::connect_or_start(home).await?;
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
        writeln!(out, "{k}: {v}")?;
    }
    Ok(())
}

async fn save(s: SaveArgs, home: Home) -> Result<()> {
    let client = Client::connect_or_start(home).await?;
    let r: SaveReply = client
        .post("/save", &SaveRequest { force: s.force })
        .await?;
    println!("saved {} app(s) to {}", r.apps, r.path);
    Ok(())
}

async fn resurrect(home: Home) -> Result<()> {
    let client = Client::connect_or_start(home).await?;
    let r: ResurrectReply = client.post_long("/resurrect", &()).await?;
    if !r.started.is_empty() {
        println!("resurrected: {}", r.started.join(", "));
    }
    if !r.skipped.is_empty() {
        println!(
            "already running, left as they are: {}",
            r.skipped.join(", ")
        );
    }
    if r.started.is_empty() && r.skipped.is_empty() {
        println!("the dump is empty: nothing to resurrect");
    }
    Ok(())
}

async fn kill(home: Home) -> Result<()> {
    let Some(client) = Client::connect_existing(home.clone()).await? else {
        println!("no daemon running for {}", home.root.display());
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
    println!("daemon stopped (pid {})", ping.pid);
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
    println!("pong: daemon {} pid {} home {}", p.version, p.pid, p.home);
    Ok(())
}

async fn update(home: Home, args: UpdateArgs) -> Result<()> {
    let Some(client) = Client::connect_existing(home.clone()).await? else {
        let client = Client::connect_or_start(home).await?;
        let p = client.ping().await?;
        println!("started daemon {} (pid {})", p.version, p.pid);
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
                println!(
                    "daemon updated in place: cohort {} → {} (pid {}); {running} processes kept running, none restarted",
                    before.version, now.version, now.pid
                );
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
