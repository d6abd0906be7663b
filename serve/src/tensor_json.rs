//! A JSON `data` array (flat or nested, as the protocol allows) decoded
//! straight into the tensor's values: no `serde_json::Value` tree (32 bytes
//! a number) and never more values stored than the declared shape needs,
//! whatever the shape claims. Values past the shape are counted, not kept,
//! so the error can say how many were given.

use serde::de::{DeserializeSeed, Deserializer, Error as _, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::fmt;

/// The decoded values of one input.
#[derive(Debug, PartialEq)]
pub enum Values {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

/// The most numbers `raw` can hold: each takes a digit and, but for the
/// last, a comma. Bounds an allocation by the bytes received.
pub fn most_values(raw: &RawValue) -> usize {
    raw.get().len().div_ceil(2)
}

/// Decodes `raw` into `want` values (`int64`: INT64, else FP32). Errors
/// name the input and the element.
pub fn decode(name: &str, raw: &RawValue, want: usize, int64: bool) -> Result<Values, String> {
    let cap = want.min(most_values(raw));
    let mut flat = Flat {
        out: if int64 { Values::I64(Vec::with_capacity(cap)) } else { Values::F32(Vec::with_capacity(cap)) },
        want,
        seen: 0,
        int64,
    };
    let mut de = serde_json::Deserializer::from_str(raw.get());
    (&mut flat).deserialize(&mut de).map_err(|e| format!("input {name:?}: {e}"))?;
    if flat.seen != want {
        return Err(format!("input {name:?}: {} values, its shape needs {want}", flat.seen));
    }
    Ok(flat.out)
}

struct Flat {
    out: Values,
    want: usize,
    seen: usize,
    int64: bool,
}

impl Flat {
    fn push_i64(&mut self, v: i64) {
        if self.seen < self.want {
            match &mut self.out {
                Values::I64(o) => o.push(v),
                Values::F32(o) => o.push(v as f32),
            }
        }
        self.seen += 1;
    }

    fn push_f64<E: serde::de::Error>(&mut self, v: f64) -> Result<(), E> {
        if self.int64 {
            return Err(E::custom(format_args!("element {} is {v}, not an integer (INT64)", self.seen)));
        }
        if self.seen < self.want
            && let Values::F32(o) = &mut self.out
        {
            o.push(v as f32);
        }
        self.seen += 1;
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for &mut Flat {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for &mut Flat {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "element {} to be a number or an array of numbers", self.seen)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.push_i64(v);
        Ok(())
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        match i64::try_from(v) {
            Ok(v) => self.push_i64(v),
            Err(_) if self.int64 => {
                return Err(E::custom(format_args!("element {} is {v}, past INT64's range", self.seen)));
            }
            Err(_) => self.push_f64::<E>(v as f64)?,
        }
        Ok(())
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        self.push_f64(v)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(&mut *self)?.is_some() {}
        Ok(())
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        Err(E::custom(format_args!("element {} is the string {v:?}, not a number", self.seen)))
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(format_args!("element {} is a boolean, not a number", self.seen)))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        Err(E::custom(format_args!("element {} is null, not a number", self.seen)))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(A::Error::custom(format_args!("element {} is an object, not a number", self.seen)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).unwrap()
    }

    #[test]
    fn nested_and_flat_arrays_decode_alike() {
        assert_eq!(decode("x", &raw("[[1,2],[3.5,4]]"), 4, false).unwrap(), Values::F32(vec![1.0, 2.0, 3.5, 4.0]));
        assert_eq!(decode("x", &raw("[1,2,3]"), 3, true).unwrap(), Values::I64(vec![1, 2, 3]));
    }

    #[test]
    fn a_huge_declared_count_allocates_by_the_bytes_given() {
        let e = decode("input", &raw("[1]"), 3_900_000_000_000, false).unwrap_err();
        assert_eq!(e, "input \"input\": 1 values, its shape needs 3900000000000");
    }

    #[test]
    fn values_past_the_shape_are_counted_not_kept() {
        let e = decode("x", &raw("[1,2,3,4,5]"), 2, false).unwrap_err();
        assert!(e.contains("5 values, its shape needs 2"), "{e}");
    }

    #[test]
    fn wrong_elements_are_named() {
        for (text, int64, needle) in [
            ("[1,\"a\"]", false, "element 1 is the string"),
            ("[1,null]", false, "element 1 is null"),
            ("[1.5]", true, "element 0 is 1.5, not an integer"),
            ("[18446744073709551615]", true, "past INT64's range"),
            ("[{\"a\":1}]", false, "element 0 is an object"),
        ] {
            let e = decode("x", &raw(text), 2, int64).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_by_the_recursion_limit() {
        let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(decode("x", &raw(&deep), 1, false).unwrap_err().contains("recursion limit"));
    }

    proptest! {
        // Any text at all: an answer (never a panic), and never more values
        // kept than asked for.
        #[test]
        fn arbitrary_text_never_panics_or_overallocates(text in "[\\[\\]0-9.,e\\-\" a-z{}:]{0,64}", want in 0usize..1_000_000_000_000) {
            if let Ok(r) = RawValue::from_string(text)
                && let Ok(v) = decode("x", &r, want, false)
            {
                let n = match v { Values::F32(v) => v.len(), Values::I64(v) => v.len() };
                prop_assert_eq!(n, want);
            }
        }

        #[test]
        fn well_formed_arrays_round_trip(values in proptest::collection::vec(-1e6f32..1e6, 0..50), extra in 0usize..3) {
            let text = serde_json::to_string(&values).unwrap();
            let want = values.len() + extra;
            let got = decode("x", &raw(&text), want, false);
            if extra == 0 {
                prop_assert_eq!(got.unwrap(), Values::F32(values.iter().map(|v| *v as f64 as f32).collect()));
            } else {
                prop_assert!(got.is_err());
            }
        }
    }
}
