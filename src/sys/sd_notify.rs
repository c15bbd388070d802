//! The client side of systemd's readiness protocol: send a state line (`READY=1`) to the datagram
//! socket named by `NOTIFY_SOCKET`, a file system path or an abstract-namespace name (`@name`).
//! The daemon's own notify *server*, which hears apps say `READY=1`, is `daemon::notify`.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Tells the service manager this process is ready, if one asked (`NOTIFY_SOCKET` is set).
/// `Ok(false)`: nobody asked; an error: the socket named could not be reached.
pub fn ready() -> io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(path) => send(&path, "READY=1").map(|()| true),
        None => Ok(false),
    }
}

/// Sends `state` (newline-separated `KEY=VALUE` lines) to the notify socket `path`; a leading `@`
/// names a socket in the abstract namespace.
pub fn send(path: &OsStr, state: &str) -> io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    let addr = match path.as_encoded_bytes().strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(path)?,
    };
    sock.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reaches_path_and_abstract_sockets() {
        let dir = std::env::temp_dir().join(format!("cohort-sd-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        let _ = std::fs::remove_dir_all(&dir);

        let name = format!("cohort-sd-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        send(OsStr::new(&format!("@{name}")), "READY=1").unwrap();
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn a_missing_socket_is_an_error() {
        assert!(send(OsStr::new("/nonexistent/cohort/notify.sock"), "READY=1").is_err());
    }
}
