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
use crate::task::{Format, ShardInput};
use crate::{BlobUrl, Error, JobId, Result, ShardId};
use bytes::Bytes;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::collections::BTreeSet;
use std::sync::Arc;

pub const LEDGER_VERSION: u32 = 1;

/// What the user asked for; the job id is derived from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub input: BlobUrl,
    pub model: BlobUrl,
    pub output: BlobUrl,
    pub format: Option<Format>,
    pub id_column: String,
    pub shard_bytes: u64,
    pub max_bad_rows: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_unix_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardPlan {
    pub shard: ShardId,
    pub input: ShardInput,
    pub rows_estimate: u64,
}

/// An input file as it was when the job was planned. Shards are byte
/// ranges and row groups of these exact files: a resumed job checks they
/// have not changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputFileRecord {
    pub url: BlobUrl,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRecord {
    pub v: u32,
    pub job: JobId,
    pub spec: JobSpec,
    pub model_sha256: String,
    pub submitted_at_ms: u64,
    pub rows_estimate: u64,
    pub files: Vec<InputFileRecord>,
    pub shards: Vec<ShardPlan>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailedRecord {
    pub v: u32,
    pub job: JobId,
    pub shard: ShardId,
    pub error_kind: String,
    pub message: String,
    pub attempts: u32,
    pub worker: String,
    pub failed_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuccessRecord {
    pub v: u32,
    pub job: JobId,
    pub shards: u64,
    pub rows: u64,
    pub finished_at_ms: u64,
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
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

    pub fn output_url(&self, shard: &ShardId) -> BlobUrl {
        self.root.join(&format!("part-{shard}.parquet"))
    }

    pub fn bad_rows_url(&self, shard: &ShardId) -> BlobUrl {
        self.root.join(&format!("_hourglass/bad/{shard}.csv"))
    }

    fn key(&self, rel: &str) -> String {
        self.root.join(rel).key().to_string()
    }

    async fn read_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.store.get(key).await {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::invalid(self.store.url(key).to_string(), format!("corrupt ledger record: {e}"))),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn write_json<T: Serialize>(&self, key: &str, value: &T) -> Result<()> {
        let body = serde_json::to_vec_pretty(value).expect("ledger records serialize");
        self.store.put(key, Bytes::from(body)).await
    }

    /// Reads every record under a ledger folder, in key order.
    async fn read_all<T: DeserializeOwned>(&self, folder: &str) -> Result<Vec<T>> {
        let mut out = Vec::new();
        for meta in list_all(self.store.as_ref(), &self.key(folder)).await? {
            if !meta.key.ends_with(".json") {
                continue;
            }
            if let Some(r) = self.read_json(&meta.key).await? {
                out.push(r);
            }
        }
        Ok(out)
    }

    pub async fn read_job(&self) -> Result<Option<JobRecord>> {
        self.read_json(&self.key("_hourglass/job.json")).await
    }

    pub async fn write_job(&self, job: &JobRecord) -> Result<()> {
        self.write_json(&self.key("_hourglass/job.json"), job).await
    }

    pub async fn read_done(&self, shard: &ShardId) -> Result<Option<DoneRecord>> {
        self.read_json(&self.key(&format!("_hourglass/done/{shard}.json"))).await
    }

    /// Writes the done record and clears any failed record of the shard
    /// (a resubmitted job may succeed where an earlier attempt gave up).
    pub async fn write_done(&self, done: &DoneRecord) -> Result<()> {
        self.write_json(&self.key(&format!("_hourglass/done/{}.json", done.shard)), done).await?;
        self.store.delete(&self.key(&format!("_hourglass/failed/{}.json", done.shard))).await
    }

    pub async fn write_failed(&self, failed: &FailedRecord) -> Result<()> {
        self.write_json(&self.key(&format!("_hourglass/failed/{}.json", failed.shard)), failed).await
    }

    /// Removes a shard's failed record (it is being tried again).
    pub async fn clear_failed(&self, shard: &ShardId) -> Result<()> {
        self.store.delete(&self.key(&format!("_hourglass/failed/{shard}.json"))).await
    }

    /// Shards with a done record, from a listing alone.
    pub async fn done_shards(&self) -> Result<BTreeSet<ShardId>> {
        let prefix = self.key("_hourglass/done/");
        Ok(list_all(self.store.as_ref(), &prefix)
            .await?
            .into_iter()
            .filter_map(|m| m.key.strip_prefix(&prefix)?.strip_suffix(".json").map(ShardId::new))
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

    /// Writes `_SUCCESS` if every planned shard has a done record. Returns
    /// whether this call wrote it: with `put_if_absent`, of any number of
    /// workers finishing the last shards at once, exactly one does.
    pub async fn try_finalize(&self, job: &JobRecord) -> Result<bool> {
        let done = self.done_shards().await?;
        if !job.shards.iter().all(|s| done.contains(&s.shard)) {
            return Ok(false);
        }
        if self.success().await?.is_some() {
            return Ok(false);
        }
        let rows = self.done_records().await?.iter().map(|d| d.rows).sum();
        let record = SuccessRecord {
            v: LEDGER_VERSION,
            job: job.job.clone(),
            shards: job.shards.len() as u64,
            rows,
            finished_at_ms: now_ms(),
        };
        let body = serde_json::to_vec_pretty(&record).expect("ledger records serialize");
        self.store.put_if_absent(&self.key("_SUCCESS"), Bytes::from(body)).await
    }
}
