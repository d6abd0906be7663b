//! Synthetic CTR data of the reference shape: an `id` column, 13 dense
//! count features (I1..I13, log-normal) and 26 hashed categorical features
//! (C1..C26, bucket ids skewed towards small values), all float-valued
//! integers. The distribution matches `models/make_models.py`, which trains
//! the reference models on it. Output is deterministic for a seed.
//!
//! With a label column, each row also gets a 0/1 click drawn from the
//! features by `make_models.py`'s logistic rule (a few features matter,
//! plus noise), so a model trained on it is measurably better than chance
//! on rows it has not seen. The features are the same with or without it.

use crate::{Error, Result};
use arrow_array::{ArrayRef, Float32Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use hourglass_core::BlobUrl;
use hourglass_core::rng::SplitMix64 as Rng;
use hourglass_core::store::BlobStore;
use hourglass_core::task::Format;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use std::io::Write;
use std::sync::Arc;

pub const N_DENSE: usize = 13;
pub const N_CAT: usize = 26;
/// Rows per Parquet row group: the unit the planner cuts Parquet shards at.
pub const ROW_GROUP_ROWS: usize = 65_536;

pub fn feature_names() -> Vec<String> {
    (1..=N_DENSE).map(|i| format!("I{i}")).chain((1..=N_CAT).map(|i| format!("C{i}"))).collect()
}

/// One row's 39 features.
fn row(rng: &mut Rng, out: &mut [f32; N_DENSE + N_CAT]) {
    for (j, v) in out.iter_mut().take(N_DENSE).enumerate() {
        let mu = 0.5 + 0.25 * j as f64;
        *v = (mu + rng.normal()).exp().floor() as f32;
    }
    for j in 0..N_CAT {
        let card = 10f64.powi(1 + (j % 6) as i32);
        let u = rng.uniform();
        out[N_DENSE + j] = (card * u * u).floor() as f32;
    }
}

#[derive(Debug, Clone)]
pub struct SynthSpec {
    pub rows: u64,
    pub files: usize,
    pub format: Format,
    pub seed: u64,
    /// Name of a 0/1 label column to add after the features.
    pub label: Option<String>,
}

/// The click of one row: `make_models.py`'s `synth` logit, with its noise
/// and draw from `rng` (a stream of its own, so features do not change).
fn click(rng: &mut Rng, x: &[f32; N_DENSE + N_CAT]) -> i64 {
    let ln1p = |v: f32| (v as f64).ln_1p();
    // C3's cardinality, 10^(1 + 2 % 6).
    let card2 = 1000.0;
    let logit =
        -1.2 + 0.45 * ln1p(x[0]) - 0.30 * ln1p(x[1]) + 0.20 * ln1p(x[4]) + 0.80 * f64::from(u8::from(x[N_DENSE] < 2.0))
            - 0.60 * f64::from(u8::from((x[N_DENSE + 2] as f64) < card2 / 20.0))
            + 0.40 * f64::from(u8::from((x[N_DENSE + 7] as i64) % 7 == 3))
            + 0.5 * rng.normal();
    i64::from(rng.uniform() < 1.0 / (1.0 + (-logit).exp()))
}

/// The label stream's seed, apart from the features' stream.
fn label_seed(seed: u64) -> u64 {
    seed ^ 0x6c61_6265_6c5f_5f5f
}

/// Writes `rows` rows over `files` files under `dir` (ids `0..rows`, in
/// order across files) and returns the file URLs.
pub async fn generate(store: &dyn BlobStore, dir: &BlobUrl, spec: &SynthSpec) -> Result<Vec<BlobUrl>> {
    let files = spec.files.max(1) as u64;
    let mut urls = Vec::new();
    for f in 0..files {
        let lo = spec.rows * f / files;
        let hi = spec.rows * (f + 1) / files;
        let ext = spec.format.as_str();
        let url = dir.join(&format!("part-{f:05}.{ext}"));
        let (format, seed) = (spec.format, spec.seed ^ (f.wrapping_mul(0x1000_0000_01B3)));
        let label = spec.label.clone();
        let body = tokio::task::spawn_blocking(move || match format {
            Format::Csv => csv_file(lo, hi, seed, label.as_deref()),
            Format::Parquet => parquet_file(lo, hi, seed, label.as_deref()),
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
        store.put(url.key(), body.into()).await?;
        urls.push(url);
    }
    Ok(urls)
}

fn csv_file(lo: u64, hi: u64, seed: u64, label: Option<&str>) -> Result<Vec<u8>> {
    let mut rng = Rng::new(seed);
    let mut labels = Rng::new(label_seed(seed));
    let mut out = Vec::with_capacity(((hi - lo) * 160) as usize);
    write!(out, "id,{}", feature_names().join(",")).expect("vec write");
    if let Some(l) = label {
        write!(out, ",{l}").expect("vec write");
    }
    out.push(b'\n');
    let mut feats = [0f32; N_DENSE + N_CAT];
    for id in lo..hi {
        row(&mut rng, &mut feats);
        write!(out, "{id}").expect("vec write");
        for v in feats {
            write!(out, ",{v}").expect("vec write");
        }
        if label.is_some() {
            write!(out, ",{}", click(&mut labels, &feats)).expect("vec write");
        }
        out.push(b'\n');
    }
    Ok(out)
}

fn parquet_file(lo: u64, hi: u64, seed: u64, label: Option<&str>) -> Result<Vec<u8>> {
    let mut rng = Rng::new(seed);
    let mut labels = Rng::new(label_seed(seed));
    let mut fields = vec![Field::new("id", DataType::Int64, false)];
    fields.extend(feature_names().into_iter().map(|n| Field::new(n, DataType::Float32, false)));
    if let Some(l) = label {
        fields.push(Field::new(l, DataType::Int64, false));
    }
    let schema = Arc::new(Schema::new(fields));
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build();
    let mut writer = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props))
        .map_err(|e| Error::internal("parquet writer", e))?;
    let mut feats = [0f32; N_DENSE + N_CAT];
    let mut start = lo;
    while start < hi {
        let end = (start + ROW_GROUP_ROWS as u64).min(hi);
        let n = (end - start) as usize;
        let mut cols: Vec<Vec<f32>> = (0..N_DENSE + N_CAT).map(|_| Vec::with_capacity(n)).collect();
        let mut clicks: Vec<i64> = Vec::with_capacity(if label.is_some() { n } else { 0 });
        for _ in start..end {
            row(&mut rng, &mut feats);
            for (c, v) in cols.iter_mut().zip(feats) {
                c.push(v);
            }
            if label.is_some() {
                clicks.push(click(&mut labels, &feats));
            }
        }
        let mut arrays: Vec<ArrayRef> = vec![Arc::new(Int64Array::from_iter_values(start as i64..end as i64))];
        arrays.extend(cols.into_iter().map(|c| Arc::new(Float32Array::from(c)) as ArrayRef));
        if label.is_some() {
            arrays.push(Arc::new(Int64Array::from(clicks)));
        }
        let batch = RecordBatch::try_new(schema.clone(), arrays).map_err(|e| Error::internal("record batch", e))?;
        writer.write(&batch).map_err(|e| Error::internal("parquet write", e))?;
        start = end;
    }
    writer.into_inner().map_err(|e| Error::internal("parquet close", e))
}

/// `rows` rows of features, row-major `[rows, 39]`, for in-memory
/// benchmarks of the model alone.
pub fn features(rows: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(rows * (N_DENSE + N_CAT));
    let mut feats = [0f32; N_DENSE + N_CAT];
    for _ in 0..rows {
        row(&mut rng, &mut feats);
        out.extend_from_slice(&feats);
    }
    out
}
