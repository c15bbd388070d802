//! The admin endpoint: `GET /status` answers the balancer's per-upstream counters and health as
//! JSON (shape in docs/balancer.md); `PUT /ready` is how the daemon holds out an `app:NAME`
//! upstream that is not ready. Plain HTTP/1.1; bind it to loopback.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::shared::Shared;
use crate::config::balancer::{Mode, Strategy};

/// The status document.
pub fn status(shared: &Shared) -> serde_json::Value {
    let s = &shared.settings;
    let mode = match s.mode {
        Mode::Http => "http",
        Mode::Tcp => "tcp",
    };
    let strategy = match s.strategy {
        Strategy::RoundRobin => "round_robin",
        Strategy::LeastConn => "least_conn",
        Strategy::Random => "random",
        Strategy::Hash => "hash",
    };
    shared.pool.status_json(&s.name, mode, strategy, &s.listen)
}

/// The variable through which the daemon gives a balancer it starts the token of `PUT /ready`.
pub const READY_TOKEN_ENV: &str = "COHORT_BALANCER_TOKEN";
/// The header that carries it.
pub const READY_TOKEN_HEADER: &str = "x-cohort-token";

static READY_TOKEN: std::sync::LazyLock<Option<String>> = std::sync::LazyLock::new(|| {
    std::env::var(READY_TOKEN_ENV)
        .ok()
        .filter(|t| t.len() >= 16)
});

/// `PUT /ready?upstream=ADDR&ready=false[&flush=1]`: the daemon holds out (or lets back) the
/// upstreams at ADDR, an `app:NAME` whose every process fails its readiness probe; `flush` closes
/// their idle keep-alive connections (a worker of it stopped being ready). docs/health.md.
fn set_ready(shared: &Shared, query: &str) -> (StatusCode, String) {
    let mut upstream = None;
    let mut ready = None;
    let mut flush = false;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("flush", "true" | "1")) => flush = true,
            Some(("upstream", v)) => upstream = Some(v.replace("%3A", ":").replace("%3a", ":")),
            Some(("ready", "true" | "1")) => ready = Some(true),
            Some(("ready", "false" | "0")) => ready = Some(false),
            _ => {}
        }
    }
    let (Some(upstream), Some(ready)) = (upstream, ready) else {
        return (
            StatusCode::BAD_REQUEST,
            r#"{"error":"expected ?upstream=HOST:PORT&ready=true|false"}"#.to_string(),
        );
    };
    match shared.pool.set_held(&upstream, !ready, flush) {
        0 => (
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": format!("no upstream {upstream}")}).to_string(),
        ),
        n => (
            StatusCode::OK,
            serde_json::json!({"upstream": upstream, "ready": ready, "matched": n}).to_string(),
        ),
    }
}

/// Serves the admin endpoint until shutdown.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let shared = shared.clone();
                async move {
                    let (code, body) = if req.method() == Method::GET
                        && req.uri().path() == "/status"
                    {
                        (StatusCode::OK, status(&shared).to_string())
                    } else if req.method() == Method::PUT && req.uri().path() == "/ready" {
                        // Only the daemon that started this balancer knows the token (its
                        // environment); without one, nobody may hold upstreams out.
                        let given = req
                            .headers()
                            .get(READY_TOKEN_HEADER)
                            .and_then(|v| v.to_str().ok());
                        match (&*READY_TOKEN, given) {
                                (Some(t), Some(g)) if t == g => {
                                    set_ready(&shared, req.uri().query().unwrap_or(""))
                                }
                                _ => (
                                    StatusCode::FORBIDDEN,
                                    r#"{"error":"PUT /ready is for the cohort daemon (token missing or wrong)"}"#
                                        .to_string(),
                                ),
                            }
                    } else {
                        (
                            StatusCode::NOT_FOUND,
                            r#"{"error":"not found (try GET /status)"}"#.to_string(),
                        )
                    };
                    let mut resp = Response::new(Full::new(Bytes::from(body)));
                    *resp.status_mut() = code;
                    resp.headers_mut().insert(
                        header::CONTENT_TYPE,
                        header::HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
