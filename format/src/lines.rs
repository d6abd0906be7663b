//! Where a line of a text input ends, once for the planner and the worker.
//!
//! Lines end at `\n`; one `\r` just before it belongs to the line end
//! (CRLF). A `\r` anywhere else means CR-only (classic Mac) or mixed line
//! endings: rows would run together, so the line is refused with
//! `STRAY_CR`. Shards are cut at `\n` only, so a quoted field never spans
//! lines.

/// Why a line with a stray carriage return is refused.
pub const STRAY_CR: &str =
    "a carriage return inside a line: the file has CR-only or mixed line endings; convert it to LF or CRLF";

/// The line's content: `line` without its `\n` and the `\r` of a CRLF.
#[inline]
pub fn content(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Whether `line` (with or without its line end) holds a carriage return
/// that does not end it.
#[inline]
pub fn stray_cr(line: &[u8]) -> bool {
    memchr::memchr(b'\r', content(line)).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_crlf_end_is_a_line_end() {
        assert!(!stray_cr(b"a,1\n"));
        assert!(!stray_cr(b"a,1\r\n"));
        assert!(!stray_cr(b"a,1\r"));
        assert!(!stray_cr(b"a,1"));
        assert!(stray_cr(b"a,1\rb,2\n"));
        assert!(stray_cr(b"a,1\r\r\n"));
        assert_eq!(content(b"a,1\r\n"), b"a,1");
    }
}
