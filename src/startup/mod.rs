//! `cohort startup` / `cohort unstartup`: install (or remove) the boot unit that starts the daemon
//! for one user and resurrects what `cohort save` stored. This file decides which init system,
//! which user, home and paths, and whether we may write; `units` renders the files themselves.
//!
//! `COHORT_STARTUP_ROOT` (hidden, like DESTDIR) puts every path read or written under another root
//! folder and never runs systemctl: it is how packagers and the tests install into a scratch tree.

mod units;

use crate::config::AppSpec;
use crate::home::Home;
use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitSystem {
    Systemd,
    Openrc,
    Launchd,
}

impl InitSystem {
    fn as_str(self) -> &'static str {
        match self {
            InitSystem::Systemd => "systemd",
            InitSystem::Openrc => "openrc",
            InitSystem::Launchd => "launchd",
        }
    }
}

/// What `cohort startup` / `unstartup` was asked for.
#[derive(Debug, Default)]
pub struct StartupOptions {
    /// Init system (default: detected from the running system).
    pub init: Option<InitSystem>,
    /// User the daemon runs as (default: the current user).
    pub user: Option<String>,
    /// That user's home directory (default: from the user database).
    pub home: Option<String>,
    /// Print the unit to stdout instead of installing it.
    pub print: bool,
}

/// Everything a unit needs to know.
pub struct Plan {
    pub init: InitSystem,
    pub user: String,
    pub user_home: PathBuf,
    pub cohort_home: PathBuf,
    pub exe: PathBuf,
    pub path_env: String,
    /// Seconds systemd / OpenRC wait for the daemon's own graceful stop before killing.
    pub stop_timeout_s: u64,
    /// Where the unit goes (already under the root prefix).
    pub unit_path: PathBuf,
    /// The unit's name for the init system's own commands.
    pub unit_name: String,
}

/// The root prefix (`/` unless COHORT_STARTUP_ROOT is set).
fn root() -> (PathBuf, bool) {
    match std::env::var_os("COHORT_STARTUP_ROOT").filter(|v| !v.is_empty()) {
        Some(r) => (PathBuf::from(r), true),
        None => (PathBuf::from("/"), false),
    }
}

fn under(root: &Path, abs: &str) -> PathBuf {
    root.join(abs.trim_start_matches('/'))
}

/// Which init system runs this machine.
fn detect(root: &Path) -> Result<InitSystem> {
    if cfg!(target_os = "macos") {
        return Ok(InitSystem::Launchd);
    }
    if under(root, "/run/systemd/system").is_dir() {
        return Ok(InitSystem::Systemd);
    }
    if under(root, "/sbin/openrc-run").exists()
        || (under(root, "/etc/init.d").is_dir() && under(root, "/sbin/openrc").exists())
    {
        return Ok(InitSystem::Openrc);
    }
    bail!(
        "no supported init system found (looked for {} for systemd, {} for OpenRC); name one: `cohort startup systemd|openrc|launchd`, or see the unit with `--print` and install it by hand",
        under(root, "/run/systemd/system").display(),
        under(root, "/sbin/openrc-run").display()
    )
}

/// Whether the init system is installed here, i.e. the folder its units go in exists.
fn check_installed(init: InitSystem, unit_path: &Path) -> Result<()> {
    let dir = unit_path.parent().unwrap_or(Path::new("/"));
    if !dir.is_dir() {
        bail!(
            "{} not found: {} does not exist (is {} the init system of this machine? name the right one, or use `cohort startup {} --print` to write the unit elsewhere)",
            init.as_str(),
            dir.display(),
            init.as_str(),
            init.as_str()
        );
    }
    Ok(())
}

fn current_user() -> Result<nix::unistd::User> {
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .context("cannot find the current user in the user database (name one with --user)")
}

fn plan(args: &StartupOptions, home: &Home, root: &Path) -> Result<Plan> {
    let init = match args.init {
        Some(i) => i,
        None => detect(root)?,
    };
    let user = match &args.user {
        Some(u) => u.clone(),
        None => current_user()?.name,
    };
    let entry = nix::unistd::User::from_name(&user).ok().flatten();
    let user_home = match (&args.home, &entry) {
        (Some(h), _) => PathBuf::from(h),
        (None, Some(e)) => e.dir.clone(),
        (None, None) => bail!(
            "no user named {user:?} on this machine (check --user, or give its home with --home)"
        ),
    };
    if !user_home.is_absolute() {
        bail!("--home {}: give an absolute path", user_home.display());
    }
    // The COHORT_HOME the user's own CLI uses: the one set here (for this user), else ~/.cohort.
    let same_user = args.user.is_none() || current_user().map(|u| u.name == user).unwrap_or(false);
    let cohort_home = if same_user && std::env::var_os("COHORT_HOME").is_some() {
        home.root.clone()
    } else {
        user_home.join(".cohort")
    };
    let exe = std::env::current_exe().context("cannot find the cohort executable")?;
    let exe = std::fs::canonicalize(&exe).unwrap_or(exe);
    let path_env = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
    let (unit_name, unit_abs) = match init {
        InitSystem::Systemd => {
            let n = format!("cohort-{user}.service");
            (n.clone(), format!("/etc/systemd/system/{n}"))
        }
        InitSystem::Openrc => {
            let n = format!("cohort-{user}");
            (n.clone(), format!("/etc/init.d/{n}"))
        }
        InitSystem::Launchd => {
            let n = format!("io.cohort.{user}");
            (n.clone(), format!("/Library/LaunchDaemons/{n}.plist"))
        }
    };
    Ok(Plan {
        init,
        stop_timeout_s: stop_timeout_s(&cohort_home),
        user,
        user_home,
        cohort_home,
        exe,
        path_env,
        unit_path: under(root, &unit_abs),
        unit_name,
    })
}

/// Long enough for the daemon's graceful stop: the slowest saved app's kill_timeout plus a margin,
/// never under 30 s.
fn stop_timeout_s(cohort_home: &Path) -> u64 {
    let slowest_ms = crate::home::dump::read::<AppSpec>(&cohort_home.join("dump.json"))
        .map(|d| {
            d.apps
                .iter()
                .map(|a| a.spec.kill_timeout_ms)
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0);
    (slowest_ms.div_ceil(1000) + 10).max(30)
}

/// The command to run as root, as PM2 prints it.
fn sudo_command(args: &StartupOptions, plan: &Plan, verb: &str) -> String {
    let cohort_home = match std::env::var_os("COHORT_HOME") {
        Some(h) => format!(" COHORT_HOME={}", shell_words::quote(&h.to_string_lossy())),
        None => String::new(),
    };
    let init = args.init.unwrap_or(plan.init).as_str();
    format!(
        "sudo env PATH=$PATH{cohort_home} {} {verb} {init} -u {} --hp {}",
        shell_words::quote(&plan.exe.to_string_lossy()),
        shell_words::quote(&plan.user),
        shell_words::quote(&plan.user_home.to_string_lossy())
    )
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A failed write or removal under a system folder, with the way forward.
fn permission_error(e: std::io::Error, what: &str, path: &Path, sudo: &str) -> anyhow::Error {
    if matches!(e.kind(), std::io::ErrorKind::PermissionDenied)
        || e.raw_os_error() == Some(libc::EROFS)
    {
        anyhow!(
            "cannot {what} {}: {e} (run as root: {sudo})",
            path.display()
        )
    } else {
        anyhow!("cannot {what} {}: {e}", path.display())
    }
}

/// `cohort startup`: returns the exit code.
pub fn install(args: StartupOptions, home: Home) -> i32 {
    report(install_inner(&args, &home))
}

/// `cohort unstartup`: returns the exit code.
pub fn uninstall(args: StartupOptions, home: Home) -> i32 {
    report(uninstall_inner(&args, &home))
}

fn report(r: Result<()>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

fn install_inner(args: &StartupOptions, home: &Home) -> Result<()> {
    let (root, prefixed) = root();
    let plan = plan(args, home, &root)?;
    let text = units::render(&plan);
    if args.print {
        print!("{text}");
        return Ok(());
    }
    let sudo = sudo_command(args, &plan, "startup");
    if !is_root() && !prefixed {
        println!("{sudo}");
        bail!(
            "installing {} needs root (run the command printed above as root; or see the unit with `cohort startup {} --print`)",
            plan.unit_path.display(),
            plan.init.as_str()
        );
    }
    check_installed(plan.init, &plan.unit_path)?;
    write_unit(&plan, &text).map_err(|e| permission_error(e, "write", &plan.unit_path, &sudo))?;
    prepare_cohort_home(&plan);
    println!("cohort: wrote {}", plan.unit_path.display());
    if prefixed {
        println!("cohort: COHORT_STARTUP_ROOT is set: not enabling it");
        return Ok(());
    }
    enable(&plan, &root)
}

/// Writes the unit atomically with its mode (0755 for an OpenRC script, 0644 otherwise).
fn write_unit(plan: &Plan, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = plan.unit_path.parent().unwrap_or(Path::new("/"));
    let tmp = dir.join(format!(".{}.cohort-tmp", plan.unit_name));
    std::fs::write(&tmp, text)?;
    let mode = if plan.init == InitSystem::Openrc {
        0o755
    } else {
        0o644
    };
    let r = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .and_then(|()| std::fs::rename(&tmp, &plan.unit_path));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// Creates the user's COHORT_HOME (owned by them) so the unit's first start cannot trip on it.
fn prepare_cohort_home(plan: &Plan) {
    if plan.cohort_home.exists() || !is_root() {
        return;
    }
    use std::os::unix::fs::DirBuilderExt;
    let created = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(crate::home::private::DIR_MODE)
        .create(&plan.cohort_home);
    if created.is_ok() {
        if let Ok(Some(u)) = nix::unistd::User::from_name(&plan.user) {
            let _ = nix::unistd::chown(&plan.cohort_home, Some(u.uid), Some(u.gid));
        }
    }
}

/// Runs a system command, reporting (not failing on) errors: the unit is written either way.
fn run_tool(program: &str, args: &[&str]) -> bool {
    match std::process::Command::new(program).args(args).status() {
        Ok(s) if s.success() => true,
        Ok(s) => {
            eprintln!("warning: `{program} {}` failed ({s})", args.join(" "));
            false
        }
        Err(e) => {
            eprintln!("warning: cannot run {program}: {e}");
            false
        }
    }
}

fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

fn enable(plan: &Plan, root: &Path) -> Result<()> {
    match plan.init {
        InitSystem::Systemd => {
            let running = under(root, "/run/systemd/system").is_dir();
            if running && have("systemctl") {
                let ok = run_tool("systemctl", &["daemon-reload"])
                    && run_tool("systemctl", &["enable", &plan.unit_name]);
                if ok {
                    println!(
                        "cohort: enabled {0}: the daemon starts at boot and resurrects what `cohort save` stored (start it now with `systemctl start {0}`)",
                        plan.unit_name
                    );
                    return Ok(());
                }
            }
            println!(
                "cohort: systemd is not running here, so {0} was not enabled; on the machine that boots with it run `systemctl daemon-reload && systemctl enable {0}`",
                plan.unit_name
            );
        }
        InitSystem::Openrc => {
            if have("rc-update") && run_tool("rc-update", &["add", &plan.unit_name, "default"]) {
                println!("cohort: added {} to the default runlevel", plan.unit_name);
            } else {
                println!(
                    "cohort: enable it with `rc-update add {} default`",
                    plan.unit_name
                );
            }
        }
        InitSystem::Launchd => {
            let path = plan.unit_path.to_string_lossy().into_owned();
            if have("launchctl") && run_tool("launchctl", &["load", "-w", &path]) {
                println!("cohort: loaded {}", plan.unit_name);
            } else {
                println!("cohort: load it with `launchctl load -w {path}`");
            }
        }
    }
    println!(
        "cohort: remember `cohort save` after starting your apps: boot resurrects what was saved"
    );
    Ok(())
}

fn uninstall_inner(args: &StartupOptions, home: &Home) -> Result<()> {
    let (root, prefixed) = root();
    let plan = plan(args, home, &root)?;
    let sudo = sudo_command(args, &plan, "unstartup");
    if !plan.unit_path.exists() {
        bail!(
            "{} is not installed: {} does not exist (nothing to remove; check the init system and --user)",
            plan.unit_name,
            plan.unit_path.display()
        );
    }
    if !is_root() && !prefixed {
        println!("{sudo}");
        bail!(
            "removing {} needs root (run the command printed above as root)",
            plan.unit_path.display()
        );
    }
    if !prefixed {
        match plan.init {
            InitSystem::Systemd
                if under(&root, "/run/systemd/system").is_dir() && have("systemctl") =>
            {
                run_tool("systemctl", &["disable", &plan.unit_name]);
            }
            InitSystem::Openrc if have("rc-update") => {
                run_tool("rc-update", &["del", &plan.unit_name, "default"]);
            }
            InitSystem::Launchd if have("launchctl") => {
                run_tool(
                    "launchctl",
                    &["unload", "-w", &plan.unit_path.to_string_lossy()],
                );
            }
            _ => {}
        }
    }
    std::fs::remove_file(&plan.unit_path)
        .map_err(|e| permission_error(e, "remove", &plan.unit_path, &sudo))?;
    if !prefixed
        && plan.init == InitSystem::Systemd
        && under(&root, "/run/systemd/system").is_dir()
        && have("systemctl")
    {
        run_tool("systemctl", &["daemon-reload"]);
    }
    println!(
        "cohort: removed {} (a daemon that runs now keeps running; stop it with `cohort kill`)",
        plan.unit_path.display()
    );
    Ok(())
}
