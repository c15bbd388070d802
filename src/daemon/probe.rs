//! Running one probe check (the I/O; when and what it means is `supervisor::probes`):
//! an HTTP GET (hyper's HTTP/1.1 client over a connection we open ourselves), a TCP connect, or a
//! command run by `sh -c` in the app's folder and environment. Every check is bounded by its
//! timeout; a command that outlives it is killed with its whole process group.
//!
//! A cluster worker is probed through its own slot: the connection is made *from* the loopback
//! address `127.77.S.S` (S = the slot number, 16 bits), and the slot steering program
//! (`cluster::sockets`) sends a connection from that address to slot S's socket whether or not
//! the slot is live, so a probe reaches the one worker it is about (docs/health.md, "Probes").

use crate::config::probes::ProbeCheck;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

pub use crate::cluster::steering::probe_source as steering_source;

/// What one process's probe checks, and how to reach it.
pub struct Target {
    pub check: ProbeCheck,
    /// The process probed (an exec probe gets it as COHORT_PROBE_PID; a path-only HTTP probe of an
    /// app with no known port looks for the port it listens on).
    pub pid: i32,
    /// For a cluster worker: its slot (the connection is steered to it).
    pub slot: Option<u32>,
    /// The app's TCP ports, as the daemon knows them (its cluster sockets, `listen`).
    pub ports: Vec<u16>,
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
    /// Where an exec check's command runs, so that what it leaves behind ends with the check
    /// (None: its process group only).
    pub cells: Option<crate::daemon::contain::CheckCells>,
}

/// Runs the check once, within `timeout`: Ok(what it saw) or Err(why it failed).
pub async fn run(target: &mut Target, timeout: Duration) -> Result<String, String> {
    match target.check.clone() {
        ProbeCheck::Exec { command } => exec(&command, target, timeout).await,
        check => match tokio::time::timeout(timeout, connect_check(check, target)).await {
            Ok(r) => r,
            Err(_) => Err(format!("timed out after {}", ms(timeout))),
        },
    }
}

fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

async fn connect_check(check: ProbeCheck, target: &mut Target) -> Result<String, String> {
    match check {
        ProbeCheck::Tcp { host, port } => {
            let addr = resolve(host.as_deref(), port).await?;
            connect(addr, target.slot).await?;
            Ok(format!("connected to {addr}"))
        }
        ProbeCheck::Http {
            host,
            port,
            path,
            status,
        } => {
            let port = match port {
                Some(p) => p,
                None => app_port(target)?,
            };
            let addr = resolve(host.as_deref(), port).await?;
            let stream = connect(addr, target.slot).await?;
            let host = host.as_deref().unwrap_or("127.0.0.1");
            let code = http_request(stream, "GET", host, port, &path, None).await?;
            if ProbeCheck::status_ok(&status, code) {
                Ok(format!("HTTP {code}"))
            } else {
                Err(format!("HTTP {code} from {addr}{path}"))
            }
        }
        ProbeCheck::Exec { .. } => Err("not a network check".into()),
    }
}

/// The port of a path-only HTTP probe: the app's known port, else the one the process listens on.
fn app_port(target: &mut Target) -> Result<u16, String> {
    if let Some(p) = target.ports.first() {
        return Ok(*p);
    }
    match listening_ports(target.pid).first() {
        Some(p) => {
            // Found once per run: the app does not move its port.
            target.ports.push(*p);
            Ok(*p)
        }
        None => Err(format!(
            "pid {} listens on no TCP port yet (or give the probe a port)",
            target.pid
        )),
    }
}

async fn resolve(host: Option<&str>, port: u16) -> Result<SocketAddr, String> {
    let Some(host) = host else {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let mut addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?;
    addrs.next().ok_or_else(|| format!("{host} has no address"))
}

/// Connects to `addr`, from the slot's steering address when probing a cluster worker over IPv4
/// loopback (or a local wildcard).
async fn connect(addr: SocketAddr, slot: Option<u32>) -> Result<tokio::net::TcpStream, String> {
    let sock = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .map_err(|e| format!("socket: {e}"))?;
    let addr = match addr.ip() {
        ip if ip.is_unspecified() => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port()),
        _ => addr,
    };
    if let (Some(slot), IpAddr::V4(ip)) = (slot, addr.ip()) {
        if ip.is_loopback() {
            if let Some(src) = steering_source(slot) {
                sock.bind(SocketAddr::new(IpAddr::V4(src), 0))
                    .map_err(|e| format!("binding the probe's source {src}: {e}"))?;
            }
        }
    }
    sock.connect(addr)
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))
}

/// `method path` over `stream` (with one extra header); the response's status.
pub async fn http_request(
    stream: tokio::net::TcpStream,
    method: &str,
    host: &str,
    port: u16,
    path: &str,
    header: Option<(&str, &str)>,
) -> Result<u16, String> {
    use http_body_util::Empty;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut send, conn) = hyper::client::conn::http1::handshake::<_, Empty<bytes::Bytes>>(io)
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let host_header = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, host_header)
        .header(hyper::header::USER_AGENT, "cohort-probe")
        .header(hyper::header::CONNECTION, "close");
    if let Some((k, v)) = header {
        req = req.header(k, v);
    }
    let req = req
        .body(Empty::new())
        .map_err(|e| format!("building the request: {e}"))?;
    let resp = send.send_request(req).await;
    conn.abort();
    resp.map(|r| r.status().as_u16())
        .map_err(|e| format!("HTTP {method} {path}: {e}"))
}

/// Sends `PUT path` to a loopback admin endpoint at `addr` with a header; the status.
pub async fn put(addr: SocketAddr, path: &str, header: (&str, &str)) -> Result<u16, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let host = addr.ip().to_string();
    http_request(stream, "PUT", &host, addr.port(), path, Some(header)).await
}

/// The marker the wrapper shell prints after the command, with its exit status.
const EXIT_MARK: &str = "cohort-probe-exit:";

/// Runs `command` with `sh -c` in the app's folder and environment, in its own process group;
/// killed (the whole group) at the timeout. The daemon's reaper reaps every child, so the exit
/// status comes back through the wrapper shell's output rather than from waitpid.
async fn exec(command: &str, target: &Target, timeout: Duration) -> Result<String, String> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    let script = format!("(eval \"$1\") </dev/null 2>&1; echo \"{EXIT_MARK}$?\"");
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(script)
        .arg("cohort-probe")
        .arg(command)
        .current_dir(&target.cwd)
        .env_clear()
        .envs(target.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0);
    let cell = target.cells.as_ref().map(|cells| (cells, cells.prepare()));
    if let Some((_, prepared)) = &cell {
        cmd.env(&prepared.env.0, &prepared.env.1);
        if let Some(procs) = prepared.cgroup_procs.as_ref().map(|f| f.as_raw_fd()) {
            // SAFETY: the hook only calls write(2), async-signal-safe, on a descriptor that stays
            // open until spawn returns. Joining the cell can fail (the cgroup went away): the
            // marker in the environment still catches what the command leaves.
            unsafe {
                cmd.pre_exec(move || {
                    libc::write(procs, b"0".as_ptr().cast(), 1);
                    Ok(())
                });
            }
        }
    }
    let spawned = cmd.spawn();
    // Whatever the command left in its cell goes when the check ends, however it ends (done,
    // timed out, or the probe task aborted because the process stopped).
    let _cell = cell.map(|(cells, prepared)| CellGuard(cells.clone(), Some(prepared.cell)));
    let mut child = spawned.map_err(|e| format!("cannot run sh: {e}"))?;
    // And whatever is left in its process group (where no cell could hold it).
    let _group = GroupGuard(child.id() as i32);
    let Some(out) = child.stdout.take() else {
        return Err("no output pipe".into());
    };
    // The reaper reaps the child; dropping std's handle never waits.
    drop(child);
    let out = tokio::net::unix::pipe::Receiver::from_owned_fd(std::os::fd::OwnedFd::from(out))
        .map_err(|e| format!("reading the command's output: {e}"))?;
    let read = async move {
        let mut lines = BufReader::new(out).lines();
        let mut said = String::new();
        loop {
            match lines.next_line().await {
                Ok(Some(line)) => match line.strip_prefix(EXIT_MARK) {
                    Some(code) => return Ok((code.trim().parse::<i32>().unwrap_or(-1), said)),
                    None if said.len() < 200 => {
                        if !said.is_empty() {
                            said.push(' ');
                        }
                        said.push_str(line.trim());
                    }
                    None => {}
                },
                Ok(None) => return Err("the command's shell ended without a status".to_string()),
                Err(e) => return Err(format!("reading the command's output: {e}")),
            }
        }
    };
    let outcome = tokio::time::timeout(timeout, read).await;
    let said = |s: &str| {
        let mut s = s.chars().take(160).collect::<String>();
        if !s.is_empty() {
            s = format!(": {s}");
        }
        s
    };
    match outcome {
        Err(_) => Err(format!("timed out after {} (killed)", ms(timeout))),
        Ok(Err(e)) => Err(e),
        Ok(Ok((0, out))) => Ok(format!("exit 0{}", said(&out))),
        Ok(Ok((code, out))) => Err(format!("exit {code}{}", said(&out))),
    }
}

/// Ends the cell of an exec check when dropped (after its process group: dropped last).
struct CellGuard(
    crate::daemon::contain::CheckCells,
    Option<crate::daemon::contain::Cell>,
);

impl Drop for CellGuard {
    fn drop(&mut self) {
        if let Some(cell) = self.1.take() {
            self.0.end(cell);
        }
    }
}

/// Kills the process group of an exec check when dropped.
struct GroupGuard(i32);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.0 > 0 {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(self.0),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// The TCP ports `pid` (or a process under it) listens on, lowest first: its socket descriptors
/// matched against the listening entries of /proc/net/tcp{,6}.
pub fn listening_ports(pid: i32) -> Vec<u16> {
    let mut inodes = std::collections::HashSet::new();
    let mut stack = vec![pid];
    let mut seen = 0;
    while let Some(p) = stack.pop() {
        seen += 1;
        if seen > 64 {
            break;
        }
        if let Ok(dir) = std::fs::read_dir(format!("/proc/{p}/fd")) {
            for e in dir.flatten() {
                if let Ok(link) = std::fs::read_link(e.path()) {
                    let l = link.to_string_lossy();
                    if let Some(n) = l.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                        if let Ok(n) = n.parse::<u64>() {
                            inodes.insert(n);
                        }
                    }
                }
            }
        }
        if let Ok(children) = std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")) {
            stack.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<i32>().ok()),
            );
        }
    }
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        ports.extend(listening_in(&text, &inodes));
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Ports of the listening (state 0A) entries of a /proc/net/tcp table whose inode is in `inodes`.
fn listening_in(table: &str, inodes: &std::collections::HashSet<u64>) -> Vec<u16> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (f.get(1)?, f.get(3)?, f.get(9)?);
            if *state != "0A" || !inodes.contains(&inode.parse::<u64>().ok()?) {
                return None;
            }
            u16::from_str_radix(local.rsplit(':').next()?, 16).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steering_sources() {
        assert_eq!(steering_source(0), Some(Ipv4Addr::new(127, 77, 0, 0)));
        assert_eq!(steering_source(3), Some(Ipv4Addr::new(127, 77, 0, 3)));
        assert_eq!(steering_source(258), Some(Ipv4Addr::new(127, 77, 1, 2)));
        assert_eq!(steering_source(70_000), None);
    }

    #[test]
    fn listening_entries() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 111 1 0 100 0 0 10 0\n\
   1: 0100007F:0BB9 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 222 1 0 100 0 0 10 0\n\
   2: 0100007F:0BB8 0100007F:9C40 01 00000000:00000000 00:00000000 00000000  1000        0 111 1 0 100 0 0 10 0\n";
        let set = std::collections::HashSet::from([111u64]);
        assert_eq!(listening_in(table, &set), vec![3000]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn tcp_and_http_checks() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut t = Target {
            check: ProbeCheck::Tcp { host: None, port },
            pid: std::process::id() as i32,
            slot: None,
            ports: vec![],
            cwd: "/".into(),
            env: vec![],
            cells: None,
        };
        assert!(run(&mut t, Duration::from_secs(2)).await.is_ok());
        drop(l);
        let e = run(&mut t, Duration::from_secs(2)).await.unwrap_err();
        assert!(e.contains("connect to"), "{e}");
    }
}
