//! Humane durations (`"30s"`, `"10m"`, `"1h30m"`, `"500ms"`, bare integer = seconds)
//! and sizes (`"256MiB"`, bare integer = bytes), parsed and printed back.

use std::time::Duration;

/// Parses `"500ms"`, `"30s"`, `"10m"`, `"12h"`, `"1d"`, compounds such as `"1h30m"`,
/// or a bare integer meaning seconds. Whitespace around the whole value is ignored.
///
/// The error message is meant to follow a key name and never repeats the input.
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    const HINT: &str = "expected a duration such as \"500ms\", \"30s\", \"10m\", \"1h30m\" or a number of seconds";
    let text = input.trim();
    if text.is_empty() {
        return Err(format!("is empty; {HINT}"));
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| "is too large".to_string());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(HINT.to_string());
        }
        let (number, tail) = rest.split_at(digits);
        let unit_len = tail.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, tail) = tail.split_at(unit_len);
        let number: u64 = number.parse().map_err(|_| "is too large".to_string())?;
        let part = match unit {
            "ms" => Some(Duration::from_millis(number)),
            "s" => Some(Duration::from_secs(number)),
            "m" => number.checked_mul(60).map(Duration::from_secs),
            "h" => number.checked_mul(3600).map(Duration::from_secs),
            "d" => number.checked_mul(86_400).map(Duration::from_secs),
            "" => return Err(format!("needs a unit after every number; {HINT}")),
            _ => return Err(format!("has an unknown unit; {HINT}")),
        };
        total = part
            .and_then(|part| total.checked_add(part))
            .ok_or_else(|| "is too large".to_string())?;
        rest = tail;
    }
    Ok(total)
}

/// Prints a duration the way [`parse_duration`] reads it back (`"1h30m"`, `"500ms"`, `"0s"`).
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    let mut secs = duration.as_secs();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    let sub_millis = duration.subsec_millis();
    if sub_millis > 0 {
        out.push_str(&format!("{sub_millis}ms"));
    }
    out
}

/// Parses a byte size: a bare integer (bytes) or a number with a unit, `B`, `KB`/`MB`/`GB`
/// (powers of 1000) or `KiB`/`MiB`/`GiB` (powers of 1024), e.g. `"256MiB"`.
pub fn parse_size(input: &str) -> Result<u64, String> {
    const HINT: &str = "expected a size such as \"256MiB\", \"1GB\" or a number of bytes";
    let text = input.trim();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(HINT.to_string());
    }
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().map_err(|_| "is too large".to_string())?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1000,
        "MB" => 1000 * 1000,
        "GB" => 1000 * 1000 * 1000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err(format!("has an unknown unit; {HINT}")),
    };
    number.checked_mul(factor).ok_or_else(|| "is too large".to_string())
}

/// Prints a byte size in the largest binary unit that divides it exactly.
pub fn format_size(bytes: u64) -> String {
    for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes != 0 && bytes % size == 0 {
            return format!("{}{unit}", bytes / size);
        }
    }
    format!("{bytes}")
}
