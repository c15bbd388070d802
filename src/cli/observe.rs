//! The observability commands: `cohort metrics` (the daemon's /metrics text) and `cohort web`
//! (turn the TCP listener with the dashboard on or off, or print its state). Tokens are hashed
//! here, before they reach the daemon.

use super::WebArgs;
use crate::api::client::Client;
use crate::api::web::{WebSettings, WebState};
use crate::config::web::WebConfig;
use crate::home::Home;
use anyhow::{anyhow, Context, Result};
use std::io::Write;

/// `cohort metrics`: prints the Prometheus text exposition.
pub async fn metrics(home: Home) -> Result<()> {
    let client = Client::connect_or_start(home).await?;
    let text = client.get_text("/metrics").await?;
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .context("writing to stdout")?;
    Ok(())
}

/// `cohort web …`.
pub async fn web(a: WebArgs, home: Home) -> Result<()> {
    let client = Client::connect_or_start(home).await?;
    let state: WebState = if a.off {
        client.post("/web", &WebSettings::default()).await?
    } else if a.listen.is_some() {
        let here = std::env::current_dir().context("reading the current directory")?;
        let config = WebConfig {
            listen: a.listen.clone(),
            token: a.token.clone(),
            token_file: a.token_file.as_ref().map(|f| here.join(f)),
            read_only_token: a.read_only_token.clone(),
            read_only_token_file: a.read_only_token_file.as_ref().map(|f| here.join(f)),
            public_metrics: a.public_metrics,
        };
        let settings = WebSettings::from_config(&config).map_err(|e| anyhow!(e))?;
        client.post("/web", &settings).await?
    } else {
        client.get("/web").await?
    };
    if a.json {
        println!("{}", serde_json::to_string(&state)?);
    } else {
        print!("{}", describe(&state));
    }
    Ok(())
}

/// Applies a config file's `[web]` table (after `start` started its apps).
pub async fn apply_config(client: &Client, config: &WebConfig) -> Result<()> {
    let settings = WebSettings::from_config(config).map_err(|e| anyhow!("[web]: {e}"))?;
    let state: WebState = client
        .post("/web", &settings)
        .await
        .map_err(|e| anyhow!("[web]: {e:#}"))?;
    eprint!("cohort: {}", describe(&state));
    Ok(())
}

/// The state in words: where it listens and what guards it.
fn describe(st: &WebState) -> String {
    let s = &st.settings;
    let Some(bound) = &st.bound else {
        return "web: off (turn it on with `cohort web --listen 127.0.0.1:9615 --token-file FILE`)\n"
            .into();
    };
    let yes = |b: bool| if b { "set" } else { "none" };
    format!(
        "web: http://{bound}/ (dashboard, API, /metrics)\n  token: {}\n  read-only token: {}\n  /metrics without a token: {}\n",
        yes(s.token_sha256.is_some()),
        yes(s.read_only_token_sha256.is_some()),
        if s.public_metrics { "yes" } else { "no" },
    )
}
