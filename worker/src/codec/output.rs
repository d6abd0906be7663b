//! The output of a shard: one Parquet file holding the id column, passed
//! through with its input type, and every model output column. Buffered in
//! memory until the shard ends (outputs are a few bytes per row, and shards
//! are sized by the planner), then written whole so the store's atomic put
//! never exposes half a file.

use crate::runtime::{ColumnData, OutputColumn};
use crate::{Error, Result};
use arrow_array::{ArrayRef, Float32Array, Float64Array, Int32Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use std::sync::Arc;

pub struct OutputWriter {
    shard: String,
    id_column: String,
    writer: Option<ArrowWriter<Vec<u8>>>,
    schema: Option<SchemaRef>,
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
    /// empty shard still produce a valid, empty file.
    pub fn new(shard: &str, id_column: &str, schema: Option<SchemaRef>) -> Self {
        Self { shard: shard.to_string(), id_column: id_column.to_string(), writer: None, schema }
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        Error::Encode { shard: self.shard.clone(), message: e.to_string() }
    }

    fn open(&mut self, schema: SchemaRef) -> Result<()> {
        // No dictionaries: ids are unique and scores nearly so, so a
        // dictionary only costs hashing every value (5% of a shard's CPU in
        // `hourglass bench`'s profile) before falling back to plain.
        let props =
            WriterProperties::builder().set_compression(Compression::SNAPPY).set_dictionary_enabled(false).build();
        let w = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props)).map_err(|e| self.err(e))?;
        self.writer = Some(w);
        self.schema = Some(schema);
        Ok(())
    }

    pub fn write(&mut self, ids: ArrayRef, columns: Vec<OutputColumn>) -> Result<()> {
        let mut fields = vec![Field::new(&self.id_column, ids.data_type().clone(), true)];
        let mut arrays = vec![ids];
        for c in columns {
            let a = column_array(c.data);
            fields.push(Field::new(&c.name, a.data_type().clone(), false));
            arrays.push(a);
        }
        if self.writer.is_none() {
            self.open(Arc::new(Schema::new(fields)))?;
        }
        let schema = self.schema.clone().expect("opened");
        let batch = RecordBatch::try_new(schema, arrays).map_err(|e| self.err(e))?;
        let w = self.writer.as_mut().expect("opened");
        w.write(&batch).map_err(|e| Error::Encode { shard: self.shard.clone(), message: e.to_string() })
    }

    pub fn finish(mut self) -> Result<Vec<u8>> {
        if self.writer.is_none() {
            let schema =
                self.schema.clone().ok_or_else(|| self.err("no rows, and the output schema is not known up front"))?;
            self.open(schema)?;
        }
        let w = self.writer.take().expect("opened");
        w.into_inner().map_err(|e| self.err(e))
    }
}

/// The output schema implied by a model signature, when every output has a
/// static width: `id` then each output's columns.
pub fn schema_for(
    id_column: &str,
    id_type: DataType,
    outputs: &[hourglass_core::model::TensorSpec],
) -> Option<SchemaRef> {
    use hourglass_core::model::DType;
    let mut fields = vec![Field::new(id_column, id_type, true)];
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
