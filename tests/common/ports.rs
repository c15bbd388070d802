//! Free TCP ports. A port is never handed out twice in one test process, and never to two test
//! processes at once (a lock file per port in $TMPDIR/cohort-test-ports, held until the process
//! exits). Ports come from just below the kernel's ephemeral range, so no `bind(…:0)` or outgoing
//! connection elsewhere takes one between the check and the test's use of it.

use std::fs::File;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::sync::Mutex;

/// How many ports below the ephemeral range the harness uses.
const SPAN: u16 = 10_000;

struct Ports {
    next: u16,
    /// Lock files of the ports handed out: kept open (locked) for the life of the process.
    held: Vec<(u16, File)>,
}

static PORTS: Mutex<Option<Ports>> = Mutex::new(None);

/// The range the harness picks from: `SPAN` ports below the ephemeral range (or above it when it
/// starts too low).
fn range() -> (u16, u16) {
    let text =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut it = text
        .split_whitespace()
        .filter_map(|v| v.parse::<u16>().ok());
    let (low, high) = (it.next().unwrap_or(32768), it.next().unwrap_or(60999));
    if low >= 1024 + SPAN {
        (low - SPAN, low)
    } else if high <= u16::MAX - SPAN {
        (high + 1, high + 1 + SPAN)
    } else {
        panic!("needs room for test ports outside the ephemeral range {low}-{high} (/proc/sys/net/ipv4/ip_local_port_range)")
    }
}

/// Takes the cross-process lock of `port` (false: another test process holds it).
fn lock(port: u16) -> Option<File> {
    let dir = std::env::temp_dir().join("cohort-test-ports");
    std::fs::create_dir_all(&dir).ok()?;
    let f = File::create(dir.join(format!("{port}.lock"))).ok()?;
    // SAFETY: flock(2) on a file descriptor we own.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    (rc == 0).then_some(f)
}

/// Whether nothing listens on `port` now, on 127.0.0.1 and on [::] (the daemon binds there).
fn bindable(port: u16) -> bool {
    let v4 = TcpListener::bind(("127.0.0.1", port)).is_ok();
    v4 && match TcpListener::bind(("::", port)) {
        Ok(_) => true,
        // No IPv6 on this machine: the IPv4 check is all there is.
        Err(e) => {
            e.kind() == std::io::ErrorKind::AddrNotAvailable
                || e.raw_os_error() == Some(libc::EAFNOSUPPORT)
        }
    }
}

/// A TCP port nothing listens on now, reserved for this test process.
pub fn free_port() -> u16 {
    let (lo, hi) = range();
    let span = hi - lo;
    let mut guard = PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let ports = guard.get_or_insert_with(|| Ports {
        // Each process starts at its own place in the range, so parallel test binaries rarely
        // even meet on a lock.
        next: lo + ((std::process::id() as u64 * 997) % span as u64) as u16,
        held: Vec::new(),
    });
    for _ in 0..span {
        let port = ports.next;
        ports.next = if port + 1 >= hi { lo } else { port + 1 };
        if ports.held.iter().any(|(p, _)| *p == port) {
            continue;
        }
        let Some(file) = lock(port) else { continue };
        if bindable(port) {
            ports.held.push((port, file));
            return port;
        }
    }
    panic!("no free TCP port left in {lo}..{hi}")
}

/// `n` consecutive free ports, reserved like [`free_port`]'s; returns the first. For configs that
/// number ports per instance (`increment_var = "PORT"`: 3100, 3101, …).
pub fn free_port_run(n: u16) -> u16 {
    for _ in 0..1000 {
        let base = free_port();
        let mut guard = PORTS.lock().unwrap_or_else(|e| e.into_inner());
        let Some(ports) = guard.as_mut() else {
            continue;
        };
        let mut taken = Vec::new();
        for k in 1..n {
            let Some(port) = base.checked_add(k) else {
                break;
            };
            if ports.held.iter().any(|(p, _)| *p == port) {
                break;
            }
            match lock(port) {
                Some(file) if bindable(port) => taken.push((port, file)),
                _ => break,
            }
        }
        if taken.len() + 1 == n as usize {
            ports.held.extend(taken);
            return base;
        }
        // Dropping `taken` releases those locks; `base` stays reserved (unused), which is harmless.
    }
    panic!("no run of {n} consecutive free TCP ports")
}

/// What the kernel shows listening on `port` and connected to it (`ss`, with owning processes;
/// TIME-WAIT left out),
/// for failure messages of tests where connections went somewhere unexpected.
#[allow(dead_code)]
pub fn sockets_on(port: u16) -> String {
    let out = std::process::Command::new("ss")
        .args(["-Htanp", "exclude", "time-wait"])
        .arg(format!("( sport = :{port} or dport = :{port} )"))
        .stdin(std::process::Stdio::null())
        .output();
    match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(e) => format!("(cannot run ss: {e}; install iproute2: scripts/setup)"),
    }
}
