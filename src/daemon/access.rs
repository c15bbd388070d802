//! Who may use the control API: every connection to cohort.sock carries its peer's credentials
//! (SO_PEERCRED, taken by the kernel at connect time), and every request is checked against them
//! before any route runs. The daemon's own uid and root are the owner; members of the group named
//! by `cohort access --group` get full control, or only a look with `--read-only`; anyone else is
//! refused with 403 and a line in daemon.log.
//!
//! Routes are classified by an allow-list (`route_level`): the few that only read are named there,
//! everything else (including any route added later and forgotten here) needs control. Env values
//! are hidden from read-only peers. The decisions are pure functions, table-tested below.

use crate::api::{AccessReply, ErrorReply};
use crate::home::access::{self, GroupAccess};
use crate::home::Home;
use axum::extract::connect_info::{ConnectInfo, Connected, IntoMakeServiceWithConnectInfo};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// The credentials of the process at the other end of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

/// Credentials that can't be read count as nobody's (refused unless... never).
const UNKNOWN: Peer = Peer {
    uid: u32::MAX,
    gid: u32::MAX,
    pid: None,
};

impl Connected<axum::serve::IncomingStream<'_, tokio::net::UnixListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::UnixListener>) -> Peer {
        match stream.io().peer_cred() {
            Ok(c) => Peer {
                uid: c.uid(),
                gid: c.gid(),
                pid: c.pid(),
            },
            Err(_) => UNKNOWN,
        }
    }
}

/// What a request needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Looks only: ls, describe, logs, ping.
    Read,
    /// Starts, stops, changes anything (runs commands as the daemon's user).
    Control,
    /// Changes who has access: the owner and root only.
    Owner,
}

/// What a peer may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The daemon's uid, or root.
    Owner,
    /// A member of the shared group.
    Control,
    /// A member of the shared group, `--read-only`.
    ReadOnly,
}

/// The routes that only read. Anything not listed needs control: a new route is safe by default.
const READ_ROUTES: &[(&str, &str)] = &[
    ("GET", "/ping"),
    ("GET", "/processes"),
    ("GET", "/access"),
    ("POST", "/describe"),
    ("POST", "/logs/files"),
    ("POST", "/logs/stream"),
    ("POST", "/history"),
    ("GET", "/metrics"),
    ("GET", "/web"),
    // Values hidden from read-only peers (`HIDDEN_VALUES`).
    ("POST", "/env"),
];

/// The routes only the owner (or root) may call.
const OWNER_ROUTES: &[(&str, &str)] = &[("POST", "/access"), ("POST", "/web")];

/// Read routes whose answer is an object of secrets: read-only peers get the keys, not the values.
const HIDDEN_VALUES: &[&str] = &["/env"];

/// What the request `method path` needs.
pub fn route_level(method: &str, path: &str) -> Level {
    let listed = |table: &[(&str, &str)]| table.iter().any(|(m, p)| *m == method && *p == path);
    if listed(OWNER_ROUTES) {
        Level::Owner
    } else if listed(READ_ROUTES) {
        Level::Read
    } else {
        Level::Control
    }
}

/// The role of a peer with `uid` in `groups` (primary and supplementary), or `None` (refused).
pub fn role(
    uid: u32,
    groups: &[u32],
    daemon_uid: u32,
    shared: Option<&GroupAccess>,
) -> Option<Role> {
    if uid == daemon_uid || uid == 0 {
        return Some(Role::Owner);
    }
    let shared = shared?;
    groups.contains(&shared.gid).then_some(if shared.read_only {
        Role::ReadOnly
    } else {
        Role::Control
    })
}

/// Whether `role` may make a request that needs `level`.
pub fn permits(role: Role, level: Level) -> bool {
    match role {
        Role::Owner => true,
        Role::Control => level <= Level::Control,
        Role::ReadOnly => level == Level::Read,
    }
}

/// The supplementary groups in a `/proc/<pid>/status`, if its effective uid is `uid` (a pid
/// reused by another user's process since it connected counts as no groups).
pub fn groups_from_status(status: &str, uid: u32) -> Vec<u32> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|rest| {
                rest.split_whitespace()
                    .filter_map(|w| w.parse::<u32>().ok())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    if field("Uid:").get(1) != Some(&uid) {
        return Vec::new();
    }
    field("Groups:")
}

/// The peer's groups: its gid at connect time and the supplementary groups of its process.
fn peer_groups(peer: &Peer) -> Vec<u32> {
    let mut groups = vec![peer.gid];
    if let Some(pid) = peer.pid {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            groups.extend(groups_from_status(&status, peer.uid));
        }
    }
    groups
}

/// The daemon's access state: its uid and the current group setting.
pub struct Gate {
    home: Home,
    daemon_uid: u32,
    shared: RwLock<Option<GroupAccess>>,
    log_budget: Mutex<LogBudget>,
}

/// At most `LOG_BURST` refusal lines per minute in daemon.log (a refused user can't fill the disk).
struct LogBudget {
    window: Instant,
    logged: u32,
    dropped: u32,
}

const LOG_BURST: u32 = 20;

impl Gate {
    fn shared(&self) -> Option<GroupAccess> {
        self.shared
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn log_refusal(&self, line: String) {
        let mut b = self.log_budget.lock().unwrap_or_else(|e| e.into_inner());
        if b.window.elapsed() > Duration::from_secs(60) {
            if b.dropped > 0 {
                eprintln!(
                    "cohort: {} more refusals in the last minute not logged",
                    b.dropped
                );
            }
            *b = LogBudget {
                window: Instant::now(),
                logged: 0,
                dropped: 0,
            };
        }
        if b.logged < LOG_BURST {
            b.logged += 1;
            eprintln!("{line}");
        } else {
            b.dropped += 1;
        }
    }

    /// Why `peer` can't make a request that needs `level` (the text the CLI prints).
    fn refusal(&self, peer: &Peer, role: Option<Role>, level: Level) -> String {
        let owner = self.daemon_uid;
        let shared = self.shared();
        match (role, &shared) {
            (None, None) => format!(
                "uid {} may not use the cohort daemon of {} (only its owner, uid {owner}, and root may; the owner can share it with `cohort access --group NAME`)",
                peer.uid,
                self.home.root.display()
            ),
            (None, Some(s)) => format!(
                "uid {} may not use the cohort daemon of {} (only its owner, uid {owner}, root and members of group {} may; ask the owner to add you to that group)",
                peer.uid,
                self.home.root.display(),
                s.group
            ),
            (Some(Role::ReadOnly), _) if level == Level::Control => format!(
                "read-only access: members of group {} may look (ls, describe, logs) but not change anything (ask the owner, uid {owner}, for `cohort access --group {}` without --read-only)",
                shared.as_ref().map(|s| s.group.as_str()).unwrap_or("?"),
                shared.as_ref().map(|s| s.group.as_str()).unwrap_or("NAME"),
            ),
            _ => format!(
                "only the owner (uid {owner}) or root can change who has access to this daemon (ask them to run `cohort access`)"
            ),
        }
    }
}

/// Wraps the API router: every request is checked against its peer's credentials, and the
/// `/access` routes are added. Serve the result with `axum::serve(listener, service)`.
pub fn protect(
    router: Router,
    home: &Home,
) -> anyhow::Result<IntoMakeServiceWithConnectInfo<Router, Peer>> {
    let gate = Arc::new(Gate {
        home: home.clone(),
        daemon_uid: nix::unistd::geteuid().as_raw(),
        shared: RwLock::new(access::load(home)?),
        log_budget: Mutex::new(LogBudget {
            window: Instant::now(),
            logged: 0,
            dropped: 0,
        }),
    });
    let routes = Router::new()
        .route("/access", get(show).post(change))
        .with_state(gate.clone());
    Ok(router
        .merge(routes)
        .layer(axum::middleware::from_fn_with_state(gate, check))
        .into_make_service_with_connect_info::<Peer>())
}

/// The check in front of every route.
async fn check(State(gate): State<Arc<Gate>>, req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .map(|ConnectInfo(p)| *p)
        .unwrap_or(UNKNOWN);
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let level = route_level(method.as_str(), &path);
    let shared = gate.shared();
    let groups = if peer.uid == gate.daemon_uid || peer.uid == 0 || shared.is_none() {
        vec![peer.gid]
    } else {
        peer_groups(&peer)
    };
    let role = role(peer.uid, &groups, gate.daemon_uid, shared.as_ref());
    if !role.is_some_and(|r| permits(r, level)) {
        let why = gate.refusal(&peer, role, level);
        gate.log_refusal(format!(
            "cohort: refused uid {} (pid {}) {method} {path}: {why}",
            peer.uid,
            peer.pid
                .map(|p| p.to_string())
                .unwrap_or_else(|| "?".into())
        ));
        return (StatusCode::FORBIDDEN, Json(ErrorReply { error: why })).into_response();
    }
    let hide = role == Some(Role::ReadOnly)
        && method == Method::POST
        && HIDDEN_VALUES.contains(&path.as_str());
    let resp = next.run(req).await;
    if hide {
        hide_values(resp).await
    } else {
        resp
    }
}

/// Replaces every value of a JSON object answer with a placeholder (read-only peers see keys).
async fn hide_values(resp: Response) -> Response {
    let (parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 16 << 20).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let hidden = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(map)) if parts.status.is_success() => {
            let map: serde_json::Map<String, serde_json::Value> = map
                .into_iter()
                .map(|(k, _)| (k, serde_json::Value::String(HIDDEN.into())))
                .collect();
            serde_json::to_vec(&map).unwrap_or_default()
        }
        _ => bytes.to_vec(),
    };
    Response::from_parts(parts, axum::body::Body::from(hidden))
}

/// What read-only peers see instead of an env value.
pub const HIDDEN: &str = "(hidden: read-only access)";

async fn show(State(gate): State<Arc<Gate>>) -> Response {
    Json(AccessReply {
        owner_uid: gate.daemon_uid,
        shared: gate.shared(),
    })
    .into_response()
}

async fn change(
    State(gate): State<Arc<Gate>>,
    Json(shared): Json<Option<GroupAccess>>,
) -> Response {
    match access::store(&gate.home, shared.as_ref()) {
        Ok(()) => {
            eprintln!(
                "cohort: access now: owner, root{}",
                shared
                    .as_ref()
                    .map(|s| format!(" and {}", s.describe()))
                    .unwrap_or_default()
            );
            *gate.shared.write().unwrap_or_else(|e| e.into_inner()) = shared.clone();
            Json(AccessReply {
                owner_uid: gate.daemon_uid,
                shared,
            })
            .into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(ErrorReply {
                error: format!("{e:#}"),
            }),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_read_only_when_listed_and_control_otherwise() {
        let cases = [
            ("GET", "/ping", Level::Read),
            ("GET", "/processes", Level::Read),
            ("POST", "/describe", Level::Read),
            ("POST", "/logs/files", Level::Read),
            ("POST", "/logs/stream", Level::Read),
            ("POST", "/history", Level::Read),
            ("POST", "/env", Level::Read),
            ("GET", "/access", Level::Read),
            ("POST", "/access", Level::Owner),
            ("POST", "/start", Level::Control),
            ("POST", "/action", Level::Control),
            ("POST", "/scale", Level::Control),
            ("POST", "/save", Level::Control),
            ("POST", "/resurrect", Level::Control),
            ("POST", "/kill", Level::Control),
            // Same path, another method; unknown and future routes: control.
            ("POST", "/processes", Level::Control),
            ("DELETE", "/ping", Level::Control),
            ("GET", "/some/new/route", Level::Control),
            ("GET", "/ping/", Level::Control),
        ];
        for (method, path, want) in cases {
            assert_eq!(route_level(method, path), want, "{method} {path}");
        }
    }

    #[test]
    fn roles_and_what_they_permit() {
        let group = |read_only| GroupAccess {
            group: "deploy".into(),
            gid: 50,
            read_only,
        };
        let (rw, ro) = (group(false), group(true));
        type Case<'a> = (u32, &'a [u32], Option<&'a GroupAccess>, Option<Role>);
        let cases: &[Case] = &[
            // (peer uid, its groups, shared group, role) for a daemon running as uid 1000
            (1000, &[1000], None, Some(Role::Owner)),
            (0, &[0], None, Some(Role::Owner)),
            (1001, &[1001], None, None),
            (1001, &[50], None, None),
            (1001, &[1001, 50], Some(&rw), Some(Role::Control)),
            (1001, &[1001, 50], Some(&ro), Some(Role::ReadOnly)),
            (1001, &[1001, 51], Some(&rw), None),
            (1000, &[1000], Some(&ro), Some(Role::Owner)),
        ];
        for &(uid, groups, shared, want) in cases {
            assert_eq!(
                role(uid, groups, 1000, shared),
                want,
                "uid {uid} groups {groups:?}"
            );
        }
        let permits_cases = [
            (Role::Owner, Level::Owner, true),
            (Role::Owner, Level::Control, true),
            (Role::Control, Level::Control, true),
            (Role::Control, Level::Read, true),
            (Role::Control, Level::Owner, false),
            (Role::ReadOnly, Level::Read, true),
            (Role::ReadOnly, Level::Control, false),
            (Role::ReadOnly, Level::Owner, false),
        ];
        for (r, level, want) in permits_cases {
            assert_eq!(permits(r, level), want, "{r:?} {level:?}");
        }
    }

    #[test]
    fn supplementary_groups_come_from_proc_status_of_the_same_user() {
        let status = "Name:\tcohort\nUid:\t1001\t1001\t1001\t1001\nGid:\t1001\t1001\t1001\t1001\nGroups:\t50 60 \n";
        assert_eq!(groups_from_status(status, 1001), vec![50, 60]);
        // The pid now belongs to someone else: no groups taken from it.
        assert_eq!(groups_from_status(status, 1002), Vec::<u32>::new());
        let none = "Uid:\t7\t7\t7\t7\nGroups:\t\n";
        assert_eq!(groups_from_status(none, 7), Vec::<u32>::new());
    }
}
