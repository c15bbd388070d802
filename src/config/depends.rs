//! `depends_on`: which apps an app waits for before it starts, and for what (Compose's and
//! process-compose's conditions), plus the pure ordering rules built on it: start levels (a
//! topological sort that names a cycle), and the waves a stop goes in (dependents first).
//!
//! Written in any config format as a list (`depends_on = ["redis"]`: each waits for `ready` when the
//! dependency has a readiness probe, else for `started`) or a table of conditions
//! (`depends_on = { redis = "ready", migrate = "completed_successfully" }`); `depends_timeout`
//! bounds the wait (default [`DEFAULT_TIMEOUT_MS`]). The waiting itself is the supervisor's
//! (`daemon/supervisor/gates.rs`), so it holds for `start`, `restart`, `resurrect` and `cohort run`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// How long an app waits for its dependencies when `depends_timeout` is not given.
pub const DEFAULT_TIMEOUT_MS: u64 = 60_000;

/// What a dependency must reach before the app that depends on it starts.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// Every process of the dependency runs (spawned, not crashed).
    Started,
    /// Every process of the dependency serves: online, its readiness signal came, and its
    /// readiness probe (if any) passes. Compose calls it `healthy`.
    Ready,
    /// Every process of the dependency ran once and exited with code 0 (a migration, a build).
    CompletedSuccessfully,
}

impl Condition {
    /// The condition's name as written in a config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Started => "started",
            Condition::Ready => "ready",
            Condition::CompletedSuccessfully => "completed_successfully",
        }
    }

    /// Parses a condition; Compose's (`service_healthy`) and process-compose's
    /// (`process_healthy`) spellings are accepted too.
    pub fn parse(text: &str) -> Result<Condition, String> {
        let t = text.trim();
        let bare = t
            .strip_prefix("service_")
            .or_else(|| t.strip_prefix("process_"))
            .unwrap_or(t);
        match bare {
            "started" => Ok(Condition::Started),
            "ready" | "healthy" => Ok(Condition::Ready),
            "completed_successfully" => Ok(Condition::CompletedSuccessfully),
            _ => Err(format!(
                "{t:?} is not a condition (use \"started\", \"ready\" (or \"healthy\") or \"completed_successfully\")"
            )),
        }
    }
}

/// One entry of `depends_on`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Dependency {
    /// The app waited for.
    pub app: String,
    /// None: the list form's default, resolved against the dependency's spec when the wait
    /// begins (`ready` if it has a readiness probe, else `started`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Condition>,
    /// Added by cohort, not written by the user: a balancer waits for the apps of its `app:NAME`
    /// upstreams to have started (and is stopped before them).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub implicit: bool,
}

impl Dependency {
    /// The condition waited for, given whether the dependency has a readiness probe.
    pub fn effective(&self, has_readiness_probe: bool) -> Condition {
        self.condition.unwrap_or(if has_readiness_probe {
            Condition::Ready
        } else {
            Condition::Started
        })
    }
}

/// Reads `depends_on` (a name, a list of names, or a table of name → condition; a condition may
/// also be Compose's long form `{ condition = "…" }`) for app `app` at `at`.
pub fn parse(value: &Value, app: &str, at: &str) -> Result<Vec<Dependency>, String> {
    let expected = "a list of app names, or a table of app name = condition";
    let mut out: Vec<Dependency> = Vec::new();
    let mut push = |name: &str, condition: Option<Condition>| -> Result<(), String> {
        let name = name.trim();
        super::validate::name(name).map_err(|e| format!("{at}.depends_on: {e}"))?;
        if name == app {
            return Err(format!(
                "{at}.depends_on: app {app:?} depends on itself (remove {name:?} from its depends_on)"
            ));
        }
        if out.iter().any(|d| d.app == name) {
            return Err(format!(
                "{at}.depends_on: {name:?} is listed twice (list each dependency once)"
            ));
        }
        out.push(Dependency {
            app: name.to_string(),
            condition,
            implicit: false,
        });
        Ok(())
    };
    match value {
        Value::Null => {}
        Value::String(s) => push(s, None)?,
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::String(s) => push(s, None)?,
                    other => {
                        return Err(format!(
                            "{at}.depends_on: expected app names in the list, got {}",
                            kind(other)
                        ))
                    }
                }
            }
        }
        Value::Object(map) => {
            for (name, cond) in map {
                let condition =
                    condition_of(cond).map_err(|e| format!("{at}.depends_on.{name}: {e}"))?;
                push(name, Some(condition))?;
            }
        }
        other => {
            return Err(format!(
                "{at}.depends_on: expected {expected}, got {}",
                kind(other)
            ))
        }
    }
    Ok(out)
}

/// A condition as a string, or Compose's `{ condition = "…" }`.
fn condition_of(value: &Value) -> Result<Condition, String> {
    match value {
        Value::String(s) => Condition::parse(s),
        Value::Object(o) => match o.get("condition") {
            Some(Value::String(s)) => {
                if let Some(k) = o.keys().find(|k| *k != "condition") {
                    return Err(format!(
                        "unknown field {k:?} (only \"condition\" is read; restart and required are Compose's, not cohort's)"
                    ));
                }
                Condition::parse(s)
            }
            _ => Err(
                "expected { condition = \"started\" | \"ready\" | \"completed_successfully\" }"
                    .into(),
            ),
        },
        other => Err(format!(
            "expected \"started\", \"ready\" or \"completed_successfully\", got {}",
            kind(other)
        )),
    }
}

fn kind(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a table".into(),
        other => other.to_string(),
    }
}

/// The `depends_on` and `depends_timeout` fields of an app object (already renamed to canonical
/// field names), for app `app` at `at`: (dependencies, timeout in ms if given).
pub fn from_fields(
    obj: &Map<String, Value>,
    app: &str,
    at: &str,
) -> Result<(Vec<Dependency>, Option<u64>), String> {
    let deps = match obj.get("depends_on") {
        Some(v) => parse(v, app, at)?,
        None => Vec::new(),
    };
    let timeout = match obj.get("depends_timeout") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_f64().is_some_and(|f| f > 0.0) => n.as_f64().map(|f| f as u64),
        Some(Value::String(s)) => Some(
            super::duration::parse_ms(s)
                .ok()
                .filter(|ms| *ms > 0)
                .ok_or_else(|| format!("{at}.depends_timeout: expected a duration above 0 (\"60s\", \"2m\", or milliseconds), got {s:?}"))?,
        ),
        Some(other) => {
            return Err(format!(
                "{at}.depends_timeout: expected a duration above 0 (\"60s\", \"2m\", or milliseconds), got {}",
                kind(other)
            ))
        }
    };
    Ok((deps, timeout))
}

/// `60s`, `1.5s`, `250ms`: a timeout as a message shows it.
pub fn show_ms(ms: u64) -> String {
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else if ms > 1000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{ms}ms")
    }
}

impl super::AppSpec {
    /// True when the app declares a readiness probe (a list-form `depends_on` entry then waits
    /// for `ready`, else for `started`).
    pub fn has_readiness_probe(&self) -> bool {
        self.readiness.is_some()
    }
}

/// The dependency graph: app name → the names it depends on.
pub type Graph = BTreeMap<String, Vec<String>>;

/// Apps by start level: level 0 depends on nothing, level k only on levels below k. Apps of one
/// level may start in parallel. Names a graph refers to but does not hold count as level -1
/// (they run already). A cycle is an error naming it: `dependency cycle: a → b → a`.
pub fn start_levels(graph: &Graph) -> Result<Vec<Vec<String>>, String> {
    if let Some(cycle) = find_cycle(graph) {
        return Err(format!(
            "dependency cycle: {} (remove one of these depends_on entries)",
            cycle.join(" → ")
        ));
    }
    let mut level: BTreeMap<&str, usize> = BTreeMap::new();
    fn depth<'a>(g: &'a Graph, n: &'a str, memo: &mut BTreeMap<&'a str, usize>) -> usize {
        if let Some(d) = memo.get(n) {
            return *d;
        }
        let d = g
            .get(n)
            .map(|deps| {
                deps.iter()
                    .filter(|d| g.contains_key(d.as_str()))
                    .map(|d| depth(g, d, memo) + 1)
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        memo.insert(n, d);
        d
    }
    for n in graph.keys() {
        depth(graph, n, &mut level);
    }
    let mut levels: Vec<Vec<String>> = Vec::new();
    for (n, d) in level {
        if levels.len() <= d {
            levels.resize(d + 1, Vec::new());
        }
        levels[d].push(n.to_string());
    }
    Ok(levels)
}

/// The first cycle found (as a path that ends where it starts), if any.
pub fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit<'a>(
        g: &'a Graph,
        n: &'a str,
        marks: &mut BTreeMap<&'a str, Mark>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match marks.get(n) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let from = path.iter().position(|p| *p == n).unwrap_or(0);
                let mut cycle: Vec<String> = path[from..].iter().map(|s| s.to_string()).collect();
                cycle.push(n.to_string());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(n, Mark::Open);
        path.push(n);
        for d in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(g, d, marks, path) {
                return Some(c);
            }
        }
        path.pop();
        marks.insert(n, Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for n in graph.keys() {
        let mut path = Vec::new();
        if let Some(c) = visit(graph, n, &mut marks, &mut path) {
            return Some(c);
        }
    }
    None
}

/// The waves a stop of `selected` apps goes in: an app is stopped only once every selected app
/// that depends on it (directly, or through apps that are not selected) has stopped. Wave 0
/// holds the apps no selected app depends on. Apps outside `graph` are in wave 0.
pub fn stop_waves(graph: &Graph, selected: &BTreeSet<String>) -> Vec<Vec<String>> {
    // dependents: name → apps that depend on it.
    let mut dependents: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (app, deps) in graph {
        for d in deps {
            dependents.entry(d.as_str()).or_default().push(app.as_str());
        }
    }
    // height(n) = 1 + the largest height of a selected app depending on n (transitively), else 0.
    fn height<'a>(
        n: &'a str,
        dependents: &BTreeMap<&'a str, Vec<&'a str>>,
        selected: &BTreeSet<String>,
        memo: &mut BTreeMap<&'a str, Option<usize>>,
        seen: &mut BTreeSet<&'a str>,
    ) -> Option<usize> {
        // None: no selected app above n.
        if let Some(h) = memo.get(n) {
            return *h;
        }
        if !seen.insert(n) {
            return None; // a cycle (refused at load time): stop what we can
        }
        let mut best: Option<usize> = None;
        for up in dependents.get(n).into_iter().flatten() {
            let above = height(up, dependents, selected, memo, seen);
            let h = match (selected.contains(*up), above) {
                (true, Some(a)) => Some(a + 1),
                (true, None) => Some(0),
                (false, a) => a,
            };
            best = best.max(h);
        }
        memo.insert(n, best);
        best
    }
    let mut memo = BTreeMap::new();
    let mut waves: Vec<Vec<String>> = Vec::new();
    for n in selected {
        let mut seen = BTreeSet::new();
        let w = height(n, &dependents, selected, &mut memo, &mut seen).map_or(0, |h| h + 1);
        if waves.len() <= w {
            waves.resize(w + 1, Vec::new());
        }
        waves[w].push(n.clone());
    }
    waves.retain(|w| !w.is_empty());
    waves
}

/// Checks the dependencies of `apps` (a config file's, or a start's) against each other and
/// against `running` (apps the daemon already has, with their dependencies): every name exists
/// and there is no cycle. Messages name both apps.
pub fn check(apps: &[(&str, &[Dependency])], running: &Graph) -> Result<(), String> {
    let mut graph: Graph = running.clone();
    for (name, deps) in apps {
        graph.insert(
            name.to_string(),
            deps.iter().map(|d| d.app.clone()).collect(),
        );
    }
    for (name, deps) in apps {
        for d in deps.iter() {
            if !graph.contains_key(&d.app) {
                return Err(if d.implicit {
                    format!(
                        "balancer {name:?} sends to app:{}, which is not in this config (declare an app named {:?} in it, or start it first)",
                        d.app, d.app
                    )
                } else {
                    format!(
                        "app {name:?} depends on {:?}, which is not in this config (declare an app named {:?} in it, or start it first: an app already running in the daemon counts)",
                        d.app, d.app
                    )
                });
            }
        }
    }
    start_levels(&graph).map(|_| ())
}

/// The graph of a list of (name, dependencies).
pub fn graph<'a>(apps: impl IntoIterator<Item = (&'a str, &'a [Dependency])>) -> Graph {
    apps.into_iter()
        .map(|(n, deps)| (n.to_string(), deps.iter().map(|d| d.app.clone()).collect()))
        .collect()
}

/// A config file's own rules, checked without a daemon: no cycle among its apps, and a one-shot
/// dependency (`completed_successfully`) is not restarted when it exits (`autorestart = false` is
/// implied; an explicit `autorestart = true` on it is an error). Names not in the file are left
/// to the daemon (they may name apps that run already). `explicit_autorestart` lists the apps
/// that wrote `autorestart = true`.
pub fn check_file(
    apps: &mut [super::AppSpec],
    explicit_autorestart: &BTreeSet<String>,
) -> Result<(), String> {
    if let Some(a) = apps
        .iter()
        .find(|a| a.depends_timeout_ms.is_some() && a.depends_on.is_empty())
    {
        return Err(format!(
            "app {:?} sets depends_timeout but depends on nothing (add depends_on, or remove depends_timeout)",
            a.name
        ));
    }
    let g = graph(
        apps.iter()
            .map(|a| (a.name.as_str(), a.depends_on.as_slice())),
    );
    let own: Graph = g
        .iter()
        .map(|(n, deps)| {
            let deps = deps
                .iter()
                .filter(|d| g.contains_key(*d))
                .cloned()
                .collect();
            (n.clone(), deps)
        })
        .collect();
    start_levels(&own)?;
    let one_shot: Vec<(String, String)> = apps
        .iter()
        .flat_map(|a| {
            a.depends_on
                .iter()
                .filter(|d| d.condition == Some(Condition::CompletedSuccessfully))
                .map(|d| (a.name.clone(), d.app.clone()))
        })
        .collect();
    for (waiter, job) in one_shot {
        if explicit_autorestart.contains(&job) {
            return Err(format!(
                "app {waiter:?} waits for {job:?} to complete successfully, but {job:?} sets autorestart = true (a job that others wait for runs once: remove its autorestart)"
            ));
        }
        if let Some(spec) = apps.iter_mut().find(|a| a.name == job) {
            spec.autorestart = false;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn g(edges: &[(&str, &[&str])]) -> Graph {
        edges
            .iter()
            .map(|(n, d)| (n.to_string(), d.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn conditions_parse() {
        let cases = [
            ("started", Ok(Condition::Started)),
            ("ready", Ok(Condition::Ready)),
            ("healthy", Ok(Condition::Ready)),
            ("service_healthy", Ok(Condition::Ready)),
            ("process_healthy", Ok(Condition::Ready)),
            (
                "completed_successfully",
                Ok(Condition::CompletedSuccessfully),
            ),
            (
                "service_completed_successfully",
                Ok(Condition::CompletedSuccessfully),
            ),
            ("done", Err(())),
            ("", Err(())),
        ];
        for (text, want) in cases {
            assert_eq!(Condition::parse(text).map_err(|_| ()), want, "{text}");
        }
    }

    #[test]
    fn depends_on_shapes() {
        let dep = |app: &str, c: Option<Condition>| Dependency {
            app: app.into(),
            condition: c,
            implicit: false,
        };
        let ok = [
            (json!(["redis"]), vec![dep("redis", None)]),
            (json!("redis"), vec![dep("redis", None)]),
            (
                json!({"redis": "ready", "migrate": "completed_successfully"}),
                vec![
                    dep("migrate", Some(Condition::CompletedSuccessfully)),
                    dep("redis", Some(Condition::Ready)),
                ],
            ),
            (
                json!({"db": {"condition": "service_healthy"}}),
                vec![dep("db", Some(Condition::Ready))],
            ),
        ];
        for (v, want) in ok {
            assert_eq!(parse(&v, "api", "c.toml: apps[0]").unwrap(), want, "{v}");
        }
        let bad = [
            (json!(["api"]), "depends on itself"),
            (json!(["redis", "redis"]), "listed twice"),
            (
                json!({"redis": "soon"}),
                "depends_on.redis: \"soon\" is not a condition",
            ),
            (json!([1]), "expected app names"),
            (json!(3), "expected a list"),
            (
                json!({"db": {"condition": "ready", "restart": true}}),
                "unknown field \"restart\"",
            ),
            (json!(["all"]), "can't be a name"),
        ];
        for (v, want) in bad {
            let e = parse(&v, "api", "c.toml: apps[0]").unwrap_err();
            assert!(e.starts_with("c.toml: apps[0].depends_on"), "{e}");
            assert!(e.contains(want), "{v}: {e}");
        }
    }

    #[test]
    fn default_condition_follows_the_probe() {
        let d = Dependency {
            app: "redis".into(),
            condition: None,
            implicit: false,
        };
        assert_eq!(d.effective(true), Condition::Ready);
        assert_eq!(d.effective(false), Condition::Started);
        let explicit = Dependency {
            condition: Some(Condition::Started),
            ..d
        };
        assert_eq!(explicit.effective(true), Condition::Started);
    }

    #[test]
    fn levels_and_cycles() {
        type Case = (Graph, Result<Vec<Vec<&'static str>>, &'static str>);
        let cases: Vec<Case> = vec![
            (g(&[]), Ok(vec![])),
            (g(&[("a", &[])]), Ok(vec![vec!["a"]])),
            (
                g(&[("redis", &[]), ("api", &["redis"]), ("edge", &["api"])]),
                Ok(vec![vec!["redis"], vec!["api"], vec!["edge"]]),
            ),
            (
                // a diamond: b and c start together
                g(&[("a", &[]), ("b", &["a"]), ("c", &["a"]), ("d", &["b", "c"])]),
                Ok(vec![vec!["a"], vec!["b", "c"], vec!["d"]]),
            ),
            (
                // a dependency outside the graph runs already
                g(&[("api", &["redis"])]),
                Ok(vec![vec!["api"]]),
            ),
            (
                g(&[("a", &["b"]), ("b", &["a"])]),
                Err("dependency cycle: a → b → a"),
            ),
            (
                g(&[("x", &[]), ("a", &["b"]), ("b", &["c"]), ("c", &["a"])]),
                Err("dependency cycle: a → b → c → a"),
            ),
        ];
        for (graph, want) in cases {
            let got = start_levels(&graph);
            match want {
                Ok(levels) => {
                    let levels: Vec<Vec<String>> = levels
                        .into_iter()
                        .map(|l| l.into_iter().map(String::from).collect())
                        .collect();
                    assert_eq!(got, Ok(levels), "{graph:?}");
                }
                Err(prefix) => {
                    let e = got.unwrap_err();
                    assert!(e.starts_with(prefix), "{graph:?}: {e}");
                }
            }
        }
    }

    #[test]
    fn stop_waves_put_dependents_first() {
        let graph = g(&[
            ("redis", &[]),
            ("api", &["redis"]),
            ("edge", &["api"]),
            ("worker", &["redis"]),
            ("lone", &[]),
        ]);
        let sel = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let cases: Vec<(BTreeSet<String>, Vec<Vec<&str>>)> = vec![
            (
                sel(&["redis", "api", "edge", "worker", "lone"]),
                vec![vec!["edge", "lone", "worker"], vec!["api"], vec!["redis"]],
            ),
            (sel(&["redis", "api"]), vec![vec!["api"], vec!["redis"]]),
            // edge is not selected: api and redis still go in order, through it or not
            (sel(&["redis", "edge"]), vec![vec!["edge"], vec!["redis"]]),
            (sel(&["redis"]), vec![vec!["redis"]]),
            (sel(&["unknown", "api"]), vec![vec!["api", "unknown"]]),
        ];
        for (selected, want) in cases {
            let want: Vec<Vec<String>> = want
                .into_iter()
                .map(|w| w.into_iter().map(String::from).collect())
                .collect();
            assert_eq!(stop_waves(&graph, &selected), want, "{selected:?}");
        }
    }

    #[test]
    fn config_files_carry_depends_on() {
        use crate::config::ecosystem::{from_value, LoadOptions};
        let env = BTreeMap::from([("PATH".to_string(), "/usr/bin:/bin".to_string())]);
        let opts = LoadOptions {
            env_name: None,
            base_env: &env,
            only: None,
        };
        // What TOML, JSON and PM2's JS all become before validation.
        let v = json!({
            "apps": [
                {"name": "redis", "script": "/bin/sleep 60"},
                {"name": "migrate", "script": "/bin/true"},
                {"name": "api", "script": "/bin/sleep 60", "depends_timeout": "90s",
                 "depends_on": {"redis": "healthy", "migrate": "completed_successfully"}},
            ],
            "balancers": [{"name": "edge", "listen": "127.0.0.1:8080", "upstreams": ["app:api"]}],
        });
        let l = from_value(&v, "c.json", std::path::Path::new("/"), &opts).unwrap();
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        let app = |n: &str| l.apps.iter().find(|a| a.name == n).unwrap();
        assert_eq!(app("api").depends_timeout_ms, Some(90_000));
        assert_eq!(
            app("api")
                .depends_on
                .iter()
                .map(|d| (d.app.as_str(), d.condition))
                .collect::<Vec<_>>(),
            [
                ("migrate", Some(Condition::CompletedSuccessfully)),
                ("redis", Some(Condition::Ready))
            ]
        );
        assert!(
            !app("migrate").autorestart,
            "a one-shot dependency runs once"
        );
        assert!(app("redis").autorestart);
        let edge = &app("edge").depends_on;
        assert_eq!(edge.len(), 1);
        assert!(edge[0].implicit && edge[0].app == "api");
        assert_eq!(edge[0].condition, Some(Condition::Started));
        // Errors name the file, the app and the field.
        let bad = json!({"apps": [{"name": "api", "script": "/bin/sleep 60", "depends_timeout": "soon", "depends_on": ["x"]}]});
        let e = from_value(&bad, "c.json", std::path::Path::new("/"), &opts).unwrap_err();
        assert!(
            e.starts_with("c.json: apps[0].depends_timeout: expected a duration"),
            "{e}"
        );
    }

    #[test]
    fn check_names_both_apps() {
        let redis = [Dependency {
            app: "redis".into(),
            condition: None,
            implicit: false,
        }];
        let e = check(&[("api", &redis)], &Graph::new()).unwrap_err();
        assert!(
            e.starts_with("app \"api\" depends on \"redis\", which is not in this config ("),
            "{e}"
        );
        // Running in the daemon counts.
        let running = g(&[("redis", &[])]);
        assert!(check(&[("api", &redis)], &running).is_ok());
        // A cycle through a running app.
        let api = [Dependency {
            app: "api".into(),
            condition: None,
            implicit: false,
        }];
        let running = g(&[("redis", &["api"])]);
        let e = check(&[("api", &redis)], &running).unwrap_err();
        assert!(e.starts_with("dependency cycle: api → redis → api"), "{e}");
        let _ = api;
    }
}
