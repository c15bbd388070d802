//! The daemon process: one per COHORT_HOME (guarded by a lock file), serving the control API on
//! COHORT_HOME/cohort.sock and running the supervisor. `cohort daemon` runs it in the foreground
//! (what the CLI starts detached, and what a systemd unit runs).

pub mod access;
pub mod api_server;
pub mod contain;
pub mod foreground;
pub mod logs;
pub mod notify;
pub mod reaper;
pub mod routes;
pub mod sampler;
pub mod spawn;
pub mod supervisor;

use crate::home::Home;
use anyhow::{Context, Result};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::signal::unix::{signal, SignalKind};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs the daemon until `cohort kill` or SIGTERM/SIGINT; returns the exit code.
/// With `if_absent`, a daemon already running for the home is success (the CLI's auto-start racing
/// another CLI); otherwise it is an error.
pub fn run(home: Home, if_absent: bool) -> i32 {
    match run_inner(home, if_absent) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

/// Held while a daemon core runs: the lock that makes it the only one for its COHORT_HOME.
pub struct Claim {
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// Takes `home` for a daemon core: its lock file, its pid file, and the child-subreaper flag (so
/// orphaned grandchildren of apps are re-parented to us and reaped, never left as zombies).
/// `Ok(None)` when another daemon already holds the home.
pub fn claim_home(home: &Home) -> Result<Option<Claim>> {
    crate::sys::limits::raise_nofile_or_report("daemon");
    home.ensure_dirs()?;
    crate::home::private::set_daemon_home(&home.root);
    let lock_file = crate::home::private::open_write(&home.lock())?;
    let lock = match nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
    {
        Ok(lock) => lock,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Ok(None),
        Err((_, e)) => return Err(e).context("locking the daemon lock file"),
    };
    std::io::Write::write_all(
        &mut crate::home::private::open_truncate(&home.pid_file())?,
        std::process::id().to_string().as_bytes(),
    )
    .context("writing daemon.pid")?;
    crate::home::dump::remove_stale_temps(&home.dump());
    // SAFETY: prctl with these arguments has no memory effects.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    Ok(Some(Claim { _lock: lock }))
}

/// Binds COHORT_HOME/cohort.sock with mode 0600 from the first instant (a umask during bind, so
/// the socket is never, even briefly, reachable by other users); 0660 with the group when the
/// owner shares control (`cohort access`). Every connection's credentials are checked on top
/// (`access`).
pub fn bind_api_socket(home: &Home) -> Result<tokio::net::UnixListener> {
    let sock = home.socket();
    let _ = std::fs::remove_file(&sock);
    let shared = crate::home::access::load(home)?;
    let listener =
        crate::home::private::bind_with_mode(0o600, || tokio::net::UnixListener::bind(&sock))
            .with_context(|| format!("binding {}", sock.display()))?;
    crate::home::access::apply_to_socket(&sock, shared.as_ref())?;
    Ok(listener)
}

fn run_inner(home: Home, if_absent: bool) -> Result<i32> {
    let Some(_claim) = claim_home(&home)? else {
        if if_absent {
            eprintln!(
                "cohort: a daemon already runs for {}; leaving it be",
                home.root.display()
            );
            return Ok(0);
        }
        anyhow::bail!(
            "a daemon already runs for {} (pid {}); stop it with `cohort kill` first, or use another COHORT_HOME",
            home.root.display(),
            std::fs::read_to_string(home.pid_file()).unwrap_or_default().trim()
        );
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = rt.block_on(serve(home.clone()));
    let _ = std::fs::remove_file(home.socket());
    let _ = std::fs::remove_file(home.pid_file());
    rt.shutdown_timeout(Duration::from_millis(100));
    result.map(|()| 0)
}

async fn serve(home: Home) -> Result<()> {
    let listener = bind_api_socket(&home)?;

    let (handle, supervision) = supervisor::start(home.clone())?;
    let shutdown = std::sync::Arc::new(tokio::sync::Notify::new());
    let app = access::protect(
        routes::router(handle.clone(), home.clone(), shutdown.clone()),
        &home,
    )?;
    eprintln!(
        "cohort: daemon {} started (pid {}) for {}",
        crate::api::VERSION,
        std::process::id(),
        home.root.display()
    );
    if let Err(e) = crate::sys::sd_notify::ready() {
        eprintln!("cohort: cannot notify systemd: {e}");
    }
    let mut term = signal(SignalKind::terminate()).context("watching SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("watching SIGINT")?;
    let _hup = signal(SignalKind::hangup()).context("ignoring SIGHUP")?;
    let stop = shutdown.clone();
    let server = tokio::spawn(api_server::serve(listener, app, access::peer, async move {
        stop.notified().await
    }));
    tokio::select! {
        _ = shutdown.notified() => {
            // `cohort kill`: the route already stopped every app and answered.
            shutdown.notify_waiters();
        }
        _ = term.recv() => {
            eprintln!("cohort: SIGTERM: stopping every app");
            let _ = handle.shutdown().await;
            shutdown.notify_waiters();
        }
        _ = int.recv() => {
            eprintln!("cohort: SIGINT: stopping every app");
            let _ = handle.shutdown().await;
            shutdown.notify_waiters();
        }
        reason = supervision.failed() => {
            // Logged by the watcher; the daemon exits non-zero rather than answer with no supervisor.
            shutdown.notify_waiters();
            anyhow::bail!("{reason} (the daemon stopped; the next cohort command starts a new one)");
        }
    }
    // Give open connections (the `kill` reply) a moment to finish; log followers are cut.
    let _ = tokio::time::timeout(Duration::from_millis(500), server).await;
    eprintln!("cohort: daemon stopped");
    Ok(())
}
