//! The daemon's side of the control API: HTTP routes that turn requests into calls on the
//! supervisor's handle. Served on the Unix socket (mode 0600); every route answers JSON, errors as
//! `{"error": "…"}`. The request and response types live in `api`.

use super::supervisor::Handle;
use crate::api::{
    ActionRequest, ErrorReply, Ping, SaveRequest, ScaleRequest, Selector, StartRequest,
    UpdateRequest, VERSION, VERSION_HEADER,
};
use crate::home::Home;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Notify;

#[derive(Clone)]
struct Ctx {
    sup: Handle,
    home: Home,
    started: Instant,
    shutdown: Arc<Notify>,
}

pub fn router(sup: Handle, home: Home, shutdown: Arc<Notify>) -> Router {
    let ctx = Ctx {
        sup,
        home,
        started: Instant::now(),
        shutdown,
    };
    Router::new()
        .route("/ping", get(ping))
        .route("/processes", get(processes))
        .route("/start", post(start))
        .route("/action", post(action))
        .route("/scale", post(scale))
        .route("/describe", post(describe))
        .route("/logs/files", post(log_files))
        .route("/logs/stream", post(log_stream))
        .route("/env", post(env))
        .route("/history", post(history))
        .route("/save", post(save))
        .route("/resurrect", post(resurrect))
        .route("/kill", post(kill))
        .route("/update", post(update))
        .layer(axum::middleware::from_fn(check_version))
        .with_state(ctx)
}

/// A CLI of another version is refused (except ping, kill and update, so it can always recover).
async fn check_version(req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path != "/ping" && path != "/kill" && path != "/update" {
        if let Some(v) = req
            .headers()
            .get(VERSION_HEADER)
            .and_then(|v| v.to_str().ok())
        {
            if v != VERSION {
                return error(
                    StatusCode::CONFLICT,
                    format!(
                        "the daemon runs cohort {VERSION} but this is cohort {v} (run `cohort update` to restart the daemon with this version and resurrect your apps)"
                    ),
                );
            }
        }
    }
    next.run(req).await
}

fn error(status: StatusCode, msg: String) -> Response {
    (status, Json(ErrorReply { error: msg })).into_response()
}

fn answer<T: Serialize>(r: Result<T, String>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

async fn ping(State(ctx): State<Ctx>) -> Response {
    Json(Ping {
        version: VERSION.to_string(),
        pid: std::process::id(),
        home: ctx.home.root.to_string_lossy().into_owned(),
        uptime_ms: ctx.started.elapsed().as_millis() as u64,
        reexecs: ctx.sup.reexecs,
        failed_update: ctx.sup.failed_update.clone(),
    })
    .into_response()
}

async fn processes(State(ctx): State<Ctx>) -> Response {
    answer(ctx.sup.list().await)
}

async fn start(State(ctx): State<Ctx>, Json(req): Json<StartRequest>) -> Response {
    answer(ctx.sup.start(req).await)
}

async fn action(State(ctx): State<Ctx>, Json(req): Json<ActionRequest>) -> Response {
    answer(ctx.sup.act(req).await)
}

async fn scale(State(ctx): State<Ctx>, Json(req): Json<ScaleRequest>) -> Response {
    answer(ctx.sup.scale(req).await)
}

async fn describe(State(ctx): State<Ctx>, Json(sel): Json<Selector>) -> Response {
    answer(ctx.sup.describe(sel).await)
}

async fn log_files(State(ctx): State<Ctx>, Json(sel): Json<Selector>) -> Response {
    answer(ctx.sup.log_files(sel).await)
}

async fn env(State(ctx): State<Ctx>, Json(id): Json<u32>) -> Response {
    answer(ctx.sup.env(id).await)
}

async fn history(State(ctx): State<Ctx>, Json(sel): Json<Selector>) -> Response {
    answer(ctx.sup.history(sel).await)
}

async fn save(State(ctx): State<Ctx>, Json(req): Json<SaveRequest>) -> Response {
    answer(ctx.sup.save(req.force).await)
}

async fn resurrect(State(ctx): State<Ctx>) -> Response {
    answer(ctx.sup.resurrect().await)
}

async fn kill(State(ctx): State<Ctx>) -> Response {
    let r = ctx.sup.shutdown().await;
    let stop = ctx.shutdown.clone();
    tokio::spawn(async move { stop.notify_waiters() });
    answer(r.map(|()| serde_json::json!({"stopped": true, "pid": std::process::id()})))
}

/// `cohort update`: the new binary's pre-flight, then the daemon re-executes itself with it
/// (waiting while a process starts, stops or reloads). On success no answer comes: the
/// connection closes with the old image and the CLI asks the new daemon (`ping`).
async fn update(State(ctx): State<Ctx>, Json(req): Json<UpdateRequest>) -> Response {
    let binary = std::path::PathBuf::from(&req.binary);
    if let Err(e) = super::handover::preflight(&binary).await {
        return error(
            StatusCode::BAD_REQUEST,
            format!("the new binary failed its pre-flight: {e:#} (the daemon keeps running with its apps)"),
        );
    }
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match ctx.sup.reexec(binary.clone()).await {
            Ok(busy) if Instant::now() < deadline => {
                let _ = busy;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Ok(busy) => {
                return error(
                    StatusCode::CONFLICT,
                    format!("cannot update now: {busy} (try again once it settled)"),
                )
            }
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
        }
    }
}

/// Streams new log lines of the selected processes as newline-delimited JSON until the client leaves.
async fn log_stream(State(ctx): State<Ctx>, Json(sel): Json<Selector>) -> Response {
    // Validate the selector now (unknown names are an error, not an empty stream).
    let files = match ctx.sup.log_files(sel.clone()).await {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let ids: std::collections::HashSet<u32> = files.iter().map(|f| f.id).collect();
    let names: std::collections::HashSet<String> = files.iter().map(|f| f.name.clone()).collect();
    let rx = ctx.sup.hub.subscribe();
    // Processes are matched by id; app selectors also match by name, so instances added later
    // (scale up) are followed too.
    let all = sel == Selector::All;
    let by_name = matches!(sel, Selector::Name(_) | Selector::Names(_));
    let wanted = move |line: &crate::api::LogLine| {
        all || ids.contains(&line.id) || (by_name && names.contains(&line.name))
    };
    // The receiver and the filter are the stream's state, handed from one item to the next.
    let stream = futures_util::stream::unfold((rx, wanted), |(mut rx, wanted)| async move {
        loop {
            match rx.recv().await {
                Ok(line) if wanted(&line) => {
                    let mut bytes = serde_json::to_vec(&*line).unwrap_or_default();
                    bytes.push(b'\n');
                    let item = Ok::<_, std::io::Error>(bytes::Bytes::from(bytes));
                    return Some((item, (rx, wanted)));
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    crate::daemon::logs::count_follower_lag(n);
                    let note = format!("{{\"id\":0,\"name\":\"cohort\",\"instance\":0,\"stream\":\"cohort\",\"line\":\"[{n} lines skipped: the follower was too slow; they are in the log files]\",\"at\":0}}\n");
                    return Some((Ok(bytes::Bytes::from(note)), (rx, wanted)));
                }
                Err(_) => return None,
            }
        }
    });
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot build the stream".into(),
            )
        })
}
