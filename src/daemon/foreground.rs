//! `cohort run`: the daemon core in the foreground, for containers (what `pm2-runtime` is to PM2).
//!
//! One process runs the same supervisor and serves the same API socket in COHORT_HOME (so `cohort ls`,
//! `reload` and `logs` work from inside the container), starts the apps given on the command line,
//! streams their output to its own stdout/stderr, turns SIGTERM/SIGINT into a graceful stop of every
//! app, and exits once every app is gone for good. It works as PID 1: it is a child subreaper and
//! the supervisor's reaper waits for every child (`waitpid(-1)`), so orphans of any origin are reaped.
//! `--health ADDR` serves `/healthz` and `/readyz` for Kubernetes probes and load balancers.

use super::supervisor::{self, Handle};
use crate::api::{LogLine, ProcessDetail, ProcessInfo, Selector, StartRequest, Status};
use crate::config::start::{specs_for_start, StartOptions};
use crate::home::Home;
use anyhow::{anyhow, bail, Context, Result};
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;

/// How often the foreground loop checks whether every app is gone for good.
const WATCH_INTERVAL: Duration = Duration::from_millis(200);

/// What `cohort run` was asked for.
#[derive(Debug, Default)]
pub struct RunOptions {
    /// The apps, as for `cohort start`.
    pub start: StartOptions,
    /// Serve /healthz and /readyz over HTTP on this address.
    pub health: Option<String>,
    /// Print log lines as raw JSON objects instead of `name|instance | line`.
    pub json: bool,
}

/// Runs apps in the foreground until they are all gone; returns the exit code.
pub fn run(args: RunOptions, home: Home) -> i32 {
    match run_inner(args, home) {
        Ok(code) => code,
        Err(e) => {
            crate::report!("error: {e:#}");
            1
        }
    }
}

fn run_inner(args: RunOptions, home: Home) -> Result<i32> {
    let started = Instant::now();
    // Everything the user typed is checked before anything starts.
    let specs = specs_for_start(&args.start)?;
    for w in &specs.warnings {
        crate::report!("warning: {w}");
    }
    let health = args
        .health
        .as_deref()
        .map(|a| {
            a.parse::<std::net::SocketAddr>().map_err(|_| {
                anyhow!("--health {a:?}: expected an address like 0.0.0.0:9615 or 127.0.0.1:9615")
            })
        })
        .transpose()?;
    // Same claim as the background daemon: one daemon core per COHORT_HOME.
    let Some(_claim) = super::claim_home(&home)? else {
        bail!(
            "a cohort daemon already runs for {} (stop it with `cohort kill`, or give `cohort run` its own COHORT_HOME)",
            home.root.display()
        );
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // A `[web]` table: tokens read and hashed now, the listener started with the core.
    let web = specs
        .web
        .as_ref()
        .map(crate::api::web::WebSettings::from_config)
        .transpose()
        .map_err(|e| anyhow!("[web]: {e}"))?;
    let result = rt.block_on(serve(
        home.clone(),
        specs.apps,
        health,
        args.json,
        started,
        web,
    ));
    let _ = std::fs::remove_file(home.socket());
    let _ = std::fs::remove_file(home.pid_file());
    rt.shutdown_timeout(Duration::from_millis(100));
    result
}

async fn serve(
    home: Home,
    apps: Vec<crate::config::AppSpec>,
    health: Option<std::net::SocketAddr>,
    json: bool,
    started: Instant,
    web_settings: Option<crate::api::web::WebSettings>,
) -> Result<i32> {
    let listener = super::bind_api_socket(&home)?;
    let health_listener = match health {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("--health {addr}: cannot listen there (is the port in use? pick another one)")
        })?),
        None => None,
    };
    let mut term = signal(SignalKind::terminate()).context("watching SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("watching SIGINT")?;
    let _hup = signal(SignalKind::hangup()).context("ignoring SIGHUP")?;

    let (handle, supervision) = supervisor::start(home.clone())?;
    super::reopen_logs_on_sigusr2(handle.clone())?;
    let supervision = supervision.failed();
    tokio::pin!(supervision);
    let shutdown = Arc::new(Notify::new());
    let api = super::routes::router(handle.clone(), home.clone(), shutdown.clone());
    let web = super::web::Web::new(handle.clone(), home.clone(), api.clone());
    let app = super::access::protect(api.merge(super::web::control_routes(web.clone())), &home)?;
    match web_settings {
        Some(s) => {
            let st = web.apply(s).await.map_err(|e| anyhow!("[web]: {e}"))?;
            if let Some(b) = st.bound {
                crate::report!("cohort: web listener on http://{b}/");
            }
        }
        None => web.restore().await,
    }
    let stop = shutdown.clone();
    let server = tokio::spawn(super::api_server::serve(
        listener,
        app,
        super::access::peer,
        async move { stop.notified().await },
    ));
    if let Some(l) = health_listener {
        let addr = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        let router = health_router(handle.clone());
        let stop = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(l, router)
                .with_graceful_shutdown(async move { stop.notified().await })
                .await
        });
        crate::report!("cohort: health endpoints on http://{addr}/healthz and /readyz");
    }
    // Subscribe before the apps start so their first lines are printed too.
    let printer = tokio::spawn(print_logs(handle.hub.subscribe(), json));

    let names: Vec<String> = apps.iter().map(|a| a.name.clone()).collect();
    let started_apps: Result<Vec<ProcessInfo>, String> = handle
        .start(StartRequest {
            apps,
            restart_existing: false,
        })
        .await;
    if let Err(e) = started_apps {
        shutdown.notify_waiters();
        bail!("{e}");
    }
    crate::report!(
        "cohort: running {} in the foreground (pid {}, COHORT_HOME={}; started in {} ms)",
        names.join(", "),
        std::process::id(),
        home.root.display(),
        started.elapsed().as_millis()
    );

    let mut every = tokio::time::interval(WATCH_INTERVAL);
    let details: Vec<ProcessDetail> = loop {
        tokio::select! {
            _ = term.recv() => {
                crate::report!("cohort: SIGTERM: stopping every app");
                break stop_all(&handle).await;
            }
            _ = int.recv() => {
                crate::report!("cohort: SIGINT: stopping every app");
                break stop_all(&handle).await;
            }
            _ = shutdown.notified() => {
                // `cohort kill` from inside the container: the route already stopped every app.
                break describe(&handle).await;
            }
            reason = &mut supervision => {
                // Logged by the watcher: with no supervisor, the apps run unsupervised.
                shutdown.notify_waiters();
                bail!("{reason}");
            }
            _ = every.tick() => {
                let d = describe(&handle).await;
                if d.iter().all(gone_for_good) {
                    break d;
                }
            }
        }
    };
    shutdown.notify_waiters();
    // The pipes are read to their end after a process dies: let the last lines through.
    tokio::time::sleep(Duration::from_millis(50)).await;
    printer.abort();
    let _ = tokio::time::timeout(Duration::from_millis(500), server).await;
    let failed: Vec<String> = details
        .iter()
        .filter(|d| !ended_cleanly(d))
        .map(describe_end)
        .collect();
    let code = if failed.is_empty() { 0 } else { 1 };
    if !failed.is_empty() {
        crate::report!("cohort: every app is gone; failed: {}", failed.join(", "));
    } else {
        crate::report!("cohort: every app is gone; exiting with code {code}");
    }
    Ok(code)
}

async fn stop_all(handle: &Handle) -> Vec<ProcessDetail> {
    let before = describe(handle).await;
    if let Err(e) = handle.shutdown().await {
        crate::report!("cohort: {e}");
    }
    // What each app was doing when the signal came decides the code: an app that had already
    // ended (errored, or exited non-zero with no restart) still counts, the rest were stopped on purpose.
    let after = describe(handle).await;
    after
        .into_iter()
        .map(|mut d| {
            if before
                .iter()
                .any(|b| b.info.id == d.info.id && !gone_for_good(b))
            {
                d.last_exit_code = Some(0);
                d.last_signal = None;
            }
            d
        })
        .collect()
}

async fn describe(handle: &Handle) -> Vec<ProcessDetail> {
    handle.describe(Selector::All).await.unwrap_or_default()
}

/// Stopped or errored with no restart coming (a restart passes through `stopping` or `waiting_restart`).
fn gone_for_good(d: &ProcessDetail) -> bool {
    d.info.pid.is_none() && matches!(d.info.status, Status::Stopped | Status::Errored)
}

/// Exit code 0, or ended by a stop signal (SIGINT, SIGTERM, or the app's own kill_signal).
fn ended_cleanly(d: &ProcessDetail) -> bool {
    if d.info.status == Status::Errored {
        return false;
    }
    match (&d.last_exit_code, &d.last_signal) {
        (Some(code), _) => *code == 0,
        (None, Some(sig)) => sig == "SIGINT" || sig == "SIGTERM" || *sig == d.kill_signal,
        (None, None) => true, // never started, or stopped before it ran
    }
}

fn describe_end(d: &ProcessDetail) -> String {
    let how = match (d.info.status, d.last_exit_code, &d.last_signal) {
        (Status::Errored, _, _) => "errored".to_string(),
        (_, Some(c), _) => format!("exit code {c}"),
        (_, None, Some(s)) => format!("killed by {s}"),
        _ => "stopped".to_string(),
    };
    format!("{}:{} ({how})", d.info.name, d.info.instance)
}

/// Copies the apps' output to our stdout (their stdout) and stderr (their stderr).
async fn print_logs(mut rx: tokio::sync::broadcast::Receiver<Arc<LogLine>>, json: bool) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let line = match rx.recv().await {
            Ok(l) => l,
            Err(RecvError::Lagged(n)) => {
                crate::report!("cohort: {n} log lines skipped on the console (the terminal was too slow; they are in the log files)");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let text = if json {
            match serde_json::to_string(&*line) {
                Ok(t) => t,
                Err(_) => continue,
            }
        } else {
            format!("{}|{} | {}", line.name, line.instance, line.line)
        };
        // A closed stdout (e.g. a container runtime that stopped reading) must not stop the apps.
        if json || line.stream == "out" {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}").and_then(|()| out.flush());
        } else {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "{text}");
        }
    }
}

/// `/healthz` (the daemon core answers) and `/readyz` (every process of every app is online and
/// ready: listening or signalled, and its readiness probe passing).
fn health_router(handle: Handle) -> axum::Router {
    use axum::http::StatusCode;
    use axum::routing::get;
    axum::Router::new()
        .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
        .route(
            "/readyz",
            get(move || {
                let handle = handle.clone();
                async move {
                    match handle.list().await {
                        Ok(procs) => {
                            let not_ready: Vec<String> = procs
                                .iter()
                                .filter(|p| p.status != Status::Online || p.ready == Some(false))
                                .map(|p| match p.status {
                                    Status::Online => format!(
                                        "{}:{} is online but not ready (see `cohort describe {}`)",
                                        p.name, p.instance, p.name
                                    ),
                                    status => {
                                        format!("{}:{} is {}", p.name, p.instance, status.as_str())
                                    }
                                })
                                .collect();
                            if procs.is_empty() {
                                (
                                    StatusCode::SERVICE_UNAVAILABLE,
                                    "not ready: no apps\n".to_string(),
                                )
                            } else if not_ready.is_empty() {
                                (
                                    StatusCode::OK,
                                    format!("ready: {} processes online\n", procs.len()),
                                )
                            } else {
                                (
                                    StatusCode::SERVICE_UNAVAILABLE,
                                    format!("not ready: {}\n", not_ready.join(", ")),
                                )
                            }
                        }
                        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")),
                    }
                }
            }),
        )
}
