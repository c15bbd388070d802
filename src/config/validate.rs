//! The rules every app spec obeys, wherever it comes from: a config file (`ecosystem` calls
//! `app` on every spec it builds) or dump.json (`resurrect` calls `saved_apps`), so a dump can't
//! hold anything a config file could not.

use super::{AppSpec, Instances};
use crate::home::dump::SavedApp;
use std::collections::BTreeSet;

/// The most processes one app may have (`-i`, `instances`, and a dump's instance count).
pub const MAX_INSTANCES: u32 = 4096;

/// Checks an app name: used in file names and as a selector, so it can't look like an id or `all`.
/// Spaces inside are allowed (PM2 allows `Export report`); log file names turn them into `-`.
pub fn name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name == "all" || name.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "{name:?} can't be a name: it would read as a selector (`all` or an id)"
        ));
    }
    if name.contains('/') || name.chars().any(char::is_control) {
        return Err(format!(
            "{name:?} can't be a name: no slashes, tabs or line breaks"
        ));
    }
    if name.trim() != name {
        return Err(format!(
            "{name:?} can't be a name: it starts or ends with a space"
        ));
    }
    Ok(())
}

/// Checks one spec; errors name the field under `at` (e.g. `cohort.toml: apps[0]`).
pub fn app(spec: &AppSpec, at: &str) -> Result<(), String> {
    name(&spec.name).map_err(|e| format!("{at}.name: {e}"))?;
    if spec.script.is_empty() {
        return Err(format!(
            "{at}.script: missing (every app needs the script or command to run)"
        ));
    }
    if !spec.cwd.is_absolute() {
        return Err(format!(
            "{at}.cwd: {} is not an absolute path",
            spec.cwd.display()
        ));
    }
    match spec.instances {
        Instances::Count(n) if n == 0 || n > MAX_INSTANCES => {
            return Err(format!(
                "{at}.instances: {n} is out of range (1 to {MAX_INSTANCES}, or \"max\")"
            ))
        }
        Instances::MaxMinus(k) if k > MAX_INSTANCES => {
            return Err(format!(
                "{at}.instances: -{k} is out of range (-1 to -{MAX_INSTANCES})"
            ))
        }
        _ => {}
    }
    if let Some(a) = &spec.autoscale {
        a.check(&format!("{at}.instances"))?;
        if spec.exec_mode != super::ExecMode::Cluster {
            return Err(format!(
                "{at}.instances: autoscaling (min/max) needs cluster mode: workers added or removed must share the app's port (set exec_mode = \"cluster\", or give port/listen; a fork app takes a fixed count)"
            ));
        }
        if spec.balancer.is_some() {
            return Err(format!(
                "{at}.instances: a balancer is not autoscaled (give it a fixed count)"
            ));
        }
    }
    super::parse_signal(&spec.kill_signal).map_err(|e| format!("{at}.kill_signal: {e}"))?;
    if let Some(code) = spec
        .stop_exit_codes
        .iter()
        .find(|c| !(0..=255).contains(*c))
    {
        return Err(format!(
            "{at}.stop_exit_codes: {code} is not an exit code (0-255)"
        ));
    }
    if let Some((k, _)) = spec
        .env
        .iter()
        .find(|(k, v)| k.is_empty() || k.contains(['=', '\0']) || v.contains('\0'))
    {
        return Err(format!(
            "{at}.env: {k:?} is not a valid environment variable"
        ));
    }
    if let Some(c) = &spec.cron_restart {
        super::triggers::parse_cron(c).map_err(|e| format!("{at}.cron_restart: {e}"))?;
    }
    if let Some(w) = &spec.watch {
        super::triggers::check_globs(&w.ignore).map_err(|e| format!("{at}.ignore_watch: {e}"))?;
    }
    for (kind, probe) in [
        (super::probes::ProbeKind::Readiness, &spec.readiness),
        (super::probes::ProbeKind::Liveness, &spec.liveness),
    ] {
        if let Some(probe) = probe {
            super::probes::check(probe, kind).map_err(|(field, e)| {
                format!("{at}.{}.{field} (app {:?}): {e}", kind.as_str(), spec.name)
            })?;
        }
    }
    if let Some(value) = &spec.balancer {
        let b: super::balancer::BalancerSpec =
            serde_json::from_value(value.clone()).map_err(|e| format!("{at}.balancer: {e}"))?;
        b.validate().map_err(|e| format!("{at}.balancer.{e}"))?;
    }
    Ok(())
}

/// Checks the apps of a dump as a config file's are checked, plus the instance counts it saved.
pub fn saved_apps(apps: &[SavedApp<AppSpec>], file: &str) -> Result<(), String> {
    let mut names = BTreeSet::new();
    for (i, saved) in apps.iter().enumerate() {
        let at = format!("{file}: apps[{i}]");
        app(&saved.spec, &format!("{at}.spec"))?;
        if saved.instances > MAX_INSTANCES {
            return Err(format!(
                "{at}.instances: {} is out of range (0 to {MAX_INSTANCES})",
                saved.instances
            ));
        }
        if !names.insert(saved.spec.name.as_str()) {
            return Err(format!(
                "{at}.spec.name: {:?} is saved twice (app names must be unique)",
                saved.spec.name
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn spec(name: &str) -> AppSpec {
        AppSpec::new(name.into(), "/bin/true".into(), PathBuf::from("/"))
    }

    #[test]
    fn bad_specs_name_the_field() {
        let mut cases: Vec<(AppSpec, &str)> = vec![
            (spec("all"), "x.name: \"all\" can't be a name"),
            (spec("12"), "x.name: \"12\" can't be a name"),
            (spec("a\tb"), "x.name: \"a\\tb\" can't be a name"),
            (spec(" a"), "x.name: \" a\" can't be a name"),
        ];
        let mut s = spec("web");
        s.instances = Instances::Count(100_000);
        cases.push((s, "x.instances: 100000 is out of range"));
        let mut s = spec("web");
        s.instances = Instances::Count(0);
        cases.push((s, "x.instances: 0 is out of range"));
        let mut s = spec("web");
        s.kill_signal = "SIGNOPE".into();
        cases.push((s, "x.kill_signal: unknown signal"));
        let mut s = spec("web");
        s.stop_exit_codes = vec![300];
        cases.push((s, "x.stop_exit_codes: 300"));
        let mut s = spec("web");
        s.cwd = PathBuf::from("rel");
        cases.push((s, "x.cwd: rel is not an absolute path"));
        let mut s = spec("web");
        s.env.insert("A=B".into(), "1".into());
        cases.push((s, "x.env: \"A=B\""));
        for (s, want) in cases {
            let got = app(&s, "x").unwrap_err();
            assert!(got.starts_with(want), "{got} (wanted {want})");
        }
        assert_eq!(app(&spec("web"), "x"), Ok(()));
    }

    #[test]
    fn saved_apps_are_checked_like_config_apps() {
        let saved = |name: &str, instances| SavedApp {
            spec: spec(name),
            instances,
            stopped: false,
            ids: Vec::new(),
        };
        let cases = [
            (vec![saved("web", 2)], None),
            (
                vec![saved("all", 1)],
                Some("dump.json: apps[0].spec.name: \"all\""),
            ),
            (
                vec![saved("web", 1), saved("w", 100_000)],
                Some("dump.json: apps[1].instances: 100000 is out of range"),
            ),
            (
                vec![saved("web", 1), saved("web", 1)],
                Some("dump.json: apps[1].spec.name: \"web\" is saved twice"),
            ),
        ];
        for (apps, want) in cases {
            match (saved_apps(&apps, "dump.json"), want) {
                (Ok(()), None) => {}
                (Err(e), Some(w)) => assert!(e.starts_with(w), "{e} (wanted {w})"),
                (got, want) => panic!("{got:?}, wanted {want:?}"),
            }
        }
    }
}
