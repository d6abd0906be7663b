//! CSV shards: a byte range of a file, starting at a line start after the
//! header and ending after a newline (or at the end of the file). Fields are
//! split by `,`; quoted fields are allowed but must not span lines, since
//! shards are cut at newlines. An empty feature field is a missing value
//! (NaN) for float inputs, as in Criteo-style data.

use crate::tensor::InputData;
use crate::{Batch, Error, lines, number};
use arrow_array::builder::StringBuilder;
use hourglass_core::model::{DType, InputBinding};
use std::io::Read;
use std::sync::Arc;

/// A row that could not be decoded, located within the shard.
#[derive(Debug, Clone, PartialEq)]
pub struct BadRow {
    /// 1-based line number counted from the shard's first byte.
    pub line_in_shard: u64,
    /// Byte offset of the row from the shard's first byte.
    pub byte_in_shard: u64,
    /// The column, when one field is at fault.
    pub column: Option<String>,
    pub message: String,
    /// The row's fields joined by commas, for the bad-rows file, cut to
    /// `MAX_RAW_BYTES` (memory stays bounded by `max_bad_rows` rows).
    pub raw: String,
}

/// Raw text kept per bad row: enough to find and fix the row, never a
/// copy of a whole input (a task can point at any file its role reads).
pub const MAX_RAW_BYTES: usize = 1024;

#[derive(Debug)]
pub enum CsvError<E = Error> {
    /// A bad row beyond `max_bad_rows`: the shard fails with this row.
    TooManyBadRows { row: BadRow, skipped: Vec<BadRow> },
    /// No line end within `max_line_bytes`: the shard cannot be cut into
    /// rows (a runaway line, or CR-only line endings).
    LineTooLong { line_in_shard: u64 },
    /// Reading or decoding failed (IO, or the batch sink failed).
    Other(E),
}

/// A carriage return inside a line: CR-only or mixed line endings.
pub use crate::lines::STRAY_CR;

/// How to decode one CSV shard.
#[derive(Debug, Clone)]
pub struct CsvShard<'a> {
    pub columns: &'a [String],
    pub id_column: usize,
    pub bindings: &'a [InputBinding],
    pub batch_size: usize,
    pub max_bad_rows: u64,
    /// Longest line buffered; more without a `\n` fails the shard.
    pub max_line_bytes: u64,
    /// The field delimiter (ASCII).
    pub delimiter: u8,
    /// Columns passed through to the output as text, in input order.
    pub keep: &'a [usize],
}

enum Buf {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

/// Bytes read from the input at a time; lines are cut out of this buffer.
const READ_BYTES: usize = 1 << 20;

/// One line's fields as ranges into `data`, with each field's value when
/// the scan could read it as a plain decimal (see [`split_plain`]).
struct Fields<'d> {
    data: &'d [u8],
    ranges: &'d [std::ops::Range<usize>],
    plain: &'d [Option<f32>],
}

/// Powers of ten exact in f32.
const POW10_F32: [f32; 11] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10];

/// Powers of ten exact in f64.
const POW10_F64: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20,
    1e21, 1e22,
];

/// `mantissa / 10^decimals` correctly rounded to f32, when that is cheap to
/// be sure of: both are exact in f64 (at most 18 digits, 10^22), so the
/// quotient is one f64 rounding (Clinger's fast path); rounding that to f32
/// again is correct unless it landed exactly halfway between two f32 values
/// (then `None`: the full parser decides).
#[inline]
fn plain_f32(mantissa: u64, decimals: usize) -> Option<f32> {
    // Integers up to 2^24 (counts, hashed categories, most CTR fields) are
    // exact in f32: one conversion, no rounding question.
    if mantissa <= 1 << 24 {
        match decimals {
            0 => return Some(mantissa as u32 as f32),
            // Both exact in f32 (10^10 is): one correctly rounded f32
            // division, the fast path in single precision.
            1..=10 => return Some(mantissa as u32 as f32 / POW10_F32[decimals]),
            _ => {}
        }
    }
    // At most 18 digits: below 2^63, so the signed conversion (one
    // instruction; the unsigned one is a sequence on x86) is exact enough:
    // both round to nearest.
    let m = mantissa as i64 as f64;
    let v = if decimals == 0 { m } else { m / *POW10_F64.get(decimals)? };
    // The 29 bits f32 drops: exactly a half is a possible double rounding.
    (v.to_bits() & 0x1fff_ffff != 0x1000_0000).then_some(v as f32)
}

/// Reads the ASCII digits at `text[*i..]` into `mantissa` (wrapping: the
/// caller rejects more than 18 digits) and returns how many there were.
/// (Eight-at-a-time SWAR was tried: no faster on 2–9 digit fields.)
fn read_digits(text: &[u8], i: &mut usize, mantissa: &mut u64) -> u32 {
    let mut taken = 0;
    while let Some(d) = text.get(*i).filter(|b| b.is_ascii_digit()) {
        *mantissa = mantissa.wrapping_mul(10).wrapping_add((d - b'0') as u64);
        taken += 1;
        *i += 1;
    }
    taken
}

/// The leading ASCII digits of the 8 bytes at `text[at..]` (the caller
/// checks there are 8): how many, and their value. Branch-free (SWAR): the
/// digits are found with one subtraction and mask, and combined in three
/// multiplications.
#[inline(always)]
fn swar_digits(text: &[u8], at: usize) -> (usize, u64) {
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    let word = u64::from_le_bytes(text[at..at + 8].try_into().expect("8 bytes"));
    let t = word.wrapping_sub(ZEROS);
    // A byte below '0' wraps to ≥ 0xd0 (a borrow only reaches the bytes
    // after it); one above '9' reaches 0x80 once 0x76 is added.
    let non_digit = (t.wrapping_add(0x7676_7676_7676_7676) | t) & 0x8080_8080_8080_8080;
    let len = (non_digit.trailing_zeros() / 8) as usize;
    if len == 0 {
        return (0, 0);
    }
    // The digits moved to the top bytes: leading zeros below them.
    let d = t << (8 * (8 - len));
    let d = (d.wrapping_mul(10) + (d >> 8)) & 0x00ff_00ff_00ff_00ff;
    let d = (d.wrapping_mul(100) + (d >> 16)) & 0x0000_ffff_0000_ffff;
    (len, (d.wrapping_mul(10_000) + (d >> 32)) & 0xffff_ffff)
}

/// 10^0 ..= 10^8.
const POW10_U64: [u64; 9] = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000];

/// The digits at `text[*at..]`, 8 bytes at a time, added to `mantissa`:
/// how many there were, or `None` past 18 digits in all (`so_far` before)
/// or too near the end of `text` to read 8 bytes.
#[inline(always)]
fn swar_run(text: &[u8], at: &mut usize, mantissa: &mut u64, so_far: usize) -> Option<usize> {
    let mut taken = 0;
    loop {
        if *at + 8 > text.len() {
            return None;
        }
        let (len, value) = swar_digits(text, *at);
        if so_far + taken + len > 18 {
            return None;
        }
        *mantissa = *mantissa * POW10_U64[len] + value;
        taken += len;
        *at += len;
        if len < 8 {
            return Some(taken);
        }
    }
}

/// A plain field at `text[i..]` (`-?digits[.digits]`, at most 18 digits)
/// read 8 bytes at a time, ended by `delimiter` (not by the line's end).
/// Returns the value and the delimiter's index, or `None` to leave the
/// field to the byte loop.
#[inline(always)]
fn swar_field(text: &[u8], i: usize, delimiter: u8) -> Option<(Option<f32>, usize)> {
    let negative = text.get(i) == Some(&b'-');
    let mut at = i + negative as usize;
    let mut mantissa = 0u64;
    let digits = swar_run(text, &mut at, &mut mantissa, 0)?;
    if digits == 0 {
        return None;
    }
    let mut decimals = 0;
    if text[at] == b'.' {
        at += 1;
        decimals = swar_run(text, &mut at, &mut mantissa, digits)?;
        if decimals == 0 {
            return None;
        }
    }
    if text[at] != delimiter {
        return None;
    }
    Some((plain_f32(mantissa, decimals).map(|v| if negative { -v } else { v }), at))
}

/// Splits a quote-free line at commas in one pass, reading each field as a
/// plain decimal (`-?digits[.digits]`) on the way, which covers counts, ids
/// and most printed features. Any other field gets `None` and goes through
/// the full parser.
fn split_plain(text: &[u8], delimiter: u8, ranges: &mut Vec<std::ops::Range<usize>>, plain: &mut Vec<Option<f32>>) {
    let n = text.len();
    let mut i = 0;
    loop {
        let start = i;
        if let Some((value, end)) = swar_field(text, i, delimiter) {
            plain.push(value);
            ranges.push(start..end);
            i = end + 1;
            continue;
        }
        let negative = i < n && text[i] == b'-';
        i += negative as usize;
        let (mut mantissa, mut digits, mut decimals) = (0u64, 0u32, 0usize);
        let taken = read_digits(text, &mut i, &mut mantissa);
        digits += taken;
        if i < n && text[i] == b'.' {
            i += 1;
            let taken = read_digits(text, &mut i, &mut mantissa);
            digits += taken;
            decimals = taken as usize;
        }
        let at_end = i == n || text[i] == delimiter;
        let plain_number = at_end && digits > 0 && digits <= 18;
        plain
            .push(plain_number.then(|| plain_f32(mantissa, decimals)).flatten().map(|v| if negative { -v } else { v }));
        while i < n && text[i] != delimiter {
            i += 1;
        }
        ranges.push(start..i);
        if i >= n {
            return;
        }
        i += 1;
    }
}

impl Fields<'_> {
    fn get(&self, i: usize) -> &[u8] {
        self.ranges.get(i).map_or(&[][..], |r| &self.data[r.clone()])
    }

    /// The row as text, fields joined by `delimiter`.
    fn raw(&self, delimiter: u8) -> String {
        let sep = (delimiter as char).to_string();
        let mut raw =
            self.ranges.iter().map(|r| String::from_utf8_lossy(&self.data[r.clone()])).collect::<Vec<_>>().join(&sep);
        if raw.len() > MAX_RAW_BYTES {
            let cut = (0..=MAX_RAW_BYTES).rev().find(|&i| raw.is_char_boundary(i)).unwrap_or(0);
            raw.truncate(cut);
            raw.push('…');
        }
        raw
    }
}

/// What a shard's decode holds between lines.
struct State {
    bufs: Vec<Buf>,
    ids: StringBuilder,
    /// The kept columns' text, one builder per kept column.
    kept: Vec<StringBuilder>,
    rows: usize,
    bad: Vec<BadRow>,
    /// Reused field ranges and plain values of the current line.
    ranges: Vec<std::ops::Range<usize>>,
    plain: Vec<Option<f32>>,
    /// Scratch for lines with quotes, which go through the `csv` crate.
    record: csv::ByteRecord,
}

impl<'a> CsvShard<'a> {
    /// Decodes every row from `reader`, handing batches to `on_batch`.
    /// Returns the rows skipped as bad (at most `max_bad_rows`).
    ///
    /// Lines are cut with `memchr` out of 1 MiB reads; a line without a
    /// quote (the common case) is split and its plain numbers read in one
    /// pass, in place, and one with a quote is parsed by the `csv` crate,
    /// so quoting rules stay RFC 4180.
    pub fn decode<R: Read, E: From<Error>>(
        &self,
        mut reader: R,
        mut on_batch: impl FnMut(Batch) -> Result<(), E>,
    ) -> Result<Vec<BadRow>, CsvError<E>> {
        let batch_size = self.batch_size.max(1);
        let mut st = State {
            bufs: self.new_bufs(batch_size),
            ids: StringBuilder::with_capacity(batch_size, batch_size * 12),
            kept: self.new_kept(batch_size),
            rows: 0,
            bad: Vec::new(),
            ranges: Vec::with_capacity(self.columns.len()),
            plain: Vec::with_capacity(self.columns.len()),
            record: csv::ByteRecord::new(),
        };
        let mut buf: Vec<u8> = Vec::with_capacity(2 * READ_BYTES);
        // Shard offset of buf[0], and lines before it.
        let (mut base, mut line) = (0u64, 0u64);
        let mut eof = false;
        while !eof {
            let filled = buf.len();
            buf.resize(filled + READ_BYTES, 0);
            let n = loop {
                match reader.read(&mut buf[filled..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        return Err(CsvError::Other(
                            Error::Decode { file: String::new(), message: e.to_string() }.into(),
                        ));
                    }
                }
            };
            buf.truncate(filled + n);
            eof = n == 0;
            let mut start = 0;
            for end in memchr::memchr_iter(b'\n', &buf) {
                line += 1;
                self.line(&buf[start..end], line, base + start as u64, &mut st, batch_size, &mut on_batch)?;
                start = end + 1;
            }
            if eof && start < buf.len() {
                line += 1;
                let end = buf.len();
                self.line(&buf[start..end], line, base + start as u64, &mut st, batch_size, &mut on_batch)?;
                start = end;
            }
            buf.drain(..start);
            base += start as u64;
            if buf.len() as u64 > self.max_line_bytes {
                return Err(CsvError::LineTooLong { line_in_shard: line + 1 });
            }
        }
        if st.rows > 0 {
            self.flush(&mut st, batch_size, &mut on_batch).map_err(CsvError::Other)?;
        }
        Ok(st.bad)
    }

    /// One line (without its `\n`): a row into the batch, or a bad row.
    fn line<E: From<Error>>(
        &self,
        text: &[u8],
        line: u64,
        byte: u64,
        st: &mut State,
        batch_size: usize,
        on_batch: &mut impl FnMut(Batch) -> Result<(), E>,
    ) -> Result<(), CsvError<E>> {
        let stray_cr = lines::stray_cr(text);
        let text = lines::content(text);
        if text.is_empty() {
            return Ok(());
        }
        let quoted = memchr::memchr(b'"', text).is_some();
        let fields = if quoted {
            let mut rdr =
                csv::ReaderBuilder::new().has_headers(false).flexible(true).delimiter(self.delimiter).from_reader(text);
            match rdr.read_byte_record(&mut st.record) {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(e) => {
                    return Err(CsvError::Other(
                        Error::Decode { file: String::new(), message: format!("line {line} of the shard: {e}") }.into(),
                    ));
                }
            }
            st.ranges.clear();
            st.ranges.extend((0..st.record.len()).map(|i| st.record.range(i).expect("in range")));
            st.plain.clear();
            st.plain.resize(st.ranges.len(), None);
            Fields { data: st.record.as_slice(), ranges: &st.ranges, plain: &st.plain }
        } else {
            st.ranges.clear();
            st.plain.clear();
            split_plain(text, self.delimiter, &mut st.ranges, &mut st.plain);
            Fields { data: text, ranges: &st.ranges, plain: &st.plain }
        };
        let parsed = if stray_cr {
            Err((None, STRAY_CR.to_string()))
        } else {
            self.parse_row(&fields, &mut st.bufs, st.rows).and_then(|()| {
                // Ids must be text: a lossy conversion could merge two ids.
                // Kept columns are copied as text: no lossy conversion either.
                let not_text = std::iter::once(self.id_column)
                    .chain(self.keep.iter().copied())
                    .find(|&c| std::str::from_utf8(fields.get(c)).is_err());
                match not_text {
                    None => Ok(()),
                    Some(c) => {
                        self.rollback(&mut st.bufs, st.rows);
                        let what = if c == self.id_column { "the id" } else { "a kept column" };
                        Err((Some(self.column_name(c)), format!("{what} is not valid UTF-8")))
                    }
                }
            })
        };
        match parsed {
            Ok(()) => {
                let id = std::str::from_utf8(fields.get(self.id_column)).expect("checked above");
                st.ids.append_value(id.trim());
                for (b, &c) in st.kept.iter_mut().zip(self.keep) {
                    b.append_value(std::str::from_utf8(fields.get(c)).expect("checked above"));
                }
                st.rows += 1;
                if st.rows == batch_size {
                    self.flush(st, batch_size, on_batch).map_err(CsvError::Other)?;
                }
            }
            Err((column, message)) => {
                let row = BadRow {
                    line_in_shard: line,
                    byte_in_shard: byte,
                    column,
                    message,
                    raw: fields.raw(self.delimiter),
                };
                if st.bad.len() as u64 >= self.max_bad_rows {
                    return Err(CsvError::TooManyBadRows { row, skipped: std::mem::take(&mut st.bad) });
                }
                st.bad.push(row);
            }
        }
        Ok(())
    }

    fn new_bufs(&self, batch_size: usize) -> Vec<Buf> {
        self.bindings
            .iter()
            .map(|b| match b.dtype {
                DType::Int64 => Buf::I64(Vec::with_capacity(batch_size * b.columns.len())),
                _ => Buf::F32(crate::empty_tensor(batch_size * b.columns.len())),
            })
            .collect()
    }

    fn new_kept(&self, batch_size: usize) -> Vec<StringBuilder> {
        self.keep.iter().map(|_| StringBuilder::with_capacity(batch_size, batch_size * 8)).collect()
    }

    fn flush<E>(
        &self,
        st: &mut State,
        batch_size: usize,
        on_batch: &mut impl FnMut(Batch) -> Result<(), E>,
    ) -> Result<(), E> {
        let full = std::mem::replace(&mut st.bufs, self.new_bufs(batch_size));
        let inputs = full
            .into_iter()
            .map(|b| match b {
                Buf::F32(v) => InputData::F32(v),
                Buf::I64(v) => InputData::I64(v),
            })
            .collect();
        let kept = st.kept.iter_mut().map(|b| Arc::new(b.finish()) as arrow_array::ArrayRef).collect();
        let batch = Batch { ids: Arc::new(st.ids.finish()), kept, inputs, rows: st.rows };
        st.rows = 0;
        on_batch(batch)
    }

    /// Parses the bound fields of one row into the buffers. On error the
    /// buffers are rolled back to `rows` complete rows.
    fn parse_row(&self, rec: &Fields<'_>, bufs: &mut [Buf], rows: usize) -> Result<(), (Option<String>, String)> {
        if rec.ranges.len() != self.columns.len() {
            return Err((None, format!("expected {} fields, found {}", self.columns.len(), rec.ranges.len())));
        }
        for (b, buf) in self.bindings.iter().zip(bufs.iter_mut()) {
            for &col in &b.columns {
                // The field's text only when it was not read on the way.
                let parsed = match buf {
                    Buf::F32(v) => rec.plain[col].map_or_else(|| parse_f32(rec.get(col)), Ok).map(|x| v.push(x)),
                    Buf::I64(v) => parse_i64(rec.get(col)).map(|x| v.push(x)),
                };
                if let Err(msg) = parsed {
                    self.rollback(bufs, rows);
                    return Err((Some(self.column_name(col)), msg));
                }
            }
        }
        Ok(())
    }

    /// Drops a half-parsed row: the buffers keep `rows` complete rows.
    fn rollback(&self, bufs: &mut [Buf], rows: usize) {
        for (b, buf) in self.bindings.iter().zip(bufs.iter_mut()) {
            let keep = rows * b.columns.len();
            match buf {
                Buf::F32(v) => v.truncate(keep),
                Buf::I64(v) => v.truncate(keep),
            }
        }
    }

    /// `3 ("I2")`: the 1-based column and its header name.
    fn column_name(&self, col: usize) -> String {
        format!("{} ({:?})", col + 1, self.columns[col])
    }
}

/// A float field: straight from the bytes (no UTF-8 pass on the hot path),
/// by the one number grammar (`number`).
#[inline]
fn parse_f32(field: &[u8]) -> Result<f32, String> {
    number::parse_f32(field).map_err(String::from)
}

fn parse_i64(field: &[u8]) -> Result<i64, String> {
    number::parse_i64(field).map_err(String::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;

    /// Lines of every field shape (short and long integers and decimals,
    /// signs, empty fields, text, stray dots, fields at the line's end):
    /// split at the delimiter exactly as `str::split`, and every value read
    /// on the fast paths equal to the correctly rounded parse.
    #[test]
    fn plain_fields_split_and_read_as_the_full_parser_would() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let digits = |next: &mut dyn FnMut(u64) -> u64, k: u64| -> String {
            (0..k).map(|_| char::from(b'0' + next(10) as u8)).collect()
        };
        let (mut ranges, mut plain) = (Vec::new(), Vec::new());
        for _ in 0..20_000 {
            let delimiter = [b',', b'\t', b';'][next(3) as usize];
            let fields: Vec<String> = (0..1 + next(12))
                .map(|_| {
                    let sign = if next(4) == 0 { "-" } else { "" };
                    match next(8) {
                        0 => String::new(),
                        1 => "abc".to_string(),
                        2 => {
                            let k = 1 + next(3);
                            format!("{sign}{}.", digits(&mut next, k))
                        }
                        3 => {
                            let k = 1 + next(3);
                            format!("{sign}.{}", digits(&mut next, k))
                        }
                        4 => {
                            let k = 1 + next(20);
                            format!("{sign}{}", digits(&mut next, k))
                        }
                        _ => {
                            let (a, b) = (1 + next(9), 1 + next(9));
                            let int = digits(&mut next, a);
                            format!("{sign}{int}.{}", digits(&mut next, b))
                        }
                    }
                })
                .collect();
            let line = fields.join(&char::from(delimiter).to_string());
            ranges.clear();
            plain.clear();
            split_plain(line.as_bytes(), delimiter, &mut ranges, &mut plain);
            let got: Vec<&str> = ranges.iter().map(|r| &line[r.clone()]).collect();
            assert_eq!(got, fields, "{line:?}");
            for (field, value) in fields.iter().zip(&plain) {
                if let Some(v) = value {
                    let want: f32 = field.parse().unwrap();
                    assert_eq!(v.to_bits(), want.to_bits(), "{field:?} in {line:?}");
                }
            }
        }
        // The fast path does read the common shapes.
        ranges.clear();
        plain.clear();
        split_plain(b"1234567,-89.25,0.5,12,", b',', &mut ranges, &mut plain);
        assert_eq!(plain[..4], [Some(1234567.0), Some(-89.25), Some(0.5), Some(12.0)]);
    }

    fn shard<'a>(columns: &'a [String], bindings: &'a [InputBinding], max_bad: u64) -> CsvShard<'a> {
        CsvShard {
            columns,
            id_column: 0,
            bindings,
            batch_size: 2,
            max_bad_rows: max_bad,
            max_line_bytes: 1 << 20,
            delimiter: b',',
            keep: &[],
        }
    }

    fn setup() -> (Vec<String>, Vec<InputBinding>) {
        let columns = vec!["id".to_string(), "a".into(), "b".into()];
        let bindings = vec![InputBinding { input: "x".into(), dtype: DType::Float32, columns: vec![2, 1] }];
        (columns, bindings)
    }

    #[test]
    fn decodes_in_batches_in_binding_order() {
        let (c, b) = setup();
        let mut got = Vec::new();
        let bad = shard(&c, &b, 0)
            .decode(&b"r1,1,2\nr2,3,\r\nr3,5,6"[..], |batch| {
                got.push(batch);
                Ok::<_, Error>(())
            })
            .unwrap();
        assert!(bad.is_empty());
        assert_eq!(got.iter().map(|b| b.rows).collect::<Vec<_>>(), vec![2, 1]);
        let InputData::F32(v) = &got[0].inputs[0] else { panic!() };
        assert_eq!(v[..2], [2.0, 1.0]);
        assert!(v[2].is_nan() && v[3] == 3.0);
        assert_eq!(got[1].ids.as_string::<i32>().value(0), "r3");
    }

    #[test]
    fn floats_parse_like_the_standard_library() {
        for text in ["0", "-0.5", "1e-7", "3.4028235e38", "  2.5 ", "inf", "-inf", "1234567.875", ".5", "5."] {
            let want: f32 = text.trim().parse().unwrap();
            assert_eq!(parse_f32(text.as_bytes()).unwrap().to_bits(), want.to_bits(), "{text:?}");
        }
        assert!(parse_f32(b"").unwrap().is_nan());
        assert!(parse_f32(b"nan").unwrap().is_nan());
        for bad in ["x", "1.2.3", "1e", "--1", "1 2", "0x10"] {
            let err = parse_f32(bad.as_bytes()).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{bad:?}: {err}");
        }
        assert_eq!(parse_f32(b"\xff").unwrap_err(), "field is not valid UTF-8");
    }

    #[test]
    fn bad_rows_fail_or_are_skipped() {
        let (c, b) = setup();
        let data = b"r1,1,2\nr2,x,2\nr3,1\nr4,1,1\n";
        match shard(&c, &b, 0).decode(&data[..], |_| Ok::<_, Error>(())) {
            Err(CsvError::TooManyBadRows { row, .. }) => {
                assert_eq!(row.line_in_shard, 2);
                assert_eq!(row.column.as_deref(), Some("2 (\"a\")"));
                assert!(row.message.contains("\"x\""));
            }
            other => panic!("{other:?}"),
        }
        let mut rows = 0;
        let bad = shard(&c, &b, 2).decode(&data[..], |batch| {
            rows += batch.rows;
            Ok::<_, Error>(())
        });
        let bad = bad.unwrap();
        assert_eq!(rows, 2);
        assert_eq!(bad.len(), 2);
        assert_eq!(bad[1].message, "expected 3 fields, found 2");
        assert_eq!(bad[1].line_in_shard, 3);
    }

    #[test]
    fn plain_split_agrees_with_the_full_parser() {
        let line =
            b"id-1,0,-0,12,-37.43831,16777216,16777217,0.1,5.,.5,,1e3, 2,abc,-,1.12345678901,99999999999999999999,";
        let (mut ranges, mut plain) = (Vec::new(), Vec::new());
        split_plain(line, b',', &mut ranges, &mut plain);
        let fields: Vec<&[u8]> = line.split(|&b| b == b',').collect();
        assert_eq!(ranges.len(), fields.len());
        for ((r, p), f) in ranges.iter().zip(&plain).zip(&fields) {
            assert_eq!(&line[r.clone()], *f);
            if let Some(x) = p {
                let want = parse_f32(f).unwrap();
                assert_eq!(x.to_bits(), want.to_bits(), "{:?}", String::from_utf8_lossy(f));
            }
        }
        let taken: Vec<bool> = plain.iter().map(Option::is_some).collect();
        // 16777217 is exactly halfway between two f32s: left to the parser.
        let want = [
            false, true, true, true, true, true, false, true, true, true, false, false, false, false, false, true,
            false, false,
        ];
        assert_eq!(taken, want);
        // Many numbers around the fast path's limits, both ways.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..200_000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let (m, k) = ((x >> 8) % 10u64.pow(1 + (x % 18) as u32), (x >> 50) % 16);
            let p = 10u64.pow(k as u32);
            let text = if k == 0 { format!("{m}") } else { format!("{}.{:0>w$}", m / p, m % p, w = k as usize) };
            let (mut r, mut p) = (Vec::new(), Vec::new());
            split_plain(text.as_bytes(), b',', &mut r, &mut p);
            if let Some(v) = p[0] {
                assert_eq!(v.to_bits(), parse_f32(text.as_bytes()).unwrap().to_bits(), "{text}");
            }
        }
        // The single-precision path: mantissas up to 2^24, 1 to 10 decimals.
        for _ in 0..200_000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let (m, k) = ((x >> 11) % ((1 << 24) + 1), 1 + (x >> 56) % 10);
            let p = 10u64.pow(k as u32);
            let text = format!("{}.{:0>w$}", m / p, m % p, w = k as usize);
            let (mut r, mut p) = (Vec::new(), Vec::new());
            split_plain(text.as_bytes(), b',', &mut r, &mut p);
            assert_eq!(p[0].unwrap().to_bits(), parse_f32(text.as_bytes()).unwrap().to_bits(), "{text}");
        }
    }

    /// Yields at most `n` bytes per read, so lines straddle reads.
    struct Trickle<'d>(&'d [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn lines_straddling_reads_quotes_and_blank_lines_keep_rows_and_line_numbers() {
        let (c, b) = setup();
        // Line 3 is blank, line 4 is quoted (a comma inside the id), line 6
        // is bad, the last line has no newline.
        let data = b"r1,1,2\r\nr2,3,4\n\n\"r,4\",5,\"6\"\nr5,7,8\nr6,x,9\nr7,10,11";
        for chunk in [1, 2, 3, 7, 64] {
            let mut ids = Vec::new();
            let mut values = Vec::new();
            let bad = shard(&c, &b, 1)
                .decode(Trickle(data, chunk), |batch| {
                    ids.extend(batch.ids.as_string::<i32>().iter().map(|s| s.unwrap().to_string()));
                    let InputData::F32(v) = &batch.inputs[0] else { panic!() };
                    values.extend_from_slice(v);
                    Ok::<_, Error>(())
                })
                .unwrap();
            assert_eq!(ids, ["r1", "r2", "r,4", "r5", "r7"], "chunk {chunk}");
            assert_eq!(values, [2.0, 1.0, 4.0, 3.0, 6.0, 5.0, 8.0, 7.0, 11.0, 10.0], "chunk {chunk}");
            assert_eq!(bad.len(), 1);
            assert_eq!((bad[0].line_in_shard, bad[0].raw.as_str()), (6, "r6,x,9"), "chunk {chunk}");
            assert_eq!(bad[0].byte_in_shard, data.windows(6).position(|w| w == b"r6,x,9").unwrap() as u64);
        }
    }
}
