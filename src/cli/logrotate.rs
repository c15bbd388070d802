//! `cohort reloadLogs` (reopen every log file) and `cohort logrotate` (show or set the daemon-wide
//! rotation defaults, kept by the daemon in COHORT_HOME/logrotate.json).

use super::LogrotateArgs;
use crate::api::client::Client;
use crate::config::log_rotate::{format_size, parse_size, Interval, LogRotate, Rotation};
use crate::home::Home;
use anyhow::{anyhow, Result};

pub async fn reload_logs(home: Home) -> Result<()> {
    let client = Client::connect_or_start(home).await?;
    let reply: serde_json::Value = client.post("/logs/reopen", &()).await?;
    let n = reply.get("reopened").and_then(|n| n.as_u64()).unwrap_or(0);
    eprintln!("cohort: {n} log files reopened");
    Ok(())
}

pub async fn logrotate(a: LogrotateArgs, home: Home) -> Result<()> {
    let change = change_of(&a)?;
    let client = Client::connect_or_start(home).await?;
    let now: Rotation = match change {
        Some(change) => client.post("/logs/rotation", &change).await?,
        None => client.get("/logs/rotation").await?,
    };
    print!("{}", render(&now));
    Ok(())
}

/// The flags as a change of the defaults; `None` when no flag was given (print only).
fn change_of(a: &LogrotateArgs) -> Result<Option<LogRotate>> {
    let max_size = a
        .max_size
        .as_deref()
        .map(parse_size)
        .transpose()
        .map_err(|e| anyhow!("--max-size: {e}"))?;
    let interval = a
        .interval
        .as_deref()
        .map(Interval::parse)
        .transpose()
        .map_err(|e| anyhow!("--interval: {e}"))?;
    if let Some(f) = &a.date_format {
        if f.contains('/') || f.trim().is_empty() {
            return Err(anyhow!(
                "--date-format: {f:?} can't be part of a file name (use tokens like YYYY-MM-DD_HH-mm-ss)"
            ));
        }
    }
    let change = LogRotate {
        max_size,
        retain: a.retain,
        compress: a.compress,
        interval,
        date_format: a.date_format.clone(),
    };
    Ok((change != LogRotate::default()).then_some(change))
}

fn render(r: &Rotation) -> String {
    format!(
        "max_size     {}\nretain       {}\ncompress     {}\ninterval     {}\ndate_format  {}\n",
        if r.max_size == 0 {
            "0 (no size limit)".to_string()
        } else {
            format_size(r.max_size)
        },
        r.retain,
        r.compress,
        r.interval.as_str(),
        r.date_format
    )
}
