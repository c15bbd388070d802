//! The daemon's end of Node's IPC channel, and Node cluster-worker emulation on top of it.
//!
//! Wire format (Node's `child_process` with `serialization: 'json'`, the default): each message is
//! one JSON value followed by `'\n'` on a Unix stream socket. A file descriptor travels as
//! `SCM_RIGHTS` ancillary data on the write of a wrapper message
//! `{"cmd":"NODE_HANDLE","type":"net.Native","msg":<inner>}`; the receiver answers
//! `{"cmd":"NODE_HANDLE_ACK"}` and delivers `<inner>` together with the handle. Messages whose `cmd`
//! starts with `NODE_` are internal (`'internalMessage'` in Node); everything else is a user
//! message (`process.send(x)` / `process.on('message')`).
//!
//! Cluster emulation: a child started with `NODE_UNIQUE_ID` is a cluster worker
//! (`cluster.isWorker`). Its `server.listen()` sends
//! `{"cmd":"NODE_CLUSTER","act":"queryServer",...,"seq":N}`; we answer with the slot's listening
//! socket as a *shared handle* (`{"cmd":"NODE_CLUSTER","errno":0,"key":K,"ack":N,"data":D,...}` in
//! a `NODE_HANDLE` carrying the fd), so the worker accepts straight from the kernel (Node's
//! `SCHED_NONE` path; no round-robin relay through us). An error answer carries `errno` (negative,
//! libuv style) and no handle, and the app's `listen()` fails with e.g. `EADDRINUSE`.
//!
//! Checked against Node's lib/internal/child_process.js (setupChannel, handleConversion),
//! lib/internal/cluster/{child,primary,utils}.js and lib/net.js (listenInCluster); the message
//! shapes are the same from Node 18 through 24 (newer versions add `index` to queryServer, which
//! we fold into the key like the primary does; an absent field reads `undefined` there too).

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, Interest};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use super::sockets::ListenAddr;

/// Largest message we buffer before giving up on the channel (a worker sending garbage).
const MAX_MESSAGE: usize = 64 << 20;

/// Environment for a child whose channel end is at fd `fd`: Node opens it as `process.send`.
pub fn channel_env(fd: RawFd) -> [(&'static str, String); 2] {
    [
        ("NODE_CHANNEL_FD", fd.to_string()),
        ("NODE_CHANNEL_SERIALIZATION_MODE", "json".to_string()),
    ]
}

/// Environment that makes the child a Node cluster worker with `cluster.worker.id == id` (Node
/// only honours it when the channel is present too).
pub fn cluster_worker_env(id: u64) -> (&'static str, String) {
    ("NODE_UNIQUE_ID", id.to_string())
}

/// A message read from a child.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeMessage {
    /// A user message: `process.send(value)` (`"ready"` for PM2-style readiness).
    User(Value),
    /// The cluster worker started (`act: 'online'`).
    Online,
    /// The worker's `listen()` asks for a listening socket: answer with
    /// [`NodeSender::reply_query_server`].
    QueryServer(QueryServer),
    /// The worker's server is listening (`act: 'listening'`): a readiness signal.
    Listening {
        address: Option<String>,
        port: Option<i64>,
    },
    /// The worker closed the server it got for `key` (the daemon keeps the socket open).
    Close { key: String },
    /// The worker called `cluster.worker.disconnect()`/`destroy()`: it is about to exit on purpose
    /// (already acknowledged).
    ExitedAfterDisconnect,
    /// Any other internal (`NODE_*`) message, for logging.
    Internal(Value),
}

/// A worker's `queryServer` request.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryServer {
    /// The request's sequence number (our reply's `ack`).
    pub seq: u64,
    /// The address to listen on: `None` for `listen(port)` without host, an IP, or a pipe path.
    pub address: Option<String>,
    /// The port (`-1` for pipes).
    pub port: i64,
    /// `4`, `6`, `-1` (pipe), `"udp4"`, `"udp6"`; `null` for `listen({fd})`.
    pub address_type: Value,
    /// Data the server wants shared by all workers (TLS ticket keys). Echoed in the reply; set it
    /// to the first worker's value to share session tickets across workers.
    pub data: Value,
    /// The whole message as sent.
    pub raw: Value,
}

impl QueryServer {
    /// The handle key, built like Node's primary: `address:port:addressType:fd:index`.
    pub fn key(&self) -> String {
        ["address", "port", "addressType", "fd", "index"]
            .iter()
            .map(|k| js_string(self.raw.get(*k)))
            .collect::<Vec<_>>()
            .join(":")
    }

    /// Where the worker wants to listen, or the errno (positive) to refuse with.
    pub fn listen_addr(&self) -> Result<ListenAddr, i32> {
        if self
            .raw
            .get("fd")
            .and_then(Value::as_i64)
            .is_some_and(|fd| fd >= 0)
        {
            return Err(libc::EOPNOTSUPP); // listen({fd}) names an fd of *our* process: refuse.
        }
        match &self.address_type {
            Value::Number(n) if n.as_i64() == Some(-1) => match &self.address {
                Some(path) => Ok(ListenAddr::Unix(path.into())),
                None => Err(libc::EINVAL),
            },
            Value::Number(_) => {
                let port = u16::try_from(self.port).map_err(|_| libc::EINVAL)?;
                let ip = match &self.address {
                    None => None,
                    Some(a) => Some(a.parse().map_err(|_| libc::EINVAL)?),
                };
                Ok(ListenAddr::Tcp { ip, port })
            }
            _ => Err(libc::EOPNOTSUPP), // dgram sockets are not supported in cluster mode
        }
    }
}

/// JavaScript's `${value}` for the JSON values a queryServer carries.
fn js_string(v: Option<&Value>) -> String {
    match v {
        None => "undefined".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// The reading end of a channel; [`NodeChannel::sender`] gives cloneable writers.
pub struct NodeChannel {
    read: OwnedReadHalf,
    sender: NodeSender,
    buf: Vec<u8>,
}

/// Writes messages (optionally with a file descriptor) to a child. Cheap to clone.
#[derive(Clone)]
pub struct NodeSender {
    write: Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
    seq: Arc<AtomicU64>,
}

impl NodeChannel {
    /// Creates a channel: our end (needs a running tokio runtime) and the child's end, to be
    /// placed at some fd in the child (without `FD_CLOEXEC`) and named by [`channel_env`].
    pub fn pair() -> io::Result<(NodeChannel, OwnedFd)> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        ours.set_nonblocking(true)?;
        let (read, write) = UnixStream::from_std(ours)?.into_split();
        let sender = NodeSender {
            write: Arc::new(tokio::sync::Mutex::new(write)),
            seq: Arc::new(AtomicU64::new(0)),
        };
        let chan = NodeChannel {
            read,
            sender,
            buf: Vec::new(),
        };
        Ok((chan, theirs.into()))
    }

    /// Our end of a channel inherited from an earlier daemon (an in-place re-exec); needs a
    /// running tokio runtime. A message the earlier daemon had read half of is lost.
    pub fn adopt(ours: OwnedFd) -> io::Result<NodeChannel> {
        let ours = std::os::unix::net::UnixStream::from(ours);
        ours.set_nonblocking(true)?;
        let (read, write) = UnixStream::from_std(ours)?.into_split();
        Ok(NodeChannel {
            read,
            sender: NodeSender {
                write: Arc::new(tokio::sync::Mutex::new(write)),
                seq: Arc::new(AtomicU64::new(0)),
            },
            buf: Vec::new(),
        })
    }

    /// A duplicate of our end's descriptor (close-on-exec), kept so the channel can be handed to
    /// the next daemon.
    pub fn try_clone_fd(&self) -> io::Result<OwnedFd> {
        let stream: &UnixStream = self.read.as_ref();
        stream.as_fd().try_clone_to_owned()
    }

    /// A writer for this channel.
    pub fn sender(&self) -> NodeSender {
        self.sender.clone()
    }

    /// The next message, or `None` when the child closed the channel (exited). Handle
    /// acknowledgements and `exitedAfterDisconnect` acks are answered here.
    pub async fn recv(&mut self) -> io::Result<Option<NodeMessage>> {
        loop {
            if let Some(nl) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=nl).collect();
                let value: Value = match serde_json::from_slice(&line[..line.len() - 1]) {
                    Ok(v) => v,
                    Err(e) => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("bad IPC message from child: {e}"),
                        ))
                    }
                };
                if let Some(m) = self.classify(value).await? {
                    return Ok(Some(m));
                }
                continue;
            }
            if self.buf.len() > MAX_MESSAGE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "IPC message from child exceeds 64 MiB",
                ));
            }
            // A plain read: if the child sends a handle, the kernel closes the fd for us.
            let mut chunk = [0u8; 16384];
            let n = self.read.read(&mut chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn classify(&mut self, mut v: Value) -> io::Result<Option<NodeMessage>> {
        let cmd = internal_cmd(&v).map(str::to_owned);
        match cmd.as_deref() {
            None => Ok(Some(NodeMessage::User(v))),
            Some("NODE_HANDLE") => {
                // The fd (if any) was dropped by our plain read; ack so the child's send queue moves
                // on, then treat the inner message as if it came alone.
                self.sender
                    .send(&json!({"cmd": "NODE_HANDLE_ACK"}), None)
                    .await?;
                let inner = v.get_mut("msg").map(Value::take).unwrap_or(Value::Null);
                Box::pin(self.classify(inner)).await
            }
            Some("NODE_HANDLE_ACK") | Some("NODE_HANDLE_NACK") => Ok(None),
            Some("NODE_CLUSTER") => {
                let seq = v.get("seq").and_then(Value::as_u64).unwrap_or(0);
                let act = v.get("act").and_then(Value::as_str).unwrap_or("");
                Ok(Some(match act {
                    "online" => NodeMessage::Online,
                    "queryServer" => NodeMessage::QueryServer(QueryServer {
                        seq,
                        address: v.get("address").and_then(Value::as_str).map(str::to_owned),
                        port: v.get("port").and_then(Value::as_i64).unwrap_or(-1),
                        address_type: v.get("addressType").cloned().unwrap_or(Value::Null),
                        data: v.get("data").cloned().unwrap_or(Value::Null),
                        raw: v,
                    }),
                    "listening" => NodeMessage::Listening {
                        address: v.get("address").and_then(Value::as_str).map(str::to_owned),
                        port: v.get("port").and_then(Value::as_i64),
                    },
                    "close" => NodeMessage::Close {
                        key: js_string(v.get("key")),
                    },
                    "exitedAfterDisconnect" => {
                        self.sender.send_cluster(json!({"ack": seq}), None).await?;
                        NodeMessage::ExitedAfterDisconnect
                    }
                    _ => NodeMessage::Internal(v),
                }))
            }
            Some(_) => Ok(Some(NodeMessage::Internal(v))),
        }
    }
}

/// `Some(cmd)` when `v` is an internal message (Node's `isInternal`).
fn internal_cmd(v: &Value) -> Option<&str> {
    v.get("cmd")
        .and_then(Value::as_str)
        .filter(|c| c.len() > 5 && c.starts_with("NODE_"))
}

impl NodeSender {
    /// Sends one message, with `fd` attached as `SCM_RIGHTS` if given (wrap it in `NODE_HANDLE`
    /// yourself, or use [`NodeSender::reply_query_server`]).
    pub async fn send(&self, msg: &Value, fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
        let mut line = serde_json::to_vec(msg)?;
        line.push(b'\n');
        let w = self.write.lock().await;
        let stream: &UnixStream = w.as_ref();
        let fds: Vec<RawFd> = fd.iter().map(|f| f.as_raw_fd()).collect();
        let mut off = 0;
        while off < line.len() {
            stream.writable().await?;
            // The fd goes with the first byte only; a short write continues without it.
            let attach = off == 0 && !fds.is_empty();
            let res = stream.try_io(Interest::WRITABLE, || {
                let cmsg = [ControlMessage::ScmRights(&fds)];
                let cmsgs: &[ControlMessage] = if attach { &cmsg } else { &[] };
                sendmsg::<()>(
                    stream.as_raw_fd(),
                    &[IoSlice::new(&line[off..])],
                    cmsgs,
                    MsgFlags::MSG_NOSIGNAL,
                    None,
                )
                .map_err(io::Error::from)
            });
            match res {
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Sends a user message (`process.on('message')` in the child).
    pub async fn send_user(&self, msg: &Value) -> io::Result<()> {
        self.send(msg, None).await
    }

    /// Asks the app to shut down the PM2 way: the user message `"shutdown"`.
    pub async fn shutdown_with_message(&self) -> io::Result<()> {
        self.send_user(&json!("shutdown")).await
    }

    /// Answers a worker's `queryServer`: with the listening socket as a shared handle, or with the
    /// error (the app's `listen()` then emits it, e.g. `EADDRINUSE`).
    pub async fn reply_query_server(
        &self,
        q: &QueryServer,
        socket: io::Result<BorrowedFd<'_>>,
    ) -> io::Result<()> {
        let reply =
            |errno: i32| json!({"errno": errno, "key": q.key(), "ack": q.seq, "data": q.data});
        match socket {
            Ok(fd) => self.send_cluster(reply(0), Some(fd)).await,
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(match e.kind() {
                    io::ErrorKind::AddrInUse => libc::EADDRINUSE,
                    io::ErrorKind::PermissionDenied => libc::EACCES,
                    io::ErrorKind::AddrNotAvailable => libc::EADDRNOTAVAIL,
                    _ => libc::EINVAL,
                });
                self.send_cluster(reply(-errno), None).await
            }
        }
    }

    /// Sends a `NODE_CLUSTER` message (adding `cmd` and our `seq` like Node's `sendHelper`),
    /// wrapped in `NODE_HANDLE` when it carries an fd.
    async fn send_cluster(&self, body: Value, fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
        let mut msg = json!({"cmd": "NODE_CLUSTER"});
        if let (Some(m), Value::Object(b)) = (msg.as_object_mut(), body) {
            m.extend(b);
            m.insert(
                "seq".into(),
                self.seq.fetch_add(1, Ordering::Relaxed).into(),
            );
        }
        match fd {
            Some(fd) => {
                let wrapped = json!({"cmd": "NODE_HANDLE", "type": "net.Native", "msg": msg});
                self.send(&wrapped, Some(fd)).await
            }
            None => self.send(&msg, None).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::{Child, Command};
    use std::time::{Duration, Instant};

    /// Node with our channel end at fd 3 (+ the shim), killed on drop.
    struct NodeChild(Child, std::path::PathBuf);
    impl Drop for NodeChild {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
            let _ = std::fs::remove_dir_all(&self.1);
        }
    }
    impl NodeChild {
        fn exit_code(&mut self) -> Option<i32> {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(st)) = self.0.try_wait() {
                    return st.code();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            None
        }
    }

    fn spawn(name: &str, app: &str, worker: bool) -> io::Result<(NodeChannel, NodeChild)> {
        let dir = std::env::temp_dir().join(format!("cohort-ipc-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("app.js"), app)?;
        std::fs::write(dir.join("shim.cjs"), include_str!("../shim/node.cjs"))?;
        let (chan, theirs) = NodeChannel::pair()?;
        let fd = theirs.as_raw_fd();
        let mut cmd = Command::new("node");
        cmd.arg("--require")
            .arg(dir.join("shim.cjs"))
            .arg(dir.join("app.js"));
        cmd.envs(channel_env(3));
        if worker {
            let (k, v) = cluster_worker_env(7);
            cmd.env(k, v);
        }
        // SAFETY: dup2 only between fork and exec.
        unsafe {
            cmd.pre_exec(move || match libc::dup2(fd, 3) {
                -1 => Err(io::Error::last_os_error()),
                _ => Ok(()),
            });
        }
        let child = NodeChild(cmd.spawn()?, dir);
        drop(theirs);
        Ok((chan, child))
    }

    async fn next(chan: &mut NodeChannel) -> Option<NodeMessage> {
        tokio::time::timeout(Duration::from_secs(10), chan.recv())
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
    }

    #[tokio::test]
    async fn ready_message_then_shutdown_message_drains_and_exits() -> io::Result<()> {
        let app = "require('http').createServer((q, s) => s.end()).listen(0, () => process.send('ready'));";
        let (mut chan, mut child) = spawn("ready", app, false)?;
        assert_eq!(
            next(&mut chan).await,
            Some(NodeMessage::User(json!("ready")))
        );
        chan.sender().shutdown_with_message().await?;
        assert_eq!(child.exit_code(), Some(0));
        Ok(())
    }

    #[tokio::test]
    async fn the_shim_does_not_keep_an_idle_app_alive() -> io::Result<()> {
        let (mut chan, mut child) = spawn("idle", "process.send({up: true});", false)?;
        assert_eq!(
            next(&mut chan).await,
            Some(NodeMessage::User(json!({"up": true})))
        );
        assert_eq!(child.exit_code(), Some(0));
        Ok(())
    }

    #[tokio::test]
    async fn cluster_worker_handshake_and_error_reply() -> io::Result<()> {
        let app = r#"
const cluster = require('cluster');
const s = require('http').createServer().listen(4321, '127.0.0.1');
s.on('error', (e) => process.send({ isWorker: cluster.isWorker, id: cluster.worker.id, code: e.code }));
"#;
        let (mut chan, _child) = spawn("worker", app, true)?;
        assert_eq!(next(&mut chan).await, Some(NodeMessage::Online));
        let q = match next(&mut chan).await {
            Some(NodeMessage::QueryServer(q)) => q,
            other => panic!("expected queryServer, got {other:?}"),
        };
        assert_eq!(
            q.listen_addr(),
            Ok(ListenAddr::Tcp {
                ip: Some("127.0.0.1".parse().map_err(io::Error::other)?),
                port: 4321
            })
        );
        assert!(q.key().starts_with("127.0.0.1:4321:4:"), "{}", q.key());
        let refused = io::Error::from_raw_os_error(libc::EADDRINUSE);
        chan.sender().reply_query_server(&q, Err(refused)).await?;
        assert_eq!(
            next(&mut chan).await,
            Some(NodeMessage::User(
                json!({"isWorker": true, "id": 7, "code": "EADDRINUSE"})
            ))
        );
        Ok(())
    }
}
