//! Log rotation settings in PM2-logrotate's names: `log_rotate = { max_size = "10M", retain = 5,
//! compress = false, interval = "daily", date_format = "YYYY-MM-DD_HH-mm-ss" }` per app (every
//! config format), and the daemon-wide defaults of `cohort logrotate`. An app's settings override
//! the defaults field by field; [`Rotation`] is the resolved policy the daemon applies.
//!
//! Rotation is on by default (10M × 5 per log file) so a fresh install never fills a disk.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Rotated names use this (moment.js tokens, as PM2-logrotate's `dateFormat`).
pub const DEFAULT_DATE_FORMAT: &str = "YYYY-MM-DD_HH-mm-ss";

/// When a log file is rotated by time (at the first line written in a new period).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Interval {
    Never,
    Hourly,
    Daily,
    Weekly,
    Monthly,
}

impl Interval {
    pub fn as_str(self) -> &'static str {
        match self {
            Interval::Never => "never",
            Interval::Hourly => "hourly",
            Interval::Daily => "daily",
            Interval::Weekly => "weekly",
            Interval::Monthly => "monthly",
        }
    }

    /// `hourly`, `daily`, `weekly`, `monthly`, `never`/`none`/`off`; or PM2-logrotate's
    /// `rotateInterval` cron lines for the same periods (`0 0 * * *` is daily).
    pub fn parse(text: &str) -> Result<Interval, String> {
        let t = text.trim().to_ascii_lowercase();
        let words: Vec<&str> = t.split_whitespace().collect();
        let cron = |w: &[&str]| -> Option<Interval> {
            // 6 fields: a leading seconds field of 0.
            let w = match w {
                ["0", rest @ ..] if rest.len() == 5 => rest,
                w => w,
            };
            match w {
                ["0", "*", "*", "*", "*"] => Some(Interval::Hourly),
                ["0", "0", "*", "*", "*"] => Some(Interval::Daily),
                ["0", "0", "*", "*", "0" | "1" | "7" | "sun" | "mon"] => Some(Interval::Weekly),
                ["0", "0", "1", "*", "*"] => Some(Interval::Monthly),
                _ => None,
            }
        };
        match t.as_str() {
            "never" | "none" | "off" | "false" | "" => Ok(Interval::Never),
            "hourly" | "hour" | "1h" => Ok(Interval::Hourly),
            "daily" | "day" | "1d" => Ok(Interval::Daily),
            "weekly" | "week" | "1w" => Ok(Interval::Weekly),
            "monthly" | "month" => Ok(Interval::Monthly),
            _ => cron(&words).ok_or_else(|| {
                format!(
                    "unknown rotation interval {text:?} (use hourly, daily, weekly, monthly or never; cron lines other than those periods are not supported)"
                )
            }),
        }
    }
}

/// One app's (or the daemon's) rotation settings as written: each field may be left to the defaults.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct LogRotate {
    /// Rotate when a file would grow past this many bytes; 0: never by size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u64>,
    /// Rotated files kept per log file (the oldest are deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain: Option<u32>,
    /// gzip rotated files (in the background).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compress: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Interval>,
    /// moment.js format of the date in rotated names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_format: Option<String>,
}

/// The policy applied to one log file.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Rotation {
    pub max_size: u64,
    pub retain: u32,
    pub compress: bool,
    pub interval: Interval,
    pub date_format: String,
}

impl Default for Rotation {
    /// On out of the box: 10 MiB per file, 5 rotated files kept, no compression, no time rotation.
    fn default() -> Rotation {
        Rotation {
            max_size: 10 << 20,
            retain: 5,
            compress: false,
            interval: Interval::Never,
            date_format: DEFAULT_DATE_FORMAT.to_string(),
        }
    }
}

impl Rotation {
    /// True when neither size nor time ever rotates the file.
    pub fn is_off(&self) -> bool {
        self.max_size == 0 && self.interval == Interval::Never
    }
}

impl LogRotate {
    /// These settings over `defaults`, field by field.
    pub fn over(&self, defaults: &Rotation) -> Rotation {
        Rotation {
            max_size: self.max_size.unwrap_or(defaults.max_size),
            retain: self.retain.unwrap_or(defaults.retain),
            compress: self.compress.unwrap_or(defaults.compress),
            interval: self.interval.unwrap_or(defaults.interval),
            date_format: self
                .date_format
                .clone()
                .unwrap_or_else(|| defaults.date_format.clone()),
        }
    }

    /// Reads a `log_rotate` value of a config file: a table of PM2-logrotate's fields, `false`
    /// (no rotation for this app) or `true` (the defaults). `at` names it in errors.
    pub fn from_value(v: &Value, at: &str) -> Result<LogRotate, String> {
        let obj = match v {
            Value::Bool(true) => return Ok(LogRotate::default()),
            Value::Bool(false) => {
                return Ok(LogRotate {
                    max_size: Some(0),
                    interval: Some(Interval::Never),
                    ..LogRotate::default()
                })
            }
            Value::Object(o) => o,
            other => {
                return Err(format!(
                    "{at}: expected a table like {{ max_size = \"10M\", retain = 5 }}, true or false, got {other}"
                ))
            }
        };
        let mut r = LogRotate::default();
        for (key, val) in obj {
            let field = format!("{at}.{key}");
            match key.as_str() {
                "max_size" => {
                    let text = match val {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        other => return Err(format!("{field}: expected a size like \"10M\", got {other}")),
                    };
                    r.max_size = Some(parse_size(&text).map_err(|e| format!("{field}: {e}"))?);
                }
                "retain" => {
                    let n = match val {
                        Value::Number(n) => n.as_u64(),
                        Value::String(s) if s == "all" => Some(u64::from(u32::MAX)),
                        Value::String(s) => s.trim().parse().ok(),
                        _ => None,
                    };
                    r.retain = Some(
                        n.map(|n| n.min(u64::from(u32::MAX)) as u32).ok_or_else(|| {
                            format!("{field}: expected a number of rotated files to keep, got {val}")
                        })?,
                    );
                }
                "compress" => {
                    r.compress = Some(val.as_bool().ok_or_else(|| {
                        format!("{field}: expected true or false, got {val}")
                    })?);
                }
                "interval" | "rotate_interval" | "rotateInterval" => {
                    let text = val
                        .as_str()
                        .ok_or_else(|| format!("{field}: expected a string like \"daily\", got {val}"))?;
                    r.interval = Some(Interval::parse(text).map_err(|e| format!("{field}: {e}"))?);
                }
                "date_format" | "dateFormat" => {
                    let text = val
                        .as_str()
                        .ok_or_else(|| format!("{field}: expected a string, got {val}"))?;
                    if text.contains('/') || text.trim().is_empty() {
                        return Err(format!("{field}: {text:?} can't be part of a file name"));
                    }
                    r.date_format = Some(text.to_string());
                }
                other => {
                    return Err(format!(
                        "{at}.{other}: unknown field (known: max_size, retain, compress, interval, date_format)"
                    ))
                }
            }
        }
        Ok(r)
    }
}

/// Parses a size as PM2-logrotate writes it: `10M`, `512K`, `1G`, `10MB`, `1.5M`, or bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let lower = t.to_ascii_lowercase();
    let digits = lower.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = lower[digits.len()..]
        .trim_end_matches("ib")
        .trim_end_matches('b');
    let mult: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => {
            return Err(format!(
                "unknown size {t:?} (use bytes or K, M, G, as in \"10M\")"
            ))
        }
    };
    let n: f64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("unknown size {t:?} (use bytes or K, M, G, as in \"10M\")"))?;
    if !(n.is_finite() && n >= 0.0) {
        return Err(format!("size {t:?} must be a positive number"));
    }
    Ok((n * mult as f64) as u64)
}

/// A size the way users write it back: `10M`, `512K`, or bytes.
pub fn format_size(bytes: u64) -> String {
    for (unit, m) in [("G", 1u64 << 30), ("M", 1 << 20), ("K", 1 << 10)] {
        if bytes >= m && bytes % m == 0 {
            return format!("{}{unit}", bytes / m);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let cases: [(&str, Result<u64, ()>); 12] = [
            ("10M", Ok(10 << 20)),
            ("10MB", Ok(10 << 20)),
            ("10mib", Ok(10 << 20)),
            ("512K", Ok(512 << 10)),
            ("1G", Ok(1 << 30)),
            ("1.5M", Ok(3 << 19)),
            ("4096", Ok(4096)),
            ("0", Ok(0)),
            (" 2 m ", Ok(2 << 20)),
            ("10X", Err(())),
            ("M", Err(())),
            ("-1M", Err(())),
        ];
        for (text, want) in cases {
            assert_eq!(parse_size(text).map_err(|_| ()), want, "{text:?}");
        }
        for (bytes, text) in [
            (10 << 20, "10M"),
            (512 << 10, "512K"),
            (1000, "1000"),
            (0, "0"),
        ] {
            assert_eq!(format_size(bytes), text);
        }
    }

    #[test]
    fn intervals_and_pm2_cron_lines() {
        let cases = [
            ("daily", Some(Interval::Daily)),
            ("Hourly", Some(Interval::Hourly)),
            ("weekly", Some(Interval::Weekly)),
            ("monthly", Some(Interval::Monthly)),
            ("none", Some(Interval::Never)),
            ("0 0 * * *", Some(Interval::Daily)),
            ("0 0 0 * * *", Some(Interval::Daily)),
            ("0 * * * *", Some(Interval::Hourly)),
            ("0 0 * * 1", Some(Interval::Weekly)),
            ("0 0 1 * *", Some(Interval::Monthly)),
            ("*/5 * * * *", None),
            ("sometimes", None),
        ];
        for (text, want) in cases {
            assert_eq!(Interval::parse(text).ok(), want, "{text:?}");
        }
    }

    #[test]
    fn app_settings_over_the_defaults() {
        let defaults = Rotation::default();
        let v =
            serde_json::json!({"max_size": "1M", "compress": true, "rotate_interval": "0 0 * * *"});
        let r = LogRotate::from_value(&v, "apps[0].log_rotate").unwrap();
        let applied = r.over(&defaults);
        assert_eq!(applied.max_size, 1 << 20);
        assert_eq!(applied.retain, 5);
        assert!(applied.compress);
        assert_eq!(applied.interval, Interval::Daily);
        assert_eq!(applied.date_format, DEFAULT_DATE_FORMAT);
        let off = LogRotate::from_value(&Value::Bool(false), "x").unwrap();
        assert!(off.over(&defaults).is_off());
        let on = LogRotate::from_value(&Value::Bool(true), "x").unwrap();
        assert_eq!(on.over(&defaults), defaults);
        for bad in [
            serde_json::json!({"max_size": "big"}),
            serde_json::json!({"retain": "x"}),
            serde_json::json!({"compress": "yes"}),
            serde_json::json!({"interval": "sometimes"}),
            serde_json::json!({"date_format": "a/b"}),
            serde_json::json!({"maxSize": "1M"}),
            serde_json::json!(5),
        ] {
            let e = LogRotate::from_value(&bad, "apps[0].log_rotate").unwrap_err();
            assert!(e.starts_with("apps[0].log_rotate"), "{e}");
        }
    }
}
