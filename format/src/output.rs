//! The output of a shard: the id column, passed through with its input
//! type, any kept input columns, then every model output column, as one
//! Parquet file (the default), CSV file or JSON-lines file. Buffered in
//! memory until the shard ends (outputs are a few bytes per row, and shards
//! are sized by the planner), then written whole so the store's atomic put
//! never exposes half a file.

use crate::tensor::{ColumnData, OutputColumn};
use crate::{Error, Result};
use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrayRef, Float32Array, Float64Array, Int32Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use hourglass_core::task::OutputFormat;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use std::sync::Arc;

pub struct OutputWriter {
    shard: String,
    id_column: String,
    kept: Vec<String>,
    format: OutputFormat,
    schema: Option<SchemaRef>,
    parquet: Option<ArrowWriter<Vec<u8>>>,
    /// CSV and JSON lines: the encoded text so far (CSV: header included
    /// once `open` ran).
    text: Vec<u8>,
    opened: bool,
}

fn column_array(data: ColumnData) -> ArrayRef {
    match data {
        ColumnData::F32(v) => Arc::new(Float32Array::from(v)),
        ColumnData::F64(v) => Arc::new(Float64Array::from(v)),
        ColumnData::I32(v) => Arc::new(Int32Array::from(v)),
        ColumnData::I64(v) => Arc::new(Int64Array::from(v)),
    }
}

impl OutputWriter {
    /// `schema`, when known up front (from the model signature), lets an
    /// empty shard still produce a valid, empty file. `kept` names the kept
    /// input columns every `write` passes, in that order.
    pub fn new(
        shard: &str,
        id_column: &str,
        kept: Vec<String>,
        format: OutputFormat,
        schema: Option<SchemaRef>,
    ) -> Self {
        Self {
            shard: shard.to_string(),
            id_column: id_column.to_string(),
            kept,
            format,
            schema,
            parquet: None,
            text: Vec::new(),
            opened: false,
        }
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        Error::Encode { shard: self.shard.clone(), message: e.to_string() }
    }

    fn open(&mut self, schema: SchemaRef) -> Result<()> {
        match self.format {
            OutputFormat::Parquet => {
                // No dictionaries: ids are unique and scores nearly so, so a
                // dictionary only costs hashing every value (5% of a shard's
                // CPU in `hourglass bench`'s profile) before falling back to
                // plain.
                let props = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .set_dictionary_enabled(false)
                    .build();
                let w = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props)).map_err(|e| self.err(e))?;
                self.parquet = Some(w);
            }
            OutputFormat::Csv => {
                let names: Vec<String> = schema.fields().iter().map(|f| csv_text(f.name())).collect();
                self.text.extend_from_slice(names.join(",").as_bytes());
                self.text.push(b'\n');
            }
            OutputFormat::Jsonl => {}
        }
        for f in schema.fields() {
            if !self.format.is_parquet() && !hourglass_core::model::text_writable(f.data_type()) {
                return Err(self.err(format!(
                    "column {:?} has type {}, which {} output cannot write; use --output-format parquet",
                    f.name(),
                    f.data_type(),
                    self.format
                )));
            }
        }
        self.schema = Some(schema);
        self.opened = true;
        Ok(())
    }

    pub fn write(&mut self, ids: ArrayRef, kept: Vec<ArrayRef>, columns: Vec<OutputColumn>) -> Result<()> {
        let mut fields = vec![Field::new(&self.id_column, ids.data_type().clone(), true)];
        let mut arrays = vec![ids];
        for (name, a) in self.kept.iter().zip(kept) {
            fields.push(Field::new(name, a.data_type().clone(), true));
            arrays.push(a);
        }
        for c in columns {
            let a = column_array(c.data);
            fields.push(Field::new(&c.name, a.data_type().clone(), false));
            arrays.push(a);
        }
        if !self.opened {
            self.open(Arc::new(Schema::new(fields)))?;
        }
        let schema = self.schema.clone().expect("opened");
        let batch = RecordBatch::try_new(schema, arrays).map_err(|e| self.err(e))?;
        match self.format {
            OutputFormat::Parquet => {
                let w = self.parquet.as_mut().expect("opened");
                w.write(&batch).map_err(|e| Error::Encode { shard: self.shard.clone(), message: e.to_string() })
            }
            OutputFormat::Csv => write_csv(&mut self.text, &batch).map_err(|e| self.err(e)),
            OutputFormat::Jsonl => write_jsonl(&mut self.text, &batch).map_err(|e| self.err(e)),
        }
    }

    pub fn finish(mut self) -> Result<Vec<u8>> {
        if !self.opened {
            let schema =
                self.schema.clone().ok_or_else(|| self.err("no rows, and the output schema is not known up front"))?;
            self.open(schema)?;
        }
        match self.parquet.take() {
            Some(w) => w.into_inner().map_err(|e| self.err(e)),
            None => Ok(self.text),
        }
    }
}

/// A CSV field: quoted when it holds a comma, quote or line end.
fn csv_text(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

fn write_csv(out: &mut Vec<u8>, batch: &RecordBatch) -> std::result::Result<(), String> {
    let columns = batch.columns();
    for row in 0..batch.num_rows() {
        for (j, col) in columns.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            write_value(out, col, row, false)?;
        }
        out.push(b'\n');
    }
    Ok(())
}

fn write_jsonl(out: &mut Vec<u8>, batch: &RecordBatch) -> std::result::Result<(), String> {
    // Keys are the same for every row: encoded once.
    let keys: Vec<String> =
        batch.schema().fields().iter().map(|f| serde_json::to_string(f.name()).expect("strings serialize")).collect();
    let columns = batch.columns();
    for row in 0..batch.num_rows() {
        out.push(b'{');
        for (j, (key, col)) in keys.iter().zip(columns).enumerate() {
            if j > 0 {
                out.push(b',');
            }
            out.extend_from_slice(key.as_bytes());
            out.push(b':');
            write_value(out, col, row, true)?;
        }
        out.extend_from_slice(b"}\n");
    }
    Ok(())
}

/// One value as CSV text (null: empty; NaN: empty, as read back) or JSON
/// (null; NaN and infinities: null, which JSON has no numbers for).
fn write_value(out: &mut Vec<u8>, col: &ArrayRef, row: usize, json: bool) -> std::result::Result<(), String> {
    let null: &[u8] = if json { b"null" } else { b"" };
    if col.is_null(row) {
        out.extend_from_slice(null);
        return Ok(());
    }
    let mut int = itoa::Buffer::new();
    let mut float = ryu::Buffer::new();
    let text = |s: &str, out: &mut Vec<u8>| {
        if json {
            out.extend_from_slice(serde_json::to_string(s).expect("strings serialize").as_bytes());
        } else {
            out.extend_from_slice(csv_text(s).as_bytes());
        }
    };
    macro_rules! int {
        ($t:ty) => {
            out.extend_from_slice(int.format(col.as_primitive::<$t>().value(row)).as_bytes())
        };
    }
    macro_rules! float {
        ($t:ty) => {{
            let v = col.as_primitive::<$t>().value(row);
            if v.is_finite() {
                out.extend_from_slice(float.format_finite(v).as_bytes())
            } else if v.is_nan() {
                out.extend_from_slice(null)
            } else if json {
                out.extend_from_slice(b"null")
            } else {
                out.extend_from_slice(if v > 0.0 { b"inf" } else { b"-inf" })
            }
        }};
    }
    match col.data_type() {
        DataType::Utf8 => text(col.as_string::<i32>().value(row), out),
        DataType::LargeUtf8 => text(col.as_string::<i64>().value(row), out),
        DataType::Utf8View => text(col.as_string_view().value(row), out),
        DataType::Boolean => out.extend_from_slice(if col.as_boolean().value(row) { b"true" } else { b"false" }),
        DataType::Int8 => int!(Int8Type),
        DataType::Int16 => int!(Int16Type),
        DataType::Int32 => int!(Int32Type),
        DataType::Int64 => int!(Int64Type),
        DataType::UInt8 => int!(UInt8Type),
        DataType::UInt16 => int!(UInt16Type),
        DataType::UInt32 => int!(UInt32Type),
        DataType::UInt64 => int!(UInt64Type),
        DataType::Float32 => float!(Float32Type),
        DataType::Float64 => float!(Float64Type),
        DataType::Null => out.extend_from_slice(null),
        other => return Err(format!("a column of type {other} cannot be written as text")),
    }
    Ok(())
}

/// The output schema implied by a model signature, when every output has a
/// static width: `id`, the kept columns, then each output's columns.
pub fn schema_for(
    id_column: &str,
    id_type: DataType,
    kept: &[(String, DataType)],
    outputs: &[hourglass_core::model::TensorSpec],
) -> Option<SchemaRef> {
    use hourglass_core::model::DType;
    let mut fields = vec![Field::new(id_column, id_type, true)];
    for (name, t) in kept {
        fields.push(Field::new(name, t.clone(), true));
    }
    for o in outputs {
        let dt = match o.dtype? {
            DType::Float32 => DataType::Float32,
            DType::Float64 => DataType::Float64,
            DType::Int32 => DataType::Int32,
            DType::Int64 => DataType::Int64,
        };
        match o.shape.as_slice() {
            [_] | [_, Some(1)] => fields.push(Field::new(&o.name, dt, false)),
            [_, Some(k)] => {
                for j in 0..*k {
                    fields.push(Field::new(format!("{}_{j}", o.name), dt.clone(), false));
                }
            }
            _ => return None,
        }
    }
    Some(Arc::new(Schema::new(fields)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::StringArray;

    fn scores(v: Vec<f32>) -> Vec<OutputColumn> {
        vec![OutputColumn { name: "p".into(), data: ColumnData::F32(v) }]
    }

    #[test]
    fn csv_and_jsonl_hold_id_kept_columns_and_scores() {
        let ids: ArrayRef = Arc::new(StringArray::from(vec!["a", "b,\"c\""]));
        let kept: ArrayRef = Arc::new(StringArray::from(vec![Some("x"), None]));
        let mut w = OutputWriter::new("000001", "id", vec!["k".into()], OutputFormat::Csv, None);
        w.write(ids.clone(), vec![kept.clone()], scores(vec![0.25, f32::NAN])).unwrap();
        assert_eq!(String::from_utf8(w.finish().unwrap()).unwrap(), "id,k,p\na,x,0.25\n\"b,\"\"c\"\"\",,\n");
        let mut w = OutputWriter::new("000001", "id", vec!["k".into()], OutputFormat::Jsonl, None);
        w.write(ids, vec![kept], scores(vec![0.25, 1e-7])).unwrap();
        assert_eq!(
            String::from_utf8(w.finish().unwrap()).unwrap(),
            "{\"id\":\"a\",\"k\":\"x\",\"p\":0.25}\n{\"id\":\"b,\\\"c\\\"\",\"k\":null,\"p\":1e-7}\n"
        );
    }

    #[test]
    fn an_empty_csv_shard_is_its_header() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new("p", DataType::Float32, false),
        ]));
        let w = OutputWriter::new("000001", "id", vec![], OutputFormat::Csv, Some(schema));
        assert_eq!(w.finish().unwrap(), b"id,p\n");
    }

    #[test]
    fn text_output_refuses_a_type_it_cannot_write() {
        let ids: ArrayRef = Arc::new(StringArray::from(vec!["a"]));
        let kept: ArrayRef = Arc::new(arrow_array::Date32Array::from(vec![1]));
        let mut w = OutputWriter::new("000001", "id", vec!["day".into()], OutputFormat::Csv, None);
        let err = w.write(ids, vec![kept], scores(vec![0.5])).unwrap_err().to_string();
        assert!(err.contains("\"day\"") && err.contains("--output-format parquet"), "{err}");
    }
}
