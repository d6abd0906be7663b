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
        }
    }
}

impl WorkerMetrics {
    pub fn register(&self, r: &mut Registry) {
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
        r.register(format!("{p}_start_time_seconds"), "Process start, Unix time", self.start_time.clone());
    }

    pub(crate) fn outcome(&self, outcome: &str) {
        self.shards.get_or_create(&OutcomeLabels { outcome: outcome.into() }).inc();
    }

    pub(crate) fn error(&self, kind: &str) {
        self.errors.get_or_create(&KindLabels { kind: kind.into() }).inc();
    }
}
