//! Leaving the engine as found: each test's containers, pods, image and files go when it ends
//! (also when it fails); the last test out removes the pause image it caused and the iptables
//! chains netavark (or CNI) leaves behind, once no container is left.

use super::host::PAUSE_REPO;
use super::image::remove_build_context;
use super::{podman, run, tag};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

/// What one test made in the engine; removed on drop (also when the test fails). The last test
/// out also removes the pause image (when a test made it) and the engine's firewall chains.
pub struct Engine {
    pub image: String,
    pub containers: Vec<String>,
    /// Pods to take down (`podman kube down FILE`) if the test did not.
    pub kube_files: Vec<PathBuf>,
    /// Files and folders under target/containers that the test wrote.
    pub paths: Vec<PathBuf>,
    /// cgroup directories the engine leaves behind (podman 4.3 with cgroupfs on a hybrid host
    /// keeps a pod's directory in the cgroup2 tree after `kube down`), removed once the
    /// containers and pods are gone.
    pub cgroups: Vec<PathBuf>,
}

/// How many tests of this binary use the engine now, and whether the pause image was there before.
static USERS: Mutex<(usize, Option<bool>)> = Mutex::new((0, None));

impl Engine {
    pub fn new(scenario: &str) -> Engine {
        let mut users = USERS.lock().unwrap_or_else(|e| e.into_inner());
        users.0 += 1;
        if users.1.is_none() {
            users.1 = Some(!image_names(PAUSE_REPO).is_empty());
        }
        Engine {
            image: format!("localhost/{}:latest", tag(scenario)),
            containers: Vec::new(),
            kube_files: Vec::new(),
            paths: Vec::new(),
            cgroups: Vec::new(),
        }
    }
}

fn image_names(repo_prefix: &str) -> Vec<String> {
    podman(&["images", "--format", "{{.Repository}}:{{.Tag}}"])
        .stdout
        .lines()
        .filter(|l| l.starts_with(repo_prefix))
        .map(str::to_string)
        .collect()
}

impl Drop for Engine {
    fn drop(&mut self) {
        for file in &self.kube_files {
            let _ = podman(&["kube", "down", &file.to_string_lossy()]);
        }
        for c in &self.containers {
            let _ = podman(&["rm", "--force", "--time", "0", c]);
        }
        for dir in &self.cgroups {
            remove_cgroup(dir);
        }
        let _ = podman(&["rmi", "--force", &self.image]);
        for p in &self.paths {
            let _ = std::fs::remove_file(p).or_else(|_| std::fs::remove_dir_all(p));
        }
        let mut users = USERS.lock().unwrap_or_else(|e| e.into_inner());
        users.0 -= 1;
        if users.0 > 0 {
            return;
        }
        remove_build_context();
        let pause_was_there = users.1.take();
        let no_containers = podman(&["ps", "--all", "--quiet"]).stdout.trim().is_empty();
        if !no_containers {
            return; // someone else's containers still use the engine's pause image and chains
        }
        if pause_was_there == Some(false) {
            for image in image_names(PAUSE_REPO) {
                let _ = podman(&["rmi", &image]);
            }
        }
        remove_firewall_chains();
    }
}

/// Removes an empty cgroup and the empty cgroups below it, deepest first (a cgroup directory is
/// removed with rmdir, its control files go with it; one that still has processes stays, and
/// says so). A directory already gone is fine.
fn remove_cgroup(dir: &std::path::Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&e.path());
            }
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            eprintln!("[containers] removing cgroup {}: {e}", dir.display())
        }
        _ => {}
    }
}

/// Splits an iptables-save rule into words; double quotes group (and are dropped).
fn rule_words(rule: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let (mut quoted, mut any) = (false, false);
    for ch in rule.chars() {
        match ch {
            '"' => (quoted, any) = (!quoted, true),
            c if c.is_whitespace() && !quoted => {
                if any {
                    words.push(std::mem::take(&mut word));
                }
                any = false;
            }
            c => {
                word.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(word);
    }
    words
}

fn engine_chain(name: &str) -> bool {
    name.starts_with("NETAVARK") || name.starts_with("CNI-")
}

/// The iptables commands (arguments after `iptables`) that remove what a container engine
/// (netavark, CNI) left in an iptables-save dump: the jumps into its chains from other chains,
/// then its chains (all flushed before any is deleted, as they refer to each other).
fn firewall_cleanup(save: &str) -> Vec<Vec<String>> {
    let (mut jumps, mut flush, mut delete) = (Vec::new(), Vec::new(), Vec::new());
    let mut table = String::new();
    for line in save.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = t.trim().to_string();
        } else if let Some(decl) = line.strip_prefix(':') {
            let chain = decl.split_whitespace().next().unwrap_or_default();
            if engine_chain(chain) {
                let cmd = |op: &str| vec!["-t".into(), table.clone(), op.into(), chain.into()];
                flush.push(cmd("-F"));
                delete.push(cmd("-X"));
            }
        } else if let Some(rule) = line.strip_prefix("-A ") {
            let words = rule_words(rule);
            let target = words
                .iter()
                .position(|w| w == "-j")
                .and_then(|i| words.get(i + 1));
            if !engine_chain(&words[0]) && target.is_some_and(|t| engine_chain(t)) {
                let mut cmd = vec!["-t".into(), table.clone(), "-D".into()];
                cmd.extend(words);
                jumps.push(cmd);
            }
        }
    }
    jumps.into_iter().chain(flush).chain(delete).collect()
}

fn remove_firewall_chains() {
    for (save, tool) in [
        ("iptables-save", "iptables"),
        ("ip6tables-save", "ip6tables"),
    ] {
        let dump = run(Command::new(save), Duration::from_secs(30));
        for args in firewall_cleanup(&dump.stdout) {
            let mut c = Command::new(tool);
            c.args(&args);
            let out = run(c, Duration::from_secs(30));
            if !out.ok() {
                eprintln!(
                    "[containers] {tool} {}: {}",
                    args.join(" "),
                    out.stderr.trim()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firewall_cleanup_removes_the_engine_chains_and_the_jumps_into_them() {
        let save = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:NETAVARK_FORWARD - [0:0]\n\
            -A FORWARD -m comment --comment \"netavark firewall plugin rules\" -j NETAVARK_FORWARD\n\
            -A INPUT -p tcp --dport 22 -j ACCEPT\nCOMMIT\n\
            *nat\n:PREROUTING ACCEPT [0:0]\n:NETAVARK-HOSTPORT-DNAT - [0:0]\n:NETAVARK-HOSTPORT-SETMARK - [0:0]\n\
            -A PREROUTING -m addrtype --dst-type LOCAL -j NETAVARK-HOSTPORT-DNAT\n\
            -A NETAVARK-HOSTPORT-DNAT -j NETAVARK-HOSTPORT-SETMARK\nCOMMIT\n";
        let want: Vec<&str> = vec![
            "-t filter -D FORWARD -m comment --comment <netavark firewall plugin rules> -j NETAVARK_FORWARD",
            "-t nat -D PREROUTING -m addrtype --dst-type LOCAL -j NETAVARK-HOSTPORT-DNAT",
            "-t filter -F NETAVARK_FORWARD",
            "-t nat -F NETAVARK-HOSTPORT-DNAT",
            "-t nat -F NETAVARK-HOSTPORT-SETMARK",
            "-t filter -X NETAVARK_FORWARD",
            "-t nat -X NETAVARK-HOSTPORT-DNAT",
            "-t nat -X NETAVARK-HOSTPORT-SETMARK",
        ];
        let got: Vec<String> = firewall_cleanup(save)
            .iter()
            .map(|c| {
                c.iter()
                    .map(|w| {
                        if w.contains(' ') {
                            format!("<{w}>")
                        } else {
                            w.clone()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        assert_eq!(got, want);
        assert!(firewall_cleanup("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n").is_empty());
    }
}
