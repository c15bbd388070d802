//! PM2's shapes, for scripts and tools written against `pm2 jlist` / `pm2 prettylist`: the process
//! object (`pid`, `name`, `pm_id`, `pm2_env{…}`, `monit{memory, cpu}`), the util.inspect layout
//! `prettylist` prints, and `ls --sort` (PM2's `--sort field:order`).

use crate::api::{ProcessDetail, ProcessInfo, Status};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// What a PM2-shaped object is built from: the process and the values of its app's `env`.
pub struct Pm2Source<'a> {
    pub detail: &'a ProcessDetail,
    /// The app's declared variables with this process's values (PM2 shows them in `pm2_env.env`
    /// and at the top of `pm2_env`).
    pub env: BTreeMap<String, String>,
    /// How many processes the app has.
    pub instances: usize,
}

/// PM2's status words (`waiting restart` has a space in PM2).
fn pm2_status(s: Status) -> &'static str {
    match s {
        Status::WaitingRestart => "waiting restart",
        other => other.as_str(),
    }
}

/// One process as `pm2 jlist` prints it (the fields jq filters use).
pub fn pm2_object(src: &Pm2Source) -> Value {
    let d = src.detail;
    let i = &d.info;
    let mut env = Map::new();
    for (k, v) in &src.env {
        env.insert(k.clone(), Value::String(v.clone()));
    }
    // The process sees its name too (as under PM2, which lists it in pm2_env.env).
    env.entry("name").or_insert_with(|| json!(i.name));
    let interpreter = d
        .interpreter
        .as_deref()
        .and_then(|p| Path::new(p).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "none".into());
    let mut pm2_env = json!({
        "name": i.name,
        "namespace": d.namespace.as_deref().unwrap_or("default"),
        "pm_id": i.id,
        "status": pm2_status(i.status),
        "restart_time": i.restarts,
        "unstable_restarts": i.unstable_restarts,
        "pm_uptime": d.started_at.unwrap_or(d.created_at),
        "created_at": d.created_at,
        "exec_mode": if i.mode == "cluster" { "cluster_mode" } else { "fork_mode" },
        "instances": src.instances,
        "pm_exec_path": d.script,
        "pm_cwd": d.cwd,
        "exec_interpreter": interpreter,
        "node_args": d.interpreter_args,
        "args": d.args,
        "pm_out_log_path": d.out_log,
        "pm_err_log_path": d.err_log,
        "autorestart": d.autorestart,
        "max_restarts": d.max_restarts,
        "min_uptime": d.min_uptime_ms,
        "kill_timeout": d.kill_timeout_ms,
        "exit_code": d.last_exit_code,
        // Whether a file change restarts this process now (a stopped one is not watched).
        "watch": !d.watch.is_empty()
            && matches!(i.status, Status::Online | Status::Launching | Status::WaitingRestart),
        "versioning": null,
        "env": Value::Object(env.clone()),
    });
    if let Value::Object(m) = &mut pm2_env {
        m.insert(
            d.instance_var
                .clone()
                .unwrap_or_else(|| "NODE_APP_INSTANCE".into()),
            json!(i.instance),
        );
        if let Some(c) = &d.combined_log {
            m.insert("pm_log_path".into(), json!(c));
        }
        // PM2 also copies the app's variables to the top of pm2_env (never over its own fields).
        for (k, v) in env {
            m.entry(k).or_insert(v);
        }
    }
    json!({
        "pid": i.pid.unwrap_or(0),
        "name": i.name,
        "pm_id": i.id,
        "pm2_env": pm2_env,
        "monit": { "memory": i.memory, "cpu": js_number((i.cpu * 10.0).round() / 10.0) },
    })
}

/// `jlist`'s default object: every field of `ls --json` (with its meaning) plus PM2's
/// `pm_id`, `pm2_env` and `monit`, so both cohort's and PM2's filters work on it.
pub fn combined_object(src: &Pm2Source) -> Value {
    let mut ours = serde_json::to_value(&src.detail.info).unwrap_or(Value::Null);
    if let (Value::Object(m), Value::Object(theirs)) = (&mut ours, pm2_object(src)) {
        for key in ["pm_id", "pm2_env", "monit"] {
            if let Some(v) = theirs.get(key) {
                m.insert(key.into(), v.clone());
            }
        }
    }
    ours
}

/// A value printed as Node's `util.inspect` prints it (what `pm2 prettylist` shows): unquoted
/// keys, single-quoted strings, short flat objects and lists on one line.
pub fn inspect(v: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, v, 0);
    out
}

const BREAK_LENGTH: usize = 80;

/// PM2's order of a process's keys (`pm_id` is not the last one, so scripts that cut
/// `pm_id: N,` out of `pm2 prettylist` find it); other keys follow in their own order.
const PM2_KEY_ORDER: &[&str] = &["pid", "name", "pm2_env", "pm_id", "monit"];

fn write_value(out: &mut String, v: &Value, indent: usize) {
    match v {
        Value::Array(items) if items.is_empty() => out.push_str("[]"),
        Value::Object(m) if m.is_empty() => out.push_str("{}"),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(|x| inline(x, indent + 2)).collect();
            write_group(out, "[", "]", parts, items.iter().all(is_flat), indent);
        }
        Value::Object(m) => {
            let mut fields: Vec<(&String, &Value)> = m.iter().collect();
            fields.sort_by_key(|(k, _)| {
                PM2_KEY_ORDER
                    .iter()
                    .position(|o| o == k)
                    .unwrap_or(PM2_KEY_ORDER.len())
            });
            let parts: Vec<String> = fields
                .into_iter()
                .map(|(k, x)| format!("{}: {}", key(k), inline(x, indent + 2)))
                .collect();
            write_group(out, "{", "}", parts, m.values().all(is_flat), indent);
        }
        other => out.push_str(&scalar(other)),
    }
}

fn inline(v: &Value, indent: usize) -> String {
    let mut s = String::new();
    write_value(&mut s, v, indent);
    s
}

fn write_group(
    out: &mut String,
    open: &str,
    close: &str,
    parts: Vec<String>,
    flat: bool,
    indent: usize,
) {
    let one_line = format!("{open} {} {close}", parts.join(", "));
    if flat && indent + one_line.len() + 10 <= BREAK_LENGTH {
        out.push_str(&one_line);
        return;
    }
    let pad = " ".repeat(indent + 2);
    out.push_str(open);
    out.push('\n');
    let n = parts.len();
    for (i, p) in parts.into_iter().enumerate() {
        out.push_str(&pad);
        out.push_str(&p);
        if i + 1 < n {
            out.push(',');
        }
        out.push('\n');
    }
    out.push_str(&" ".repeat(indent));
    out.push_str(close);
}

fn is_flat(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        _ => true,
    }
}

fn key(k: &str) -> String {
    let ident = k
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    if ident {
        k.to_string()
    } else {
        quote(k)
    }
}

/// A number as JavaScript prints it: whole numbers without `.0`.
fn js_number(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        json!(f as i64)
    } else {
        json!(f)
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => quote(s),
        Value::Null => "null".into(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if !n.is_i64() && !n.is_u64() => js_number(f).to_string(),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// util.inspect's quoting: single quotes, or double quotes when the text holds a single quote.
fn quote(s: &str) -> String {
    let q = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(q);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c == q => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push_str(&format!("\\x{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push(q);
    out
}

/// The fields `--sort` knows (PM2's, plus restarts).
const SORT_FIELDS: &[&str] = &[
    "name", "id", "pid", "uptime", "cpu", "memory", "restarts", "status",
];

/// Orders processes by `spec` (`field` or `field:asc|desc`); an unknown field is an error.
pub fn sort_by<T>(
    items: &mut [T],
    info: impl Fn(&T) -> &ProcessInfo,
    spec: Option<&str>,
) -> Result<(), String> {
    let Some(spec) = spec else { return Ok(()) };
    let (field, order) = spec.split_once(':').unwrap_or((spec, "asc"));
    let field = field.to_ascii_lowercase();
    if !SORT_FIELDS.contains(&field.as_str()) {
        return Err(format!(
            "--sort {spec}: unknown field {field:?} (use one of {}, optionally with :asc or :desc)",
            SORT_FIELDS.join(", ")
        ));
    }
    let desc = match order {
        "asc" => false,
        "desc" => true,
        other => {
            return Err(format!(
                "--sort {spec}: unknown order {other:?} (use asc or desc)"
            ))
        }
    };
    items.sort_by(|a, b| {
        let (a, b) = (info(a), info(b));
        let ord = match field.as_str() {
            "name" => a.name.cmp(&b.name).then(a.instance.cmp(&b.instance)),
            "id" => a.id.cmp(&b.id),
            "pid" => a.pid.unwrap_or(0).cmp(&b.pid.unwrap_or(0)),
            "uptime" => a.uptime_ms.cmp(&b.uptime_ms),
            "cpu" => a.cpu.total_cmp(&b.cpu),
            "memory" => a.memory.cmp(&b.memory),
            "restarts" => a.restarts.cmp(&b.restarts),
            _ => a.status.as_str().cmp(b.status.as_str()),
        };
        if desc {
            ord.reverse()
        } else {
            ord
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_prints_what_node_prints() {
        let cases = [
            (json!("it's"), "\"it's\""),
            (json!("a'b\"c"), "'a\\'b\"c'"),
            (json!(null), "null"),
            (
                json!({"memory": 1024, "cpu": 0.5}),
                "{ cpu: 0.5, memory: 1024 }",
            ),
            (json!(["server", "client"]), "[ 'server', 'client' ]"),
            (json!({"a-b": []}), "{ 'a-b': [] }"),
            (
                json!([{"pm_id": 0, "pm2_env": {"status": "online", "env": {}}}]),
                "[\n  {\n    pm2_env: { env: {}, status: 'online' },\n    pm_id: 0\n  }\n]",
            ),
        ];
        for (value, want) in cases {
            assert_eq!(inspect(&value), want, "{value}");
        }
    }

    fn proc(id: u32, name: &str, memory: u64, restarts: u32) -> ProcessInfo {
        ProcessInfo {
            id,
            name: name.into(),
            instance: 0,
            pid: Some(100 + id as i32),
            status: Status::Online,
            restarts,
            uptime_ms: 1000 * u64::from(id),
            cpu: 0.0,
            memory,
            mode: "fork".into(),
            unstable_restarts: 0,
            restart_reason: None,
            ready: None,
            restart_reasons: Default::default(),
            autoscale: None,
        }
    }

    #[test]
    fn sort_orders_by_field_and_direction() {
        let base = vec![
            proc(0, "b", 30, 2),
            proc(1, "c", 10, 0),
            proc(2, "a", 20, 1),
        ];
        let cases: [(&str, [u32; 3]); 6] = [
            ("name", [2, 0, 1]),
            ("name:desc", [1, 0, 2]),
            ("memory", [1, 2, 0]),
            ("restarts:desc", [0, 2, 1]),
            ("uptime:desc", [2, 1, 0]),
            ("id", [0, 1, 2]),
        ];
        for (spec, want) in cases {
            let mut v = base.clone();
            sort_by(&mut v, |p| p, Some(spec)).unwrap();
            let ids: Vec<u32> = v.iter().map(|p| p.id).collect();
            assert_eq!(ids, want, "{spec}");
        }
        let mut v = base.clone();
        assert!(sort_by(&mut v, |p| p, Some("size"))
            .unwrap_err()
            .contains("unknown field"));
        assert!(sort_by(&mut v, |p| p, Some("name:up"))
            .unwrap_err()
            .contains("unknown order"));
    }
}
