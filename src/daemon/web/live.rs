//! Live data for the dashboard as server-sent events: `/events` (the process list every second,
//! balancers every two) and `/logs/sse?id=N` (the last lines of one process, then each new line as
//! the log pipeline reads it, from the same broadcast `cohort logs` follows). Streams end when the
//! client leaves or the listener is turned off.

use super::routes::Ctx;
use crate::api::{LogLine, Selector};
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// How often the process list is pushed.
const PROCESS_EVERY: Duration = Duration::from_secs(1);
/// A comment line this often keeps proxies from closing an idle log stream.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// Backlog lines sent when a log stream opens (per file), at most.
const MAX_BACKLOG: usize = 500;

/// One server-sent event.
fn event(name: &str, data: &impl serde::Serialize) -> Bytes {
    let json = serde_json::to_string(data).unwrap_or_else(|_| "null".into());
    Bytes::from(format!("event: {name}\ndata: {json}\n\n"))
}

fn sse(stream: impl futures_util::Stream<Item = Bytes> + Send + 'static) -> Response {
    use futures_util::StreamExt;
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-accel-buffering", "no")
        .body(Body::from_stream(stream.map(Ok::<_, std::io::Error>)))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// `GET /events`: `processes` (the `ls --json` rows) every second, `balancers` every two seconds
/// when there are any.
pub async fn events(State(ctx): State<Ctx>) -> Response {
    let mut every = tokio::time::interval(PROCESS_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stream =
        futures_util::stream::unfold((ctx, every, 0u64), |(mut ctx, mut every, n)| async move {
            tokio::select! {
                _ = every.tick() => {}
                _ = ctx.stop.wait_for(|s| *s) => return None,
            }
            let list = ctx.sup.list().await.ok()?;
            let mut out = event("processes", &list).to_vec();
            if n % 2 == 0 && list.iter().any(|p| p.mode == "balancer") {
                out.extend_from_slice(&event("balancers", &balancer_docs(&ctx, &list).await));
            }
            Some((Bytes::from(out), (ctx, every, n + 1)))
        });
    sse(stream)
}

/// `GET /balancers`: each balancer process with its admin `/status` document (null if it did not answer).
pub async fn balancers(State(ctx): State<Ctx>) -> Response {
    match ctx.sup.list().await {
        Ok(list) => Json(balancer_docs(&ctx, &list).await).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e).into_response(),
    }
}

async fn balancer_docs(ctx: &Ctx, list: &[crate::api::ProcessInfo]) -> Vec<serde_json::Value> {
    let admins = crate::daemon::metrics::balancer_admins(&ctx.sup, list).await;
    let jobs = admins.into_iter().map(|(name, instance, admin)| async move {
        let status = match &admin {
            Some(a) => crate::daemon::balancer_status::fetch_json(a).await.ok(),
            None => None,
        };
        serde_json::json!({"name": name, "instance": instance, "admin": admin, "status": status})
    });
    futures_util::future::join_all(jobs).await
}

#[derive(Deserialize)]
pub struct TailQuery {
    id: u32,
    #[serde(default = "default_lines")]
    lines: usize,
}

fn default_lines() -> usize {
    50
}

/// `GET /logs/sse?id=N&lines=50`: `line` events (a `LogLine`; backlog lines have `at` 0).
pub async fn log_tail(State(ctx): State<Ctx>, Query(q): Query<TailQuery>) -> Response {
    let files = match ctx.sup.log_files(Selector::Id(q.id)).await {
        Ok(f) => f,
        Err(e) => return (StatusCode::NOT_FOUND, e).into_response(),
    };
    // Subscribe first: a line written while the backlog is read is not lost.
    let rx = ctx.sup.hub.subscribe();
    let mut backlog = Vec::new();
    for f in &files {
        let n = q.lines.min(MAX_BACKLOG);
        for (stream, path) in [("out", &f.out), ("err", &f.err)] {
            for line in crate::home::tail::tail_lines(std::path::Path::new(path), n) {
                backlog.extend_from_slice(&event(
                    "line",
                    &LogLine {
                        id: f.id,
                        name: f.name.clone(),
                        instance: f.instance,
                        stream: stream.into(),
                        line,
                        at: 0,
                    },
                ));
            }
        }
    }
    let id = q.id;
    let first = futures_util::stream::once(async move { Bytes::from(backlog) });
    let live = futures_util::stream::unfold((ctx, rx), move |(mut ctx, mut rx)| async move {
        loop {
            let next = tokio::select! {
                r = rx.recv() => Some(r),
                _ = tokio::time::sleep(KEEPALIVE) => None,
                _ = ctx.stop.wait_for(|s| *s) => return None,
            };
            let Some(next) = next else {
                return Some((Bytes::from_static(b": keepalive\n\n"), (ctx, rx)));
            };
            match next {
                Ok(line) if line.id == id => {
                    let line: Arc<LogLine> = line;
                    return Some((event("line", &*line), (ctx, rx)));
                }
                Ok(_) => {}
                Err(RecvError::Lagged(n)) => {
                    crate::daemon::logs::count_follower_lag(n);
                    let note = serde_json::json!({"skipped": n});
                    return Some((event("skipped", &note), (ctx, rx)));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    use futures_util::StreamExt;
    sse(first.chain(live))
}
