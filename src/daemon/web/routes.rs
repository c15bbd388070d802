//! The TCP listener's router: the dashboard (`/`, `/assets/*`), the login form, `/metrics`, the
//! live streams, and the daemon's JSON API, all behind the auth middleware (auth.rs decides).

use super::auth::{self, Access, Decision};
use super::live;
use crate::api::web::WebSettings;
use crate::daemon::supervisor::Handle;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;
use tokio::sync::watch;

/// Everything a route of one listener needs.
#[derive(Clone)]
pub struct Ctx {
    pub sup: Handle,
    pub settings: Arc<WebSettings>,
    /// No token configured: only `/metrics` is served.
    pub metrics_only: bool,
    /// Becomes true when this listener is replaced or turned off (live streams end).
    pub stop: watch::Receiver<bool>,
    /// The daemon's API router.
    pub api: Router,
}

/// The dashboard, embedded (hand-written, no build step).
const INDEX_HTML: &str = include_str!("assets/index.html");
const LOGIN_HTML: &str = include_str!("assets/login.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// Scripts and styles come from this origin only; no inline script.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'";

pub fn router(ctx: Ctx) -> Router {
    if ctx.metrics_only {
        return Router::new()
            .route("/metrics", get(metrics))
            .with_state(ctx);
    }
    let api = ctx.api.clone();
    Router::new()
        .route("/", get(index))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/assets/{file}", get(asset))
        .route("/metrics", get(metrics))
        .route("/events", get(live::events))
        .route("/logs/sse", get(live::log_tail))
        .route("/balancers", get(live::balancers))
        .with_state(ctx.clone())
        .merge(api)
        .layer(axum::middleware::from_fn_with_state(ctx, check_access))
}

/// The auth middleware: lets the request through, or answers 401/403 or the login redirect.
async fn check_access(State(ctx): State<Ctx>, req: Request, next: Next) -> Response {
    let h = req.headers();
    let need = auth::need_of(req.method().as_str(), req.uri().path());
    let token = auth::presented_token(text(h, header::AUTHORIZATION), text(h, header::COOKIE));
    let access = auth::access_of(token.as_deref(), &ctx.settings);
    let wants_html = text(h, header::ACCEPT).is_some_and(|a| a.contains("text/html"));
    let cross = auth::is_cross_site(text(h, header::ORIGIN), text(h, header::HOST));
    match auth::decide(need, access, ctx.settings.public_metrics, wants_html, cross) {
        Decision::Allow => next.run(req).await,
        Decision::Login => redirect("/login"),
        Decision::Unauthorized => json_error(
            StatusCode::UNAUTHORIZED,
            "a token is needed (send Authorization: Bearer TOKEN, or log in at /login)",
        ),
        Decision::Forbidden if cross => json_error(
            StatusCode::FORBIDDEN,
            "cross-site request refused (use the dashboard on this host)",
        ),
        Decision::Forbidden => json_error(
            StatusCode::FORBIDDEN,
            "this token may only read (actions need the full token)",
        ),
    }
}

fn text(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn json_error(code: StatusCode, msg: &str) -> Response {
    (
        code,
        axum::Json(crate::api::ErrorReply { error: msg.into() }),
    )
        .into_response()
}

fn redirect(to: &'static str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response()
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX_HTML)
}

async fn login_page() -> Response {
    page("text/html; charset=utf-8", LOGIN_HTML)
}

async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    match file.as_str() {
        "app.js" => page("text/javascript; charset=utf-8", APP_JS),
        "style.css" => page("text/css; charset=utf-8", STYLE_CSS),
        _ => json_error(StatusCode::NOT_FOUND, "no such asset"),
    }
}

/// The login form: a valid token sets the HttpOnly cookie and goes to the dashboard.
async fn login(State(ctx): State<Ctx>, body: String) -> Response {
    let token = auth::form_token(&body).unwrap_or_default();
    if auth::access_of(Some(&token), &ctx.settings) == Access::None {
        return (
            StatusCode::SEE_OTHER,
            [(header::LOCATION, "/login?failed=1")],
        )
            .into_response();
    }
    let mut resp = redirect("/");
    if let Ok(v) = HeaderValue::from_str(&auth::cookie_header(&token)) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

async fn logout() -> Response {
    let mut resp = redirect("/login");
    if let Ok(v) = HeaderValue::from_str(&auth::cookie_header("")) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

async fn metrics(State(ctx): State<Ctx>) -> Response {
    metrics_response(&ctx.sup).await
}

/// `/metrics` on either listener.
pub async fn metrics_response(sup: &Handle) -> Response {
    match crate::daemon::metrics::scrape(sup).await {
        Ok(text) => Response::builder()
            .header(header::CONTENT_TYPE, crate::daemon::metrics::CONTENT_TYPE)
            .body(Body::from(text))
            .unwrap_or_else(|_| {
                json_error(StatusCode::INTERNAL_SERVER_ERROR, "cannot build the reply")
            }),
        Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, &e),
    }
}
