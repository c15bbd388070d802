//! INTERNAL test harness, not a user command: `cohort __cluster-demo` runs one cluster app in the
//! foreground from the pieces of this module (SocketGroup, NodeChannel, the shim) until the
//! supervisor hosts them. It spawns N workers, serves their `queryServer` from a [`SocketGroup`],
//! marks slots live/dead, restarts workers that die, reloads one slot at a time on SIGHUP and stops
//! gracefully on SIGTERM/SIGINT. It prints one `cohort-demo: <event>` line per event on stdout for
//! the tests in tests/cluster_*.rs.

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use std::os::unix::process::CommandExt;
use std::process::Command;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use super::node_ipc::{channel_env, cluster_worker_env, NodeChannel, NodeMessage, NodeSender};
use super::sockets::{ListenAddr, SocketGroup};

/// The Node preload that drains HTTP servers on shutdown (see docs/cluster.md).
use super::NODE_SHIM;

/// Arguments of the internal `cohort __cluster-demo` harness.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Number of workers.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Port for --listen-fds mode (Node workers ask for theirs; they get PORT=<port> too).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Milliseconds a stopping worker gets before SIGKILL (COHORT_KILL_TIMEOUT for the shim).
    #[arg(long, default_value_t = 5000)]
    kill_timeout: u64,
    /// Hand the socket over systemd-style (LISTEN_FDS=1 at fd 3) and run the command as is,
    /// instead of running `node --require <shim> <command>` as a cluster worker.
    #[arg(long)]
    listen_fds: bool,
    /// The app: a Node script (and its arguments), or with --listen-fds any command.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

enum Event {
    Msg(usize, u64, NodeMessage),
    Exit(usize, u64, std::io::Result<ExitStatus>),
    Respawn(usize),
}

struct Worker {
    pid: u32,
    stopping: bool,
    sender: Option<NodeSender>,
}

struct Demo {
    args: DemoArgs,
    shim: PathBuf,
    group: SocketGroup,
    /// Workers by (slot, generation); during a reload a slot briefly has two.
    workers: BTreeMap<(usize, u64), Worker>,
    /// The newest generation per slot: the one that owns the slot's liveness.
    current: BTreeMap<usize, u64>,
    next_gen: u64,
    reload_queue: VecDeque<usize>,
    /// Slot whose new worker we wait for before stopping its old one.
    reloading: Option<usize>,
    shutting_down: bool,
    tx: mpsc::UnboundedSender<Event>,
}

/// Runs the harness; returns the process exit code.
pub fn run(args: DemoArgs) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime ({e})");
            return 1;
        }
    };
    match rt.block_on(run_async(args)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

fn say(line: String) {
    println!("cohort-demo: {line}");
}

async fn run_async(args: DemoArgs) -> Result<()> {
    if args.workers == 0 {
        bail!("--workers must be at least 1 (pass --workers N)");
    }
    let home = std::env::var_os("COHORT_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("cohort-demo-{}", std::process::id()))
        });
    std::fs::create_dir_all(&home).with_context(|| format!("creating {}", home.display()))?;
    let shim = home.join("node-shim.cjs");
    std::fs::write(&shim, NODE_SHIM).with_context(|| format!("writing {}", shim.display()))?;

    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut d = Demo {
        args,
        shim,
        group: SocketGroup::new(),
        workers: BTreeMap::new(),
        current: BTreeMap::new(),
        next_gen: 1,
        reload_queue: VecDeque::new(),
        reloading: None,
        shutting_down: false,
        tx,
    };
    for slot in 0..d.args.workers {
        d.spawn(slot)?;
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut deadline: Option<Instant> = None;
    loop {
        let sleep_until = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = term.recv() => { deadline = Some(d.stop_all()); }
            _ = int.recv() => { deadline = Some(d.stop_all()); }
            _ = hup.recv() => d.start_reload()?,
            _ = tokio::time::sleep_until(sleep_until.into()) => {
                for w in d.workers.values() {
                    say(format!("kill -9 {} (kill timeout)", w.pid));
                    let _ = nix::sys::signal::kill(pid(w.pid), nix::sys::signal::Signal::SIGKILL);
                }
                deadline = None;
            }
            ev = rx.recv() => match ev {
                Some(ev) => d.handle(ev)?,
                None => break,
            },
        }
        if d.shutting_down && d.workers.is_empty() {
            break;
        }
    }
    d.group.close_all();
    say("stopped".into());
    Ok(())
}

fn pid(p: u32) -> nix::unistd::Pid {
    nix::unistd::Pid::from_raw(p as i32)
}

impl Demo {
    fn spawn(&mut self, slot: usize) -> Result<()> {
        let gen = self.next_gen;
        self.next_gen += 1;
        let kill_timeout = self.args.kill_timeout.to_string();
        let (mut cmd, child_fd, chan) = if self.args.listen_fds {
            let addr = ListenAddr::Tcp {
                ip: None,
                port: self.args.port,
            };
            let sock = self.group.socket_for(slot, &addr)?.try_clone_to_owned()?;
            // LISTEN_PID must be the worker's own pid, known only after fork: a shell exports its
            // own $$ and execs the command (same pid). The supervisor writes it into a
            // pre-allocated environment buffer in the child instead.
            let mut cmd = Command::new("/bin/sh");
            cmd.arg("-c")
                .arg("LISTEN_PID=$$; export LISTEN_PID; exec \"$@\"")
                .arg("sh")
                .args(&self.args.command)
                .env("LISTEN_FDS", "1")
                .env("LISTEN_FDNAMES", "http");
            (cmd, sock, None)
        } else {
            let (chan, theirs) = NodeChannel::pair()?;
            let node = std::env::var("COHORT_NODE").unwrap_or_else(|_| "node".into());
            let mut cmd = Command::new(node);
            cmd.arg("--require")
                .arg(&self.shim)
                .args(&self.args.command);
            for (k, v) in channel_env(3) {
                cmd.env(k, v);
            }
            let (k, v) = cluster_worker_env(gen);
            cmd.env(k, v);
            (cmd, theirs, Some(chan))
        };
        cmd.env("COHORT_KILL_TIMEOUT", &kill_timeout)
            .env("NODE_APP_INSTANCE", slot.to_string())
            .env("PORT", self.args.port.to_string())
            .stdin(Stdio::null());
        map_fd_to_3(&mut cmd, child_fd.as_raw_fd());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {:?}", self.args.command))?;
        drop(child_fd);
        let pid = child.id();
        say(format!("spawned slot {slot} gen {gen} pid {pid}"));
        let sender = chan.as_ref().map(NodeChannel::sender);
        self.workers.insert(
            (slot, gen),
            Worker {
                pid,
                stopping: false,
                sender,
            },
        );
        self.current.insert(slot, gen);
        let tx = self.tx.clone();
        // std's Child (tokio's "process" feature is not enabled): wait on the blocking pool.
        tokio::task::spawn_blocking(move || {
            let st = child.wait();
            let _ = tx.send(Event::Exit(slot, gen, st));
        });
        match chan {
            Some(mut chan) => {
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    while let Ok(Some(m)) = chan.recv().await {
                        if tx.send(Event::Msg(slot, gen, m)).is_err() {
                            break;
                        }
                    }
                });
            }
            // A LISTEN_FDS worker gets a listening socket: connections queue until it accepts.
            None => self.on_ready(slot, gen)?,
        }
        Ok(())
    }

    fn handle(&mut self, ev: Event) -> Result<()> {
        match ev {
            Event::Msg(slot, gen, msg) => match msg {
                NodeMessage::QueryServer(q) => {
                    let Some(sender) = self
                        .workers
                        .get(&(slot, gen))
                        .and_then(|w| w.sender.clone())
                    else {
                        return Ok(());
                    };
                    let sock = q
                        .listen_addr()
                        .map_err(std::io::Error::from_raw_os_error)
                        .and_then(|addr| {
                            self.group
                                .socket_for(slot, &addr)
                                .and_then(|fd| fd.try_clone_to_owned())
                        });
                    say(format!(
                        "slot {slot} gen {gen} queryServer {} -> {}",
                        q.key(),
                        match &sock {
                            Ok(_) => "socket".to_string(),
                            Err(e) => e.to_string(),
                        }
                    ));
                    tokio::spawn(async move {
                        let fd = sock.as_ref().map(|fd| fd.as_fd()).map_err(|e| {
                            std::io::Error::from_raw_os_error(
                                e.raw_os_error().unwrap_or(libc::EINVAL),
                            )
                        });
                        let _ = sender.reply_query_server(&q, fd).await;
                    });
                }
                NodeMessage::Listening { port, .. } => {
                    say(format!(
                        "slot {slot} gen {gen} listening port {}",
                        port.unwrap_or(0)
                    ));
                    self.on_ready(slot, gen)?;
                }
                other => say(format!("slot {slot} gen {gen} message {other:?}")),
            },
            Event::Exit(slot, gen, st) => {
                let w = self.workers.remove(&(slot, gen));
                say(format!("exited slot {slot} gen {gen} {st:?}"));
                let current = self.current.get(&slot) == Some(&gen);
                if current {
                    // Nothing accepts on this slot any more: steer new connections away; the
                    // queued ones wait for the replacement.
                    self.group.set_live(slot, false)?;
                    if !self.shutting_down && !w.is_some_and(|w| w.stopping) {
                        let tx = self.tx.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            let _ = tx.send(Event::Respawn(slot));
                        });
                    }
                }
            }
            Event::Respawn(slot) => {
                if !self.shutting_down {
                    self.spawn(slot)?;
                }
            }
        }
        Ok(())
    }

    /// The worker of `slot`/`gen` accepts connections now.
    fn on_ready(&mut self, slot: usize, gen: u64) -> Result<()> {
        if self.current.get(&slot) != Some(&gen) || self.shutting_down {
            return Ok(());
        }
        self.group.set_live(slot, true)?;
        say(format!("live slot {slot} gen {gen}"));
        if self.reloading == Some(slot) {
            // The new worker shares the slot's socket: stop the old one, go on with the next slot.
            let old: Vec<u64> = self
                .workers
                .keys()
                .filter(|(s, g)| *s == slot && *g != gen)
                .map(|(_, g)| *g)
                .collect();
            for g in old {
                self.stop_worker(slot, g);
            }
            self.reloading = None;
            self.next_reload()?;
        }
        Ok(())
    }

    fn stop_worker(&mut self, slot: usize, gen: u64) {
        if let Some(w) = self.workers.get_mut(&(slot, gen)) {
            w.stopping = true;
            say(format!("stopping slot {slot} gen {gen} pid {}", w.pid));
            let _ = nix::sys::signal::kill(pid(w.pid), nix::sys::signal::Signal::SIGTERM);
        }
    }

    fn start_reload(&mut self) -> Result<()> {
        if self.shutting_down || self.reloading.is_some() || !self.reload_queue.is_empty() {
            return Ok(());
        }
        say("reload".into());
        self.reload_queue.extend(0..self.args.workers);
        self.next_reload()
    }

    fn next_reload(&mut self) -> Result<()> {
        match self.reload_queue.pop_front() {
            Some(slot) => {
                self.reloading = Some(slot);
                self.spawn(slot)
            }
            None => {
                say("reloaded".into());
                Ok(())
            }
        }
    }

    /// Graceful stop of everything; returns the SIGKILL deadline.
    fn stop_all(&mut self) -> Instant {
        if !self.shutting_down {
            self.shutting_down = true;
            say("shutting down".into());
            for slot in 0..self.args.workers {
                let _ = self.group.set_live(slot, false);
            }
            let keys: Vec<(usize, u64)> = self.workers.keys().copied().collect();
            for (slot, gen) in keys {
                self.stop_worker(slot, gen);
            }
        }
        Instant::now() + Duration::from_millis(self.args.kill_timeout)
    }
}

/// Places `fd` at fd 3 in the child, without close-on-exec.
fn map_fd_to_3(cmd: &mut Command, fd: RawFd) {
    // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if fd == 3 {
                let flags = libc::fcntl(3, libc::F_GETFD);
                if flags < 0 || libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
