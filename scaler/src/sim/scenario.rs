//! What is simulated: a run's rows (one job or several on one queue), its
//! deadline, the cluster's timings, and spot interruptions.

use crate::policy::PolicyConfig;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Scenario {
    pub rows: f64,
    pub shard_rows: f64,
    /// From the start of the run.
    pub deadline: Duration,
    pub pod_rows_per_sec: f64,
    pub spot_interruptions_per_node_hour: f64,
    pub visibility_timeout: Duration,
    pub tick: Duration,
    /// The cluster autoscaler's scale-down-unneeded-time (default 10 min).
    pub node_idle_removal: Duration,
    /// Nodes up when the run starts (pre-warmed).
    pub initial_nodes: u32,
    pub seed: u64,
    /// Give up after this long.
    pub max_time: Duration,
    /// Several jobs sharing the queue, each with its arrival and deadline;
    /// empty: one job of `rows` at the start, due at `deadline`.
    pub jobs: Vec<SimJob>,
    /// The scaler sees only the first job (one `--ledger`, no jobs index):
    /// the others' shards are on the queue but not in its backlog.
    pub first_job_only: bool,
}

/// One job of a multi-job scenario (times from the run's start).
#[derive(Debug, Clone, PartialEq)]
pub struct SimJob {
    pub rows: f64,
    pub arrival: Duration,
    pub deadline: Duration,
}

/// How one job of the run fared.
#[derive(Debug, Clone, PartialEq)]
pub struct JobOutcome {
    pub arrival: Duration,
    pub deadline: Duration,
    pub rows: f64,
    pub finish: Option<Duration>,
}

impl JobOutcome {
    pub fn met_deadline(&self) -> bool {
        self.finish.is_some_and(|f| f <= self.deadline)
    }
}

impl Scenario {
    /// The reference: 1e9 rows, 1 h, 250 k rows/s per pod, 1 M-row shards.
    pub fn reference() -> Self {
        Self {
            rows: 1e9,
            shard_rows: 1e6,
            deadline: Duration::from_secs(3600),
            pod_rows_per_sec: 250_000.0,
            spot_interruptions_per_node_hour: 0.05,
            visibility_timeout: Duration::from_secs(60),
            tick: Duration::from_secs(15),
            node_idle_removal: Duration::from_secs(600),
            initial_nodes: 0,
            seed: 1,
            max_time: Duration::from_secs(24 * 3600),
            jobs: Vec::new(),
            first_job_only: false,
        }
    }

    /// The jobs of the run: `jobs`, or the one job `rows` and `deadline` give.
    pub fn job_list(&self) -> Vec<SimJob> {
        if self.jobs.is_empty() {
            vec![SimJob { rows: self.rows, arrival: Duration::ZERO, deadline: self.deadline }]
        } else {
            self.jobs.clone()
        }
    }

    /// A slow model on a tight deadline with many interruptions: 1e9 rows
    /// in 20 min at 25 k rows/s per pod, 0.2 interruptions per node-hour.
    pub fn tight() -> Self {
        Self {
            deadline: Duration::from_secs(20 * 60),
            pod_rows_per_sec: 25_000.0,
            spot_interruptions_per_node_hour: 0.2,
            ..Self::reference()
        }
    }

    /// The scenario in a few words, for tables.
    pub fn label(&self, cfg: &PolicyConfig) -> String {
        let rate = if self.pod_rows_per_sec >= 1000.0 {
            format!("{}k", (self.pod_rows_per_sec / 1000.0).round())
        } else {
            format!("{}", self.pod_rows_per_sec)
        };
        format!(
            "{:.0e} rows, {} deadline, {rate} rows/s/pod, {} pods/node, {} boot, {} interruptions/node-h",
            self.rows,
            short(self.deadline),
            cfg.pods_per_node,
            short(cfg.node_boot),
            self.spot_interruptions_per_node_hour
        )
    }
}

/// `1h`, `20min`, `3min`, `45s`.
fn short(d: Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(3600) && s > 0 {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) && s > 0 {
        format!("{}min", s / 60)
    } else {
        format!("{s}s")
    }
}
