//! The ledger's records: what each object under `_hourglass/` holds. Every
//! record carries its version `v`; readers skip fields they do not know and
//! refuse a record whose `min_reader_v` is past theirs (`crate::compat`).

use super::from_record;
use crate::task::{Format, ModelRef, ShardInput, ShardTask, TASK_VERSION};
use crate::{BlobUrl, Error, JobId, Result, ShardId};
use serde::{Deserialize, Serialize};

/// A unit's completion bucket: its id without the last three characters,
/// so a bucket holds at most 1000 planned ids (`000123` → `000`, `012345`
/// → `012`, `trial-0042` → `trial-0`) and its done records are one LIST
/// page under `_hourglass/done/`.
pub fn bucket_of(unit: &ShardId) -> &str {
    let id = unit.as_str();
    &id[..id.len().saturating_sub(3)]
}

/// GETs in flight when reading every record of a folder (`status`,
/// finalize): enough to hide S3's per-request latency, few enough to stay
/// far under its per-prefix request rate.
pub const READ_CONCURRENCY: usize = 32;

pub const LEDGER_VERSION: u32 = 1;

/// What the user asked for; the job id is derived from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub input: BlobUrl,
    pub model: BlobUrl,
    pub output: BlobUrl,
    pub format: Option<Format>,
    pub id_column: String,
    pub shard_bytes: u64,
    pub max_bad_rows: u64,
    /// Longest CSV line; left out when it is the default, so job ids of
    /// jobs planned before the field existed stay the same.
    #[serde(default = "default_max_line_bytes", skip_serializing_if = "is_default_max_line_bytes")]
    pub max_line_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_unix_ms: Option<u64>,
    /// How CSV inputs are read and what the output holds. Each is left out
    /// of `job.json` at its default, so the ids of jobs planned before these
    /// options existed stay the same.
    #[serde(default, skip_serializing_if = "CsvOptions::is_default")]
    pub csv: CsvOptions,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keep_columns: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_all: bool,
    #[serde(default, skip_serializing_if = "crate::task::OutputFormat::is_parquet")]
    pub output_format: crate::task::OutputFormat,
}

/// How a job reads its CSV files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CsvOptions {
    /// The field delimiter; `None`: a comma, or a tab for `.tsv` files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<char>,
    /// The files have no header line: their columns are `columns`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_header: bool,
    /// The column names of header-less files, in file order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
}

impl CsvOptions {
    pub fn is_default(&self) -> bool {
        *self == CsvOptions::default()
    }

    /// The delimiter of one file: the job's, else a tab for `.tsv` names,
    /// else a comma.
    pub fn delimiter_for(&self, url: &BlobUrl) -> char {
        self.delimiter.unwrap_or_else(|| {
            let lower = url.file_name().to_ascii_lowercase();
            if crate::task::Compression::strip_extension(&lower).ends_with(".tsv") { '\t' } else { ',' }
        })
    }
}

fn default_max_line_bytes() -> u64 {
    crate::task::DEFAULT_MAX_LINE_BYTES
}

fn is_default_max_line_bytes(n: &u64) -> bool {
    *n == crate::task::DEFAULT_MAX_LINE_BYTES
}

impl JobSpec {
    /// The first field in which `other` plans a different job (the
    /// deadline may change between submits), as `(field, ours, theirs)`.
    pub fn differs_from(&self, other: &JobSpec) -> Option<(&'static str, String, String)> {
        let fields: [(&'static str, String, String); 12] = [
            ("input", self.input.to_string(), other.input.to_string()),
            ("model", self.model.to_string(), other.model.to_string()),
            ("output", self.output.as_prefix().to_string(), other.output.as_prefix().to_string()),
            ("format", format!("{:?}", self.format), format!("{:?}", other.format)),
            ("id_column", self.id_column.clone(), other.id_column.clone()),
            ("shard_bytes", self.shard_bytes.to_string(), other.shard_bytes.to_string()),
            ("max_bad_rows", self.max_bad_rows.to_string(), other.max_bad_rows.to_string()),
            ("max_line_bytes", self.max_line_bytes.to_string(), other.max_line_bytes.to_string()),
            ("csv", format!("{:?}", self.csv), format!("{:?}", other.csv)),
            ("keep_columns", self.keep_columns.join(","), other.keep_columns.join(",")),
            ("keep_all", self.keep_all.to_string(), other.keep_all.to_string()),
            ("output_format", self.output_format.to_string(), other.output_format.to_string()),
        ];
        fields.into_iter().find(|(_, a, b)| a != b)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardPlan {
    pub shard: ShardId,
    pub input: ShardInput,
    pub rows_estimate: u64,
}

/// An input file as it was when the job was planned. Shards are byte
/// ranges and row groups of these exact files: a resumed job checks they
/// have not changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputFileRecord {
    pub url: BlobUrl,
    pub size: u64,
    /// `ObjectMeta::version` at planning (ETag on S3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// A CSV file's header, once: `job.json` leaves it out of the file's
    /// shards (100k shards of a 40-column file repeated it 100k times) and
    /// reading puts it back (`JobRecord::compacted`, `expand`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
}

/// An input file that holds no rows (0 bytes, a header only, no rows in
/// its row groups): planned as no shard, recorded so `status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedFile {
    pub url: BlobUrl,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub v: u32,
    pub job: JobId,
    pub spec: JobSpec,
    pub model_sha256: String,
    pub submitted_at_ms: u64,
    pub rows_estimate: u64,
    pub files: Vec<InputFileRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_files: Vec<SkippedFile>,
    pub shards: Vec<ShardPlan>,
    /// The registry model the job scores, pinned at submit: an alias moved
    /// later does not change the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_registry: Option<RegistryPin>,
}

impl JobRecord {
    /// The record as `job.json` holds it: each CSV file's header once, in
    /// its file entry, instead of in every one of its shards.
    pub fn compacted(&self) -> JobRecord {
        let mut out = self.clone();
        for file in &mut out.files {
            // Only a header every shard of the file shares exactly: then
            // `expand` gives each shard back what it had.
            let mut of_file = self.shards.iter().filter(|s| s.input.url == file.url).map(|s| &s.input.columns);
            let first = of_file.next().cloned().flatten();
            if file.columns.is_none() && first.is_some() && of_file.all(|c| *c == first) {
                file.columns = first;
            }
        }
        let headers: std::collections::HashMap<&BlobUrl, &Vec<String>> =
            out.files.iter().filter_map(|f| Some((&f.url, f.columns.as_ref()?))).collect();
        let mut shards = out.shards.clone();
        for shard in &mut shards {
            if shard.input.columns.as_ref().is_some_and(|c| headers.get(&shard.input.url) == Some(&c)) {
                shard.input.columns = None;
            }
        }
        out.shards = shards;
        out
    }

    /// Undoes `compacted`: every shard of a file with a header gets it back
    /// (in memory a record has its headers in its shards only). A record
    /// written before compaction has its headers in its shards and none in
    /// its files: nothing changes.
    pub fn expand(&mut self) {
        let headers: std::collections::HashMap<BlobUrl, Vec<String>> =
            self.files.iter_mut().filter_map(|f| Some((f.url.clone(), f.columns.take()?))).collect();
        for shard in &mut self.shards {
            if shard.input.columns.is_none()
                && let Some(columns) = headers.get(&shard.input.url)
            {
                shard.input.columns = Some(columns.clone());
            }
        }
    }
}

/// A registry model as a job pinned it (`spec.model` is the version's
/// `model.onnx`, `model_sha256` its digest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryPin {
    pub registry: BlobUrl,
    pub name: String,
    pub version: u64,
    /// The alias it was resolved through at submit, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DoneRecord {
    pub v: u32,
    pub job: JobId,
    pub shard: ShardId,
    pub rows: u64,
    pub bad_rows: u64,
    pub seconds: f64,
    pub started_at_ms: u64,
    pub finished_at_ms: u64,
    pub worker: String,
    pub attempt: u32,
    pub output: BlobUrl,
    /// Hex sha256 of the output object.
    pub sha256: String,
    /// A training trial's result (then `output` is the registered model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial: Option<crate::train::TrialResult>,
    /// The device the model ran on (`cpu`, `cuda:0`, `tensorrt:0`): the
    /// one really used, `cpu` after a fallback. Absent in records written
    /// before devices were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// The pod-seconds it took and the node it ran on, for the job's cost.
    /// Absent in records written before usage was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<crate::cost::Usage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailedRecord {
    pub v: u32,
    pub job: JobId,
    pub shard: ShardId,
    pub error_kind: String,
    pub message: String,
    pub attempts: u32,
    pub worker: String,
    pub failed_at_ms: u64,
    /// The last lines a trainer printed, for a failed training trial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_tail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuccessRecord {
    pub v: u32,
    pub job: JobId,
    pub shards: u64,
    pub rows: u64,
    pub finished_at_ms: u64,
}

impl JobRecord {
    /// The task of one planned shard. Everything in it comes from this
    /// record, which is how a worker checks a task against its job.
    pub fn task_for(&self, plan: &ShardPlan) -> ShardTask {
        ShardTask {
            v: TASK_VERSION,
            job: self.job.clone(),
            shard: plan.shard.clone(),
            input: plan.input.clone(),
            model: ModelRef { url: self.spec.model.clone(), sha256: self.model_sha256.clone() },
            output: self.spec.output.as_prefix(),
            id_column: self.spec.id_column.clone(),
            max_bad_rows: self.spec.max_bad_rows,
            max_line_bytes: self.spec.max_line_bytes,
            keep_columns: self.spec.keep_columns.clone(),
            keep_all: self.spec.keep_all,
            output_format: self.spec.output_format,
            deadline_unix_ms: self.spec.deadline_unix_ms,
        }
    }

    /// Why `task` is not a task of this job, or `None` when it is exactly
    /// the task `task_for` makes of its shard (the deadline may differ: a
    /// resubmit can move it).
    pub fn refuses(&self, task: &ShardTask) -> Option<String> {
        if task.job != self.job {
            return Some(format!("the prefix holds job {}, this task is for job {}", self.job, task.job));
        }
        let Some(plan) = self.shards.iter().find(|s| s.shard == task.shard) else {
            return Some(format!("job {} has no shard {}", self.job, task.shard));
        };
        let expected = self.task_for(plan);
        let fields: [(&str, bool); 9] = [
            ("input", expected.input == task.input),
            ("model", expected.model == task.model),
            ("output", expected.output == task.output),
            ("id_column", expected.id_column == task.id_column),
            ("max_bad_rows", expected.max_bad_rows == task.max_bad_rows),
            ("max_line_bytes", expected.max_line_bytes == task.max_line_bytes),
            ("keep_columns", expected.keep_columns == task.keep_columns),
            ("keep_all", expected.keep_all == task.keep_all),
            ("output_format", expected.output_format == task.output_format),
        ];
        fields.iter().find(|(_, same)| !same).map(|(field, _)| {
            format!("its {field} differs from the plan of shard {} in job {}'s job.json", task.shard, self.job)
        })
    }
}

/// Whatever a prefix's `job.json` holds: a batch job or a training job.
#[derive(Debug, Clone, PartialEq)]
pub enum AnyJob {
    Infer(JobRecord),
    Train(crate::train::TrainJobRecord),
}

impl AnyJob {
    /// Reads `job.json`: a record with `"kind": "train"` is a training job,
    /// one without a kind a batch job.
    pub fn from_json(what: &str, bytes: &[u8]) -> Result<Self> {
        let corrupt = |e: serde_json::Error| Error::invalid(what.to_string(), format!("corrupt ledger record: {e}"));
        let value: serde_json::Value = from_record(what, bytes)?;
        match value.get("kind").and_then(|k| k.as_str()) {
            Some("train") => Ok(AnyJob::Train(serde_json::from_value(value).map_err(corrupt)?)),
            None => {
                let mut job: JobRecord = serde_json::from_value(value).map_err(corrupt)?;
                job.expand();
                Ok(AnyJob::Infer(job))
            }
            Some(other) => Err(Error::invalid(what.to_string(), format!("job of unknown kind {other:?}"))),
        }
    }

    pub fn kind(&self) -> crate::task::TaskKind {
        match self {
            AnyJob::Infer(_) => crate::task::TaskKind::Infer,
            AnyJob::Train(_) => crate::task::TaskKind::Train,
        }
    }

    pub fn job(&self) -> &JobId {
        match self {
            AnyJob::Infer(j) => &j.job,
            AnyJob::Train(j) => &j.job,
        }
    }

    /// The units the ledger records (shards or trials) with their row
    /// estimates, in plan order.
    pub fn units(&self) -> Vec<(&ShardId, u64)> {
        match self {
            AnyJob::Infer(j) => j.shards.iter().map(|s| (&s.shard, s.rows_estimate)).collect(),
            AnyJob::Train(j) => j.trials.iter().map(|t| (&t.trial, t.rows_estimate)).collect(),
        }
    }

    pub fn rows_estimate(&self) -> u64 {
        self.units().iter().map(|(_, r)| r).sum()
    }

    pub fn deadline_unix_ms(&self) -> Option<u64> {
        match self {
            AnyJob::Infer(j) => j.spec.deadline_unix_ms,
            AnyJob::Train(j) => j.spec.deadline_unix_ms,
        }
    }

    pub fn submitted_at_ms(&self) -> u64 {
        match self {
            AnyJob::Infer(j) => j.submitted_at_ms,
            AnyJob::Train(j) => j.submitted_at_ms,
        }
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A complete bucket's done records in one object
/// (`_hourglass/summaries/JOB/bB.json`, written by the worker that marked
/// the bucket complete): `status` and the final check read one of these
/// instead of up to 1000 done records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BucketSummary {
    pub v: u32,
    pub job: JobId,
    pub bucket: String,
    /// Its planned units, every one done.
    pub shards: u64,
    pub rows: u64,
    pub bad_rows: u64,
    /// The earliest start and the latest finish among them.
    pub started_at_ms: u64,
    pub finished_at_ms: u64,
    /// Pod-seconds by node kind (`crate::cost::Usage::key`) of the records
    /// that carry usage.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub usage: crate::cost::UsageTotals,
}
