//! What restarts an app besides a crash or a command: file changes (`watch`, `ignore_watch`,
//! `watch_delay`, `watch_options`), a cron schedule (`cron_restart`) and a memory limit (`max_memory_restart`),
//! with PM2's names and value shapes. Parsing and validation only (pure functions); the daemon
//! arms them (`daemon::supervisor::triggers`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// Folders no watch ever looks into (PM2 users add them to `ignore_watch` by habit).
pub const ALWAYS_IGNORED: &[&str] = &["node_modules", ".git"];

/// Debounce of a watch when `watch_delay` is not given: a save that writes several files restarts once.
pub const DEFAULT_WATCH_DELAY_MS: u64 = 100;

/// chokidar's polling interval when `usePolling` is set without an `interval` (chokidar's default).
pub const DEFAULT_POLL_INTERVAL_MS: u64 = 100;

/// chokidar's `awaitWriteFinish: true` waits for a file to stay the same size this long.
pub const AWAIT_WRITE_FINISH_MS: u64 = 2000;

/// Restart (cluster apps: reload) when files under `paths` change.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct WatchSpec {
    /// Absolute folders or files to watch (the app's cwd for `watch: true`).
    pub paths: Vec<PathBuf>,
    /// Globs of paths to ignore (`logs`, `*.tmp`, `/abs/dir`), matched against the path relative
    /// to the app's cwd and against every folder on the way; node_modules and .git always are.
    pub ignore: Vec<String>,
    /// Changes within this many ms after the first one restart once.
    pub delay_ms: u64,
    /// Poll the files every this many ms instead of inotify (`watch_options.usePolling`): for
    /// network and FUSE mounts, bind mounts changed from the host, where inotify sees nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_interval_ms: Option<u64>,
    /// Enter symlinked folders (`watch_options.followSymlinks: true`); by default they are not.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub follow_symlinks: bool,
}

/// What PM2's `watch_options` (chokidar's options) mean for cohort's watcher.
#[derive(Debug, Default, PartialEq)]
pub struct WatchOptions {
    pub poll_interval_ms: Option<u64>,
    pub follow_symlinks: bool,
    /// The quiet time a change needs before the restart (`awaitWriteFinish`), at least.
    pub min_delay_ms: u64,
    /// More ignore globs (`ignored`).
    pub ignore: Vec<String>,
    /// One line per option that has no effect in cohort, saying why.
    pub warnings: Vec<String>,
}

/// Reads `watch_options` (chokidar's options, which PM2 passes through): `usePolling` + `interval`,
/// `followSymlinks`, `awaitWriteFinish` (a debounce of at least its `stabilityThreshold`),
/// `ignored` (globs); `persistent: true`, `ignoreInitial: true`, `atomic` and
/// `ignorePermissionErrors` are what cohort does anyway; every other option is warned about.
pub fn watch_options(value: &Value, at: &str) -> Result<WatchOptions, String> {
    let mut o = WatchOptions::default();
    let obj = match value {
        Value::Null => return Ok(o),
        Value::Object(obj) => obj,
        _ => return Err(format!("{at}: expected an object of chokidar options")),
    };
    let flag = |key: &str, v: &Value| {
        v.as_bool()
            .ok_or_else(|| format!("{at}.{key}: expected true or false"))
    };
    let millis = |key: &str, v: &Value| {
        v.as_u64()
            .ok_or_else(|| format!("{at}.{key}: expected milliseconds (a number)"))
    };
    let mut use_polling = false;
    let mut interval = None;
    for (key, v) in obj {
        match key.as_str() {
            "usePolling" => use_polling = flag(key, v)?,
            "interval" => interval = Some(millis(key, v)?.max(10)),
            "followSymlinks" => o.follow_symlinks = flag(key, v)?,
            "awaitWriteFinish" => {
                o.min_delay_ms = match v {
                    Value::Bool(true) => AWAIT_WRITE_FINISH_MS,
                    Value::Bool(false) | Value::Null => 0,
                    Value::Object(w) => match w.get("stabilityThreshold") {
                        Some(t) => millis("awaitWriteFinish.stabilityThreshold", t)?,
                        None => AWAIT_WRITE_FINISH_MS,
                    },
                    _ => {
                        return Err(format!(
                            "{at}.awaitWriteFinish: expected true, false or {{stabilityThreshold: ms}}"
                        ))
                    }
                }
            }
            "ignored" => match v {
                Value::String(g) => o.ignore.push(g.clone()),
                Value::Array(items) if items.iter().all(Value::is_string) => o
                    .ignore
                    .extend(items.iter().filter_map(|g| g.as_str().map(String::from))),
                _ => o.warnings.push(format!(
                    "{at}.ignored: only globs (strings) are read (a RegExp or function is lost when the config is read); ignored, use ignore_watch"
                )),
            },
            "persistent" if v == &Value::Bool(false) => o.warnings.push(format!(
                "{at}.persistent: false has no effect (cohort watches as long as the app exists)"
            )),
            "ignoreInitial" if v == &Value::Bool(false) => o.warnings.push(format!(
                "{at}.ignoreInitial: false has no effect (files present at start never restart the app)"
            )),
            "persistent" | "ignoreInitial" | "atomic" | "ignorePermissionErrors" => {}
            "binaryInterval" => o.warnings.push(format!(
                "{at}.binaryInterval: no effect (with usePolling every file is polled at `interval`)"
            )),
            "cwd" => o.warnings.push(format!(
                "{at}.cwd: no effect (watched paths and ignore globs are relative to the app's cwd)"
            )),
            "depth" => o.warnings.push(format!(
                "{at}.depth: no effect (every folder under a watched path is watched; add deep folders to ignore_watch)"
            )),
            other => o.warnings.push(format!(
                "{at}.{other}: chokidar option with no effect in cohort; ignored"
            )),
        }
    }
    if use_polling {
        o.poll_interval_ms = Some(interval.unwrap_or(DEFAULT_POLL_INTERVAL_MS));
    } else if interval.is_some() {
        o.warnings
            .push(format!("{at}.interval: no effect without usePolling: true"));
    }
    Ok(o)
}

/// Parses a memory size as PM2 writes it: bytes (`1048576`), or a number with K, M or G
/// (`150M`, `1G`, `512K`, also `150MB`); binary multiples, as PM2.
pub fn parse_memory(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let upper = t.to_ascii_uppercase();
    let upper = upper.strip_suffix('B').unwrap_or(&upper);
    let (digits, mult) = match upper.chars().last() {
        Some('K') => (&upper[..upper.len() - 1], 1u64 << 10),
        Some('M') => (&upper[..upper.len() - 1], 1 << 20),
        Some('G') => (&upper[..upper.len() - 1], 1 << 30),
        _ => (upper, 1),
    };
    let n: f64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("{t:?}: expected a size like 150M, 1G, 512K or a number of bytes"))?;
    if !(n.is_finite() && n > 0.0) {
        return Err(format!("{t:?}: the limit must be above 0"));
    }
    Ok((n * mult as f64) as u64)
}

/// Checks a cron pattern as PM2's croner reads it: 5 fields, or 6 with seconds first.
pub fn parse_cron(text: &str) -> Result<croner::Cron, String> {
    use croner::parser::{CronParser, Seconds, Year};
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(text.trim())
        .map_err(|e| {
            format!("{text:?}: {e} (expected 5 fields `m h dom mon dow`, or 6 with seconds first)")
        })
}

/// `watch` as a value: `true`/`false`, a path, or a list of paths (relative to `cwd`).
pub fn watch_paths(value: &Value, cwd: &Path) -> Result<Option<Vec<PathBuf>>, String> {
    match value {
        Value::Bool(false) | Value::Null => Ok(None),
        Value::Bool(true) => Ok(Some(vec![cwd.to_path_buf()])),
        Value::String(s) => Ok(Some(vec![cwd.join(s)])),
        Value::Array(items) => {
            let mut paths = Vec::new();
            for v in items {
                match v {
                    Value::String(s) => paths.push(cwd.join(s)),
                    _ => return Err("expected true, false, a path or a list of paths".into()),
                }
            }
            Ok((!paths.is_empty()).then_some(paths))
        }
        _ => Err("expected true, false, a path or a list of paths".into()),
    }
}

/// The triggers of one app of a config file (`at` names it in errors: `file: apps[0]`).
#[derive(Debug, Default, PartialEq)]
pub struct Triggers {
    pub watch: Option<WatchSpec>,
    pub cron_restart: Option<String>,
    pub max_memory_restart: Option<u64>,
    /// Options of `watch_options` that have no effect, one line each.
    pub warnings: Vec<String>,
}

/// Reads `watch`, `ignore_watch`, `watch_delay`, `cron_restart` and `max_memory_restart` of an app
/// object; errors name the field.
pub fn from_fields(obj: &Map<String, Value>, at: &str, cwd: &Path) -> Result<Triggers, String> {
    let mut t = Triggers::default();
    let paths = match obj.get("watch") {
        Some(v) => watch_paths(v, cwd).map_err(|e| format!("{at}.watch: {e}"))?,
        None => None,
    };
    let ignore = match obj.get("ignore_watch") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(format!("{at}.ignore_watch: expected globs (strings)")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(format!(
                "{at}.ignore_watch: expected a glob or a list of globs"
            ))
        }
    };
    check_globs(&ignore).map_err(|e| format!("{at}.ignore_watch: {e}"))?;
    let delay_ms = match obj.get("watch_delay") {
        None | Some(Value::Null) => DEFAULT_WATCH_DELAY_MS,
        Some(v) => match v.as_u64() {
            Some(ms) => ms,
            None => {
                return Err(format!(
                    "{at}.watch_delay: expected milliseconds (a number)"
                ))
            }
        },
    };
    let options = match obj.get("watch_options") {
        Some(v) => watch_options(v, &format!("{at}.watch_options"))?,
        None => WatchOptions::default(),
    };
    if paths.is_some() {
        t.warnings = options.warnings;
    }
    let mut ignore = ignore;
    ignore.extend(options.ignore);
    check_globs(&ignore).map_err(|e| format!("{at}.watch_options.ignored: {e}"))?;
    t.watch = paths.map(|paths| WatchSpec {
        paths,
        ignore,
        delay_ms: delay_ms.max(options.min_delay_ms),
        poll_interval_ms: options.poll_interval_ms,
        follow_symlinks: options.follow_symlinks,
    });
    match obj.get("cron_restart").or(obj.get("cron")) {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            parse_cron(s).map_err(|e| format!("{at}.cron_restart: {e}"))?;
            t.cron_restart = Some(s.trim().to_string());
        }
        Some(_) => {
            return Err(format!(
                "{at}.cron_restart: expected a cron pattern (a string)"
            ))
        }
    }
    match obj.get("max_memory_restart") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            t.max_memory_restart =
                Some(parse_memory(s).map_err(|e| format!("{at}.max_memory_restart: {e}"))?)
        }
        Some(Value::Number(n)) => match n.as_u64().filter(|n| *n > 0) {
            Some(b) => t.max_memory_restart = Some(b),
            None => return Err(format!("{at}.max_memory_restart: expected bytes above 0")),
        },
        Some(_) => {
            return Err(format!(
                "{at}.max_memory_restart: expected a size like \"150M\" or a number of bytes"
            ))
        }
    }
    Ok(t)
}

/// Checks that every ignore pattern is a valid glob.
pub fn check_globs(globs: &[String]) -> Result<(), String> {
    for g in globs {
        globset::Glob::new(g).map_err(|e| format!("{g:?}: {e}"))?;
    }
    Ok(())
}

/// The ignores of a watch: the user's globs and the folders always ignored. Relative globs match
/// the path relative to the app's cwd (or any folder on its way), absolute ones the absolute path.
pub struct Ignore {
    relative: globset::GlobSet,
    absolute: globset::GlobSet,
}

impl Ignore {
    pub fn new(ignore: &[String]) -> Ignore {
        let mut rel = globset::GlobSetBuilder::new();
        let mut abs = globset::GlobSetBuilder::new();
        for g in ignore
            .iter()
            .map(String::as_str)
            .chain(ALWAYS_IGNORED.iter().copied())
        {
            let g = g.trim_end_matches('/');
            let (set, forms) = if g.starts_with('/') {
                (&mut abs, vec![g.to_string(), format!("{g}/**")])
            } else {
                let g = g.trim_start_matches("./");
                let forms = vec![
                    g.to_string(),
                    format!("{g}/**"),
                    format!("**/{g}"),
                    format!("**/{g}/**"),
                ];
                (&mut rel, forms)
            };
            for f in forms {
                if let Ok(glob) = globset::GlobBuilder::new(&f)
                    .literal_separator(true)
                    .build()
                {
                    set.add(glob);
                }
            }
        }
        Ignore {
            relative: rel.build().unwrap_or_else(|_| globset::GlobSet::empty()),
            absolute: abs.build().unwrap_or_else(|_| globset::GlobSet::empty()),
        }
    }

    /// Whether a change at `path` is ignored (`base`: the app's cwd).
    pub fn is_ignored(&self, base: &Path, path: &Path) -> bool {
        if self.absolute.is_match(path) {
            return true;
        }
        match path.strip_prefix(base) {
            Ok(rel) => self.relative.is_match(rel),
            Err(_) => path
                .file_name()
                .is_some_and(|n| self.relative.is_match(Path::new(n))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        let cases = [
            ("150M", Ok(150 << 20)),
            ("1G", Ok(1 << 30)),
            ("512K", Ok(512 << 10)),
            ("200MB", Ok(200 << 20)),
            ("1048576", Ok(1 << 20)),
            ("1.5G", Ok(3 << 29)),
            (" 64m ", Ok(64 << 20)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_memory(text), want, "{text}");
        }
        for bad in ["", "M", "lots", "-5M", "0"] {
            assert!(parse_memory(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cron_patterns_as_pm2() {
        for good in [
            "*/2 * * * * *",
            "0 0 * * *",
            "*/5 * * * *",
            "0 3 * * SUN",
            "0 0 1 * *",
        ] {
            assert!(parse_cron(good).is_ok(), "{good}");
        }
        for bad in ["* * *", "61 * * * *", "every day", "* * * * * * 2030"] {
            assert!(parse_cron(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn watch_values() {
        let cwd = Path::new("/srv/app");
        let cases: Vec<(Value, Option<Vec<PathBuf>>)> = vec![
            (serde_json::json!(true), Some(vec![cwd.into()])),
            (serde_json::json!(false), None),
            (serde_json::json!("src"), Some(vec!["/srv/app/src".into()])),
            (
                serde_json::json!(["src", "/etc/app"]),
                Some(vec!["/srv/app/src".into(), "/etc/app".into()]),
            ),
            (serde_json::json!([]), None),
        ];
        for (v, want) in cases {
            assert_eq!(watch_paths(&v, cwd), Ok(want), "{v}");
        }
        assert!(watch_paths(&serde_json::json!(3), cwd).is_err());
    }

    #[test]
    fn fields_of_an_app() {
        let obj = serde_json::json!({"watch": ["src"], "ignore_watch": ["logs", "*.tmp"],
            "watch_delay": 500, "cron_restart": "*/3 * * * * *", "max_memory_restart": "150M"});
        let t = from_fields(obj.as_object().unwrap(), "f: apps[0]", Path::new("/a")).unwrap();
        assert_eq!(
            t,
            Triggers {
                watch: Some(WatchSpec {
                    paths: vec!["/a/src".into()],
                    ignore: vec!["logs".into(), "*.tmp".into()],
                    delay_ms: 500,
                    ..Default::default()
                }),
                cron_restart: Some("*/3 * * * * *".into()),
                max_memory_restart: Some(150 << 20),
                warnings: Vec::new(),
            }
        );
        let errs = [
            (
                serde_json::json!({"cron_restart": "nope"}),
                "apps[0].cron_restart",
            ),
            (
                serde_json::json!({"max_memory_restart": "big"}),
                "apps[0].max_memory_restart",
            ),
            (serde_json::json!({"watch": 1}), "apps[0].watch"),
            (
                serde_json::json!({"watch_delay": "soon"}),
                "apps[0].watch_delay",
            ),
            (
                serde_json::json!({"ignore_watch": ["a[", "b"]}),
                "apps[0].ignore_watch",
            ),
        ];
        for (v, field) in errs {
            let e = from_fields(v.as_object().unwrap(), "f: apps[0]", Path::new("/a")).unwrap_err();
            assert!(e.starts_with(&format!("f: {field}")), "{e}");
        }
    }

    #[test]
    fn chokidar_options() {
        let read = |v: Value| watch_options(&v, "w");
        let cases: Vec<(Value, WatchOptions)> = vec![
            (serde_json::json!(null), WatchOptions::default()),
            (
                serde_json::json!({"usePolling": true}),
                WatchOptions {
                    poll_interval_ms: Some(DEFAULT_POLL_INTERVAL_MS),
                    ..Default::default()
                },
            ),
            (
                serde_json::json!({"usePolling": true, "interval": 500, "followSymlinks": true,
                    "persistent": true, "ignoreInitial": true, "atomic": true}),
                WatchOptions {
                    poll_interval_ms: Some(500),
                    follow_symlinks: true,
                    ..Default::default()
                },
            ),
            (
                serde_json::json!({"awaitWriteFinish": true}),
                WatchOptions {
                    min_delay_ms: AWAIT_WRITE_FINISH_MS,
                    ..Default::default()
                },
            ),
            (
                serde_json::json!({"awaitWriteFinish": {"stabilityThreshold": 300, "pollInterval": 50}}),
                WatchOptions {
                    min_delay_ms: 300,
                    ..Default::default()
                },
            ),
            (
                serde_json::json!({"ignored": ["*.log", "tmp"]}),
                WatchOptions {
                    ignore: vec!["*.log".into(), "tmp".into()],
                    ..Default::default()
                },
            ),
        ];
        for (v, want) in cases {
            assert_eq!(read(v.clone()), Ok(want), "{v}");
        }
        // Options with no effect: one precise warning each, naming the option.
        for (v, key) in [
            (serde_json::json!({"depth": 2}), "w.depth"),
            (serde_json::json!({"interval": 300}), "w.interval"),
            (serde_json::json!({"persistent": false}), "w.persistent"),
            (
                serde_json::json!({"ignoreInitial": false}),
                "w.ignoreInitial",
            ),
            (
                serde_json::json!({"binaryInterval": 300}),
                "w.binaryInterval",
            ),
            (serde_json::json!({"ignored": {}}), "w.ignored"),
            (serde_json::json!({"alwaysStat": true}), "w.alwaysStat"),
        ] {
            let o = read(v.clone()).unwrap();
            assert_eq!(o.warnings.len(), 1, "{v}");
            assert!(o.warnings[0].starts_with(key), "{}", o.warnings[0]);
        }
        for bad in [
            serde_json::json!(true),
            serde_json::json!({"usePolling": "yes"}),
            serde_json::json!({"interval": "fast"}),
            serde_json::json!({"awaitWriteFinish": 3}),
        ] {
            assert!(read(bad.clone()).is_err(), "{bad}");
        }
        // Through the app's fields: the debounce is at least awaitWriteFinish's threshold.
        let obj = serde_json::json!({"watch": true, "watch_delay": 50,
            "watch_options": {"usePolling": true, "interval": 200, "awaitWriteFinish": {"stabilityThreshold": 400}, "depth": 1}});
        let t = from_fields(obj.as_object().unwrap(), "f: apps[0]", Path::new("/a")).unwrap();
        let w = t.watch.unwrap();
        assert_eq!((w.poll_interval_ms, w.delay_ms), (Some(200), 400));
        assert_eq!(t.warnings.len(), 1);
        assert!(t.warnings[0].starts_with("f: apps[0].watch_options.depth"));
    }

    #[test]
    fn ignores() {
        let set = Ignore::new(&["logs".into(), "*.tmp".into(), "/var/data".into()]);
        let base = Path::new("/srv/app");
        let base2 = Path::new("/home/logs/app");
        let cases = [
            ("/srv/app/logs/out.log", true),
            ("/srv/app/logs", true),
            ("/srv/app/a/b/c.tmp", true),
            ("/srv/app/x.tmp", true),
            ("/srv/app/node_modules/x/index.js", true),
            ("/srv/app/.git/HEAD", true),
            ("/srv/app/sub/node_modules/y.js", true),
            ("/var/data/file", true),
            ("/srv/app/index.js", false),
            ("/srv/app/src/logsmith.js", false),
            ("/srv/app/src/x.tmpl", false),
            ("/home/logs/app/index.js", false),
        ];
        for (p, want) in cases {
            let b = if p.starts_with("/home") { base2 } else { base };
            assert_eq!(set.is_ignored(b, Path::new(p)), want, "{p}");
        }
    }
}
