//! Starting one process: fork + exec with pipes for stdout/stderr, its own process group
//! (so a stop reaches its children), inherited sockets at fd 3.. and `LISTEN_PID` set to its own pid.
//!
//! Written on fork/execve directly rather than `std::process::Command` because systemd's socket
//! activation needs `LISTEN_PID` = the child's own pid, which is only known after fork; std builds the
//! environment before fork and offers no way to patch it. Everything the child does between fork and
//! exec is async-signal-safe: buffers are allocated before fork, the child only writes into them.

use anyhow::{anyhow, Context, Result};
use nix::fcntl::OFlag;
use nix::unistd::Pid;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// What to run.
pub struct Command<'a> {
    /// Absolute path of the program to execute.
    pub program: &'a str,
    /// argv, argv[0] included.
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: &'a Path,
    /// Descriptors the child gets at 3, 4, … (in this order).
    pub fds: Vec<RawFd>,
    /// Add `LISTEN_PID=<child pid>` to the environment (socket activation).
    pub listen_pid: bool,
    /// A cgroup's `cgroup.procs` the child writes itself into before exec (daemon::contain).
    pub cgroup_procs: Option<RawFd>,
}

/// A started process: its pid (also its process group id) and its output pipes.
pub struct Spawned {
    pub pid: Pid,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

fn cstring(s: &str, what: &str) -> Result<CString> {
    CString::new(s).map_err(|_| anyhow!("{what} contains a NUL byte: {s:?}"))
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).context("creating a pipe")
}

/// Duplicates `fd` to a number ≥ 64 (close-on-exec) so the child's dup2 to 3.. never clobbers a source.
fn dup_high(fd: RawFd) -> Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor that we own.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 64) };
    if new < 0 {
        return Err(std::io::Error::last_os_error()).context("duplicating a socket for a child");
    }
    // SAFETY: `new` is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Forks and executes `cmd`. Returns once the exec succeeded (or with the reason it failed).
pub fn spawn(cmd: &Command) -> Result<Spawned> {
    let path = cstring(cmd.program, "program path")?;
    let argv: Vec<CString> = cmd
        .argv
        .iter()
        .map(|a| cstring(a, "argument"))
        .collect::<Result<_>>()?;
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());

    let mut env_bufs: Vec<Vec<u8>> = Vec::with_capacity(cmd.env.len() + 1);
    for (k, v) in &cmd.env {
        if k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(anyhow!("invalid environment variable {k:?}"));
        }
        let mut b = Vec::with_capacity(k.len() + v.len() + 2);
        b.extend_from_slice(k.as_bytes());
        b.push(b'=');
        b.extend_from_slice(v.as_bytes());
        b.push(0);
        env_bufs.push(b);
    }
    const LISTEN_PID: &[u8] = b"LISTEN_PID=";
    let listen_pid_slot = if cmd.listen_pid {
        let mut b = LISTEN_PID.to_vec();
        b.extend_from_slice(&[0u8; 24]);
        env_bufs.push(b);
        Some(env_bufs.len() - 1)
    } else {
        None
    };
    let mut env_ptrs: Vec<*const libc::c_char> = env_bufs
        .iter()
        .map(|b| b.as_ptr() as *const libc::c_char)
        .collect();
    env_ptrs.push(std::ptr::null());
    let listen_pid_digits: *mut u8 = match listen_pid_slot {
        // SAFETY: the buffer has LISTEN_PID.len() + 24 bytes; we point just after the '='.
        Some(i) => unsafe { env_bufs[i].as_mut_ptr().add(LISTEN_PID.len()) },
        None => std::ptr::null_mut(),
    };
    let cwd = cstring(&cmd.cwd.to_string_lossy(), "working directory")?;

    let devnull = nix::fcntl::open(
        "/dev/null",
        OFlag::O_RDWR | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .context("opening /dev/null")?;
    // SAFETY: open returned a new descriptor.
    let devnull = unsafe { OwnedFd::from_raw_fd(devnull) };
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (status_r, status_w) = pipe()?;
    let high: Vec<OwnedFd> = cmd
        .fds
        .iter()
        .map(|fd| dup_high(*fd))
        .collect::<Result<_>>()?;
    let high_raw: Vec<RawFd> = high.iter().map(|f| f.as_raw_fd()).collect();
    let nofile = crate::sys::limits::child_nofile();

    // SAFETY: after fork the child calls only async-signal-safe functions on memory prepared above.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error()).context("fork failed (too many processes?)");
    }
    if pid == 0 {
        // Child.
        unsafe {
            child_exec(ChildPlan {
                path: path.as_ptr(),
                argv: argv_ptrs.as_ptr(),
                envp: env_ptrs.as_ptr(),
                cwd: cwd.as_ptr(),
                stdin: devnull.as_raw_fd(),
                stdout: out_w.as_raw_fd(),
                stderr: err_w.as_raw_fd(),
                fds: &high_raw,
                listen_pid_digits,
                status: status_w.as_raw_fd(),
                cgroup_procs: cmd.cgroup_procs.unwrap_or(-1),
                nofile,
            })
        }
    }
    drop(status_w);
    drop(out_w);
    drop(err_w);
    drop(high);
    // The exec closes `status_r`'s peer (close-on-exec): EOF means success; 8 bytes mean failure.
    let mut buf = [0u8; 8];
    let mut got = 0;
    loop {
        match nix::unistd::read(status_r.as_raw_fd(), &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => {
                got += n;
                if got == buf.len() {
                    break;
                }
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(anyhow!("reading the child's exec status: {e}")),
        }
    }
    if got == 8 {
        let stage = i32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let errno = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
        // Reap it here; if the reaper got there first this fails harmlessly.
        let _ = nix::sys::wait::waitpid(Pid::from_raw(pid), None);
        let err = std::io::Error::from_raw_os_error(errno);
        let what = match stage {
            1 => format!("cannot enter the working directory {}", cmd.cwd.display()),
            2 => "cannot set up the inherited sockets".to_string(),
            _ => format!("cannot execute {}", cmd.program),
        };
        // The io::Error stays in the chain: the supervisor tells transient errnos from the rest.
        return Err(anyhow::Error::new(err).context(what));
    }
    Ok(Spawned {
        pid: Pid::from_raw(pid),
        stdout: out_r,
        stderr: err_r,
    })
}

struct ChildPlan<'a> {
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    fds: &'a [RawFd],
    listen_pid_digits: *mut u8,
    status: RawFd,
    /// -1: none.
    cgroup_procs: RawFd,
    /// The open-files limit the user had (the daemon raised its own).
    nofile: Option<libc::rlimit>,
}

/// Runs in the child between fork and exec. Never returns.
unsafe fn child_exec(p: ChildPlan) -> ! {
    let fail = |stage: i32| -> ! {
        let errno = *libc::__errno_location();
        let mut buf = [0u8; 8];
        buf[..4].copy_from_slice(&stage.to_ne_bytes());
        buf[4..].copy_from_slice(&errno.to_ne_bytes());
        libc::write(p.status, buf.as_ptr() as *const libc::c_void, 8);
        libc::_exit(127);
    };
    // Its own process group (a stop reaches its children), but the daemon's session: a session
    // per process would also be a scheduling autogroup per process, which measured ~8% slower
    // and with 60-90 ms p99 stalls for two busy workers beside a load generator.
    libc::setpgid(0, 0);
    // Into the run's cgroup before anything else, so every descendant is born in it. A failure
    // leaves the environment marker to catch descendants.
    if p.cgroup_procs >= 0 {
        libc::write(p.cgroup_procs, b"0".as_ptr() as *const libc::c_void, 1);
    }
    if let Some(lim) = &p.nofile {
        libc::setrlimit(libc::RLIMIT_NOFILE, lim);
    }
    // Signals: an empty mask and default dispositions (the daemon ignores SIGPIPE; apps must not).
    let mut set: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut set);
    libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    for sig in 1..32 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
    if libc::dup2(p.stdin, 0) < 0 || libc::dup2(p.stdout, 1) < 0 || libc::dup2(p.stderr, 2) < 0 {
        fail(2);
    }
    for (i, fd) in p.fds.iter().enumerate() {
        if libc::dup2(*fd, 3 + i as RawFd) < 0 {
            fail(2);
        }
    }
    if !p.listen_pid_digits.is_null() {
        let mut pid = libc::getpid() as u32;
        let mut digits = [0u8; 12];
        let mut n = 0;
        loop {
            digits[n] = b'0' + (pid % 10) as u8;
            n += 1;
            pid /= 10;
            if pid == 0 {
                break;
            }
        }
        for i in 0..n {
            *p.listen_pid_digits.add(i) = digits[n - 1 - i];
        }
        *p.listen_pid_digits.add(n) = 0;
    }
    if libc::chdir(p.cwd) < 0 {
        fail(1);
    }
    libc::execve(p.path, p.argv, p.envp);
    fail(3)
}
