//! `cohort startup` / `unstartup`: the systemd unit passes `systemd-analyze verify`, units are
//! installed into (and removed from) a scratch root (COHORT_STARTUP_ROOT), the init system is
//! detected, and each refusal (no init system, not root, folder not writable) says what to do.

mod ops_support;

use ops_support::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn cohort(home: &Path, root: Option<&Path>, args: &[&str]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args)
        .env("COHORT_HOME", home)
        .env_remove("COHORT_STARTUP_ROOT")
        .stdin(Stdio::null());
    if let Some(r) = root {
        c.env("COHORT_STARTUP_ROOT", r);
    }
    c.output().expect("run cohort")
}

/// The same, as user `nobody` (uid 65534), through setpriv.
fn cohort_as_nobody(home: &Path, root: Option<&Path>, args: &[&str]) -> Output {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
        .args(args)
        .env("COHORT_HOME", home)
        .env_remove("COHORT_STARTUP_ROOT")
        .stdin(Stdio::null());
    if let Some(r) = root {
        c.env("COHORT_STARTUP_ROOT", r);
    }
    c.output().expect("run setpriv")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// systemd-analyze, installed with apt when missing; None (with the reason printed) when impossible.
fn systemd_analyze() -> Option<()> {
    if have("systemd-analyze") {
        return Some(());
    }
    eprintln!("systemd-analyze is missing: installing the systemd package");
    let _ = Command::new("apt-get")
        .args(["install", "-y", "-q", "systemd"])
        .status();
    if have("systemd-analyze") {
        return Some(());
    }
    eprintln!("SKIPPED: systemd-analyze is not installed and `apt-get install -y systemd` did not install it");
    None
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let home = Home::new("startup-verify");
    // A saved app with a long kill_timeout: the unit waits longer than it before killing.
    assert!(home
        .run(&[
            "start",
            "sleep 1000",
            "--name",
            "slow",
            "--kill-timeout",
            "45000"
        ])
        .status
        .success());
    assert!(home.run(&["save"]).status.success());
    assert!(home.run(&["kill"]).status.success());

    let out = cohort(
        home.path(),
        None,
        &[
            "startup", "systemd", "--print", "-u", "root", "--hp", "/root",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let unit = text(&out.stdout);
    for want in [
        "Type=notify",
        "User=root",
        &format!("Environment=\"COHORT_HOME={}\"", home.path().display()),
        &format!("ExecStart=\"{BIN}\" daemon"),
        &format!("ExecStartPost=-\"{BIN}\" resurrect"),
        "Restart=on-failure",
        "KillMode=mixed",
        "TimeoutStopSec=55",
        "WantedBy=multi-user.target",
    ] {
        assert!(unit.contains(want), "the unit lacks {want:?}:\n{unit}");
    }
    assert!(
        unit.contains("# KillMode=mixed:"),
        "the choice is explained in the unit"
    );

    if systemd_analyze().is_none() {
        return;
    }
    let dir = TempDir::new("verify");
    let path = write(dir.path(), "cohort-root.service", &unit);
    let v = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze");
    let complaints = text(&v.stderr);
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
        &unit.replace("KillMode=mixed", "KillMode=sometimes"),
    );
    let v = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&broken)
        .output()
        .expect("systemd-analyze");
    assert!(
        text(&v.stderr).contains("cohort-broken.service"),
        "a bad KillMode is reported"
    );
}

#[test]
fn startup_installs_and_unstartup_removes_each_unit_under_a_root() {
    let home = TempDir::new("startup-home");
    let root = TempDir::new("startup-root");
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
        assert!(out.status.success(), "{init}: {}", text(&out.stderr));
        let path = r.join(rel);
        let meta = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{init}: {} missing: {e}", path.display()));
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{init} unit mode");
        assert!(
            text(&out.stdout).contains("not enabling"),
            "{}",
            text(&out.stdout)
        );
        let body = std::fs::read_to_string(&path).unwrap();
        assert!(body.contains("resurrect") && body.contains(&home.path().display().to_string()));
        match init {
            "openrc" => {
                let ok = Command::new("sh").arg("-n").arg(&path).status().unwrap();
                assert!(ok.success(), "the OpenRC script is valid sh");
            }
            "launchd" if have("python3") => {
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
        assert!(out.status.success(), "{init}: {}", text(&out.stderr));
        assert!(
            !path.exists(),
            "{init}: unstartup removed {}",
            path.display()
        );
        let out = cohort(home.path(), Some(r), &["unstartup", init, "-u", "root"]);
        assert!(!out.status.success());
        assert!(
            text(&out.stderr).contains("is not installed"),
            "{}",
            text(&out.stderr)
        );
    }
}

#[test]
fn startup_detects_the_init_system_or_says_how_to_name_one() {
    let home = TempDir::new("detect-home");
    let root = TempDir::new("detect-root");
    let r = root.path();
    let out = cohort(home.path(), Some(r), &["startup", "--print", "-u", "root"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
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
        text(&out.stdout).starts_with("#!/sbin/openrc-run"),
        "{}",
        text(&out.stderr)
    );

    std::fs::create_dir_all(r.join("run/systemd/system")).unwrap();
    let out = cohort(home.path(), Some(r), &["startup", "--print", "-u", "root"]);
    assert!(
        text(&out.stdout).contains("Type=notify"),
        "{}",
        text(&out.stderr)
    );

    // Named, but its folder is not there: not installed on this machine.
    let out = cohort(home.path(), Some(r), &["startup", "systemd", "-u", "root"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
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
        text(&out.stderr).contains("error: no user named \"no-such-user-xyz\""),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn startup_as_a_normal_user_prints_the_command_to_run_as_root() {
    let home = TempDir::new("nobody-home");
    let out = cohort_as_nobody(home.path(), None, &["startup", "systemd"]);
    assert!(!out.status.success());
    let stdout = text(&out.stdout);
    let err = text(&out.stderr);
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
    let home = TempDir::new("ro-home");
    let root = TempDir::new("ro-root");
    std::fs::create_dir_all(root.path().join("etc/systemd/system")).unwrap();
    let out = cohort_as_nobody(home.path(), Some(root.path()), &["startup", "systemd"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
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
