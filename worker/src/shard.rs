//! One shard, start to finish on a CPU pool thread: stream the input range,
//! decode batches, score them, encode the output. IO is awaited on the
//! runtime through a handle, so this thread never blocks the runtime and
//! memory is bounded by a batch plus the (small) encoded output.

use crate::{Error, Result};
use arrow_schema::DataType;
use bytes::Bytes;
use futures::StreamExt;
use hourglass_core::store::{self, BlobStore, ByteStream};
use hourglass_core::task::{Format, ShardTask};
use hourglass_format::Batch;
use hourglass_format::csv::{BadRow, CsvError, CsvShard};
use hourglass_format::output::{OutputWriter, schema_for};
use hourglass_format::parquet::{ParquetShard, StoreFileReader};
use hourglass_runtime::pool::CpuPool;
use hourglass_runtime::{InputData, ModelRuntime, OutputColumn};
use parquet::arrow::arrow_reader::ArrowReaderMetadata;
use prometheus_client::metrics::histogram::Histogram;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// What a scored shard produced, ready to be written.
#[derive(Debug)]
pub struct ShardOutcome {
    pub output: Vec<u8>,
    pub rows: u64,
    /// Skipped rows as CSV (`line,column,reason,row`), if any were skipped.
    pub bad_rows_csv: Option<Vec<u8>>,
    pub bad_rows: u64,
    pub seconds: f64,
}

#[derive(Clone)]
pub struct ShardJob {
    pub task: ShardTask,
    pub model: Arc<ModelRuntime>,
    pub batch_size: usize,
    /// Set when the worker gives the shard up (drain timeout): stop early.
    pub cancel: CancellationToken,
    /// Fault injection for tests: sleep this long before scoring each batch,
    /// so a shard is reliably in progress when a test kills the worker.
    pub fault_batch_delay: Duration,
    /// Read and decode only: no scoring, no output (`hourglass bench`'s
    /// decode stage). The outcome's output is empty.
    pub decode_only: bool,
    /// Observes each ONNX Runtime call's seconds.
    pub inference_seconds: Option<Histogram>,
    /// The pool the shard runs on: while one of its threads idles (no
    /// other shard waiting), half of each batch is scored there.
    pub pool: Option<CpuPool>,
}

/// A batch is split with an idle pool thread only when each half has at
/// least this many rows (smaller runs cost more in ONNX Runtime call
/// overhead than they gain).
const MIN_SPLIT_ROWS: usize = 1024;

/// `inputs` (row-major, `rows` rows each) cut after row `at`.
fn split_inputs(inputs: Vec<InputData>, rows: usize, at: usize) -> (Vec<InputData>, Vec<InputData>) {
    inputs
        .into_iter()
        .map(|i| {
            let width = i.len() / rows.max(1);
            match i {
                InputData::F32(mut v) => {
                    let tail = v.split_off(at * width);
                    (InputData::F32(v), InputData::F32(tail))
                }
                InputData::I64(mut v) => {
                    let tail = v.split_off(at * width);
                    (InputData::I64(v), InputData::I64(tail))
                }
            }
        })
        .unzip()
}

/// Scores `first` here and `second` on another pool thread at once, and
/// returns both results. A fork-join that cannot deadlock: if no pool
/// thread has taken `second` by the time `first` is done, it is scored
/// here too.
fn run_split(
    pool: &CpuPool,
    model: &Arc<ModelRuntime>,
    (first, first_rows): (Vec<InputData>, usize),
    (second, second_rows): (Vec<InputData>, usize),
) -> Result<(Vec<OutputColumn>, Vec<OutputColumn>)> {
    let slot = Arc::new(Mutex::new(Some(second)));
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let (slot, model) = (slot.clone(), model.clone());
        pool.spawn(move || {
            let taken = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(inputs) = taken {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.run(&inputs, second_rows)));
                let _ = tx.send(r);
            }
        });
    }
    let a = model.run(&first, first_rows);
    let not_taken = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
    let b = match not_taken {
        Some(inputs) => model.run(&inputs, second_rows),
        None => match rx.recv().expect("the helper sends once it has taken the work") {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        },
    };
    Ok((a?, b?))
}

/// A shard's input, opened on the runtime before a pool thread takes the
/// shard (while it waits its turn, leased ahead): the CSV range's GET under
/// way, or the Parquet footer read. The thread then starts decoding at
/// once instead of idling through a round trip.
pub enum OpenedInput {
    /// The store is kept for the rare second read (line numbers of bad rows).
    Csv(Arc<dyn BlobStore>, ByteStream),
    Parquet(StoreFileReader, ArrowReaderMetadata),
}

impl OpenedInput {
    pub async fn open(task: &ShardTask) -> Result<Self> {
        let url = &task.input.url;
        let store = store::open(url)?;
        match task.input.format {
            Format::Csv => {
                let [start, end] = task.input.range.unwrap_or_default();
                let stream = store.get_range_if(url.key(), start..end, task.input.version.as_deref()).await?;
                Ok(Self::Csv(store, stream))
            }
            Format::Parquet => {
                let (reader, metadata) = StoreFileReader::open_with_metadata(
                    store,
                    url.key(),
                    task.input.version.as_deref(),
                    &url.to_string(),
                )
                .await?;
                Ok(Self::Parquet(reader, metadata))
            }
        }
    }
}

/// Adapts a byte stream to `std::io::Read` for the CSV reader. Store errors
/// are kept aside so their kind (retryable or not) survives the `io::Error`.
struct StreamReader<'h> {
    handle: &'h Handle,
    stream: ByteStream,
    chunk: Bytes,
    error: Arc<Mutex<Option<hourglass_core::Error>>>,
}

impl Read for StreamReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.handle.block_on(self.stream.next()) {
                None => return Ok(0),
                Some(Ok(b)) => self.chunk = b,
                Some(Err(e)) => {
                    let msg = e.to_string();
                    *self.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    return Err(std::io::Error::other(msg));
                }
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk = self.chunk.slice(n..);
        Ok(n)
    }
}

/// Raw row text a shard's bad-rows file holds at most; rows past it are
/// listed with line, column and reason only.
pub const MAX_BAD_ROWS_FILE_BYTES: usize = 1 << 20;

/// Lines before byte `offset` of the file: the shard's first line is this
/// plus one. Only computed when a row is bad, so planning never has to read
/// whole files to know line numbers.
fn lines_before(handle: &Handle, store: &dyn BlobStore, key: &str, offset: u64) -> Result<u64> {
    handle.block_on(async {
        let mut stream = store.get_range(key, 0..offset).await?;
        let mut n = 0u64;
        while let Some(chunk) = stream.next().await {
            n += chunk?.iter().filter(|&&b| b == b'\n').count() as u64;
        }
        Ok(n)
    })
}

/// The kept columns of a file with `columns`, as indices in input order:
/// every column but the id for `keep_all`, else those named (the id, which
/// is always written first, is not repeated). A named column the file does
/// not have fails the shard (the planner refuses such a job up front).
pub fn kept_columns(task: &ShardTask, columns: &[String], file: &str) -> Result<Vec<usize>> {
    let mut keep: Vec<usize> = if task.keep_all {
        (0..columns.len()).filter(|&i| columns[i] != task.id_column).collect()
    } else {
        let mut keep = Vec::with_capacity(task.keep_columns.len());
        for name in task.keep_columns.iter().filter(|n| **n != task.id_column) {
            let i = columns.iter().position(|c| c == name).ok_or_else(|| Error::Decode {
                file: file.to_string(),
                message: format!("kept column {name:?} is missing"),
            })?;
            keep.push(i);
        }
        keep
    };
    keep.sort_unstable();
    keep.dedup();
    Ok(keep)
}

/// The shard's CSV text: the range as read, decompressed when the file is
/// compressed, without the header line when it must be skipped.
fn csv_text<'r>(task: &ShardTask, reader: StreamReader<'r>) -> std::io::Result<Box<dyn Read + 'r>> {
    let raw: Box<dyn Read + 'r> = match task.input.compression {
        None => Box::new(reader),
        Some(c) => hourglass_format::compression::decoder(c, reader)?,
    };
    if !task.input.skip_header {
        return Ok(raw);
    }
    let mut buffered = std::io::BufReader::with_capacity(1 << 16, raw);
    let mut header = Vec::new();
    std::io::BufRead::read_until(&mut buffered, b'\n', &mut header)?;
    Ok(Box::new(buffered))
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

/// Scores one shard. Runs on a CPU pool thread, never on the runtime.
/// `input` is the shard's input opened ahead; `None` opens it here.
pub fn score_shard(handle: &Handle, job: &ShardJob, input: Option<OpenedInput>) -> Result<ShardOutcome> {
    let started = Instant::now();
    let input = match input {
        Some(i) => i,
        None => handle.block_on(OpenedInput::open(&job.task))?,
    };
    let task = &job.task;
    let url = &task.input.url;
    let file = url.to_string();
    let key = url.key().to_string();
    let model = &job.model;
    let mut rows = 0u64;
    let mut score = |writer: &mut OutputWriter, batch: Batch| -> Result<()> {
        if job.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        if !job.fault_batch_delay.is_zero() {
            #[allow(clippy::disallowed_methods)] // A pool thread, slowed on purpose (tests only).
            std::thread::sleep(job.fault_batch_delay);
        }
        if job.decode_only {
            rows += batch.rows as u64;
            return Ok(());
        }
        let t = Instant::now();
        let helper = job
            .pool
            .as_ref()
            .filter(|p| batch.rows >= 2 * MIN_SPLIT_ROWS && model.sessions() > 1 && p.has_idle_thread());
        rows += batch.rows as u64;
        let Some(pool) = helper else {
            let columns = model.run(&batch.inputs, batch.rows)?;
            if let Some(h) = &job.inference_seconds {
                h.observe(t.elapsed().as_secs_f64());
            }
            hourglass_format::recycle(batch.inputs);
            return Ok(writer.write(batch.ids, batch.kept, columns)?);
        };
        // The last shards of a job leave pool threads idle: they score
        // half of each batch, in order, so the shard ends sooner.
        let n = batch.rows;
        let at = n - n / 2;
        let (first, second) = split_inputs(batch.inputs, n, at);
        let (a, b) = run_split(pool, model, (first, at), (second, n - at))?;
        if let Some(h) = &job.inference_seconds {
            h.observe(t.elapsed().as_secs_f64());
        }
        writer.write(batch.ids.slice(0, at), batch.kept.iter().map(|k| k.slice(0, at)).collect(), a)?;
        Ok(writer.write(batch.ids.slice(at, n - at), batch.kept.iter().map(|k| k.slice(at, n - at)).collect(), b)?)
    };
    let (writer, bad) = match input {
        OpenedInput::Csv(store, stream) => {
            let columns = task.input.columns.as_deref().unwrap_or_default();
            let [start, _] = task.input.range.unwrap_or_default();
            let bindings = model.signature().bind(&file, columns, &task.id_column)?;
            let id_column = columns.iter().position(|c| *c == task.id_column).expect("bind checks the id column");
            let keep = kept_columns(task, columns, &file)?;
            let kept: Vec<(String, DataType)> = keep.iter().map(|&i| (columns[i].clone(), DataType::Utf8)).collect();
            let mut writer = OutputWriter::new(
                task.shard.as_str(),
                &task.id_column,
                kept.iter().map(|(n, _)| n.clone()).collect(),
                task.output_format,
                schema_for(&task.id_column, DataType::Utf8, &kept, &model.signature().outputs),
            );
            let error = Arc::new(Mutex::new(None));
            let reader = StreamReader { handle, stream, chunk: Bytes::new(), error: error.clone() };
            let decoder = CsvShard {
                columns,
                id_column,
                bindings: &bindings,
                batch_size: job.batch_size,
                max_bad_rows: task.max_bad_rows,
                max_line_bytes: task.max_line_bytes,
                delimiter: task.input.delimiter.unwrap_or(',') as u8,
                keep: &keep,
            };
            // Lines before the shard's first: counted in the file up to the
            // range's start, only when a row is bad (a compressed file is
            // one shard: its header line, if any).
            let compressed = task.input.compression.is_some();
            let lines_before = |handle: &Handle| -> Result<u64> {
                if compressed {
                    Ok(task.input.skip_header as u64)
                } else {
                    lines_before(handle, store.as_ref(), &key, start)
                }
            };
            let result = match csv_text(task, reader) {
                Ok(text) => decoder.decode(text, |b| score(&mut writer, b)),
                Err(e) => Err(CsvError::Other(Error::Decode { file: String::new(), message: e.to_string() })),
            };
            match result {
                Ok(bad) => {
                    let base = if bad.is_empty() { 0 } else { lines_before(handle)? };
                    (writer, bad.into_iter().map(|r| (base + r.line_in_shard, r)).collect::<Vec<(u64, BadRow)>>())
                }
                Err(CsvError::TooManyBadRows { row, .. }) => {
                    let base = lines_before(handle)?;
                    return Err(Error::BadRow {
                        file,
                        line: base + row.line_in_shard,
                        column: row.column,
                        message: row.message,
                    });
                }
                Err(CsvError::LineTooLong { line_in_shard }) => {
                    let base = lines_before(handle)?;
                    return Err(Error::BadRow {
                        file,
                        line: base + line_in_shard,
                        column: None,
                        message: format!(
                            "no line end within {} bytes (the job's max line length): a runaway line, or CR-only line endings",
                            task.max_line_bytes
                        ),
                    });
                }
                Err(CsvError::Other(e)) => {
                    if let Some(store_err) = error.lock().unwrap_or_else(|p| p.into_inner()).take() {
                        return Err(store_err.into());
                    }
                    return Err(match e {
                        Error::Decode { message, .. } => Error::Decode { file, message },
                        other => other,
                    });
                }
            }
        }
        OpenedInput::Parquet(reader, metadata) => {
            let names: Vec<String> = metadata.schema().fields().iter().map(|f| f.name().clone()).collect();
            let keep: Vec<String> = kept_columns(task, &names, &file)?.into_iter().map(|i| names[i].clone()).collect();
            let mut writer =
                OutputWriter::new(task.shard.as_str(), &task.id_column, keep.clone(), task.output_format, None);
            let decoder = ParquetShard {
                file: &file,
                row_groups: task.input.row_groups.clone().unwrap_or_default(),
                id_column: &task.id_column,
                signature: model.signature(),
                batch_size: job.batch_size,
                keep: &keep,
            };
            decoder.decode(handle, (reader, metadata), |b| score(&mut writer, b))?;
            (writer, Vec::new())
        }
    };
    let output = if job.decode_only { Vec::new() } else { writer.finish()? };
    let bad_rows_csv = (!bad.is_empty()).then(|| {
        let mut out = String::from("line,column,reason,row\n");
        for (line, r) in &bad {
            // Past the cap every row is still listed, without its text.
            let raw = if out.len() < MAX_BAD_ROWS_FILE_BYTES { csv_field(&r.raw) } else { String::new() };
            out.push_str(&format!(
                "{line},{},{},{raw}\n",
                csv_field(r.column.as_deref().unwrap_or("")),
                csv_field(&r.message),
            ));
        }
        out.into_bytes()
    });
    Ok(ShardOutcome {
        output,
        rows,
        bad_rows: bad.len() as u64,
        bad_rows_csv,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hourglass_runtime::RuntimeOptions;

    /// A batch split with a helper scores exactly as the whole batch does,
    /// whether another pool thread takes the second half or, with none
    /// free, the splitting thread scores it itself (no deadlock).
    #[test]
    fn a_split_batch_scores_as_the_whole_one_with_or_without_a_free_thread() {
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/ctr_mlp.onnx");
        let options = RuntimeOptions::new(1, 2, &Default::default());
        let model = Arc::new(ModelRuntime::load_file(&path, options).unwrap());
        let (rows, width) = (3001, 39);
        let features: Vec<f32> = (0..rows * width).map(|i| ((i * 7919) % 1000) as f32 / 10.0).collect();
        let whole = model.run(&[InputData::F32(features.clone())], rows).unwrap();
        for threads in [1, 2] {
            let pool = CpuPool::new(threads);
            let (model, features, task_pool) = (model.clone(), features.clone(), pool.clone());
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let (a, b) = runtime
                .block_on(pool.run(move || {
                    let at = rows - rows / 2;
                    let (first, second) = split_inputs(vec![InputData::F32(features)], rows, at);
                    run_split(&task_pool, &model, (first, at), (second, rows - at)).unwrap()
                }))
                .clone();
            let floats = |c: &OutputColumn| match &c.data {
                hourglass_runtime::ColumnData::F32(v) => v.clone(),
                other => panic!("{} is not float32: {other:?}", c.name),
            };
            assert_eq!(whole.len(), a.len());
            for (w, (a, b)) in whole.iter().zip(a.iter().zip(&b)) {
                let joined: Vec<f32> = floats(a).into_iter().chain(floats(b)).collect();
                let want = floats(w);
                assert_eq!(joined.len(), want.len(), "{}", w.name);
                // ONNX Runtime's kernels block by batch size: the last bits
                // may differ, as between any two batch sizes.
                let worst = joined.iter().zip(&want).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
                assert!(worst < 1e-5, "{} with {threads} pool threads: off by {worst}", w.name);
            }
        }
    }
}
