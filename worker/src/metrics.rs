//! The worker's Prometheus metrics. The names are the contract the Grafana
//! dashboard and the alert rules in `deploy/` use; `tests/metrics.rs`
//! checks every name they query against a real scrape.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    /// Not `job`: Prometheus' own target label would shadow it.
    pub hourglass_job: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// done | retried | failed | released | skipped (already done)
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub model: String,
    pub sha256: String,
    /// The device the model runs on (`cpu` after a fallback).
    pub device: String,
}

/// How long a job's series stay after its last shard here: long enough for
/// dashboards and `increase()` over the usual windows, short enough that a
/// stream of S3-triggered jobs does not grow series without bound.
pub const JOB_SERIES_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

pub struct WorkerMetrics {
    /// Rows scored and written, by job.
    pub rows: Family<JobLabels, Counter>,
    /// Malformed rows skipped (written to `_hourglass/bad/`), by job.
    pub bad_rows: Family<JobLabels, Counter>,
    pub shards: Family<OutcomeLabels, Counter>,
    /// Shard attempts that failed, by error kind (retried or final).
    pub errors: Family<KindLabels, Counter>,
    /// Shards leased and not yet acked, released or dead-lettered.
    pub in_flight: Gauge,
    /// One ONNX Runtime call (a batch).
    pub inference_seconds: Histogram,
    /// One shard from a pool thread taking it to its outcome.
    pub shard_seconds: Histogram,
    pub receive_failures: Counter,
    /// When this process started (Unix seconds): a restart changes it, so
    /// `changes()` over it counts crash loops.
    pub start_time: Gauge<f64, AtomicU64>,
    /// 1 per model this process has loaded, labelled with its sha256.
    pub model_info: Family<ModelLabels, Gauge>,
    /// When each job's series were last touched, to drop them after
    /// `JOB_SERIES_TTL`.
    job_seen: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        // 1 ms .. ~33 s: a batch of 8192 rows takes ~20-40 ms on one core;
        // 4 s .. ~2.3 h for a shard (a few seconds to minutes).
        let batch_buckets = (0..16).map(|i| 0.001 * 2f64.powi(i));
        let shard_buckets = (0..12).map(|i| 4.0 * 2f64.powi(i) / 2.0);
        Self {
            rows: Family::default(),
            bad_rows: Family::default(),
            shards: Family::default(),
            errors: Family::default(),
            in_flight: Gauge::default(),
            inference_seconds: Histogram::new(batch_buckets),
            shard_seconds: Histogram::new(shard_buckets),
            receive_failures: Counter::default(),
            start_time: {
                let g = Gauge::<f64, AtomicU64>::default();
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                g.set(now.as_secs_f64());
                g
            },
            model_info: Family::default(),
            job_seen: Default::default(),
        }
    }
}

impl WorkerMetrics {
    /// Registers these metrics and the runtime's (the execution-provider
    /// fallbacks and the device in use), which every model-running process
    /// exports.
    pub fn register(&self, r: &mut Registry) {
        hourglass_runtime::metrics::register(r);
        let p = "hourglass_worker";
        r.register(format!("{p}_rows"), "Rows scored and written, by job", self.rows.clone());
        r.register(format!("{p}_bad_rows"), "Malformed rows skipped, by job", self.bad_rows.clone());
        r.register(
            format!("{p}_shards"),
            "Shard deliveries by outcome: done, retried, failed, released, skipped",
            self.shards.clone(),
        );
        r.register(format!("{p}_errors"), "Failed shard attempts by error kind", self.errors.clone());
        r.register(format!("{p}_shards_in_flight"), "Shards leased and not yet settled", self.in_flight.clone());
        r.register(format!("{p}_inference_seconds"), "ONNX Runtime time per batch", self.inference_seconds.clone());
        r.register(format!("{p}_shard_seconds"), "Time to score one shard", self.shard_seconds.clone());
        r.register(format!("{p}_receive_failures"), "Failed queue receives", self.receive_failures.clone());
        r.register(format!("{p}_start_timestamp_seconds"), "Process start, Unix time", self.start_time.clone());
        r.register(
            "hourglass_model_info",
            "Models loaded by this process (value 1), by sha256 and the device they run on",
            self.model_info.clone(),
        );
    }

    /// Counts a finished shard's rows under its job, and drops the series
    /// of jobs not seen for `JOB_SERIES_TTL`.
    pub(crate) fn job_rows(&self, job: &str, rows: u64, bad_rows: u64) {
        let labels = JobLabels { hourglass_job: job.to_string() };
        self.rows.get_or_create(&labels).inc_by(rows);
        if bad_rows > 0 {
            self.bad_rows.get_or_create(&labels).inc_by(bad_rows);
        }
        let now = std::time::Instant::now();
        let mut seen = self.job_seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.insert(job.to_string(), now);
        self.expire_jobs(&mut seen, now, JOB_SERIES_TTL);
    }

    fn expire_jobs(
        &self,
        seen: &mut std::collections::HashMap<String, std::time::Instant>,
        now: std::time::Instant,
        ttl: std::time::Duration,
    ) {
        seen.retain(|job, at| {
            let keep = now.duration_since(*at) < ttl;
            if !keep {
                let labels = JobLabels { hourglass_job: job.clone() };
                self.rows.remove(&labels);
                self.bad_rows.remove(&labels);
            }
            keep
        });
    }

    pub(crate) fn model_loaded(&self, model: &str, sha256: &str, device: &str) {
        let labels = ModelLabels { model: model.into(), sha256: sha256.into(), device: device.into() };
        self.model_info.get_or_create(&labels).set(1);
    }

    pub(crate) fn outcome(&self, outcome: &str) {
        self.shards.get_or_create(&OutcomeLabels { outcome: outcome.into() }).inc();
    }

    pub(crate) fn error(&self, kind: &str) {
        self.errors.get_or_create(&KindLabels { kind: kind.into() }).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(m: &WorkerMetrics) -> String {
        let mut r = Registry::default();
        m.register(&mut r);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
        out
    }

    #[test]
    fn job_series_are_dropped_after_the_job_goes_quiet() {
        let m = WorkerMetrics::default();
        m.job_rows("old-job", 10, 1);
        let text = scrape(&m);
        assert!(text.contains(r#"hourglass_worker_rows_total{hourglass_job="old-job"} 10"#), "{text}");
        // An hour later another job finishes a shard: the old one goes.
        let later = std::time::Instant::now() + JOB_SERIES_TTL + std::time::Duration::from_secs(1);
        m.rows.get_or_create(&JobLabels { hourglass_job: "new-job".into() }).inc_by(5);
        {
            let mut seen = m.job_seen.lock().unwrap();
            seen.insert("new-job".into(), later);
            m.expire_jobs(&mut seen, later, JOB_SERIES_TTL);
        }
        let text = scrape(&m);
        assert!(!text.contains("old-job"), "{text}");
        assert!(text.contains("new-job"), "{text}");
        m.model_loaded("s3://m/ctr.onnx", "abc", "cpu");
        assert!(scrape(&m).contains(r#"hourglass_model_info{model="s3://m/ctr.onnx",sha256="abc",device="cpu"} 1"#));
    }
}
