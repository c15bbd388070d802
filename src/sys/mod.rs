//! Operating-system helpers with no knowledge of the rest of cohort, used by the daemon and the
//! balancer alike: how many CPUs this process may use (`cpus`), the client side of systemd's
//! readiness protocol (`sd_notify`), the open-files limit (`rlimit`) and giving freed heap memory
//! back (`memory`). This is the bottom of the module order: it imports nothing
//! from the crate.

pub mod cpus;
pub mod memory;
pub mod rlimit;
pub mod sd_notify;
