//! The boot units themselves: a systemd service, an OpenRC script and a launchd plist, rendered
//! from a `Plan`. Text only: no I/O here, so each can be printed, reviewed and tested as is.

use super::{InitSystem, Plan};

pub fn render(plan: &Plan) -> String {
    match plan.init {
        InitSystem::Systemd => systemd(plan),
        InitSystem::Openrc => openrc(plan),
        InitSystem::Launchd => launchd(plan),
    }
}

/// Quotes a value for systemd's `Environment=` lines (double quotes, C-style escapes) and doubles
/// `%` so specifiers are not expanded.
fn sd_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '%' => out.push_str("%%"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The same for `Exec*=` lines, which also expand `$VAR`.
fn sd_quote_exec(s: &str) -> String {
    sd_quote(s).replace('$', "$$")
}

fn systemd(p: &Plan) -> String {
    let exe = sd_quote_exec(&p.exe.to_string_lossy());
    format!(
        "# Written by `cohort startup systemd`: starts the cohort daemon for {user} at boot and
# resurrects the apps that `cohort save` stored. Remove it with `cohort unstartup systemd -u {user}`.
[Unit]
Description=cohort process manager ({user})
After=network-online.target
Wants=network-online.target

[Service]
# The daemon tells systemd it is ready (READY=1 on NOTIFY_SOCKET) once its socket answers,
# so resurrect below always finds it.
Type=notify
NotifyAccess=main
User={user}
WorkingDirectory={user_home}
Environment={cohort_home}
Environment={path}
LimitNOFILE=infinity
ExecStart={exe} daemon
# `-`: a machine where nothing was saved yet still boots the daemon.
ExecStartPost=-{exe} resurrect
Restart=on-failure
RestartSec=2
# The apps and cohort's holder (which keeps their sockets, log pipes and IPC channels while no
# daemon runs) live in this unit's cgroup beside the daemon. KillMode=process: systemd signals
# only the daemon, so when the daemon crashes or is killed (kill -9, OOM) and Restart= starts the
# next one, the apps and the holder are left running and the next daemon adopts them (same pids).
# `mixed` or the default `control-group` would SIGKILL them all on that restart.
KillMode=process
# cohort gives each app run a cgroup of its own below the unit's (so nothing an app starts outlives
# it); Delegate=yes is systemd's contract for a service that manages a subtree, and hands it to
# User= (without it a non-root daemon cannot create them and falls back to environment markers).
Delegate=yes
# A requested stop or restart (`systemctl stop/restart`) stops every app gracefully, in order,
# with its kill_signal and kill_timeout, then the daemon. When ExecStop= runs after the daemon
# exited on its own (systemd 252: after a clean exit, not after a crash), $MAINPID is unset and
# `--exec-stop` does nothing.
ExecStop={exe} kill --exec-stop
# Longer than the slowest saved app's kill_timeout plus a margin, so the daemon finishes first.
TimeoutStopSec={timeout}

[Install]
WantedBy=multi-user.target
",
        user = p.user,
        user_home = p.user_home.to_string_lossy().replace('%', "%%"),
        cohort_home = sd_quote(&format!("COHORT_HOME={}", p.cohort_home.to_string_lossy())),
        path = sd_quote(&format!("PATH={}", p.path_env)),
        exe = exe,
        timeout = p.stop_timeout_s,
    )
}

fn openrc(p: &Plan) -> String {
    let q = |s: &str| shell_words::quote(s).into_owned();
    let exe = q(&p.exe.to_string_lossy());
    let log = q(&p.cohort_home.join("daemon.log").to_string_lossy());
    format!(
        "#!/sbin/openrc-run
# Written by `cohort startup openrc`: starts the cohort daemon for {user} at boot and resurrects
# the apps that `cohort save` stored. Remove it with `cohort unstartup openrc -u {user}`.

name=\"cohort-{user}\"
description=\"cohort process manager ({user})\"
command={exe}
command_args=\"daemon\"
command_user={quser}
command_background=\"yes\"
pidfile=\"/run/cohort-{user}.pid\"
output_log={log}
error_log={log}
# SIGTERM to the daemon only: it stops every app with its own kill_signal and kill_timeout.
retry=\"SIGTERM/{timeout}/SIGKILL/5\"
export COHORT_HOME={cohort_home}
export PATH={path}
export HOME={user_home}

depend() {{
	need net
	use dns logger
}}

start_post() {{
	# Resurrect as the user, against the same COHORT_HOME (su keeps the exported variables).
	su -s /bin/sh -c {resurrect} {quser} || ewarn \"cohort resurrect failed (see {log_plain})\"
}}
",
        user = p.user,
        quser = q(&p.user),
        exe = exe,
        log = log,
        log_plain = p.cohort_home.join("daemon.log").to_string_lossy(),
        timeout = p.stop_timeout_s,
        cohort_home = q(&p.cohort_home.to_string_lossy()),
        path = q(&p.path_env),
        user_home = q(&p.user_home.to_string_lossy()),
        resurrect = q(&format!("{exe} resurrect")),
    )
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn launchd(p: &Plan) -> String {
    // launchd has no "after start" hook: a small sh wrapper starts the daemon, waits for its socket
    // (bounded: 10 s), resurrects, then waits on the daemon and forwards launchd's SIGTERM to it.
    let script = "trap 'kill -TERM $d; wait $d' TERM INT; \"$0\" daemon & d=$!; n=0; \
while [ ! -S \"$COHORT_HOME/cohort.sock\" ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done; \
\"$0\" resurrect; wait $d";
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<!-- Written by `cohort startup launchd`: starts the cohort daemon for {user} at boot and resurrects
     the apps that `cohort save` stored. Remove it with `cohort unstartup launchd -u {user}`. -->
<plist version="1.0">
<dict>
  <key>Label</key>
  <string>{label}</string>
  <key>UserName</key>
  <string>{user}</string>
  <key>ProgramArguments</key>
  <array>
    <string>/bin/sh</string>
    <string>-c</string>
    <string>{script}</string>
    <string>{exe}</string>
  </array>
  <key>EnvironmentVariables</key>
  <dict>
    <key>COHORT_HOME</key>
    <string>{cohort_home}</string>
    <key>PATH</key>
    <string>{path}</string>
    <key>HOME</key>
    <string>{user_home}</string>
  </dict>
  <key>WorkingDirectory</key>
  <string>{user_home}</string>
  <key>RunAtLoad</key>
  <true/>
  <key>KeepAlive</key>
  <dict>
    <key>SuccessfulExit</key>
    <false/>
  </dict>
  <key>ExitTimeOut</key>
  <integer>{timeout}</integer>
  <key>StandardOutPath</key>
  <string>{log}</string>
  <key>StandardErrorPath</key>
  <string>{log}</string>
</dict>
</plist>
"#,
        user = xml(&p.user),
        label = xml(&p.unit_name),
        script = xml(script),
        exe = xml(&p.exe.to_string_lossy()),
        cohort_home = xml(&p.cohort_home.to_string_lossy()),
        path = xml(&p.path_env),
        user_home = xml(&p.user_home.to_string_lossy()),
        timeout = p.stop_timeout_s,
        log = xml(&p.cohort_home.join("daemon.log").to_string_lossy()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn plan(init: InitSystem) -> Plan {
        Plan {
            init,
            user: "alice".into(),
            user_home: PathBuf::from("/home/alice"),
            cohort_home: PathBuf::from("/home/alice/.cohort"),
            exe: PathBuf::from("/usr/local/bin/cohort"),
            path_env: "/usr/local/bin:/usr/bin:/bin".into(),
            stop_timeout_s: 30,
            unit_path: PathBuf::from("/etc/x"),
            unit_name: "cohort-alice.service".into(),
        }
    }

    #[test]
    fn systemd_unit_has_the_contract() {
        let u = render(&plan(InitSystem::Systemd));
        for want in [
            "Type=notify",
            "User=alice",
            "ExecStart=\"/usr/local/bin/cohort\" daemon",
            "ExecStartPost=-\"/usr/local/bin/cohort\" resurrect",
            "Environment=\"COHORT_HOME=/home/alice/.cohort\"",
            "KillMode=process",
            "Delegate=yes",
            "ExecStop=\"/usr/local/bin/cohort\" kill --exec-stop",
            "TimeoutStopSec=30",
            "Restart=on-failure",
            "WantedBy=multi-user.target",
        ] {
            assert!(u.contains(want), "missing {want:?} in\n{u}");
        }
    }

    #[test]
    fn systemd_quoting_escapes_specifiers() {
        assert_eq!(sd_quote("a%b$c\"d"), "\"a%%b$c\\\"d\"");
        assert_eq!(sd_quote_exec("/opt/$x"), "\"/opt/$$x\"");
    }

    #[test]
    fn openrc_and_launchd_name_the_daemon_and_resurrect() {
        let o = render(&plan(InitSystem::Openrc));
        assert!(o.starts_with("#!/sbin/openrc-run\n"));
        assert!(o.contains("command_args=\"daemon\"") && o.contains("resurrect"));
        let l = render(&plan(InitSystem::Launchd));
        assert!(l.contains("<string>/usr/local/bin/cohort</string>") && l.contains("resurrect"));
    }
}
