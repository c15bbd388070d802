//! Output for people: the process table (like `pm2 ls`), durations, sizes, describe blocks.

use crate::api::{ProcessDetail, ProcessInfo, Status};
use std::io::IsTerminal;

pub fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86399 => format!("{}h", s / 3600),
        _ => format!("{}D", s / 86400),
    }
}

pub fn bytes(b: u64) -> String {
    const K: f64 = 1024.0;
    let f = b as f64;
    if f < K {
        format!("{b}b")
    } else if f < K * K {
        format!("{:.1}kb", f / K)
    } else if f < K * K * K {
        format!("{:.1}mb", f / K / K)
    } else {
        format!("{:.1}gb", f / K / K / K)
    }
}

fn colour(status: Status, text: &str, tty: bool) -> String {
    if !tty {
        return text.to_string();
    }
    let code = match status {
        Status::Online => "32",
        Status::Launching | Status::Stopping | Status::WaitingRestart => "33",
        Status::Errored => "31",
        Status::Stopped => "90",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// The status column: `online (not ready)` for a process that runs but takes no new work
/// (its readiness probe fails, or it does not listen yet).
fn status_text(p: &ProcessInfo) -> String {
    if p.status == Status::Online && p.ready == Some(false) {
        "online (not ready)".to_string()
    } else {
        p.status.as_str().to_string()
    }
}

/// The `ls` table.
pub fn table(procs: &[ProcessInfo]) -> String {
    let tty = std::io::stdout().is_terminal();
    let header = [
        "id", "name", "mode", "pid", "uptime", "↺", "status", "cpu", "memory",
    ];
    let rows: Vec<(Status, [String; 9])> = procs
        .iter()
        .map(|p| {
            (
                p.status,
                [
                    p.id.to_string(),
                    if p.mode == "cluster" {
                        format!("{}:{}", p.name, p.instance)
                    } else {
                        p.name.clone()
                    },
                    p.mode.clone(),
                    p.pid.map(|x| x.to_string()).unwrap_or_else(|| "-".into()),
                    if p.status == Status::Online {
                        duration(p.uptime_ms)
                    } else {
                        "-".into()
                    },
                    p.restarts.to_string(),
                    status_text(p),
                    format!("{:.1}%", p.cpu),
                    bytes(p.memory),
                ],
            )
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for (_, r) in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |l: &str, m: &str, r: &str| {
        let mut s = String::from(l);
        for (i, w) in widths.iter().enumerate() {
            s.push_str(&"─".repeat(w + 2));
            s.push_str(if i + 1 == widths.len() { r } else { m });
        }
        s.push('\n');
        s
    };
    let mut out = line("┌", "┬", "┐");
    out.push('│');
    for (i, h) in header.iter().enumerate() {
        out.push_str(&format!(" {:<w$} │", h, w = widths[i]));
    }
    out.push('\n');
    out.push_str(&line("├", "┼", "┤"));
    for (status, r) in &rows {
        out.push('│');
        for (i, c) in r.iter().enumerate() {
            let padded = format!("{:<w$}", c, w = widths[i]);
            let cell = if i == 6 && r[6] != status.as_str() {
                // Online but not ready: the colour of a process on its way.
                colour(Status::Launching, &padded, tty)
            } else if i == 6 {
                colour(*status, &padded, tty)
            } else {
                padded
            };
            out.push_str(&format!(" {cell} │"));
        }
        out.push('\n');
    }
    out.push_str(&line("└", "┴", "┘"));
    if procs.is_empty() {
        out.push_str("no processes yet: start one with `cohort start app.js`\n");
    }
    out
}

fn when(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| "-".into())
}

/// One `describe` block.
pub fn detail(d: &ProcessDetail) -> String {
    let i = &d.info;
    let mut rows: Vec<(&str, String)> = vec![
        ("id", i.id.to_string()),
        ("name", i.name.clone()),
        ("instance", i.instance.to_string()),
        ("status", i.status.as_str().to_string()),
        ("mode", i.mode.clone()),
        (
            "pid",
            i.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
        ),
        ("script", d.script.clone()),
        ("args", shell_words::join(&d.args)),
        (
            "interpreter",
            d.interpreter.clone().unwrap_or_else(|| "none".into()),
        ),
        ("interpreter args", shell_words::join(&d.interpreter_args)),
        ("cwd", d.cwd.clone()),
        ("env keys", d.env_keys.join(", ")),
        ("out log", d.out_log.clone()),
        ("err log", d.err_log.clone()),
        (
            "combined log",
            d.combined_log.clone().unwrap_or_else(|| "-".into()),
        ),
        ("restarts", i.restarts.to_string()),
        ("unstable restarts", i.unstable_restarts.to_string()),
        (
            "spawn retry",
            d.spawn_retry
                .as_ref()
                .map(|r| {
                    format!(
                        "attempt {} failed ({}), next in {} ms: {}",
                        r.attempt, r.errno, r.retry_in_ms, r.reason
                    )
                })
                .unwrap_or_else(|| "-".into()),
        ),
        (
            "restart reason",
            i.restart_reason
                .map(|r| r.as_str().to_string())
                .unwrap_or_else(|| "-".into()),
        ),
        (
            "watch",
            if d.watch.is_empty() {
                "off".into()
            } else {
                d.watch.join(", ")
            },
        ),
        (
            "cron restart",
            d.cron_restart.clone().unwrap_or_else(|| "-".into()),
        ),
        (
            "max memory",
            d.max_memory_restart
                .map(|b| format!("{:.1} MB", b as f64 / 1048576.0))
                .unwrap_or_else(|| "-".into()),
        ),
        (
            "uptime",
            if i.status == Status::Online {
                duration(i.uptime_ms)
            } else {
                "-".into()
            },
        ),
        (
            "last exit code",
            d.last_exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
        ),
        (
            "last signal",
            d.last_signal.clone().unwrap_or_else(|| "-".into()),
        ),
        ("created at", when(d.created_at)),
        (
            "started at",
            d.started_at.map(when).unwrap_or_else(|| "-".into()),
        ),
        ("autorestart", d.autorestart.to_string()),
        ("max restarts", d.max_restarts.to_string()),
        ("min uptime", format!("{} ms", d.min_uptime_ms)),
        ("kill signal", d.kill_signal.clone()),
        ("kill timeout", format!("{} ms", d.kill_timeout_ms)),
        ("cpu", format!("{:.1}%", i.cpu)),
        ("memory", bytes(i.memory)),
    ];
    if !d.listen.is_empty() {
        rows.push(("listen", d.listen.join(", ")));
    }
    if !d.depends_on.is_empty() {
        rows.push(("depends on", d.depends_on.join(", ")));
    }
    if let Some(w) = &d.waiting_for {
        rows.push(("waiting for", w.clone()));
    }
    rows.push((
        "ready",
        match i.ready {
            Some(true) => "yes".into(),
            Some(false) => "no".into(),
            None => "-".into(),
        },
    ));
    let probe_rows: Vec<(&str, String)> = d.probes.iter().flat_map(probe_rows).collect();
    rows.extend(probe_rows);
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = format!("── {} ({}) ──\n", i.name, i.id);
    for (k, v) in rows {
        out.push_str(&format!("  {k:<w$}  {v}\n"));
    }
    if let Some(a) = &i.autoscale {
        out.push_str(&autoscaling(a));
    }
    out
}

/// The autoscaling part of `describe`: bounds, the current count, what the policy thinks now and
/// the last scale events.
fn autoscaling(a: &crate::api::AutoscaleInfo) -> String {
    let mut out = format!(
        "  autoscale\n    min {}, max {}, desired {} (scale ups {}, scale downs {})\n",
        a.min, a.max, a.desired, a.scale_ups, a.scale_downs
    );
    if let Some(now) = &a.now {
        out.push_str(&format!("    now: {now}\n"));
    }
    for e in &a.events {
        out.push_str(&format!(
            "    {} {} → {}: {}\n",
            when(e.at),
            e.from,
            e.to,
            e.reason
        ));
    }
    out
}

/// A probe's rows in `describe`: its check and timing, then its last result.
fn probe_rows(p: &crate::api::ProbeStatus) -> Vec<(&'static str, String)> {
    use crate::config::probes::{show_duration, ProbeKind};
    let s = &p.spec;
    let (spec_key, last_key) = match p.kind {
        ProbeKind::Readiness => ("readiness", "readiness last"),
        ProbeKind::Liveness => ("liveness", "liveness last"),
    };
    let spec = format!(
        "{} every {}, timeout {}, failure threshold {}, success threshold {}, initial delay {}",
        p.check,
        show_duration(s.interval),
        show_duration(s.timeout),
        s.failure_threshold,
        s.success_threshold,
        show_duration(s.initial_delay)
    );
    let last = match &p.last {
        None => "not checked yet".to_string(),
        Some(r) => format!(
            "{} at {}: {} ({} ms; {} ok / {} failed in a row)",
            if r.ok { "ok" } else { "failed" },
            when(r.at),
            r.message,
            r.took_ms,
            p.consecutive_successes,
            p.consecutive_failures
        ),
    };
    vec![(spec_key, spec), (last_key, last)]
}

/// A balancer's upstreams from its `/status` JSON: state and counters per upstream.
pub fn upstreams(status: &serde_json::Value) -> String {
    let mut out = String::from("  upstreams\n");
    let empty = Vec::new();
    let list = status
        .get("upstreams")
        .and_then(|u| u.as_array())
        .unwrap_or(&empty);
    for u in list {
        let field = |k: &str| {
            u.get(k)
                .map(|v| v.to_string().trim_matches('"').to_string())
                .unwrap_or_default()
        };
        out.push_str(&format!(
            "    {:<24} {:<5} weight {:<3} requests {:<8} errors {:<6} active {}\n",
            field("address"),
            field("state"),
            field("weight"),
            field("requests"),
            field("errors"),
            field("active"),
        ));
    }
    out
}
