//! The admin endpoint: `GET /status` answers the balancer's per-upstream counters and health as
//! JSON (shape in docs/balancer.md). Plain HTTP/1.1; bind it to loopback.

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
                    let (code, body) =
                        if req.method() == Method::GET && req.uri().path() == "/status" {
                            (StatusCode::OK, status(&shared).to_string())
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
