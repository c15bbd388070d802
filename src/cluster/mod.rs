//! Cluster mode: N workers of one app share its listening sockets, which the daemon binds and
//! holds (it is never in the request path). `sockets` owns the sockets, `steering` the kernel-level
//! steering (cBPF), `migrate` the `tcp_migrate_req` decision (a dead worker's queue moves to a live one),
//! `node_ipc` speaks Node's IPC channel (cluster-worker emulation); the supervisor
//! (src/daemon/supervisor/slots.rs) drives them. See docs/cluster.md.

pub mod holder;
pub mod migrate;
pub mod node_ipc;
pub mod sockets;
pub mod steering;

/// The Node.js preload (drain on shutdown), written under COHORT_HOME at daemon start.
pub const NODE_SHIM: &str = include_str!("../shim/node.cjs");
