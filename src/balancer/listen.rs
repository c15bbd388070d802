//! Listening sockets: inherited from a manager by systemd socket activation (`LISTEN_FDS`,
//! `LISTEN_PID`, first fd is 3) or bound here (SO_REUSEADDR, optional SO_REUSEPORT), and the TLS
//! acceptor (rustls, ALPN h2 and http/1.1).

use std::net::{SocketAddr, TcpListener};
use std::os::fd::FromRawFd;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use socket2::{Domain, Socket, Type};

/// The first socket passed by socket activation, if this process is its addressee.
/// The variables are removed so nothing started later mistakes them for its own.
pub fn inherited() -> Result<Option<TcpListener>> {
    let (Ok(pid), Ok(fds)) = (std::env::var("LISTEN_PID"), std::env::var("LISTEN_FDS")) else {
        return Ok(None);
    };
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(None);
    }
    let n: u32 = fds
        .trim()
        .parse()
        .with_context(|| format!("LISTEN_FDS={fds:?} is not a number"))?;
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    if n == 0 {
        return Ok(None);
    }
    const FIRST_FD: i32 = 3;
    // SAFETY: socket activation hands this process fd 3 as an open listening socket it now owns;
    // nothing else in this process uses fd 3 (it is taken over before any file is opened).
    let sock = unsafe { Socket::from_raw_fd(FIRST_FD) };
    let is_listener = sock.r#type().map(|t| t == Type::STREAM).unwrap_or(false)
        && sock.local_addr().ok().and_then(|a| a.as_socket()).is_some();
    if !is_listener {
        // Give the fd back untouched rather than closing something we do not understand.
        std::mem::forget(sock);
        bail!("LISTEN_FDS is set but fd 3 is not a TCP socket (pass the listening socket as fd 3)");
    }
    sock.set_cloexec(true)?;
    sock.set_nonblocking(true)?;
    Ok(Some(sock.into()))
}

/// Binds `addr` with SO_REUSEADDR (and SO_REUSEPORT when several runtimes each bind their own).
pub fn bind(addr: SocketAddr, reuse_port: bool) -> Result<TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    sock.set_reuse_address(true)?;
    if reuse_port {
        sock.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        let _ = sock.set_only_v6(false);
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into()).with_context(|| {
        format!("cannot listen on {addr} (is the port free? pick another --listen)")
    })?;
    sock.listen(4096)?;
    Ok(sock.into())
}

/// Loads a PEM certificate chain and key into a TLS acceptor offering h2 and http/1.1.
pub fn tls_acceptor(cert: &str, key: &str) -> Result<tokio_rustls::TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read TLS certificate {cert} (give a PEM file)"))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot parse TLS certificate {cert} (give a PEM file)"))?;
    if certs.is_empty() {
        bail!("no certificate found in {cert} (give a PEM file with a CERTIFICATE block)");
    }
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| {
        format!("cannot read TLS key {key} (give a PEM file with a PRIVATE KEY block)")
    })?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS setup")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not match (check tls.cert and tls.key)")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
