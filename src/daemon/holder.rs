//! The holder (`cohort daemon --holder`): a tiny process per home that keeps copies of the
//! descriptors the daemon hands over on an update (listening sockets, log pipes, Node IPC
//! channels) and the latest state, so apps survive the daemon's death (kill -9, OOM): the pipes
//! keep a reader, the channels a peer, the sockets their reuseport group. The next daemon takes
//! them back from it.
//!
//! Protocol on COHORT_HOME/holder.sock (one message per connection): a 9-byte header (kind,
//! state length, descriptor count), the state bytes, then the descriptors in SCM_RIGHTS chunks.
//! Kinds: `S` store (the holder answers one byte once stored), `T` take (the holder answers with
//! an `S` message of what it holds), `X` exit. No async runtime: a blocking loop.

use anyhow::{bail, Context, Result};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Descriptors per SCM_RIGHTS message (the kernel's limit is 253).
const CHUNK: usize = 200;
/// How large the holder makes each pipe it holds, so apps log on while no daemon reads.
const PIPE_SIZE: i32 = 1 << 20;

/// The holder's socket in `home`.
pub fn socket_path(home: &Path) -> PathBuf {
    home.join("holder.sock")
}

/// What is held: the state bytes and the descriptors in the order the state's `keep` gave them.
pub struct Held {
    pub state: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

fn send(stream: &UnixStream, kind: u8, state: &[u8], fds: &[RawFd]) -> Result<()> {
    let mut header = [0u8; 9];
    header[0] = kind;
    header[1..5].copy_from_slice(&(state.len() as u32).to_le_bytes());
    header[5..9].copy_from_slice(&(fds.len() as u32).to_le_bytes());
    let mut w = stream;
    w.write_all(&header)
        .and_then(|()| w.write_all(state))
        .context("writing to the holder socket")?;
    for chunk in fds.chunks(CHUNK) {
        let iov = [IoSlice::new(&[0u8])];
        let cmsg = [ControlMessage::ScmRights(chunk)];
        sendmsg::<()>(stream.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
            .context("passing descriptors over the holder socket")?;
    }
    Ok(())
}

fn receive(stream: &UnixStream) -> Result<(u8, Held)> {
    let mut header = [0u8; 9];
    let mut r = stream;
    r.read_exact(&mut header)
        .context("reading from the holder socket")?;
    let len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]) as usize;
    let count = u32::from_le_bytes([header[5], header[6], header[7], header[8]]) as usize;
    if len > 64 << 20 || count > 1 << 20 {
        bail!("a holder message too large ({len} bytes, {count} descriptors)");
    }
    let mut state = vec![0u8; len];
    r.read_exact(&mut state)
        .context("reading the state from the holder socket")?;
    let mut fds = Vec::with_capacity(count);
    while fds.len() < count {
        let mut byte = [0u8; 1];
        let mut iov = [IoSliceMut::new(&mut byte)];
        let mut space = nix::cmsg_space!([RawFd; CHUNK]);
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .context("receiving descriptors from the holder socket")?;
        if msg.bytes == 0 {
            bail!("the holder socket closed with descriptors missing");
        }
        let before = fds.len();
        for c in msg.cmsgs().context("reading descriptors")? {
            if let ControlMessageOwned::ScmRights(got) = c {
                // SAFETY: the kernel just installed these descriptors in this process.
                fds.extend(
                    got.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        if fds.len() == before {
            bail!("a holder message without its descriptors");
        }
    }
    Ok((header[0], Held { state, fds }))
}

/// Hands `state` and `fds` to the holder of `home`; Err if none answers (the caller starts one).
pub fn store(home: &Path, state: &[u8], fds: &[RawFd]) -> Result<()> {
    let stream = UnixStream::connect(socket_path(home)).context("connecting to the holder")?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    send(&stream, b'S', state, fds)?;
    let mut ack = [0u8; 1];
    (&stream)
        .read_exact(&mut ack)
        .context("waiting for the holder to store")?;
    Ok(())
}

/// Takes what the holder of `home` holds, if one runs and holds anything.
pub fn take(home: &Path) -> Option<Held> {
    let stream = UnixStream::connect(socket_path(home)).ok()?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    send(&stream, b'T', &[], &[]).ok()?;
    match receive(&stream) {
        Ok((_, held)) if !held.state.is_empty() => Some(held),
        Ok(_) => None,
        Err(e) => {
            eprintln!("cohort: cannot take what the holder holds: {e:#}");
            None
        }
    }
}

/// Tells the holder of `home` to exit (after `cohort kill` stopped every app).
pub fn dismiss(home: &Path) {
    if let Ok(stream) = UnixStream::connect(socket_path(home)) {
        let _ = send(&stream, b'X', &[], &[]);
        let mut byte = [0u8; 1];
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = (&stream).read(&mut byte);
    }
}

/// Starts a holder for `home` in its own session (it outlives this process).
pub fn spawn(home: &Path) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("finding this binary")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["daemon", "--holder"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .current_dir("/");
    // SAFETY: setsid and close_range are async-signal-safe. Every descriptor above stderr is
    // closed: the holder must hold only what it is sent (a write end of some daemon pipe would
    // keep its reader waiting for an end that never comes).
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            Ok(())
        });
    }
    cmd.spawn().context("starting the holder")?;
    let _ = home;
    Ok(())
}

/// Runs the holder for `home` until told to exit or the home goes away; returns the exit code.
pub fn run(home: &Path) -> i32 {
    match serve(home) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

fn serve(home: &Path) -> Result<()> {
    // It holds two or more descriptors per app: the daemon's limits, raised the same way.
    crate::sys::limits::raise_nofile_or_report("holder");
    // SAFETY: ignoring SIGPIPE has no memory effects; a vanished peer is an error, not a death.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let path = socket_path(home);
    let _ = std::fs::remove_file(&path);
    let listener = crate::home::private::bind_with_mode(0o600, || UnixListener::bind(&path))
        .with_context(|| format!("binding {}", path.display()))?;
    let ino = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
    };
    let bound = ino(&path);
    let mut held = Held {
        state: Vec::new(),
        fds: Vec::new(),
    };
    loop {
        let mut pfd = libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd, valid for the call.
        let n = unsafe { libc::poll(&mut pfd, 1, 1000) };
        // Our home (or our socket) gone, or replaced by another holder's: nothing to hold for.
        if bound.is_none() || ino(&path) != bound {
            return Ok(());
        }
        if n <= 0 {
            continue;
        }
        let Ok((stream, _)) = listener.accept() else {
            continue;
        };
        if !same_user(&stream) {
            continue;
        }
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let Ok((kind, got)) = receive(&stream) else {
            continue;
        };
        match kind {
            b'S' => {
                for fd in &got.fds {
                    // A pipe grows so its app logs on while no daemon reads; others refuse.
                    // SAFETY: fcntl on a descriptor we own.
                    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
                }
                held = got;
                let _ = (&stream).write_all(&[1]);
            }
            b'T' => {
                let raw: Vec<RawFd> = held.fds.iter().map(|f| f.as_raw_fd()).collect();
                let _ = send(&stream, b'S', &held.state, &raw);
            }
            b'X' => {
                let _ = std::fs::remove_file(&path);
                let _ = (&stream).write_all(&[1]);
                return Ok(());
            }
            _ => {}
        }
    }
}

/// Only our own user talks to the holder (the socket is 0600 too).
fn same_user(stream: &UnixStream) -> bool {
    nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)
        .is_ok_and(|c| c.uid() == nix::unistd::getuid().as_raw())
}
