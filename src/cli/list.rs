//! The listing commands: `ls` (table or `--json`), `jlist` (cohort's fields plus PM2's, or PM2's
//! only with `--pm2`), `prettylist` (PM2's layout as util.inspect prints it) and `pid`.

use super::output::{out, outln};
use super::pm2::{self, Pm2Source};
use super::{render, select, JlistArgs, LsArgs, OptionalTarget, SortArg};
use crate::api::client::Client;
use crate::api::{ProcessDetail, ProcessInfo, Selector};
use crate::home::Home;
use anyhow::{anyhow, Result};
use std::collections::BTreeMap;

pub async fn ls(a: LsArgs, home: Home) -> Result<()> {
    let client = Client::connect_or_start(home).await?;
    let mut procs: Vec<ProcessInfo> = client.get("/processes").await?;
    pm2::sort_by(&mut procs, |p| p, a.sort.sort.as_deref()).map_err(|e| anyhow!(e))?;
    if a.json {
        outln!("{}", serde_json::to_string(&procs)?)
    } else {
        out(&render::table(&procs))
    }
}

/// Every process with what PM2's shapes need: details, the app's env values, the instance count.
async fn sources(client: &Client, sort: &SortArg) -> Result<(Vec<ProcessDetail>, Vec<Envs>)> {
    let mut details = select::processes(client).await?;
    pm2::sort_by(&mut details, |d| &d.info, sort.sort.as_deref()).map_err(|e| anyhow!(e))?;
    let mut envs = Vec::with_capacity(details.len());
    for d in &details {
        // The app's declared variables, with the values this process runs with.
        let all: BTreeMap<String, String> = if d.env_keys.is_empty() {
            BTreeMap::new()
        } else {
            client.post("/env", &d.info.id).await.unwrap_or_default()
        };
        let declared = all
            .into_iter()
            .filter(|(k, _)| d.env_keys.contains(k))
            .collect();
        let instances = details
            .iter()
            .filter(|x| x.info.name == d.info.name)
            .count();
        envs.push(Envs {
            declared,
            instances,
        });
    }
    Ok((details, envs))
}

struct Envs {
    declared: BTreeMap<String, String>,
    instances: usize,
}

fn objects(
    details: &[ProcessDetail],
    envs: Vec<Envs>,
    shape: fn(&Pm2Source) -> serde_json::Value,
) -> serde_json::Value {
    serde_json::Value::Array(
        details
            .iter()
            .zip(envs)
            .map(|(detail, e)| {
                shape(&Pm2Source {
                    detail,
                    env: e.declared,
                    instances: e.instances,
                })
            })
            .collect(),
    )
}

pub async fn jlist(a: JlistArgs, home: Home) -> Result<()> {
    let client = Client::connect_or_start(home).await?;
    let (details, envs) = sources(&client, &a.sort).await?;
    let shape = if a.pm2 {
        pm2::pm2_object
    } else {
        pm2::combined_object
    };
    outln!(
        "{}",
        serde_json::to_string(&objects(&details, envs, shape))?
    )
}

pub async fn prettylist(a: SortArg, home: Home) -> Result<()> {
    let client = Client::connect_or_start(home).await?;
    let (details, envs) = sources(&client, &a).await?;
    outln!(
        "{}",
        pm2::inspect(&objects(&details, envs, pm2::pm2_object))
    )
}

/// `pid [target]`: the pids of the running processes, one per line (stopped ones have none, and
/// are left out rather than printed as PM2's 0, which `kill $(…)` would read as "my own group").
pub async fn pid(t: OptionalTarget, home: Home) -> Result<()> {
    if let Some(target) = &t.target {
        select::Targets::parse(std::slice::from_ref(target))?;
    }
    let client = Client::connect_or_start(home).await?;
    let sel = match &t.target {
        Some(target) => {
            select::Targets::parse(std::slice::from_ref(target))?
                .resolve(&client)
                .await?
        }
        None => Selector::All,
    };
    let details: Vec<ProcessDetail> = client.post("/describe", &sel).await?;
    let mut text = String::new();
    for pid in details.iter().filter_map(|d| d.info.pid) {
        text.push_str(&format!("{pid}\n"));
    }
    out(&text)
}
