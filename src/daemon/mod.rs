//! The daemon process: one per COHORT_HOME (guarded by a lock file), serving the control API on
//! COHORT_HOME/cohort.sock and running the supervisor. `cohort daemon` runs it in the foreground
//! (what the CLI starts detached, and what a systemd unit runs).

pub mod access;
pub mod api_server;
pub mod balancer_status;
pub mod contain;
pub mod foreground;
pub mod handover;
pub mod holder;
pub mod logs;
pub mod metrics;
pub mod notify;
pub mod probe;
pub mod reaper;
pub mod report;
pub mod routes;
pub mod sampler;
pub mod spawn;
pub mod supervisor;
pub mod web;

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
/// another CLI); otherwise it is an error. With `adopt_state_fd`, this process is a daemon that
/// just re-executed itself in place (`cohort update`): it takes over the state in that memfd, or
/// executes the previous binary (`fallback_exe_fd`) again if it cannot.
pub fn run(
    home: Home,
    if_absent: bool,
    adopt_state_fd: Option<i32>,
    fallback_exe_fd: Option<i32>,
    failed_update: Option<String>,
) -> i32 {
    let result = match adopt_state_fd {
        Some(fd) => run_adopted(home, fd, fallback_exe_fd, failed_update),
        None => run_inner(home, if_absent),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            crate::report!("error: {e:#}");
            1
        }
    }
}

/// Held while a daemon core runs: the lock that makes it the only one for its COHORT_HOME.
pub struct Claim {
    lock: nix::fcntl::Flock<std::fs::File>,
}

impl Claim {
    /// The lock file's descriptor (kept open across an in-place update, so the lock never lapses).
    pub fn lock_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.lock.as_raw_fd()
    }
}

/// Takes `home` again after an in-place update, from the lock descriptor the earlier image held
/// (the same open file, so the lock was never released).
fn claim_adopted(home: &Home, lock_fd: std::os::fd::RawFd) -> Result<Claim> {
    use std::os::fd::FromRawFd;
    handover::set_cloexec(lock_fd, true).context("taking back the lock descriptor")?;
    // SAFETY: the earlier image kept this descriptor open for us; nothing else owns it.
    let file = unsafe { std::fs::File::from_raw_fd(lock_fd) };
    let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(file, e)| {
            // Left open: closing it would release the lock a fallback still needs.
            std::mem::forget(file);
            e
        })
        .context("re-taking the daemon lock after the update")?;
    crate::home::private::set_daemon_home(&home.root);
    std::io::Write::write_all(
        &mut crate::home::private::open_truncate(&home.pid_file())?,
        std::process::id().to_string().as_bytes(),
    )
    .context("writing daemon.pid")?;
    // SAFETY: prctl with these arguments has no memory effects.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    Ok(Claim { lock })
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
    Ok(Some(Claim { lock }))
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

/// The control socket the earlier image listened on (connections queued meanwhile are served).
fn adopt_api_socket(fd: std::os::fd::RawFd) -> Result<tokio::net::UnixListener> {
    use std::os::fd::FromRawFd;
    handover::set_cloexec(fd, true).context("taking back the control socket")?;
    // SAFETY: the earlier image kept this descriptor open for us; nothing else owns it.
    let std_listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
    std_listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixListener::from_std(std_listener))
        .context("adopting the control socket")
}

fn run_inner(home: Home, if_absent: bool) -> Result<i32> {
    let Some(claim) = claim_home(&home)? else {
        if if_absent {
            crate::report!(
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
    record_systemd_unit(&home, if_absent);
    let fds = supervisor::DaemonFds {
        lock: claim.lock_fd(),
        api: -1,
    };
    let adopted = take_from_holder(&home, fds);
    let boot = supervisor::Boot {
        fds: Some(fds),
        reexecs: adopted.as_ref().map(|s| s.reexecs).unwrap_or(0),
        adopted,
        ..Default::default()
    };
    serve_until_stopped(home, claim, boot)
}

/// Names in the home the systemd service that started this daemon (`cohort startup`'s unit, not
/// a CLI's auto-start), so that a CLI finding no daemon while `Restart=` brings this one back
/// waits for it (`api::client`); any other daemon removes a name left by an earlier one.
fn record_systemd_unit(home: &Home, if_absent: bool) {
    let file = home.systemd_unit_file();
    match crate::sys::systemd_unit::own_service().filter(|_| !if_absent) {
        Some(unit) => {
            if let Err(e) =
                crate::home::private::write_atomic(&file, format!("{unit}\n").as_bytes())
            {
                crate::report!("cohort: cannot write {}: {e:#}", file.display());
            }
        }
        None => {
            let _ = std::fs::remove_file(&file);
        }
    }
}

/// What the holder kept while no daemon ran (the previous one died): its state, with the
/// descriptors renumbered to the copies just received, and this daemon's own descriptors.
fn take_from_holder(home: &Home, fds: supervisor::DaemonFds) -> Option<supervisor::State> {
    if !supervisor::holder_enabled() {
        return None;
    }
    let held = holder::take(&home.root)?;
    let mut state = match supervisor::State::parse(&held.state) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cohort: the holder's state cannot be read: {e:#}; starting empty");
            return None;
        }
    };
    let names = state.fds();
    if names.len() != held.fds.len() {
        eprintln!(
            "cohort: the holder's state names {} descriptors but it held {}; starting empty",
            names.len(),
            held.fds.len()
        );
        return None;
    }
    use std::os::fd::IntoRawFd;
    let map = names
        .into_iter()
        .zip(held.fds.into_iter().map(|f| f.into_raw_fd()))
        .collect();
    state.renumber(&map);
    state.forget_unfinished_lines();
    state.daemon = fds;
    eprintln!(
        "cohort: the previous daemon died; adopting {} running processes from the holder",
        state.running()
    );
    Some(state)
}

/// The daemon after an in-place update: the same pid, with the tables, sockets, pipes and
/// channels of the image it replaced.
fn run_adopted(
    home: Home,
    state_fd: i32,
    fallback_exe_fd: Option<i32>,
    failed_update: Option<String>,
) -> Result<i32> {
    let taken = (|| {
        if fallback_exe_fd.is_some() && std::env::var_os("COHORT_TEST_FAIL_TAKEOVER").is_some() {
            anyhow::bail!("COHORT_TEST_FAIL_TAKEOVER is set (a test of the fallback)");
        }
        let state = supervisor::State::parse(&handover::read_state_fd(state_fd)?)?;
        let claim = claim_adopted(&home, state.daemon.lock)?;
        Ok((state, claim))
    })();
    let (state, claim) = match (taken, fallback_exe_fd) {
        (Ok(taken), _) => taken,
        (Err(e), Some(previous)) => {
            crate::report!(
                "cohort: cannot take over in place: {e:#}; going back to the previous binary"
            );
            let err = handover::exec_back(previous, state_fd, &format!("{e:#}"));
            anyhow::bail!("cannot go back to the previous binary either: {err} (the apps run on unsupervised)");
        }
        (Err(e), None) => return Err(e),
    };
    if let Some(fd) = fallback_exe_fd {
        // SAFETY: handed to us by the previous image; nothing else owns it.
        drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
    }
    // SAFETY: the state memfd is ours; it is read and no longer needed.
    drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(state_fd) });
    if let Some(why) = &failed_update {
        crate::report!(
            "cohort: the update in place failed ({why}); the previous binary took over again"
        );
    }
    let boot = supervisor::Boot {
        fds: Some(state.daemon),
        // Going back to the previous binary is no update.
        reexecs: state.reexecs + u32::from(failed_update.is_none()),
        failed_update,
        adopted: Some(state),
    };
    serve_until_stopped(home, claim, boot)
}

fn serve_until_stopped(home: Home, _claim: Claim, boot: supervisor::Boot) -> Result<i32> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = rt.block_on(serve(home.clone(), boot));
    let _ = std::fs::remove_file(home.socket());
    let _ = std::fs::remove_file(home.pid_file());
    rt.shutdown_timeout(Duration::from_millis(100));
    result.map(|()| 0)
}

async fn serve(home: Home, mut boot: supervisor::Boot) -> Result<()> {
    let listener = match boot.fds.filter(|f| boot.adopted.is_some() && f.api >= 0) {
        Some(fds) => adopt_api_socket(fds.api)?,
        None => bind_api_socket(&home)?,
    };
    if let Some(fds) = boot.fds.as_mut() {
        use std::os::fd::AsRawFd;
        fds.api = listener.as_raw_fd();
    }
    let adopted = boot
        .adopted
        .as_ref()
        .map(|s| (s.version.clone(), s.running()));
    let reexecs = boot.reexecs;
    let (handle, supervision) = supervisor::start_with(home.clone(), boot)?;
    let shutdown = std::sync::Arc::new(tokio::sync::Notify::new());
    let api = routes::router(handle.clone(), home.clone(), shutdown.clone());
    let web = web::Web::new(handle.clone(), home.clone(), api.clone());
    let app = access::protect(api.merge(web::control_routes(web.clone())), &home)?;
    web.restore().await;
    match adopted {
        None => crate::report!(
            "cohort: daemon {} started (pid {}) for {}",
            crate::api::VERSION,
            std::process::id(),
            home.root.display()
        ),
        Some((from, running)) => crate::report!(
            "cohort: daemon {} took over in place from {from} (pid {}, update #{reexecs}): {running} processes adopted, none restarted",
            crate::api::VERSION,
            std::process::id(),
        ),
    }
    if let Err(e) = crate::sys::sd_notify::ready() {
        crate::report!("cohort: cannot notify systemd: {e}");
    }
    let mut term = signal(SignalKind::terminate()).context("watching SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("watching SIGINT")?;
    let _hup = signal(SignalKind::hangup()).context("ignoring SIGHUP")?;
    reopen_logs_on_sigusr2(handle.clone())?;
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
            crate::report!("cohort: SIGTERM: stopping every app");
            let _ = handle.shutdown().await;
            shutdown.notify_waiters();
        }
        _ = int.recv() => {
            crate::report!("cohort: SIGINT: stopping every app");
            let _ = handle.shutdown().await;
            shutdown.notify_waiters();
        }
        reason = supervision.failed() => {
            // Logged by the watcher; the daemon exits non-zero rather than answer with no supervisor.
            shutdown.notify_waiters();
            anyhow::bail!("{reason} (the daemon stopped; the next cohort command starts a new one)");
        }
    }
    // Every app is stopped: nothing is left to hold (no port kept alive after `cohort kill`).
    holder::dismiss(&home.root);
    // Give open connections (the `kill` reply) a moment to finish; log followers are cut.
    let _ = tokio::time::timeout(Duration::from_millis(500), server).await;
    crate::report!("cohort: daemon stopped");
    Ok(())
}

/// SIGUSR2 reopens every log file, as PM2's `reloadLogs` (what an external logrotate's postrotate
/// sends).
pub fn reopen_logs_on_sigusr2(handle: supervisor::Handle) -> Result<()> {
    let mut usr2 = signal(SignalKind::user_defined2()).context("watching SIGUSR2")?;
    tokio::spawn(async move {
        while usr2.recv().await.is_some() {
            match handle.reopen_logs().await {
                Ok(n) => crate::report!("cohort: SIGUSR2: {n} log files reopened"),
                Err(e) => crate::report!("cohort: SIGUSR2: cannot reopen the log files: {e}"),
            }
        }
    });
    Ok(())
}
