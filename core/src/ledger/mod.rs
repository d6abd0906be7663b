//! The job ledger: records under the output prefix, in the same store as
//! the outputs, from which status, resume, scaling signals and finalize are
//! all derived. No database.
//!
//! - `keys`: where every record lives (the one table of keys, below);
//! - `records`: the records themselves, versioned (`job.json`, done and
//!   failed records, summaries, `_SUCCESS`);
//! - this module: reading and writing them (`Ledger`);
//! - `completion`: how a job completes (bucket markers and summaries, the
//!   last unit's check, `_SUCCESS` written once);
//! - `view`: what `status` and the scaler read (`DoneView`).
//!
//! ```text
//! <output>/part-<shard>.<ext>                         outputs, one per shard, deterministic keys
//! <output>/_hourglass/job.json                        the plan: spec, unit list, estimates, model sha256
//! <output>/_hourglass/done/<unit>.json                written after the output, before the ack
//! <output>/_hourglass/failed/<unit>.json              written when a unit gives up
//! <output>/_hourglass/bad/<shard>.csv                 skipped rows with their reasons
//! <output>/_hourglass/buckets/<job>/b<bucket>.json    marker: the bucket's units are all done
//! <output>/_hourglass/summaries/<job>/b<bucket>.json  a complete bucket's done records in one object
//! <output>/_hourglass/registered/<trial>.json         a trial's registry version, claimed once
//! <output>/_hourglass/logs/<trial>.log                a trial's trainer output
//! <output>/_hourglass/promotion.json                  a training job's promotion decision
//! <output>/_SUCCESS                                   written once, when every unit is done
//! ```

mod completion;
pub mod keys;
mod records;
mod view;

pub use records::*;
pub use view::DoneView;

use crate::store::{BlobStore, list_all};
use crate::{BlobUrl, Error, Result, ShardId};
use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};
use std::collections::BTreeSet;
use std::sync::Arc;

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
        self.root.join(&keys::output(shard, format))
    }

    pub fn bad_rows_url(&self, shard: &ShardId) -> BlobUrl {
        self.root.join(&keys::bad_rows(shard))
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
        self.key(keys::JOB)
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
        self.read_json(&self.key(keys::PROMOTION)).await
    }

    /// Records the promotion decision; of two finalizers racing, the first
    /// record stays (the decision is the same, its time is not).
    pub async fn create_promotion(&self, record: &crate::train::PromotionRecord) -> Result<bool> {
        let body = serde_json::to_vec_pretty(record).expect("ledger records serialize");
        self.store.put_if_absent(&self.key(keys::PROMOTION), Bytes::from(body)).await
    }

    pub async fn read_registration(&self, trial: &ShardId) -> Result<Option<crate::train::Registration>> {
        self.read_json(&self.key(&keys::registered(trial))).await
    }

    /// Records the version a trial claimed unless an earlier attempt did;
    /// returns whether this call recorded it.
    pub async fn create_registration(&self, record: &crate::train::Registration) -> Result<bool> {
        let body = serde_json::to_vec_pretty(record).expect("ledger records serialize");
        let key = self.key(&keys::registered(&record.trial));
        self.store.put_if_absent(&key, Bytes::from(body)).await
    }

    /// Where a trial's trainer log is kept.
    pub fn trial_log_url(&self, trial: &ShardId) -> BlobUrl {
        self.root.join(&keys::trial_log(trial))
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
            let ours = keys::is_ledgers(rel);
            if ours {
                self.store.delete(&meta.key).await?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    pub async fn read_done(&self, shard: &ShardId) -> Result<Option<DoneRecord>> {
        self.read_json(&self.key(&keys::done(shard))).await
    }

    /// Creates the done record unless the shard has one: of two attempts
    /// that both scored the shard, exactly one records it. Returns whether
    /// this call did. A failed record of the shard may stay behind: a done
    /// record always wins over it, so nothing is deleted here (a worker
    /// needs no delete right).
    pub async fn create_done(&self, done: &DoneRecord) -> Result<bool> {
        let body = serde_json::to_vec_pretty(done).expect("ledger records serialize");
        self.store.put_if_absent(&self.key(&keys::done(&done.shard)), Bytes::from(body)).await
    }

    pub async fn read_failed(&self, shard: &ShardId) -> Result<Option<FailedRecord>> {
        self.read_json(&self.key(&keys::failed(shard))).await
    }

    pub async fn write_failed(&self, failed: &FailedRecord) -> Result<()> {
        self.write_json(&self.key(&keys::failed(&failed.shard)), failed).await
    }

    /// Removes a shard's failed record (it is being tried again). Call it
    /// only for shards listed by `failed_shards`: deleting what does not
    /// exist needs rights a least-privilege role may lack.
    pub async fn clear_failed(&self, shard: &ShardId) -> Result<()> {
        self.store.delete(&self.key(&keys::failed(shard))).await
    }

    /// Shards with a done record, from a listing alone.
    pub async fn done_shards(&self) -> Result<BTreeSet<ShardId>> {
        self.shards_in(keys::DONE).await
    }

    /// Shards with a failed record, from a listing alone.
    pub async fn failed_shards(&self) -> Result<BTreeSet<ShardId>> {
        self.shards_in(keys::FAILED).await
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
        self.read_all(keys::DONE).await
    }

    pub async fn failed_records(&self) -> Result<Vec<FailedRecord>> {
        self.read_all(keys::FAILED).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::JobId;
    use crate::store::CountingStore;
    use crate::task::{Format, ShardInput};

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
