//! Reverse proxy (HTTP and TCP): listeners, upstream pool, strategies, health checks.

/// Arguments of `cohort balance`.
#[derive(clap::Args, Debug)]
pub struct BalanceArgs {}

/// Runs a balancer in the foreground; returns the process exit code.
pub fn run_foreground(_args: BalanceArgs) -> i32 {
    eprintln!("error: the balancer is not built yet");
    2
}
