//! cohort: a production process manager, cluster runner and load balancer in one binary.
//!
//! This file is the entry point only: it parses the command line and hands over to the module that
//! owns the command. See `../shared/design.md` (and docs/) for the map of the project.

mod balancer;
#[allow(dead_code)]
mod cluster;

use clap::Parser;

/// Top-level CLI (filled in by the supervisor core).
#[derive(Parser, Debug)]
#[command(name = "cohort", version, about)]
enum Cli {
    /// Run an HTTP or TCP load balancer in the foreground.
    Balance(balancer::BalanceArgs),
    /// INTERNAL test harness (not a user command): run one cluster app in the foreground.
    #[command(name = "__cluster-demo", hide = true)]
    ClusterDemo(cluster::demo::DemoArgs),
}

fn main() {
    let code = match Cli::parse() {
        Cli::Balance(args) => balancer::run_foreground(args),
        Cli::ClusterDemo(args) => cluster::demo::run(args),
    };
    std::process::exit(code);
}
