//! A balancer's HAProxy-style figures end to end: a balancer run by the daemon in front of a real
//! Node backend (tests/fixtures/backend.js) and an address where nothing listens, driven over real
//! sockets; the daemon's `/metrics` (`cohort metrics`) shows the responses by status class per
//! upstream and for the balancer, a response-time histogram whose count is the number of
//! responses, the refused upstream's connection errors and retries, and requests queued while
//! the backend's `max_conns=1` is reached; `describe` shows them too.

mod common;

use common::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(15);

/// The value of the sample `series` (name and labels exactly as printed) in `text`.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Polls `cohort metrics` until `ok` holds for the value of `series`; returns the last text.
fn wait_metric(c: &Cohort, series: &str, ok: impl Fn(f64) -> bool) -> String {
    let mut last = String::new();
    let met = wait_until(T, || {
        last = c.ok(&["metrics"]).stdout;
        value(&last, series).is_some_and(&ok)
    });
    assert!(met, "{series}: {:?} in\n{last}", value(&last, series));
    last
}

#[test]
fn status_classes_histogram_retries_and_queue_in_metrics() {
    let c = Cohort::new();
    let b1 = free_port();
    let dead = free_port(); // nothing listens here: every connect is refused
    let edge = free_port();
    let config = c.write(
        "edge.toml",
        &format!(
            r#"[[apps]]
name = "b1"
script = "{script}"
args = ["{b1}", "b1"]

[[balancers]]
name = "edge"
listen = "127.0.0.1:{edge}"
upstreams = ["127.0.0.1:{b1} max_conns=1", "127.0.0.1:{dead}"]
access_log = false
workers = 1
"#,
            script = fixture("backend.js")
        ),
    );
    c.ok(&["start", config.to_str().expect("utf-8 path")]);
    c.wait_status("edge", "online", T);
    wait_serving(b1, T);
    wait_serving(edge, T);

    let u1 = format!(r#"balancer="edge",app_instance="0",upstream="127.0.0.1:{b1}""#);
    let u0 = format!(r#"balancer="edge",app_instance="0",upstream="127.0.0.1:{dead}""#);
    let bal = r#"balancer="edge",app_instance="0""#;
    // What the readiness probes above left (200s from b1): the figures below add to it.
    let count_b1 = format!("cohort_balancer_upstream_response_time_seconds_count{{{u1}}}");
    let before = wait_metric(&c, &count_b1, |v| v >= 1.0);
    let base = value(&before, &count_b1).unwrap_or(0.0);

    // 20 answers 200 and 10 answers 500, each on a new connection. The first pick of the dead
    // upstream is refused and retried on b1, which then takes every request (the dead one is
    // out for `timeouts.down`).
    let (ok, err) = (20u64, 10u64);
    for i in 0..ok + err {
        let path = if i % 3 == 2 { "/code?n=500" } else { "/ok" };
        let want = if i % 3 == 2 { 500 } else { 200 };
        let r = get(edge, path).unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(r.status, want, "request {i} {path}: {}", r.head);
    }
    let n = base + (ok + err) as f64;
    let ok = base + ok as f64;
    let text = wait_metric(
        &c,
        &format!("cohort_balancer_upstream_response_time_seconds_count{{{u1}}}"),
        |v| v == n,
    );
    let expect = [
        (
            format!("cohort_balancer_upstream_http_responses_total{{{u1},code=\"2xx\"}}"),
            ok,
        ),
        (
            format!("cohort_balancer_upstream_http_responses_total{{{u1},code=\"5xx\"}}"),
            err as f64,
        ),
        (
            format!("cohort_balancer_upstream_http_responses_total{{{u1},code=\"4xx\"}}"),
            0.0,
        ),
        (
            format!("cohort_balancer_http_responses_total{{{bal},code=\"2xx\"}}"),
            ok,
        ),
        (
            format!("cohort_balancer_http_responses_total{{{bal},code=\"5xx\"}}"),
            err as f64,
        ),
        (
            format!("cohort_balancer_upstream_response_time_seconds_bucket{{{u1},le=\"+Inf\"}}"),
            n,
        ),
        (
            format!("cohort_balancer_upstream_response_time_seconds_count{{{u0}}}"),
            0.0,
        ),
        (format!("cohort_balancer_upstream_up{{{u1}}}"), 1.0),
        (format!("cohort_balancer_upstream_queued{{{u1}}}"), 0.0),
    ];
    for (series, want) in &expect {
        assert_eq!(value(&text, series), Some(*want), "{series} in\n{text}");
    }
    // Buckets are cumulative and end at the count; the sum is positive and below 30 s.
    let buckets: Vec<f64> = text
        .lines()
        .filter(|l| {
            l.starts_with(&format!(
                "cohort_balancer_upstream_response_time_seconds_bucket{{{u1},"
            ))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert!(buckets.len() >= 10, "{buckets:?}");
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    let sum = value(
        &text,
        &format!("cohort_balancer_upstream_response_time_seconds_sum{{{u1}}}"),
    );
    assert!(sum.is_some_and(|s| s > 0.0 && s < 30.0), "sum {sum:?}");
    // The refused upstream: connection errors, and the requests retried on b1.
    for family in ["connection_errors_total", "retries_total", "errors_total"] {
        let series = format!("cohort_balancer_upstream_{family}{{{u0}}}");
        assert!(
            value(&text, &series).is_some_and(|v| v >= 1.0),
            "{series} in\n{text}"
        );
    }
    assert_eq!(
        value(
            &text,
            &format!("cohort_balancer_upstream_response_errors_total{{{u0}}}")
        ),
        Some(0.0)
    );

    // Over b1's cap of one connection: three slow requests at once, two of them wait.
    let slow: Vec<_> = (0..3)
        .map(|_| std::thread::spawn(move || get(edge, "/slow?ms=1000").map(|r| r.status)))
        .collect();
    wait_metric(
        &c,
        &format!("cohort_balancer_upstream_queued{{{u1}}}"),
        |v| v >= 1.0,
    );
    for s in slow {
        assert_eq!(
            s.join().ok().and_then(|r| r.ok()),
            Some(200),
            "a slow request"
        );
    }
    let text = wait_metric(
        &c,
        &format!("cohort_balancer_upstream_response_time_seconds_count{{{u1}}}"),
        |v| v == n + 3.0,
    );
    let queued_total = value(
        &text,
        &format!("cohort_balancer_upstream_queued_total{{{u1}}}"),
    );
    assert!(queued_total.is_some_and(|v| v >= 1.0), "{queued_total:?}");
    wait_metric(
        &c,
        &format!("cohort_balancer_upstream_queued{{{u1}}}"),
        |v| v == 0.0,
    );
    // The slow ones took a second each: p99 is in the 1–2.5 s bucket or above.
    let under_one_s = value(
        &text,
        &format!("cohort_balancer_upstream_response_time_seconds_bucket{{{u1},le=\"1\"}}"),
    );
    assert!(under_one_s.is_some_and(|v| v <= n), "{under_one_s:?}");

    // describe shows the classes and the estimated quantiles.
    let described = c.ok(&["describe", "edge"]).stdout;
    let two = format!("2xx {}", ok as u64 + 3);
    for want in [two.as_str(), "5xx 10", "p50 ", "p99 ", "retries "] {
        assert!(described.contains(want), "{want:?} in\n{described}");
    }

    // The refused upstream is down while its failure is served out.
    let ok = wait_until(T, || {
        let _ = get(edge, "/ok");
        let text = c.ok(&["metrics"]).stdout;
        value(&text, &format!("cohort_balancer_upstream_up{{{u0}}}")) == Some(0.0)
    });
    assert!(ok, "the refused upstream is not shown down");
}
