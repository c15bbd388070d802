//! The HTTP/1.x path (plain and TLS without ALPN h2). HTTP/2 clients are handed to hyper
//! (`server.rs`, `h2.rs`).
//!
//! - `codec`: the pure codec: request and response heads, framing decisions (unit-tested, the
//!   smuggling cases among them);
//! - `chunked`: the chunked transfer coding's state machine (pure);
//! - `body`: moving body bytes with stall limits;
//! - `proxy`: the per-connection loop: read a head, make the attempts `policy.rs` allows, relay
//!   the response, keep-alive and pipelining, upgrades as tunnels.
//!
//! Why by hand and not hyper: hyper's server turns every request into a `Request` with a
//! `HeaderMap` that the proxy then rewrites and hyper's client serialises again, and its client
//! runs each upstream connection as a separate task fed through a channel. On the balancer
//! benchmark (2 Node backends, `wrk -t1 -c64`) that user-space work was 5.7 µs of the proxy's
//! 17 µs per request, while the kernel part was the same as a plain TCP relay's; it kept cohort
//! behind NGINX. Here a request costs two reads, two writes and one pass over the header bytes.

mod body;
pub(super) mod chunked;
pub(super) mod codec;
mod proxy;

pub use proxy::{serve, Conn, Outcome, DRAIN_GRACE};
