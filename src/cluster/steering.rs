//! Steering new connections among an app's per-slot `SO_REUSEPORT` sockets: a classic BPF
//! program attached with `SO_ATTACH_REUSEPORT_CBPF` indexes the kernel's reuseport group array
//! (whose order `sockets` mirrors). It picks a random *live* slot for each new connection, and
//! sends a connection from `127.77.S.S` (a probe of slot S's worker, `daemon::probe`) to slot S
//! whether or not it is live.

use socket2::Socket;
use std::collections::BTreeMap;
use std::io;
use std::os::fd::AsRawFd;

/// The first two bytes of the source address that steers a probe to a slot (127.77.0.0/16).
pub const STEER_PREFIX: [u8; 2] = [127, 77];

/// The loopback source address that steers a connection to slot `slot` (slots up to 65535).
pub fn probe_source(slot: u32) -> Option<std::net::Ipv4Addr> {
    let [hi, lo] = u16::try_from(slot).ok()?.to_be_bytes();
    Some(std::net::Ipv4Addr::new(
        STEER_PREFIX[0],
        STEER_PREFIX[1],
        hi,
        lo,
    ))
}

// Classic BPF opcodes and the reuseport option from <linux/filter.h> / <asm-generic/socket.h>
// (libc does not export SO_ATTACH_REUSEPORT_CBPF for every target). Hand-written because no crate
// builds reuseport cBPF programs; the program is five instruction kinds.
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;
const BPF_LD_W_ABS: u16 = 0x20; // BPF_LD (0) | BPF_W (0) | BPF_ABS (0x20)
const BPF_ALU_MOD_K: u16 = 0x04 | 0x90; // BPF_ALU | BPF_MOD | BPF_K
const BPF_JMP_JEQ_K: u16 = 0x05 | 0x10; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_RET_K: u16 = 0x06; // BPF_RET | BPF_K
const BPF_LD_B_ABS: u16 = 0x30; // BPF_LD | BPF_B | BPF_ABS
const BPF_ALU_AND_K: u16 = 0x04 | 0x50; // BPF_ALU | BPF_AND | BPF_K
const BPF_JMP_JA: u16 = 0x05; // BPF_JMP | BPF_JA
const SKF_AD_RANDOM: i32 = 56;
/// cBPF programs hold at most 4096 instructions: 2 + 2n + 1 for n live sockets.
const MAX_LIVE: usize = (4096 - 3) / 2;
/// Instructions of the probe prefix besides its two per slot.
const PROBE_PREFIX: usize = 10;

/// The probe prefix of the steering program: a SYN from `127.77.S.S` (IPv4 header read at
/// `SKF_NET_OFF`) returns the kernel index of slot S (`order[i] == S` → `i`); anything else
/// jumps past it. At most `room` instructions.
fn probe_prefix(order: &[usize], room: usize) -> Vec<libc::sock_filter> {
    let ins = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let n = order.len().min(room.saturating_sub(PROBE_PREFIX) / 2);
    if n == 0 {
        return Vec::new();
    }
    let net = libc::SKF_NET_OFF as u32;
    let [a, b] = STEER_PREFIX;
    let prefix = u32::from_be_bytes([a, b, 0, 0]);
    // Jumps to the first instruction after the prefix, from instruction `at`.
    let past = |at: usize| (PROBE_PREFIX + 2 * n - at - 1) as u32;
    let mut p = vec![
        ins(BPF_LD_B_ABS, 0, 0, net),
        ins(BPF_ALU_AND_K, 0, 0, 0xf0),
        ins(BPF_JMP_JEQ_K, 1, 0, 0x40), // IPv4?
        ins(BPF_JMP_JA, 0, 0, past(3)),
        ins(BPF_LD_W_ABS, 0, 0, net + 12), // source address
        ins(BPF_ALU_AND_K, 0, 0, 0xffff_0000),
        ins(BPF_JMP_JEQ_K, 1, 0, prefix),
        ins(BPF_JMP_JA, 0, 0, past(7)),
        ins(BPF_LD_W_ABS, 0, 0, net + 12),
        ins(BPF_ALU_AND_K, 0, 0, 0xffff),
    ];
    for (i, slot) in order.iter().take(n).enumerate() {
        p.push(ins(BPF_JMP_JEQ_K, 0, 1, *slot as u32));
        p.push(ins(BPF_RET_K, 0, 0, i as u32));
    }
    p
}

/// The steering program for the kernel indices `live_idx`: return `live_idx[random % n]`, or an
/// out-of-range index (the kernel then falls back to its hash) when nothing is live.
fn steering_program(live_idx: &[u32]) -> Vec<libc::sock_filter> {
    let ins = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    match live_idx {
        [] => vec![ins(BPF_RET_K, 0, 0, u32::MAX)],
        [only] => vec![ins(BPF_RET_K, 0, 0, *only)],
        _ => {
            let n = live_idx.len().min(MAX_LIVE);
            let mut p = Vec::with_capacity(3 + 2 * n);
            p.push(ins(
                BPF_LD_W_ABS,
                0,
                0,
                (libc::SKF_AD_OFF + SKF_AD_RANDOM) as u32,
            ));
            p.push(ins(BPF_ALU_MOD_K, 0, 0, n as u32));
            for (j, idx) in live_idx.iter().take(n).enumerate() {
                p.push(ins(BPF_JMP_JEQ_K, 0, 1, j as u32));
                p.push(ins(BPF_RET_K, 0, 0, *idx));
            }
            p.push(ins(BPF_RET_K, 0, 0, live_idx[0]));
            p
        }
    }
}

/// Attaches the steering program for the current liveness to the reuseport group of `socks`.
pub(super) fn attach_steering(
    socks: &BTreeMap<usize, Socket>,
    order: &[usize],
    live: &BTreeMap<usize, bool>,
) -> io::Result<()> {
    let Some(first) = order.first().and_then(|s| socks.get(s)) else {
        return Ok(());
    };
    let live_idx: Vec<u32> = order
        .iter()
        .enumerate()
        .filter(|(_, slot)| live.get(slot).copied().unwrap_or(false))
        .map(|(i, _)| i as u32)
        .collect();
    if trace_enabled() {
        let inodes: Vec<String> = order
            .iter()
            .map(|s| socks.get(s).map_or("?".into(), inode_of))
            .collect();
        eprintln!(
            "cohort: steering: order {order:?} (inodes {inodes:?}), live indices {live_idx:?}, attached via slot {:?}",
            order.first()
        );
    }
    let live_prog = steering_program(&live_idx);
    let mut prog = probe_prefix(order, 4096 - live_prog.len());
    prog.extend(live_prog);
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: fprog points to `prog`, which outlives the call; the kernel copies the program.
    let rc = unsafe {
        libc::setsockopt(
            first.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `COHORT_TRACE_STEERING=1` in the daemon's environment: every attach is written to daemon.log
/// with the slot order, socket inodes and live indices (for diagnosing a worker that gets no
/// connections; off by default).
fn trace_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("COHORT_TRACE_STEERING").is_some_and(|v| v == "1"))
}

/// The socket's inode number (as `ss -e` and /proc/<pid>/fd show it).
fn inode_of(sock: &Socket) -> String {
    // SAFETY: fstat on a descriptor we own, into a zeroed stat buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    match unsafe { libc::fstat(sock.as_raw_fd(), &mut st) } {
        0 => st.st_ino.to_string(),
        _ => "?".into(),
    }
}
