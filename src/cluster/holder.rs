//! Who holds a TCP port: the listening socket in /proc/net/tcp{,6} and the process with that
//! socket among its descriptors (only processes we may inspect: our user's, or all as root), so a
//! "port in use" error can say "held by pid 1234 (node)".

use super::sockets::ListenAddr;
use std::path::Path;

/// "cannot listen on 127.0.0.1:3000: address in use, held by pid 1234 (node server.js)": the
/// address as the user wrote it, and who holds it when the OS said it is taken.
pub fn cannot_listen(addr: &ListenAddr, e: &std::io::Error) -> String {
    let held = match (e.raw_os_error(), addr) {
        (Some(libc::EADDRINUSE), ListenAddr::Tcp { port, .. }) => describe(*port)
            .map(|who| format!("address in use, held by {who}"))
            .unwrap_or_else(|| "address in use".into()),
        _ => {
            // Errors of our own (another app holds it) already start with the address.
            let text = e.to_string();
            match text.strip_prefix(&format!("{addr} is ")) {
                Some(rest) => rest.to_string(),
                None => text,
            }
        }
    };
    format!("cannot listen on {addr}: {held} (free it, or pick another port)")
}

/// The inodes of sockets listening on `port`, from the text of /proc/net/tcp or tcp6.
pub fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    const LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local = f.get(1)?;
            let state = f.get(3)?;
            let inode = f.get(9)?.parse::<u64>().ok()?;
            let p = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
            (p == port && *state == LISTEN && inode != 0).then_some(inode)
        })
        .collect()
}

/// "pid 1234 (node server.js)" for the process listening on TCP `port`, if one can be found.
pub fn describe(port: u16) -> Option<String> {
    let mut inodes = Vec::new();
    for t in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(t) {
            inodes.extend(listening_inodes(&text, port));
        }
    }
    if inodes.is_empty() {
        return None;
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|l| wanted.iter().any(|w| Path::new(w) == l.as_path()))
        });
        if holds {
            let cmd = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmd: Vec<String> = cmd
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .take(3)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            return Some(if cmd.is_empty() {
                format!("pid {pid}")
            } else {
                format!("pid {pid} ({})", cmd.join(" "))
            });
        }
    }
    Some("another process".into())
}

#[cfg(test)]
mod tests {
    use super::listening_inodes;

    const TABLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 123456 1 0000000000000000 100 0 0 10 0
   1: 0100007F:0BB8 0100007F:9C40 01 00000000:00000000 00:00000000 00000000  1000        0 0 1 0000000000000000 100 0 0 10 0
   2: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 777 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn finds_the_listener_of_a_port() {
        let cases = [(3000, vec![123456]), (8080, vec![777]), (9999, vec![])];
        for (port, want) in cases {
            assert_eq!(listening_inodes(TABLE, port), want, "{port}");
        }
    }
}
