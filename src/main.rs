//! cohort: a production process manager, cluster runner and load balancer in one binary.
//!
//! This file is the entry point only: it parses the command line and hands over to the module that
//! owns the command. See docs/ and the design notes for the map of the project.

use clap::Parser;
use cohort::cli::{Cli, Command};
use cohort::{balancer, cli, daemon, home, startup};

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Balance(args) => balancer::run_foreground(args),
        command => with_home(|home| match command {
            Command::Daemon(args) if args.preflight => {
                println!("{}", daemon::handover::preflight_line());
                0
            }
            Command::Daemon(args) => daemon::run(
                home,
                args.if_absent,
                args.adopt_state_fd,
                args.fallback_exe_fd,
                args.failed_update,
            ),
            Command::Run(args) => daemon::foreground::run(args.into(), home),
            Command::Startup(args) => startup::install(args.into(), home),
            Command::Unstartup(args) => startup::uninstall(args.into(), home),
            command => client(command, home),
        }),
    };
    std::process::exit(code);
}

fn with_home(f: impl FnOnce(home::Home) -> i32) -> i32 {
    match home::Home::from_env() {
        Ok(h) => f(h),
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

fn client(command: Command, home: home::Home) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(cli::commands::run(command, home)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}
