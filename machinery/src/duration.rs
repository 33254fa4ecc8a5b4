//! Go `time.Duration` strings (`8760h`, `1h2m3.5s`, `300ms`), as the config and talosctl flags
//! carry them.

use std::time::Duration;

const UNITS: [(&str, f64); 7] = [
    ("ns", 1e-9),
    ("us", 1e-6),
    ("µs", 1e-6),
    ("ms", 1e-3),
    ("s", 1.0),
    ("m", 60.0),
    ("h", 3600.0),
];

/// Parses a non-negative Go duration; `None` when `text` is not one.
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    if rest.is_empty() {
        return None;
    }
    let mut seconds = 0f64;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..digits].parse().ok().filter(|_| digits > 0)?;
        rest = &rest[digits..];
        let (unit, scale) = UNITS
            .into_iter()
            .filter(|(u, _)| rest.starts_with(u))
            .max_by_key(|(u, _)| u.len())?;
        rest = &rest[unit.len()..];
        seconds += value * scale;
    }
    Duration::try_from_secs_f64(seconds).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let cases = [
            ("0", 0.0),
            ("300ms", 0.3),
            ("2m30s", 150.0),
            ("1h2m3.5s", 3723.5),
            ("8760h", 31_536_000.0),
            ("87600h0m0s", 315_360_000.0),
            ("1.5h", 5400.0),
            ("10µs", 0.000_01),
        ];
        for (text, seconds) in cases {
            let parsed = parse_go_duration(text).unwrap_or_else(|| panic!("{text}"));
            assert!((parsed.as_secs_f64() - seconds).abs() < 1e-9, "{text}");
        }
        for bad in ["", "10", "h", "1d", "5 m", "-1s", "1.2.3s", "ms"] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
    }
}
