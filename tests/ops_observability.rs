//! Observability with real components: `cohort metrics`, the web listener's auth rules and its
//! settings surviving a daemon restart; a real Prometheus (Debian's `prometheus`) scraping cohort's
//! TCP `/metrics` every second; a real headless Chromium (Debian's `chromium`) driven over the
//! DevTools protocol through the dashboard (login, live memory, restart, live log tail).
//! Both tools are installed by scripts/setup.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const TOKEN: &str = "t0ken-for-tests";

/// One HTTP/1.0 exchange (the server closes): (status, body).
fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    if s.write_all(req.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Where test artefacts go: target/test-artefacts/.
fn artefact(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artefacts");
    std::fs::create_dir_all(&dir).expect("creating target/test-artefacts");
    dir.join(name)
}

/// Starts the stamped app and the web listener with the test token; returns the listener's port.
fn app_and_web(c: &Cohort, name: &str, extra: &[&str]) -> u16 {
    c.ok(&["start", &fixture("stamped.js"), "--name", name]);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["web", "--listen", &listen, "--token", TOKEN];
    args.extend_from_slice(extra);
    c.ok(&args);
    port
}

#[test]
fn metrics_cli_and_web_listener_rules() {
    let c = Cohort::new();
    let port = app_and_web(&c, "obs", &["--read-only-token", "look-only"]);
    let pid = c.pid("obs");

    // `cohort metrics` prints the exposition with the app's series.
    let ok = wait_until(Duration::from_secs(10), || {
        c.ok(&["metrics"]).stdout.lines().any(|l| {
            l.starts_with("cohort_process_resident_memory_bytes{app=\"obs\"")
                && l.contains(&format!("pid=\"{pid}\""))
                && !l.ends_with(" 0")
        })
    });
    assert!(
        ok,
        "no memory series for obs:\n{}",
        c.ok(&["metrics"]).stdout
    );
    let text = c.ok(&["metrics"]).stdout;
    for want in [
        "# TYPE cohort_process_restarts_total counter",
        "cohort_app_instances_desired{app=\"obs\",mode=\"fork\"} 1",
        "cohort_app_instances_ready{app=\"obs\",mode=\"fork\"} 1",
        "process_open_fds ",
        "cohort_log_lines_written_total ",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }

    // The TCP listener: no token → 401 (API) or the login page (browser); a wrong token → 401;
    // the read-only token reads but may not act; the full token acts.
    assert_eq!(http(port, "GET", "/metrics", &[], "").0, 401);
    assert_eq!(
        http(
            port,
            "GET",
            "/processes",
            &[("Authorization", "Bearer nope")],
            ""
        )
        .0,
        401
    );
    let (code, _) = http(port, "GET", "/", &[("Accept", "text/html")], "");
    assert_eq!(code, 303, "a browser without a token is sent to /login");
    let (code, body) = http(port, "GET", "/login", &[], "");
    assert!(
        code == 200 && body.contains("name=\"token\""),
        "{code} {body}"
    );
    let (code, body) = http(port, "GET", "/metrics", &[("Authorization", &bearer())], "");
    assert!(
        code == 200 && body.contains("cohort_process_info{app=\"obs\""),
        "{code}"
    );
    let ro = [
        ("Authorization", "Bearer look-only"),
        ("Content-Type", "application/json"),
    ];
    assert_eq!(http(port, "GET", "/processes", &ro, "").0, 200);
    let restart = r#"{"action":"restart","selector":{"name":"obs"}}"#;
    assert_eq!(http(port, "POST", "/action", &ro, restart).0, 403);
    assert_eq!(c.pid("obs"), pid, "a read-only token restarted the app");
    // A cross-site POST is refused even with the token.
    let cross = [
        ("Authorization", bearer()),
        ("Origin", "http://evil.example".to_string()),
        ("Content-Type", "application/json".to_string()),
    ];
    let cross: Vec<(&str, &str)> = cross.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(http(port, "POST", "/action", &cross, restart).0, 403);
    // The login form sets an HttpOnly, SameSite=Strict cookie.
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connecting");
    let form = format!("token={TOKEN}");
    write!(
        s,
        "POST /login HTTP/1.0\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    )
    .expect("sending the login form");
    let mut head = String::new();
    let _ = s.read_to_string(&mut head);
    let cookie = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no cookie set by /login:\n{head}"));
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );

    // Refused settings: non-loopback without a token; the state stays as it was.
    let err = c.fails(&["web", "--listen", "0.0.0.0:0", "--public-metrics"]);
    assert!(err.contains("without a token"), "{err}");
    assert!(c.ok(&["web"]).stdout.contains(&format!("127.0.0.1:{port}")));

    // The settings (digests only, mode 0600) survive a daemon restart.
    let saved = std::fs::read_to_string(c.home.join("web.json")).expect("web.json");
    assert!(
        !saved.contains(TOKEN),
        "the token is stored in clear: {saved}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(c.home.join("web.json")).map(|m| m.permissions().mode() & 0o777);
    assert_eq!(mode.ok(), Some(0o600));
    c.ok(&["kill"]);
    c.ok(&["ping"]);
    let ok = wait_until(Duration::from_secs(10), || {
        http(port, "GET", "/metrics", &[("Authorization", &bearer())], "").0 == 200
    });
    assert!(ok, "the listener did not come back with the daemon");
    c.ok(&["web", "--off"]);
    assert!(c.ok(&["web"]).stdout.contains("off"));
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "still listening after --off"
    );
}

/// Prometheus's instant query API: the result vector.
fn prom_query(port: u16, q: &str) -> Vec<Value> {
    let (code, body) = http(
        port,
        "GET",
        &format!("/api/v1/query?query={}", percent(q)),
        &[],
        "",
    );
    if code != 200 {
        return Vec::new();
    }
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

fn sample_value(series: &Value) -> f64 {
    series["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

#[test]
fn prometheus_scrapes_memory_and_restarts() {
    require_tool("prometheus", "prometheus");
    let c = Cohort::new();
    let port = app_and_web(&c, "prom-app", &[]);
    let prom_port = free_port();
    let dir = c.work.join("prometheus");
    std::fs::create_dir_all(dir.join("data")).expect("creating the Prometheus folder");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: cohort\n    scrape_interval: 1s\n    authorization:\n      type: Bearer\n      credentials: {TOKEN}\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
    );
    std::fs::write(dir.join("prometheus.yml"), config).expect("writing prometheus.yml");
    let log = std::fs::File::create(dir.join("prometheus.log")).expect("creating the log");
    let child = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting prometheus");
    c.adopt(child);
    let prom_log = || std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();

    // The app's memory, with its labels, scraped through the token.
    let pid = c.pid("prom-app");
    let mut mem = Vec::new();
    let ok = wait_until(Duration::from_secs(30), || {
        mem = prom_query(
            prom_port,
            r#"cohort_process_resident_memory_bytes{app="prom-app"}"#,
        );
        mem.first().is_some_and(|s| sample_value(s) > 0.0)
    });
    assert!(
        ok,
        "no memory series in Prometheus: {mem:?}\n{}",
        prom_log()
    );
    let m = &mem[0]["metric"];
    assert_eq!(m["job"], "cohort");
    assert_eq!(m["app_instance"], "0");
    assert_eq!(m["instance"], format!("127.0.0.1:{port}"));
    assert_eq!(m["id"], "0");
    assert_eq!(m["mode"], "fork");
    assert_eq!(m["pid"], pid.to_string());

    // The restart counter (reason manual) goes up after `cohort restart`.
    let manual = r#"cohort_process_restarts_total{app="prom-app",reason="manual"}"#;
    let mut r = Vec::new();
    let ok = wait_until(Duration::from_secs(15), || {
        r = prom_query(prom_port, manual);
        r.first().is_some_and(|s| sample_value(s) == 0.0)
    });
    assert!(ok, "no restart series at 0: {r:?}");
    c.ok(&["restart", "prom-app"]);
    let ok = wait_until(Duration::from_secs(15), || {
        r = prom_query(prom_port, manual);
        r.first().is_some_and(|s| sample_value(s) == 1.0)
    });
    assert!(
        ok,
        "the restart counter did not reach 1 in Prometheus: {r:?}"
    );
    // And the target is healthy in Prometheus's own view.
    let up = prom_query(prom_port, r#"up{job="cohort"}"#);
    assert_eq!(up.first().map(sample_value), Some(1.0), "{up:?}");
}

/// A minimal Chrome DevTools protocol client: one page target over a WebSocket.
struct Cdp {
    ws: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>,
    next: u64,
}

impl Cdp {
    /// Connects to the first page target of the browser on `port`.
    fn connect(port: u16) -> Cdp {
        let mut url = String::new();
        let ok = wait_until(Duration::from_secs(30), || {
            let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
                return false;
            };
            s.set_read_timeout(Some(Duration::from_secs(5))).ok();
            // Chromium answers HTTP/1.1 only, and keeps the connection: read Content-Length bytes.
            let _ = write!(
                s,
                "GET /json/list HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
            );
            let mut raw = Vec::new();
            let mut buf = [0u8; 8192];
            let body = loop {
                let Ok(n) = s.read(&mut buf) else {
                    return false;
                };
                if n == 0 {
                    return false;
                }
                raw.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&raw).into_owned();
                let Some((head, body)) = text.split_once("\r\n\r\n") else {
                    continue;
                };
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if body.len() >= len {
                    break body.to_string();
                }
            };
            let targets: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            let page = targets
                .as_array()
                .and_then(|a| a.iter().find(|t| t["type"] == "page"))
                .and_then(|t| t["webSocketDebuggerUrl"].as_str());
            match page {
                Some(u) => {
                    url = u.to_string();
                    true
                }
                None => false,
            }
        });
        assert!(ok, "chromium's DevTools endpoint did not list a page");
        let (ws, _) =
            tungstenite::connect(url.as_str()).expect("connecting to the DevTools WebSocket");
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(20))).ok();
        }
        Cdp { ws, next: 0 }
    }

    /// Calls a method and returns its result (events in between are skipped).
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws
            .send(tungstenite::Message::text(msg))
            .expect("sending a DevTools command");
        loop {
            let m = self.ws.read().expect("reading from DevTools");
            let Ok(text) = m.to_text() else { continue };
            let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluates JavaScript in the page and returns its value.
    fn eval(&mut self, js: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": js, "returnByValue": true, "awaitPromise": true}),
        );
        r["result"]["value"].clone()
    }

    fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
    }

    fn screenshot(&mut self, path: &Path) {
        use base64::Engine;
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap_or(""))
            .expect("decoding the screenshot");
        std::fs::write(path, png).expect("writing the screenshot");
    }
}

#[test]
fn chromium_dashboard_login_live_memory_restart_and_logs() {
    require_tool("chromium", "chromium");
    let c = Cohort::new();
    let port = app_and_web(&c, "web-app", &[]);
    // Two more rows, so the screenshot shows a list.
    c.ok(&["start", &fixture("hold.js"), "--name", "worker", "-i", "2"]);
    // A balancer before a Node backend, with 200s and 503s through it, for the balancer panel.
    let (backend, edge) = (free_port(), free_port());
    let config = c.write(
        "edge.toml",
        &format!(
            "[[apps]]\nname = \"api\"\nscript = \"{}\"\nargs = [\"{backend}\", \"api\"]\n\n[[balancers]]\nname = \"edge\"\nlisten = \"127.0.0.1:{edge}\"\nupstreams = [\"127.0.0.1:{backend}\"]\naccess_log = false\nworkers = 1\n",
            fixture("backend.js")
        ),
    );
    c.ok(&["start", config.to_str().expect("utf-8 path")]);
    wait_serving(backend, Duration::from_secs(15));
    wait_serving(edge, Duration::from_secs(15));
    for path in ["/a", "/b", "/c", "/code?n=503"] {
        let r = get(edge, path).unwrap_or_else(|e| panic!("{path} through the balancer: {e}"));
        assert!(r.status == 200 || r.status == 503, "{path}: {}", r.head);
    }
    let base = format!("http://127.0.0.1:{port}");
    let devtools = free_port();
    let profile = c.work.join("chromium-profile");
    let child = Command::new("chromium")
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--window-size=1100,720",
        ])
        .arg(format!("--remote-debugging-port={devtools}"))
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting chromium");
    c.adopt(child);
    let mut cdp = Cdp::connect(devtools);
    let wait_js = |cdp: &mut Cdp, js: &str, secs: u64| -> bool {
        wait_until(Duration::from_secs(secs), || cdp.eval(js) == json!(true))
    };

    // Without a token: the login page.
    cdp.navigate(&format!("{base}/"));
    assert!(
        wait_js(
            &mut cdp,
            "location.pathname === '/login' && !!document.querySelector('#token')",
            15
        ),
        "no login page without a token: {}",
        cdp.eval("location.href + ' ' + document.body.innerText")
    );
    cdp.screenshot(&artefact("dashboard-login.png"));

    // Log in with the token: the dashboard with the app's row and live memory.
    cdp.eval(&format!(
        "document.querySelector('#token').value = '{TOKEN}'; document.querySelector('#login').submit(); true"
    ));
    assert!(
        wait_js(
            &mut cdp,
            "location.pathname === '/' && !!document.querySelector('#procs')",
            15
        ),
        "login did not reach the dashboard: {}",
        cdp.eval("location.href")
    );
    let row = "[...document.querySelectorAll('#procs tbody tr')].find(r => r.querySelector('td.name').textContent === 'web-app')";
    let pid = c.pid("web-app");
    let mem_js = format!("(() => {{ const r = {row}; return !!r && r.querySelector('td.pid').textContent === '{pid}' && r.querySelector('td.mem').textContent.endsWith('MB'); }})()");
    assert!(
        wait_js(&mut cdp, &mem_js, 20),
        "no row with pid {pid} and memory in MB: {}",
        cdp.eval("document.querySelector('#procs').innerText")
    );

    // The balancer panel: responses by status class and the estimated response times.
    let panel = "(() => { const t = document.querySelector('#balancers').innerText; return t.includes('edge:0') && t.includes('5xx 1') && / ms/.test(t); })()";
    assert!(
        wait_js(&mut cdp, panel, 15),
        "no status classes or response times in the balancer panel: {}",
        cdp.eval("document.querySelector('#balancers').innerText")
    );
    cdp.eval("document.querySelector('#balancers-section').scrollIntoView(); true");
    cdp.screenshot(&artefact("dashboard-balancer.png"));
    cdp.eval("window.scrollTo(0, 0); true");

    // Select it: charts and the log tail open; a new line shows within a second of being printed.
    cdp.eval(&format!("{row}.click(); true"));
    assert!(wait_js(
        &mut cdp,
        "document.querySelector('#log-state').textContent === 'live'",
        10
    ));
    let stamps_js = "[...document.querySelectorAll('#log span')].map(s => s.textContent.trim()).filter(t => t.startsWith('stamp '))";
    let seen_before: Vec<String> = serde_json::from_value(cdp.eval(stamps_js)).unwrap_or_default();
    let mut delay = None;
    let ok = wait_until(Duration::from_secs(10), || {
        let now = now_ms();
        let lines: Vec<String> = serde_json::from_value(cdp.eval(stamps_js)).unwrap_or_default();
        let fresh = lines.iter().find(|l| !seen_before.contains(l));
        if let Some(at) = fresh
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|t| t.parse::<u64>().ok())
        {
            delay = Some(now.saturating_sub(at));
            return true;
        }
        false
    });
    assert!(ok, "no new log line reached the page");
    let delay = delay.unwrap_or(u64::MAX);
    assert!(delay < 1000, "a log line took {delay} ms to reach the page");
    eprintln!("log line printed → shown in the page: {delay} ms");
    // Charts: the history ring, extended live (a point every 2 s).
    let charted = "document.querySelector('#mem-chart polyline').getAttribute('points').split(' ').length >= 4 && document.querySelector('#mem-now').textContent.endsWith('MB')";
    assert!(wait_js(&mut cdp, charted, 15), "no memory chart");
    cdp.screenshot(&artefact("dashboard.png"));

    // Restart from the page, with confirmation: the pid changes.
    cdp.eval(&format!(
        "{row}.querySelector('button.act-restart').click(); true"
    ));
    assert!(
        wait_js(&mut cdp, "document.querySelector('#confirm').open", 5),
        "no confirmation dialog"
    );
    assert_eq!(c.pid("web-app"), pid, "restarted before the confirmation");
    cdp.eval("document.querySelector('#confirm-yes').click(); true");
    let new_pid_js = format!("(() => {{ const r = {row}; const p = r && r.querySelector('td.pid').textContent; return !!p && p !== '{pid}'; }})()");
    assert!(
        wait_js(&mut cdp, &new_pid_js, 20),
        "the pid did not change in the page"
    );
    let new_pid = c.pid("web-app");
    assert_ne!(new_pid, pid);
    assert!(
        wait_js(
            &mut cdp,
            &format!("{row}.querySelector('td.pid').textContent === '{new_pid}'"),
            10
        ),
        "the page does not show the new pid {new_pid}"
    );

    // Phone width: nothing wider than the screen except the table's own scroller.
    cdp.call(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": true}),
    );
    let fits = "document.documentElement.scrollWidth <= 390";
    assert!(
        wait_js(&mut cdp, fits, 5),
        "the page is wider than a phone: {}",
        cdp.eval("document.documentElement.scrollWidth")
    );
    cdp.screenshot(&artefact("dashboard-phone.png"));
    drop(cdp);
}

#[test]
fn json_log_lines_and_logs_json() {
    let c = Cohort::new();
    c.ok(&[
        "start",
        &fixture("stamped.js"),
        "--name",
        "jl",
        "--log-type",
        "json",
    ]);
    let line = c.wait_log("jl", "out", "\"message\":\"stamp ", Duration::from_secs(10));
    let first = line
        .lines()
        .find(|l| l.contains("stamp "))
        .unwrap_or_default()
        .to_string();
    let v: Value = serde_json::from_str(&first).unwrap_or_else(|e| panic!("{e}: {first}"));
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("stamp ")),
        "{v}"
    );
    assert_eq!(v["type"], "out");
    assert_eq!(v["app_name"], "jl");
    assert_eq!(v["process_id"], 0);
    assert!(
        v["timestamp"].as_str().is_some_and(|t| t.len() >= 20),
        "{v}"
    );
    // `cohort logs --json`: one JSON object per line.
    let out = c
        .ok(&["logs", "jl", "--json", "--nostream", "--lines", "3"])
        .stdout;
    let objs: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or(Value::Null))
        .collect();
    assert!(
        !objs.is_empty()
            && objs
                .iter()
                .all(|o| o["name"] == "jl" && o["line"].is_string()),
        "{out}"
    );
    // A bad log type is refused before anything starts.
    let err = c.fails(&[
        "start",
        &fixture("stamped.js"),
        "--name",
        "jl2",
        "--log-type",
        "xml",
    ]);
    assert!(
        err.contains("--log-type") && err.contains("not a log type"),
        "{err}"
    );
}

#[test]
fn web_table_in_a_config_file() {
    let c = Cohort::new();
    let port = free_port();
    c.write("web.token", &format!("{TOKEN}\n"));
    let config = format!(
        "[[apps]]\nname = \"cfg\"\nscript = \"{}\"\n\n[web]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"web.token\"\npublic_metrics = true\n",
        fixture("stamped.js")
    );
    c.write("cohort.toml", &config);
    c.ok(&["start", "cohort.toml"]);
    assert!(c.ok(&["web"]).stdout.contains(&format!("127.0.0.1:{port}")));
    // public_metrics: /metrics without a token; the rest still needs it.
    let (code, body) = http(port, "GET", "/metrics", &[], "");
    assert!(
        code == 200 && body.contains("cohort_process_info{app=\"cfg\""),
        "{code}"
    );
    assert_eq!(http(port, "GET", "/processes", &[], "").0, 401);
    assert_eq!(
        http(
            port,
            "GET",
            "/processes",
            &[("Authorization", &bearer())],
            ""
        )
        .0,
        200
    );
}

#[test]
fn web_listener_is_bounded_like_the_control_socket() {
    const IDLE: usize = 2_000;
    let hard = raise_open_files_limit();
    assert!(
        hard >= IDLE as u64 + 200,
        "this test holds {IDLE} sockets: it needs a hard open-files limit of at least {} (have {hard}; raise it with `ulimit -Hn`)",
        IDLE + 200
    );
    let c = Cohort::new();
    let port = app_and_web(&c, "bounded", &[]);
    assert_eq!(
        http(port, "GET", "/metrics", &[("Authorization", &bearer())], "").0,
        200
    );
    let daemon = c.daemon_pid().expect("daemon.pid");

    // 2,000 idle connections (more than the listener's cap of 1,024) do not stop it answering.
    let mut idle = Vec::with_capacity(IDLE);
    for i in 0..IDLE {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => idle.push(s),
            Err(e) => panic!("idle connection {i} failed: {e}"),
        }
    }
    let asked = std::time::Instant::now();
    let (code, body) = http(
        port,
        "GET",
        "/processes",
        &[("Authorization", &bearer())],
        "",
    );
    let took = asked.elapsed();
    assert!(code == 200 && body.contains("bounded"), "{code} {body}");
    assert!(
        took < Duration::from_secs(2),
        "an authenticated request took {took:?} behind {IDLE} idle connections"
    );
    let fds = std::fs::read_dir(format!("/proc/{daemon}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(
        fds < 1024 + 64 + 128,
        "the daemon holds {fds} descriptors with {IDLE} idle web connections"
    );
    drop(idle);

    // A client that starts a header and stalls is dropped after the header timeout (10 s).
    let mut slow = TcpStream::connect(("127.0.0.1", port)).expect("connecting");
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .expect("sending half a header");
    slow.set_read_timeout(Some(Duration::from_millis(200))).ok();
    let started = std::time::Instant::now();
    let closed = wait_until(Duration::from_secs(20), || {
        let mut buf = [0u8; 512];
        match slow.read(&mut buf) {
            Ok(0) => true,  // closed
            Ok(_) => false, // an answer (408): read on until the close
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    });
    let after = started.elapsed();
    assert!(closed, "a stalled header was kept open for {after:?}");
    assert!(
        after >= Duration::from_secs(5),
        "dropped after {after:?}: sooner than the header timeout"
    );
    // And the listener still answers.
    assert_eq!(
        http(port, "GET", "/metrics", &[("Authorization", &bearer())], "").0,
        200
    );
}
