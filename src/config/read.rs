//! From a config file's bytes to one JSON value, whatever the format: TOML, JSON, the JavaScript
//! object literals PM2 accepts in `.json` files (comments, unquoted keys, trailing commas, single
//! quotes: read as JSON5, and evaluated with node as PM2 does when even that fails), and
//! `ecosystem.config.js`/`.cjs`/`.mjs` (evaluated with node, so it may compute values).

use serde_json::Value;
use std::path::Path;

/// Reads the config file at `path` (`display` is how errors name it).
pub fn file(path: &Path, display: &str) -> Result<Value, String> {
    let lower = display.to_ascii_lowercase();
    if lower.ends_with(".yml") || lower.ends_with(".yaml") {
        return Err(format!(
            "{display}: YAML ecosystem files are not supported (write the same fields as JSON, TOML or ecosystem.config.js)"
        ));
    }
    if lower.ends_with(".js") || lower.ends_with(".cjs") || lower.ends_with(".mjs") {
        return eval_module(path, display);
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{display}: cannot read: {e}"))?;
    if lower.ends_with(".toml") {
        let v: toml::Value =
            toml::from_str(&text).map_err(|e| format!("{display}: invalid TOML: {e}"))?;
        serde_json::to_value(v).map_err(|e| format!("{display}: {e}"))
    } else {
        json_like(&text, display)
    }
}

/// Reads a JSON config that may be a JavaScript object literal (PM2 evaluates `.json` files and
/// piped configs as JavaScript): strict JSON first (the clearest errors), then JSON5, then node.
pub fn json_like(text: &str, display: &str) -> Result<Value, String> {
    let strict = match serde_json::from_str::<Value>(text) {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    let relaxed = match json5::from_str::<Value>(text) {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    match eval_expression(text, display) {
        Some(Ok(v)) => Ok(v),
        Some(Err(node_error)) => Err(format!(
            "{display}: invalid JSON ({strict}); not JSON5 either ({relaxed}); {node_error}"
        )),
        None => Err(format!(
            "{display}: invalid JSON ({strict}); not JSON5 either ({relaxed}) (fix the syntax, or install Node.js to have it evaluated as JavaScript as PM2 does)"
        )),
    }
}

fn node() -> Option<std::path::PathBuf> {
    super::resolve::find_program(
        "node",
        Path::new("/"),
        std::env::var("PATH").ok().as_deref(),
    )
}

/// Runs a small node program that prints a value as JSON; `None` when node is not installed.
fn run_node(
    program: &str,
    arg: &str,
    stdin: Option<&str>,
    display: &str,
) -> Option<Result<Value, String>> {
    use std::io::Write;
    let node = node()?;
    let mut cmd = std::process::Command::new(node);
    cmd.arg("-e")
        .arg(program)
        .arg(arg)
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut run = || -> Result<std::process::Output, String> {
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("{display}: cannot run node to evaluate it: {e}"))?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes())
                .map_err(|e| format!("{display}: cannot hand it to node: {e}"))?;
        }
        child
            .wait_with_output()
            .map_err(|e| format!("{display}: node did not finish: {e}"))
    };
    Some(run().and_then(|out| {
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let first: Vec<&str> = err.lines().take(6).collect();
            return Err(format!(
                "{display}: node could not evaluate it:\n{}",
                first.join("\n")
            ));
        }
        serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("{display}: the exported value is not JSON-serialisable: {e}"))
    }))
}

/// Evaluates `( text )` as PM2 does for `.json` files and piped configs.
fn eval_expression(text: &str, display: &str) -> Option<Result<Value, String>> {
    const EVAL: &str = r#"
let src = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (c) => { src += c; });
process.stdin.on('end', () => {
  try {
    const v = require('vm').runInNewContext('(' + src + ')', { process: { env: process.env } }, { timeout: 1000 });
    process.stdout.write(JSON.stringify(v === undefined ? null : v));
  } catch (e) { process.stderr.write(String((e && e.message) || e)); process.exit(1); }
});
"#;
    run_node(EVAL, display, Some(text), display)
}

/// Evaluates a PM2 ecosystem module with node and reads the exported object as JSON.
fn eval_module(path: &Path, display: &str) -> Result<Value, String> {
    if !path.is_file() {
        return Err(format!("{display}: no such file (check the path)"));
    }
    const LOADER: &str = r#"
const p = require('path').resolve(process.argv[1]);
const load = async () => {
  let m;
  if (p.endsWith('.mjs')) m = await import(require('url').pathToFileURL(p).href);
  else {
    try { m = require(p); }
    catch (e) {
      if (e && (e.code === 'ERR_REQUIRE_ESM' || e.code === 'ERR_REQUIRE_ASYNC_MODULE')) m = await import(require('url').pathToFileURL(p).href);
      else throw e;
    }
  }
  if (m && m.default && !m.apps && !m.balancers) m = m.default;
  return m;
};
load().then((m) => process.stdout.write(JSON.stringify(m === undefined ? null : m)),
  (e) => { process.stderr.write(String((e && e.stack) || e)); process.exit(1); });
"#;
    run_node(LOADER, &path.to_string_lossy(), None, display).unwrap_or_else(|| {
        Err(format!("{display}: node is needed to read a .js ecosystem file and is not on PATH (install Node.js, or use cohort.toml / JSON)"))
    })
}

#[cfg(test)]
mod tests {
    use super::json_like;
    use serde_json::json;

    #[test]
    fn pm2_style_json_files_read() {
        let cases = [
            (
                r#"{"apps": [{"name": "a"}]}"#,
                json!({"apps": [{"name": "a"}]}),
            ),
            (
                "{\n  // a comment\n  apps: [{ name: 'a', script: \"app.js\", }],\n}",
                json!({"apps": [{"name": "a", "script": "app.js"}]}),
            ),
            (
                "/* block */ { name: 'Export report', instances: 2, }",
                json!({"name": "Export report", "instances": 2}),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(json_like(text, "c.json").unwrap(), want, "{text}");
        }
    }
}
