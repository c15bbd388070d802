//! `cohort startup` / `unstartup`: the systemd unit passes `systemd-analyze verify`, units are
//! installed into (and removed from) a scratch root (COHORT_STARTUP_ROOT), the init system is
//! detected, and each refusal (no init system, not root, folder not writable) says what to do.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn cohort(home: &Path, root: Option<&Path>, args: &[&str]) -> Out {
    let mut c = Command::new(BIN);
    c.args(args)
        .env("COHORT_HOME", home)
        .env_remove("COHORT_STARTUP_ROOT")
        .stdin(Stdio::null());
    if let Some(r) = root {
        c.env("COHORT_STARTUP_ROOT", r);
    }
    run_bounded(c)
}

/// The same, as user `nobody` (uid 65534), through setpriv.
fn cohort_as_nobody(home: &Path, root: Option<&Path>, args: &[&str]) -> Out {
    require_tool("setpriv", "util-linux");
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
        .args(args)
        .env("COHORT_HOME", home)
        .env_remove("COHORT_STARTUP_ROOT")
        .stdin(Stdio::null());
    if let Some(r) = root {
        c.env("COHORT_STARTUP_ROOT", r);
    }
    run_bounded(c)
}

/// A scratch folder others may enter (mode 0755, as the folders users have), removed on drop.
fn open_dir(tag: &str) -> tempfile::TempDir {
    let d = scratch_dir(tag);
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod 0755 on a scratch folder");
    d
}

/// Writes a file and returns its path.
fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write file");
    p
}

/// `systemd-analyze verify PATH`.
fn verify(path: &Path) -> Out {
    require_tool("systemd-analyze", "systemd");
    let mut c = Command::new("systemd-analyze");
    c.arg("verify").arg(path).stdin(Stdio::null());
    run_bounded(c)
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let home = Cohort::new();
    // A saved app with a long kill_timeout: the unit waits longer than it before killing.
    home.ok(&[
        "start",
        "sleep 1000",
        "--name",
        "slow",
        "--kill-timeout",
        "45000",
    ]);
    home.ok(&["save"]);
    home.ok(&["kill"]);

    let out = cohort(
        &home.home,
        None,
        &[
            "startup", "systemd", "--print", "-u", "root", "--hp", "/root",
        ],
    );
    assert!(out.status.success(), "{}", out.stderr);
    let unit = out.stdout;
    for want in [
        "Type=notify",
        "User=root",
        &format!("Environment=\"COHORT_HOME={}\"", home.home.display()),
        &format!("ExecStart=\"{BIN}\" daemon"),
        &format!("ExecStartPost=-\"{BIN}\" resurrect"),
        "Restart=on-failure",
        "KillMode=process",
        &format!("ExecStop=\"{BIN}\" kill --exec-stop"),
        "TimeoutStopSec=55",
        "WantedBy=multi-user.target",
    ] {
        assert!(unit.contains(want), "the unit lacks {want:?}:\n{unit}");
    }
    assert!(
        unit.contains("KillMode=process: systemd signals"),
        "the choice is explained in the unit"
    );

    let dir = scratch_dir("verify");
    let path = write(dir.path(), "cohort-root.service", &unit);
    let v = verify(&path);
    let complaints = v.stderr;
    assert!(
        v.status.success(),
        "systemd-analyze verify failed:\n{complaints}"
    );
    assert!(
        !complaints.contains("cohort-root.service"),
        "systemd-analyze complains about the unit:\n{complaints}"
    );

    // A broken unit fails the same check (so the check above can fail).
    let broken = write(
        dir.path(),
        "cohort-broken.service",
        &unit.replace("KillMode=process", "KillMode=sometimes"),
    );
    let v = verify(&broken);
    assert!(
        v.stderr.contains("cohort-broken.service"),
        "a bad KillMode is reported"
    );
}

/// The unit's `ExecStop=` command line, as argv (systemd's quoting is shell-like for these).
fn exec_stop(unit: &str) -> Vec<String> {
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStop="))
        .unwrap_or_else(|| panic!("no ExecStop= in the unit:\n{unit}"));
    assert!(!line.contains('$'), "no variables expected in {line:?}");
    shell_words::split(line).unwrap_or_else(|e| panic!("cannot split {line:?}: {e}"))
}

#[test]
fn exec_stop_stops_the_apps_only_while_systemd_says_the_daemon_runs() {
    let c = Cohort::new();
    c.ok(&["start", "sleep", "--name", "s", "--", "1000"]);
    let app = c.pid("s");
    let daemon = c.daemon_pid().expect("daemon.pid");
    let out = cohort(
        &c.home,
        None,
        &[
            "startup", "systemd", "--print", "-u", "root", "--hp", "/root",
        ],
    );
    assert!(out.status.success(), "{}", out.stderr);
    let argv = exec_stop(&out.stdout);
    let run = |mainpid: Option<i32>| {
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .env("COHORT_HOME", &c.home)
            .env_remove("MAINPID")
            .stdin(Stdio::null());
        if let Some(pid) = mainpid {
            cmd.env("MAINPID", pid.to_string());
        }
        run_bounded(cmd)
    };
    // The daemon exited on its own: ExecStop= runs (if at all) without $MAINPID. Nothing is stopped.
    let crashed = run(None);
    assert!(crashed.status.success(), "{}", crashed.stderr);
    assert!(
        crashed
            .stdout
            .contains("the daemon already exited: nothing to stop"),
        "{}",
        crashed.stdout
    );
    assert!(
        alive(app) && alive(daemon),
        "nothing may stop without $MAINPID"
    );
    assert_eq!(c.pid("s"), app, "the app runs on, same pid");
    // `systemctl stop`: $MAINPID is the running daemon. The app and the daemon stop.
    let stopped = run(Some(daemon));
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let gone = wait_until(std::time::Duration::from_secs(10), || {
        !alive(app) && !alive(daemon)
    });
    assert!(
        gone,
        "ExecStop with $MAINPID left the app or the daemon running"
    );
}

#[test]
fn startup_installs_and_unstartup_removes_each_unit_under_a_root() {
    let home = open_dir("startup-home");
    let root = open_dir("startup-root");
    let r = root.path();
    for d in ["etc/systemd/system", "etc/init.d", "Library/LaunchDaemons"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    let cases = [
        ("systemd", "etc/systemd/system/cohort-root.service", 0o644),
        ("openrc", "etc/init.d/cohort-root", 0o755),
        (
            "launchd",
            "Library/LaunchDaemons/io.cohort.root.plist",
            0o644,
        ),
    ];
    for (init, rel, mode) in cases {
        let out = cohort(home.path(), Some(r), &["startup", init, "-u", "root"]);
        assert!(out.status.success(), "{init}: {}", out.stderr);
        let path = r.join(rel);
        let meta = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{init}: {} missing: {e}", path.display()));
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{init} unit mode");
        assert!(out.stdout.contains("not enabling"), "{}", out.stdout);
        let body = std::fs::read_to_string(&path).unwrap();
        assert!(body.contains("resurrect") && body.contains(&home.path().display().to_string()));
        match init {
            "openrc" => {
                let ok = Command::new("sh").arg("-n").arg(&path).status().unwrap();
                assert!(ok.success(), "the OpenRC script is valid sh");
            }
            "launchd" => {
                let ok = Command::new("python3")
                    .args(["-c", "import plistlib,sys; d=plistlib.load(open(sys.argv[1],'rb')); assert d['RunAtLoad'] and d['UserName']=='root'"])
                    .arg(&path)
                    .status()
                    .unwrap();
                assert!(ok.success(), "the plist parses");
            }
            _ => {}
        }
        let out = cohort(home.path(), Some(r), &["unstartup", init, "-u", "root"]);
        assert!(out.status.success(), "{init}: {}", out.stderr);
        assert!(
            !path.exists(),
            "{init}: unstartup removed {}",
            path.display()
        );
        let out = cohort(home.path(), Some(r), &["unstartup", init, "-u", "root"]);
        assert!(!out.status.success());
        assert!(out.stderr.contains("is not installed"), "{}", out.stderr);
    }
}

#[test]
fn startup_detects_the_init_system_or_says_how_to_name_one() {
    let home = open_dir("detect-home");
    let root = open_dir("detect-root");
    let r = root.path();
    let out = cohort(home.path(), Some(r), &["startup", "--print", "-u", "root"]);
    assert!(!out.status.success());
    let err = out.stderr;
    assert!(
        err.contains("error: no supported init system found"),
        "{err}"
    );
    assert!(
        err.contains("cohort startup systemd|openrc|launchd"),
        "{err}"
    );

    std::fs::create_dir_all(r.join("sbin")).unwrap();
    write(&r.join("sbin"), "openrc-run", "");
    let out = cohort(home.path(), Some(r), &["startup", "--print", "-u", "root"]);
    assert!(
        out.stdout.starts_with("#!/sbin/openrc-run"),
        "{}",
        out.stderr
    );

    std::fs::create_dir_all(r.join("run/systemd/system")).unwrap();
    let out = cohort(home.path(), Some(r), &["startup", "--print", "-u", "root"]);
    assert!(out.stdout.contains("Type=notify"), "{}", out.stderr);

    // Named, but its folder is not there: not installed on this machine.
    let out = cohort(home.path(), Some(r), &["startup", "systemd", "-u", "root"]);
    assert!(!out.status.success());
    let err = out.stderr;
    assert!(
        err.contains("error: systemd not found:")
            && err.contains("etc/systemd/system does not exist"),
        "{err}"
    );
    assert!(err.contains("--print"), "{err}");

    let out = cohort(
        home.path(),
        Some(r),
        &["startup", "systemd", "--print", "-u", "no-such-user-xyz"],
    );
    assert!(
        out.stderr
            .contains("error: no user named \"no-such-user-xyz\""),
        "{}",
        out.stderr
    );
}

#[test]
fn startup_as_a_normal_user_prints_the_command_to_run_as_root() {
    let home = open_dir("nobody-home");
    let out = cohort_as_nobody(home.path(), None, &["startup", "systemd"]);
    assert!(!out.status.success());
    let stdout = out.stdout;
    let err = out.stderr;
    assert!(
        stdout.contains(&format!(
            "sudo env PATH=$PATH COHORT_HOME={} {BIN} startup systemd -u nobody --hp /nonexistent",
            home.path().display()
        )),
        "stdout: {stdout}"
    );
    assert!(
        err.contains("error: installing /etc/systemd/system/cohort-nobody.service needs root (run the command printed above as root"),
        "stderr: {err}"
    );
    assert!(!Path::new("/etc/systemd/system/cohort-nobody.service").exists());
}

#[test]
fn startup_into_a_folder_it_cannot_write_is_a_clear_error() {
    let home = open_dir("ro-home");
    let root = open_dir("ro-root");
    std::fs::create_dir_all(root.path().join("etc/systemd/system")).unwrap();
    let out = cohort_as_nobody(home.path(), Some(root.path()), &["startup", "systemd"]);
    assert!(!out.status.success());
    let err = out.stderr;
    assert!(
        err.contains("error: cannot write") && err.contains("Permission denied"),
        "{err}"
    );
    assert!(err.contains("(run as root: sudo env PATH=$PATH"), "{err}");
    assert!(!root
        .path()
        .join("etc/systemd/system/cohort-nobody.service")
        .exists());
}
