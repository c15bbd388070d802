//! Local security (issue 12): another user on the host reads nothing in COHORT_HOME and controls
//! nothing through cohort.sock unless the owner shares it with a group (`cohort access`); planted
//! links are refused; notify.sock hears only managed processes; resurrect holds a dump to a
//! config file's rules; killed saves leave no temp files.
//!
//! "Another user" is an unused uid run through `setpriv` (util-linux), no account created: the
//! tests that switch users need root (as the suite runs in CI) and fail saying so otherwise.

mod common;

use common::*;
use serde_json::Value;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);
/// A uid and gid no account uses here (checked), and a gid the owner shares with.
const STRANGER: u32 = 47_011;
const SHARED_GID: u32 = 47_012;

/// Fails the test unless it can switch users: root, setpriv, and a uid no account uses.
fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "needs root to act as another local user (run the suite as root, as CI does)"
    );
    require_tool("setpriv", "util-linux");
    assert!(
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(STRANGER))
            .ok()
            .flatten()
            .is_none(),
        "uid {STRANGER} belongs to an account: pick another one for this test"
    );
}

/// `PROGRAM ARGS` run as uid/gid `STRANGER` with exactly the supplementary `groups`.
fn stranger(c: &Cohort, groups: &[u32], program: &str, args: &[&str]) -> Out {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={STRANGER}"))
        .arg(format!("--regid={STRANGER}"));
    if groups.is_empty() {
        cmd.arg("--clear-groups");
    } else {
        let list: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        cmd.arg(format!("--groups={}", list.join(",")));
    }
    cmd.arg(program)
        .args(args)
        .env("COHORT_HOME", &c.home)
        .env("HOME", "/nonexistent")
        .env_remove("COHORT_CLIENT_TIMEOUT_MS")
        .current_dir("/")
        .stdin(Stdio::null());
    c.run(cmd)
}

/// `cohort ARGS` as the stranger.
fn stranger_cohort(c: &Cohort, groups: &[u32], args: &[&str]) -> Out {
    stranger(c, groups, BIN, args)
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .mode()
        & 0o777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// Lets the stranger walk down to the home (the harness's temp folder is 0700).
fn open_the_way(c: &Cohort) {
    chmod(c.home.parent().expect("home has a parent"), 0o711);
}

fn names(c: &Cohort) -> Vec<String> {
    c.ls_json()
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect()
}

/// Starts app "web" (`sleep 1000`) with `SECRET_TOKEN=s3cret` in its environment and waits until
/// it is online: the secret the tests look for where strangers must not see it.
fn start_web_with_a_secret(c: &Cohort) {
    let started = c.run({
        let mut cmd = c.command(&["start", "sleep 1000", "--name", "web"]);
        cmd.env("SECRET_TOKEN", "s3cret");
        cmd
    });
    assert!(started.success(), "{}", started.stderr);
    c.wait_status("web", "online", T);
}

#[test]
fn home_is_private_and_strangers_read_nothing_and_control_nothing() {
    require_root();
    let c = Cohort::new();
    start_web_with_a_secret(&c);
    c.ok(&["save"]);
    // Created private: folders 0700, files and sockets 0600.
    let h = &c.home;
    for (path, want) in [
        (h.clone(), 0o700),
        (h.join("logs"), 0o700),
        (h.join("shim"), 0o700),
        (h.join("dump.json"), 0o600),
        (h.join("daemon.log"), 0o600),
        (h.join("daemon.pid"), 0o600),
        (h.join("daemon.lock"), 0o600),
        (h.join("logs/web-0-out.log"), 0o600),
        (h.join("logs/web-0-err.log"), 0o600),
        (h.join("cohort.sock"), 0o600),
        (h.join("notify.sock"), 0o600),
        (h.join("shim/node.cjs"), 0o600),
    ] {
        assert_eq!(mode(&path), want, "{}", path.display());
    }
    let dump = std::fs::read_to_string(h.join("dump.json")).expect("dump.json");
    assert!(dump.contains("s3cret"), "the dump holds the secret: {dump}");

    // What people do to "share" it: the home traversable, the socket open to all.
    open_the_way(&c);
    chmod(h, 0o711);
    chmod(&h.join("cohort.sock"), 0o666);
    for file in ["dump.json", "daemon.log", "logs/web-0-out.log"] {
        let o = stranger(&c, &[], "cat", &[&h.join(file).to_string_lossy()]);
        assert!(!o.success(), "the stranger read {file}: {}", o.stdout);
        assert!(
            o.stderr.contains("Permission denied"),
            "{file}: {}",
            o.stderr
        );
    }
    let o = stranger_cohort(&c, &[], &["start", "id -u", "--name", "evil"]);
    assert!(!o.success(), "the stranger started something: {}", o.stdout);
    assert!(
        o.stderr.starts_with(&format!(
            "error: uid {STRANGER} may not use the cohort daemon"
        )),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("cohort access --group"), "{}", o.stderr);
    let o = stranger_cohort(&c, &[], &["ls"]);
    assert!(!o.success(), "the stranger listed: {}", o.stdout);
    let o = stranger_cohort(&c, &[], &["env", "0"]);
    assert!(!o.success() && !o.stdout.contains("s3cret"), "{}", o.stdout);
    assert_eq!(names(&c), ["web"], "nothing else was started");
    let log = std::fs::read_to_string(h.join("daemon.log")).expect("daemon.log");
    assert!(log.contains(&format!("refused uid {STRANGER}")), "{log}");
}

#[test]
fn a_shared_group_gets_in_and_read_only_members_only_look() {
    require_root();
    let c = Cohort::new();
    start_web_with_a_secret(&c);
    open_the_way(&c);
    let o = c.ok(&["access"]);
    assert!(
        o.stdout.contains("owner (uid 0) and root only"),
        "{}",
        o.stdout
    );

    let o = c.ok(&["access", "--group", &SHARED_GID.to_string()]);
    assert!(o.stdout.contains("full control"), "{}", o.stdout);
    let meta = std::fs::metadata(&c.home).expect("home");
    assert_eq!((meta.mode() & 0o777, meta.gid()), (0o710, SHARED_GID));
    let sock = std::fs::metadata(c.home.join("cohort.sock")).expect("socket");
    assert_eq!((sock.mode() & 0o777, sock.gid()), (0o660, SHARED_GID));
    assert_eq!(mode(&c.home.join("access.json")), 0o600);

    // A member controls; a non-member still can't reach it.
    let member = [SHARED_GID];
    let o = stranger_cohort(&c, &member, &["ls"]);
    assert!(
        o.success() && o.stdout.contains("web"),
        "{}{}",
        o.stdout,
        o.stderr
    );
    let o = stranger_cohort(&c, &member, &["start", "sleep 1001", "--name", "deploy"]);
    assert!(o.success(), "{}", o.stderr);
    assert_eq!(names(&c), ["web", "deploy"]);
    assert!(!stranger_cohort(&c, &[], &["ls"]).success());
    // Members can't change who has access.
    let o = stranger_cohort(&c, &member, &["access", "--off"]);
    assert!(o.stderr.contains("only the owner"), "{}", o.stderr);

    c.ok(&["access", "--group", &SHARED_GID.to_string(), "--read-only"]);
    let o = stranger_cohort(&c, &member, &["ls"]);
    assert!(
        o.success() && o.stdout.contains("web"),
        "{}{}",
        o.stdout,
        o.stderr
    );
    let o = stranger_cohort(&c, &member, &["describe", "web"]);
    assert!(
        o.success() && o.stdout.contains("sleep"),
        "{}{}",
        o.stdout,
        o.stderr
    );
    let o = stranger_cohort(&c, &member, &["start", "sleep 1002", "--name", "nope"]);
    assert!(!o.success(), "{}", o.stdout);
    assert!(
        o.stderr.starts_with("error: read-only access"),
        "{}",
        o.stderr
    );
    for args in [&["stop", "web"][..], &["save"], &["kill"]] {
        let o = stranger_cohort(&c, &member, args);
        assert!(
            o.stderr.contains("read-only access"),
            "{args:?}: {}",
            o.stderr
        );
    }
    let id = c.proc("web")["id"].to_string();
    let o = stranger_cohort(&c, &member, &["env", &id]);
    assert!(o.success(), "{}", o.stderr);
    assert!(o.stdout.contains("SECRET_TOKEN: (hidden"), "{}", o.stdout);
    assert!(!o.stdout.contains("s3cret"), "{}", o.stdout);
    assert_eq!(names(&c), ["web", "deploy"]);
    assert_eq!(c.proc("web")["status"], "online");

    let o = c.ok(&["access", "--off"]);
    assert!(o.stdout.contains("root only"), "{}", o.stdout);
    assert_eq!(mode(&c.home), 0o700);
    assert_eq!(mode(&c.home.join("cohort.sock")), 0o600);
    assert!(!c.home.join("access.json").exists());
    assert!(!stranger_cohort(&c, &member, &["ls"]).success());
}

#[test]
fn homes_with_planted_links_or_another_owner_are_refused() {
    require_root();
    let c = Cohort::new();
    let target = c.write("precious", "root only\n");
    chmod(&target, 0o600);
    let run_in = |home: &Path, args: &[&str]| {
        let mut cmd = c.command(args);
        cmd.env("COHORT_HOME", home);
        c.run(cmd)
    };

    // A home another user prepared in a shared place, with a link where a log will go.
    let theirs = c.work.join("theirs");
    std::fs::create_dir_all(theirs.join("logs")).expect("mkdir");
    std::os::unix::fs::symlink(&target, theirs.join("logs/web-0-out.log")).expect("symlink");
    for dir in [&theirs, &theirs.join("logs")] {
        std::os::unix::fs::chown(dir, Some(STRANGER), Some(STRANGER)).expect("chown");
    }
    let o = run_in(&theirs, &["start", "sleep 1000", "--name", "web"]);
    assert!(!o.success());
    assert!(
        o.stderr.starts_with(&format!(
            "error: COHORT_HOME {} belongs to uid {STRANGER}, not to you (uid 0)",
            theirs.display()
        )),
        "{}",
        o.stderr
    );

    // A home writable by others.
    let open = c.work.join("open");
    std::fs::create_dir_all(&open).expect("mkdir");
    chmod(&open, 0o777);
    let o = run_in(&open, &["ls"]);
    assert_eq!(
        o.stderr.trim(),
        format!(
            "error: COHORT_HOME {0} is writable by others (chmod 700 {0}, or choose another COHORT_HOME)",
            open.display()
        )
    );

    // Our own home with a link at logs/.
    let ours = c.work.join("ours");
    std::fs::create_dir_all(&ours).expect("mkdir");
    let elsewhere = c.work.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).expect("mkdir");
    std::os::unix::fs::symlink(&elsewhere, ours.join("logs")).expect("symlink");
    let o = run_in(&ours, &["start", "sleep 1000", "--name", "web"]);
    assert!(!o.success());
    assert!(o.stderr.contains("is a symbolic link"), "{}", o.stderr);
    assert_eq!(std::fs::read_dir(&elsewhere).expect("ls").count(), 0);

    // Our own home with a link at logs/web-0-out.log: that app can't start, the file is untouched.
    let c2 = Cohort::new();
    std::fs::create_dir_all(c2.home.join("logs")).expect("mkdir");
    std::os::unix::fs::symlink(&target, c2.home.join("logs/web-0-out.log")).expect("symlink");
    c2.cmd(&["start", "sleep 1000", "--name", "web"]);
    c2.wait_status("web", "errored", T);
    let log = std::fs::read_to_string(c2.home.join("daemon.log")).expect("daemon.log");
    assert!(
        log.contains("web-0-out.log: it is a symbolic link"),
        "{log}"
    );
    assert_eq!(
        std::fs::read_to_string(&target).expect("target"),
        "root only\n"
    );
    assert_eq!(mode(&target), 0o600);
    // Pre-created 0755 by create_dir_all above, like an older cohort's home: narrowed.
    assert_eq!(mode(&c2.home), 0o700);
}

#[test]
fn an_older_open_home_is_narrowed_once_and_says_so() {
    let c = Cohort::new();
    std::fs::create_dir_all(c.home.join("logs")).expect("mkdir");
    chmod(&c.home, 0o755);
    std::fs::write(c.home.join("dump.json"), "{}").expect("write");
    chmod(&c.home.join("dump.json"), 0o644);
    let o = c.ok(&["ping"]);
    assert!(
        o.stderr.contains("was 755; it is now 700")
            && o.stderr.contains("1 files in it are now 0600"),
        "{}",
        o.stderr
    );
    assert_eq!(mode(&c.home), 0o700);
    assert_eq!(mode(&c.home.join("dump.json")), 0o600);
    c.ok(&["kill"]);
    let again = c.ok(&["ping"]);
    assert!(!again.stderr.contains("it is now"), "{}", again.stderr);
}

#[test]
fn notify_socket_hears_managed_processes_and_their_children_only() {
    require_tool("python3", "python3");
    let c = Cohort::new();
    c.ok(&["ping"]);
    let sock = c.home.join("notify.sock");
    assert_eq!(mode(&sock), 0o600);
    // The test itself is not managed: ignored, and said.
    let me = std::os::unix::net::UnixDatagram::unbound().expect("socket");
    me.send_to(b"READY=1", &sock).expect("send");
    let needle = format!("ignored READY=1 from pid {}", std::process::id());
    assert!(
        wait_until(T, || std::fs::read_to_string(c.home.join("daemon.log"))
            .unwrap_or_default()
            .contains(&needle)),
        "daemon.log never said {needle}"
    );
    // A child of a managed process speaks for it (like NotifyAccess=all): a wait-ready start
    // returns as soon as it says READY=1, well before the listen timeout.
    let script = c.write(
        "ready.sh",
        "python3 -c 'import os, socket; s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.sendto(b\"READY=1\", os.environ[\"NOTIFY_SOCKET\"])'\nexec sleep 1000\n",
    );
    let t = Instant::now();
    let o = c.cmd(&[
        "start",
        &script.to_string_lossy(),
        "--name",
        "child-ready",
        "--wait-ready",
        "--listen-timeout",
        "30s",
    ]);
    assert!(o.success(), "{}", o.stderr);
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(c.proc("child-ready")["status"], "online");
}

#[test]
fn resurrect_holds_a_dump_to_the_rules_of_a_config_file() {
    let c = Cohort::new();
    c.ok(&["start", "sleep 1000", "--name", "web"]);
    c.ok(&["save"]);
    c.ok(&["delete", "web"]);
    let path = c.home.join("dump.json");
    let good: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("dump")).expect("json");
    type Case = (&'static str, fn(&mut Value), &'static str);
    let cases: [Case; 4] = [
        (
            "named all",
            |d| d["apps"][0]["spec"]["name"] = "all".into(),
            "apps[0].spec.name: \"all\" can't be a name",
        ),
        (
            "100,000 instances",
            |d| d["apps"][0]["instances"] = 100_000.into(),
            "apps[0].instances: 100000 is out of range (0 to 4096)",
        ),
        (
            "100,000 instances in the spec",
            |d| d["apps"][0]["spec"]["instances"] = serde_json::json!({"count": 100_000}),
            "apps[0].spec.instances: 100000 is out of range",
        ),
        (
            "a future version",
            |d| d["version"] = 2.into(),
            "was written by a newer cohort (dump format 2; this cohort reads format 1)",
        ),
    ];
    for (what, change, want) in cases {
        let mut bad = good.clone();
        change(&mut bad);
        std::fs::write(&path, serde_json::to_vec(&bad).expect("encode")).expect("write");
        let err = c.fails(&["resurrect"]);
        assert!(err.starts_with("error: "), "{what}: {err}");
        assert!(err.contains(want), "{what}: {err}");
        assert!(c.ls_json().is_empty(), "{what}: something started");
    }
    std::fs::write(&path, serde_json::to_vec(&good).expect("encode")).expect("write");
    c.ok(&["resurrect"]);
    assert_eq!(names(&c), ["web"]);
}

#[test]
fn killed_saves_leave_no_temp_files() {
    let c = Cohort::new();
    // A big environment makes a save take long enough to be killed in the middle.
    let big: Vec<(String, String)> = (0..400)
        .map(|i| (format!("PAD_{i}"), "x".repeat(1000)))
        .collect();
    let mut start = c.command(&["start", "sleep 1000", "--name", "web"]);
    start.envs(big.iter().map(|(k, v)| (k, v)));
    assert!(c.run(start).success());
    c.ok(&["save"]);
    let temps = || {
        std::fs::read_dir(&c.home)
            .expect("home")
            .filter_map(|e| e.ok())
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with(".dump.json") && n.ends_with(".tmp")
            })
            .count()
    };
    let mut caught = 0;
    for i in 0..50u64 {
        // The daemon killed earlier forgot the apps: bring them back from the (intact) dump.
        c.ok(&["resurrect"]);
        let daemon = c.daemon_pid().expect("daemon pid");
        let mut save = c.command(&["save"]);
        save.stdout(Stdio::null()).stderr(Stdio::null());
        let mut child = save.spawn().expect("spawn save");
        // Most rounds kill the daemon the moment its temp file appears (mid-save); the others at
        // a different moment each, from before the request to after the rename.
        if i % 5 == 0 {
            std::thread::sleep(Duration::from_micros((i * 997) % 12_000));
        } else {
            let deadline = Instant::now() + T;
            while temps() == 0 && matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
        // SAFETY: kill(2) on the daemon this test started.
        unsafe { libc::kill(daemon, libc::SIGKILL) };
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            wait_until(T, || !alive(daemon)),
            "daemon {daemon} survived SIGKILL"
        );
        let n = temps();
        assert!(n <= 1, "round {i}: {n} temp files");
        caught += n;
        let dump: Value =
            serde_json::from_str(&std::fs::read_to_string(c.home.join("dump.json")).expect("dump"))
                .expect("the dump stays whole");
        assert_eq!(dump["apps"].as_array().map(Vec::len), Some(1));
    }
    eprintln!("a temp file was left by {caught} of 50 kills; the next daemon removes it");
    assert!(
        caught > 0,
        "no kill landed mid-save: the test proves nothing"
    );
    c.ok(&["ping"]);
    assert_eq!(temps(), 0, "the next daemon removes what a kill left");
}
