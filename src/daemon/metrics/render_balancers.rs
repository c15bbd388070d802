//! The balancers' part of the exposition, HAProxy's exporter as the model: per balancer, the
//! responses sent to clients by status class and the queue; per upstream, up/down, requests,
//! responses by class, connection and response errors, retries, active and queued requests, and a
//! response-time histogram (`_bucket{le}`, `_sum`, `_count`, in seconds). A pure function of the
//! balancers' `/status` documents.

use super::render::Out;
use super::{BalancerScrape, BalancerStatus, UpstreamStatus};

/// Status classes in the order they are printed (HAProxy's `code` label values).
const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

/// A per-upstream family: name, type, help, and the figure it prints.
type UpstreamFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&UpstreamStatus) -> u64,
);

const UPSTREAM_FAMILIES: [UpstreamFamily; 10] = [
    (
        "cohort_balancer_upstream_up",
        "gauge",
        "1 when an upstream may receive traffic (health checks pass and no passive failure is being served out), else 0.",
        |u| u64::from(u.state == "up"),
    ),
    (
        "cohort_balancer_upstream_requests_total",
        "counter",
        "Requests (HTTP) or connections (TCP) a balancer sent to an upstream.",
        |u| u.requests,
    ),
    (
        "cohort_balancer_upstream_errors_total",
        "counter",
        "Failed attempts to an upstream (connection and response errors together).",
        |u| u.errors,
    ),
    (
        "cohort_balancer_upstream_connection_errors_total",
        "counter",
        "Connections to an upstream that could not be made (refused, unreachable, connect timeout).",
        |u| u.connect_errors,
    ),
    (
        "cohort_balancer_upstream_response_errors_total",
        "counter",
        "Attempts an upstream failed after the connection was made (timeout, reset, broken response or body).",
        |u| u.response_errors,
    ),
    (
        "cohort_balancer_upstream_retries_total",
        "counter",
        "Attempts made again (on another upstream, or on a fresh connection) after an upstream failed.",
        |u| u.retries,
    ),
    (
        "cohort_balancer_upstream_active",
        "gauge",
        "Requests or tunnels in flight to an upstream.",
        |u| u.active,
    ),
    (
        "cohort_balancer_upstream_queued",
        "gauge",
        "Requests waiting now for a connection to an upstream (its max_conns, or the balancer's max_upstream_conns, reached).",
        |u| u.queued,
    ),
    (
        "cohort_balancer_upstream_queued_total",
        "counter",
        "Requests that had to wait in the queue for a connection to an upstream.",
        |u| u.queued_total,
    ),
    (
        "cohort_balancer_upstream_weight",
        "gauge",
        "An upstream's weight.",
        |u| u.weight,
    ),
];

const RESPONSE_TIME: &str = "cohort_balancer_upstream_response_time_seconds";

pub(super) fn balancers(out: &mut Out, bals: &[BalancerScrape]) {
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
    let answered: Vec<(&BalancerScrape, &BalancerStatus, String)> = bals
        .iter()
        .filter_map(|b| Some((b, b.status.as_ref()?, b.instance.to_string())))
        .collect();
    out.family(
        "cohort_balancer_http_responses_total",
        "counter",
        "HTTP responses a balancer sent to its clients by status class, its own (502, 503, 504, 408, ...) included.",
    );
    for (b, st, inst) in &answered {
        for class in CLASSES {
            let labels = [
                ("balancer", b.name.as_str()),
                ("app_instance", inst),
                ("code", class),
            ];
            let n = st.responses.get(class).copied().unwrap_or(0);
            out.sample("cohort_balancer_http_responses_total", &labels, n);
        }
    }
    out.family(
        "cohort_balancer_queued",
        "gauge",
        "Requests waiting now for an upstream connection, all upstreams of a balancer together.",
    );
    for (b, st, inst) in &answered {
        let labels = [("balancer", b.name.as_str()), ("app_instance", inst)];
        out.sample("cohort_balancer_queued", &labels, st.queued);
    }
    for (name, kind, help, figure) in UPSTREAM_FAMILIES {
        out.family(name, kind, help);
        for (b, st, inst) in &answered {
            for u in &st.upstreams {
                out.sample(name, &upstream_labels(b, inst, u), figure(u));
            }
        }
    }
    out.family(
        "cohort_balancer_upstream_http_responses_total",
        "counter",
        "HTTP responses received from an upstream by status class.",
    );
    for (b, st, inst) in &answered {
        for u in &st.upstreams {
            for class in CLASSES {
                let [l0, l1, l2] = upstream_labels(b, inst, u);
                let n = u.responses.get(class).copied().unwrap_or(0);
                let labels = [l0, l1, l2, ("code", class)];
                out.sample("cohort_balancer_upstream_http_responses_total", &labels, n);
            }
        }
    }
    out.family(
        RESPONSE_TIME,
        "histogram",
        "Time from the start of an attempt on an upstream (queue wait and connect included) to its response head, in seconds.",
    );
    for (b, st, inst) in &answered {
        for u in &st.upstreams {
            let Some(h) = &u.response_time else { continue };
            histogram(out, &upstream_labels(b, inst, u), h);
        }
    }
}

fn upstream_labels<'a>(
    b: &'a BalancerScrape,
    inst: &'a str,
    u: &'a UpstreamStatus,
) -> [(&'static str, &'a str); 3] {
    [
        ("balancer", b.name.as_str()),
        ("app_instance", inst),
        ("upstream", u.address.as_str()),
    ]
}

fn histogram(out: &mut Out, labels: &[(&str, &str); 3], h: &super::HistogramStatus) {
    let bucket = format!("{RESPONSE_TIME}_bucket");
    for (le, n) in h.le.iter().zip(&h.buckets) {
        let le = le.to_string();
        let [l0, l1, l2] = *labels;
        out.sample(&bucket, &[l0, l1, l2, ("le", &le)], n);
    }
    let [l0, l1, l2] = *labels;
    out.sample(&bucket, &[l0, l1, l2, ("le", "+Inf")], h.count);
    out.sample(&format!("{RESPONSE_TIME}_sum"), labels, h.sum_seconds);
    out.sample(&format!("{RESPONSE_TIME}_count"), labels, h.count);
}

#[cfg(test)]
mod tests {
    use super::super::render::tests::{lines, snapshot};
    use super::super::{BalancerScrape, BalancerStatus, HistogramStatus, UpstreamStatus};

    fn up(address: &str, state: &str) -> UpstreamStatus {
        UpstreamStatus {
            address: address.into(),
            state: state.into(),
            requests: 10,
            errors: 2,
            connect_errors: 1,
            response_errors: 1,
            retries: 1,
            active: 1,
            queued: 4,
            queued_total: 9,
            weight: 3,
            responses: [("2xx".to_string(), 7), ("5xx".to_string(), 2)].into(),
            response_time: Some(HistogramStatus {
                le: vec![0.0005, 0.001, 1.0],
                buckets: vec![5, 8, 9],
                count: 9,
                sum_seconds: 0.0125,
            }),
        }
    }

    #[test]
    fn balancer_series() {
        let text = snapshot(
            vec![],
            vec![
                BalancerScrape {
                    name: "front".into(),
                    instance: 0,
                    status: Some(BalancerStatus {
                        upstreams: vec![up("127.0.0.1:3001", "up"), up("127.0.0.1:3002", "down")],
                        queued: 4,
                        responses: [("2xx".to_string(), 7), ("5xx".to_string(), 3)].into(),
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
        let u1 = r#"balancer="front",app_instance="0",upstream="127.0.0.1:3001""#;
        for w in [
            r#"cohort_balancer_up{balancer="front",app_instance="0"} 1"#.to_string(),
            r#"cohort_balancer_up{balancer="gone",app_instance="0"} 0"#.to_string(),
            r#"cohort_balancer_http_responses_total{balancer="front",app_instance="0",code="2xx"} 7"#.to_string(),
            r#"cohort_balancer_http_responses_total{balancer="front",app_instance="0",code="5xx"} 3"#.to_string(),
            r#"cohort_balancer_http_responses_total{balancer="front",app_instance="0",code="other"} 0"#.to_string(),
            r#"cohort_balancer_queued{balancer="front",app_instance="0"} 4"#.to_string(),
            format!("cohort_balancer_upstream_up{{{u1}}} 1"),
            r#"cohort_balancer_upstream_up{balancer="front",app_instance="0",upstream="127.0.0.1:3002"} 0"#.to_string(),
            format!("cohort_balancer_upstream_requests_total{{{u1}}} 10"),
            format!("cohort_balancer_upstream_errors_total{{{u1}}} 2"),
            format!("cohort_balancer_upstream_connection_errors_total{{{u1}}} 1"),
            format!("cohort_balancer_upstream_response_errors_total{{{u1}}} 1"),
            format!("cohort_balancer_upstream_retries_total{{{u1}}} 1"),
            format!("cohort_balancer_upstream_active{{{u1}}} 1"),
            format!("cohort_balancer_upstream_queued{{{u1}}} 4"),
            format!("cohort_balancer_upstream_queued_total{{{u1}}} 9"),
            format!("cohort_balancer_upstream_weight{{{u1}}} 3"),
            format!("cohort_balancer_upstream_http_responses_total{{{u1},code=\"2xx\"}} 7"),
            format!("cohort_balancer_upstream_http_responses_total{{{u1},code=\"1xx\"}} 0"),
            format!("cohort_balancer_upstream_response_time_seconds_bucket{{{u1},le=\"0.0005\"}} 5"),
            format!("cohort_balancer_upstream_response_time_seconds_bucket{{{u1},le=\"1\"}} 9"),
            format!("cohort_balancer_upstream_response_time_seconds_bucket{{{u1},le=\"+Inf\"}} 9"),
            format!("cohort_balancer_upstream_response_time_seconds_sum{{{u1}}} 0.0125"),
            format!("cohort_balancer_upstream_response_time_seconds_count{{{u1}}} 9"),
        ] {
            assert!(got.contains(&w.as_str()), "missing {w}\n{text}");
        }
        assert!(
            !text.contains(r#"balancer="gone",app_instance="0",code"#),
            "a balancer that did not answer has only cohort_balancer_up"
        );
    }

    #[test]
    fn a_balancer_of_an_older_version_still_parses() {
        let old = r#"{"upstreams":[{"address":"a:1","state":"up","requests":3,"errors":0,"active":0,"weight":1}]}"#;
        let st: BalancerStatus = serde_json::from_str(old).expect("old status parses");
        assert_eq!(st.upstreams[0].requests, 3);
        assert!(st.upstreams[0].response_time.is_none());
    }
}
