//! The web listener: the daemon's API router served on a TCP address behind a token, plus
//! `/metrics`, the dashboard and its live streams, with the control socket's bounds
//! (`api_server.rs`: header timeout, body cap, connection cap, memory given back). Off by default; `cohort web` (or a `[web]`
//! table) turns it on in the running daemon through the Unix socket's `POST /web`. The settings
//! (token digests only) are kept in COHORT_HOME/web.json (0600) and restored when a daemon starts.
//!
//! - `auth.rs`: tokens, cookies and the access each route needs (pure);
//! - `routes.rs`: the TCP router (dashboard pages, login, `/metrics`, the API, auth middleware);
//! - `live.rs`: server-sent events (process list, balancers, log tail);
//! - `assets/`: the dashboard (hand-written HTML, CSS and JS, embedded with `include_str!`).

pub mod auth;
mod live;
mod routes;

use crate::api::web::{WebSettings, WebState};
use crate::daemon::supervisor::Handle;
use crate::home::Home;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// What a listener with these settings serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    Off,
    /// No token, loopback, public metrics: `/metrics` only.
    MetricsOnly,
    /// Everything, behind the token(s).
    Full,
}

/// Checks settings before anything binds: the address parses, and a listener without a token is
/// only allowed on loopback and only for public metrics.
pub fn check(s: &WebSettings) -> Result<(Exposure, Option<SocketAddr>), String> {
    let Some(listen) = s.listen.as_deref() else {
        return Ok((Exposure::Off, None));
    };
    let addr = parse_listen(listen)?;
    let has_token = s.token_sha256.is_some() || s.read_only_token_sha256.is_some();
    if has_token {
        return Ok((Exposure::Full, Some(addr)));
    }
    if !addr.ip().is_loopback() {
        return Err(format!(
            "refusing to listen on {listen} without a token: it is not a loopback address (give --token or --token-file)"
        ));
    }
    if !s.public_metrics {
        return Err(format!(
            "a listener on {listen} without a token would serve nothing (give --token or --token-file, or --public-metrics for /metrics alone)"
        ));
    }
    Ok((Exposure::MetricsOnly, Some(addr)))
}

/// `host:port` with an IP host (or `localhost`), e.g. `127.0.0.1:9615`, `[::1]:9615`, `0.0.0.0:9615`.
pub fn parse_listen(listen: &str) -> Result<SocketAddr, String> {
    let text = match listen.strip_prefix("localhost:") {
        Some(port) => format!("127.0.0.1:{port}"),
        None => listen.to_string(),
    };
    text.parse().map_err(|_| {
        format!("{listen:?} is not an address to listen on (write IP:PORT, e.g. 127.0.0.1:9615)")
    })
}

/// The running listener (if any) and its settings.
pub struct Web {
    sup: Handle,
    home: Home,
    api: Router,
    state: Mutex<Current>,
}

#[derive(Default)]
struct Current {
    settings: WebSettings,
    bound: Option<SocketAddr>,
    /// Ends the listener and its live streams.
    stop: Option<watch::Sender<bool>>,
}

impl Web {
    /// `api` is the daemon's API router, served again on the TCP listener.
    pub fn new(sup: Handle, home: Home, api: Router) -> Arc<Web> {
        Arc::new(Web {
            sup,
            home,
            api,
            state: Mutex::new(Current::default()),
        })
    }

    fn current(&self) -> std::sync::MutexGuard<'_, Current> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The settings and the bound address.
    pub fn state(&self) -> WebState {
        let c = self.current();
        WebState {
            settings: c.settings.clone(),
            bound: c.bound.map(|a| a.to_string()),
        }
    }

    /// Replaces the listener with one for `settings` (or none), then saves them. On failure the
    /// previous listener keeps running and nothing is saved.
    pub async fn apply(&self, settings: WebSettings) -> Result<WebState, String> {
        let (exposure, addr) = check(&settings)?;
        let old_addr = self.current().bound;
        // The same address: the old listener must let go of the port first.
        let same = addr.is_some() && addr == old_addr;
        if same || exposure == Exposure::Off {
            self.stop();
        }
        let listener = match addr {
            Some(a) => match tokio::net::TcpListener::bind(a).await {
                Ok(l) => Some(l),
                Err(e) => {
                    let msg =
                        format!("cannot listen on {a}: {e} (is the port in use? pick another one)");
                    if same {
                        // Try to put the previous listener back.
                        let prev = self.current().settings.clone();
                        if let Ok(l) = tokio::net::TcpListener::bind(a).await {
                            self.run(l, prev, exposure);
                        }
                    }
                    return Err(msg);
                }
            },
            None => None,
        };
        save(&self.home, &settings)?;
        if let Some(l) = listener {
            self.stop();
            self.run(l, settings.clone(), exposure);
        }
        self.current().settings = settings;
        Ok(self.state())
    }

    /// Starts the saved listener, if any (at daemon start); problems go to daemon.log.
    pub async fn restore(&self) {
        let settings = match load(&self.home) {
            Ok(Some(s)) => s,
            Ok(None) => return,
            Err(e) => {
                crate::report!("cohort: web listener not restored: {e}");
                return;
            }
        };
        match self.apply(settings).await {
            Ok(st) => {
                if let Some(b) = st.bound {
                    crate::report!("cohort: web listener on http://{b}/");
                }
            }
            Err(e) => crate::report!("cohort: web listener not restored: {e}"),
        }
    }

    fn stop(&self) {
        let mut c = self.current();
        if let Some(stop) = c.stop.take() {
            let _ = stop.send(true);
        }
        c.bound = None;
    }

    fn run(&self, listener: tokio::net::TcpListener, settings: WebSettings, exposure: Exposure) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let bound = listener.local_addr().ok();
        let router = routes::router(routes::Ctx {
            sup: self.sup.clone(),
            settings: Arc::new(settings),
            metrics_only: exposure == Exposure::MetricsOnly,
            stop: stop_rx.clone(),
            api: self.api.clone(),
        });
        let mut until = stop_rx;
        // The control socket's bounds: header time, body size, connection count, memory given
        // back after a burst.
        let stopped = async move {
            let _ = until.wait_for(|stop| *stop).await;
        };
        tokio::spawn(crate::daemon::api_server::serve(
            listener, router, peer_addr, stopped,
        ));
        let mut c = self.current();
        c.stop = Some(stop_tx);
        c.bound = bound;
    }
}

/// A TCP client's address, as the requests of its connection carry it (`ConnectInfo`).
fn peer_addr(stream: &tokio::net::TcpStream) -> Option<SocketAddr> {
    stream.peer_addr().ok()
}

/// COHORT_HOME/web.json.
fn settings_path(home: &Home) -> std::path::PathBuf {
    home.root.join("web.json")
}

fn load(home: &Home) -> Result<Option<WebSettings>, String> {
    let path = settings_path(home);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{}: {e} (fix or delete the file)", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Writes web.json atomically with mode 0600 (temp file, fsync, rename).
fn save(home: &Home, s: &WebSettings) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = settings_path(home);
    let tmp = home
        .root
        .join(format!(".web.json.{}.tmp", std::process::id()));
    let bytes = serde_json::to_vec_pretty(s).map_err(|e| e.to_string())?;
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot save {}: {e}", path.display())
    })
}

/// The routes the Unix socket gains: `GET /metrics`, and `GET`/`POST /web` (state, settings).
pub fn control_routes(web: Arc<Web>) -> Router {
    Router::new()
        .route("/metrics", get(unix_metrics))
        .route("/web", get(web_state).post(web_apply))
        .with_state(web)
}

async fn unix_metrics(State(web): State<Arc<Web>>) -> Response {
    routes::metrics_response(&web.sup).await
}

async fn web_state(State(web): State<Arc<Web>>) -> Response {
    Json(web.state()).into_response()
}

async fn web_apply(State(web): State<Arc<Web>>, Json(s): Json<WebSettings>) -> Response {
    match web.apply(s).await {
        Ok(st) => Json(st).into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(crate::api::ErrorReply { error: e }),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::web::token_digest;

    fn s(listen: Option<&str>, token: bool, public: bool) -> WebSettings {
        WebSettings {
            listen: listen.map(String::from),
            token_sha256: token.then(|| token_digest("t")),
            read_only_token_sha256: None,
            public_metrics: public,
        }
    }

    #[test]
    fn settings_checks() {
        // (listen, token, public_metrics, exposure or error)
        type Case<'a> = (Option<&'a str>, bool, bool, Result<Exposure, &'a str>);
        let cases: [Case; 9] = [
            (None, false, false, Ok(Exposure::Off)),
            (None, true, true, Ok(Exposure::Off)),
            (Some("127.0.0.1:9615"), true, false, Ok(Exposure::Full)),
            (Some("0.0.0.0:9615"), true, true, Ok(Exposure::Full)),
            (Some("[::1]:0"), false, true, Ok(Exposure::MetricsOnly)),
            (
                Some("localhost:9615"),
                false,
                true,
                Ok(Exposure::MetricsOnly),
            ),
            (
                Some("0.0.0.0:9615"),
                false,
                true,
                Err("not a loopback address"),
            ),
            (
                Some("127.0.0.1:9615"),
                false,
                false,
                Err("would serve nothing"),
            ),
            (Some("example.com:80"), true, false, Err("not an address")),
        ];
        for (listen, token, public, want) in cases {
            let got = check(&s(listen, token, public)).map(|(e, _)| e);
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{listen:?}"),
                (Err(g), Err(w)) => assert!(g.contains(w), "{listen:?}: {g}"),
                (g, w) => panic!("{listen:?}: got {g:?}, want {w:?}"),
            }
        }
    }
}
