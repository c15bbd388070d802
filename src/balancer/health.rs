//! Active health checks: every `interval`, each upstream gets a TCP connect (or, with a `path` in
//! HTTP mode, a `GET path` that must answer 2xx/3xx) within `timeout`. `fall` failures in a row take
//! it down, `rise` successes in a row bring it back (also after a passive failure took it down).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use http::{header, Request};
use tokio::sync::watch;

use super::conn::{connect_http, connect_tcp, UpBody};
use super::pool::Pool;
use crate::config::balancer::Health;

/// Starts one checker task per upstream on the current runtime.
pub fn start(pool: Arc<Pool>, health: Health, http: bool, shutdown: watch::Receiver<bool>) {
    for i in 0..pool.upstreams.len() {
        let pool = pool.clone();
        let health = health.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(health.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.changed() => return,
                }
                let ok = check(&pool, i, &health, http).await;
                record(&pool, i, &health, ok);
            }
        });
    }
}

async fn check(pool: &Pool, i: usize, h: &Health, http: bool) -> bool {
    let u = &pool.upstreams[i];
    let path = match (&h.path, http) {
        (Some(p), true) => p,
        _ => return connect_tcp(u.addr, h.timeout).await.is_ok(),
    };
    let attempt = async {
        let mut sender = connect_http(u.addr, h.timeout, None).await.ok()?;
        let body = UpBody::empty();
        let req = Request::get(path.as_str())
            .header(header::HOST, u.label.as_str())
            .header(header::USER_AGENT, "cohort-health-check")
            .header(header::CONNECTION, "close")
            .body(body)
            .ok()?;
        let resp = sender.send_request(req).await.ok()?;
        let s = resp.status();
        Some(s.is_success() || s.is_redirection())
    };
    matches!(
        tokio::time::timeout(h.timeout, attempt).await,
        Ok(Some(true))
    )
}

fn record(pool: &Pool, i: usize, h: &Health, ok: bool) {
    let u = &pool.upstreams[i];
    if ok {
        u.check_fail_streak.store(0, Relaxed);
        let streak = u.check_ok_streak.fetch_add(1, Relaxed) + 1;
        if !pool.is_healthy(i) && streak >= h.rise {
            eprintln!("balancer: upstream {} is up (health check)", u.label);
            pool.set_healthy(i, true);
        }
    } else {
        u.check_ok_streak.store(0, Relaxed);
        let streak = u.check_fail_streak.fetch_add(1, Relaxed) + 1;
        if pool.is_healthy(i) && streak >= h.fall {
            eprintln!("balancer: upstream {} is down (health check)", u.label);
            pool.set_healthy(i, false);
        }
    }
}
