//! Training submission: check a training spec's dataset (every file has the
//! label and the features, of types a model can take), plan one trial per
//! grid point, write the job's record and enqueue the trials that have no
//! done record yet, on the same queue as batch jobs. Submitting the same
//! spec again resumes the job.

use crate::plan::{CheckedFile, InputFile, check_file, list_inputs};
use crate::{Error, Result};
use hourglass_core::ledger::{LEDGER_VERSION, Ledger, now_ms};
use hourglass_core::model::{DType, ModelSignature, TensorSpec};
use hourglass_core::queue::{Queue, send_all};
use hourglass_core::task::{DEFAULT_MAX_LINE_BYTES, Format, Task, TaskKind};
use hourglass_core::train::{DatasetFile, TrainJobRecord, TrainSpec, TrialPlan};
use hourglass_core::{BlobUrl, JobId, ShardId, store};
use serde::Serialize;
use sha2::Digest;
use std::collections::BTreeMap;
use tracing::info;

#[derive(Debug, Clone, Serialize)]
pub struct TrainSubmitReport {
    pub job: JobId,
    pub output: String,
    pub trials: usize,
    pub enqueued: usize,
    pub already_done: usize,
    pub resumed: bool,
    pub features: usize,
    pub train_rows: u64,
    pub holdout_rows: u64,
}

/// A training job's id: a hash of its spec without the deadline (and of
/// the dataset files' versions), so the same sweep over the same data
/// submitted again resumes, and over new data is a new job.
pub fn derive_train_job_id(spec: &TrainSpec, files: &[DatasetFile]) -> JobId {
    let mut keyed = spec.clone();
    keyed.deadline_unix_ms = None;
    let mut h = sha2::Sha256::new();
    h.update(serde_json::to_vec(&keyed).expect("spec serializes"));
    h.update(serde_json::to_vec(files).expect("files serialize"));
    JobId::parse(&format!("t-{}", &hex::encode(h.finalize())[..16])).expect("hex ids are valid")
}

/// The one-input signature a dataset must bind to: its features as float32.
fn features_signature(features: &[String]) -> ModelSignature {
    let input = "features".to_string();
    ModelSignature {
        inputs: vec![TensorSpec {
            name: input.clone(),
            dtype: Some(DType::Float32),
            type_name: "float32".into(),
            shape: vec![None, Some(features.len() as u64)],
        }],
        outputs: vec![],
        feature_names: BTreeMap::from([(input, features.to_vec())]),
    }
}

fn rows_of(c: &CheckedFile) -> u64 {
    match c.file.format {
        Format::Parquet => c.row_groups.iter().map(|(rows, _)| rows).sum(),
        Format::Csv if c.bytes_per_row > 0.0 => {
            ((c.file.size.saturating_sub(c.data_start)) as f64 / c.bytes_per_row).round() as u64
        }
        Format::Csv => 0,
    }
}

/// Lists and checks one side of the dataset (train or holdout).
async fn check_side(
    what: &str,
    url: &BlobUrl,
    format: Option<Format>,
    label: &str,
    features: &[String],
) -> Result<(Vec<InputFile>, Vec<CheckedFile>)> {
    let store = store::open(url)?;
    let files = list_inputs(store.as_ref(), url, format).await?;
    if let Some(f) = files.iter().find(|f| f.compression.is_some()) {
        return Err(Error::input(
            &f.url,
            format!("{what} file: compressed training data is not read; decompress it first"),
        ));
    }
    let signature = features_signature(features);
    let mut checked = Vec::with_capacity(files.len());
    for f in &files {
        // The label plays the id column's part: it must be there and is
        // never a feature.
        let c = check_file(store.as_ref(), f, &signature, label, DEFAULT_MAX_LINE_BYTES, &Default::default())
            .await
            .map_err(|e| Error::input(&f.url, format!("{what} file: {e}")))?;
        checked.push(c);
    }
    Ok((files, checked))
}

/// The feature columns: the spec's, or every column of the first training
/// file but the label and the id column.
async fn features_of(spec: &TrainSpec) -> Result<Vec<String>> {
    if let Some(f) = &spec.dataset.features {
        if f.is_empty() {
            return Err(Error::Invalid("train spec field \"dataset.features\" names no column".into()));
        }
        if let Some(bad) = f.iter().find(|c| **c == spec.dataset.label || Some(*c) == spec.dataset.id_column.as_ref()) {
            return Err(Error::Invalid(format!(
                "train spec: {bad:?} is the label or id column and cannot be a feature"
            )));
        }
        return Ok(f.clone());
    }
    let store = store::open(&spec.dataset.train)?;
    let files = list_inputs(store.as_ref(), &spec.dataset.train, spec.dataset.format).await?;
    let empty = ModelSignature { inputs: vec![], outputs: vec![], feature_names: BTreeMap::new() };
    let first =
        check_file(store.as_ref(), &files[0], &empty, &spec.dataset.label, DEFAULT_MAX_LINE_BYTES, &Default::default())
            .await?;
    let features: Vec<String> = first
        .columns
        .into_iter()
        .filter(|c| *c != spec.dataset.label && Some(c) != spec.dataset.id_column.as_ref())
        .collect();
    if features.is_empty() {
        return Err(Error::input(&files[0].url, "no feature columns besides the label"));
    }
    Ok(features)
}

fn records(checked: &[CheckedFile]) -> Vec<DatasetFile> {
    checked
        .iter()
        .map(|c| DatasetFile {
            url: c.file.url.clone(),
            size: c.file.size,
            version: Some(c.file.version.clone()),
            format: c.file.format,
            rows: (c.file.format == Format::Parquet).then(|| rows_of(c)),
        })
        .collect()
}

/// Plans (or resumes) a training job and enqueues its open trials.
pub async fn submit_train(spec: TrainSpec, queue: &dyn Queue, replace: bool) -> Result<TrainSubmitReport> {
    spec.validate()?;
    let features = features_of(&spec).await?;
    let ds = &spec.dataset;
    let (_, train) = check_side("training", &ds.train, ds.format, &ds.label, &features).await?;
    let (_, holdout) = check_side("holdout", &ds.holdout, ds.format, &ds.label, &features).await?;
    let formats: std::collections::BTreeSet<Format> = train.iter().chain(&holdout).map(|c| c.file.format).collect();
    if formats.len() > 1 {
        return Err(Error::Invalid(
            "the dataset mixes CSV and Parquet files; a trainer reads one format (set dataset.format to pick one)"
                .into(),
        ));
    }
    let (train_rows, holdout_rows) = (train.iter().map(rows_of).sum::<u64>(), holdout.iter().map(rows_of).sum::<u64>());
    for (what, rows, url) in [("training", train_rows, &ds.train), ("holdout", holdout_rows, &ds.holdout)] {
        if rows == 0 {
            return Err(Error::input(url, format!("the {what} data holds no rows")));
        }
    }
    let train_files = records(&train);
    let holdout_files = records(&holdout);
    let all: Vec<DatasetFile> = train_files.iter().chain(&holdout_files).cloned().collect();
    let job = derive_train_job_id(&spec, &all);
    let trials: Vec<TrialPlan> = spec
        .trials()?
        .into_iter()
        .enumerate()
        .map(|(i, params)| TrialPlan {
            trial: ShardId::parse(&format!("trial-{i:04}")).expect("valid id"),
            params,
            rows_estimate: train_rows,
        })
        .collect();
    let record = TrainJobRecord {
        v: LEDGER_VERSION,
        kind: TaskKind::Train,
        job: job.clone(),
        spec: spec.clone(),
        submitted_at_ms: now_ms(),
        features: features.clone(),
        train_files,
        holdout_files,
        trials,
    };
    let ledger = Ledger::new(store::open(&spec.output)?, &spec.output);
    if replace && ledger.job_version().await?.is_some() {
        let deleted = ledger.clear().await?;
        info!(output = %ledger.root(), deleted, "--replace: cleared the prefix's previous job");
    }
    let (record, resumed) = if ledger.create_train_job(&record).await? {
        (record, false)
    } else {
        match ledger.read_any_job().await? {
            Some(hourglass_core::ledger::AnyJob::Train(existing)) if existing.job == job => {
                let mut existing = existing;
                if spec.deadline_unix_ms.is_some() && spec.deadline_unix_ms != existing.spec.deadline_unix_ms {
                    existing.spec.deadline_unix_ms = spec.deadline_unix_ms;
                    ledger.update_train_job(&existing).await?;
                }
                (existing, true)
            }
            Some(other) => {
                return Err(Error::Conflict(format!(
                    "{} already holds job {}, not training job {job} (another spec or changed data); use another output or --replace",
                    ledger.root(),
                    other.job()
                )));
            }
            None => return Err(Error::Conflict(format!("{}: job.json vanished while submitting", ledger.root()))),
        }
    };
    let open = crate::submit::open_units(&ledger, record.trials.iter().map(|t| &t.trial), resumed).await?;
    let bodies: Vec<String> = record
        .trials
        .iter()
        .filter(|t| open.contains(&t.trial))
        .map(|t| Task::Train(record.task_for(t)).encode())
        .collect();
    send_all(queue, &bodies).await?;
    info!(job = %job, trials = record.trials.len(), enqueued = bodies.len(), "training job submitted");
    Ok(TrainSubmitReport {
        job,
        output: ledger.root().to_string(),
        trials: record.trials.len(),
        enqueued: bodies.len(),
        already_done: record.trials.len() - bodies.len(),
        resumed,
        features: features.len(),
        train_rows,
        holdout_rows,
    })
}
