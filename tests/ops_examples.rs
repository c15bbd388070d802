//! The container examples are valid and agree with each other: the Kubernetes YAML parses (with
//! yaml-rust2, a pure-Rust YAML 1.2 parser, so the test needs no Python module that may be missing),
//! its probes point at cohort's /healthz and /readyz on the port the Dockerfile's `--health` opens,
//! the Dockerfile has FROM and CMD, and the example app really runs under `cohort run`.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;
use yaml_rust2::{Yaml, YamlLoader};

fn load(rel: &str) -> Vec<Yaml> {
    let text = std::fs::read_to_string(repo(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{rel} is not valid YAML: {e}"))
}

/// The CMD of the Dockerfile, as a JSON array (exec form).
fn dockerfile_cmd() -> Vec<String> {
    let text = std::fs::read_to_string(repo("examples/docker/Dockerfile")).expect("Dockerfile");
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    let first = lines.iter().find(|l| !l.starts_with("ARG ")).expect("FROM");
    assert!(
        first.starts_with("FROM "),
        "the first instruction is FROM (after ARGs that FROM may use)"
    );
    let cmd = lines
        .iter()
        .rev()
        .find(|l| l.starts_with("CMD "))
        .expect("the Dockerfile has a CMD");
    serde_json::from_str(&cmd[4..]).expect("CMD in exec form (a JSON array)")
}

#[test]
fn kubernetes_probes_match_the_dockerfile_and_cohort() {
    let cmd = dockerfile_cmd();
    assert_eq!(&cmd[..2], ["cohort", "run"]);
    let health = cmd
        .iter()
        .position(|a| a == "--health")
        .map(|i| cmd[i + 1].clone())
        .expect("CMD passes --health");
    let health_port: i64 = health.rsplit(':').next().unwrap().parse().unwrap();
    assert!(
        repo("examples/docker/app").join(&cmd[2]).is_file(),
        "the config named in CMD exists"
    );

    let docs = load("examples/kubernetes/deployment.yaml");
    let dep = &docs[0];
    assert_eq!(dep["kind"].as_str(), Some("Deployment"));
    let labels = &dep["spec"]["template"]["metadata"]["labels"];
    assert_eq!(&dep["spec"]["selector"]["matchLabels"], labels);
    let c = &dep["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = c["args"]
        .as_vec()
        .expect("args")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(
        args,
        cmd.iter().map(String::as_str).collect::<Vec<_>>(),
        "the pod runs the image's CMD"
    );
    let port_of = |name: &str| {
        c["ports"]
            .as_vec()
            .expect("ports")
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .and_then(|p| p["containerPort"].as_i64())
            .unwrap_or_else(|| panic!("no container port named {name}"))
    };
    assert_eq!(port_of("health"), health_port, "probes reach --health");
    assert_eq!(
        c["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"]["port"].as_str(),
        Some("health")
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"]["port"].as_str(),
        Some("health")
    );
    let grace = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_i64()
        .unwrap();
    let toml = std::fs::read_to_string(repo("examples/docker/app/cohort.toml")).unwrap();
    let kill_ms: i64 = toml
        .lines()
        .find_map(|l| l.strip_prefix("kill_timeout = "))
        .and_then(|v| v.trim().parse().ok())
        .expect("cohort.toml sets kill_timeout");
    assert!(
        grace * 1000 > kill_ms,
        "the pod's grace period outlasts the apps' kill_timeout"
    );

    let svc = &load("examples/kubernetes/service.yaml")[0];
    assert_eq!(svc["kind"].as_str(), Some("Service"));
    for (k, v) in svc["spec"]["selector"].as_hash().expect("selector") {
        assert_eq!(
            &labels[k.as_str().unwrap()],
            v,
            "the Service selects the Deployment's pods"
        );
    }
    let target = svc["spec"]["ports"][0]["targetPort"]
        .as_str()
        .expect("a named targetPort");
    port_of(target);
}

#[test]
fn the_docker_example_app_runs_under_cohort_run() {
    let home = Cohort::new();
    let (app_port, health_port) = (free_port(), free_port());
    let child = Command::new(BIN)
        .args([
            "run",
            "cohort.toml",
            "--health",
            &format!("127.0.0.1:{health_port}"),
        ])
        .current_dir(repo("examples/docker/app"))
        .env("COHORT_HOME", &home.home)
        .env("PORT", app_port.to_string())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(home.work.join("out")).unwrap())
        .stderr(std::fs::File::create(home.work.join("err")).unwrap())
        .spawn()
        .expect("cohort run");
    let mut child = ChildGuard::new(child);
    poll("/readyz 200", Duration::from_secs(15), || {
        (get(health_port, "/readyz").ok()?.status == 200).then_some(())
    });
    let (code, body) = poll("the app to answer", Duration::from_secs(15), || {
        get(app_port, "/").ok().map(|r| (r.status, r.body))
    });
    assert_eq!(code, 200);
    assert!(body.starts_with("hello from pid"), "{body}");
    child.signal(libc::SIGTERM);
    let st = child.wait_exit(Duration::from_secs(15));
    assert_eq!(st.code(), Some(0));
    let out = std::fs::read_to_string(home.work.join("out")).unwrap();
    assert!(out.contains("web|0 | SIGINT: closing the server"), "{out}");
}
