//! The CLI's side of the control API: HTTP/1.1 over COHORT_HOME/cohort.sock, starting the daemon
//! on the first command that needs it, and turning every failure into a message that says what to do.

use super::{ErrorReply, Ping, VERSION, VERSION_HEADER};
use crate::home::Home;
use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::{Duration, Instant};
use tokio::net::UnixStream;

/// A connection-per-request client (requests are rare and the socket is local).
pub struct Client {
    pub home: Home,
    timeout: Duration,
}

/// How long one request may take before the daemon counts as not responding.
fn request_timeout() -> Duration {
    std::env::var("COHORT_CLIENT_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(30))
}

impl Client {
    /// A client for a daemon that must already be running (or an error saying it isn't).
    pub fn new(home: Home) -> Client {
        Client {
            home,
            timeout: request_timeout(),
        }
    }

    /// Connects to the daemon, starting it first if none runs for this home.
    pub async fn connect_or_start(home: Home) -> Result<Client> {
        let client = Client::new(home);
        match client.ping().await {
            Ok(ping) => {
                client.check_version(&ping)?;
                Ok(client)
            }
            Err(e) if is_not_running(&e) => {
                if client.wait_for_unit().await? {
                    return Ok(client);
                }
                client.start_daemon().await?;
                Ok(client)
            }
            Err(e) => Err(e),
        }
    }

    /// When a systemd unit runs this home's daemon and is (re)starting it (`Restart=` after a
    /// crash, `systemctl restart`), waits for that daemon: true once it answers, false when the
    /// unit is not bringing one back (stopped, failed, gone), so the caller starts one itself.
    async fn wait_for_unit(&self) -> Result<bool> {
        use crate::sys::systemd_unit::{active_state, comes_back};
        let Some(unit) = self.home.systemd_unit() else {
            return Ok(false);
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut said = false;
        loop {
            match self.ping().await {
                Ok(ping) => {
                    self.check_version(&ping)?;
                    return Ok(true);
                }
                Err(e) if !is_not_running(&e) => return Err(e),
                Err(_) => {}
            }
            if !active_state(&unit).is_some_and(|s| comes_back(&s)) {
                return Ok(false);
            }
            if !said {
                eprintln!("cohort: waiting for {unit} to bring the daemon back");
                said = true;
            }
            if Instant::now() > deadline {
                bail!(
                    "{unit} runs the daemon of {} but it has not answered within 30 s (see `systemctl status {unit}` and {})",
                    self.home.root.display(),
                    self.home.daemon_log().display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Connects to a running daemon; `Ok(None)` when none runs.
    pub async fn connect_existing(home: Home) -> Result<Option<Client>> {
        let client = Client::new(home);
        match client.ping().await {
            Ok(_) => Ok(Some(client)),
            Err(e) if is_not_running(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn check_version(&self, ping: &Ping) -> Result<()> {
        if ping.version != VERSION {
            bail!(
                "the daemon runs cohort {} but this is cohort {} (run `cohort update` to save, restart the daemon with this version and resurrect your apps)",
                ping.version,
                VERSION
            );
        }
        Ok(())
    }

    pub async fn ping(&self) -> Result<Ping> {
        self.request("GET", "/ping", None).await
    }

    async fn start_daemon(&self) -> Result<()> {
        self.home.ensure_dirs()?;
        let log =
            crate::home::private::open_append(&self.home.daemon_log()).with_context(|| {
                format!(
                    "cannot open {} (is COHORT_HOME writable?)",
                    self.home.daemon_log().display()
                )
            })?;
        let exe = std::env::current_exe()
            .context("cannot find the cohort executable to start the daemon")?;
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("daemon")
            .arg("--if-absent")
            .env("COHORT_HOME", &self.home.root)
            .stdin(std::process::Stdio::null())
            .stdout(
                log.try_clone()
                    .context("duplicating the daemon log handle")?,
            )
            .stderr(log);
        // SAFETY: setsid is async-signal-safe; it detaches the daemon from our terminal and session.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        let mut child = cmd.spawn().context("cannot start the cohort daemon")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.ping().await {
                Ok(ping) => return self.check_version(&ping),
                Err(e) if !is_not_running(&e) => return Err(e),
                Err(_) => {}
            }
            if let Ok(Some(status)) = child.try_wait() {
                // Lost a start race to another CLI: that daemon answers soon.
                if status.success() {
                    if let Ok(ping) = self.ping().await {
                        return self.check_version(&ping);
                    }
                } else {
                    let tail = std::fs::read_to_string(self.home.daemon_log()).unwrap_or_default();
                    let last: Vec<&str> = tail.lines().rev().take(3).collect();
                    bail!(
                        "the daemon failed to start ({status}): {} (see {})",
                        last.into_iter().rev().collect::<Vec<_>>().join(" / "),
                        self.home.daemon_log().display()
                    );
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "the daemon did not come up within 10 s (see {})",
                    self.home.daemon_log().display()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.request("GET", path, None).await
    }

    /// A GET whose answer is text (`/metrics`), not JSON.
    pub async fn get_text(&self, path: &str) -> Result<String> {
        let fut = async {
            let resp = self.send("GET", path, None).await?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| anyhow!("reading the daemon's reply: {e}"))?
                .to_bytes();
            if !status.is_success() {
                decode::<serde_json::Value>(status, &bytes)?;
            }
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| self.not_responding())?
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        let body = serde_json::to_vec(body).context("encoding the request")?;
        self.request("POST", path, Some(body)).await
    }

    /// A request that may legitimately take long (a stop waits out kill_timeout, a reload waits for
    /// every worker): the daemon must answer a ping at once, then the request has no time limit.
    pub async fn post_long<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        self.ping().await?;
        let body = serde_json::to_vec(body).context("encoding the request")?;
        read_reply(self.send("POST", path, Some(body)).await?).await
    }

    async fn request<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T> {
        let fut = async { read_reply(self.send(method, path, body).await?).await };
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(self.not_responding()),
        }
    }

    /// Sends a request and returns the response with its body still streaming (for `logs`).
    pub async fn stream<B: Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<hyper::Response<Incoming>> {
        let body = serde_json::to_vec(body).context("encoding the request")?;
        let resp = tokio::time::timeout(self.timeout, self.send("POST", path, Some(body)))
            .await
            .map_err(|_| self.not_responding())??;
        if !resp.status().is_success() {
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            decode::<serde_json::Value>(status, &bytes)?;
            bail!("the daemon answered {status}");
        }
        Ok(resp)
    }

    fn not_responding(&self) -> anyhow::Error {
        let pid = std::fs::read_to_string(self.home.pid_file()).unwrap_or_default();
        anyhow!(
            "the daemon is not responding on {} (pid {}; see {}; if it stays stuck, stop it with `kill {}` and run the command again)",
            self.home.socket().display(),
            pid.trim(),
            self.home.daemon_log().display(),
            pid.trim()
        )
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<hyper::Response<Incoming>> {
        let sock = self.home.socket();
        let stream = UnixStream::connect(&sock).await.map_err(|e| {
            anyhow!(NotRunning(format!(
                "no daemon is running for {} ({e})",
                self.home.root.display()
            )))
        })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("talking to the daemon")?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "cohort")
            .header(VERSION_HEADER, VERSION)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .context("building the request")?;
        sender.send_request(req).await.map_err(|e| {
            anyhow!(
                "the daemon closed the connection ({e}); see {}",
                self.home.daemon_log().display()
            )
        })
    }
}

/// Reads a whole reply and decodes it (or its `{"error": …}`).
async fn read_reply<T: DeserializeOwned>(resp: hyper::Response<Incoming>) -> Result<T> {
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| anyhow!("reading the daemon's reply: {e}"))?
        .to_bytes();
    decode(status, &bytes)
}

fn decode<T: DeserializeOwned>(status: hyper::StatusCode, bytes: &[u8]) -> Result<T> {
    if !status.is_success() {
        let msg = serde_json::from_slice::<ErrorReply>(bytes)
            .map(|e| e.error)
            .unwrap_or_else(|_| {
                format!(
                    "the daemon answered {status}: {}",
                    String::from_utf8_lossy(bytes)
                )
            });
        bail!(msg);
    }
    serde_json::from_slice(bytes).with_context(|| {
        format!(
            "unexpected reply from the daemon: {}",
            String::from_utf8_lossy(bytes)
        )
    })
}

/// Marks "nothing listens on the socket" so callers can start the daemon instead.
#[derive(Debug)]
struct NotRunning(String);
impl std::fmt::Display for NotRunning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for NotRunning {}

pub fn is_not_running(e: &anyhow::Error) -> bool {
    e.downcast_ref::<NotRunning>().is_some()
}
