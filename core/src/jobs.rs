//! The jobs index: where a submit registers each job it enqueues on a
//! queue, so that one scaler can follow every live job on its queue (a
//! nightly run and the S3-triggered jobs beside it), not one ledger.
//!
//! Layout under the index root (`--jobs-index`, a store prefix):
//! `QUEUE/YYYY-MM-DD/JOB.json`, the day being the submit's (UTC). `QUEUE`
//! is the queue's own name (`ctr-nightly` for `sqs://ctr-nightly` and for
//! its https URL alike; a local queue's file stem and a hash of its path).
//! A reader lists only the last few days' folders, so the index is never
//! read whole however many nights it holds, and nothing has to delete
//! entries: a finished job is told by its ledger, not by the index.

use std::sync::Arc;

use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::store::{self, BlobStore};
use crate::{BlobUrl, JobId, Result};

/// One registered job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// The contract version ([`crate::compat`]); entries of releases
    /// before it was written read as 1.
    #[serde(default = "index_version")]
    pub v: u32,
    pub job: JobId,
    /// The job's output prefix: its ledger.
    pub output: String,
    /// The queue its shards went to, as the submit named it.
    pub queue: String,
    pub submitted_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_unix_ms: Option<u64>,
}

/// The version of the index entries this build writes.
pub const INDEX_VERSION: u32 = 1;

fn index_version() -> u32 {
    INDEX_VERSION
}

pub struct JobsIndex {
    store: Arc<dyn BlobStore>,
    root: BlobUrl,
}

/// The folder a queue's jobs go in: its name, the same however the queue
/// URL is spelled.
pub fn queue_key(queue: &str) -> String {
    if let Some(name) = queue.strip_prefix("sqs://") {
        return sanitize(name);
    }
    if queue.starts_with("https://") || queue.starts_with("http://") {
        return sanitize(queue.trim_end_matches('/').rsplit('/').next().unwrap_or(queue));
    }
    let path = queue.strip_prefix("local://").unwrap_or(queue);
    let stem = std::path::Path::new(path).file_stem().and_then(|s| s.to_str()).unwrap_or("queue");
    let hash = hex::encode(sha2::Sha256::digest(path.as_bytes()));
    format!("local-{}-{}", sanitize(stem), &hash[..8])
}

fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' }).collect()
}

fn day_of(ms: u64) -> String {
    let ts = jiff::Timestamp::from_millisecond(ms as i64).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    ts.to_zoned(jiff::tz::TimeZone::UTC).date().to_string()
}

impl JobsIndex {
    pub fn open(root: &BlobUrl) -> Result<Self> {
        let root = root.as_prefix();
        Ok(Self { store: store::open(&root)?, root })
    }

    pub fn root(&self) -> &BlobUrl {
        &self.root
    }

    fn key(&self, queue: &str, day: &str, job: Option<&JobId>) -> String {
        let rel = match job {
            Some(job) => format!("{}/{day}/{job}.json", queue_key(queue)),
            None => format!("{}/{day}/", queue_key(queue)),
        };
        self.root.join(&rel).key().to_string()
    }

    /// Registers (or re-registers, on a resume) a job. A plain put: the
    /// entry is the same whoever writes it last.
    pub async fn register(&self, entry: &IndexEntry) -> Result<()> {
        let key = self.key(&entry.queue, &day_of(entry.submitted_at_ms), Some(&entry.job));
        let body = serde_json::to_vec(entry).expect("entries serialize");
        self.store.put(&key, body.into()).await
    }

    /// Jobs registered on `queue` on the `days` UTC days up to `now_ms`'s:
    /// one LIST per day, then a GET per entry (`known` ones are skipped:
    /// callers pass the jobs they already follow).
    pub async fn recent(
        &self,
        queue: &str,
        now_ms: u64,
        days: u32,
        known: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<IndexEntry>> {
        let mut out = Vec::new();
        for back in 0..u64::from(days.max(1)) {
            let day = day_of(now_ms.saturating_sub(back * 86_400_000));
            let prefix = self.key(queue, &day, None);
            let listed: Vec<_> = self.store.list(&prefix).try_collect().await?;
            for meta in listed {
                let name = meta.key.rsplit('/').next().unwrap_or("").trim_end_matches(".json").to_string();
                if known(&name) {
                    continue;
                }
                match self.store.get(&meta.key).await {
                    Ok(bytes) => {
                        match crate::ledger::from_record::<IndexEntry>(&self.store.url(&meta.key).to_string(), &bytes) {
                            Ok(entry) => out.push(entry),
                            Err(e) => return Err(e),
                        }
                    }
                    // Deleted between the listing and the read.
                    Err(e) if e.kind() == crate::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_has_one_key_however_it_is_spelled() {
        assert_eq!(queue_key("sqs://ctr-nightly"), "ctr-nightly");
        assert_eq!(queue_key("https://sqs.eu-west-1.amazonaws.com/123456789012/ctr-nightly"), "ctr-nightly");
        assert_eq!(queue_key("http://127.0.0.1:5000/123456789012/ctr-nightly/"), "ctr-nightly");
        let a = queue_key("local:///var/lib/hourglass/q.db");
        assert!(a.starts_with("local-q-") && a.len() == "local-q-".len() + 8, "{a}");
        assert_ne!(a, queue_key("local:///tmp/q.db"), "two local queues of one name differ");
    }

    #[tokio::test]
    async fn recent_lists_only_the_last_days_of_one_queue() {
        let dir = tempfile::tempdir().unwrap();
        let root = BlobUrl::parse(dir.path().to_str().unwrap()).unwrap();
        let index = JobsIndex::open(&root).unwrap();
        let day = 86_400_000;
        let now = 20_000 * day + 3_600_000;
        let entry = |job: &str, queue: &str, at: u64| IndexEntry {
            v: INDEX_VERSION,
            job: JobId::parse(job).unwrap(),
            output: format!("s3://out/{job}/"),
            queue: queue.into(),
            submitted_at_ms: at,
            deadline_unix_ms: Some(at + 3_600_000),
        };
        for e in [
            entry("tonight", "sqs://q", now - 1000),
            entry("yesterday", "sqs://q", now - day),
            entry("last-week", "sqs://q", now - 7 * day),
            entry("other-queue", "sqs://other", now),
        ] {
            index.register(&e).await.unwrap();
        }
        let mut jobs: Vec<String> = index
            .recent("https://sqs.x/1/q", now, 2, &|_| false)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.job.to_string())
            .collect();
        jobs.sort();
        assert_eq!(jobs, ["tonight", "yesterday"]);
        let skipped = index.recent("sqs://q", now, 2, &|job| job == "tonight").await.unwrap();
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0], entry("yesterday", "sqs://q", now - day));
    }
}
