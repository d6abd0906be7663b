//! The job ledger: records under the output prefix, in the same store as
//! the outputs, from which status, resume, scaling signals and finalize are
//! all derived. No database.
//!
//! ```text
//! <output>/part-<shard>.parquet            outputs, one per shard, deterministic keys
//! <output>/_hourglass/job.json             the plan: spec, shard list, estimates, model sha256
//! <output>/_hourglass/done/<shard>.json    written after the output, before the ack
//! <output>/_hourglass/failed/<shard>.json  written when a shard gives up
//! <output>/_hourglass/bad/<shard>.csv      skipped rows with their reasons
//! <output>/_SUCCESS                        written once, when every shard is done
//! ```

use crate::store::{BlobStore, list_all};
use crate::task::{Format, ModelRef, ShardInput, ShardTask, TASK_VERSION};
use crate::{BlobUrl, Error, JobId, Result, ShardId};
use bytes::Bytes;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::collections::BTreeSet;
use std::sync::Arc;

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

/// A job's done units as `status` needs them: every done id (from a
/// listing), the complete buckets' summaries, and the done records of the
/// rest, read one by one.
#[derive(Debug, Clone, Default)]
pub struct DoneView {
    /// Planned units of this job with a done record.
    pub ids: BTreeSet<ShardId>,
    /// Done records of this job not covered by a summary.
    pub records: Vec<DoneRecord>,
    pub summaries: Vec<BucketSummary>,
    /// Done records of another job (or of no planned unit) under the prefix.
    pub foreign: u64,
}

impl DoneView {
    pub fn rows(&self) -> u64 {
        self.summaries.iter().map(|s| s.rows).sum::<u64>() + self.records.iter().map(|r| r.rows).sum::<u64>()
    }

    pub fn bad_rows(&self) -> u64 {
        self.summaries.iter().map(|s| s.bad_rows).sum::<u64>() + self.records.iter().map(|r| r.bad_rows).sum::<u64>()
    }

    pub fn first_start_ms(&self) -> Option<u64> {
        let s = self.summaries.iter().map(|s| s.started_at_ms);
        s.chain(self.records.iter().map(|r| r.started_at_ms)).min()
    }

    pub fn last_finish_ms(&self) -> Option<u64> {
        let s = self.summaries.iter().map(|s| s.finished_at_ms);
        s.chain(self.records.iter().map(|r| r.finished_at_ms)).max()
    }

    /// Pod-seconds by node kind, of every done unit that recorded usage.
    pub fn usage(&self) -> crate::cost::UsageTotals {
        let mut totals = crate::cost::UsageTotals::new();
        for s in &self.summaries {
            for (k, v) in &s.usage {
                *totals.entry(k.clone()).or_default() += v;
            }
        }
        for u in self.records.iter().filter_map(|r| r.usage.as_ref()) {
            crate::cost::add(&mut totals, u);
        }
        totals
    }
}

/// Decodes one ledger record by the rule of [`crate::compat`]: unknown
/// fields are skipped, a `min_reader_v` past [`LEDGER_VERSION`] refused.
pub fn from_record<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    crate::compat::decode(what, bytes, LEDGER_VERSION, "ledger record").map_err(|m| Error::invalid(what.to_string(), m))
}

/// The ledger of one job, rooted at its output prefix.
#[derive(Debug, Clone)]
pub struct Ledger {
    store: Arc<dyn BlobStore>,
    root: BlobUrl,
}

impl Ledger {
    pub fn new(store: Arc<dyn BlobStore>, output: &BlobUrl) -> Self {
        Self { store, root: output.as_prefix() }
    }

    pub fn store(&self) -> &Arc<dyn BlobStore> {
        &self.store
    }

    pub fn root(&self) -> &BlobUrl {
        &self.root
    }

    /// Where a shard's output goes: `part-SHARD.parquet` (`.csv`, `.jsonl`).
    pub fn output_url(&self, shard: &ShardId, format: crate::task::OutputFormat) -> BlobUrl {
        self.root.join(&format!("part-{shard}.{}", format.as_str()))
    }

    pub fn bad_rows_url(&self, shard: &ShardId) -> BlobUrl {
        self.root.join(&format!("_hourglass/bad/{shard}.csv"))
    }

    fn key(&self, rel: &str) -> String {
        self.root.join(rel).key().to_string()
    }

    async fn read_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.store.get(key).await {
            Ok(bytes) => from_record(&self.store.url(key).to_string(), &bytes).map(Some),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn write_json<T: Serialize>(&self, key: &str, value: &T) -> Result<()> {
        let body = serde_json::to_vec_pretty(value).expect("ledger records serialize");
        self.store.put(key, Bytes::from(body)).await
    }

    /// Every record under `folder`, in key order. The GETs run
    /// `READ_CONCURRENCY` at a time: one at a time, `status` of a 10k-shard
    /// job on S3 waited 10k round trips.
    async fn read_all<T: DeserializeOwned>(&self, folder: &str) -> Result<Vec<T>> {
        use futures::{StreamExt, TryStreamExt};
        let keys: Vec<String> = list_all(self.store.as_ref(), &self.key(folder))
            .await?
            .into_iter()
            .map(|m| m.key)
            .filter(|k| k.ends_with(".json"))
            .collect();
        let records: Vec<Option<T>> = futures::stream::iter(keys)
            .map(|key: String| async move { self.read_json::<T>(&key).await })
            .buffered(READ_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(records.into_iter().flatten().collect())
    }

    fn job_key(&self) -> String {
        self.key("_hourglass/job.json")
    }

    /// The batch job the prefix holds; a training job there is an error
    /// naming it (batch-only callers: submit, verify).
    pub async fn read_job(&self) -> Result<Option<JobRecord>> {
        match self.read_any_job().await? {
            None => Ok(None),
            Some(AnyJob::Infer(j)) => Ok(Some(j)),
            Some(AnyJob::Train(j)) => Err(Error::invalid(
                self.root.to_string(),
                format!("the prefix holds training job {}, not a batch job", j.job),
            )),
        }
    }

    /// The job the prefix holds, of either kind.
    pub async fn read_any_job(&self) -> Result<Option<AnyJob>> {
        let key = self.job_key();
        match self.store.get(&key).await {
            Ok(bytes) => AnyJob::from_json(&self.store.url(&key).to_string(), &bytes).map(Some),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The job record and its version (to tell a changed record from the
    /// one a worker cached), or `None` when the prefix holds no job.
    pub async fn read_job_versioned(&self) -> Result<Option<(AnyJob, String)>> {
        let version = match self.store.head(&self.job_key()).await {
            Ok(meta) => meta.version,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(self.read_any_job().await?.map(|r| (r, version)))
    }

    /// The version of `job.json`, or `None` when there is none.
    pub async fn job_version(&self) -> Result<Option<String>> {
        match self.store.head(&self.job_key()).await {
            Ok(meta) => Ok(Some(meta.version)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates `job.json` unless the prefix already holds one: a prefix
    /// belongs to one job. Returns whether this call created it.
    pub async fn create_job(&self, job: &JobRecord) -> Result<bool> {
        let body = serde_json::to_vec_pretty(&job.compacted()).expect("ledger records serialize");
        self.store.put_if_absent(&self.job_key(), Bytes::from(body)).await
    }

    /// `create_job` for a training job.
    pub async fn create_train_job(&self, job: &crate::train::TrainJobRecord) -> Result<bool> {
        let body = serde_json::to_vec_pretty(job).expect("ledger records serialize");
        self.store.put_if_absent(&self.job_key(), Bytes::from(body)).await
    }

    /// `update_job` for a training job.
    pub async fn update_train_job(&self, job: &crate::train::TrainJobRecord) -> Result<()> {
        self.write_json(&self.job_key(), job).await
    }

    /// A training job's promotion decision, once made.
    pub async fn read_promotion(&self) -> Result<Option<crate::train::PromotionRecord>> {
        self.read_json(&self.key("_hourglass/promotion.json")).await
    }

    /// Records the promotion decision; of two finalizers racing, the first
    /// record stays (the decision is the same, its time is not).
    pub async fn create_promotion(&self, record: &crate::train::PromotionRecord) -> Result<bool> {
        let body = serde_json::to_vec_pretty(record).expect("ledger records serialize");
        self.store.put_if_absent(&self.key("_hourglass/promotion.json"), Bytes::from(body)).await
    }

    pub async fn read_registration(&self, trial: &ShardId) -> Result<Option<crate::train::Registration>> {
        self.read_json(&self.key(&format!("_hourglass/registered/{trial}.json"))).await
    }

    /// Records the version a trial claimed unless an earlier attempt did;
    /// returns whether this call recorded it.
    pub async fn create_registration(&self, record: &crate::train::Registration) -> Result<bool> {
        let body = serde_json::to_vec_pretty(record).expect("ledger records serialize");
        let key = self.key(&format!("_hourglass/registered/{}.json", record.trial));
        self.store.put_if_absent(&key, Bytes::from(body)).await
    }

    /// Where a trial's trainer log is kept.
    pub fn trial_log_url(&self, trial: &ShardId) -> BlobUrl {
        self.root.join(&format!("_hourglass/logs/{trial}.log"))
    }

    /// Rewrites the record of the job the prefix already holds (a resume
    /// with a new deadline); never used to take a prefix over.
    pub async fn update_job(&self, job: &JobRecord) -> Result<()> {
        self.write_json(&self.job_key(), &job.compacted()).await
    }

    /// Deletes what a job wrote under the prefix (outputs, ledger,
    /// `_SUCCESS`), leaving other objects alone; for `submit --replace`.
    pub async fn clear(&self) -> Result<usize> {
        let root = self.root.key().to_string();
        let mut deleted = 0;
        for meta in list_all(self.store.as_ref(), &root).await? {
            let rel = &meta.key[root.len()..];
            let ours =
                rel.starts_with("_hourglass/") || rel == "_SUCCESS" || (rel.starts_with("part-") && !rel.contains('/'));
            if ours {
                self.store.delete(&meta.key).await?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    pub async fn read_done(&self, shard: &ShardId) -> Result<Option<DoneRecord>> {
        self.read_json(&self.key(&format!("_hourglass/done/{shard}.json"))).await
    }

    /// Creates the done record unless the shard has one: of two attempts
    /// that both scored the shard, exactly one records it. Returns whether
    /// this call did. A failed record of the shard may stay behind: a done
    /// record always wins over it, so nothing is deleted here (a worker
    /// needs no delete right).
    pub async fn create_done(&self, done: &DoneRecord) -> Result<bool> {
        let body = serde_json::to_vec_pretty(done).expect("ledger records serialize");
        self.store.put_if_absent(&self.key(&format!("_hourglass/done/{}.json", done.shard)), Bytes::from(body)).await
    }

    pub async fn read_failed(&self, shard: &ShardId) -> Result<Option<FailedRecord>> {
        self.read_json(&self.key(&format!("_hourglass/failed/{shard}.json"))).await
    }

    pub async fn write_failed(&self, failed: &FailedRecord) -> Result<()> {
        self.write_json(&self.key(&format!("_hourglass/failed/{}.json", failed.shard)), failed).await
    }

    /// Removes a shard's failed record (it is being tried again). Call it
    /// only for shards listed by `failed_shards`: deleting what does not
    /// exist needs rights a least-privilege role may lack.
    pub async fn clear_failed(&self, shard: &ShardId) -> Result<()> {
        self.store.delete(&self.key(&format!("_hourglass/failed/{shard}.json"))).await
    }

    /// Shards with a done record, from a listing alone.
    pub async fn done_shards(&self) -> Result<BTreeSet<ShardId>> {
        self.shards_in("_hourglass/done/").await
    }

    /// Shards with a failed record, from a listing alone.
    pub async fn failed_shards(&self) -> Result<BTreeSet<ShardId>> {
        self.shards_in("_hourglass/failed/").await
    }

    async fn shards_in(&self, folder: &str) -> Result<BTreeSet<ShardId>> {
        let prefix = self.key(folder);
        Ok(list_all(self.store.as_ref(), &prefix)
            .await?
            .into_iter()
            .filter_map(|m| ShardId::parse(m.key.strip_prefix(&prefix)?.strip_suffix(".json")?).ok())
            .collect())
    }

    pub async fn done_records(&self) -> Result<Vec<DoneRecord>> {
        self.read_all("_hourglass/done/").await
    }

    pub async fn failed_records(&self) -> Result<Vec<FailedRecord>> {
        self.read_all("_hourglass/failed/").await
    }

    pub async fn success(&self) -> Result<Option<SuccessRecord>> {
        self.read_json(&self.key("_SUCCESS")).await
    }

    /// Writes `_SUCCESS` if every planned shard has a done record of this
    /// job. Returns whether this call wrote it: with `put_if_absent`, of any
    /// number of workers finishing the last shards at once, exactly one
    /// does. A done record of another job under the prefix is an error:
    /// the prefix's outputs cannot be trusted.
    pub async fn try_finalize(&self, job: &JobRecord) -> Result<bool> {
        self.try_finalize_any(&AnyJob::Infer(job.clone())).await
    }

    /// Whether every planned unit of `job` has a done record (and none of
    /// another job is under the prefix), with the done records when so.
    pub async fn all_done(&self, job: &AnyJob) -> Result<Option<Vec<DoneRecord>>> {
        let done = self.done_shards().await?;
        let units = job.units();
        if !units.iter().all(|(s, _)| done.contains(*s)) {
            return Ok(None);
        }
        let planned: BTreeSet<&ShardId> = units.iter().map(|(s, _)| *s).collect();
        let mut records = Vec::new();
        for record in self.done_records().await? {
            if record.job != *job.job() {
                return Err(Error::invalid(
                    self.root.join(&format!("_hourglass/done/{}.json", record.shard)).to_string(),
                    format!("done record of job {}, but the prefix holds job {}", record.job, job.job()),
                ));
            }
            if planned.contains(&record.shard) {
                records.push(record);
            }
        }
        Ok(Some(records))
    }

    /// Whether `unit`'s done record may have completed the job, in O(1)
    /// store requests per unit on average, so a worker need not list every
    /// done record after every shard (at 100k shards that was 100 LIST
    /// pages per shard). Units go in buckets by their id without its last
    /// three characters (≤1000 planned ids per bucket; one LIST page):
    /// 1. list the unit's bucket of done records; not all there: `false`;
    /// 2. mark the bucket complete (`_hourglass/buckets/JOB/bB.json`, put
    ///    if absent; the unit that created the mark writes the bucket's
    ///    summary) and list the markers (one page per 1000 buckets);
    ///    `true` when every bucket of the job is marked.
    ///
    /// Of any units finishing at once, the last to list sees the others'
    /// records (each writes before it lists), so one of them marks the
    /// bucket, and of the buckets' markers the last created is listed
    /// after all the others: one unit answers `true`.
    /// `true` is a hint, not a verdict: `try_finalize_any` checks every
    /// record before writing `_SUCCESS`. Markers are per job id, so a
    /// reused prefix's old markers count for nothing.
    pub async fn may_complete(&self, job: &AnyJob, unit: &ShardId) -> Result<bool> {
        let bucket = bucket_of(unit);
        let units = job.units();
        let done_folder = self.key("_hourglass/done/");
        let listed: BTreeSet<ShardId> = list_all(self.store.as_ref(), &format!("{done_folder}{bucket}"))
            .await?
            .into_iter()
            .filter_map(|m| ShardId::parse(m.key.strip_prefix(&done_folder)?.strip_suffix(".json")?).ok())
            .collect();
        if !units.iter().filter(|(s, _)| bucket_of(s) == bucket).all(|(s, _)| listed.contains(*s)) {
            return Ok(false);
        }
        let markers = self.key(&format!("_hourglass/buckets/{}/", job.job()));
        // Every unit that sees its bucket complete marks it; the one whose
        // mark created the marker carries on (the others stop here): it
        // summarizes the bucket's records and lists the markers. The last
        // marker created is listed after every other, so its creator sees
        // the job complete. Should that creator die in between, `status`
        // finishes the job (as it does for a worker that died between its
        // done record and `_SUCCESS`), reading that bucket's records.
        if !self.store.put_if_absent(&format!("{markers}b{bucket}.json"), Bytes::from_static(b"{}")).await? {
            return Ok(false);
        }
        let members: Vec<&ShardId> = units.iter().map(|(s, _)| *s).filter(|s| bucket_of(s) == bucket).collect();
        let Some(summary) = self.summarize(job, bucket, &members).await? else {
            // Another job's record: the full check says so.
            return Ok(true);
        };
        let body = serde_json::to_vec_pretty(&summary).expect("ledger records serialize");
        self.store.put_if_absent(&self.summary_key(job, bucket), Bytes::from(body)).await?;
        let needed: BTreeSet<&str> = units.iter().map(|(s, _)| bucket_of(s)).collect();
        if needed.len() == 1 {
            return Ok(true);
        }
        let marked: BTreeSet<String> = list_all(self.store.as_ref(), &markers)
            .await?
            .into_iter()
            .filter_map(|m| Some(m.key.strip_prefix(&markers)?.strip_prefix('b')?.strip_suffix(".json")?.to_string()))
            .collect();
        Ok(needed.iter().all(|b| marked.contains(*b)))
    }

    fn summary_key(&self, job: &AnyJob, bucket: &str) -> String {
        self.key(&format!("_hourglass/summaries/{}/b{bucket}.json", job.job()))
    }

    /// The summary of a complete bucket from its members' done records;
    /// `None` when one of them is another job's.
    async fn summarize(&self, job: &AnyJob, bucket: &str, members: &[&ShardId]) -> Result<Option<BucketSummary>> {
        use futures::{StreamExt, TryStreamExt};
        let owned: Vec<ShardId> = members.iter().map(|s| (*s).clone()).collect();
        let records: Vec<Option<DoneRecord>> = futures::stream::iter(owned)
            .map(|s: ShardId| async move { self.read_done(&s).await })
            .buffered(READ_CONCURRENCY)
            .try_collect()
            .await?;
        let mut summary = BucketSummary {
            v: LEDGER_VERSION,
            job: job.job().clone(),
            bucket: bucket.to_string(),
            shards: 0,
            rows: 0,
            bad_rows: 0,
            started_at_ms: u64::MAX,
            finished_at_ms: 0,
            usage: Default::default(),
        };
        for record in records {
            let Some(r) = record.filter(|r| r.job == *job.job()) else { return Ok(None) };
            summary.shards += 1;
            summary.rows += r.rows;
            summary.bad_rows += r.bad_rows;
            summary.started_at_ms = summary.started_at_ms.min(r.started_at_ms);
            summary.finished_at_ms = summary.finished_at_ms.max(r.finished_at_ms);
            if let Some(u) = &r.usage {
                crate::cost::add(&mut summary.usage, u);
            }
        }
        Ok(Some(summary))
    }

    /// The complete buckets' summaries of `job` that hold what the plan
    /// says they should (this job's id, every planned unit of the bucket).
    pub async fn bucket_summaries(&self, job: &AnyJob) -> Result<Vec<BucketSummary>> {
        let mut members: std::collections::BTreeMap<&str, u64> = Default::default();
        for (s, _) in job.units() {
            *members.entry(bucket_of(s)).or_default() += 1;
        }
        // Unreadable summaries only cost speed: their buckets' records are
        // read instead.
        let summaries: Vec<BucketSummary> =
            self.read_all(&format!("_hourglass/summaries/{}/", job.job())).await.unwrap_or_default();
        Ok(summaries
            .into_iter()
            .filter(|s| s.job == *job.job() && members.get(s.bucket.as_str()) == Some(&s.shards))
            .collect())
    }

    /// What `status` shows of the done units: a listing, the summaries of
    /// complete buckets, and the done records of the rest (all of them for
    /// a training job, whose status shows every trial). At 100k shards that
    /// is 100 LIST pages and 100 summaries instead of 100k GETs.
    pub async fn done_view(&self, job: &AnyJob) -> Result<DoneView> {
        use futures::{StreamExt, TryStreamExt};
        let units = job.units();
        let planned: BTreeSet<&ShardId> = units.iter().map(|(s, _)| *s).collect();
        let listed = self.done_shards().await?;
        let summaries = match job {
            AnyJob::Infer(_) => self.bucket_summaries(job).await?,
            AnyJob::Train(_) => Vec::new(),
        };
        let covered: BTreeSet<String> = summaries.iter().map(|s| s.bucket.clone()).collect();
        let to_read: Vec<ShardId> =
            listed.iter().filter(|s| !planned.contains(s) || !covered.contains(bucket_of(s))).cloned().collect();
        let records: Vec<Option<DoneRecord>> = futures::stream::iter(to_read)
            .map(|s: ShardId| async move { self.read_done(&s).await })
            .buffered(READ_CONCURRENCY)
            .try_collect()
            .await?;
        let mut view = DoneView { summaries, ..Default::default() };
        for r in records.into_iter().flatten() {
            if r.job == *job.job() && planned.contains(&r.shard) {
                view.records.push(r);
            } else {
                view.foreign += 1;
            }
        }
        let read: BTreeSet<&ShardId> = view.records.iter().map(|r| &r.shard).collect();
        let ids: BTreeSet<ShardId> = listed
            .iter()
            .filter(|s| planned.contains(s) && (covered.contains(bucket_of(s)) || read.contains(s)))
            .cloned()
            .collect();
        view.ids = ids;
        Ok(view)
    }

    /// `try_finalize` for a job of either kind.
    pub async fn try_finalize_any(&self, job: &AnyJob) -> Result<bool> {
        // A listing first: the common call (not the last unit) stops here.
        let listed = self.done_shards().await?;
        if !job.units().iter().all(|(s, _)| listed.contains(*s)) {
            return Ok(false);
        }
        if self.success().await?.is_some() {
            return Ok(false);
        }
        let units = job.units();
        let planned: BTreeSet<&ShardId> = units.iter().map(|(s, _)| *s).collect();
        let buckets: BTreeSet<&str> = planned.iter().map(|s| bucket_of(s)).collect();
        let summaries = self.bucket_summaries(job).await?;
        let rows = if listed.iter().all(|s| planned.contains(s)) && summaries.len() == buckets.len() {
            // Every bucket summarized from this job's records: no record
            // needs reading again.
            summaries.iter().map(|s| s.rows).sum()
        } else {
            let Some(done) = self.all_done(job).await? else { return Ok(false) };
            done.iter().map(|d| d.rows).sum()
        };
        let record = SuccessRecord {
            v: LEDGER_VERSION,
            job: job.job().clone(),
            shards: job.units().len() as u64,
            rows,
            finished_at_ms: now_ms(),
        };
        let body = serde_json::to_vec_pretty(&record).expect("ledger records serialize");
        self.store.put_if_absent(&self.key("_SUCCESS"), Bytes::from(body)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::CountingStore;

    fn job(root: &BlobUrl, shards: usize) -> AnyJob {
        let input = ShardInput {
            url: root.clone(),
            format: Format::Csv,
            range: None,
            columns: None,
            row_groups: None,
            version: None,
            delimiter: None,
            compression: None,
            skip_header: false,
        };
        AnyJob::Infer(JobRecord {
            v: LEDGER_VERSION,
            job: JobId::parse("j").unwrap(),
            spec: JobSpec {
                input: root.clone(),
                model: root.clone(),
                output: root.clone(),
                format: None,
                id_column: "id".into(),
                shard_bytes: 1,
                max_bad_rows: 0,
                max_line_bytes: crate::task::DEFAULT_MAX_LINE_BYTES,
                deadline_unix_ms: None,
                csv: Default::default(),
                keep_columns: Vec::new(),
                keep_all: false,
                output_format: Default::default(),
            },
            model_sha256: String::new(),
            submitted_at_ms: 0,
            rows_estimate: shards as u64,
            files: vec![],
            skipped_files: vec![],
            model_registry: None,
            shards: (0..shards)
                .map(|i| ShardPlan { shard: ShardId::from_index(i), input: input.clone(), rows_estimate: 1 })
                .collect(),
        })
    }

    fn done(root: &BlobUrl, shard: &ShardId) -> DoneRecord {
        DoneRecord {
            v: LEDGER_VERSION,
            job: JobId::parse("j").unwrap(),
            shard: shard.clone(),
            rows: 1,
            bad_rows: 0,
            seconds: 0.1,
            started_at_ms: 0,
            finished_at_ms: 1,
            worker: "w".into(),
            attempt: 1,
            output: root.clone(),
            sha256: String::new(),
            trial: None,
            device: None,
            usage: None,
        }
    }

    /// `job.json` holds each CSV file's header once; reading it gives every
    /// shard its header back, and a record written before (headers in the
    /// shards) reads the same.
    #[tokio::test]
    async fn job_json_holds_each_header_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = BlobUrl::parse(&format!("file://{}/", dir.path().display())).unwrap();
        let ledger = Ledger::new(crate::store::open(&root).unwrap(), &root);
        let AnyJob::Infer(mut job) = job(&root, 3000) else { unreachable!() };
        let header: Vec<String> = (0..40).map(|i| format!("feature_{i:02}")).collect();
        let (a, b) = (root.join("a.csv"), root.join("b.parquet"));
        for (i, shard) in job.shards.iter_mut().enumerate() {
            let csv = i % 3 != 0;
            shard.input.url = if csv { a.clone() } else { b.clone() };
            shard.input.columns = csv.then(|| header.clone());
        }
        job.files = [&a, &b]
            .into_iter()
            .map(|u| InputFileRecord { url: u.clone(), size: 1, version: None, columns: None })
            .collect();
        assert!(ledger.create_job(&job).await.unwrap());
        let text = std::fs::read_to_string(dir.path().join("_hourglass/job.json")).unwrap();
        assert_eq!(text.matches("feature_39").count(), 1, "the header is written once");
        let Some(AnyJob::Infer(read)) = ledger.read_any_job().await.unwrap() else { panic!("no job") };
        assert_eq!(read, job, "reading gives every shard its header back");
        // A record written before compaction reads the same.
        let old = serde_json::to_vec(&job).unwrap();
        let AnyJob::Infer(old) = AnyJob::from_json("old", &old).unwrap() else { unreachable!() };
        assert_eq!(old, job);
    }

    #[test]
    fn buckets_are_ids_without_their_last_three_characters() {
        assert_eq!(bucket_of(&ShardId::from_index(12)), ShardId::from_index(999).as_str().trim_end_matches("999"));
        assert_ne!(bucket_of(&ShardId::from_index(999)), bucket_of(&ShardId::from_index(1000)));
        assert_eq!(bucket_of(&ShardId::parse("trial-0042").unwrap()), "trial-0");
    }

    /// 1,200 shards (two buckets) done in a scrambled order: only the last
    /// one's check says the job may be complete, and the checks cost about
    /// one request per shard (a full listing after every shard cost two
    /// pages each here, 100 at 100k shards).
    #[tokio::test]
    async fn completion_is_checked_in_one_listing_per_shard() {
        let dir = tempfile::tempdir().unwrap();
        let root = BlobUrl::parse(&format!("file://{}/", dir.path().display())).unwrap();
        let counting = Arc::new(CountingStore::new(crate::store::open(&root).unwrap()));
        let ledger = Ledger::new(counting.clone(), &root);
        let n = 1200;
        let job = job(&root, n);
        let mut order: Vec<usize> = (0..n).collect();
        let mut rng = crate::rng::SplitMix64::new(7);
        for i in (1..n).rev() {
            order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        let mut checks = 0u64;
        let requests = || counting.requests();
        for (k, &i) in order.iter().enumerate() {
            let shard = ShardId::from_index(i);
            // What a worker does per shard: is it done? record it, check.
            assert!(ledger.read_done(&shard).await.unwrap().is_none());
            assert!(ledger.create_done(&done(&root, &shard)).await.unwrap());
            let before = requests();
            let complete = ledger.may_complete(&job, &shard).await.unwrap();
            checks += requests() - before;
            assert_eq!(complete, k == n - 1, "after {} of {n}", k + 1);
            if k % 150 == 0 {
                // What status sees mid-job: summaries and records add up.
                let before = requests();
                let view = ledger.done_view(&job).await.unwrap();
                counting.uncount(requests() - before);
                assert_eq!((view.ids.len(), view.rows(), view.foreign), (k + 1, k as u64 + 1, 0));
            }
        }
        // The checks' own cost: a listing of one bucket per shard, and the
        // two complete buckets' summaries (1000 + 200 GETs) once.
        let per_shard = checks as f64 / n as f64;
        assert!(per_shard < 2.05, "{per_shard} requests per shard");
        let before = requests();
        assert!(ledger.try_finalize_any(&job).await.unwrap());
        assert!(requests() - before < 12, "the final check reads summaries, not every record");
        // Over the ledger's life (outputs aside): ≤ 5 requests per shard.
        let life = requests() as f64 / n as f64;
        assert!(life <= 5.0, "{life} store requests per shard");
        eprintln!("{n} shards: {per_shard:.3} requests per shard for the checks, {life:.3} over the ledger's life");
        assert_eq!(ledger.success().await.unwrap().unwrap().rows, n as u64);
        let view = ledger.done_view(&job).await.unwrap();
        assert_eq!((view.summaries.len(), view.records.len(), view.rows()), (2, 0, n as u64));
    }

    /// The last two shards of two buckets finishing at once: whatever the
    /// interleaving, at least one check says complete.
    #[tokio::test]
    async fn racing_last_shards_never_both_miss_completion() {
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let root = BlobUrl::parse(&format!("file://{}/", dir.path().display())).unwrap();
            let ledger = Ledger::new(crate::store::open(&root).unwrap(), &root);
            let job = job(&root, 1001);
            let (a, b) = (ShardId::from_index(999), ShardId::from_index(1000));
            for i in 0..999 {
                ledger.create_done(&done(&root, &ShardId::from_index(i))).await.unwrap();
            }
            let finish = |s: ShardId| {
                let (ledger, job, root) = (ledger.clone(), job.clone(), root.clone());
                tokio::spawn(async move {
                    ledger.create_done(&done(&root, &s)).await.unwrap();
                    ledger.may_complete(&job, &s).await.unwrap()
                })
            };
            let (ra, rb) = (finish(a), finish(b));
            let (ra, rb) = (ra.await.unwrap(), rb.await.unwrap());
            assert!(ra || rb, "neither of the last two shards saw the job complete");
        }
    }
}
