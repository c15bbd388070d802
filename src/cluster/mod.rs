//! Cluster mode: N workers of one app share its listening sockets, which the daemon binds and
//! holds (it is never in the request path). `sockets` owns the sockets and the kernel-level
//! steering, `node_ipc` speaks Node's IPC channel (cluster-worker emulation); the supervisor
//! (src/daemon/supervisor/cluster.rs) drives them. See docs/cluster.md.

pub mod holder;
pub mod node_ipc;
pub mod sockets;

/// The Node.js preload (drain on shutdown), written under COHORT_HOME at daemon start.
pub const NODE_SHIM: &str = include_str!("../shim/node.cjs");
