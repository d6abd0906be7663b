//! Planning: list the inputs, read each file's schema, check it against the
//! model, and cut shards. Everything is checked before anything is enqueued.
//!
//! CSV files are cut into byte ranges aligned to line starts: boundaries sit
//! just after a newline, the header line belongs to no shard, so every data
//! line lands in exactly one shard. Finding a boundary reads a small window
//! at each cut point, never the whole file. Parquet files are cut at row
//! group boundaries.

use crate::{Error, Result};
use futures::TryStreamExt;
use hourglass_core::BlobUrl;
use hourglass_core::ShardId;
use hourglass_core::ledger::ShardPlan;
use hourglass_core::ledger::{CsvOptions, JobSpec};
use hourglass_core::model::{InputBinding, ModelSignature};
use hourglass_core::store::{BlobStore, ObjectMeta, read_range};
use hourglass_core::task::{Compression, Format, OutputFormat, ShardInput};
// The line-ending rule and its message are the worker's.
use hourglass_format::lines::{STRAY_CR as CR_HINT, stray_cr};
use hourglass_format::parquet::FooterError;
use parquet::arrow::parquet_to_arrow_schema;

/// Bytes read per probe when looking for a line end or a header.
const PROBE_BYTES: u64 = 64 * 1024;
/// Data rows of each CSV file checked for numbers at plan time.
const SAMPLE_ROWS: usize = 100;
pub use hourglass_core::task::DEFAULT_MAX_LINE_BYTES;

#[derive(Debug, Clone)]
pub struct InputFile {
    pub url: BlobUrl,
    pub size: u64,
    pub format: Format,
    /// `ObjectMeta::version`: shards pin it.
    pub version: String,
    /// What the name says (`.gz`, `.zst`); the first bytes decide.
    pub compression: Option<Compression>,
}

/// How a job reads its files and what its outputs hold, as far as the
/// plan checks them.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    pub csv: CsvOptions,
    pub keep_columns: Vec<String>,
    pub keep_all: bool,
    pub output_format: OutputFormat,
}

impl ReadOptions {
    pub fn of(spec: &JobSpec) -> Self {
        ReadOptions {
            csv: spec.csv.clone(),
            keep_columns: spec.keep_columns.clone(),
            keep_all: spec.keep_all,
            output_format: spec.output_format,
        }
    }
}

/// Bytes of a compressed file read at plan time for its header and sample,
/// and the most decompressed text taken from them.
const COMPRESSED_PROBE_BYTES: u64 = 256 * 1024;
const DECOMPRESSED_PROBE_BYTES: usize = 1 << 20;

/// Lists the input: one file, or every CSV/Parquet file under a prefix
/// (names starting with `_` or `.` are skipped, like Spark's markers).
pub async fn list_inputs(store: &dyn BlobStore, input: &BlobUrl, format: Option<Format>) -> Result<Vec<InputFile>> {
    let pick = |meta: &ObjectMeta| -> Option<InputFile> {
        let url = input.with_key(meta.key.clone());
        let name = url.file_name().to_string();
        if name.starts_with('_') || name.starts_with('.') {
            return None;
        }
        let fmt = Format::from_file_name(&name).or(format)?;
        if format.is_some_and(|f| f != fmt) {
            return None;
        }
        let compression = if fmt == Format::Csv { Compression::from_file_name(&name) } else { None };
        Some(InputFile { url, size: meta.size, format: fmt, version: meta.version.clone(), compression })
    };
    if !input.key().ends_with('/') {
        match store.head(input.key()).await {
            Ok(meta) => {
                let file = pick(&meta).ok_or_else(|| {
                    Error::input(
                        input,
                        "not a .csv, .tsv (optionally .gz or .zst) or .parquet file; name the format with --format",
                    )
                })?;
                return Ok(vec![file]);
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    let prefix = input.as_prefix();
    let files: Vec<InputFile> =
        store.list(prefix.key()).map_ok(|m| pick(&m)).try_collect::<Vec<_>>().await?.into_iter().flatten().collect();
    if files.is_empty() {
        return Err(Error::input(input, "no .csv, .tsv or .parquet files found (.csv and .tsv may be .gz or .zst)"));
    }
    Ok(files)
}

/// One checked file: its columns and how they bind to the model.
#[derive(Debug, Clone)]
pub struct CheckedFile {
    pub file: InputFile,
    pub columns: Vec<String>,
    pub bindings: Vec<InputBinding>,
    /// CSV: where the first data line starts.
    pub data_start: u64,
    /// CSV: average bytes per line in the sample, for row estimates.
    pub bytes_per_row: f64,
    /// Parquet: rows and compressed bytes per row group.
    pub row_groups: Vec<(u64, u64)>,
    /// CSV: the field delimiter.
    pub delimiter: char,
    /// CSV: the file is compressed (one shard), by its first bytes.
    pub compression: Option<Compression>,
    /// CSV: the file starts with a header line.
    pub header: bool,
    /// A compressed CSV's estimated rows (its text size is not known).
    pub rows_estimate: u64,
    /// Why the file holds no rows (empty, header only, no rows in its row
    /// groups): it gets no shard and is recorded as skipped.
    pub skip: Option<String>,
}

impl CheckedFile {
    fn skipped(file: &InputFile, reason: &str) -> Self {
        CheckedFile {
            file: file.clone(),
            columns: vec![],
            bindings: vec![],
            data_start: 0,
            bytes_per_row: 0.0,
            row_groups: vec![],
            delimiter: ',',
            compression: None,
            header: true,
            rows_estimate: 0,
            skip: Some(reason.to_string()),
        }
    }
}

/// Reads a file's schema and checks it against the model. CSV lines may be
/// at most `max_line_bytes` long.
pub async fn check_file(
    store: &dyn BlobStore,
    file: &InputFile,
    signature: &ModelSignature,
    id_column: &str,
    max_line_bytes: u64,
    opts: &ReadOptions,
) -> Result<CheckedFile> {
    match file.format {
        Format::Csv => check_csv(store, file, signature, id_column, max_line_bytes, opts).await,
        Format::Parquet => check_parquet(store, file, signature, id_column, opts).await,
    }
}

/// The kept columns a file gives the output, checked: each named one is
/// there, none takes a model output's name, and each can be written in the
/// output format (`types`: the file's column types; CSV columns are text).
fn check_kept(
    url: &BlobUrl,
    columns: &[String],
    types: Option<&[arrow_schema::DataType]>,
    signature: &ModelSignature,
    id_column: &str,
    opts: &ReadOptions,
) -> Result<()> {
    let kept: Vec<usize> = if opts.keep_all {
        (0..columns.len()).filter(|&i| columns[i] != id_column).collect()
    } else {
        let mut kept = Vec::new();
        for name in opts.keep_columns.iter().filter(|n| *n != id_column) {
            match columns.iter().position(|c| c == name) {
                Some(i) => kept.push(i),
                None => {
                    return Err(Error::input(
                        url,
                        format!("kept column {name:?} (--keep-columns) is missing (columns: {})", preview(columns)),
                    ));
                }
            }
        }
        kept
    };
    let mut outputs: Vec<String> = Vec::new();
    for o in &signature.outputs {
        match o.width() {
            Some(k) if k > 1 => outputs.extend((0..k).map(|j| format!("{}_{j}", o.name))),
            _ => outputs.push(o.name.clone()),
        }
    }
    for &i in &kept {
        let name = &columns[i];
        if outputs.contains(name) {
            return Err(Error::input(
                url,
                format!("kept column {name:?} has the name of a model output column; leave it out of the kept columns"),
            ));
        }
        if let Some(t) = types.and_then(|t| t.get(i))
            && !opts.output_format.is_parquet()
            && !hourglass_core::model::text_writable(t)
        {
            return Err(Error::input(
                url,
                format!(
                    "kept column {name:?} has type {t}, which {} output cannot write; use --output-format parquet",
                    opts.output_format
                ),
            ));
        }
    }
    Ok(())
}

fn preview(columns: &[String]) -> String {
    let mut s = columns.iter().take(8).map(|c| format!("{c:?}")).collect::<Vec<_>>().join(", ");
    if columns.len() > 8 {
        s.push_str(&format!(", … {} in all", columns.len()));
    }
    s
}

/// The header-less file's columns, as the job names them.
fn given_columns(url: &BlobUrl, opts: &ReadOptions) -> Result<Vec<String>> {
    let columns = opts.csv.columns.clone();
    if columns.is_empty() {
        return Err(Error::input(url, "--no-header needs the files' column names (--columns)"));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(c) = columns.iter().find(|c| !seen.insert(*c)) {
        return Err(Error::input(url, format!("column {c:?} appears twice in --columns")));
    }
    Ok(columns)
}

/// Checks the first data rows of `sample` (whole lines up to `complete`)
/// against the columns and the model: field counts, UTF-8 ids, numbers
/// where the model wants them. `lines_before` is 1 after a header line.
/// Returns the rows checked and the bytes they took.
#[allow(clippy::too_many_arguments)]
fn check_sample(
    url: &BlobUrl,
    sample: &[u8],
    complete: usize,
    lines_before: u64,
    columns: &[String],
    bindings: &[InputBinding],
    id_column: &str,
    delimiter: u8,
) -> Result<(usize, u64)> {
    // The csv crate takes a lone CR as a line end, so look at raw lines:
    // the workers split at `\n` only.
    for (i, raw) in sample[..complete].split(|&b| b == b'\n').take(SAMPLE_ROWS).enumerate() {
        if stray_cr(raw) {
            return Err(Error::input(url, format!("line {}: {CR_HINT}", i as u64 + 1 + lines_before)));
        }
    }
    let mut rdr = csv::ReaderBuilder::new().has_headers(false).flexible(true).delimiter(delimiter).from_reader(sample);
    let mut rec = csv::ByteRecord::new();
    let mut rows = 0usize;
    let mut sampled_bytes = 0u64;
    let id_index = columns.iter().position(|c| c == id_column).expect("bind checks the id column");
    while rows < SAMPLE_ROWS {
        match rdr.read_byte_record(&mut rec) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(Error::input(url, e)),
        }
        let pos = rec.position().expect("records have positions");
        if pos.byte() as usize >= complete {
            break;
        }
        let line = pos.line() + lines_before;
        if rec.len() != columns.len() {
            let hint = if rec.len() == 1 && columns.len() > 1 {
                format!("; is the delimiter {:?}? (--delimiter)", delimiter as char)
            } else {
                String::new()
            };
            return Err(Error::input(
                url,
                format!("line {line}: expected {} fields, found {}{hint}", columns.len(), rec.len()),
            ));
        }
        if std::str::from_utf8(&rec[id_index]).is_err() {
            return Err(Error::input(
                url,
                format!("line {line}, column {id_column:?}: the id is not valid UTF-8 (ids must be text)"),
            ));
        }
        for b in bindings {
            for &c in &b.columns {
                // The worker's number grammar (`hourglass_format::number`).
                if let Err(e) = hourglass_format::number::check(&rec[c], b.dtype) {
                    return Err(Error::input(
                        url,
                        format!(
                            "line {line}, column {} ({:?}): {e}; model input {:?} takes {}",
                            c + 1,
                            columns[c],
                            b.input,
                            b.dtype.as_str()
                        ),
                    ));
                }
            }
        }
        rows += 1;
        sampled_bytes = rdr.position().byte();
    }
    Ok((rows, sampled_bytes))
}

async fn check_csv(
    store: &dyn BlobStore,
    file: &InputFile,
    signature: &ModelSignature,
    id_column: &str,
    max_line_bytes: u64,
    opts: &ReadOptions,
) -> Result<CheckedFile> {
    let key = file.url.key();
    if file.size == 0 {
        return Ok(CheckedFile::skipped(file, "empty file (0 bytes)"));
    }
    let delimiter = opts.csv.delimiter_for(&file.url);
    let head = read_range(store, key, 0..PROBE_BYTES.min(file.size)).await?;
    match (Compression::from_magic(&head), file.compression) {
        (Some(c), _) => {
            return check_compressed_csv(store, file, c, signature, id_column, max_line_bytes, opts).await;
        }
        (None, Some(named)) => {
            return Err(Error::input(
                &file.url,
                format!("the name says {named}, but the file does not start like {named} data"),
            ));
        }
        (None, None) => {}
    }
    let (header_end, columns) = if opts.csv.no_header {
        (0, given_columns(&file.url, opts)?)
    } else {
        let header_end = match next_line_start(store, key, file.size, 0, PROBE_BYTES, max_line_bytes).await? {
            Some(end) => end,
            // One line and no newline: a header without rows, or rows that
            // never end in `\n`.
            None if file.size <= max_line_bytes => file.size,
            None => {
                return Err(Error::input(
                    &file.url,
                    format!(
                        "line 1: no line end within the first {max_line_bytes} bytes (--max-line-bytes){}",
                        if memchr::memchr(b'\r', &head).is_some() { format!("; {CR_HINT}") } else { String::new() }
                    ),
                ));
            }
        };
        let header_bytes = if header_end as usize <= head.len() {
            head[..header_end as usize].to_vec()
        } else {
            read_range(store, key, 0..header_end).await?
        };
        if stray_cr(&header_bytes) {
            return Err(Error::input(&file.url, format!("line 1: {CR_HINT}")));
        }
        let columns = parse_header(&header_bytes, delimiter as u8)
            .map_err(|m| Error::input(&file.url, format!("line 1: {m}")))?;
        (header_end, columns)
    };
    let bindings = signature.bind(&file.url.to_string(), &columns, id_column)?;
    check_kept(&file.url, &columns, None, signature, id_column, opts)?;
    if header_end == file.size
        || head[(header_end as usize).min(head.len())..].iter().all(|b| b.is_ascii_whitespace())
            && head.len() as u64 == file.size
    {
        return Ok(CheckedFile::skipped(
            file,
            if opts.csv.no_header { "no data rows" } else { "no data rows (a header only)" },
        ));
    }
    // Check that the first rows hold numbers where the model wants them.
    let sample = &head[(header_end as usize).min(head.len())..];
    // Only whole lines are checked: the window may end inside one.
    let complete = if head.len() as u64 == file.size {
        sample.len()
    } else {
        sample.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)
    };
    let lines_before = if opts.csv.no_header { 0 } else { 1 };
    let (rows, sampled_bytes) =
        check_sample(&file.url, sample, complete, lines_before, &columns, &bindings, id_column, delimiter as u8)?;
    let bytes_per_row = if rows > 0 { sampled_bytes as f64 / rows as f64 } else { 1.0 };
    Ok(CheckedFile {
        file: file.clone(),
        columns,
        bindings,
        data_start: header_end,
        bytes_per_row,
        row_groups: vec![],
        delimiter,
        compression: None,
        header: !opts.csv.no_header,
        rows_estimate: 0,
        skip: None,
    })
}

/// The text at the start of a compressed file: decompresses `window` (the
/// file's first bytes, or all of it) into at most `limit` bytes. Returns
/// the text and whether it is the whole file's. A window cut mid-stream
/// ends early, which is expected; a whole file that does not decompress is
/// an error.
fn decompress_prefix(
    compression: Compression,
    window: &[u8],
    whole: bool,
    limit: usize,
) -> std::result::Result<(Vec<u8>, bool), String> {
    use std::io::Read;
    let mut decoder = hourglass_format::compression::decoder(compression, window).map_err(|e| e.to_string())?;
    let mut text = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if text.len() >= limit {
            return Ok((text, false));
        }
        match decoder.read(&mut chunk) {
            Ok(0) => return Ok((text, whole)),
            Ok(n) => text.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) if !whole && !text.is_empty() => return Ok((text, false)),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// A compressed CSV file: checked like any other on its first decompressed
/// rows, planned as one shard (a compressed stream cannot be entered at a
/// byte offset), its rows estimated from the sample's compression ratio.
async fn check_compressed_csv(
    store: &dyn BlobStore,
    file: &InputFile,
    compression: Compression,
    signature: &ModelSignature,
    id_column: &str,
    max_line_bytes: u64,
    opts: &ReadOptions,
) -> Result<CheckedFile> {
    let delimiter = opts.csv.delimiter_for(&file.url);
    let window = read_range(store, file.url.key(), 0..COMPRESSED_PROBE_BYTES.min(file.size)).await?;
    let whole = window.len() as u64 == file.size;
    let (text, ended) = decompress_prefix(compression, &window, whole, DECOMPRESSED_PROBE_BYTES)
        .map_err(|e| Error::input(&file.url, format!("cannot decompress ({compression}): {e}")))?;
    if text.is_empty() && ended {
        return Ok(CheckedFile::skipped(file, "empty file (no text once decompressed)"));
    }
    let (header_end, columns) = if opts.csv.no_header {
        (0, given_columns(&file.url, opts)?)
    } else {
        let end = match memchr::memchr(b'\n', &text) {
            Some(i) => i + 1,
            None if ended => text.len(),
            None => {
                return Err(Error::input(
                    &file.url,
                    format!("line 1: no line end within the first {} decompressed bytes", text.len()),
                ));
            }
        };
        if end as u64 > max_line_bytes {
            return Err(Error::input(
                &file.url,
                format!("line 1: longer than {max_line_bytes} bytes (--max-line-bytes)"),
            ));
        }
        if stray_cr(&text[..end]) {
            return Err(Error::input(&file.url, format!("line 1: {CR_HINT}")));
        }
        let columns =
            parse_header(&text[..end], delimiter as u8).map_err(|m| Error::input(&file.url, format!("line 1: {m}")))?;
        (end, columns)
    };
    let bindings = signature.bind(&file.url.to_string(), &columns, id_column)?;
    check_kept(&file.url, &columns, None, signature, id_column, opts)?;
    let sample = &text[header_end..];
    if ended && sample.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(CheckedFile::skipped(
            file,
            if opts.csv.no_header { "no data rows" } else { "no data rows (a header only)" },
        ));
    }
    let complete = if ended { sample.len() } else { sample.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1) };
    let lines_before = if opts.csv.no_header { 0 } else { 1 };
    let (rows, sampled_bytes) =
        check_sample(&file.url, sample, complete, lines_before, &columns, &bindings, id_column, delimiter as u8)?;
    let bytes_per_row = if rows > 0 { sampled_bytes as f64 / rows as f64 } else { 1.0 };
    let rows_estimate = if ended {
        sample.split(|&b| b == b'\n').filter(|l| !l.iter().all(|b| b.is_ascii_whitespace())).count() as u64
    } else {
        // The text the whole file holds, at the window's ratio.
        let ratio = text.len() as f64 / window.len().max(1) as f64;
        (file.size as f64 * ratio / bytes_per_row.max(1.0)).round() as u64
    };
    Ok(CheckedFile {
        file: file.clone(),
        columns,
        bindings,
        data_start: 0,
        bytes_per_row,
        row_groups: vec![],
        delimiter,
        compression: Some(compression),
        header: !opts.csv.no_header,
        rows_estimate,
        skip: None,
    })
}

fn parse_header(bytes: &[u8], delimiter: u8) -> std::result::Result<Vec<String>, String> {
    let mut rdr = csv::ReaderBuilder::new().has_headers(false).delimiter(delimiter).from_reader(bytes);
    let mut rec = csv::StringRecord::new();
    match rdr.read_record(&mut rec) {
        Ok(true) => {}
        Ok(false) => return Err("the file is empty; a header line is required".into()),
        Err(e) => return Err(format!("cannot read the header: {e}")),
    }
    let cols: Vec<String> = rec.iter().map(|c| c.trim().trim_start_matches('\u{feff}').to_string()).collect();
    // One column holding another delimiter: the file is split by that one.
    if let [only] = cols.as_slice()
        && let Some(other) = [',', '\t', ';', '|'].into_iter().find(|&d| d as u8 != delimiter && only.contains(d))
    {
        return Err(format!(
            "the header is one column split by {:?}, not by {:?}: give --delimiter {}",
            other,
            delimiter as char,
            if other == '\t' { "tab".to_string() } else { other.to_string() }
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for c in &cols {
        if !seen.insert(c) {
            return Err(format!("column {c:?} appears twice in the header"));
        }
    }
    Ok(cols)
}

async fn check_parquet(
    store: &dyn BlobStore,
    file: &InputFile,
    signature: &ModelSignature,
    id_column: &str,
    opts: &ReadOptions,
) -> Result<CheckedFile> {
    let key = file.url.key();
    let bad = |m: &dyn std::fmt::Display| Error::input(&file.url, m);
    // The worker's footer reader: what is refused here is what it refuses.
    let meta = match hourglass_format::parquet::read_footer(store, key, file.size, None).await {
        Ok(meta) => meta,
        Err(FooterError::Store(e)) => return Err(e.into()),
        Err(FooterError::Bad(m)) => return Err(bad(&m)),
    };
    let schema = parquet_to_arrow_schema(meta.file_metadata().schema_descr(), None).map_err(|e| bad(&e))?;
    let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let bindings = signature.bind(&file.url.to_string(), &columns, id_column)?;
    for b in &bindings {
        for &c in &b.columns {
            let f = schema.field(c);
            if !hourglass_core::model::column_feeds(f.data_type(), b.dtype) {
                return Err(bad(&format!(
                    "column {:?} has type {}; model input {:?} takes {}",
                    f.name(),
                    f.data_type(),
                    b.input,
                    b.dtype.as_str()
                )));
            }
        }
    }
    let types: Vec<arrow_schema::DataType> = schema.fields().iter().map(|f| f.data_type().clone()).collect();
    check_kept(&file.url, &columns, Some(&types), signature, id_column, opts)?;
    let row_groups: Vec<(u64, u64)> =
        meta.row_groups().iter().map(|rg| (rg.num_rows() as u64, rg.compressed_size() as u64)).collect();
    if row_groups.iter().all(|&(rows, _)| rows == 0) {
        return Ok(CheckedFile::skipped(file, "no rows (every row group is empty)"));
    }
    Ok(CheckedFile {
        file: file.clone(),
        columns,
        bindings,
        data_start: 0,
        bytes_per_row: 0.0,
        row_groups,
        delimiter: ',',
        compression: None,
        header: true,
        rows_estimate: 0,
        skip: None,
    })
}

/// Where a CSV file's data starts: just after its header line (the file
/// size when there is no newline).
pub async fn csv_data_start(store: &dyn BlobStore, key: &str, size: u64) -> Result<u64> {
    Ok(next_line_start(store, key, size, 0, PROBE_BYTES, u64::MAX).await?.unwrap_or(size))
}

/// The start of the line after the one holding byte `at`: one past the
/// first newline at or after `at`. `None` when the file ends first, or when
/// `max_line_bytes` pass without one (the caller tells which by `size`).
/// Reads `probe_bytes` at a time, so a line without end is never buffered.
pub async fn next_line_start(
    store: &dyn BlobStore,
    key: &str,
    size: u64,
    at: u64,
    probe_bytes: u64,
    max_line_bytes: u64,
) -> Result<Option<u64>> {
    let mut pos = at;
    let limit = at.saturating_add(max_line_bytes).min(size);
    while pos < limit {
        let end = (pos + probe_bytes.max(1)).min(limit);
        let window = read_range(store, key, pos..end).await?;
        if let Some(i) = memchr::memchr(b'\n', &window) {
            return Ok(Some(pos + i as u64 + 1));
        }
        pos = end;
    }
    Ok(None)
}

/// Cuts `[data_start, size)` into line-aligned ranges of about
/// `shard_bytes`. The union of the ranges is exactly `[data_start, size)`
/// and each starts at a line start, so every line is in exactly one range.
pub async fn cut_csv(
    file: &InputFile,
    store: &dyn BlobStore,
    data_start: u64,
    shard_bytes: u64,
    max_line_bytes: u64,
) -> Result<Vec<[u64; 2]>> {
    cut_csv_with_probe(store, file.url.key(), file.size, data_start, shard_bytes, PROBE_BYTES, max_line_bytes)
        .await
        .map_err(|e| match e {
            Error::LineTooLong { at } => Error::input(
                &file.url,
                format!(
                    "no line end within {max_line_bytes} bytes after byte {at} (--max-line-bytes): a line that long, or CR-only line endings"
                ),
            ),
            other => other,
        })
}

/// `cut_csv` with the probe window as a parameter, so tests can make lines
/// span many windows.
pub async fn cut_csv_with_probe(
    store: &dyn BlobStore,
    key: &str,
    size: u64,
    data_start: u64,
    shard_bytes: u64,
    probe_bytes: u64,
    max_line_bytes: u64,
) -> Result<Vec<[u64; 2]>> {
    let shard_bytes = shard_bytes.max(1);
    let mut ranges = Vec::new();
    let mut start = data_start;
    while start < size {
        let target = start + shard_bytes;
        // The line holding byte `target - 1` ends this shard.
        let end = if target >= size {
            size
        } else {
            match next_line_start(store, key, size, target - 1, probe_bytes, max_line_bytes).await? {
                Some(end) => end,
                None if (target - 1).saturating_add(max_line_bytes) >= size => size,
                None => return Err(Error::LineTooLong { at: target - 1 }),
            }
        };
        ranges.push([start, end]);
        start = end;
    }
    Ok(ranges)
}

/// Groups row groups into shards of about `shard_bytes` (at least one group).
/// Row groups without rows are left out: they score nothing.
pub fn cut_parquet(row_groups: &[(u64, u64)], shard_bytes: u64) -> Vec<(Vec<usize>, u64)> {
    let mut shards = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let (mut bytes, mut rows) = (0u64, 0u64);
    for (i, &(n, size)) in row_groups.iter().enumerate().filter(|(_, g)| g.0 > 0) {
        if !current.is_empty() && bytes + size > shard_bytes {
            shards.push((std::mem::take(&mut current), rows));
            bytes = 0;
            rows = 0;
        }
        current.push(i);
        bytes += size;
        rows += n;
    }
    if !current.is_empty() {
        shards.push((current, rows));
    }
    shards
}

/// The shards of checked files, numbered in file order; skipped files get
/// none.
pub async fn cut_shards(
    store: &dyn BlobStore,
    files: &[CheckedFile],
    shard_bytes: u64,
    max_line_bytes: u64,
) -> Result<Vec<ShardPlan>> {
    let mut plans = Vec::new();
    for f in files.iter().filter(|f| f.skip.is_none()) {
        let version = Some(f.file.version.clone());
        match f.file.format {
            Format::Csv => {
                // A comma stays unnamed: tasks and plans of comma files are
                // as they were before delimiters could be chosen.
                let delimiter = (f.delimiter != ',').then_some(f.delimiter);
                let input = |range: [u64; 2]| ShardInput {
                    url: f.file.url.clone(),
                    format: Format::Csv,
                    range: Some(range),
                    columns: Some(f.columns.clone()),
                    row_groups: None,
                    version: version.clone(),
                    delimiter,
                    compression: f.compression,
                    skip_header: f.compression.is_some() && f.header,
                };
                if f.compression.is_some() {
                    plans.push(ShardPlan {
                        shard: ShardId::from_index(plans.len()),
                        input: input([0, f.file.size]),
                        rows_estimate: f.rows_estimate,
                    });
                    continue;
                }
                for [start, end] in cut_csv(&f.file, store, f.data_start, shard_bytes, max_line_bytes).await? {
                    plans.push(ShardPlan {
                        shard: ShardId::from_index(plans.len()),
                        input: input([start, end]),
                        rows_estimate: ((end - start) as f64 / f.bytes_per_row.max(1.0)).round() as u64,
                    });
                }
            }
            Format::Parquet => {
                for (groups, rows) in cut_parquet(&f.row_groups, shard_bytes) {
                    plans.push(ShardPlan {
                        shard: ShardId::from_index(plans.len()),
                        input: ShardInput {
                            url: f.file.url.clone(),
                            format: Format::Parquet,
                            range: None,
                            columns: None,
                            row_groups: Some(groups),
                            version: version.clone(),
                            delimiter: None,
                            compression: None,
                            skip_header: false,
                        },
                        rows_estimate: rows,
                    });
                }
            }
        }
    }
    Ok(plans)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parquet_groups_pack_up_to_the_target() {
        let groups = [(10, 40), (10, 40), (10, 40), (10, 200)];
        assert_eq!(cut_parquet(&groups, 100), vec![(vec![0, 1], 20), (vec![2], 10), (vec![3], 10)]);
        let with_empty = [(0, 5), (10, 40), (0, 5)];
        assert_eq!(cut_parquet(&with_empty, 100), vec![(vec![1], 10)]);
        assert!(cut_parquet(&[(0, 5)], 100).is_empty());
    }
}
