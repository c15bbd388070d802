//! Autoscaling settings: `instances = { min = 1, max = "max", ... }` (the table form of
//! `instances`) and `-i MIN-MAX` on the command line. Parsing and validation only (pure
//! functions); the daemon measures and decides (`daemon::supervisor::autoscale`). The knobs, their
//! defaults and the prior art they follow are in docs/autoscaling.md.

use super::Instances;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// How an autoscaled cluster app is sized. Percentages are of one core (a worker's event loop).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Autoscale {
    /// Fewest workers (started with this many); a count, "max" or -N as `instances`.
    pub min: Instances,
    /// Most workers.
    pub max: Instances,
    /// Average busyness (%) at or above which workers are added.
    pub scale_up_busy: f64,
    /// Average busyness (%) under which, for `scale_down_after`, one worker is removed.
    pub scale_down_busy: f64,
    /// How long the app stays under `scale_down_busy` before a worker is removed.
    pub scale_down_after_ms: u64,
    /// The measuring window: a decision every `interval`, on the averages over it.
    pub interval_ms: u64,
    /// After any change, how long before the next one (a backlog alert ignores it).
    pub cooldown_ms: u64,
    /// The most workers added at once: the step doubles (1, 2, 4, …) while load stays high.
    pub max_spawn_rate: u32,
    /// Waiting connections (accept queues, plus requests in flight beyond one per worker behind a
    /// cohort balancer) at which workers are added at once, cooldown or not.
    pub backlog: u32,
    /// No scale up when the app's memory (RSS of every worker) would go above this many bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory: Option<u64>,
}

impl Default for Autoscale {
    fn default() -> Autoscale {
        Autoscale {
            min: Instances::Count(1),
            max: Instances::Max,
            scale_up_busy: 60.0,
            scale_down_busy: 20.0,
            scale_down_after_ms: 30_000,
            interval_ms: 1_000,
            cooldown_ms: 3_000,
            max_spawn_rate: 8,
            backlog: 16,
            max_memory: None,
        }
    }
}

/// The fields of the table form, for "unknown field" errors.
const FIELDS: &[&str] = &[
    "min",
    "max",
    "scale_up_busy",
    "scale_down_busy",
    "scale_down_after",
    "interval",
    "cooldown",
    "max_spawn_rate",
    "backlog",
    "max_memory",
];

impl Autoscale {
    /// The bounds on a machine with `cpus` usable CPUs: (min, max), max never below min.
    pub fn bounds(&self, cpus: u32) -> (u32, u32) {
        let min = self.min.resolve(cpus);
        (min, self.max.resolve(cpus).max(min))
    }

    /// Reads the table form of `instances`; `at` names the field in errors (`file: apps[0].instances`).
    pub fn from_table(obj: &Map<String, Value>, at: &str) -> Result<Autoscale, String> {
        if let Some(k) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(format!(
                "{at}.{k}: unknown autoscaling field (known: {})",
                FIELDS.join(", ")
            ));
        }
        let mut a = Autoscale::default();
        let bound = |field: &str| -> Result<Option<Instances>, String> {
            match obj.get(field) {
                None | Some(Value::Null) => Ok(None),
                // In `instances`, 0 means "max" (PM2); as a bound it would read as zero workers.
                Some(Value::Number(n)) if n.as_i64() == Some(0) => Err(format!(
                    "{at}.{field}: 0 is out of range (1 to {}, or \"max\"; an app keeps at least one worker)",
                    super::validate::MAX_INSTANCES
                )),
                Some(Value::Number(n)) if n.as_i64().is_some() => Instances::parse(&n.to_string())
                    .map(Some)
                    .map_err(|e| format!("{at}.{field}: {e}")),
                Some(Value::String(s)) => Instances::parse(s)
                    .map(Some)
                    .map_err(|e| format!("{at}.{field}: {e}")),
                Some(_) => Err(format!("{at}.{field}: expected a number or \"max\"")),
            }
        };
        a.min = bound("min")?.unwrap_or(a.min);
        a.max = bound("max")?.unwrap_or(a.max);
        let percent = |field: &str, default: f64| -> Result<f64, String> {
            let v = match obj.get(field) {
                None | Some(Value::Null) => return Ok(default),
                Some(Value::Number(n)) => n.as_f64(),
                Some(Value::String(s)) => s.trim().trim_end_matches('%').trim().parse().ok(),
                Some(_) => None,
            };
            match v {
                Some(p) if p > 0.0 && p <= 100.0 => Ok(p),
                _ => Err(format!(
                    "{at}.{field}: expected a percentage of one core above 0 and at most 100 (e.g. 60 or \"60%\")"
                )),
            }
        };
        a.scale_up_busy = percent("scale_up_busy", a.scale_up_busy)?;
        a.scale_down_busy = percent("scale_down_busy", a.scale_down_busy)?;
        let millis = |field: &str, default: u64| -> Result<u64, String> {
            match obj.get(field) {
                None | Some(Value::Null) => Ok(default),
                Some(Value::Number(n)) if n.as_f64().is_some_and(|f| f >= 0.0) => {
                    Ok(n.as_f64().map_or(default, |f| f as u64))
                }
                Some(Value::String(s)) => super::duration::parse_ms(s).map_err(|_| {
                    format!("{at}.{field}: expected a duration (a number of ms, or \"500ms\", \"10s\", \"2m\")")
                }),
                Some(_) => Err(format!(
                    "{at}.{field}: expected a duration (a number of ms, or \"500ms\", \"10s\", \"2m\")"
                )),
            }
        };
        a.scale_down_after_ms = millis("scale_down_after", a.scale_down_after_ms)?;
        a.interval_ms = millis("interval", a.interval_ms)?;
        a.cooldown_ms = millis("cooldown", a.cooldown_ms)?;
        let count = |field: &str, default: u32| -> Result<u32, String> {
            match obj.get(field) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => v
                    .as_u64()
                    .filter(|n| (1..=u64::from(super::validate::MAX_INSTANCES)).contains(n))
                    .map(|n| n as u32)
                    .ok_or_else(|| format!("{at}.{field}: expected a whole number from 1")),
            }
        };
        a.max_spawn_rate = count("max_spawn_rate", a.max_spawn_rate)?;
        a.backlog = count("backlog", a.backlog)?;
        a.max_memory = match obj.get("max_memory") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n > 0) => n.as_u64(),
            Some(Value::String(s)) => Some(
                super::triggers::parse_memory(s).map_err(|e| format!("{at}.max_memory: {e}"))?,
            ),
            Some(_) => {
                return Err(format!(
                    "{at}.max_memory: expected a size like 512M or 2G, or a number of bytes"
                ))
            }
        };
        a.check(at)?;
        Ok(a)
    }

    /// `-i MIN-MAX` (`1-max`, `2-8`): autoscaling with the default knobs; None when `text` is not
    /// of that form (a plain count, `max` or `-N` keep their meaning).
    pub fn from_range(text: &str) -> Option<Result<Autoscale, String>> {
        let (lo, hi) = text.trim().split_once('-')?;
        if lo.is_empty() || !lo.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let parse = |t: &str| match t.trim() {
            "0" => Err(format!(
                "{text:?}: 0 is not a bound (an app keeps at least one worker)"
            )),
            t => Instances::parse(t).map_err(|e| format!("{text:?}: {e}")),
        };
        Some((|| {
            let a = Autoscale {
                min: parse(lo)?,
                max: parse(hi)?,
                ..Autoscale::default()
            };
            a.check("-i")?;
            Ok(a)
        })())
    }

    /// The rules between knobs; `at` names the `instances` field.
    pub fn check(&self, at: &str) -> Result<(), String> {
        let max_n = super::validate::MAX_INSTANCES;
        for (field, b) in [("min", self.min), ("max", self.max)] {
            match b {
                Instances::Count(n) if n == 0 || n > max_n => {
                    return Err(format!(
                        "{at}.{field}: {n} is out of range (1 to {max_n}, or \"max\")"
                    ))
                }
                Instances::MaxMinus(k) if k > max_n => {
                    return Err(format!("{at}.{field}: -{k} is out of range"))
                }
                _ => {}
            }
        }
        if let (Instances::Count(lo), Instances::Count(hi)) = (self.min, self.max) {
            if lo > hi {
                return Err(format!(
                    "{at}: min ({lo}) is above max ({hi}) (give min ≤ max)"
                ));
            }
        }
        if self.scale_down_busy >= self.scale_up_busy {
            return Err(format!(
                "{at}: scale_down_busy ({}%) must be below scale_up_busy ({}%) (the band between them is where the worker count holds)",
                self.scale_down_busy, self.scale_up_busy
            ));
        }
        if self.interval_ms < 100 {
            return Err(format!(
                "{at}.interval: {} ms is too short (at least 100ms)",
                self.interval_ms
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(v: Value) -> Result<Autoscale, String> {
        match v {
            Value::Object(o) => Autoscale::from_table(&o, "c.toml: apps[0].instances"),
            _ => unreachable!("tests give objects"),
        }
    }

    #[test]
    fn table_forms_and_defaults() {
        let a = table(serde_json::json!({"min": 1, "max": "max"})).unwrap();
        assert_eq!(a, Autoscale::default());
        let a = table(
            serde_json::json!({"min": 2, "max": 6, "scale_up_busy": "70%",
            "scale_down_busy": 10, "scale_down_after": "5s", "interval": 500, "cooldown": "1s",
            "max_spawn_rate": 4, "backlog": 3, "max_memory": "1G"}),
        )
        .unwrap();
        assert_eq!(
            (a.min, a.max, a.scale_up_busy, a.scale_down_busy),
            (Instances::Count(2), Instances::Count(6), 70.0, 10.0)
        );
        assert_eq!(
            (a.scale_down_after_ms, a.interval_ms, a.cooldown_ms),
            (5000, 500, 1000)
        );
        assert_eq!(
            (a.max_spawn_rate, a.backlog, a.max_memory),
            (4, 3, Some(1 << 30))
        );
        assert_eq!(a.bounds(2), (2, 6));
        let m = table(serde_json::json!({"min": 4, "max": "max"})).unwrap();
        assert_eq!(m.bounds(2), (4, 4), "max never below min");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                serde_json::json!({"min": 3, "max": 2}),
                "min (3) is above max (2)",
            ),
            (serde_json::json!({"min": 0}), ".min: 0 is out of range"),
            (
                serde_json::json!({"max": "lots"}),
                ".max: expected a number",
            ),
            (
                serde_json::json!({"scale_up_busy": 150}),
                ".scale_up_busy: expected a percentage",
            ),
            (
                serde_json::json!({"scale_up_busy": 20, "scale_down_busy": 30}),
                "must be below scale_up_busy",
            ),
            (
                serde_json::json!({"interval": "10ms"}),
                ".interval: 10 ms is too short",
            ),
            (
                serde_json::json!({"cooldown": "soon"}),
                ".cooldown: expected a duration",
            ),
            (serde_json::json!({"max_memory": "lots"}), ".max_memory: "),
            (
                serde_json::json!({"max_spawn_rate": 0}),
                ".max_spawn_rate: expected a whole number",
            ),
            (
                serde_json::json!({"mni": 1}),
                ".mni: unknown autoscaling field",
            ),
        ];
        for (v, want) in cases {
            let e = table(v.clone()).unwrap_err();
            assert!(e.contains(want), "{v}: {e}");
            assert!(e.starts_with("c.toml: apps[0].instances"), "{e}");
        }
    }

    #[test]
    fn command_line_ranges() {
        let a = Autoscale::from_range("1-max").unwrap().unwrap();
        assert_eq!((a.min, a.max), (Instances::Count(1), Instances::Max));
        let a = Autoscale::from_range("2-4").unwrap().unwrap();
        assert_eq!((a.min, a.max), (Instances::Count(2), Instances::Count(4)));
        assert!(Autoscale::from_range("4-2").unwrap().is_err());
        assert!(Autoscale::from_range("0-2").unwrap().is_err());
        for plain in ["4", "max", "-1", "0"] {
            assert!(Autoscale::from_range(plain).is_none(), "{plain}");
        }
    }
}
