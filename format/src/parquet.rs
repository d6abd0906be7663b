//! Parquet shards: a set of row groups of one file, read through the blob
//! store with ranged reads (the footer, then only the projected column
//! chunks), decoded into batches. Numeric columns of any width become the
//! model's input type; nulls in float inputs become NaN (missing).

use crate::Batch;
use crate::parquet_direct as direct;
use crate::tensor::InputData;
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
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader, RowGroupMetaData};
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
#[derive(Clone)]
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
        Ok(Self::with_size(store, key, meta.size, version))
    }

    /// A file whose size (and version) the caller already knows, from a
    /// listing: no HEAD request.
    pub fn with_size(store: Arc<dyn BlobStore>, key: &str, size: u64, version: Option<&str>) -> Self {
        Self { store, key: key.to_string(), size, version: version.map(String::from) }
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
        let metadata = ArrowReaderMetadata::load_async(&mut reader, ArrowReaderOptions::default())
            .await
            .map_err(|e| parquet_error(file, e))?;
        Ok((reader, metadata))
    }
}

/// A read or decode failure of `file`; a store failure keeps its kind
/// (retryable or not).
fn parquet_error(file: &str, e: parquet::errors::ParquetError) -> Error {
    match e {
        parquet::errors::ParquetError::External(inner) => match inner.downcast::<hourglass_core::Error>() {
            Ok(store_err) => Error::Core(*store_err),
            Err(other) => Error::Decode { file: file.to_string(), message: other.to_string() },
        },
        other => Error::Decode { file: file.to_string(), message: other.to_string() },
    }
}

/// Why a Parquet footer could not be read.
#[derive(Debug)]
pub enum FooterError {
    /// The store failed (its kind says whether a retry can help).
    Store(hourglass_core::Error),
    /// The file is not Parquet, or its footer is corrupt.
    Bad(String),
}

/// A Parquet file's footer (its metadata), read the one way the planner
/// and the worker both read it: the last `FOOTER_PREFETCH_BYTES` first
/// (most footers fit), then the rest of a larger footer. Every read is
/// pinned to `version` when given.
pub async fn read_footer(
    store: &dyn BlobStore,
    key: &str,
    size: u64,
    version: Option<&str>,
) -> std::result::Result<ParquetMetaData, FooterError> {
    let read = |range: Range<u64>| async move {
        hourglass_core::store::read_range_if(store, key, range, version).await.map_err(FooterError::Store)
    };
    if size < 12 {
        return Err(FooterError::Bad("not a parquet file (too small)".into()));
    }
    let tail_len = (FOOTER_PREFETCH_BYTES as u64).min(size);
    let tail = read(size - tail_len..size).await?;
    if tail.len() as u64 != tail_len {
        return Err(FooterError::Bad(format!("the file is shorter than its listed size ({size} bytes)")));
    }
    if &tail[tail.len() - 4..] != b"PAR1" {
        return Err(FooterError::Bad("not a parquet file (no PAR1 footer magic)".into()));
    }
    let meta_len = u32::from_le_bytes(tail[tail.len() - 8..tail.len() - 4].try_into().expect("4 bytes")) as u64;
    if meta_len + 8 > size {
        return Err(FooterError::Bad(format!(
            "corrupt parquet footer (metadata of {meta_len} bytes in a file of {size})"
        )));
    }
    let footer = if meta_len + 8 <= tail_len {
        Bytes::copy_from_slice(&tail[(tail_len - 8 - meta_len) as usize..(tail_len - 8) as usize])
    } else {
        Bytes::from(read(size - 8 - meta_len..size - 8).await?)
    };
    ParquetMetaDataReader::decode_metadata(&footer)
        .map_err(|e| FooterError::Bad(format!("corrupt parquet footer: {e}")))
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
            match read_footer(self.store.as_ref(), &self.key, self.size, self.version.as_deref()).await {
                Ok(meta) => Ok(Arc::new(meta)),
                Err(FooterError::Store(e)) => Err(parquet::errors::ParquetError::External(Box::new(e))),
                Err(FooterError::Bad(m)) => Err(parquet::errors::ParquetError::General(m)),
            }
        }
        .boxed()
    }
}

/// A column chunk's byte range in the file.
fn chunk_range(rg: &RowGroupMetaData, leaf: usize) -> Range<u64> {
    let (start, len) = rg.column(leaf).byte_range();
    start..start + len
}

/// The next row group's chunks are fetched ahead only up to this size
/// (compressed), so a file of huge row groups holds one, not two, per
/// shard in memory.
const PREFETCH_MAX_BYTES: u64 = 64 << 20;

/// Fetches the selected row groups' chunks of `leaves` in order, each in
/// one coalesced read, the next one started as the current one is handed
/// out.
struct RowGroupFetch {
    handle: tokio::runtime::Handle,
    reader: StoreFileReader,
    meta: Arc<ParquetMetaData>,
    leaves: Vec<usize>,
    queue: std::collections::VecDeque<usize>,
    pending: Option<(usize, tokio::task::JoinHandle<parquet::errors::Result<Vec<Bytes>>>)>,
}

impl Drop for RowGroupFetch {
    /// A shard that fails or is cancelled stops its read ahead.
    fn drop(&mut self) {
        if let Some((_, task)) = &self.pending {
            task.abort();
        }
    }
}

impl RowGroupFetch {
    fn start(&mut self, g: usize) {
        let rg = self.meta.row_group(g);
        let ranges: Vec<Range<u64>> = self.leaves.iter().map(|&l| chunk_range(rg, l)).collect();
        let mut reader = self.reader.clone();
        self.pending = Some((g, self.handle.spawn(async move { reader.get_byte_ranges(ranges).await })));
    }

    /// The next row group and its chunks (in `leaves` order), or `None`
    /// after the last.
    fn next(&mut self) -> parquet::errors::Result<Option<(usize, Vec<Bytes>)>> {
        if self.pending.is_none() {
            match self.queue.pop_front() {
                Some(g) => self.start(g),
                None => return Ok(None),
            }
        }
        let (g, task) = self.pending.take().expect("started above");
        let chunks = self.handle.block_on(task).unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
        if let Some(&n) = self.queue.front() {
            let rg = self.meta.row_group(n);
            let bytes: u64 = self.leaves.iter().map(|&l| rg.column(l).byte_range().1).sum();
            if bytes <= PREFETCH_MAX_BYTES {
                self.queue.pop_front();
                self.start(n);
            }
        }
        Ok(Some((g, chunks)))
    }
}

/// Chunks already fetched for the Arrow reader, by exact range; each is
/// handed out once.
#[derive(Clone, Default)]
struct Prefetched(Arc<std::sync::Mutex<Vec<Chunk>>>);

/// A column chunk's range in the file and its bytes.
type Chunk = (Range<u64>, Bytes);

impl Prefetched {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Chunk>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces what is held (a row group's chunks the reader never asked
    /// for are dropped with the next row group).
    fn put(&self, chunks: Vec<Chunk>) {
        *self.lock() = chunks;
    }

    /// All of `ranges`, or `None` (and nothing taken) if any is missing.
    fn take_all(&self, ranges: &[Range<u64>]) -> Option<Vec<Bytes>> {
        let mut held = self.lock();
        let at: Vec<usize> = ranges.iter().map(|r| held.iter().position(|(h, _)| h == r)).collect::<Option<_>>()?;
        let out = at.iter().map(|&i| held[i].1.clone()).collect();
        let mut i = 0;
        held.retain(|_| {
            i += 1;
            !at.contains(&(i - 1))
        });
        Some(out)
    }
}

/// The Arrow reader's view of the file: chunks fetched ahead come from
/// [`Prefetched`], anything else from the store.
struct CachedReader {
    inner: StoreFileReader,
    cache: Prefetched,
}

impl AsyncFileReader for CachedReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        match self.cache.take_all(std::slice::from_ref(&range)) {
            Some(mut b) => futures::future::ready(Ok(b.remove(0))).boxed(),
            None => self.inner.get_bytes(range),
        }
    }

    fn get_byte_ranges(&mut self, ranges: Vec<Range<u64>>) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        match self.cache.take_all(&ranges) {
            Some(b) => futures::future::ready(Ok(b)).boxed(),
            None => self.inner.get_byte_ranges(ranges),
        }
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        self.inner.get_metadata(options)
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
    pub fn decode<E: From<Error>>(
        &self,
        handle: &tokio::runtime::Handle,
        (reader, metadata): (StoreFileReader, ArrowReaderMetadata),
        mut on_batch: impl FnMut(Batch) -> Result<(), E>,
    ) -> Result<u64, E> {
        let derr = |e: &dyn std::fmt::Display| Error::Decode { file: self.file.to_string(), message: e.to_string() };
        let fields = metadata.schema().fields().clone();
        let id_index = fields
            .iter()
            .position(|f| f.name() == self.id_column)
            .ok_or_else(|| derr(&format!("id column {:?} is missing", self.id_column)))?;
        let names: Vec<String> = fields.iter().map(|f| f.name().clone()).collect();
        let bindings = self.signature.bind(self.file, &names, self.id_column).map_err(Error::from)?;
        let groups = metadata.metadata().num_row_groups();
        if let Some(g) = self.row_groups.iter().find(|&&g| g >= groups) {
            return Err(derr(&format!("row group {g} does not exist (the file has {groups})")).into());
        }
        let mut passed = vec![id_index];
        for k in self.keep {
            passed
                .push(names.iter().position(|n| n == k).ok_or_else(|| derr(&format!("kept column {k:?} is missing")))?);
        }
        if let Some(leaves) = self.direct_leaves(&metadata, &bindings) {
            return self.decode_direct(handle, (reader, metadata), passed, leaves, on_batch);
        }
        let builder = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, metadata);
        let mut roots: Vec<usize> = bindings.iter().flat_map(|b| b.columns.iter().copied()).collect();
        roots.extend(passed);
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

    /// The leaf columns of every model input when the whole shard can be
    /// read by [`direct`]: float32 inputs only, each column flat and
    /// numeric, and every selected row group's chunks of them written with
    /// encodings it reads. `None` keeps the Arrow path.
    fn direct_leaves(&self, metadata: &ArrowReaderMetadata, bindings: &[InputBinding]) -> Option<Vec<Vec<usize>>> {
        let fields = metadata.schema().fields();
        let schema = metadata.parquet_schema();
        let leaves = bindings
            .iter()
            .map(|b| {
                (b.dtype == DType::Float32)
                    .then(|| {
                        b.columns
                            .iter()
                            .map(|&f| direct::direct_column(schema, fields[f].name(), fields[f].data_type()))
                            .collect::<Option<Vec<usize>>>()
                    })
                    .flatten()
            })
            .collect::<Option<Vec<_>>>()?;
        let all: Vec<usize> = leaves.iter().flatten().copied().collect();
        let meta = metadata.metadata();
        self.row_groups.iter().all(|&g| direct::row_group_supported(meta.row_group(g), &all)).then_some(leaves)
    }

    /// The direct path: features decoded from pages into the tensors by
    /// [`direct::FeatureReader`]; the id and kept columns, of any type,
    /// through the Arrow reader. Each row group's chunks, both kinds, are
    /// fetched in one read, and the next row group's read is under way
    /// while this one is decoded and scored.
    fn decode_direct<E: From<Error>>(
        &self,
        handle: &tokio::runtime::Handle,
        (reader, metadata): (StoreFileReader, ArrowReaderMetadata),
        mut passed: Vec<usize>,
        leaves: Vec<Vec<usize>>,
        mut on_batch: impl FnMut(Batch) -> Result<(), E>,
    ) -> Result<u64, E> {
        let derr = |e: &dyn std::fmt::Display| Error::Decode { file: self.file.to_string(), message: e.to_string() };
        let meta = metadata.metadata().clone();
        let schema = metadata.parquet_schema();
        passed.sort_unstable();
        passed.dedup();
        let passed_leaves: Vec<usize> =
            (0..schema.num_columns()).filter(|&l| passed.contains(&schema.get_column_root_idx(l))).collect();
        let mask = ProjectionMask::roots(schema, passed);
        let mut features = direct::FeatureReader::new(leaves);
        let feature_leaves = features.distinct_leaves();
        let cache = Prefetched::default();
        let mut fetch = RowGroupFetch {
            handle: handle.clone(),
            reader: reader.clone(),
            meta: meta.clone(),
            leaves: feature_leaves.iter().chain(&passed_leaves).copied().collect(),
            queue: self.row_groups.iter().copied().collect(),
            pending: None,
        };
        let cached = CachedReader { inner: reader, cache: cache.clone() };
        let mut stream = ParquetRecordBatchStreamBuilder::new_with_metadata(cached, metadata)
            .with_row_groups(self.row_groups.clone())
            .with_projection(mask)
            .with_batch_size(self.batch_size.max(1))
            .build()
            .map_err(|e| derr(&e))?;
        let file = self.file;
        let mut load = |features: &mut direct::FeatureReader| -> Result<bool> {
            let Some((g, chunks)) = fetch.next().map_err(|e| parquet_error(file, e))? else { return Ok(false) };
            let (feature_chunks, passed_chunks) = chunks.split_at(feature_leaves.len());
            let rg = meta.row_group(g);
            cache.put(passed_leaves.iter().map(|&l| chunk_range(rg, l)).zip(passed_chunks.iter().cloned()).collect());
            features.load(g, rg, feature_chunks).map_err(|m| derr(&m))?;
            Ok(true)
        };
        let mut rows = 0u64;
        loop {
            // Loaded before the stream asks for the row group's id column,
            // so that comes from the same read.
            if features.rows_loaded() == 0 {
                load(&mut features)?;
            }
            let Some(next) = handle.block_on(stream.next()) else { break };
            let rb = next.map_err(|e| parquet_error(file, e))?;
            let n = rb.num_rows();
            while features.rows_loaded() < n {
                if !load(&mut features)? {
                    return Err(derr(&"the feature columns have fewer rows than the id column").into());
                }
            }
            let inputs = features.take(n).map_err(|m| derr(&m))?;
            let ids = rb.column_by_name(self.id_column).expect("projected").clone();
            let kept = self.keep.iter().map(|k| rb.column_by_name(k).expect("projected").clone()).collect();
            rows += n as u64;
            on_batch(Batch { ids, kept, inputs: inputs.into_iter().map(InputData::F32).collect(), rows: n })?;
        }
        if features.rows_loaded() > 0 || load(&mut features)? {
            return Err(derr(&"the feature columns have more rows than the id column").into());
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
                let mut out = super::empty_tensor(rows * width);
                for i in 0..rows {
                    out.extend(plain.iter().map(|c| c[i]));
                }
                return Ok(InputData::F32(out));
            }
            let mut out = super::tensor_buffer(rows * width);
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

    /// One file's shard decoded: the ids (as strings), the tensor, and
    /// whether the direct path read it.
    fn read_back(path: &std::path::Path, batch_size: usize, width: usize) -> (Vec<String>, Vec<f32>, bool) {
        decode_file(path, batch_size, width).unwrap()
    }

    fn decode_file(path: &std::path::Path, batch_size: usize, width: usize) -> Result<(Vec<String>, Vec<f32>, bool)> {
        let url = hourglass_core::BlobUrl::parse(&path.to_string_lossy()).unwrap();
        let store = hourglass_core::store::open(&url).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let handle = runtime.handle().clone();
        let opened =
            handle.block_on(StoreFileReader::open_with_metadata(store, url.key(), None, "test.parquet")).unwrap();
        let names: Vec<String> = (0..width).map(|i| format!("f{i}")).collect();
        let signature = ModelSignature {
            inputs: vec![hourglass_core::model::TensorSpec {
                name: "x".into(),
                dtype: Some(DType::Float32),
                type_name: "tensor(float)".into(),
                shape: vec![None, Some(width as u64)],
            }],
            outputs: vec![],
            feature_names: std::collections::BTreeMap::from([("x".to_string(), names)]),
        };
        let groups = opened.1.metadata().num_row_groups();
        let shard = ParquetShard {
            file: "test.parquet",
            row_groups: (0..groups).collect(),
            id_column: "id",
            signature: &signature,
            batch_size,
            keep: &[],
        };
        let fields: Vec<String> = opened.1.schema().fields().iter().map(|f| f.name().clone()).collect();
        let bindings = signature.bind("test.parquet", &fields, "id").unwrap();
        let direct = shard.direct_leaves(&opened.1, &bindings).is_some();
        let (mut ids, mut tensor) = (Vec::new(), Vec::new());
        shard.decode(&handle, opened, |b| {
            let InputData::F32(v) = &b.inputs[0] else { panic!("float input") };
            assert_eq!(v.len(), b.rows * width);
            tensor.extend_from_slice(v);
            let strings = arrow_cast_strings(&b.ids);
            ids.extend(strings);
            Ok::<_, Error>(())
        })?;
        Ok((ids, tensor, direct))
    }

    /// A corrupt page on the direct path is an error naming the file, the
    /// row group and the column, not a panic or a wrong value.
    #[test]
    fn a_corrupt_page_on_the_direct_path_names_its_row_group_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("corrupt.parquet");
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("f0", DataType::Float32, false),
        ]));
        let rows = 4_000;
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(arrow_array::Int64Array::from_iter_values(0..rows)),
                Arc::new(Float32Array::from_iter_values((0..rows).map(|r| (r % 13) as f32))),
            ],
        )
        .unwrap();
        let props = parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::UNCOMPRESSED)
            .build();
        let mut w =
            parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema, Some(props)).unwrap();
        w.write(&batch).unwrap();
        let meta = w.close().unwrap();
        let (start, len) = meta.row_group(0).column(1).byte_range();
        // The chunk's last bytes are its last page's dictionary indices
        // (13 values: 4 bits each); all ones is index 15.
        let mut bytes = std::fs::read(&path).unwrap();
        let end = (start + len) as usize;
        bytes[end - 16..end].fill(0xff);
        std::fs::write(&path, bytes).unwrap();
        let err = decode_file(&path, 1_000, 1).unwrap_err().to_string();
        assert!(err.contains("test.parquet") && err.contains("row group 0: column \"f0\""), "{err}");
    }

    fn arrow_cast_strings(a: &ArrayRef) -> Vec<String> {
        match a.data_type() {
            DataType::Int64 => a.as_primitive::<Int64Type>().values().iter().map(|v| v.to_string()).collect(),
            _ => a.as_string::<i32>().iter().map(|v| v.unwrap().to_string()).collect(),
        }
    }

    /// Every page shape the direct reader takes (dictionary and plain,
    /// v1 and v2 pages, byte-stream-split, nulls, several pages and row
    /// groups, batches across row groups, four physical types), and one it
    /// leaves to Arrow, decode to the same tensor as the values written.
    #[test]
    fn direct_reader_matches_the_values_written_on_every_page_shape() {
        use parquet::basic::Encoding;
        use parquet::file::properties::{WriterProperties, WriterVersion};
        use parquet::schema::types::ColumnPath;
        let rows = 5_000usize;
        let dir = tempfile::tempdir().unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("f0", DataType::Float32, true),
            Field::new("other", DataType::Utf8, false),
            Field::new("f1", DataType::Float64, false),
            Field::new("f2", DataType::Int32, true),
            Field::new("f3", DataType::Int64, false),
        ]));
        // Few distinct values in f0/f2 (dictionaries), many in f1/f3.
        let f0: Vec<Option<f32>> = (0..rows).map(|r| (r % 7 != 3).then_some((r % 13) as f32 * 0.5)).collect();
        let f1: Vec<f64> = (0..rows).map(|r| r as f64 * 1.25 - 7.0).collect();
        let f2: Vec<Option<i32>> = (0..rows).map(|r| (r % 11 != 0).then_some((r % 5) as i32 - 2)).collect();
        let f3: Vec<i64> = (0..rows).map(|r| (r as i64) * 3 - 100).collect();
        let mut expected = Vec::with_capacity(rows * 4);
        for r in 0..rows {
            expected.extend([
                f0[r].unwrap_or(f32::NAN),
                f1[r] as f32,
                f2[r].map_or(f32::NAN, |v| v as f32),
                f3[r] as f32,
            ]);
        }
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(arrow_array::StringArray::from_iter_values((0..rows).map(|r| format!("row-{r}")))),
                Arc::new(Float32Array::from(f0)),
                Arc::new(arrow_array::StringArray::from_iter_values((0..rows).map(|r| format!("o{r}")))),
                Arc::new(Float64Array::from(f1)),
                Arc::new(arrow_array::Int32Array::from(f2)),
                Arc::new(arrow_array::Int64Array::from(f3)),
            ],
        )
        .unwrap();
        let base =
            || WriterProperties::builder().set_max_row_group_row_count(Some(1_700)).set_data_page_row_count_limit(300);
        let split = |b: parquet::file::properties::WriterPropertiesBuilder| {
            ["f0", "f1", "f2", "f3"].iter().fold(b.set_dictionary_enabled(false), |b, c| {
                b.set_column_encoding(ColumnPath::from(*c), Encoding::BYTE_STREAM_SPLIT)
            })
        };
        let cases: Vec<(&str, WriterProperties, bool)> = vec![
            ("dictionary, v1 pages, snappy", base().set_compression(parquet::basic::Compression::SNAPPY).build(), true),
            (
                "plain, v2 pages, zstd",
                base()
                    .set_dictionary_enabled(false)
                    .set_encoding(Encoding::PLAIN)
                    .set_writer_version(WriterVersion::PARQUET_2_0)
                    .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
                    .build(),
                true,
            ),
            ("dictionary, v2 pages", base().set_writer_version(WriterVersion::PARQUET_2_0).build(), true),
            (
                "v2 writer defaults without dictionaries: delta-encoded integers (the Arrow path)",
                base().set_dictionary_enabled(false).set_writer_version(WriterVersion::PARQUET_2_0).build(),
                false,
            ),
            ("byte stream split", split(base()).build(), true),
            (
                "delta-encoded integers (the Arrow path)",
                base()
                    .set_dictionary_enabled(false)
                    .set_column_encoding(ColumnPath::from("f3"), Encoding::DELTA_BINARY_PACKED)
                    .build(),
                false,
            ),
        ];
        for (name, props, want_direct) in cases {
            let path = dir.path().join(format!("{}.parquet", name.replace([' ', ',', '(', ')'], "_")));
            let mut w = parquet::arrow::ArrowWriter::try_new(
                std::fs::File::create(&path).unwrap(),
                schema.clone(),
                Some(props),
            )
            .unwrap();
            w.write(&batch).unwrap();
            w.close().unwrap();
            for batch_size in [1_000, 4_096] {
                let (ids, tensor, direct) = read_back(&path, batch_size, 4);
                assert_eq!(direct, want_direct, "{name}: direct path taken");
                assert_eq!(ids.len(), rows, "{name}");
                assert!(ids.iter().enumerate().all(|(r, id)| *id == format!("row-{r}")), "{name}: ids in order");
                assert_eq!(tensor.len(), expected.len(), "{name}");
                for (i, (got, want)) in tensor.iter().zip(&expected).enumerate() {
                    assert!(
                        got == want || (got.is_nan() && want.is_nan()),
                        "{name}, batch {batch_size}: row {} feature {}: {got} != {want}",
                        i / 4,
                        i % 4
                    );
                }
            }
        }
    }
}
