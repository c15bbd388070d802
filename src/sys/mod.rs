//! Operating-system helpers with no knowledge of the rest of cohort, used by the daemon and the
//! balancer alike: how many CPUs this process may use (`cpus`), the open-files limit (`limits`: raised
//! to the hard limit at start, the user's restored in each app), giving freed heap memory back
//! (`memory`), the client side of systemd's readiness protocol (`sd_notify`), and which systemd
//! service runs this process and whether systemd is restarting it (`systemd_unit`). This is the
//! bottom of the module order: it imports nothing from the crate.

pub mod cpus;
pub mod limits;
pub mod memory;
pub mod sd_notify;
pub mod systemd_unit;
