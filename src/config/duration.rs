//! The one parser of durations written by users: config files (`kill_timeout: "5s"`), command-line
//! flags (`--restart-delay 2s`, `cohort balance --upstream-timeout 30s`) and balancer specs.
//!
//! Accepted: a non-negative number (a fraction is fine: `1.5s`; an exponent or a `+` too) optionally
//! followed by one unit, spaces allowed around either:
//! `ms` (milliseconds; also what a bare number means), `s` (seconds), `m` or `min` (minutes),
//! `h` (hours). This is the union of what the app config and the balancer accepted before they
//! shared this parser.

use std::time::Duration;

/// Parses a duration: `"500"`, `"500ms"`, `"1.5s"`, `"2m"`, `"2min"`, `"1h"`.
pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    // The unit is the trailing run of letters (an exponent's digits end it: `1e3s` is 1e3 s).
    let split = t
        .char_indices()
        .rev()
        .take_while(|(_, c)| c.is_ascii_alphabetic())
        .last()
        .map_or(t.len(), |(i, _)| i);
    let (num, unit) = t.split_at(split);
    let ms_per_unit = match unit {
        "" | "ms" => 1.0,
        "s" => 1_000.0,
        "m" | "min" => 60_000.0,
        "h" => 3_600_000.0,
        _ => return Err(not_a_duration(text)),
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 && !num.trim().starts_with('-') => {
            Ok(Duration::from_micros((v * ms_per_unit * 1000.0) as u64))
        }
        _ => Err(not_a_duration(text)),
    }
}

/// The same in whole milliseconds (fractions of a millisecond are dropped).
pub fn parse_ms(text: &str) -> Result<u64, String> {
    parse(text).map(|d| d.as_millis().min(u64::MAX as u128) as u64)
}

fn not_a_duration(text: &str) -> String {
    format!("expected a duration like \"500ms\", \"5s\", \"2m\" or \"1h\"; got {text:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_and_refused() {
        let ms = Duration::from_millis;
        let table: &[(&str, Option<Duration>)] = &[
            ("1500", Some(ms(1500))),
            ("40", Some(ms(40))),
            ("250ms", Some(ms(250))),
            ("10s", Some(ms(10_000))),
            ("1.5s", Some(ms(1500))),
            (" 10 s ", Some(ms(10_000))),
            ("2m", Some(ms(120_000))),
            ("2min", Some(ms(120_000))),
            ("1h", Some(ms(3_600_000))),
            ("0", Some(ms(0))),
            ("1e3", Some(ms(1000))),
            ("1e3s", Some(ms(1_000_000))),
            ("0.5ms", Some(Duration::from_micros(500))),
            ("soon", None),
            ("", None),
            ("s", None),
            ("-1s", None),
            ("+1s", Some(ms(1000))),
            ("10 sec", None),
            ("5d", None),
            ("inf", None),
            ("NaN", None),
            ("1.2.3s", None),
        ];
        for (text, want) in table {
            assert_eq!(parse(text).ok(), *want, "{text:?}");
        }
    }

    #[test]
    fn whole_milliseconds() {
        assert_eq!(parse_ms("1500").unwrap(), 1500);
        assert_eq!(parse_ms("10s").unwrap(), 10_000);
        assert_eq!(parse_ms("1.9").unwrap(), 1);
        assert!(parse_ms("soon").is_err());
    }
}
