//! Writing to stdout without panicking. `print!` panics when stdout is a closed pipe
//! (`cohort describe all | head`); every command's output goes through `out` instead, which turns
//! that into a `StdoutClosed` error, and `commands::run` ends such a command quietly with status 0
//! (what ripgrep does). SIGPIPE stays ignored, so a daemon socket that closes mid-request is still an
//! error message, never a silent death by signal.

use std::io::Write;

/// stdout was closed by its reader: the command stops quietly.
#[derive(Debug)]
pub struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stdout was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Writes `text` to stdout and flushes it.
pub fn out(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(closed_or)
}

/// An error from writing stdout: `StdoutClosed` for a broken pipe, else the error itself.
pub fn closed_or(e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        anyhow::Error::new(StdoutClosed)
    } else {
        anyhow::Error::new(e).context("writing to stdout")
    }
}

/// True when the command ended because its reader went away.
pub fn is_stdout_closed(e: &anyhow::Error) -> bool {
    e.downcast_ref::<StdoutClosed>().is_some()
}

/// `println!` that returns an error instead of panicking.
macro_rules! outln {
    () => { $crate::cli::output::out("\n") };
    ($($arg:tt)*) => { $crate::cli::output::out(&format!("{}\n", format_args!($($arg)*))) };
}
pub(crate) use outln;
