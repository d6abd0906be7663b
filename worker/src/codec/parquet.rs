//! Parquet shards: a set of row groups of one file, read through the blob
//! store with ranged reads (the footer, then only the projected column
//! chunks), decoded into batches. Numeric columns of any width become the
//! model's input type; nulls in float inputs become NaN (missing).

use super::Batch;
use crate::runtime::InputData;
use crate::{Error, Result};
use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use hourglass_core::model::{DType, InputBinding, ModelSignature};
use hourglass_core::store::BlobStore;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use std::ops::Range;
use std::sync::Arc;

/// Footer bytes fetched in the first read: most footers fit, saving a
/// round trip.
const FOOTER_PREFETCH_BYTES: usize = 64 * 1024;
/// Column chunks closer than this are fetched in one read (object_store's
/// default): a row group of 40 projected columns is one S3 GET, not 40, and
/// one wait for the decoding thread instead of 40.
const COALESCE_GAP_BYTES: u64 = 1 << 20;

/// Merges sorted-or-not ranges whose gaps are at most `gap` into spans.
fn coalesce(ranges: &[Range<u64>], gap: u64) -> Vec<Range<u64>> {
    let mut sorted: Vec<Range<u64>> = ranges.to_vec();
    sorted.sort_by_key(|r| r.start);
    let mut spans: Vec<Range<u64>> = Vec::new();
    for r in sorted {
        match spans.last_mut() {
            Some(last) if r.start <= last.end.saturating_add(gap) => last.end = last.end.max(r.end),
            _ => spans.push(r),
        }
    }
    spans
}

/// A Parquet file in a blob store, read by range.
pub struct StoreFileReader {
    store: Arc<dyn BlobStore>,
    key: String,
    size: u64,
    /// The version every read is pinned to (`If-Match`), when known.
    version: Option<String>,
}

impl StoreFileReader {
    /// Opens `key`; with `version`, a file that is no longer that version
    /// fails with kind `Changed`, here and on every later read.
    pub async fn open(store: Arc<dyn BlobStore>, key: &str, version: Option<&str>) -> hourglass_core::Result<Self> {
        let meta = store.head(key).await?;
        if let Some(want) = version
            && meta.version != want
        {
            return Err(hourglass_core::Error::store(
                "get",
                store.url(key).to_string(),
                hourglass_core::ErrorKind::Changed,
                format!("the file was rewritten after the job was planned (version {want} then, {} now)", meta.version),
            ));
        }
        Ok(Self { store, key: key.to_string(), size: meta.size, version: version.map(String::from) })
    }

    /// Opens the file and reads its footer: everything a shard needs
    /// before decoding. `file` names it in errors.
    pub async fn open_with_metadata(
        store: Arc<dyn BlobStore>,
        key: &str,
        version: Option<&str>,
        file: &str,
    ) -> Result<(Self, ArrowReaderMetadata)> {
        let mut reader = Self::open(store, key, version).await?;
        let metadata =
            ArrowReaderMetadata::load_async(&mut reader, ArrowReaderOptions::default()).await.map_err(|e| {
                match e {
                    // A store failure keeps its kind (retryable or not).
                    parquet::errors::ParquetError::External(inner) => match inner.downcast::<hourglass_core::Error>() {
                        Ok(store_err) => Error::Core(*store_err),
                        Err(other) => Error::Decode { file: file.to_string(), message: other.to_string() },
                    },
                    other => Error::Decode { file: file.to_string(), message: other.to_string() },
                }
            })?;
        Ok((reader, metadata))
    }
}

impl AsyncFileReader for StoreFileReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            hourglass_core::store::read_range_if(self.store.as_ref(), &self.key, range, self.version.as_deref())
                .await
                .map(Bytes::from)
                .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))
        }
        .boxed()
    }

    fn get_byte_ranges(&mut self, ranges: Vec<Range<u64>>) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            let spans = coalesce(&ranges, COALESCE_GAP_BYTES);
            let mut fetched = Vec::with_capacity(spans.len());
            for span in spans {
                let bytes = hourglass_core::store::read_range_if(
                    self.store.as_ref(),
                    &self.key,
                    span.clone(),
                    self.version.as_deref(),
                )
                .await
                .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))?;
                fetched.push((span, Bytes::from(bytes)));
            }
            Ok(ranges
                .iter()
                .map(|r| {
                    let (span, bytes) = fetched
                        .iter()
                        .find(|(s, _)| s.start <= r.start && r.end <= s.end)
                        .expect("every range lies in its span");
                    bytes.slice((r.start - span.start) as usize..(r.end - span.start) as usize)
                })
                .collect())
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let meta = ParquetMetaDataReader::new()
                .with_prefetch_hint(Some(FOOTER_PREFETCH_BYTES))
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(meta))
        }
        .boxed()
    }
}

/// How to decode one Parquet shard.
pub struct ParquetShard<'a> {
    pub file: &'a str,
    pub row_groups: Vec<usize>,
    pub id_column: &'a str,
    pub signature: &'a ModelSignature,
    pub batch_size: usize,
    /// Columns passed through to the output, by name.
    pub keep: &'a [String],
}

impl ParquetShard<'_> {
    /// Decodes the shard on the calling (CPU pool) thread from a file
    /// opened with [`StoreFileReader::open_with_metadata`]; IO is awaited
    /// on the runtime through `handle`. Returns the rows decoded.
    pub fn decode(
        &self,
        handle: &tokio::runtime::Handle,
        (reader, metadata): (StoreFileReader, ArrowReaderMetadata),
        mut on_batch: impl FnMut(Batch) -> Result<()>,
    ) -> Result<u64> {
        let derr = |e: &dyn std::fmt::Display| Error::Decode { file: self.file.to_string(), message: e.to_string() };
        let builder = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, metadata);
        let fields = builder.schema().fields().clone();
        let id_index = fields
            .iter()
            .position(|f| f.name() == self.id_column)
            .ok_or_else(|| derr(&format!("id column {:?} is missing", self.id_column)))?;
        let names: Vec<String> = fields.iter().map(|f| f.name().clone()).collect();
        let bindings = self.signature.bind(self.file, &names, self.id_column)?;
        let groups = builder.metadata().num_row_groups();
        if let Some(g) = self.row_groups.iter().find(|&&g| g >= groups) {
            return Err(derr(&format!("row group {g} does not exist (the file has {groups})")));
        }
        let mut roots: Vec<usize> = bindings.iter().flat_map(|b| b.columns.iter().copied()).collect();
        roots.push(id_index);
        for k in self.keep {
            roots
                .push(names.iter().position(|n| n == k).ok_or_else(|| derr(&format!("kept column {k:?} is missing")))?);
        }
        roots.sort_unstable();
        roots.dedup();
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        let mut stream = builder
            .with_row_groups(self.row_groups.clone())
            .with_projection(mask)
            .with_batch_size(self.batch_size.max(1))
            .build()
            .map_err(|e| derr(&e))?;
        let mut rows = 0u64;
        while let Some(next) = handle.block_on(stream.next()) {
            let rb = next.map_err(|e| derr(&e))?;
            let ids = rb.column_by_name(self.id_column).expect("projected").clone();
            let kept = self.keep.iter().map(|k| rb.column_by_name(k).expect("projected").clone()).collect();
            let inputs = bindings
                .iter()
                .map(|b| interleave(&rb, &fields, b).map_err(|m| derr(&m)))
                .collect::<Result<Vec<_>>>()?;
            rows += rb.num_rows() as u64;
            on_batch(Batch { ids, kept, inputs, rows: rb.num_rows() })?;
        }
        Ok(rows)
    }
}

/// Gathers a binding's columns into one row-major buffer.
fn interleave(
    rb: &RecordBatch,
    fields: &arrow_schema::Fields,
    b: &InputBinding,
) -> std::result::Result<InputData, String> {
    let width = b.columns.len();
    let rows = rb.num_rows();
    let cols: Vec<&ArrayRef> =
        b.columns.iter().map(|&i| rb.column_by_name(fields[i].name()).expect("projected")).collect();
    for &fi in &b.columns {
        if !hourglass_core::model::column_feeds(fields[fi].data_type(), b.dtype) {
            return Err(type_err(&fields[fi], b));
        }
    }
    match b.dtype {
        DType::Int64 => {
            let mut out = vec![0i64; rows * width];
            for (j, (col, &fi)) in cols.iter().zip(&b.columns).enumerate() {
                if col.null_count() > 0 {
                    return Err(format!(
                        "column {:?} has nulls; integer model inputs cannot take missing values",
                        fields[fi].name()
                    ));
                }
                let vals = to_i64(col).ok_or_else(|| type_err(&fields[fi], b))?;
                for (i, v) in vals.into_iter().enumerate() {
                    out[i * width + j] = v;
                }
            }
            Ok(InputData::I64(out))
        }
        _ => {
            // Every column float32 without nulls (the common case): the
            // tensor written row by row, in order, reading the columns'
            // buffers side by side (a row's 39 values come from 39 cache
            // lines that serve the next 15 rows too). No zeroing first, no
            // strided writes across the whole batch.
            let plain: Option<Vec<&[f32]>> = cols
                .iter()
                .map(|c| {
                    c.as_primitive_opt::<Float32Type>().filter(|a| a.null_count() == 0).map(|a| &a.values()[..rows])
                })
                .collect();
            if let Some(plain) = plain {
                let mut out = Vec::with_capacity(rows * width);
                for i in 0..rows {
                    out.extend(plain.iter().map(|c| c[i]));
                }
                return Ok(InputData::F32(out));
            }
            let mut out = vec![0f32; rows * width];
            for (j, (col, &fi)) in cols.iter().zip(&b.columns).enumerate() {
                // Float32, the common case: straight from Arrow's buffer into
                // the tensor's column, no intermediate vector.
                if let Some(a) = col.as_primitive_opt::<Float32Type>() {
                    let slots = out[j..].iter_mut().step_by(width);
                    if a.null_count() == 0 {
                        slots.zip(a.values().iter()).for_each(|(o, v)| *o = *v);
                    } else {
                        slots.zip(a.iter()).for_each(|(o, v)| *o = v.unwrap_or(f32::NAN));
                    }
                    continue;
                }
                let vals = to_f32(col).ok_or_else(|| type_err(&fields[fi], b))?;
                for (i, v) in vals.into_iter().enumerate() {
                    out[i * width + j] = if col.is_null(i) { f32::NAN } else { v };
                }
            }
            Ok(InputData::F32(out))
        }
    }
}

fn type_err(field: &arrow_schema::Field, b: &InputBinding) -> String {
    format!(
        "column {:?} has type {}; model input {:?} takes {}",
        field.name(),
        field.data_type(),
        b.input,
        b.dtype.as_str()
    )
}

macro_rules! convert {
    ($col:expr, $to:ty, $($dt:ident => $t:ty),*) => {
        match $col.data_type() {
            $(DataType::$dt => Some($col.as_primitive::<$t>().values().iter().map(|&v| v as $to).collect()),)*
            DataType::Boolean => Some($col.as_boolean().iter().map(|v| v.unwrap_or(false) as u8 as $to).collect()),
            _ => None,
        }
    };
}

fn to_f32(col: &ArrayRef) -> Option<Vec<f32>> {
    convert!(col, f32, Float32 => Float32Type, Float64 => Float64Type, Int8 => Int8Type, Int16 => Int16Type,
        Int32 => Int32Type, Int64 => Int64Type, UInt8 => UInt8Type, UInt16 => UInt16Type, UInt32 => UInt32Type,
        UInt64 => UInt64Type)
}

fn to_i64(col: &ArrayRef) -> Option<Vec<i64>> {
    convert!(col, i64, Int8 => Int8Type, Int16 => Int16Type, Int32 => Int32Type, Int64 => Int64Type,
        UInt8 => UInt8Type, UInt16 => UInt16Type, UInt32 => UInt32Type)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Float32Array, Float64Array};
    use arrow_schema::{Field, Schema};

    fn batch(b: ArrayRef) -> (RecordBatch, arrow_schema::Fields) {
        let a: ArrayRef = Arc::new(Float32Array::from(vec![1.0, 2.0, 3.0]));
        let schema =
            Schema::new(vec![Field::new("a", DataType::Float32, true), Field::new("b", b.data_type().clone(), true)]);
        let rb = RecordBatch::try_new(Arc::new(schema), vec![a, b]).unwrap();
        let fields = rb.schema().fields().clone();
        (rb, fields)
    }

    #[test]
    fn columns_interleave_row_major_on_both_paths() {
        let binding = InputBinding { input: "x".into(), dtype: DType::Float32, columns: vec![1, 0] };
        // All float32 without nulls: the direct path.
        let (rb, fields) = batch(Arc::new(Float32Array::from(vec![10.0, 20.0, 30.0])));
        let InputData::F32(v) = interleave(&rb, &fields, &binding).unwrap() else { panic!() };
        assert_eq!(v, [10.0, 1.0, 20.0, 2.0, 30.0, 3.0]);
        // A null and another type: the general path, NaN for missing.
        let (rb, fields) = batch(Arc::new(Float64Array::from(vec![Some(10.0), None, Some(30.0)])));
        let InputData::F32(v) = interleave(&rb, &fields, &binding).unwrap() else { panic!() };
        assert_eq!((v[0], v[1], v[3], v[4], v[5]), (10.0, 1.0, 2.0, 30.0, 3.0));
        assert!(v[2].is_nan());
    }
}
