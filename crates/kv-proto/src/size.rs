//! Byte sizes as people write them on a command line (`8MiB`), parsed the
//! same way by every binary: the server's `--max-frame` and the client's
//! must mean the same number.

/// Parses a byte size: a number with an optional binary suffix, `K`, `KB`
/// or `KiB` (1024), `M`, `MB`, `MiB` (1024²), `G`, `GB`, `GiB` (1024³), or
/// `B`; case-insensitive, a space before the suffix allowed. All suffixes
/// are powers of 1024, so `8MB` and `8MiB` are the same size.
///
/// ```
/// assert_eq!(kv_proto::parse_size("8MiB"), Ok(8 << 20));
/// assert_eq!(kv_proto::parse_size("4096"), Ok(4096));
/// assert!(kv_proto::parse_size("8XB").is_err());
/// ```
///
/// # Errors
/// A message fit for a usage error when `s` is not such a size or the size
/// does not fit in a `u64`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a size (examples: 4096, 64KiB, 64MiB)"))?;
    let shift = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        other => {
            return Err(format!(
                "unknown size suffix `{other}` (use KiB, MiB or GiB)"
            ));
        }
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size `{s}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("12b"), Ok(12));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("64mib"), Ok(64 << 20));
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_size("2 GB"), Ok(2 << 30));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
    }

    #[test]
    fn non_sizes_are_refused() {
        assert!(parse_size("").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("1TiB").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("1.5MiB").is_err());
        assert!(parse_size("99999999999999G").is_err());
        assert!(parse_size("99999999999999999999").is_err());
    }
}
