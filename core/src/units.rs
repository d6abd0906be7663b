//! Sizes as users write them on the command line and in specs.

/// Parses `64MiB`, `1GB`, `1048576` (bytes; SI and binary units).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size like 64MiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?}; use B, KiB, MiB, GiB")),
    };
    n.checked_mul(mult).filter(|&b| b > 0).ok_or_else(|| format!("{s:?} is out of range"))
}

/// `1e9`, `1000000000` or `1_000_000_000`: a positive count.
pub fn parse_count(s: &str) -> Result<f64, String> {
    let n: f64 = s.replace('_', "").parse().map_err(|_| format!("{s:?} is not a number like 1e9"))?;
    if n.is_finite() && n > 0.0 { Ok(n) } else { Err(format!("{s:?} must be positive")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_counts() {
        assert_eq!(parse_bytes("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("1GB").unwrap(), 1_000_000_000);
        assert_eq!(parse_bytes("1048576").unwrap(), 1 << 20);
        assert!(parse_bytes("0").is_err() && parse_bytes("5 parsecs").is_err() && parse_bytes("MiB").is_err());
        assert_eq!(parse_count("1e9").unwrap(), 1e9);
        assert_eq!(parse_count("1_000").unwrap(), 1000.0);
        assert!(parse_count("-1").is_err() && parse_count("x").is_err());
    }
}
