//! The web listener's settings as the CLI sends them and the daemon keeps them (`cohort web`, a
//! `[web]` table): where it listens, the sha256 digests of its tokens (never the tokens), and
//! whether `/metrics` is open without one. The CLI hashes tokens before they leave it.

use crate::config::web::WebConfig;
use serde::{Deserialize, Serialize};

/// The TCP listener's settings; `listen: None` means off (the default).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct WebSettings {
    /// host:port, e.g. 127.0.0.1:9615.
    pub listen: Option<String>,
    /// Hex sha256 of the full-access token.
    #[serde(default)]
    pub token_sha256: Option<String>,
    /// Hex sha256 of a token that may only read (lists, metrics, logs; no actions).
    #[serde(default)]
    pub read_only_token_sha256: Option<String>,
    /// `/metrics` answers without a token (for Prometheus scrape configs).
    #[serde(default)]
    pub public_metrics: bool,
}

/// What `GET /web` answers: the settings (digests only) and the address actually bound.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct WebState {
    pub settings: WebSettings,
    /// The bound address (differs from `listen` for port 0), None when off.
    pub bound: Option<String>,
}

impl WebSettings {
    /// The settings of a `[web]` table or of `cohort web`'s flags: tokens (read from their files)
    /// become digests here, so they never leave the CLI.
    pub fn from_config(c: &WebConfig) -> Result<WebSettings, String> {
        let token = |plain: &Option<String>, file: &Option<std::path::PathBuf>, what: &str| {
            let t = match (plain, file) {
                (Some(t), _) if t.is_empty() => return Err(format!("the {what} is empty")),
                (Some(t), _) => Some(t.clone()),
                (None, Some(f)) => {
                    let text = std::fs::read_to_string(f)
                        .map_err(|e| format!("cannot read the {what} file {}: {e}", f.display()))?;
                    Some(token_from_file_text(&text).map_err(|e| format!("{}: {e}", f.display()))?)
                }
                (None, None) => None,
            };
            Ok(t.map(|t| token_digest(&t)))
        };
        Ok(WebSettings {
            listen: c.listen.clone(),
            token_sha256: token(&c.token, &c.token_file, "token")?,
            read_only_token_sha256: token(
                &c.read_only_token,
                &c.read_only_token_file,
                "read-only token",
            )?,
            public_metrics: c.public_metrics,
        })
    }
}

/// Lowercase hex sha256 of a token, as stored and compared.
pub fn token_digest(token: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A token read from a file: surrounding whitespace (the final newline) is not part of it.
pub fn token_from_file_text(text: &str) -> Result<String, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("the token file is empty".into());
    }
    Ok(t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_sha256_hex() {
        assert_eq!(
            token_digest(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            token_digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn token_files_are_trimmed_and_must_not_be_empty() {
        assert_eq!(token_from_file_text("s3cret\n").as_deref(), Ok("s3cret"));
        assert_eq!(token_from_file_text("  s3cret  ").as_deref(), Ok("s3cret"));
        assert!(token_from_file_text("\n \n").is_err());
    }
}
