//! The per-client-IP connection limit (`limits.max_conns_per_ip`, off by default; NGINX's
//! `limit_conn` on `$binary_remote_addr`, HAProxy's `src_conn_cur`): a count per address, taken
//! when a connection is accepted and given back when it closes. Only touched when configured.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Open client connections per IP address, up to `limit` each.
pub struct PerIp {
    limit: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in its address's count; given back on drop.
pub struct IpSlot {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    pub fn new(limit: usize) -> Arc<PerIp> {
        Arc::new(PerIp {
            limit,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A place for one more connection from `ip`, or `None` when it has `limit` open already.
    pub fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let mut open = self.open.lock().ok()?;
        let n = open.entry(ip).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            table: self.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.table.open.lock() {
            if let Some(n) = open.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    open.remove(&self.ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_gets_limit_places_given_back_on_drop() {
        let t = PerIp::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let s1 = t.enter(a).unwrap();
        let _s2 = t.enter(a).unwrap();
        assert!(t.enter(a).is_none());
        let _b1 = t.enter(b).unwrap();
        drop(s1);
        assert!(t.enter(a).is_some());
        drop(_s2);
        drop(_b1);
        assert!(t.open.lock().unwrap().len() <= 1);
    }
}
