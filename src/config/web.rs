//! The `[web]` table of a config file (`web = { listen = "127.0.0.1:9615", token_file = … }`):
//! the web listener's settings as the user wrote them. Token files are resolved against the
//! config file's folder; the CLI reads and hashes the tokens before they reach the daemon.

use serde_json::Value;
use std::path::{Path, PathBuf};

/// The `[web]` table, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebConfig {
    pub listen: Option<String>,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub read_only_token: Option<String>,
    pub read_only_token_file: Option<PathBuf>,
    pub public_metrics: bool,
}

const FIELDS: [&str; 6] = [
    "listen",
    "token",
    "token_file",
    "read_only_token",
    "read_only_token_file",
    "public_metrics",
];

/// Reads the `web` value of a config file; `at` names it in errors, `dir` is the file's folder.
pub fn from_value(v: &Value, at: &str, dir: &Path) -> Result<WebConfig, String> {
    let Value::Object(o) = v else {
        return Err(format!(
            "{at}: expected a table like {{ listen = \"127.0.0.1:9615\", token_file = \"web.token\" }}"
        ));
    };
    if let Some(k) = o.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(format!(
            "{at}.{k}: unknown field (known: {})",
            FIELDS.join(", ")
        ));
    }
    let string = |k: &str| -> Result<Option<String>, String> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("{at}.{k}: expected a string")),
        }
    };
    let path = |k: &str| -> Result<Option<PathBuf>, String> { Ok(string(k)?.map(|p| dir.join(p))) };
    let public_metrics = match o.get("public_metrics") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(format!("{at}.public_metrics: expected true or false")),
    };
    let c = WebConfig {
        listen: string("listen")?,
        token: string("token")?,
        token_file: path("token_file")?,
        read_only_token: string("read_only_token")?,
        read_only_token_file: path("read_only_token_file")?,
        public_metrics,
    };
    if c.token.is_some() && c.token_file.is_some() {
        return Err(format!("{at}: give token or token_file, not both"));
    }
    if c.read_only_token.is_some() && c.read_only_token_file.is_some() {
        return Err(format!(
            "{at}: give read_only_token or read_only_token_file, not both"
        ));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables() {
        let dir = Path::new("/etc/app");
        let ok = from_value(
            &json!({"listen": "127.0.0.1:9615", "token_file": "web.token", "public_metrics": true}),
            "f: web",
            dir,
        );
        assert_eq!(
            ok,
            Ok(WebConfig {
                listen: Some("127.0.0.1:9615".into()),
                token_file: Some(PathBuf::from("/etc/app/web.token")),
                public_metrics: true,
                ..WebConfig::default()
            })
        );
        let bad = [
            (json!("127.0.0.1:1"), "expected a table"),
            (json!({"listn": "x"}), "web.listn: unknown field"),
            (json!({"listen": 9615}), "web.listen: expected a string"),
            (json!({"public_metrics": "yes"}), "expected true or false"),
            (json!({"token": "a", "token_file": "b"}), "not both"),
        ];
        for (v, want) in bad {
            let e = from_value(&v, "f: web", dir).unwrap_err();
            assert!(e.contains(want), "{v}: {e}");
        }
    }
}
