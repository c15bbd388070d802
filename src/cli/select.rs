//! Targets → selectors: what a user types after stop, restart, logs, … (an app name, an id, `all`,
//! a config file or `-` for one on stdin, a script file, a namespace, a `/regex/`) turned into the daemon's `Selector`.
//! Names, ids and `all` go as they are; the other kinds are matched here against the process list
//! (fetched once, and only when a target needs it), in PM2's order: app name, script path, namespace.

use crate::api::client::Client;
use crate::api::{ProcessDetail, Selector};
use crate::config::ecosystem::{self, LoadOptions};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// One target, parsed before the daemon is asked anything (so a typo fails fast).
enum Target {
    Ready(Selector),
    Regex(regex_lite::Regex, String),
    /// An app name, a script file or a namespace: decided against the process list.
    Word(String),
}

fn parse(target: &str) -> Result<Target> {
    if target == "-" {
        return stdin_config();
    }
    if ecosystem::is_config_file(target) && Path::new(target).is_file() {
        let path = current_dir()?.join(target);
        let env = std::env::vars().collect();
        let loaded = ecosystem::load(
            &path,
            target,
            &LoadOptions {
                env_name: None,
                base_env: &env,
                only: None,
            },
        )
        .map_err(|e| anyhow!(e))?;
        return Ok(Target::Ready(Selector::Names(
            loaded.apps.into_iter().map(|a| a.name).collect(),
        )));
    }
    if ecosystem::is_config_file(target) {
        bail!("config file not found: {target} (check the path)");
    }
    if let Some(pattern) = regex_pattern(target) {
        let re = regex_lite::Regex::new(pattern)
            .map_err(|e| anyhow!("{target}: not a valid regular expression: {e}"))?;
        return Ok(Target::Regex(re, target.to_string()));
    }
    Ok(match Selector::parse(target) {
        Selector::Name(word) => Target::Word(word),
        other => Target::Ready(other),
    })
}

/// `-`: the apps of a config read from stdin (`cat ecosystem.json | cohort delete -`, as PM2).
fn stdin_config() -> Result<Target> {
    use std::io::Read;
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("reading the config from stdin")?;
    let env = std::env::vars().collect();
    let loaded = ecosystem::load_text(
        &text,
        "stdin",
        &current_dir()?,
        &LoadOptions {
            env_name: None,
            base_env: &env,
            only: None,
        },
    )
    .map_err(|e| anyhow!(e))?;
    Ok(Target::Ready(Selector::Names(
        loaded.apps.into_iter().map(|a| a.name).collect(),
    )))
}

/// `/pattern/` → `pattern` (PM2's regex selector).
fn regex_pattern(target: &str) -> Option<&str> {
    target
        .strip_prefix('/')
        .and_then(|t| t.strip_suffix('/'))
        .filter(|p| !p.is_empty())
}

fn current_dir() -> Result<PathBuf> {
    std::env::current_dir().context("reading the current directory")
}

/// Every process with its details (name, script, namespace), for matching targets.
pub async fn processes(client: &Client) -> Result<Vec<ProcessDetail>> {
    client.post("/describe", &Selector::All).await
}

/// Parses targets and resolves them, asking the daemon for its list only when one needs it.
pub struct Targets(Vec<Target>);

impl Targets {
    pub fn parse(targets: &[String]) -> Result<Targets> {
        targets
            .iter()
            .map(|t| parse(t))
            .collect::<Result<_>>()
            .map(Targets)
    }

    /// The selector for all the targets together.
    pub async fn resolve(self, client: &Client) -> Result<Selector> {
        let needs_list = self.0.iter().any(|t| !matches!(t, Target::Ready(_)));
        let list = if needs_list {
            processes(client).await?
        } else {
            Vec::new()
        };
        let mut all: Vec<Selector> = self
            .0
            .into_iter()
            .map(|t| resolve_one(t, &list))
            .collect::<Result<_>>()?;
        Ok(if all.len() == 1 {
            all.remove(0)
        } else {
            Selector::Many(all)
        })
    }
}

fn resolve_one(target: Target, list: &[ProcessDetail]) -> Result<Selector> {
    match target {
        Target::Ready(sel) => Ok(sel),
        Target::Regex(re, shown) => {
            let names: BTreeSet<String> = list
                .iter()
                .filter(|p| re.is_match(&p.info.name))
                .map(|p| p.info.name.clone())
                .collect();
            if names.is_empty() {
                bail!("no app name matches {shown} (see `cohort ls` for names)");
            }
            Ok(Selector::Names(names.into_iter().collect()))
        }
        Target::Word(word) => Ok(match_word(&word, list)),
    }
}

/// PM2's order for a word: an app of that name, else the apps running that script file, else the
/// apps of that namespace; else the name as given (the daemon says no such app exists).
fn match_word(word: &str, list: &[ProcessDetail]) -> Selector {
    if list.iter().any(|p| p.info.name == word) {
        return Selector::Name(word.to_string());
    }
    let names = |keep: &dyn Fn(&ProcessDetail) -> bool| -> Vec<String> {
        list.iter()
            .filter(|p| keep(p))
            .map(|p| p.info.name.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    if let Some(script) = script_path(word) {
        let by_script = names(&|p| Path::new(&p.script) == script);
        if !by_script.is_empty() {
            return Selector::Names(by_script);
        }
    }
    let by_namespace = names(&|p| p.namespace.as_deref() == Some(word));
    if !by_namespace.is_empty() {
        return Selector::Names(by_namespace);
    }
    Selector::Name(word.to_string())
}

/// The absolute path of `word` when it names an existing file.
pub fn script_path(word: &str) -> Option<PathBuf> {
    let p = std::env::current_dir().ok()?.join(word);
    p.is_file().then(|| std::fs::canonicalize(&p).unwrap_or(p))
}

#[cfg(test)]
mod tests {
    use super::regex_pattern;

    #[test]
    fn regex_targets_are_slash_delimited() {
        let cases = [
            ("/^api-/", Some("^api-")),
            ("/worker-\\d+/", Some("worker-\\d+")),
            ("//", None),
            ("/srv/app.js", None),
            ("api", None),
        ];
        for (target, want) in cases {
            assert_eq!(regex_pattern(target), want, "{target}");
        }
    }
}
