//! Balancers' figures for /metrics: every balancer's `GET /status` at once (through
//! [`crate::daemon::balancer_status`]), each bounded by a short deadline.

use super::{BalancerScrape, BalancerStatus};
use crate::api::ProcessInfo;
use crate::daemon::supervisor::Handle;

/// Scrapes every balancer process among `processes`.
pub async fn scrape_all(sup: &Handle, processes: &[ProcessInfo]) -> Vec<BalancerScrape> {
    let admins = super::balancer_admins(sup, processes).await;
    let running: std::collections::HashSet<(String, u32)> = processes
        .iter()
        .filter(|p| p.mode == "balancer" && p.pid.is_some())
        .map(|p| (p.name.clone(), p.instance))
        .collect();
    let jobs = admins.into_iter().map(|(name, instance, admin)| {
        let alive = running.contains(&(name.clone(), instance));
        async move {
            let status = match admin {
                Some(addr) if alive => fetch_status(&addr).await.ok(),
                _ => None,
            };
            BalancerScrape {
                name,
                instance,
                status,
            }
        }
    });
    futures_util::future::join_all(jobs).await
}

async fn fetch_status(addr: &str) -> Result<BalancerStatus, String> {
    let body = crate::daemon::balancer_status::fetch(addr).await?;
    serde_json::from_slice(&body).map_err(|e| format!("{addr}: unexpected status document: {e}"))
}
