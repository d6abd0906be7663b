//! What the live loop reads before each decision: the job's progress from
//! its ledger (rows left, deadline, measured throughput) and the queue's
//! depth. A training job counts the same way: each trial's backlog is the
//! training rows it reads, and its rate is what its own trials measured
//! (training rows per trial-second), never the batch jobs' scoring rate. The ledger is read incrementally: a listing of the done records
//! each tick, and a GET only for the records not seen before.

use std::collections::HashMap;
use std::time::Duration;

use hourglass_core::ledger::{AnyJob, DoneRecord, JobRecord, Ledger};
use hourglass_core::{BlobUrl, JobId, Result, ShardId};

use crate::policy::{History, PolicyConfig, Signals, decide};

/// Weight of the newest shard in the throughput average.
const EWMA_ALPHA: f64 = 0.2;

/// A job's progress as the ledger tells it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    pub job: Option<JobId>,
    /// Rows not yet done (planned estimates of the shards without a done
    /// record); `None` before the job record exists.
    pub backlog_rows: Option<u64>,
    pub deadline_unix_ms: Option<u64>,
    /// Rows/s of one shard slot, an EWMA over done records in finish order.
    pub rows_per_sec: Option<f64>,
    pub shards_total: u64,
    pub shards_done: u64,
    /// When the job was submitted (Unix ms): while shards remain, its oldest
    /// message has waited at most since then.
    pub submitted_at_ms: Option<u64>,
    /// Pod-seconds of its done units by node kind, for its cost.
    pub usage: hourglass_core::cost::UsageTotals,
}

/// Follows one job's ledger across ticks.
pub struct LedgerWatch {
    ledger: Ledger,
    job: Option<AnyJob>,
    done: HashMap<ShardId, u64>,
    ewma: Option<f64>,
    usage: hourglass_core::cost::UsageTotals,
    /// Only done records scored on this device class (`cpu`, `cuda`,
    /// `tensorrt`) or recording none feed the rate; `None`: all.
    device_class: Option<String>,
}

impl LedgerWatch {
    pub fn new(ledger: Ledger) -> Self {
        Self { ledger, job: None, done: HashMap::new(), ewma: None, usage: Default::default(), device_class: None }
    }

    /// Measures the rate on done records of this device class only (and
    /// those that record no device): the rows/s of a GPU pod are not a CPU
    /// pod's, and two fleets may share one queue.
    pub fn for_device_class(mut self, class: &str) -> Self {
        self.device_class = Some(class.to_string());
        self
    }

    fn measures(&self, record: &DoneRecord) -> bool {
        match (&self.device_class, &record.device) {
            (Some(class), Some(device)) => device.split(':').next() == Some(class.as_str()),
            _ => true,
        }
    }

    /// The output prefix this watch follows.
    pub fn root(&self) -> &BlobUrl {
        self.ledger.root()
    }

    pub async fn refresh(&mut self) -> Result<Progress> {
        let job = self.ledger.read_any_job().await?;
        if job.as_ref().map(|j| j.job()) != self.job.as_ref().map(|j| j.job()) {
            // A new job under the same prefix: start over.
            self.done.clear();
            self.ewma = None;
            self.usage.clear();
        }
        self.job = job;
        let listed = self.ledger.done_shards().await?;
        let mut fresh = Vec::new();
        for shard in listed.iter().filter(|s| !self.done.contains_key(*s)) {
            // Records of another job under the prefix are not progress.
            if let Some(record) = self.ledger.read_done(shard).await?
                && self.job.as_ref().is_some_and(|j| *j.job() == record.job)
            {
                fresh.push(record);
            }
        }
        fresh.sort_by_key(|r| r.finished_at_ms);
        for record in &fresh {
            if self.measures(record) {
                self.ewma = ewma(self.ewma, record);
            }
            self.done.insert(record.shard.clone(), record.rows);
            if let Some(u) = &record.usage {
                hourglass_core::cost::add(&mut self.usage, u);
            }
        }
        Ok(self.progress())
    }

    fn progress(&self) -> Progress {
        let Some(job) = &self.job else {
            return Progress { rows_per_sec: self.ewma, ..Progress::default() };
        };
        let units = job.units();
        let backlog = units.iter().filter(|(s, _)| !self.done.contains_key(*s)).map(|(_, r)| r).sum();
        Progress {
            job: Some(job.job().clone()),
            backlog_rows: Some(backlog),
            deadline_unix_ms: job.deadline_unix_ms(),
            rows_per_sec: self.ewma,
            shards_total: units.len() as u64,
            shards_done: units.iter().filter(|(s, _)| self.done.contains_key(*s)).count() as u64,
            submitted_at_ms: Some(job.submitted_at_ms()),
            usage: self.usage.clone(),
        }
    }
}

/// Several jobs on one queue as the policy sees them: one backlog (every
/// job's rows left), the earliest deadline among jobs with rows left, and
/// the rate weighted by rows left. That is what the queue's service order
/// asks for: an SQS standard queue hands out messages of all jobs mixed, so
/// each job's last shard comes near the end of the whole backlog, and the
/// earliest deadline must hold for all of it. (Priority needs a queue per
/// class, each with its own workers and scaler.) `job` is set only when
/// there is exactly one.
pub fn combine(parts: &[Progress]) -> Progress {
    match parts {
        [] => return Progress::default(),
        [one] => return one.clone(),
        _ => {}
    }
    let live: Vec<&Progress> = parts.iter().filter(|p| p.backlog_rows.is_some_and(|b| b > 0)).collect();
    let backlog =
        parts.iter().filter_map(|p| p.backlog_rows).fold(None, |acc: Option<u64>, b| Some(acc.unwrap_or(0) + b));
    let weighted: Vec<(f64, f64)> =
        live.iter().filter_map(|p| p.rows_per_sec.map(|r| (r, p.backlog_rows.unwrap_or(0) as f64))).collect();
    let total: f64 = weighted.iter().map(|(_, w)| w).sum();
    let rows_per_sec = if total > 0.0 {
        Some(weighted.iter().map(|(r, w)| r * w).sum::<f64>() / total)
    } else {
        parts.iter().find_map(|p| p.rows_per_sec)
    };
    Progress {
        job: None,
        backlog_rows: backlog,
        deadline_unix_ms: live.iter().filter_map(|p| p.deadline_unix_ms).min(),
        rows_per_sec,
        shards_total: parts.iter().map(|p| p.shards_total).sum(),
        shards_done: parts.iter().map(|p| p.shards_done).sum(),
        submitted_at_ms: live.iter().filter_map(|p| p.submitted_at_ms).min(),
        usage: Default::default(),
    }
}

fn ewma(prev: Option<f64>, record: &DoneRecord) -> Option<f64> {
    if record.seconds <= 0.0 || record.rows == 0 {
        return prev;
    }
    let rate = record.rows as f64 / record.seconds;
    Some(match prev {
        None => rate,
        Some(p) => EWMA_ALPHA * rate + (1.0 - EWMA_ALPHA) * p,
    })
}

/// Throughput of one shard slot over a finished run's done records.
pub fn measured_rate(records: &[DoneRecord]) -> Option<f64> {
    let mut sorted: Vec<&DoneRecord> = records.iter().collect();
    sorted.sort_by_key(|r| r.finished_at_ms);
    sorted.into_iter().fold(None, ewma)
}

/// How many worker pods to pre-warm before the next scheduled run, sized
/// from the last run's ledger: what the policy would have asked for at that
/// run's submission, with no nodes up, had it known the throughput the run
/// measured. `None` when the last run had no deadline.
pub fn prewarm_from_last_run(cfg: &PolicyConfig, job: &JobRecord, done: &[DoneRecord]) -> Option<u32> {
    let deadline_ms = job.spec.deadline_unix_ms?;
    let window = Duration::from_millis(deadline_ms.saturating_sub(job.submitted_at_ms));
    let rows = if done.is_empty() { job.rows_estimate } else { done.iter().map(|d| d.rows).sum() };
    let signals = Signals {
        now: Duration::ZERO,
        deadline: Some(window),
        backlog_rows: Some(rows),
        visible: job.shards.len().max(1) as u64,
        in_flight: 0,
        measured_rows_per_sec: measured_rate(done),
        current_replicas: 0,
        schedulable_replicas: 0,
    };
    Some(decide(cfg, &signals, &mut History::default()).desired_replicas)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hourglass_core::BlobUrl;
    use hourglass_core::ledger::{JobSpec, ShardPlan};
    use hourglass_core::store;
    use hourglass_core::task::{Format, ShardInput};

    fn done(shard: &str, rows: u64, seconds: f64, finished: u64) -> DoneRecord {
        DoneRecord {
            v: 1,
            job: JobId::parse("j").unwrap(),
            shard: ShardId::parse(shard).unwrap(),
            rows,
            bad_rows: 0,
            seconds,
            started_at_ms: finished.saturating_sub((seconds * 1000.0) as u64),
            finished_at_ms: finished,
            worker: "w".into(),
            attempt: 1,
            output: BlobUrl::parse("file:///tmp/x").unwrap(),
            sha256: String::new(),
            trial: None,
            device: None,
            usage: None,
        }
    }

    fn job(dir: &std::path::Path, shards: usize, rows_each: u64, deadline: Option<u64>) -> JobRecord {
        let url = BlobUrl::parse(&format!("file://{}/", dir.display())).unwrap();
        JobRecord {
            v: 1,
            job: JobId::parse("j").unwrap(),
            spec: JobSpec {
                input: url.clone(),
                model: url.clone(),
                output: url.clone(),
                format: None,
                id_column: "id".into(),
                shard_bytes: 1,
                max_bad_rows: 0,
                max_line_bytes: hourglass_core::task::DEFAULT_MAX_LINE_BYTES,
                deadline_unix_ms: deadline,
                csv: Default::default(),
                keep_columns: Vec::new(),
                keep_all: false,
                output_format: Default::default(),
            },
            model_sha256: String::new(),
            submitted_at_ms: 1_000_000,
            rows_estimate: shards as u64 * rows_each,
            files: vec![],
            skipped_files: vec![],
            model_registry: None,
            shards: (0..shards)
                .map(|i| ShardPlan {
                    shard: ShardId::parse(&format!("s{i:03}")).unwrap(),
                    input: ShardInput {
                        url: url.clone(),
                        format: Format::Csv,
                        range: None,
                        columns: None,
                        row_groups: None,
                        version: None,
                        delimiter: None,
                        compression: None,
                        skip_header: false,
                    },
                    rows_estimate: rows_each,
                })
                .collect(),
        }
    }

    #[test]
    fn ewma_weights_recent_shards_and_ignores_empty_ones() {
        let records = [done("a", 1000, 1.0, 10), done("b", 2000, 1.0, 20), done("c", 0, 0.0, 30)];
        let rate = measured_rate(&records).unwrap();
        assert!((rate - (0.2 * 2000.0 + 0.8 * 1000.0)).abs() < 1e-9, "{rate}");
        assert_eq!(measured_rate(&[]), None);
    }

    #[tokio::test]
    async fn backlog_falls_as_done_records_land() {
        let dir = tempfile::tempdir().unwrap();
        let root = BlobUrl::parse(&format!("file://{}/", dir.path().display())).unwrap();
        let ledger = Ledger::new(store::open(&root).unwrap(), &root);
        let mut watch = LedgerWatch::new(ledger.clone());
        assert_eq!(watch.refresh().await.unwrap().backlog_rows, None);

        ledger.create_job(&job(dir.path(), 4, 1000, Some(5_000_000))).await.unwrap();
        let p = watch.refresh().await.unwrap();
        assert_eq!((p.backlog_rows, p.shards_total, p.shards_done, p.rows_per_sec), (Some(4000), 4, 0, None));
        assert_eq!(p.deadline_unix_ms, Some(5_000_000));

        ledger.create_done(&done("s001", 1000, 2.0, 2_000_000)).await.unwrap();
        let p = watch.refresh().await.unwrap();
        assert_eq!((p.backlog_rows, p.shards_done, p.rows_per_sec), (Some(3000), 1, Some(500.0)));
        // Nothing new: same answer, no re-read.
        assert_eq!(watch.refresh().await.unwrap(), p);
    }

    /// A GPU fleet's scaler measures its rate on shards scored on a GPU:
    /// a CPU worker's shards on the same queue (or a pod that fell back)
    /// are progress, but not the GPU pods' rows/s.
    #[tokio::test]
    async fn the_rate_is_measured_on_the_fleets_own_device_class() {
        let dir = tempfile::tempdir().unwrap();
        let root = BlobUrl::parse(&format!("file://{}/", dir.path().display())).unwrap();
        let ledger = Ledger::new(store::open(&root).unwrap(), &root);
        ledger.create_job(&job(dir.path(), 4, 1000, None)).await.unwrap();
        let on = |shard: &str, rows: u64, finished: u64, device: Option<&str>| DoneRecord {
            device: device.map(String::from),
            usage: None,
            ..done(shard, rows, 1.0, finished)
        };
        ledger.create_done(&on("s000", 1000, 10, Some("cpu"))).await.unwrap();
        ledger.create_done(&on("s001", 1000, 20, Some("cuda:0"))).await.unwrap();
        let mut gpu = LedgerWatch::new(ledger.clone()).for_device_class("cuda");
        let p = gpu.refresh().await.unwrap();
        assert_eq!((p.shards_done, p.backlog_rows, p.rows_per_sec), (2, Some(2000), Some(1000.0)));
        ledger.create_done(&on("s002", 40_000, 30, Some("cuda:1"))).await.unwrap();
        ledger.create_done(&on("s003", 5, 40, None)).await.unwrap();
        let p = gpu.refresh().await.unwrap();
        assert_eq!(p.shards_done, 4);
        let expected = 0.2 * 5.0 + 0.8 * (0.2 * 40_000.0 + 0.8 * 1000.0);
        assert!((p.rows_per_sec.unwrap() - expected).abs() < 1e-9, "{p:?}");
        let mut cpu = LedgerWatch::new(ledger.clone()).for_device_class("cpu");
        let expected = 0.2 * 5.0 + 0.8 * 1000.0;
        assert!((cpu.refresh().await.unwrap().rows_per_sec.unwrap() - expected).abs() < 1e-9);
    }

    /// A training job's trials are backlog too: each counts the training
    /// rows it reads, at the rate its own trials measured (a trial is far
    /// slower per row than scoring, so the batch rate must not be used).
    #[tokio::test]
    async fn training_trials_count_in_the_backlog_at_their_own_rate() {
        use hourglass_core::train::{TrainJobRecord, TrainSpec, TrialPlan};
        let dir = tempfile::tempdir().unwrap();
        let root = BlobUrl::parse(&format!("file://{}/", dir.path().display())).unwrap();
        let ledger = Ledger::new(store::open(&root).unwrap(), &root);
        let spec: TrainSpec = serde_json::from_value(serde_json::json!({
            "name": "ctr", "registry": root.to_string(), "trainer": "lightgbm", "output": root.to_string(),
            "dataset": {"train": root.to_string(), "holdout": root.to_string(), "label": "clicked"},
            "deadline_unix_ms": 9_000_000u64,
        }))
        .unwrap();
        let record = TrainJobRecord {
            v: 1,
            kind: hourglass_core::task::TaskKind::Train,
            job: JobId::parse("j").unwrap(),
            spec,
            submitted_at_ms: 1_000_000,
            features: vec!["a".into()],
            train_files: vec![],
            holdout_files: vec![],
            trials: (0..4)
                .map(|i| TrialPlan {
                    trial: ShardId::parse(&format!("trial-{i:04}")).unwrap(),
                    params: Default::default(),
                    rows_estimate: 40_000,
                })
                .collect(),
        };
        ledger.create_train_job(&record).await.unwrap();
        let mut watch = LedgerWatch::new(ledger.clone());
        let p = watch.refresh().await.unwrap();
        assert_eq!((p.backlog_rows, p.shards_total, p.deadline_unix_ms), (Some(160_000), 4, Some(9_000_000)));
        // One trial of 40k rows took 8 s: 5k training rows/s per slot.
        ledger.create_done(&done("trial-0001", 40_000, 8.0, 2_000_000)).await.unwrap();
        let p = watch.refresh().await.unwrap();
        assert_eq!((p.backlog_rows, p.shards_done, p.rows_per_sec), (Some(120_000), 1, Some(5_000.0)));
    }

    #[tokio::test]
    async fn a_watch_adds_up_the_usage_its_done_records_carry() {
        let dir = tempfile::tempdir().unwrap();
        let root = BlobUrl::parse(&format!("file://{}/", dir.path().display())).unwrap();
        let ledger = Ledger::new(store::open(&root).unwrap(), &root);
        ledger.create_job(&job(dir.path(), 3, 1000, None)).await.unwrap();
        let mut watch = LedgerWatch::new(ledger.clone());
        for (i, capacity) in [(0, "spot"), (1, "spot"), (2, "on-demand")] {
            let mut record = done(&format!("s{i:03}"), 1000, 2.0, 2_000_000 + i);
            record.usage = Some(hourglass_core::cost::Usage {
                pod_seconds: 30.0,
                capacity_type: Some(capacity.into()),
                instance_type: None,
            });
            ledger.create_done(&record).await.unwrap();
            let p = watch.refresh().await.unwrap();
            assert_eq!(p.usage.values().sum::<f64>(), 30.0 * (i + 1) as f64);
        }
        let p = watch.refresh().await.unwrap();
        assert_eq!((p.usage["?/spot"], p.usage["?/on-demand"]), (60.0, 30.0));
    }

    #[test]
    fn prewarm_is_sized_from_the_last_run() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = PolicyConfig::default();
        // 1e9 rows in 1 h at 250k rows/s per pod: 2 pods would do, and the
        // policy asks for the node they need, 4 pods.
        let last = job(dir.path(), 1000, 1_000_000, Some(1_000_000 + 3_600_000));
        let records: Vec<_> = (0..1000).map(|i| done(&format!("s{i:03}"), 1_000_000, 4.0, 2_000_000 + i)).collect();
        assert_eq!(prewarm_from_last_run(&cfg, &last, &records), Some(4));
        // A quarter of the measured speed needs a second node.
        let slow: Vec<_> = (0..1000).map(|i| done(&format!("s{i:03}"), 1_000_000, 16.0, 2_000_000 + i)).collect();
        assert_eq!(prewarm_from_last_run(&cfg, &last, &slow), Some(8));
        let no_deadline = job(dir.path(), 10, 10, None);
        assert_eq!(prewarm_from_last_run(&cfg, &no_deadline, &records), None);
    }
}
