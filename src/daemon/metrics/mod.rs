//! `/metrics`: everything the daemon knows, in Prometheus's text format. `collect` gathers one
//! snapshot (the supervisor's process list, the daemon's own /proc figures, the log pipeline's
//! counters, each balancer's admin `/status`), `render` turns it into text (a pure function).
//!
//! One scrape target covers everything: balancers are scraped through the daemon, in parallel, each
//! with a short deadline, so a stuck balancer shows as `cohort_balancer_up 0` instead of stalling
//! the scrape.

pub mod balancers;
pub mod render;
mod render_balancers;
pub mod selfstat;

use crate::api::{ProcessInfo, Selector};
pub use crate::daemon::logs::LogCounters;
use crate::daemon::supervisor::Handle;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The daemon process itself (the client libraries' `process_*` family).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DaemonStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: u64,
    pub max_fds: u64,
    pub start_time_seconds: u64,
}

/// One upstream as a balancer's `/status` reports it (fields of docs/balancer.md; those a balancer
/// of an older version does not report read as zero).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UpstreamStatus {
    pub address: String,
    pub state: String,
    #[serde(default)]
    pub requests: u64,
    #[serde(default)]
    pub errors: u64,
    #[serde(default)]
    pub connect_errors: u64,
    #[serde(default)]
    pub response_errors: u64,
    #[serde(default)]
    pub retries: u64,
    #[serde(default)]
    pub active: u64,
    #[serde(default)]
    pub queued: u64,
    #[serde(default)]
    pub queued_total: u64,
    #[serde(default)]
    pub weight: u64,
    /// Responses received by status class (`1xx` … `5xx`, `other`).
    #[serde(default)]
    pub responses: BTreeMap<String, u64>,
    #[serde(default)]
    pub response_time: Option<HistogramStatus>,
}

/// A response-time histogram: cumulative counts per upper bound in seconds (`+Inf` is `count`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct HistogramStatus {
    pub le: Vec<f64>,
    pub buckets: Vec<u64>,
    pub count: u64,
    pub sum_seconds: f64,
}

/// The part of a balancer's `/status` the metrics use.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BalancerStatus {
    pub upstreams: Vec<UpstreamStatus>,
    /// Requests waiting for a connection now (every upstream).
    #[serde(default)]
    pub queued: u64,
    /// Responses sent to clients by status class, the balancer's own answers included.
    #[serde(default)]
    pub responses: BTreeMap<String, u64>,
}

/// One balancer process and what its admin endpoint answered (None: it did not, in time).
#[derive(Debug, Clone)]
pub struct BalancerScrape {
    pub name: String,
    pub instance: u32,
    pub status: Option<BalancerStatus>,
}

/// Everything one scrape shows.
pub struct Snapshot<'a> {
    pub version: &'a str,
    pub processes: &'a [ProcessInfo],
    pub daemon: DaemonStats,
    pub logs: LogCounters,
    pub balancers: Vec<BalancerScrape>,
}

/// Gathers a snapshot and renders it.
pub async fn scrape(sup: &Handle) -> Result<String, String> {
    let processes = sup.list().await?;
    let balancers = balancers::scrape_all(sup, &processes).await;
    let snapshot = Snapshot {
        version: crate::api::VERSION,
        processes: &processes,
        daemon: selfstat::read(),
        logs: crate::daemon::logs::counters(),
        balancers,
    };
    Ok(render::render(&snapshot))
}

/// The admin addresses of the balancer processes among `processes`: (name, instance, address).
pub async fn balancer_admins(
    sup: &Handle,
    processes: &[ProcessInfo],
) -> Vec<(String, u32, Option<String>)> {
    let ids: Vec<Selector> = processes
        .iter()
        .filter(|p| p.mode == "balancer")
        .map(|p| Selector::Id(p.id))
        .collect();
    if ids.is_empty() {
        return Vec::new();
    }
    let details = sup.describe(Selector::Many(ids)).await.unwrap_or_default();
    details
        .into_iter()
        .map(|d| (d.info.name, d.info.instance, d.balancer_admin))
        .collect()
}
