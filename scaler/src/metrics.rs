//! The scaler's metrics, declared in one place; their names are the
//! contract the dashboards and alerts use (`deploy/helm/hourglass/files`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ErrorLabels {
    pub(crate) op: String,
    pub(crate) kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StateLabels {
    pub(crate) state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct JobLabels {
    pub(crate) hourglass_job: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct JobStateLabels {
    /// Not `job`: Prometheus' own target label would shadow it.
    pub(crate) hourglass_job: String,
    pub(crate) state: String,
}

/// The scaler's metrics; names are the contract the dashboards use.
#[derive(Default)]
pub struct Metrics {
    pub(crate) desired: Gauge,
    pub(crate) current: Gauge,
    pub(crate) scheduled: Gauge,
    pub(crate) pending: Gauge,
    pub(crate) placeholders: Gauge,
    pub(crate) job_shards: Family<JobStateLabels, Gauge>,
    pub(crate) job_shards_planned: Family<JobLabels, Gauge>,
    pub(crate) projected_finish: Gauge<f64, AtomicU64>,
    pub(crate) deadline: Gauge<f64, AtomicU64>,
    pub(crate) oldest_message_age: Gauge<f64, AtomicU64>,
    pub(crate) slack: Gauge<f64, AtomicU64>,
    pub(crate) backlog_rows: Gauge,
    pub(crate) rows_per_sec: Gauge<f64, AtomicU64>,
    pub(crate) at_risk: Gauge,
    pub(crate) queue: Family<StateLabels, Gauge>,
    pub(crate) ticks: Counter,
    pub(crate) scale_changes: Counter,
    pub(crate) errors: Family<ErrorLabels, Counter>,
    pub(crate) conflict: Gauge,
    pub(crate) job_node_seconds: Family<JobLabels, Gauge<f64, AtomicU64>>,
    pub(crate) busy_pods: Gauge,
    pub(crate) job_cost: Family<JobLabels, Gauge<f64, AtomicU64>>,
}

impl Metrics {
    pub fn register(&self, r: &mut Registry) {
        let p = "hourglass_scaler";
        r.register(format!("{p}_desired_replicas"), "Worker replicas the policy asks for", self.desired.clone());
        r.register(format!("{p}_current_replicas"), "Worker replicas the Deployment has (spec)", self.current.clone());
        r.register(
            format!("{p}_worker_pods_scheduled"),
            "Worker pods bound to a node (running or starting)",
            self.scheduled.clone(),
        );
        r.register(format!("{p}_worker_pods_pending"), "Worker pods waiting for a node", self.pending.clone());
        r.register(
            format!("{p}_job_shards"),
            "Shards of the watched job by state: done, pending (they add up to _planned)",
            self.job_shards.clone(),
        );
        r.register(
            format!("{p}_job_shards_planned"),
            "Shards the watched job was planned with",
            self.job_shards_planned.clone(),
        );
        r.register(format!("{p}_placeholder_replicas"), "Placeholder pods asked for", self.placeholders.clone());
        r.register(
            format!("{p}_projected_finish_timestamp_seconds"),
            "Projected finish of the backlog, Unix time (NaN when there is no deadline or no work)",
            self.projected_finish.clone(),
        );
        r.register(
            format!("{p}_deadline_timestamp_seconds"),
            "The deadline the policy works to, Unix time (NaN when there is none)",
            self.deadline.clone(),
        );
        r.register(
            format!("{p}_queue_oldest_message_age_seconds"),
            "Age of the oldest queued message: from the queue where it can tell, else since the watched job was submitted while it has shards left (NaN when unknown or empty)",
            self.oldest_message_age.clone(),
        );
        r.register(
            format!("{p}_deadline_slack_seconds"),
            "Deadline minus projected finish; negative means late (NaN when unknown)",
            self.slack.clone(),
        );
        r.register(
            format!("{p}_backlog_rows"),
            "Rows not yet done, from the ledger or estimated",
            self.backlog_rows.clone(),
        );
        r.register(
            format!("{p}_replica_rows_per_second"),
            "Measured (or prior) rows/s of one replica",
            self.rows_per_sec.clone(),
        );
        r.register(
            format!("{p}_deadline_at_risk"),
            "1 while the projected finish misses the deadline",
            self.at_risk.clone(),
        );
        r.register(format!("{p}_queue_messages"), "Queue depth by state, as the scaler saw it", self.queue.clone());
        r.register(format!("{p}_ticks"), "Decisions made", self.ticks.clone());
        r.register(format!("{p}_scale_changes"), "Replica changes written", self.scale_changes.clone());
        r.register(format!("{p}_errors"), "Failed reads and writes by operation and kind", self.errors.clone());
        r.register(
            format!("{p}_worker_pods_busy"),
            "Worker pods holding a shard at the last tick (annotated against scale-down and node consolidation)",
            self.busy_pods.clone(),
        );
        r.register(
            "hourglass_job_node_seconds",
            "Node-seconds a followed job's done units took (pod-seconds over --pods-per-node)",
            self.job_node_seconds.clone(),
        );
        r.register(
            "hourglass_job_cost_dollars",
            "A followed job's cost so far at --node-prices (absent without prices, or while some usage has no price)",
            self.job_cost.clone(),
        );
        r.register(
            format!("{p}_autoscaler_conflict"),
            "1 while another autoscaler (an HPA, or KEDA through one) targets the worker Deployment and the scaler refuses to patch it",
            self.conflict.clone(),
        );
    }

    pub(crate) fn error(&self, op: &str, kind: &str) {
        self.errors.get_or_create(&ErrorLabels { op: op.into(), kind: kind.into() }).inc();
    }
}
