//! cohort: a production process manager, cluster runner and load balancer in one binary.
//!
//! The library holds every module so that the binary (`main.rs`), integration tests and fuzz targets
//! reach the same code. Dependencies point one way (docs/design.md, "Layers"): `cli` → `monit`,
//! `startup`, `daemon`, `balancer`; `daemon` → `api` (types, client), `cluster`, `sys`; `balancer` →
//! `sys`; `api`, `startup`, `balancer` → `config` → `home`.

pub mod api;
pub mod balancer;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod home;
pub mod monit;
pub mod startup;
pub mod sys;
