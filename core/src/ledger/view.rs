//! What `status` and the scaler read of a job's progress: every done id
//! (one listing), the complete buckets' summaries, and the rest of the
//! done records one by one.

use super::{AnyJob, BucketSummary, DoneRecord, Ledger, READ_CONCURRENCY, bucket_of, keys};
use crate::{Result, ShardId};
use std::collections::BTreeSet;

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

impl Ledger {
    /// The complete buckets' summaries of `job` that hold what the plan
    /// says they should (this job's id, every planned unit of the bucket).
    pub async fn bucket_summaries(&self, job: &AnyJob) -> Result<Vec<BucketSummary>> {
        let mut members: std::collections::BTreeMap<&str, u64> = Default::default();
        for (s, _) in job.units() {
            *members.entry(bucket_of(s)).or_default() += 1;
        }
        // Unreadable summaries only cost speed: their buckets' records are
        // read instead.
        let summaries: Vec<BucketSummary> = self.read_all(&keys::summaries(job.job())).await.unwrap_or_default();
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
}
