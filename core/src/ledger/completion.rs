//! How a job completes, exactly once: a unit's done record marks its
//! bucket complete when it is the bucket's last (a marker created if
//! absent, then a summary of the bucket's records), and the worker that
//! completes the last bucket checks every record and writes `_SUCCESS`
//! with create-if-absent. After `_SUCCESS` nothing under the prefix
//! changes.

use super::{
    AnyJob, BucketSummary, DoneRecord, JobRecord, LEDGER_VERSION, Ledger, READ_CONCURRENCY, SuccessRecord, bucket_of,
    keys, now_ms,
};
use crate::store::list_all;
use crate::{Error, Result, ShardId};
use bytes::Bytes;
use std::collections::BTreeSet;

impl Ledger {
    pub async fn success(&self) -> Result<Option<SuccessRecord>> {
        self.read_json(&self.key(keys::SUCCESS)).await
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
                    self.root.join(&keys::done(&record.shard)).to_string(),
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
        let done_folder = self.key(keys::DONE);
        let listed: BTreeSet<ShardId> = list_all(self.store.as_ref(), &format!("{done_folder}{bucket}"))
            .await?
            .into_iter()
            .filter_map(|m| ShardId::parse(m.key.strip_prefix(&done_folder)?.strip_suffix(".json")?).ok())
            .collect();
        if !units.iter().filter(|(s, _)| bucket_of(s) == bucket).all(|(s, _)| listed.contains(*s)) {
            return Ok(false);
        }
        let markers = self.key(&keys::bucket_markers(job.job()));
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
        self.key(&keys::summary(job.job(), bucket))
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
        self.store.put_if_absent(&self.key(keys::SUCCESS), Bytes::from(body)).await
    }
}
