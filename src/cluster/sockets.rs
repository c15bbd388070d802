//! Listening sockets that the daemon binds and holds for cluster apps.
//!
//! Every worker *slot* of an app gets its own `SO_REUSEPORT` socket per TCP listen address, so the
//! kernel spreads new connections over the slots (Node's own cluster shares one accept queue, which
//! splits load unevenly). The daemon never accepts on these sockets: it only keeps them open, so a
//! worker that dies or reloads never closes the port. Connections queued on a dead worker's slot
//! move to a live slot when the kernel can migrate them (`net.ipv4.tcp_migrate_req`, see
//! [`super::migrate`] and [`SocketGroup::hand_over_queue`]); otherwise they wait there for the
//! replacement worker.
//!
//! Steering: a classic BPF program attached with `SO_ATTACH_REUSEPORT_CBPF` picks a random *live*
//! slot for each new connection, so a slot whose worker is dead or stopping gets no new connections
//! while its queued ones stay (they are not reset). The program indexes the kernel's reuseport group
//! array, whose order this module mirrors (see [`Listener::order`] and docs/cluster.md).
//! A connection from `127.77.S.S` (a probe of slot S's worker, `daemon::probe`) goes to slot S's
//! socket whether or not it is live, so a worker is probed through its own slot.
//!
//! Unix socket paths get one socket shared by every slot (no reuseport for `AF_UNIX` streams).
//!
//! [`SocketTable`] holds the groups of every app of a daemon and refuses (`EADDRINUSE`) an address
//! another app already holds; [`SocketGroup`] is one app's sockets. Both are plain owned values:
//! the supervisor actor owns the table, no locks.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use socket2::{Domain, SockAddr, Socket, Type};

use super::steering::attach_steering;

/// Backlog of every listening socket (Node's default; workers usually call listen() again anyway).
const BACKLOG: i32 = 511;

/// Where an app listens.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ListenAddr {
    /// TCP. `ip: None` means what Node's `listen(port)` without a host means: `[::]` dual-stack,
    /// falling back to `0.0.0.0` when IPv6 is unavailable. `port: 0` lets the first slot's bind pick
    /// a port that every later slot then shares.
    Tcp { ip: Option<IpAddr>, port: u16 },
    /// A Unix stream socket path: one socket shared by all slots.
    Unix(PathBuf),
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Tcp { ip: None, port } => write!(f, "port {port}"),
            ListenAddr::Tcp { ip: Some(ip), port } => write!(f, "{}", SocketAddr::new(*ip, *port)),
            ListenAddr::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// The listening sockets of every app of one daemon.
#[derive(Default)]
pub struct SocketTable {
    groups: HashMap<String, SocketGroup>,
    /// Whether the first TCP socket applies the daemon's `tcp_migrate_req` decision
    /// ([`super::migrate::prepare`]); off in unit tests, which must not change the host.
    prepare_migration: bool,
}

impl SocketTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// The daemon's table: its first TCP socket turns `net.ipv4.tcp_migrate_req` on where the
    /// daemon may (once; see [`super::migrate`]).
    pub fn for_daemon() -> Self {
        Self {
            prepare_migration: true,
            ..Self::default()
        }
    }

    /// Every TCP address `app` listens on (none if it holds no socket).
    pub fn tcp_addrs(&self, app: &str) -> Vec<SocketAddr> {
        self.groups
            .get(app)
            .map(SocketGroup::tcp_addrs)
            .unwrap_or_default()
    }

    /// The group of `app`, created empty on first use.
    pub fn group(&mut self, app: &str) -> &mut SocketGroup {
        self.groups.entry(app.to_string()).or_default()
    }

    /// [`SocketGroup::socket_for`] for `app`, after checking that no *other* app holds the address:
    /// two apps on one port would otherwise silently join one reuseport group (same uid).
    pub fn socket_for(
        &mut self,
        app: &str,
        slot: usize,
        addr: &ListenAddr,
    ) -> io::Result<BorrowedFd<'_>> {
        for (other, group) in &self.groups {
            if other != app && group.conflicts_with(addr) {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{addr} is already held by app '{other}'"),
                ));
            }
        }
        if self.prepare_migration && matches!(addr, ListenAddr::Tcp { .. }) {
            self.prepare_migration = false;
            if let Some(line) = super::migrate::prepare() {
                eprintln!("{line}");
            }
        }
        self.group(app).socket_for(slot, addr)
    }

    /// The worker of `app`'s `slot` is gone: when the kernel migrates queued connections, moves
    /// those queued on the slot to the live slots now ([`SocketGroup::hand_over_queue`]).
    /// Returns whether it did.
    pub fn hand_over_queue(&mut self, app: &str, slot: usize) -> io::Result<bool> {
        match self.groups.get_mut(app) {
            Some(g) if super::migrate::enabled() => g.hand_over_queue(slot),
            _ => Ok(false),
        }
    }

    /// Closes every socket of `app` and forgets it.
    pub fn remove_app(&mut self, app: &str) {
        if let Some(mut g) = self.groups.remove(app) {
            g.close_all();
        }
    }
}

/// The sockets of one app as descriptor numbers, to hand to the next daemon across an in-place
/// re-exec (daemon::handover): the descriptors stay open, steering programs stay attached.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct HeldGroup {
    pub app: String,
    pub listeners: Vec<HeldListener>,
    pub live: Vec<(usize, bool)>,
}

/// One listen address of a [`HeldGroup`].
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct HeldListener {
    pub requested: ListenAddr,
    /// TCP: the bound address, the socket of each slot, the kernel's reuseport order.
    pub bound: Option<SocketAddr>,
    pub socks: Vec<(usize, RawFd)>,
    pub order: Vec<usize>,
    /// Unix: the path and the one socket.
    pub unix: Option<(PathBuf, RawFd)>,
}

impl SocketTable {
    /// Every socket of every app, by descriptor number (they stay owned by this table).
    pub fn held(&self) -> Vec<HeldGroup> {
        self.groups
            .iter()
            .map(|(app, g)| HeldGroup {
                app: app.clone(),
                listeners: g
                    .listeners
                    .iter()
                    .map(|l| match &l.kind {
                        ListenerKind::Tcp {
                            bound,
                            socks,
                            order,
                        } => HeldListener {
                            requested: l.requested.clone(),
                            bound: *bound,
                            socks: socks.iter().map(|(s, k)| (*s, k.as_raw_fd())).collect(),
                            order: order.clone(),
                            unix: None,
                        },
                        ListenerKind::Unix { path, sock } => HeldListener {
                            requested: l.requested.clone(),
                            bound: None,
                            socks: Vec::new(),
                            order: Vec::new(),
                            unix: Some((path.clone(), sock.as_raw_fd())),
                        },
                    })
                    .collect(),
                live: g.live.iter().map(|(s, l)| (*s, *l)).collect(),
            })
            .collect()
    }

    /// Rebuilds a table from the descriptors an earlier daemon held (see [`SocketTable::held`]).
    ///
    /// # Safety
    /// Every descriptor named in `groups` must be open, be the socket it describes, and be owned
    /// by nothing else in this process: the table takes ownership and closes them.
    pub unsafe fn adopt(groups: Vec<HeldGroup>) -> SocketTable {
        use std::os::fd::FromRawFd;
        let mut table = SocketTable::new();
        for g in groups {
            let listeners = g
                .listeners
                .into_iter()
                .map(|l| {
                    let kind = match l.unix {
                        Some((path, fd)) => ListenerKind::Unix {
                            path,
                            sock: Socket::from_raw_fd(fd),
                        },
                        None => ListenerKind::Tcp {
                            bound: l.bound,
                            socks: l
                                .socks
                                .into_iter()
                                .map(|(slot, fd)| (slot, Socket::from_raw_fd(fd)))
                                .collect(),
                            order: l.order,
                        },
                    };
                    Listener {
                        requested: l.requested,
                        kind,
                    }
                })
                .collect();
            table.groups.insert(
                g.app,
                SocketGroup {
                    listeners,
                    live: g.live.into_iter().collect(),
                },
            );
        }
        table
    }
}

/// One app's listening sockets, per listen address and worker slot.
#[derive(Default)]
pub struct SocketGroup {
    listeners: Vec<Listener>,
    /// Slots marked live with [`SocketGroup::set_live`]; every other slot gets no new connections.
    live: BTreeMap<usize, bool>,
}

struct Listener {
    /// The address as first asked for (the lookup key).
    requested: ListenAddr,
    kind: ListenerKind,
}

enum ListenerKind {
    Tcp {
        /// The address every slot binds (port resolved after the first bind of port 0).
        bound: Option<SocketAddr>,
        socks: BTreeMap<usize, Socket>,
        /// Slots in the kernel's reuseport array order: a socket joins at the end when it calls
        /// listen(); when one closes, the last one moves into its index (`__reuseport_detach_sock`).
        order: Vec<usize>,
    },
    Unix {
        path: PathBuf,
        sock: Socket,
    },
}

impl SocketGroup {
    #[cfg(test)]
    pub fn new() -> Self {
        Self::default()
    }

    /// The listening socket of `slot` for `addr`, bound and listening, created on first use (the
    /// same fd for the same slot and address afterwards). Dup it (`try_clone_to_owned`) to hand it
    /// to a worker. A new slot starts *not live*: call [`SocketGroup::set_live`] once its worker
    /// is ready (until then, and if no slot is live, the kernel's own hash picks among all slots).
    pub fn socket_for(&mut self, slot: usize, addr: &ListenAddr) -> io::Result<BorrowedFd<'_>> {
        let i = match self.listeners.iter().position(|l| &l.requested == addr) {
            Some(i) => i,
            None => {
                let kind = match addr {
                    ListenAddr::Tcp { .. } => ListenerKind::Tcp {
                        bound: None,
                        socks: BTreeMap::new(),
                        order: Vec::new(),
                    },
                    ListenAddr::Unix(path) => ListenerKind::Unix {
                        path: path.clone(),
                        sock: bind_unix(path)?,
                    },
                };
                self.listeners.push(Listener {
                    requested: addr.clone(),
                    kind,
                });
                self.listeners.len() - 1
            }
        };
        let live = &self.live;
        let l = &mut self.listeners[i];
        if let ListenerKind::Tcp {
            bound,
            socks,
            order,
        } = &mut l.kind
        {
            if let std::collections::btree_map::Entry::Vacant(e) = socks.entry(slot) {
                let (sock, at) = bind_tcp(&l.requested, *bound)?;
                *bound = Some(at);
                e.insert(sock);
                order.push(slot);
                // The others' indices did not move and the new socket is not live, so the
                // program stays valid; attaching covers the group's first socket.
                attach_steering(socks, order, live)?;
            }
        }
        let sock = match &self.listeners[i].kind {
            ListenerKind::Unix { sock, .. } => Some(sock),
            ListenerKind::Tcp { socks, .. } => socks.get(&slot),
        };
        sock.map(|s| s.as_fd())
            .ok_or_else(|| io::Error::other("slot socket vanished"))
    }

    /// The address `addr` is actually bound to (the port chosen for port 0), if a socket exists.
    #[cfg(test)]
    pub fn local_addr(&self, addr: &ListenAddr) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|l| &l.requested == addr)
            .and_then(|l| match &l.kind {
                ListenerKind::Tcp { bound, .. } => *bound,
                ListenerKind::Unix { .. } => None,
            })
    }

    /// Every TCP address the group listens on (after port 0 was resolved).
    pub fn tcp_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| match &l.kind {
                ListenerKind::Tcp { bound, .. } => *bound,
                ListenerKind::Unix { .. } => None,
            })
            .collect()
    }

    /// Marks `slot` live (its worker accepts: it may get new connections) or not (dead, stopped,
    /// errored, draining: it gets no new connections; the ones queued on it stay queued).
    pub fn set_live(&mut self, slot: usize, live: bool) -> io::Result<()> {
        if self.live.get(&slot).copied().unwrap_or(false) == live {
            return Ok(());
        }
        self.live.insert(slot, live);
        self.reattach()
    }

    /// Closes the sockets of `slot` (scale down). Connections still queued on them are reset by
    /// the kernel (unless `net.ipv4.tcp_migrate_req` is on), so drain the slot first.
    pub fn remove_slot(&mut self, slot: usize) -> io::Result<()> {
        self.live.remove(&slot);
        for l in &mut self.listeners {
            if let ListenerKind::Tcp { socks, order, .. } = &mut l.kind {
                if let Some(sock) = socks.remove(&slot) {
                    if let Some(idx) = order.iter().position(|s| *s == slot) {
                        order.swap_remove(idx);
                    }
                    drop(sock);
                }
            }
        }
        self.reattach()
    }

    /// Moves the connections queued on `slot`'s TCP sockets to the live slots, for a slot that is
    /// not live and whose sockets nobody else accepts on (its worker is gone). Needs
    /// `net.ipv4.tcp_migrate_req` (else the kernel resets them: the caller checks). Does nothing
    /// and returns false when no other slot is live (the queue then waits for the replacement).
    ///
    /// `shutdown(SHUT_RD)` on a listening socket moves it out of the reuseport group and
    /// migrates its queue (`tcp_disconnect` → `inet_csk_listen_stop` → `reuseport_migrate_sock`,
    /// which, with a classic BPF program attached, picks a listener by hash among the group's
    /// listening sockets) even if some other process still holds a copy of the fd, so the kernel's
    /// array stays in step with our mirror of its order. The slot's next
    /// [`SocketGroup::socket_for`] binds a fresh socket for the replacement worker.
    pub fn hand_over_queue(&mut self, slot: usize) -> io::Result<bool> {
        if self.live.get(&slot).copied().unwrap_or(false)
            || !self.live.iter().any(|(s, live)| *s != slot && *live)
        {
            return Ok(false);
        }
        let mut moved = false;
        let mut first_err = None;
        for l in &mut self.listeners {
            if let ListenerKind::Tcp { socks, order, .. } = &mut l.kind {
                let Some(sock) = socks.remove(&slot) else {
                    continue;
                };
                if let Err(e) = sock.shutdown(std::net::Shutdown::Read) {
                    first_err.get_or_insert(e);
                }
                drop(sock);
                if let Some(idx) = order.iter().position(|s| *s == slot) {
                    order.swap_remove(idx);
                }
                moved = true;
            }
        }
        self.reattach()?;
        match first_err {
            Some(e) => Err(e),
            None => Ok(moved),
        }
    }

    /// Current accept-queue length of `slot`'s socket for `addr` (TCP only; `TCP_INFO`'s
    /// `tcpi_unacked` on a listening socket is `sk_ack_backlog`).
    pub fn accept_queue_len(&self, slot: usize, addr: &ListenAddr) -> io::Result<u32> {
        let sock = self
            .listeners
            .iter()
            .find(|l| &l.requested == addr)
            .and_then(|l| match &l.kind {
                ListenerKind::Tcp { socks, .. } => socks.get(&slot),
                ListenerKind::Unix { .. } => None,
            })
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, "no TCP socket for that slot")
            })?;
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        // SAFETY: info/len point to a properly sized, writable tcp_info.
        let rc = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&mut info as *mut libc::tcp_info).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(info.tcpi_unacked)
    }

    /// Connections waiting in `slot`'s accept queues, over all its TCP addresses.
    pub fn queued(&self, slot: usize) -> u32 {
        self.listeners
            .iter()
            .map(|l| self.accept_queue_len(slot, &l.requested).unwrap_or(0))
            .sum()
    }

    /// Closes every socket of the group (and removes the Unix socket files it created).
    pub fn close_all(&mut self) {
        for l in self.listeners.drain(..) {
            if let ListenerKind::Unix { path, sock } = l.kind {
                drop(sock);
                let _ = std::fs::remove_file(path);
            }
        }
        self.live.clear();
    }

    fn reattach(&self) -> io::Result<()> {
        for l in &self.listeners {
            if let ListenerKind::Tcp { socks, order, .. } = &l.kind {
                attach_steering(socks, order, &self.live)?;
            }
        }
        Ok(())
    }

    fn conflicts_with(&self, addr: &ListenAddr) -> bool {
        self.listeners.iter().any(|l| match (&l.kind, addr) {
            (ListenerKind::Unix { path, .. }, ListenAddr::Unix(p)) => path == p,
            // A listener none of whose slots is open (its app stopped or errored) holds nothing.
            (ListenerKind::Tcp { socks, .. }, _) if socks.is_empty() => false,
            (ListenerKind::Tcp { bound, .. }, ListenAddr::Tcp { ip, port }) => {
                let (held_ip, held_port) = match (bound, &l.requested) {
                    (Some(b), _) => (Some(b.ip()), b.port()),
                    (None, ListenAddr::Tcp { ip, port }) => (*ip, *port),
                    _ => return false,
                };
                let wildcard = |ip: &Option<IpAddr>| ip.is_none_or(|i| i.is_unspecified());
                *port != 0
                    && held_port == *port
                    && (wildcard(ip) || wildcard(&held_ip) || held_ip == *ip)
            }
            _ => false,
        })
    }
}

impl Drop for SocketGroup {
    fn drop(&mut self) {
        self.close_all();
    }
}

/// Creates, binds and listens one slot's TCP socket. `bound` is the address earlier slots got
/// (same family, same port); `None` for the first slot.
fn bind_tcp(req: &ListenAddr, bound: Option<SocketAddr>) -> io::Result<(Socket, SocketAddr)> {
    let (ip, port) = match req {
        ListenAddr::Tcp { ip, port } => (*ip, *port),
        ListenAddr::Unix(_) => return Err(io::Error::other("not a TCP address")),
    };
    if let Some(at) = bound {
        return listen_tcp(at).map(|s| (s, at));
    }
    match ip {
        Some(ip) => listen_tcp(SocketAddr::new(ip, port)),
        None => match listen_tcp(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port)) {
            Ok(r) => Ok(r),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL)
                ) =>
            {
                listen_tcp(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port))
            }
            Err(e) => Err(e),
        },
    }
    .and_then(|s| {
        let at = s
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("bound socket has no IP address"))?;
        Ok((s, at))
    })
}

fn listen_tcp(at: SocketAddr) -> io::Result<Socket> {
    let sock = Socket::new(Domain::for_address(at), Type::STREAM, None)?;
    if at.is_ipv6() {
        sock.set_only_v6(false)?;
    }
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    // Nonblocking, as libuv expects of a listening handle it receives (the flag lives in the open
    // file description, which every worker holding the fd shares).
    sock.set_nonblocking(true)?;
    sock.bind(&at.into())?;
    sock.listen(BACKLOG)?;
    Ok(sock)
}

fn bind_unix(path: &Path) -> io::Result<Socket> {
    // A socket file left behind by a dead process: remove it if nobody answers on it.
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() && std::os::unix::net::UnixStream::connect(path).is_err() {
            std::fs::remove_file(path)?;
        }
    }
    let sock = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    sock.set_nonblocking(true)?;
    sock.bind(&SockAddr::unix(path)?)?;
    sock.listen(BACKLOG)?;
    Ok(sock)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(0)
    }

    pub(crate) fn lo(port: u16) -> ListenAddr {
        ListenAddr::Tcp {
            ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            port,
        }
    }

    /// Waits until the queues of `slots` add up to `total`; returns them.
    pub(crate) fn queues(
        g: &SocketGroup,
        addr: &ListenAddr,
        slots: &[usize],
        total: u32,
    ) -> Vec<u32> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let q: Vec<u32> = slots
                .iter()
                .map(|s| g.accept_queue_len(*s, addr).unwrap_or(0))
                .collect();
            if q.iter().sum::<u32>() >= total || Instant::now() > deadline {
                return q;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub(crate) fn connect_n(port: u16, n: usize) -> Vec<TcpStream> {
        (0..n)
            .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connection refused"))
            .collect()
    }

    #[test]
    fn live_slots_share_connections_evenly() -> io::Result<()> {
        let addr = lo(0);
        let mut g = SocketGroup::new();
        g.socket_for(0, &addr)?;
        g.socket_for(1, &addr)?;
        g.set_live(0, true)?;
        g.set_live(1, true)?;
        let port = g.local_addr(&addr).map(|a| a.port()).unwrap_or(0);
        assert_ne!(port, 0);
        let _c = connect_n(port, 200);
        let q = queues(&g, &addr, &[0, 1], 200);
        assert_eq!(q.iter().sum::<u32>(), 200, "{q:?}");
        // Binomial(200, 1/2): below 60 happens with probability < 1e-8.
        assert!(q[0] >= 60 && q[1] >= 60, "uneven spread {q:?}");
        Ok(())
    }

    #[test]
    fn dead_slot_gets_no_new_connections_and_keeps_its_queue() -> io::Result<()> {
        let addr = lo(free_port());
        let mut g = SocketGroup::new();
        g.socket_for(0, &addr)?;
        g.socket_for(1, &addr)?;
        g.set_live(0, true)?;
        g.set_live(1, true)?;
        let port = match addr {
            ListenAddr::Tcp { port, .. } => port,
            _ => 0,
        };
        let early = connect_n(port, 40);
        let q = queues(&g, &addr, &[0, 1], 40);
        assert!(q[1] > 0, "slot 1 got nothing: {q:?}");
        g.set_live(1, false)?;
        let _late = connect_n(port, 100);
        let q2 = queues(&g, &addr, &[0, 1], 140);
        assert_eq!(
            q2,
            vec![q[0] + 100, q[1]],
            "dead slot 1 received connections"
        );

        // The "replacement" of slot 1 accepts what was queued on it, and those connections work.
        let fd = g.socket_for(1, &addr)?.try_clone_to_owned()?;
        let listener = std::net::TcpListener::from(fd);
        let mut accepted = Vec::new();
        while let Ok((s, _)) = listener.accept() {
            accepted.push(s);
        }
        assert_eq!(accepted.len() as u32, q[1]);
        for s in &mut accepted {
            s.set_nonblocking(false)?;
            s.write_all(b"x")?;
        }
        // Every early client whose connection was on slot 1 now reads the byte.
        let mut got = 0;
        for mut c in early {
            c.set_read_timeout(Some(Duration::from_millis(100)))?;
            let mut b = [0u8; 1];
            if c.read(&mut b).map(|n| n == 1).unwrap_or(false) {
                got += 1;
            }
        }
        assert_eq!(got, q[1]);
        Ok(())
    }

    #[test]
    fn removing_a_slot_mirrors_the_kernel_index_swap() -> io::Result<()> {
        let addr = lo(0);
        let mut g = SocketGroup::new();
        for s in 0..3 {
            g.socket_for(s, &addr)?;
            g.set_live(s, true)?;
        }
        let port = g.local_addr(&addr).map(|a| a.port()).unwrap_or(0);
        // Closing slot 0 moves slot 2 into kernel index 0; then only slot 2 is live.
        g.remove_slot(0)?;
        g.set_live(1, false)?;
        let _c = connect_n(port, 50);
        assert_eq!(queues(&g, &addr, &[1, 2], 50), vec![0, 50]);
        // And back: only slot 1 live.
        g.set_live(1, true)?;
        g.set_live(2, false)?;
        let _d = connect_n(port, 30);
        assert_eq!(queues(&g, &addr, &[1, 2], 80), vec![30, 50]);
        Ok(())
    }

    /// A worker's death and replacement, repeated: the dead slot's queue is handed over (its
    /// socket shut down while the holder still has a copy), the replacement's fresh socket joins
    /// the group and is listened on again (as Node does with a passed fd), and once live it gets
    /// new connections in every round (the mirror of the kernel's order stayed true).
    #[test]
    fn a_replacement_socket_gets_connections_after_every_hand_over() -> io::Result<()> {
        for round in 0..100 {
            let addr = ListenAddr::Tcp { ip: None, port: 0 };
            let mut g = SocketGroup::new();
            let holder_copy0 = g.socket_for(0, &addr)?.try_clone_to_owned()?;
            let holder_copy1 = g.socket_for(1, &addr)?.try_clone_to_owned()?;
            g.set_live(0, true)?;
            g.set_live(1, true)?;
            let port = g.tcp_addrs().first().map(|a| a.port()).unwrap_or(0);
            let early = connect_n(port, 8);
            g.set_live(0, false)?;
            assert!(g.hand_over_queue(0)?, "round {round}: nothing handed over");
            if round % 2 == 0 {
                drop(holder_copy0);
            }
            let fresh = g.socket_for(0, &addr)?.try_clone_to_owned()?;
            for fd in [&fresh, &holder_copy1] {
                // SAFETY: listen(2) on descriptors this test owns.
                assert_eq!(unsafe { libc::listen(fd.as_raw_fd(), 511) }, 0);
            }
            g.set_live(0, true)?;
            let _late = connect_n(port, 40);
            let q = queues(&g, &addr, &[0, 1], 40 + early.len() as u32);
            // Binomial(40, 1/2) is 0 with probability 1e-12.
            assert!(
                q[0] > 0,
                "round {round}: the replacement got nothing: {q:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn a_probe_source_reaches_its_slot_live_or_not() -> io::Result<()> {
        let addr = lo(0);
        let mut g = SocketGroup::new();
        for slot in [0, 1, 2] {
            g.socket_for(slot, &addr)?;
        }
        g.set_live(0, true)?;
        let port = g.local_addr(&addr).map(|a| a.port()).unwrap_or(0);
        let mut held = Vec::new();
        for slot in [2u16, 1, 2] {
            let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
            s.bind(&SocketAddr::from(([127, 77, 0, slot as u8], 0)).into())?;
            s.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())?;
            held.push(s);
        }
        let _plain = connect_n(port, 5);
        assert_eq!(queues(&g, &addr, &[0, 1, 2], 8), vec![5, 1, 2]);
        Ok(())
    }

    #[test]
    fn no_live_slot_still_accepts_connections() -> io::Result<()> {
        let addr = lo(0);
        let mut g = SocketGroup::new();
        g.socket_for(0, &addr)?;
        g.socket_for(1, &addr)?;
        let port = g.local_addr(&addr).map(|a| a.port()).unwrap_or(0);
        let _c = connect_n(port, 20);
        assert_eq!(queues(&g, &addr, &[0, 1], 20).iter().sum::<u32>(), 20);
        Ok(())
    }

    #[test]
    fn same_slot_same_fd_and_port_zero_is_shared() -> io::Result<()> {
        let addr = ListenAddr::Tcp { ip: None, port: 0 };
        let mut g = SocketGroup::new();
        let a = g.socket_for(0, &addr)?.as_raw_fd();
        let a2 = g.socket_for(0, &addr)?.as_raw_fd();
        let b = g.socket_for(1, &addr)?.as_raw_fd();
        assert_eq!(a, a2);
        assert_ne!(a, b);
        let port = g.local_addr(&addr).map(|a| a.port()).unwrap_or(0);
        assert_ne!(port, 0);
        // Dual stack: reachable over IPv4 although bound to [::] (when IPv6 exists).
        let _c = TcpStream::connect(("127.0.0.1", port))?;
        Ok(())
    }

    #[test]
    fn another_app_cannot_take_a_held_port() -> io::Result<()> {
        let mut t = SocketTable::new();
        let port = free_port();
        t.socket_for("a", 0, &ListenAddr::Tcp { ip: None, port })?;
        t.socket_for("a", 1, &ListenAddr::Tcp { ip: None, port })?;
        let err = t.socket_for("b", 0, &lo(port)).map(|_| ()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        t.remove_app("a");
        t.socket_for("b", 0, &lo(port))?;
        Ok(())
    }

    #[test]
    fn unix_path_is_one_socket_for_all_slots() -> io::Result<()> {
        let dir = std::env::temp_dir().join(format!("cohort-sock-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("app.sock");
        let addr = ListenAddr::Unix(path.clone());
        let mut g = SocketGroup::new();
        let a = g.socket_for(0, &addr)?.as_raw_fd();
        let b = g.socket_for(1, &addr)?.as_raw_fd();
        assert_eq!(a, b);
        std::os::unix::net::UnixStream::connect(&path)?;
        g.close_all();
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
