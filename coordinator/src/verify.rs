//! Verification of a finished job against its inputs: every input row has
//! exactly one output row (rows skipped as bad are accounted for), and no
//! output row comes from nowhere. Used by `hourglass demo` and the tests.

use crate::{Error, Result};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type, UInt64Type};
use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;
use bytes::Bytes;
use hourglass_core::ledger::Ledger;
use hourglass_core::store::BlobStore;
use hourglass_core::task::Format;
use hourglass_core::{BlobUrl, store};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Serialize;
use sha2::Digest;
use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VerifyReport {
    pub input_rows: u64,
    pub output_rows: u64,
    /// Input rows with no output row.
    pub missing: u64,
    /// Output rows beyond one per input row.
    pub duplicates: u64,
    /// Output ids that no input row has.
    pub unexpected: u64,
    /// Rows the workers skipped as bad (recorded in `_hourglass/bad/`).
    pub bad_rows: u64,
    /// Done records of another job under the prefix (their outputs are not
    /// counted).
    pub foreign_records: u64,
    /// Outputs whose bytes are not those their done record names (sha256):
    /// written over after the shard was recorded.
    pub altered_outputs: u64,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.duplicates == 0
            && self.unexpected == 0
            && self.missing == self.bad_rows
            && self.foreign_records == 0
            && self.altered_outputs == 0
    }
}

/// Waits for blocking work; a panic in it propagates.
async fn joined<T>(task: tokio::task::JoinHandle<T>) -> T {
    task.await.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// Reads one column of a Parquet object as strings.
pub fn parquet_column_as_strings(body: Bytes, column: &str, what: &str) -> Result<Vec<String>> {
    let bad = |e: &dyn std::fmt::Display| Error::input(what, e);
    let builder = ParquetRecordBatchReaderBuilder::try_new(body).map_err(|e| bad(&e))?;
    let index = builder
        .schema()
        .fields()
        .iter()
        .position(|f| f.name() == column)
        .ok_or_else(|| bad(&format!("no column {column:?}")))?;
    let mask = ProjectionMask::roots(builder.parquet_schema(), [index]);
    let reader = builder.with_projection(mask).with_batch_size(65_536).build().map_err(|e| bad(&e))?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| bad(&e))?;
        push_strings(batch.column(0), &mut out).map_err(|m| bad(&m))?;
    }
    Ok(out)
}

fn push_strings(col: &ArrayRef, out: &mut Vec<String>) -> std::result::Result<(), String> {
    match col.data_type() {
        DataType::Utf8 => out.extend(col.as_string::<i32>().iter().map(|v| v.unwrap_or_default().to_string())),
        DataType::LargeUtf8 => out.extend(col.as_string::<i64>().iter().map(|v| v.unwrap_or_default().to_string())),
        DataType::Int64 => out.extend(col.as_primitive::<Int64Type>().values().iter().map(|v| v.to_string())),
        DataType::Int32 => out.extend(col.as_primitive::<Int32Type>().values().iter().map(|v| v.to_string())),
        DataType::UInt64 => out.extend(col.as_primitive::<UInt64Type>().values().iter().map(|v| v.to_string())),
        other => return Err(format!("id column of type {other} cannot be verified")),
    }
    Ok(())
}

/// How a CSV input file is read: its delimiter, compression, and the
/// columns of a file without a header.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct CsvRead {
    delimiter: u8,
    compression: Option<hourglass_core::task::Compression>,
    no_header_columns: Option<Vec<String>>,
}

impl Default for CsvRead {
    fn default() -> Self {
        CsvRead { delimiter: b',', compression: None, no_header_columns: None }
    }
}

fn decompressed(body: &[u8], c: hourglass_core::task::Compression, what: &str) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    let read = hourglass_format::compression::decoder(c, body).and_then(|mut d| d.read_to_end(&mut out));
    read.map_err(|e| Error::input(what, format!("cannot decompress: {e}")))?;
    Ok(out)
}

fn csv_ids(body: &[u8], id_column: &str, what: &str, how: &CsvRead) -> Result<Vec<String>> {
    let text;
    let body = match how.compression {
        Some(c) => {
            text = decompressed(body, c, what)?;
            &text[..]
        }
        None => body,
    };
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .delimiter(how.delimiter)
        .has_headers(how.no_header_columns.is_none())
        .from_reader(body);
    let index = match &how.no_header_columns {
        Some(columns) => columns.iter().position(|c| c == id_column),
        None => {
            let headers = rdr.byte_headers().map_err(|e| Error::input(what, e))?.clone();
            headers.iter().position(|h| String::from_utf8_lossy(h).trim() == id_column)
        }
    }
    .ok_or_else(|| Error::input(what, format!("no column {id_column:?}")))?;
    let mut out = Vec::new();
    for rec in rdr.byte_records() {
        let rec = rec.map_err(|e| Error::input(what, e))?;
        out.push(String::from_utf8_lossy(rec.get(index).unwrap_or_default()).trim().to_string());
    }
    Ok(out)
}

/// The ids of a JSON-lines output: each line's `id_column`, as text.
fn jsonl_ids(body: &[u8], id_column: &str, what: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (i, line) in body.split(|&b| b == b'\n').enumerate().filter(|(_, l)| !l.is_empty()) {
        let row: serde_json::Value =
            serde_json::from_slice(line).map_err(|e| Error::input(what, format!("line {}: {e}", i + 1)))?;
        out.push(match &row[id_column] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => return Err(Error::input(what, format!("line {}: no {id_column:?}", i + 1))),
            other => other.to_string(),
        });
    }
    Ok(out)
}

async fn input_ids(
    store: &dyn BlobStore,
    url: &BlobUrl,
    format: Format,
    how: CsvRead,
    id_column: &str,
) -> Result<Vec<String>> {
    let body = store.get(url.key()).await?;
    let (what, id) = (url.to_string(), id_column.to_string());
    joined(tokio::task::spawn_blocking(move || match format {
        Format::Csv => csv_ids(&body, &id, &what, &how),
        Format::Parquet => parquet_column_as_strings(body, &id, &what),
    }))
    .await
}

/// The ids of one output object, by its extension.
fn output_ids(body: Bytes, id_column: &str, what: &str) -> Result<Vec<String>> {
    if what.ends_with(".csv") {
        csv_ids(&body, id_column, what, &CsvRead::default())
    } else if what.ends_with(".jsonl") {
        jsonl_ids(&body, id_column, what)
    } else {
        parquet_column_as_strings(body, id_column, what)
    }
}

pub async fn verify(output: &BlobUrl) -> Result<VerifyReport> {
    let ledger = Ledger::new(store::open(output)?, output);
    let job = ledger.read_job().await?.ok_or_else(|| Error::Invalid(format!("no job at {}", ledger.root())))?;
    let id_column = job.spec.id_column.clone();
    let files: BTreeSet<(String, Format, CsvRead)> = job
        .shards
        .iter()
        .map(|s| {
            let how = CsvRead {
                delimiter: s.input.delimiter.unwrap_or(',') as u8,
                compression: s.input.compression,
                no_header_columns: job.spec.csv.no_header.then(|| s.input.columns.clone().unwrap_or_default()),
            };
            (s.input.url.to_string(), s.input.format, how)
        })
        .collect();
    let mut counts: HashMap<String, i64> = HashMap::new();
    let mut input_rows = 0u64;
    for (url, format, how) in files {
        let url = BlobUrl::parse(&url)?;
        let s = store::open(&url)?;
        for id in input_ids(s.as_ref(), &url, format, how, &id_column).await? {
            input_rows += 1;
            *counts.entry(id).or_default() += 1;
        }
    }
    let mut output_rows = 0u64;
    let mut unexpected = 0u64;
    let mut bad_rows = 0u64;
    let (mut foreign_records, mut altered_outputs) = (0u64, 0u64);
    for done in ledger.done_records().await? {
        if done.job != job.job {
            foreign_records += 1;
            continue;
        }
        bad_rows += done.bad_rows;
        let body = ledger.store().get(done.output.key()).await?;
        if hex::encode(sha2::Sha256::digest(&body)) != done.sha256 {
            altered_outputs += 1;
        }
        let (what, id) = (done.output.to_string(), id_column.clone());
        let ids = joined(tokio::task::spawn_blocking(move || output_ids(body, &id, &what))).await?;
        for id in ids {
            output_rows += 1;
            match counts.get_mut(&id) {
                Some(c) => *c -= 1,
                None => unexpected += 1,
            }
        }
    }
    let missing = counts.values().filter(|&&c| c > 0).map(|&c| c as u64).sum();
    let duplicates = counts.values().filter(|&&c| c < 0).map(|&c| (-c) as u64).sum();
    Ok(VerifyReport {
        input_rows,
        output_rows,
        missing,
        duplicates,
        unexpected,
        bad_rows,
        foreign_records,
        altered_outputs,
    })
}
