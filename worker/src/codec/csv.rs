//! CSV shards: a byte range of a file, starting at a line start after the
//! header and ending after a newline (or at the end of the file). Fields are
//! split by `,`; quoted fields are allowed but must not span lines, since
//! shards are cut at newlines. An empty feature field is a missing value
//! (NaN) for float inputs, as in Criteo-style data.

use super::Batch;
use crate::runtime::InputData;
use crate::{Error, Result};
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
    /// The row's fields joined by commas, for the bad-rows file.
    pub raw: String,
}

#[derive(Debug)]
pub enum CsvError {
    /// A bad row beyond `max_bad_rows`: the shard fails with this row.
    TooManyBadRows { row: BadRow, skipped: Vec<BadRow> },
    /// Reading or decoding failed (IO, or the batch sink failed).
    Other(Error),
}

/// How to decode one CSV shard.
#[derive(Debug, Clone)]
pub struct CsvShard<'a> {
    pub columns: &'a [String],
    pub id_column: usize,
    pub bindings: &'a [InputBinding],
    pub batch_size: usize,
    pub max_bad_rows: u64,
}

enum Buf {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

impl<'a> CsvShard<'a> {
    /// Decodes every row from `reader`, handing batches to `on_batch`.
    /// Returns the rows skipped as bad (at most `max_bad_rows`).
    pub fn decode<R: Read>(
        &self,
        reader: R,
        mut on_batch: impl FnMut(Batch) -> Result<()>,
    ) -> std::result::Result<Vec<BadRow>, CsvError> {
        let mut rdr =
            csv::ReaderBuilder::new().has_headers(false).flexible(true).buffer_capacity(1 << 16).from_reader(reader);
        let batch_size = self.batch_size.max(1);
        let mut bufs = self.new_bufs(batch_size);
        let mut ids = StringBuilder::with_capacity(batch_size, batch_size * 12);
        let mut rows = 0usize;
        let mut bad = Vec::new();
        let mut rec = csv::ByteRecord::new();
        loop {
            match rdr.read_byte_record(&mut rec) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    return Err(CsvError::Other(Error::Decode { file: String::new(), message: e.to_string() }));
                }
            }
            match self.parse_row(&rec, &mut bufs, rows) {
                Ok(()) => {
                    ids.append_value(String::from_utf8_lossy(rec.get(self.id_column).unwrap_or_default()).trim());
                    rows += 1;
                    if rows == batch_size {
                        self.flush(&mut bufs, &mut ids, &mut rows, batch_size, &mut on_batch)
                            .map_err(CsvError::Other)?;
                    }
                }
                Err((column, message)) => {
                    let pos = rec.position().cloned().unwrap_or_else(csv::Position::new);
                    let raw = rec.iter().map(|f| String::from_utf8_lossy(f).into_owned()).collect::<Vec<_>>().join(",");
                    let row = BadRow { line_in_shard: pos.line(), byte_in_shard: pos.byte(), column, message, raw };
                    if bad.len() as u64 >= self.max_bad_rows {
                        return Err(CsvError::TooManyBadRows { row, skipped: bad });
                    }
                    bad.push(row);
                }
            }
        }
        if rows > 0 {
            self.flush(&mut bufs, &mut ids, &mut rows, batch_size, &mut on_batch).map_err(CsvError::Other)?;
        }
        Ok(bad)
    }

    fn new_bufs(&self, batch_size: usize) -> Vec<Buf> {
        self.bindings
            .iter()
            .map(|b| match b.dtype {
                DType::Int64 => Buf::I64(Vec::with_capacity(batch_size * b.columns.len())),
                _ => Buf::F32(Vec::with_capacity(batch_size * b.columns.len())),
            })
            .collect()
    }

    fn flush(
        &self,
        bufs: &mut Vec<Buf>,
        ids: &mut StringBuilder,
        rows: &mut usize,
        batch_size: usize,
        on_batch: &mut impl FnMut(Batch) -> Result<()>,
    ) -> Result<()> {
        let full = std::mem::replace(bufs, self.new_bufs(batch_size));
        let inputs = full
            .into_iter()
            .map(|b| match b {
                Buf::F32(v) => InputData::F32(v),
                Buf::I64(v) => InputData::I64(v),
            })
            .collect();
        let batch = Batch { ids: Arc::new(ids.finish()), inputs, rows: *rows };
        *rows = 0;
        on_batch(batch)
    }

    /// Parses the bound fields of one row into the buffers. On error the
    /// buffers are rolled back to `rows` complete rows.
    fn parse_row(
        &self,
        rec: &csv::ByteRecord,
        bufs: &mut [Buf],
        rows: usize,
    ) -> std::result::Result<(), (Option<String>, String)> {
        if rec.len() != self.columns.len() {
            return Err((None, format!("expected {} fields, found {}", self.columns.len(), rec.len())));
        }
        for (b, buf) in self.bindings.iter().zip(bufs.iter_mut()) {
            for &col in &b.columns {
                let field = rec.get(col).unwrap_or_default();
                let parsed = match buf {
                    Buf::F32(v) => parse_f32(field).map(|x| v.push(x)),
                    Buf::I64(v) => parse_i64(field).map(|x| v.push(x)),
                };
                if let Err(msg) = parsed {
                    for (b2, buf2) in self.bindings.iter().zip(bufs.iter_mut()) {
                        let keep = rows * b2.columns.len();
                        match buf2 {
                            Buf::F32(v) => v.truncate(keep),
                            Buf::I64(v) => v.truncate(keep),
                        }
                    }
                    return Err((Some(format!("{} ({:?})", col + 1, self.columns[col])), msg));
                }
            }
        }
        Ok(())
    }
}

fn field_str(field: &[u8]) -> std::result::Result<&str, String> {
    std::str::from_utf8(field).map(str::trim).map_err(|_| "field is not valid UTF-8".to_string())
}

/// A float field: straight from the bytes (no UTF-8 pass on the hot path),
/// surrounding ASCII spaces ignored, empty meaning missing (NaN).
fn parse_f32(field: &[u8]) -> std::result::Result<f32, String> {
    let s = field.trim_ascii();
    if s.is_empty() {
        return Ok(f32::NAN);
    }
    fast_float2::parse::<f32, _>(s).map_err(|_| match field_str(s) {
        Ok(text) => format!("cannot parse {:?} as a number", truncate(text)),
        Err(e) => e,
    })
}

fn parse_i64(field: &[u8]) -> std::result::Result<i64, String> {
    let s = field_str(field)?;
    s.parse::<i64>().map_err(|_| format!("cannot parse {:?} as an integer", truncate(s)))
}

fn truncate(s: &str) -> String {
    if s.len() > 40 {
        format!("{}…", &s[..s.char_indices().nth(40).map(|(i, _)| i).unwrap_or(s.len())])
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;

    fn shard<'a>(columns: &'a [String], bindings: &'a [InputBinding], max_bad: u64) -> CsvShard<'a> {
        CsvShard { columns, id_column: 0, bindings, batch_size: 2, max_bad_rows: max_bad }
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
                Ok(())
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
        match shard(&c, &b, 0).decode(&data[..], |_| Ok(())) {
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
            Ok(())
        });
        let bad = bad.unwrap();
        assert_eq!(rows, 2);
        assert_eq!(bad.len(), 2);
        assert_eq!(bad[1].message, "expected 3 fields, found 2");
        assert_eq!(bad[1].line_in_shard, 3);
    }
}
