//! Which systemd service runs this process, and whether systemd is bringing one back. The daemon
//! started by a unit (`cohort startup`'s) names it in COHORT_HOME; a CLI that finds no daemon
//! there asks systemd before starting one of its own, so it does not race `Restart=` after a
//! crash (its daemon would win the home, the unit's would fail "a daemon already runs", and the
//! apps would end up supervised outside the unit).

use std::process::{Command, Stdio};

/// The service this process is the main process of (`cohort-alice.service`): systemd started it
/// as a service (`INVOCATION_ID` is set for those), its cgroup is the service's, and the service's
/// `MainPID` is this process (where systemctl cannot say, e.g. no D-Bus for a non-root user: its
/// parent is PID 1, the system manager). A process started by a script inside some other service
/// inherits the first two, not the third.
pub fn own_service() -> Option<String> {
    std::env::var_os("INVOCATION_ID")?;
    let unit = service_of(&std::fs::read_to_string("/proc/self/cgroup").ok()?)?;
    let main = match main_pid(&unit) {
        Some(pid) => pid == std::process::id(),
        None => std::os::unix::process::parent_id() == 1,
    };
    main.then_some(unit)
}

/// `systemctl show -p MainPID --value UNIT`: the unit's main process (0 when it has none).
fn main_pid(unit: &str) -> Option<u32> {
    let out = systemctl(&["show", "-p", "MainPID", "--value", "--", unit])?;
    out.trim().parse().ok()
}

fn systemctl(args: &[&str]) -> Option<String> {
    let out = Command::new("systemctl")
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `.service` a `/proc/PID/cgroup` text places the process in: the last component that names
/// one (a cell below it, `…/cohort-root.service/cohort-x/run-1`, still belongs to the service),
/// from the cgroup2 line (`0::`) or else systemd's own v1 hierarchy (`name=systemd`).
pub fn service_of(cgroup: &str) -> Option<String> {
    let path = |prefix: &str| {
        cgroup
            .lines()
            .find_map(|l| l.strip_prefix(prefix).map(str::to_string))
    };
    let path = path("0::").filter(|p| p.contains(".service")).or_else(|| {
        cgroup
            .lines()
            .find_map(|l| l.split_once(":name=systemd:").map(|x| x.1.to_string()))
    })?;
    path.rsplit('/')
        .find(|c| c.ends_with(".service") && c.len() > ".service".len())
        .map(str::to_string)
}

/// Whether a unit in this `ActiveState` runs or is about to run its daemon again (`activating`
/// also covers `Restart=`'s wait), so a client should wait for it rather than start its own.
pub fn comes_back(active_state: &str) -> bool {
    matches!(
        active_state,
        "active" | "activating" | "deactivating" | "reloading"
    )
}

/// `systemctl is-active UNIT`: the unit's ActiveState, or None when systemctl cannot say.
pub fn active_state(unit: &str) -> Option<String> {
    let out = systemctl(&["is-active", "--", unit])?;
    let state = out.trim();
    (!state.is_empty()).then(|| state.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_is_read_from_the_cgroup_file() {
        let cases: &[(&str, Option<&str>)] = &[
            (
                "0::/system.slice/cohort-alice.service\n",
                Some("cohort-alice.service"),
            ),
            (
                "0::/system.slice/cohort-root.service/cohort-08ea/run-3\n",
                Some("cohort-root.service"),
            ),
            (
                "9:name=systemd:/libpod_parent/libpod-1/system.slice/cohort-root.service\n\
                 4:memory:/libpod_parent/libpod-1\n0::/libpod_parent/libpod-1\n",
                Some("cohort-root.service"),
            ),
            ("0::/user.slice/user-1000.slice/session-3.scope\n", None),
            ("0::/\n", None),
            ("0::/system.slice/.service\n", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(service_of(text).as_deref(), *want, "{text:?}");
        }
    }

    #[test]
    fn a_unit_starting_or_running_comes_back() {
        for (state, want) in [
            ("active", true),
            ("activating", true),
            ("deactivating", true),
            ("reloading", true),
            ("inactive", false),
            ("failed", false),
            ("unknown", false),
        ] {
            assert_eq!(comes_back(state), want, "{state}");
        }
    }
}
