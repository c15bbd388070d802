//! The mechanics of replacing the running daemon in place (`cohort update`), as einhorn's
//! `--with-state-fd` and systemd's `daemon-reexec` do: the state goes to a memfd, the descriptors
//! to keep (listening sockets, log pipes, Node IPC channels, the control socket, the home's lock)
//! lose `FD_CLOEXEC`, and the daemon `execve`s the new binary as `cohort daemon
//! --adopt-state-fd N`. The pid does not change, so the apps stay its children.
//!
//! This module knows nothing of what the state says (the supervisor's `snapshot` does): it runs
//! the new binary's pre-flight, writes and reads the state, flips close-on-exec and execs.
//! If anything fails before the exec takes effect, the caller carries on as if nothing happened.

use anyhow::{anyhow, bail, Context, Result};
use std::ffi::CString;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

/// The version of the state's format; a binary adopts only the format it was built for.
pub const STATE_FORMAT: u32 = 1;

/// What `cohort daemon --preflight` prints: the pre-flight's proof that the binary runs and reads
/// this state format.
pub fn preflight_line() -> String {
    format!(
        "cohort-preflight version={} state-format={STATE_FORMAT}",
        crate::api::VERSION
    )
}

/// How long the new binary's pre-flight may take.
const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `binary daemon --preflight` and checks that it answers with our state format. The error
/// says why the binary cannot take over (the daemon then keeps running).
pub async fn preflight(binary: &Path) -> Result<String> {
    if !binary.is_absolute() {
        bail!("{} is not an absolute path", binary.display());
    }
    let program = binary.to_string_lossy().into_owned();
    let cmd = super::spawn::Command {
        program: &program,
        argv: vec![program.clone(), "daemon".into(), "--preflight".into()],
        env: std::env::vars().collect(),
        cwd: Path::new("/"),
        fds: Vec::new(),
        listen_pid: false,
    };
    // Not std::process: the daemon's reaper would take the child's exit status first. The line
    // on stdout is the proof; the exit status is not needed.
    let child = super::spawn::spawn(&cmd).with_context(|| format!("running {program}"))?;
    let pid = child.pid;
    let read = async {
        let (out, err) = tokio::join!(read_all(child.stdout), read_all(child.stderr));
        (out, err)
    };
    let (out, err) = match tokio::time::timeout(PREFLIGHT_TIMEOUT, read).await {
        Ok(got) => got,
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(-pid.as_raw()),
                nix::sys::signal::Signal::SIGKILL,
            );
            bail!("{program} daemon --preflight did not answer within {PREFLIGHT_TIMEOUT:?}");
        }
    };
    let out = String::from_utf8_lossy(&out);
    let want = preflight_line();
    if out.lines().any(|l| l.trim() == want) {
        return Ok(want);
    }
    let said = match (out.trim(), String::from_utf8_lossy(&err).trim()) {
        ("", "") => "it printed nothing".to_string(),
        (o, "") => format!("it printed {o:?}"),
        (_, e) => format!("it said {:?}", e.lines().last().unwrap_or(e)),
    };
    match out.lines().find(|l| l.starts_with("cohort-preflight ")) {
        Some(other) => bail!(
            "{program} speaks another state format ({other:?}, this daemon needs {want:?}); stop the apps and run `cohort kill` to switch"
        ),
        None => bail!("{program} daemon --preflight failed: {said}"),
    }
}

/// Reads a pipe to its end.
async fn read_all(fd: OwnedFd) -> Vec<u8> {
    let mut out = Vec::new();
    let Ok(pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) else {
        return out;
    };
    let mut buf = [0u8; 4096];
    loop {
        if pipe.readable().await.is_err() {
            break;
        }
        match pipe.try_read(&mut buf) {
            Ok(0) => break,
            Ok(n) if out.len() < 64 * 1024 => out.extend_from_slice(&buf[..n]),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    out
}

/// Sets or clears `FD_CLOEXEC` on `fd`.
pub fn set_cloexec(fd: RawFd, on: bool) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor number; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let new = if on {
        flags | libc::FD_CLOEXEC
    } else {
        flags & !libc::FD_CLOEXEC
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, new) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Writes `state` to a fresh memfd (inherited across exec) and returns it, positioned at 0.
pub fn state_memfd(state: &[u8]) -> Result<OwnedFd> {
    // SAFETY: the name is a NUL-terminated literal; memfd_create returns a new descriptor.
    let fd = unsafe { libc::memfd_create(c"cohort-state".as_ptr(), 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("creating the state memfd");
    }
    // SAFETY: `fd` is new and ours.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    file.write_all(state)
        .and_then(|()| file.seek(SeekFrom::Start(0)).map(|_| ()))
        .context("writing the state memfd")?;
    Ok(file.into())
}

/// Reads the state an earlier daemon left in descriptor `fd` (left open: a failed take-over hands
/// it back to the previous binary; [`set_cloexec`] it once taken over).
pub fn read_state_fd(fd: RawFd) -> Result<Vec<u8>> {
    // SAFETY: fstat on a number; checked before taking ownership so a wrong number is an error,
    // not the closing of someone else's descriptor.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("--adopt-state-fd {fd} is not an open descriptor"));
    }
    // SAFETY: the earlier daemon handed us this descriptor; ManuallyDrop leaves it open.
    let mut file = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut bytes))
        .with_context(|| format!("reading the state from descriptor {fd}"))?;
    Ok(bytes)
}

/// Replaces this process with `binary daemon --adopt-state-fd N`, keeping `keep` (and the state
/// memfd) open across the exec. Returns only on failure, with every descriptor as it was.
pub fn exec(binary: &Path, state: &[u8], keep: &[RawFd]) -> anyhow::Error {
    let memfd = match state_memfd(state) {
        Ok(fd) => fd,
        Err(e) => return e,
    };
    let mut cleared = Vec::new();
    for fd in keep {
        if let Err(e) = set_cloexec(*fd, false) {
            restore(&cleared);
            return anyhow!("keeping descriptor {fd} open across the exec: {e}");
        }
        cleared.push(*fd);
    }
    // The binary running now, held open (even if its path is replaced): the new one goes back
    // to it if it cannot take over (HAProxy's wait-mode fallback, in spirit).
    let this = c"/proc/self/exe";
    // SAFETY: open with a NUL-terminated path; the result is a new descriptor or -1.
    let fallback = unsafe { libc::open(this.as_ptr(), libc::O_PATH) };
    let fallback = (fallback >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fallback) });
    let path = match std::ffi::CString::new(binary.as_os_str().as_bytes()) {
        Ok(p) => p,
        Err(_) => {
            restore(&cleared);
            return anyhow!("a NUL byte in {}", binary.display());
        }
    };
    let err = execve(
        &path,
        libc::AT_FDCWD,
        memfd.as_raw_fd(),
        fallback.as_ref().map(|f| Fallback::Exe(f.as_raw_fd())),
    );
    restore(&cleared);
    drop(memfd);
    anyhow!("cannot execute {}: {err}", binary.display())
}

/// A take-over failed: executes the previous binary (`fallback_fd`, from `--fallback-exe-fd`)
/// again with the same state, so the apps stay supervised. Returns only on failure.
pub fn exec_back(fallback_fd: RawFd, state_fd: RawFd, why: &str) -> std::io::Error {
    let why = CString::new(why.replace('\0', " ")).unwrap_or_default();
    execve(
        c"",
        fallback_fd,
        state_fd,
        Some(Fallback::Failed(why.as_c_str())),
    )
}

/// What the exec tells the next image beside the state: where to go back to, or why it is the
/// previous binary again.
enum Fallback<'a> {
    Exe(RawFd),
    Failed(&'a std::ffi::CStr),
}

fn restore(fds: &[RawFd]) {
    for fd in fds {
        let _ = set_cloexec(*fd, true);
    }
}

/// `execveat(dirfd, path)` (`path` empty: the file `dirfd` names) as `cohort daemon
/// --adopt-state-fd N [--fallback-exe-fd M | --failed-update WHY]`, with this process's
/// environment.
fn execve(
    path: &std::ffi::CStr,
    dirfd: RawFd,
    state_fd: RawFd,
    fallback: Option<Fallback>,
) -> std::io::Error {
    let mut args = vec![
        c"cohort".to_owned(),
        c"daemon".to_owned(),
        c"--adopt-state-fd".to_owned(),
        CString::new(state_fd.to_string()).unwrap_or_default(),
    ];
    match fallback {
        Some(Fallback::Exe(fd)) => {
            args.push(c"--fallback-exe-fd".to_owned());
            args.push(CString::new(fd.to_string()).unwrap_or_default());
        }
        Some(Fallback::Failed(why)) => {
            args.push(c"--failed-update".to_owned());
            args.push(why.to_owned());
        }
        None => {}
    }
    let env: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).ok()
        })
        .collect();
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    let flags = if path.is_empty() {
        libc::AT_EMPTY_PATH
    } else {
        0
    };
    // SAFETY: every pointer points into a CString alive until the call returns (on failure).
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            dirfd,
            path.as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            flags,
        )
    };
    std::io::Error::last_os_error()
}
