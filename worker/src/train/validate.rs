//! Checks a trainer's model before it is registered: it loads in the same
//! `ModelRuntime` batch jobs use, its signature binds to the dataset's
//! feature columns (never to the label), its holdout predictions, scored
//! here through the batch decoders, match the trainer's own within
//! `PREDICTION_TOLERANCE`, and the holdout metrics are recomputed here
//! rather than taken on the trainer's word.

use crate::error::TrialFailure;
use crate::{Error, Result};
use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;
use hourglass_core::task::{DEFAULT_MAX_LINE_BYTES, Format};
use hourglass_core::{BlobUrl, store};
use hourglass_format::Batch;
use hourglass_format::csv::CsvShard;
use hourglass_format::parquet::{ParquetShard, StoreFileReader};
use hourglass_runtime::{ColumnData, ModelRuntime};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use tokio::runtime::Handle;

/// Largest difference allowed between the worker's and the trainer's
/// prediction of a holdout row: float32 inference against the trainer's
/// own (often float64) arithmetic, far below any real disagreement.
pub const PREDICTION_TOLERANCE: f64 = 1e-5;

/// A staged holdout file.
#[derive(Debug, Clone)]
pub struct LocalFile {
    pub path: PathBuf,
    pub format: Format,
}

/// Labels and the model's positive-class scores of every holdout row.
#[derive(Debug, Default)]
pub struct Scored {
    pub labels: Vec<f64>,
    pub scores: Vec<f64>,
}

/// A model the worker will not register, with the reason.
pub(crate) fn refused(message: String) -> Error {
    Error::Trial { kind: TrialFailure::ModelRefused, message, log_tail: None }
}

/// The positive-class score of each row: the first float output, `[N]` or
/// `[N, 1]`, or the second column of a `[N, 2]` (class probabilities).
fn positive_scores(model: &ModelRuntime, batch: &Batch) -> Result<Vec<f64>> {
    let tensors = model.run_tensors(&batch.inputs, batch.rows)?;
    let t = tensors
        .iter()
        .find(|t| matches!(t.data, ColumnData::F32(_) | ColumnData::F64(_)))
        .ok_or_else(|| refused("the model has no float output to read a score from".into()))?;
    let width = if t.shape.len() <= 1 { 1 } else { t.shape[1..].iter().product::<i64>() as usize };
    let col = match width {
        1 => 0,
        2 => 1,
        w => {
            return Err(refused(format!(
                "output {:?} has {w} values per row; a binary classifier gives 1 (a score) or 2 (class probabilities)",
                t.name
            )));
        }
    };
    Ok((0..batch.rows).map(|r| t.data.get_f64(r * width + col)).collect())
}

/// A label column's values as 0.0/1.0.
fn labels_of(file: &str, label: &str, ids: &ArrayRef) -> Result<Vec<f64>> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::*;
    let bad = |row: usize, v: String| Error::Decode {
        file: file.to_string(),
        message: format!("label column {label:?} row {row}: {v} is not 0/1 or true/false"),
    };
    let check = |row: usize, v: f64| if v == 0.0 || v == 1.0 { Ok(v) } else { Err(bad(row, v.to_string())) };
    if ids.null_count() > 0 {
        let row = (0..ids.len()).find(|&i| ids.is_null(i)).unwrap_or(0);
        return Err(bad(row, "null".into()));
    }
    let n = ids.len();
    match ids.data_type() {
        DataType::Boolean => Ok(ids.as_boolean().iter().map(|v| if v == Some(true) { 1.0 } else { 0.0 }).collect()),
        DataType::Int64 => (0..n).map(|i| check(i, ids.as_primitive::<Int64Type>().value(i) as f64)).collect(),
        DataType::Int32 => (0..n).map(|i| check(i, ids.as_primitive::<Int32Type>().value(i) as f64)).collect(),
        DataType::Int16 => (0..n).map(|i| check(i, ids.as_primitive::<Int16Type>().value(i) as f64)).collect(),
        DataType::Int8 => (0..n).map(|i| check(i, ids.as_primitive::<Int8Type>().value(i) as f64)).collect(),
        DataType::UInt8 => (0..n).map(|i| check(i, ids.as_primitive::<UInt8Type>().value(i) as f64)).collect(),
        DataType::Float32 => (0..n).map(|i| check(i, ids.as_primitive::<Float32Type>().value(i) as f64)).collect(),
        DataType::Float64 => (0..n).map(|i| check(i, ids.as_primitive::<Float64Type>().value(i))).collect(),
        DataType::Utf8 => {
            let a = ids.as_string::<i32>();
            (0..n)
                .map(|i| match a.value(i).trim() {
                    "1" | "1.0" | "true" | "True" | "TRUE" => Ok(1.0),
                    "0" | "0.0" | "false" | "False" | "FALSE" => Ok(0.0),
                    other => Err(bad(i, format!("{other:?}"))),
                })
                .collect()
        }
        other => {
            Err(Error::Decode { file: file.to_string(), message: format!("label column {label:?} has type {other}") })
        }
    }
}

/// Checks that the model reads only the job's features, then scores every
/// holdout row through the batch decoders. Runs on a CPU pool thread.
pub fn score_holdout(
    handle: &Handle,
    model: &ModelRuntime,
    files: &[LocalFile],
    label: &str,
    features: &[String],
    batch_size: usize,
) -> Result<Scored> {
    for (input, names) in &model.signature().feature_names {
        if let Some(n) = names.iter().find(|n| !features.contains(n)) {
            return Err(refused(format!(
                "model input {input:?} reads column {n:?}, which is not one of the job's features (the label or an id leaking in?)"
            )));
        }
    }
    // The columns a model may see: the label (passed through as the id)
    // and the features, in the job's order.
    let visible: Vec<String> = std::iter::once(label.to_string()).chain(features.iter().cloned()).collect();
    let mut out = Scored::default();
    for f in files {
        let name = f.path.display().to_string();
        let mut on_batch = |b: Batch| -> Result<()> {
            out.labels.extend(labels_of(&name, label, &b.ids)?);
            out.scores.extend(positive_scores(model, &b)?);
            Ok(())
        };
        match f.format {
            Format::Parquet => {
                let url = BlobUrl::parse(&name)?;
                let store = store::open(&url)?;
                let opened = handle.block_on(StoreFileReader::open_with_metadata(store, url.key(), None, &name))?;
                let groups = opened.1.metadata().num_row_groups();
                let names: Vec<String> = opened.1.schema().fields().iter().map(|c| c.name().clone()).collect();
                bind_visible(model, &name, &names, &visible, label)?;
                ParquetShard {
                    file: &name,
                    row_groups: (0..groups).collect(),
                    id_column: label,
                    signature: model.signature(),
                    batch_size,
                    keep: &[],
                }
                .decode(handle, opened, &mut on_batch)?;
            }
            Format::Csv => {
                let file = std::fs::File::open(&f.path)
                    .map_err(|e| Error::Decode { file: name.clone(), message: format!("cannot open: {e}") })?;
                let mut reader = std::io::BufReader::new(file);
                let mut header = Vec::new();
                reader
                    .read_until(b'\n', &mut header)
                    .map_err(|e| Error::Decode { file: name.clone(), message: e.to_string() })?;
                let columns: Vec<String> = csv::ReaderBuilder::new()
                    .has_headers(false)
                    .from_reader(header.as_slice())
                    .records()
                    .next()
                    .and_then(|r| r.ok())
                    .map(|r| r.iter().map(|c| c.to_string()).collect())
                    .unwrap_or_default();
                let bindings = bind_visible(model, &name, &columns, &visible, label)?;
                let id_column = columns.iter().position(|c| c == label).expect("bind checks the label column");
                CsvShard {
                    columns: &columns,
                    id_column,
                    bindings: &bindings,
                    batch_size,
                    max_bad_rows: 0,
                    max_line_bytes: DEFAULT_MAX_LINE_BYTES,
                    delimiter: b',',
                    keep: &[],
                }
                .decode(reader, &mut on_batch)
                .map_err(|e| Error::Decode { file: name.clone(), message: format!("{e:?}") })?;
            }
        }
    }
    Ok(out)
}

/// Binds the model to a file's columns as the job sees them: columns that
/// are neither the label nor a feature are hidden, so a model without
/// feature names binds by position over the features alone.
fn bind_visible(
    model: &ModelRuntime,
    file: &str,
    columns: &[String],
    visible: &[String],
    label: &str,
) -> Result<Vec<hourglass_core::model::InputBinding>> {
    let missing: Vec<&String> = visible.iter().filter(|v| !columns.contains(v)).collect();
    if !missing.is_empty() {
        return Err(Error::Decode { file: file.to_string(), message: format!("missing columns {missing:?}") });
    }
    // Bind over the visible columns, then map the indices back to the file's.
    let bound = model
        .signature()
        .bind(file, visible, label)
        .map_err(|e| refused(format!("its signature does not bind to the dataset: {e}")))?;
    Ok(bound
        .into_iter()
        .map(|mut b| {
            for c in &mut b.columns {
                *c = columns.iter().position(|x| *x == visible[*c]).expect("visible columns are in the file");
            }
            b
        })
        .collect())
}

/// Reads the trainer's `holdout_predictions.txt`.
pub fn read_predictions(path: &Path) -> Result<Vec<f64>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        refused(format!("the trainer wrote no readable {}: {e}", path.file_name().unwrap_or_default().display()))
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            l.trim()
                .parse::<f64>()
                .map_err(|_| refused(format!("holdout_predictions.txt line {}: {:?} is not a number", i + 1, l.trim())))
        })
        .collect()
}

/// The largest prediction difference, or a refusal naming the first row
/// out of tolerance.
pub fn compare(ours: &[f64], theirs: &[f64]) -> Result<f64> {
    if ours.len() != theirs.len() {
        return Err(refused(format!(
            "the trainer predicted {} holdout rows, the holdout has {}",
            theirs.len(),
            ours.len()
        )));
    }
    let mut max = 0.0f64;
    for (row, (a, b)) in ours.iter().zip(theirs).enumerate() {
        let d = (a - b).abs();
        if d.is_nan() || d > PREDICTION_TOLERANCE {
            return Err(refused(format!(
                "holdout row {row}: the ONNX model predicts {a}, the trainer predicted {b} (tolerance {PREDICTION_TOLERANCE}); the exported model does not compute what was trained"
            )));
        }
        max = max.max(d);
    }
    Ok(max)
}

/// Area under the ROC curve, ties counted half (the Mann-Whitney form).
/// `None` when the holdout has only one class.
pub fn auc(labels: &[f64], scores: &[f64]) -> Option<f64> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let positives = labels.iter().filter(|&&l| l == 1.0).count() as f64;
    let negatives = labels.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return None;
    }
    // Sum of positive ranks, average ranks over ties.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += idx[i..=j].iter().filter(|&&k| labels[k] == 1.0).count() as f64 * avg_rank;
        i = j + 1;
    }
    Some((rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives))
}

/// Mean binary cross-entropy, with scores clipped to [1e-15, 1 − 1e-15].
pub fn logloss(labels: &[f64], scores: &[f64]) -> f64 {
    let eps = 1e-15;
    let sum: f64 = labels
        .iter()
        .zip(scores)
        .map(|(&y, &p)| {
            let p = p.clamp(eps, 1.0 - eps);
            -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
        })
        .sum();
    sum / labels.len().max(1) as f64
}

/// The holdout metrics a trial's version records.
pub fn metrics(s: &Scored) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    if let Some(a) = auc(&s.labels, &s.scores) {
        m.insert("auc".into(), a);
    }
    m.insert("logloss".into(), logloss(&s.labels, &s.scores));
    m.insert("holdout_rows".into(), s.labels.len() as f64);
    m.insert("holdout_positive_rate".into(), s.labels.iter().sum::<f64>() / s.labels.len().max(1) as f64);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_matches_hand_computed_values() {
        // Perfect, inverted, and random-with-ties rankings.
        assert_eq!(auc(&[0.0, 0.0, 1.0, 1.0], &[0.1, 0.2, 0.8, 0.9]), Some(1.0));
        assert_eq!(auc(&[1.0, 1.0, 0.0, 0.0], &[0.1, 0.2, 0.8, 0.9]), Some(0.0));
        assert_eq!(auc(&[0.0, 1.0, 0.0, 1.0], &[0.5, 0.5, 0.5, 0.5]), Some(0.5));
        // 3 positives, 2 negatives: pairs (p > n) = 5 of 6, one tie → 5.5/6.
        let a = auc(&[1.0, 1.0, 1.0, 0.0, 0.0], &[0.9, 0.7, 0.4, 0.4, 0.1]).unwrap();
        assert!((a - 5.5 / 6.0).abs() < 1e-12, "{a}");
        assert_eq!(auc(&[1.0, 1.0], &[0.1, 0.2]), None);
    }

    #[test]
    fn logloss_is_the_mean_cross_entropy() {
        let l = logloss(&[1.0, 0.0], &[0.8, 0.4]);
        assert!((l - (-(0.8f64.ln()) - 0.6f64.ln()) / 2.0).abs() < 1e-12);
        assert!(logloss(&[1.0], &[0.0]).is_finite());
    }

    #[test]
    fn predictions_must_agree_row_by_row() {
        assert!(compare(&[0.1, 0.2], &[0.1, 0.2 + 5e-6]).unwrap() < 1e-5);
        let e = compare(&[0.1, 0.2], &[0.1, 0.3]).unwrap_err().to_string();
        assert!(e.contains("holdout row 1"), "{e}");
        let e = compare(&[0.1], &[0.1, 0.2]).unwrap_err().to_string();
        assert!(e.contains("predicted 2 holdout rows, the holdout has 1"), "{e}");
    }
}
