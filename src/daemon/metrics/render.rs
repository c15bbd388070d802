//! The Prometheus text exposition (format 0.0.4) of one snapshot: a pure function, so the metric
//! list and its labels are unit-tested without a daemon.
//!
//! Naming follows Prometheus's conventions: base units (`_bytes`, `_seconds`, `_ratio`), `_total`
//! for counters, the client libraries' `process_*` family for the daemon itself, and HAProxy's
//! exporter as the model for balancers. Series about the current OS process of a slot (memory,
//! cpu, uptime) carry its `pid`; series that span restarts of a slot (restarts, status) do not, so
//! a restart does not start a new series (`cohort_process_info` joins the pid in). The instance
//! number of an app is `app_instance`: Prometheus sets `instance` to the scrape target itself (a
//! scraped `instance` would be renamed `exported_instance`).

use super::{BalancerScrape, DaemonStats, LogCounters, Snapshot};
use crate::api::{ProcessInfo, Status};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Renders the whole exposition.
pub fn render(s: &Snapshot) -> String {
    let mut out = Out {
        text: String::with_capacity(256 + s.processes.len() * 1400),
    };
    daemon(&mut out, &s.daemon, s.version);
    logs(&mut out, &s.logs);
    apps(&mut out, s.processes);
    processes(&mut out, s.processes);
    balancers(&mut out, &s.balancers);
    out.text
}

/// The text being built; writes to a String cannot fail.
struct Out {
    text: String,
}

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample: `name{labels} value`.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                self.text.push_str(k);
                self.text.push_str("=\"");
                escape_into(&mut self.text, v);
                self.text.push('"');
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }
}

/// Label values escape backslash, double quote and newline (the exposition format's rule).
fn escape_into(out: &mut String, v: &str) {
    if !v.bytes().any(|b| matches!(b, b'\\' | b'"' | b'\n')) {
        out.push_str(v);
        return;
    }
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Seconds with millisecond precision, without float noise (`1.5`, not `1.5000000001`).
fn secs(ms: u64) -> String {
    if ms % 1000 == 0 {
        (ms / 1000).to_string()
    } else {
        format!("{}.{:03}", ms / 1000, ms % 1000)
            .trim_end_matches('0')
            .to_string()
    }
}

fn daemon(out: &mut Out, d: &DaemonStats, version: &str) {
    out.family(
        "cohort_info",
        "gauge",
        "The cohort daemon's version (always 1).",
    );
    out.sample("cohort_info", &[("version", version)], 1);
    out.family(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time of the cohort daemon in seconds.",
    );
    out.sample("process_cpu_seconds_total", &[], d.cpu_seconds);
    out.family(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size of the cohort daemon in bytes.",
    );
    out.sample("process_resident_memory_bytes", &[], d.resident_bytes);
    out.family(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size of the cohort daemon in bytes.",
    );
    out.sample("process_virtual_memory_bytes", &[], d.virtual_bytes);
    out.family(
        "process_open_fds",
        "gauge",
        "Open file descriptors of the cohort daemon.",
    );
    out.sample("process_open_fds", &[], d.open_fds);
    out.family(
        "process_max_fds",
        "gauge",
        "The cohort daemon's limit of open file descriptors.",
    );
    out.sample("process_max_fds", &[], d.max_fds);
    out.family(
        "process_start_time_seconds",
        "gauge",
        "Start time of the cohort daemon since the Unix epoch in seconds.",
    );
    out.sample("process_start_time_seconds", &[], d.start_time_seconds);
}

fn logs(out: &mut Out, l: &LogCounters) {
    out.family(
        "cohort_log_lines_written_total",
        "counter",
        "Log lines of managed processes written to their log files.",
    );
    out.sample("cohort_log_lines_written_total", &[], l.written);
    out.family(
        "cohort_log_lines_dropped_total",
        "counter",
        "Log lines that could not be written (reason=write_error: a full disk or a failing file) or that a live follower skipped because it was too slow (reason=follower_lag).",
    );
    out.sample(
        "cohort_log_lines_dropped_total",
        &[("reason", "write_error")],
        l.write_errors,
    );
    out.sample(
        "cohort_log_lines_dropped_total",
        &[("reason", "follower_lag")],
        l.follower_lag,
    );
}

/// Per app: how many instances it should run (every slot not stopped) and how many are ready.
fn apps(out: &mut Out, procs: &[ProcessInfo]) {
    // app -> (mode, desired, ready)
    let mut by_app: BTreeMap<&str, (&str, u32, u32)> = BTreeMap::new();
    for p in procs {
        let e = by_app.entry(&p.name).or_insert((&p.mode, 0, 0));
        if p.status != Status::Stopped {
            e.1 += 1;
        }
        if p.status == Status::Online {
            e.2 += 1;
        }
    }
    out.family(
        "cohort_app_instances_desired",
        "gauge",
        "Instances an app should run: its processes that are not stopped (errored ones count: they should run and do not).",
    );
    for (app, (mode, desired, _)) in &by_app {
        out.sample(
            "cohort_app_instances_desired",
            &[("app", app), ("mode", mode)],
            desired,
        );
    }
    out.family(
        "cohort_app_instances_ready",
        "gauge",
        "Instances of an app that are online (their readiness signal came: listening, 'ready', READY=1 or listen_timeout).",
    );
    for (app, (mode, _, ready)) in &by_app {
        out.sample(
            "cohort_app_instances_ready",
            &[("app", app), ("mode", mode)],
            ready,
        );
    }
    autoscaled(out, procs);
}

/// Autoscaled apps: bounds and scale events (from the first process of each app).
fn autoscaled(out: &mut Out, procs: &[ProcessInfo]) {
    let mut by_app: BTreeMap<&str, &crate::api::AutoscaleInfo> = BTreeMap::new();
    for p in procs {
        if let Some(a) = &p.autoscale {
            by_app.entry(&p.name).or_insert(a);
        }
    }
    if by_app.is_empty() {
        return;
    }
    out.family(
        "cohort_autoscale_instances",
        "gauge",
        "An autoscaled app's bounds and the count it wants now (bound = min, max, desired).",
    );
    for (app, a) in &by_app {
        for (bound, v) in [("min", a.min), ("max", a.max), ("desired", a.desired)] {
            out.sample(
                "cohort_autoscale_instances",
                &[("app", app), ("bound", bound)],
                v,
            );
        }
    }
    out.family(
        "cohort_autoscale_events_total",
        "counter",
        "Changes of an autoscaled app's worker count since the daemon started, by direction.",
    );
    for (app, a) in &by_app {
        out.sample(
            "cohort_autoscale_events_total",
            &[("app", app), ("direction", "up")],
            a.scale_ups,
        );
        out.sample(
            "cohort_autoscale_events_total",
            &[("app", app), ("direction", "down")],
            a.scale_downs,
        );
    }
}

/// The label set of one process slot, escaped once: `app="…",app_instance="…",id="…",mode="…"`
/// and, when it runs an OS process, the same with `,pid="…"`.
struct SlotLabels {
    slot: String,
    with_pid: Option<String>,
}

fn slot_labels(p: &ProcessInfo) -> SlotLabels {
    let mut slot = String::with_capacity(p.name.len() + p.mode.len() + 40);
    slot.push_str("app=\"");
    escape_into(&mut slot, &p.name);
    let _ = write!(
        slot,
        "\",app_instance=\"{}\",id=\"{}\",mode=\"",
        p.instance, p.id
    );
    escape_into(&mut slot, &p.mode);
    slot.push('"');
    let with_pid = p.pid.map(|pid| format!("{slot},pid=\"{pid}\""));
    SlotLabels { slot, with_pid }
}

impl Out {
    /// One sample with a pre-rendered label set and, optionally, one more label.
    fn sample_with(
        &mut self,
        name: &str,
        labels: &str,
        extra: Option<(&str, &str)>,
        value: impl std::fmt::Display,
    ) {
        self.text.push_str(name);
        self.text.push('{');
        self.text.push_str(labels);
        if let Some((k, v)) = extra {
            self.text.push(',');
            self.text.push_str(k);
            self.text.push_str("=\"");
            escape_into(&mut self.text, v);
            self.text.push('"');
        }
        let _ = writeln!(self.text, "}} {value}");
    }
}

fn processes(out: &mut Out, procs: &[ProcessInfo]) {
    let labels: Vec<SlotLabels> = procs.iter().map(slot_labels).collect();

    out.family(
        "cohort_process_info",
        "gauge",
        "One series per managed process slot (always 1), with the pid of its current OS process (empty when it runs none).",
    );
    for l in &labels {
        match &l.with_pid {
            Some(with_pid) => out.sample_with("cohort_process_info", with_pid, None, 1),
            None => out.sample_with("cohort_process_info", &l.slot, Some(("pid", "")), 1),
        }
    }

    out.family(
        "cohort_process_status",
        "gauge",
        "The status a process slot is in (one series per slot, always 1; status is one of launching, online, stopping, stopped, waiting_restart, errored).",
    );
    for (p, l) in procs.iter().zip(&labels) {
        out.sample_with(
            "cohort_process_status",
            &l.slot,
            Some(("status", p.status.as_str())),
            1,
        );
    }

    out.family(
        "cohort_process_restarts_total",
        "counter",
        "Restarts of a process slot by reason: crash (it exited and the restart policy started it again), manual (`cohort restart`), reload (`cohort reload`), memory (max_memory_restart), cron (cron_restart), watch, probe. `cohort reset` sets it back to 0.",
    );
    for (p, l) in procs.iter().zip(&labels) {
        for (reason, n) in restart_reasons(p) {
            out.sample_with(
                "cohort_process_restarts_total",
                &l.slot,
                Some(("reason", reason)),
                n,
            );
        }
    }

    out.family(
        "cohort_process_unstable_restarts",
        "gauge",
        "Crashes in a row within min_uptime (the slot is errored once it exceeds max_restarts).",
    );
    for (p, l) in procs.iter().zip(&labels) {
        out.sample_with(
            "cohort_process_unstable_restarts",
            &l.slot,
            None,
            p.unstable_restarts,
        );
    }

    // Series of the current OS process: only for slots that run one.
    let running: Vec<(&ProcessInfo, &str)> = procs
        .iter()
        .zip(&labels)
        .filter_map(|(p, l)| l.with_pid.as_deref().map(|w| (p, w)))
        .collect();
    out.family(
        "cohort_process_resident_memory_bytes",
        "gauge",
        "Resident memory of a managed process in bytes (sampled every 2 s).",
    );
    for (p, l) in &running {
        out.sample_with("cohort_process_resident_memory_bytes", l, None, p.memory);
    }
    out.family(
        "cohort_process_cpu_usage_ratio",
        "gauge",
        "CPU used by a managed process over the last sampling interval (2 s), in cores (1 = one core busy).",
    );
    for (p, l) in &running {
        out.sample_with("cohort_process_cpu_usage_ratio", l, None, ratio(p.cpu));
    }
    out.family(
        "cohort_process_uptime_seconds",
        "gauge",
        "Seconds since the current OS process of a slot started.",
    );
    for (p, l) in &running {
        out.sample_with("cohort_process_uptime_seconds", l, None, secs(p.uptime_ms));
    }
    out.family(
        "cohort_process_ready",
        "gauge",
        "1 when the process takes new work: online, listening or signalled, and its readiness probe passing (docs/health.md).",
    );
    for (p, l) in &running {
        out.sample_with(
            "cohort_process_ready",
            l,
            None,
            u32::from(p.ready == Some(true)),
        );
    }
}

/// A CPU percentage of one core as a ratio, without float noise.
fn ratio(percent: f64) -> String {
    let milli = (percent * 10.0).round() as i64; // percent has one decimal
    let v = milli as f64 / 1000.0;
    format!("{v}")
}

/// The restart count split by reason; reasons cohort does not know yet fall under `other`.
fn restart_reasons(p: &ProcessInfo) -> Vec<(&str, u32)> {
    let known: u32 = p.restart_reasons.values().sum();
    let mut v: Vec<(&str, u32)> = ["crash", "manual", "reload"]
        .into_iter()
        .map(|r| (r, p.restart_reasons.get(r).copied().unwrap_or(0)))
        .collect();
    for (r, n) in &p.restart_reasons {
        if !matches!(r.as_str(), "crash" | "manual" | "reload") {
            v.push((r.as_str(), *n));
        }
    }
    if p.restarts > known {
        v.push(("other", p.restarts - known));
    }
    v
}

fn balancers(out: &mut Out, bals: &[BalancerScrape]) {
    out.family(
        "cohort_balancer_up",
        "gauge",
        "1 when a balancer's admin endpoint answered this scrape, 0 when it did not.",
    );
    for b in bals {
        out.sample(
            "cohort_balancer_up",
            &[
                ("balancer", &b.name),
                ("app_instance", &b.instance.to_string()),
            ],
            u8::from(b.status.is_some()),
        );
    }
    let families: [(&str, &str, &str); 5] = [
        (
            "cohort_balancer_upstream_up",
            "gauge",
            "1 when an upstream may receive traffic (health checks pass and no passive failure is being served out), else 0.",
        ),
        (
            "cohort_balancer_upstream_requests_total",
            "counter",
            "Requests (HTTP) or connections (TCP) a balancer sent to an upstream.",
        ),
        (
            "cohort_balancer_upstream_errors_total",
            "counter",
            "Failed attempts to an upstream (connect errors, timeouts, broken responses); each one is retried on another upstream when the request allows it.",
        ),
        (
            "cohort_balancer_upstream_active",
            "gauge",
            "Requests or tunnels in flight to an upstream.",
        ),
        (
            "cohort_balancer_upstream_weight",
            "gauge",
            "An upstream's weight.",
        ),
    ];
    for (k, (name, kind, help)) in families.iter().enumerate() {
        out.family(name, kind, help);
        for b in bals {
            let Some(st) = &b.status else { continue };
            let inst = b.instance.to_string();
            for u in &st.upstreams {
                let v = match k {
                    0 => u64::from(u.state == "up"),
                    1 => u.requests,
                    2 => u.errors,
                    3 => u.active,
                    _ => u.weight,
                };
                out.sample(
                    name,
                    &[
                        ("balancer", &b.name),
                        ("app_instance", &inst),
                        ("upstream", &u.address),
                    ],
                    v,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{BalancerStatus, UpstreamStatus};
    use super::*;

    fn proc(id: u32, name: &str, instance: u32, pid: Option<i32>, status: Status) -> ProcessInfo {
        ProcessInfo {
            id,
            name: name.into(),
            instance,
            pid,
            status,
            restarts: 0,
            uptime_ms: 1500,
            cpu: 12.5,
            memory: 41_234_432,
            mode: "cluster".into(),
            unstable_restarts: 0,
            restart_reasons: BTreeMap::new(),
            restart_reason: None,
            autoscale: None,
            ready: None,
        }
    }

    fn snapshot(processes: Vec<ProcessInfo>, balancers: Vec<BalancerScrape>) -> String {
        render(&Snapshot {
            version: "0.1.0",
            processes: &processes,
            daemon: DaemonStats {
                cpu_seconds: 1.25,
                resident_bytes: 4096,
                virtual_bytes: 8192,
                open_fds: 12,
                max_fds: 1024,
                start_time_seconds: 1_700_000_000,
            },
            logs: LogCounters {
                written: 7,
                write_errors: 1,
                follower_lag: 2,
            },
            balancers,
        })
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn every_family_has_help_and_type_once() {
        let text = snapshot(
            vec![
                proc(0, "api", 0, Some(10), Status::Online),
                proc(1, "api", 1, Some(11), Status::Online),
            ],
            vec![],
        );
        let mut seen = std::collections::BTreeSet::new();
        for l in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let name = l.split(' ').nth(2).unwrap();
            assert!(seen.insert(name.to_string()), "TYPE twice for {name}");
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "no HELP for {name}"
            );
        }
        // Every sample belongs to a declared family.
        for l in lines(&text) {
            let name = l.split(['{', ' ']).next().unwrap();
            assert!(seen.contains(name), "sample of undeclared family: {l}");
        }
    }

    #[test]
    fn autoscaled_apps_have_bounds_and_event_counters() {
        let mut a = proc(0, "api", 0, Some(10), Status::Online);
        a.autoscale = Some(crate::api::AutoscaleInfo {
            min: 1,
            max: 4,
            desired: 2,
            scale_ups: 3,
            scale_downs: 1,
            now: None,
            events: Vec::new(),
        });
        let mut b = a.clone();
        b.id = 1;
        b.instance = 1;
        let text = snapshot(
            vec![a, b, proc(2, "plain", 0, Some(12), Status::Online)],
            vec![],
        );
        for want in [
            r#"cohort_autoscale_instances{app="api",bound="min"} 1"#,
            r#"cohort_autoscale_instances{app="api",bound="max"} 4"#,
            r#"cohort_autoscale_instances{app="api",bound="desired"} 2"#,
            r#"cohort_autoscale_events_total{app="api",direction="up"} 3"#,
            r#"cohort_autoscale_events_total{app="api",direction="down"} 1"#,
        ] {
            assert_eq!(
                lines(&text).iter().filter(|l| **l == want).count(),
                1,
                "{want}\n{text}"
            );
        }
        assert!(!text.contains(r#"autoscale_instances{app="plain""#));
        let none = snapshot(vec![proc(0, "plain", 0, Some(1), Status::Online)], vec![]);
        assert!(!none.contains("cohort_autoscale"));
    }

    #[test]
    fn per_process_series_and_labels() {
        let mut p = proc(3, "api", 1, Some(4242), Status::Online);
        p.restarts = 5;
        p.restart_reasons = BTreeMap::from([("crash".into(), 3), ("manual".into(), 1)]);
        let stopped = proc(4, "worker", 0, None, Status::Stopped);
        let text = snapshot(vec![p, stopped], vec![]);
        let want = [
            r#"cohort_process_info{app="api",app_instance="1",id="3",mode="cluster",pid="4242"} 1"#,
            r#"cohort_process_info{app="worker",app_instance="0",id="4",mode="cluster",pid=""} 1"#,
            r#"cohort_process_resident_memory_bytes{app="api",app_instance="1",id="3",mode="cluster",pid="4242"} 41234432"#,
            r#"cohort_process_cpu_usage_ratio{app="api",app_instance="1",id="3",mode="cluster",pid="4242"} 0.125"#,
            r#"cohort_process_uptime_seconds{app="api",app_instance="1",id="3",mode="cluster",pid="4242"} 1.5"#,
            r#"cohort_process_restarts_total{app="api",app_instance="1",id="3",mode="cluster",reason="crash"} 3"#,
            r#"cohort_process_restarts_total{app="api",app_instance="1",id="3",mode="cluster",reason="manual"} 1"#,
            r#"cohort_process_restarts_total{app="api",app_instance="1",id="3",mode="cluster",reason="reload"} 0"#,
            r#"cohort_process_restarts_total{app="api",app_instance="1",id="3",mode="cluster",reason="other"} 1"#,
            r#"cohort_process_status{app="api",app_instance="1",id="3",mode="cluster",status="online"} 1"#,
            r#"cohort_process_status{app="worker",app_instance="0",id="4",mode="cluster",status="stopped"} 1"#,
            r#"cohort_app_instances_desired{app="api",mode="cluster"} 1"#,
            r#"cohort_app_instances_ready{app="api",mode="cluster"} 1"#,
            r#"cohort_app_instances_desired{app="worker",mode="cluster"} 0"#,
            r#"cohort_app_instances_ready{app="worker",mode="cluster"} 0"#,
        ];
        let got = lines(&text);
        for w in want {
            assert!(got.contains(&w), "missing {w}\n{text}");
        }
        // A slot with no OS process has no memory, cpu or uptime series.
        assert!(!text.contains(r#"cohort_process_resident_memory_bytes{app="worker""#));
        assert!(!text.contains(r#"cohort_process_uptime_seconds{app="worker""#));
    }

    #[test]
    fn desired_and_ready_by_status() {
        // (statuses of one app's instances, desired, ready)
        let cases: [(&[Status], u32, u32); 5] = [
            (&[Status::Online, Status::Online], 2, 2),
            (&[Status::Online, Status::Launching], 2, 1),
            (&[Status::Errored, Status::Online], 2, 1),
            (&[Status::Stopped, Status::Online], 1, 1),
            (&[Status::WaitingRestart, Status::Stopping], 2, 0),
        ];
        for (statuses, desired, ready) in cases {
            let procs = statuses
                .iter()
                .enumerate()
                .map(|(i, s)| proc(i as u32, "a", i as u32, Some(100 + i as i32), *s))
                .collect();
            let text = snapshot(procs, vec![]);
            let got = lines(&text);
            let d = format!(r#"cohort_app_instances_desired{{app="a",mode="cluster"}} {desired}"#);
            let r = format!(r#"cohort_app_instances_ready{{app="a",mode="cluster"}} {ready}"#);
            assert!(got.contains(&d.as_str()), "{statuses:?}: want {d}");
            assert!(got.contains(&r.as_str()), "{statuses:?}: want {r}");
        }
    }

    #[test]
    fn daemon_and_log_series() {
        let text = snapshot(vec![], vec![]);
        let got = lines(&text);
        for w in [
            r#"cohort_info{version="0.1.0"} 1"#,
            "process_cpu_seconds_total 1.25",
            "process_resident_memory_bytes 4096",
            "process_virtual_memory_bytes 8192",
            "process_open_fds 12",
            "process_max_fds 1024",
            "process_start_time_seconds 1700000000",
            "cohort_log_lines_written_total 7",
            r#"cohort_log_lines_dropped_total{reason="write_error"} 1"#,
            r#"cohort_log_lines_dropped_total{reason="follower_lag"} 2"#,
        ] {
            assert!(got.contains(&w), "missing {w}\n{text}");
        }
    }

    #[test]
    fn balancer_series() {
        let up = |address: &str, state: &str| UpstreamStatus {
            address: address.into(),
            state: state.into(),
            requests: 10,
            errors: 2,
            active: 1,
            weight: 3,
        };
        let text = snapshot(
            vec![],
            vec![
                BalancerScrape {
                    name: "front".into(),
                    instance: 0,
                    status: Some(BalancerStatus {
                        upstreams: vec![up("127.0.0.1:3001", "up"), up("127.0.0.1:3002", "down")],
                    }),
                },
                BalancerScrape {
                    name: "gone".into(),
                    instance: 0,
                    status: None,
                },
            ],
        );
        let got = lines(&text);
        for w in [
            r#"cohort_balancer_up{balancer="front",app_instance="0"} 1"#,
            r#"cohort_balancer_up{balancer="gone",app_instance="0"} 0"#,
            r#"cohort_balancer_upstream_up{balancer="front",app_instance="0",upstream="127.0.0.1:3001"} 1"#,
            r#"cohort_balancer_upstream_up{balancer="front",app_instance="0",upstream="127.0.0.1:3002"} 0"#,
            r#"cohort_balancer_upstream_requests_total{balancer="front",app_instance="0",upstream="127.0.0.1:3001"} 10"#,
            r#"cohort_balancer_upstream_errors_total{balancer="front",app_instance="0",upstream="127.0.0.1:3001"} 2"#,
            r#"cohort_balancer_upstream_active{balancer="front",app_instance="0",upstream="127.0.0.1:3001"} 1"#,
            r#"cohort_balancer_upstream_weight{balancer="front",app_instance="0",upstream="127.0.0.1:3001"} 3"#,
        ] {
            assert!(got.contains(&w), "missing {w}\n{text}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let p = proc(0, "we\"ird\\na\nme", 0, Some(1), Status::Online);
        let text = snapshot(vec![p], vec![]);
        assert!(
            text.contains(r#"cohort_process_info{app="we\"ird\\na\nme",app_instance="0""#),
            "{text}"
        );
    }

    #[test]
    fn seconds_and_ratios_print_without_float_noise() {
        for (ms, want) in [
            (0, "0"),
            (1000, "1"),
            (1500, "1.5"),
            (1234, "1.234"),
            (10, "0.01"),
        ] {
            assert_eq!(secs(ms), want, "{ms}");
        }
        for (pct, want) in [(0.0, "0"), (12.5, "0.125"), (100.0, "1"), (250.3, "2.503")] {
            assert_eq!(ratio(pct), want, "{pct}");
        }
    }
}
