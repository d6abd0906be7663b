//! What a number is in a text input, once for the planner and the worker.
//!
//! A field is trimmed of ASCII spaces and tabs (and the other ASCII
//! whitespace) only. An empty float field is a missing value (NaN); an
//! empty integer field is an error. Floats follow Rust's grammar
//! (`1`, `-2.5`, `1e-3`, `.5`, `inf`, `NaN`), parsed straight from the
//! bytes; integers are decimal `i64` with an optional sign. Anything else,
//! including a number padded with a no-break space (U+00A0) or another
//! non-ASCII space, is refused, and the error shows the field as it is,
//! invisible characters written out.

use hourglass_core::model::DType;

/// A field that is not a number of the kind the model input takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberError {
    message: String,
}

impl std::fmt::Display for NumberError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for NumberError {}

impl From<NumberError> for String {
    fn from(e: NumberError) -> String {
        e.message
    }
}

/// A float field. Empty (after trimming ASCII whitespace) is NaN.
#[inline]
pub fn parse_f32(field: &[u8]) -> Result<f32, NumberError> {
    let s = field.trim_ascii();
    if s.is_empty() {
        return Ok(f32::NAN);
    }
    fast_float2::parse::<f32, _>(s).map_err(|_| refused(field, "a number"))
}

/// An integer field (`int64` inputs).
#[inline]
pub fn parse_i64(field: &[u8]) -> Result<i64, NumberError> {
    let s = field.trim_ascii();
    match std::str::from_utf8(s) {
        Ok(text) if !text.is_empty() => text.parse::<i64>().map_err(|_| refused(field, "an integer")),
        _ => Err(refused(field, "an integer")),
    }
}

/// Whether `field` reads as a value of `dtype` (int64, or any float type,
/// which the worker reads as f32): the planner's check of sampled rows.
pub fn check(field: &[u8], dtype: DType) -> Result<(), NumberError> {
    match dtype {
        DType::Int64 => parse_i64(field).map(drop),
        _ => parse_f32(field).map(drop),
    }
}

/// `cannot parse "1\u{a0}" as a number (it holds U+00A0, a no-break space; …)`.
fn refused(field: &[u8], what: &str) -> NumberError {
    let Ok(text) = std::str::from_utf8(field) else {
        return NumberError { message: "field is not valid UTF-8".to_string() };
    };
    let mut message = format!("cannot parse {} as {what}", shown(text));
    if let Some(c) = text.chars().find(|c| !c.is_ascii() && (c.is_whitespace() || invisible(*c))) {
        message.push_str(&format!(
            " (it holds U+{:04X}{}; only ASCII spaces and tabs around a number are ignored)",
            c as u32,
            match c {
                '\u{a0}' => ", a no-break space",
                '\u{feff}' => ", a byte-order mark",
                '\u{200b}' => ", a zero-width space",
                _ => "",
            }
        ));
    }
    NumberError { message }
}

fn invisible(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{2060}' | '\u{feff}' | '\u{00ad}')
}

/// The field quoted, at most 40 characters, every non-printing or
/// non-ASCII space written as an escape (`"1\u{a0}"`), never trimmed.
fn shown(text: &str) -> String {
    let mut out = String::from("\"");
    for (i, c) in text.chars().enumerate() {
        if i == 40 {
            out.push('…');
            break;
        }
        if !c.is_ascii() && (c.is_whitespace() || invisible(c)) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else if c == '"' || c == '\\' || c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_padding_is_ignored_and_empty_floats_are_missing() {
        assert_eq!(parse_f32(b"  1.5\t"), Ok(1.5));
        assert!(parse_f32(b"   ").unwrap().is_nan());
        assert_eq!(parse_i64(b" -7 "), Ok(-7));
        assert_eq!(parse_i64(b"+7"), Ok(7));
        assert!(parse_i64(b"").is_err());
        assert!(parse_i64(b"1.0").is_err());
    }

    #[test]
    fn a_no_break_space_is_refused_and_shown() {
        let e = parse_f32("1\u{a0}".as_bytes()).unwrap_err().to_string();
        assert!(e.starts_with(r#"cannot parse "1\u{a0}" as a number"#), "{e}");
        assert!(e.contains("U+00A0, a no-break space"), "{e}");
        let e = parse_i64("\u{a0}3".as_bytes()).unwrap_err().to_string();
        assert!(e.starts_with(r#"cannot parse "\u{a0}3" as an integer"#), "{e}");
        let e = check("\u{feff}2".as_bytes(), DType::Float32).unwrap_err().to_string();
        assert!(e.contains("U+FEFF"), "{e}");
    }

    #[test]
    fn refusals_quote_the_field_untrimmed_and_cut_long_ones() {
        assert_eq!(parse_f32(b" abc ").unwrap_err().to_string(), r#"cannot parse " abc " as a number"#);
        let long = "x".repeat(100);
        let e = parse_f32(long.as_bytes()).unwrap_err().to_string();
        assert!(e.contains(&format!("\"{}…\"", "x".repeat(40))), "{e}");
        assert_eq!(parse_f32(b"\xff").unwrap_err().to_string(), "field is not valid UTF-8");
    }

    #[test]
    fn floats_agree_with_the_standard_library_on_what_both_accept() {
        for text in ["0", "-0", "1", "+1", "1.", ".5", "1e3", "1E-3", "-2.5e+2", "3.4028235e38", "inf", "-inf", "NaN"] {
            let want: f32 = text.parse().unwrap();
            let got = parse_f32(text.as_bytes()).unwrap();
            assert!(got == want || got.is_nan() && want.is_nan(), "{text}: {got} vs {want}");
        }
    }

    proptest::proptest! {
        /// Every f32 printed by Rust reads back exactly, padded or not.
        #[test]
        fn printed_floats_read_back(x in proptest::num::f32::NORMAL | proptest::num::f32::SUBNORMAL | proptest::num::f32::ZERO, pad in 0usize..3) {
            let text = format!("{}{x}{}", " ".repeat(pad), "\t".repeat(pad));
            proptest::prop_assert_eq!(parse_f32(text.as_bytes()).unwrap().to_bits(), x.to_bits());
        }

        /// On fields of digits, signs, dots, exponents, letters and spaces
        /// (ASCII and not): what the standard library reads from the
        /// ASCII-trimmed text reads the same here, and nothing holding a
        /// non-ASCII character is ever a number.
        #[test]
        fn fields_read_as_the_standard_library_reads_them(field in "[0-9.eE+\\- \t\u{a0}\u{2003}infa]{0,10}") {
            let trimmed = field.trim_matches(|c| c == ' ' || c == '\t');
            match (trimmed.parse::<f32>(), parse_f32(field.as_bytes())) {
                (Ok(want), Ok(got)) => proptest::prop_assert!(got.to_bits() == want.to_bits() || got.is_nan() && want.is_nan()),
                (Err(_), Ok(got)) => proptest::prop_assert!(trimmed.is_empty() && got.is_nan(), "{field:?} read as {got}"),
                (_, Err(_)) => proptest::prop_assert!(!trimmed.is_ascii() || trimmed.parse::<f32>().is_err()),
            }
            if !trimmed.is_ascii() {
                proptest::prop_assert!(parse_f32(field.as_bytes()).is_err());
                proptest::prop_assert!(parse_i64(field.as_bytes()).is_err());
            }
        }
    }
}
