//! The container examples in a real engine: rootful Podman builds examples/docker/Dockerfile
//! (`--target prebuilt`, on an offline base image) and runs it, and `podman kube play` runs
//! examples/kubernetes. Inside the real container cohort is PID 1, serves its probes, lists its apps,
//! restarts a crashed one (and /readyz says 503 meanwhile), reaps orphans and forwards stop signals.
//!
//! Self-contained on purpose (plain std and podman commands, no shared harness). The engine's host
//! settings come from a containers.conf under target/containers, passed with CONTAINERS_CONF: runtime
//! runc (crun refuses hybrid cgroups), ulimits the engine may set (no CAP_SYS_RESOURCE), cgroupfs and
//! file events (no systemd), netavark. The base image (debootstrap of bookworm from the host's apt
//! mirror, plus Debian's nodejs and a `node` user) is cached: as an image tag, and as a rootfs tarball
//! under target/containers that a new image store imports. Each test removes its containers, pods and
//! image; the last one out removes the pause image it caused and the engine's iptables chains.

mod containers_support;

use containers_support::cleanup::Engine;
use containers_support::image::build_image;
use containers_support::systemd::CgroupLayout;
use containers_support::*;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// `podman run -d` of `image` with the given ports published on 127.0.0.1 (host port, container
/// port), extra run options and a command (empty: the image's CMD), named `name`.
fn start_container(
    engine: &mut Engine,
    name: &str,
    ports: &[(u16, u16)],
    opts: &[String],
    cmd: &[&str],
) {
    let mut args: Vec<String> = vec![
        "run".into(),
        "--detach".into(),
        "--name".into(),
        name.into(),
    ];
    for (host, inner) in ports {
        args.push("--publish".into());
        args.push(format!("127.0.0.1:{host}:{inner}"));
    }
    args.extend(opts.iter().cloned());
    args.push(engine.image.clone());
    args.extend(cmd.iter().map(|s| s.to_string()));
    engine.containers.push(name.to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    podman_ok(&args);
}

/// `cohort ls --json` run inside the container: (name, status, restarts) per process.
fn ls_in(container: &str) -> Vec<(String, String, u64)> {
    let json = podman_ok(&["exec", container, "cohort", "ls", "--json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(json.trim())
        .unwrap_or_else(|e| panic!("cohort ls --json in {container}: {e}: {json}"));
    rows.iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or_default().to_string(),
                r["status"].as_str().unwrap_or_default().to_string(),
                r["restarts"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

/// The processes of a container as its engine sees them: (pid, ppid, state, comm).
fn processes(container: &str) -> Vec<(u32, u32, String, String)> {
    podman_ok(&["top", container, "pid", "ppid", "state", "comm"])
        .lines()
        .skip(1)
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            Some((
                w.first()?.parse().ok()?,
                w.get(1)?.parse().ok()?,
                w.get(2)?.to_string(),
                w.get(3)?.to_string(),
            ))
        })
        .collect()
}

fn assert_pid1_is_cohort(container: &str) {
    let procs = processes(container);
    let pid1 = procs.iter().find(|p| p.0 == 1);
    assert_eq!(
        pid1.map(|p| p.3.as_str()),
        Some("cohort"),
        "PID 1 of {container} is cohort: {procs:?}"
    );
}

fn exit_code(container: &str) -> String {
    podman_ok(&["inspect", "--format", "{{.State.ExitCode}}", container])
        .trim()
        .to_string()
}

/// The example image as users run it: serves, /readyz 200, PID 1 cohort, `cohort ls` in the
/// container, and `podman stop` (SIGTERM) ends in exit 0 after the app's SIGINT handler ran.
#[test]
fn the_docker_example_runs_with_cohort_as_pid_1_and_stops_gracefully() {
    let mut engine = Engine::new("docker");
    build_image(&engine.image.clone());
    let name = tag("docker");
    let (app, health) = (free_port(), free_port());
    let started = Instant::now();
    start_container(&mut engine, &name, &[(app, 3000), (health, 9615)], &[], &[]);
    let ready = wait_http(health, "/readyz", Duration::from_secs(30), |c, _| c == 200);
    eprintln!(
        "[containers] docker example: start to /readyz 200: {:.2} s",
        started.elapsed().as_secs_f64()
    );
    assert!(ready.starts_with("ready: 1 processes online"), "{ready}");
    // Online is not listening yet (fork mode, no wait_ready): poll the app.
    let body = wait_http(app, "/", Duration::from_secs(10), |c, _| c == 200);
    assert!(body.starts_with("hello from pid"), "{body}");
    assert_eq!(http_get(health, "/healthz").map(|x| x.0), Some(200));

    assert_pid1_is_cohort(&name);
    let table = podman_ok(&["exec", &name, "cohort", "ls"]);
    assert!(table.contains("web") && table.contains("online"), "{table}");
    assert_eq!(ls_in(&name), [("web".to_string(), "online".to_string(), 0)]);

    let stopping = Instant::now();
    podman_ok(&["stop", "--time", "10", &name]);
    let stop_s = stopping.elapsed().as_secs_f64();
    eprintln!("[containers] docker example: podman stop: {stop_s:.2} s");
    assert!(
        stop_s < 9.0,
        "podman stop waited for its SIGKILL ({stop_s:.1} s)"
    );
    assert_eq!(exit_code(&name), "0", "{}", container_log(&name));
    let log = container_log(&name);
    let handler = log.find("web|0 | SIGINT: closing the server");
    let exit = log.find("cohort: every app is gone; exiting with code 0");
    assert!(
        matches!((handler, exit), (Some(h), Some(e)) if h < e),
        "the app's SIGINT handler ran before cohort exited 0:\n{log}"
    );
    let size = podman_ok(&["image", "inspect", "--format", "{{.Size}}", &engine.image]);
    eprintln!("[containers] image {}: {} bytes", engine.image, size.trim());
}

/// The apps of the crash / orphan / signal scenario, mounted at /lab in the container.
const LAB_CONFIG: &str = r#"
[[apps]]
name = "crashy"
script = "/lab/crashy.js"
restart_delay = 1500
[apps.env]
PORT = "3001"

[[apps]]
name = "orphaner"
script = "/lab/orphaner.js"
kill_signal = "SIGTERM"
"#;

/// Serves PORT; GET /crash makes it exit 3. Prints a line on SIGINT (cohort's default kill_signal).
const CRASHY_JS: &str = r#"
const http = require('http');
http.createServer((req, res) => {
  if (req.url === '/crash') { res.end('bye\n', () => process.exit(3)); return; }
  res.end(`crashy ${process.pid}\n`);
}).listen(Number(process.env.PORT));
process.on('SIGINT', () => { console.log('crashy: SIGINT, exiting'); process.exit(0); });
"#;

/// A shell that backgrounds a job and exits: the job is orphaned, re-parented to cohort (PID 1),
/// which must reap it when it ends. Prints a line on SIGTERM (its kill_signal).
const ORPHANER_JS: &str = r#"
const { spawn } = require('child_process');
spawn('sh', ['-c', 'sleep 3 & echo "orphan $!"'], { stdio: 'inherit' });
process.on('SIGTERM', () => { console.log('orphaner: SIGTERM, exiting'); process.exit(0); });
setInterval(() => {}, 1 << 30);
"#;

/// Inside the real container: a crash turns /readyz 503 until the restart; an orphan is reaped (no
/// zombie left); `podman kill -s TERM` reaches each app as its own kill_signal and cohort exits 0.
#[test]
fn inside_the_container_crashes_restart_orphans_are_reaped_and_term_is_forwarded() {
    let mut engine = Engine::new("lab");
    build_image(&engine.image.clone());
    let lab = work_dir().join(tag("lab"));
    engine.paths.push(lab.clone());
    std::fs::create_dir_all(&lab).expect("creating the lab dir");
    for (file, text) in [
        ("cohort.toml", LAB_CONFIG),
        ("crashy.js", CRASHY_JS),
        ("orphaner.js", ORPHANER_JS),
    ] {
        std::fs::write(lab.join(file), text).expect("writing the lab files");
    }
    let name = tag("lab");
    let (app, health) = (free_port(), free_port());
    let mount = vec!["--volume".to_string(), format!("{}:/lab:ro", lab.display())];
    let cmd = [
        "cohort",
        "run",
        "/lab/cohort.toml",
        "--health",
        "0.0.0.0:9615",
    ];
    start_container(
        &mut engine,
        &name,
        &[(app, 3001), (health, 9615)],
        &mount,
        &cmd,
    );
    let ready = wait_http(health, "/readyz", Duration::from_secs(30), |c, _| c == 200);
    assert!(ready.starts_with("ready: 2 processes online"), "{ready}");
    assert_pid1_is_cohort(&name);

    // The orphan: a child of cohort (PID 1) while it sleeps, then gone, not a zombie.
    let mut orphan = None;
    assert!(
        wait_until(Duration::from_secs(10), || {
            orphan = container_log(&name)
                .lines()
                .find_map(|l| l.strip_prefix("orphaner|0 | orphan "))
                .and_then(|p| p.trim().parse::<u32>().ok());
            orphan.is_some()
        }),
        "the orphaner printed its orphan's pid:\n{}",
        container_log(&name)
    );
    let orphan = orphan.unwrap_or_default();
    let (mut seen, mut parents) = (Vec::new(), Vec::new());
    assert!(
        wait_until(Duration::from_secs(15), || {
            seen = processes(&name);
            let me = seen.iter().find(|p| p.0 == orphan);
            parents.extend(me.filter(|p| !p.2.starts_with('Z')).map(|p| p.1));
            me.is_none()
        }),
        "the orphan {orphan} was reaped: {seen:?}"
    );
    // Its shell exited at once: for the rest of its sleep (3 s) its parent was cohort.
    assert_eq!(
        parents.last(),
        Some(&1),
        "re-parented to PID 1: {parents:?}"
    );
    let zombies: Vec<_> = processes(&name)
        .into_iter()
        .filter(|p| p.2.starts_with('Z'))
        .collect();
    assert!(
        zombies.is_empty(),
        "no zombie in the container: {zombies:?}"
    );

    // The crash: 503 naming the app while it waits for its restart, then 200 again.
    assert_eq!(http_get(app, "/crash").map(|x| x.0), Some(200));
    let unready = wait_http(health, "/readyz", Duration::from_secs(5), |c, _| c == 503);
    assert!(unready.contains("crashy:0"), "{unready}");
    wait_http(health, "/readyz", Duration::from_secs(15), |c, _| c == 200);
    let crashy = ls_in(&name).into_iter().find(|p| p.0 == "crashy");
    assert_eq!(
        crashy,
        Some(("crashy".into(), "online".into(), 1)),
        "restarted once"
    );
    let body = wait_http(app, "/", Duration::from_secs(5), |c, _| c == 200);
    assert!(body.starts_with("crashy"), "{body}");

    // SIGTERM to PID 1: each app gets its kill_signal, cohort exits 0.
    podman_ok(&["kill", "--signal", "TERM", &name]);
    let waited = podman(&["wait", &name]);
    let log = container_log(&name);
    assert_eq!(waited.stdout.trim(), "0", "{}{log}", waited.stderr);
    for line in [
        "cohort: SIGTERM: stopping every app",
        "crashy|0 | crashy: SIGINT, exiting",
        "orphaner|0 | orphaner: SIGTERM, exiting",
        "cohort: every app is gone; exiting with code 0",
    ] {
        assert!(
            log.contains(line),
            "{line:?} in the container's log:\n{log}"
        );
    }
}

/// examples/kubernetes/deployment.yaml for `podman kube play`: one replica, the test's image and
/// pod name, and the container ports published on 127.0.0.1 (podman 4.3 publishes only ports
/// with a hostPort). Everything else (args, probes, grace period) is the example's.
fn kube_for_podman(
    yaml: &str,
    name: &str,
    image: &str,
    ports: &[(u16, u16)],
) -> Result<String, String> {
    fn swap(out: &mut String, from: &str, to: &str) -> Result<(), String> {
        if out.matches(from).count() != 1 {
            return Err(format!("expected {from:?} once in the deployment"));
        }
        *out = out.replacen(from, to, 1);
        Ok(())
    }
    let mut out = yaml.to_string();
    swap(&mut out, "\n  replicas: 2\n", "\n  replicas: 1\n")?;
    swap(
        &mut out,
        "\n  name: cohort-demo\n",
        &format!("\n  name: {name}\n"),
    )?;
    swap(
        &mut out,
        "image: cohort-demo:latest\n",
        &format!("image: {image}\n"),
    )?;
    for (host, inner) in ports {
        let line = format!("containerPort: {inner}\n");
        let indent = out
            .lines()
            .find(|l| l.trim_start() == line.trim_end())
            .map(|l| l.len() - l.trim_start().len())
            .unwrap_or(0);
        let pad = " ".repeat(indent);
        swap(
            &mut out,
            &line,
            &format!("{line}{pad}hostIP: 127.0.0.1\n{pad}hostPort: {host}\n"),
        )?;
    }
    Ok(out)
}

/// The lines of a k8s-file log (`TIME STREAM P|F MESSAGE` records): a line written in several pieces
/// is several `P` records closed by an `F` one, per stream.
fn k8s_file_lines(raw: &str) -> String {
    let (mut out, mut open) = (String::new(), Vec::<(String, String)>::new());
    for record in raw.lines() {
        let mut f = record.splitn(4, ' ');
        let (Some(_time), Some(stream), Some(tag), msg) = (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let at = match open.iter().position(|(s, _)| s == stream) {
            Some(at) => at,
            None => {
                open.push((stream.to_string(), String::new()));
                open.len() - 1
            }
        };
        open[at].1.push_str(msg.unwrap_or(""));
        if tag.starts_with('F') {
            out.push_str(&std::mem::take(&mut open[at].1));
            out.push('\n');
        }
    }
    out
}

/// `podman kube play` of the Kubernetes example: the pod comes up, cohort is PID 1 and lists the
/// app online, the probes' endpoints answer on the ports they name; the pod stops cleanly (the app's
/// handler runs, cohort exits 0) within the spec's grace period, and `podman kube down` removes it.
#[test]
fn podman_kube_play_runs_the_kubernetes_example() {
    let mut engine = Engine::new("kube");
    build_image(&engine.image.clone());
    let name = tag("kube");
    let (app, health) = (free_port(), free_port());
    let yaml_text = std::fs::read_to_string(repo("examples/kubernetes/deployment.yaml"))
        .expect("examples/kubernetes/deployment.yaml");
    let yaml = kube_for_podman(
        &yaml_text,
        &name,
        &engine.image,
        &[(app, 3000), (health, 9615)],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let file = work_dir().join(format!("{name}.yaml"));
    std::fs::write(&file, yaml).expect("writing the pod's YAML");
    engine.kube_files.push(file.clone());
    engine.paths.push(file.clone());
    let log_file = work_dir().join(format!("{name}.log"));
    engine.paths.push(log_file.clone());
    let log_opt = format!("path={}", log_file.display());
    let started = Instant::now();
    podman_ok(&[
        "kube",
        "play",
        "--log-opt",
        &log_opt,
        &file.to_string_lossy(),
    ]);
    let ready = wait_http(health, "/readyz", Duration::from_secs(30), |c, _| c == 200);
    eprintln!(
        "[containers] kube play: start to /readyz 200: {:.2} s",
        started.elapsed().as_secs_f64()
    );
    assert!(ready.starts_with("ready: 1 processes online"), "{ready}");
    assert_eq!(http_get(health, "/healthz").map(|x| x.0), Some(200));
    // Online is not listening yet (fork mode, no wait_ready): poll the app.
    let body = wait_http(app, "/", Duration::from_secs(10), |c, _| c == 200);
    assert!(body.starts_with("hello from pid"), "{body}");

    // Deployment NAME → pod NAME-pod-0, its container NAME-pod-0-CONTAINER.
    let pod = format!("{name}-pod-0");
    let container = format!("{pod}-app");
    let status = podman_ok(&["pod", "inspect", "--format", "{{.State}}", &pod]);
    assert_eq!(status.trim(), "Running");
    if let Some(root) = CgroupLayout::of_this_host().cgroup2_root() {
        let cgroup = podman_ok(&["pod", "inspect", "--format", "{{.CgroupPath}}", &pod]);
        let cgroup = cgroup.trim().trim_start_matches('/');
        if !cgroup.is_empty() {
            engine.cgroups.push(PathBuf::from(root).join(cgroup));
        }
    }
    assert_pid1_is_cohort(&container);
    assert_eq!(
        ls_in(&container),
        [("web".to_string(), "online".to_string(), 0)]
    );

    // Podman before 5.1 kills a pod's containers at once on `kube down` (containers/podman#22397),
    // and 4.3 leaves their stop timeout at 10 s whatever terminationGracePeriodSeconds says: `pod
    // stop --time GRACE` first sends each container its stop signal and waits up to the grace period.
    let grace = yaml_text
        .lines()
        .find_map(|l| l.trim().strip_prefix("terminationGracePeriodSeconds:"))
        .map(|v| v.trim().to_string())
        .expect("the example sets terminationGracePeriodSeconds");
    let stopping = Instant::now();
    podman_ok(&["pod", "stop", "--time", &grace, &pod]);
    let stop_s = stopping.elapsed().as_secs_f64();
    eprintln!("[containers] kube: pod stop: {stop_s:.2} s");
    assert!(
        stop_s < 25.0,
        "pod stop waited for the grace period ({stop_s:.1} s)"
    );
    let log = k8s_file_lines(&std::fs::read_to_string(&log_file).unwrap_or_default());
    assert_eq!(exit_code(&container), "0", "{log}");
    let handler = log.find("web|0 | SIGINT: closing the server");
    let exit = log.find("cohort: every app is gone; exiting with code 0");
    assert!(
        matches!((handler, exit), (Some(h), Some(e)) if h < e),
        "the app's SIGINT handler ran before cohort exited 0:\n{log}"
    );
    let downing = Instant::now();
    podman_ok(&["kube", "down", &file.to_string_lossy()]);
    eprintln!(
        "[containers] kube down: {:.2} s",
        downing.elapsed().as_secs_f64()
    );
    engine.kube_files.clear();
    assert!(!podman(&["pod", "exists", &pod]).ok(), "the pod is gone");
}

#[test]
fn the_kubernetes_example_is_rewritten_for_podman_only_where_needed() {
    let yaml = std::fs::read_to_string(repo("examples/kubernetes/deployment.yaml")).expect("yaml");
    let out = kube_for_podman(
        &yaml,
        "t1",
        "localhost/x:1",
        &[(40001, 3000), (40002, 9615)],
    )
    .expect("every substitution applies");
    assert!(
        out.contains("\n  replicas: 1\n") && out.contains("\n  name: t1\n"),
        "{out}"
    );
    assert!(out.contains("image: localhost/x:1\n"), "{out}");
    assert!(
        out.contains(
            "containerPort: 3000\n              hostIP: 127.0.0.1\n              hostPort: 40001\n"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "containerPort: 9615\n              hostIP: 127.0.0.1\n              hostPort: 40002\n"
        ),
        "{out}"
    );
    assert!(kube_for_podman("kind: Pod\n", "t", "i", &[]).is_err());
}

#[test]
fn k8s_file_logs_are_read_as_lines() {
    let raw = "2026-01-01T00:00:00Z stderr P cohort: every app is gone; \n\
               2026-01-01T00:00:00Z stdout F web|0 | bye\n\
               2026-01-01T00:00:00Z stderr P exiting with code \n\
               2026-01-01T00:00:00Z stderr F 0\n\
               2026-01-01T00:00:00Z stdout F \n";
    assert_eq!(
        k8s_file_lines(raw),
        "web|0 | bye\ncohort: every app is gone; exiting with code 0\n\n"
    );
}
