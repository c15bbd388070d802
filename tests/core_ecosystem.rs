//! Ecosystem files: cohort.toml, JSON, PM2's ecosystem.config.js / .cjs (evaluated by node), env
//! blocks, warnings for fields not supported yet, and errors that name file, app and field while
//! starting nothing.

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

/// The JSON line hold.js printed last for `name`.
fn hold_line(c: &Cohort, name: &str) -> Value {
    let log = c.wait_log(name, "out", "{", T);
    serde_json::from_str(log.lines().last().unwrap_or_default()).expect("hold.js line")
}

fn hold() -> String {
    fixture("hold.js")
}

#[test]
fn toml_file() {
    let c = Cohort::new();
    std::fs::create_dir_all(c.work.join("srv")).expect("mkdir");
    c.write(
        "cohort.toml",
        &format!(
            "[[apps]]\nname = \"api\"\nscript = {:?}\nargs = [\"--port\", \"1\"]\ncwd = \"srv\"\nenv = {{ X = \"toml\" }}\n\n\
             [[apps]]\nname = \"sl\"\nscript = \"sleep 1000\"\n",
            hold()
        ),
    );
    let o = c.ok(&["start", "cohort.toml"]);
    assert!(o.stderr.contains("started api, sl"), "{}", o.stderr);
    let line = hold_line(&c, "api");
    assert_eq!(line["X"], "toml");
    assert_eq!(line["args"], serde_json::json!(["--port", "1"]));
    let srv = std::fs::canonicalize(c.work.join("srv")).expect("canonical");
    assert_eq!(
        line["cwd"].as_str(),
        srv.to_str(),
        "cwd is relative to the file's folder"
    );
    assert_eq!(comm(c.pid("sl")), "sleep");
}

#[test]
fn json_file_from_another_folder() {
    let c = Cohort::new();
    c.write(
        "conf/apps.json",
        &format!(
            r#"{{"apps": [{{"name": "j", "script": {:?}, "env": {{"X": "json"}}}}]}}"#,
            hold()
        ),
    );
    // Started from the work dir, the app's cwd defaults to the file's folder.
    c.ok(&["start", "conf/apps.json"]);
    let line = hold_line(&c, "j");
    assert_eq!(line["X"], "json");
    let conf = std::fs::canonicalize(c.work.join("conf")).expect("canonical");
    assert_eq!(line["cwd"].as_str(), conf.to_str());
}

const JS: &str = r#"
const base = { script: process.env.HOLD, kill_timeout: 500 };
module.exports = {
  apps: [{
    ...base,
    name: 'a' + 'pi',
    env: { X: 'dev', ONLY_DEV: 'yes' },
    env_production: { X: 'prod' },
  }],
};
"#;

#[test]
fn ecosystem_config_js_computes_values() {
    let c = Cohort::new();
    c.write("ecosystem.config.js", JS);
    let o = c.cmd_env(&["start", "ecosystem.config.js"], &[("HOLD", &hold())]);
    assert!(o.success(), "{}", o.stderr);
    assert_eq!(hold_line(&c, "api")["X"], "dev");
}

#[test]
fn env_production_applies_on_top_of_env() {
    let c = Cohort::new();
    c.write("ecosystem.config.js", JS);
    let o = c.cmd_env(
        &["start", "ecosystem.config.js", "--env", "production"],
        &[("HOLD", &hold())],
    );
    assert!(o.success(), "{}", o.stderr);
    assert_eq!(
        hold_line(&c, "api")["X"],
        "prod",
        "the app sees env_production"
    );
    let id = c.proc("api")["id"].as_i64().expect("id").to_string();
    let env = c.ok(&["env", &id]).stdout;
    assert!(env.lines().any(|l| l == "X: prod"), "{env}");
    assert!(
        env.lines().any(|l| l == "ONLY_DEV: yes"),
        "env still applies under env_production: {env}"
    );
    let d = c.ok(&["describe", "api"]).stdout;
    assert!(
        d.contains("X") && d.contains("ONLY_DEV"),
        "describe lists the app's env keys: {d}"
    );
}

#[test]
fn ecosystem_config_cjs() {
    let c = Cohort::new();
    // A package.json with "type": "module" makes .js ESM; .cjs stays CommonJS.
    c.write("package.json", r#"{"type": "module"}"#);
    c.write(
        "ecosystem.config.cjs",
        &format!(
            "module.exports = {{ apps: [{{ name: 'c' + 'js', script: {:?} }}] }};\n",
            hold()
        ),
    );
    c.ok(&["start", "ecosystem.config.cjs"]);
    assert_eq!(c.proc("cjs")["status"], "online");
}

#[test]
fn unsupported_fields_warn_once_each() {
    let c = Cohort::new();
    c.write(
        "ecosystem.config.js",
        &format!(
            "module.exports = {{ apps: [{{ name: 'w', script: {:?}, filter_env: ['SECRET'], source_map_support: true, watch: false }}] }};\n",
            hold()
        ),
    );
    let o = c.ok(&["start", "ecosystem.config.js"]);
    let warnings: Vec<&str> = o
        .stderr
        .lines()
        .filter(|l| l.starts_with("warning:"))
        .collect();
    assert_eq!(
        warnings
            .iter()
            .filter(|l| l.contains(".filter_env"))
            .count(),
        1,
        "{}",
        o.stderr
    );
    assert_eq!(
        warnings
            .iter()
            .filter(|l| l.contains(".source_map_support"))
            .count(),
        1,
        "{}",
        o.stderr
    );
    assert_eq!(warnings.len(), 2, "{}", o.stderr);
    assert_eq!(
        c.proc("w")["status"],
        "online",
        "a warning does not stop the start"
    );
}

#[test]
fn bad_field_names_file_app_and_field_and_starts_nothing() {
    let c = Cohort::new();
    c.write(
        "ecosystem.config.js",
        "module.exports = { apps: [ { name: 'ok', script: 'sleep 1000' },\n\
         { name: 'bad', script: 'sleep 1000', instances: 'lots' } ] };\n",
    );
    let o = c.cmd(&["start", "ecosystem.config.js"]);
    assert!(!o.success());
    assert_eq!(
        o.stderr.trim_end(),
        "error: ecosystem.config.js: apps[1].instances: expected a number or \"max\", got \"lots\""
    );
    assert!(
        c.ls_json().is_empty(),
        "the valid app must not be started either"
    );
}

#[test]
fn broken_js_names_the_file() {
    let c = Cohort::new();
    c.write(
        "ecosystem.config.js",
        "module.exports = { apps: [ { name: 1 ",
    );
    let o = c.cmd(&["start", "ecosystem.config.js"]);
    assert!(!o.success());
    assert!(
        o.stderr.starts_with("error: ecosystem.config.js"),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr.contains("SyntaxError"),
        "node's reason should be shown: {}",
        o.stderr
    );
    assert!(c.ls_json().is_empty());
}

#[test]
fn bad_toml_and_json_name_the_file() {
    let c = Cohort::new();
    c.write("cohort.toml", "[[apps]\nname = \"x\"\n");
    let err = c.fails(&["start", "cohort.toml"]);
    assert!(err.starts_with("error: cohort.toml: invalid TOML"), "{err}");
    c.write("apps.json", r#"{"apps": [{"name": "x"}]}"#);
    let err = c.fails(&["start", "apps.json"]);
    assert!(
        err.starts_with("error: apps.json: apps[0].script: missing"),
        "{err}"
    );
    let err = c.fails(&["start", "nothere.json"]);
    assert!(err.contains("nothere.json"), "{err}");
    assert!(c.ls_json().is_empty());
}

#[test]
fn starting_the_same_config_again_restarts_its_apps() {
    let c = Cohort::new();
    c.write(
        "cohort.toml",
        &format!(
            "[[apps]]\nname = \"r\"\nscript = {:?}\nkill_timeout = 500\nenv = {{ X = \"one\" }}\n",
            hold()
        ),
    );
    c.ok(&["start", "cohort.toml"]);
    let first = c.pid("r");
    assert_eq!(hold_line(&c, "r")["X"], "one");
    c.write(
        "cohort.toml",
        &format!(
            "[[apps]]\nname = \"r\"\nscript = {:?}\nkill_timeout = 500\nenv = {{ X = \"two\" }}\n",
            hold()
        ),
    );
    c.ok(&["start", "cohort.toml"]);
    let procs = c.procs("r");
    assert_eq!(procs.len(), 1, "the app was duplicated: {procs:?}");
    assert_eq!(procs[0]["restarts"], 1);
    assert_ne!(procs[0]["pid"].as_i64(), Some(first as i64));
    assert!(!alive(first));
    assert!(
        wait_until(T, || hold_line(&c, "r")["X"] == "two"),
        "the new env was not applied"
    );
}
