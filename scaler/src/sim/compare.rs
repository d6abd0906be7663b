//! The yardsticks: the best fixed fleet for a scenario, and a scenario run
//! under both policies beside it.

use super::{Outcome, Scenario, simulate};
use crate::policy::{PolicyConfig, PolicyKind};
use std::time::Duration;

/// The plan to beat: `nodes` fully packed nodes started at the run's start
/// and kept to the end. Each is billed for its node boot, its pods' start,
/// its share of the work and the cluster autoscaler's scale-down delay;
/// the best is the fewest nodes whose last shard (whole shards handed out
/// round-robin) is done by the deadline, with no margin and no
/// interruptions. No policy that starts from zero can do better on
/// node-hours, so it is the yardstick for the deadline policy.
#[derive(Debug, Clone, PartialEq)]
pub struct FixedFleet {
    pub nodes: u32,
    pub node_hours: f64,
    pub finish: Duration,
}

pub fn best_fixed_fleet(scn: &Scenario, cfg: &PolicyConfig) -> Option<FixedFleet> {
    // Defined for one job there at the start; jobs arriving over time have
    // no single fleet to start at once.
    let jobs = scn.job_list();
    let [job] = &jobs[..] else { return None };
    if !job.arrival.is_zero() {
        return None;
    }
    let scn = &Scenario { rows: job.rows, deadline: job.deadline, jobs: vec![], ..scn.clone() };
    let ppn = f64::from(cfg.pods_per_node.max(1));
    let shards = (scn.rows / scn.shard_rows).ceil().max(1.0);
    let shard_secs = scn.shard_rows.min(scn.rows) / scn.pod_rows_per_sec;
    let start = (cfg.node_boot + cfg.pod_start).as_secs_f64();
    let per_node = start + scn.node_idle_removal.as_secs_f64();
    let work_node_secs = scn.rows / (ppn * scn.pod_rows_per_sec);
    (1..=(shards / ppn).ceil() as u32).find_map(|n| {
        let finish = start + (shards / (f64::from(n) * ppn)).ceil() * shard_secs;
        (finish <= scn.deadline.as_secs_f64()).then(|| FixedFleet {
            nodes: n,
            node_hours: (f64::from(n) * per_node + work_node_secs) / 3600.0,
            finish: Duration::from_secs_f64(finish),
        })
    })
}

/// Both policies and the best fixed fleet on one scenario.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub deadline: Outcome,
    pub queue_length: Outcome,
    pub fixed: Option<FixedFleet>,
}

impl Comparison {
    pub fn run(scn: &Scenario, cfg: &PolicyConfig) -> Self {
        Self {
            deadline: simulate(scn, &PolicyConfig { kind: PolicyKind::Deadline, ..cfg.clone() }),
            queue_length: simulate(scn, &PolicyConfig { kind: PolicyKind::QueueLength, ..cfg.clone() }),
            fixed: best_fixed_fleet(scn, cfg),
        }
    }

    /// A policy's node-hours over the best fixed fleet's.
    pub fn ratio(&self, outcome: &Outcome) -> Option<f64> {
        self.fixed.as_ref().map(|f| outcome.node_hours / f.node_hours)
    }

    /// One markdown table row: the scenario, then the deadline policy, the
    /// best fixed fleet, their ratio and the queue-length (KEDA) rule.
    pub fn markdown_row(&self, scenario: &str) -> String {
        let run = |o: &Outcome| match o.finish {
            Some(f) if o.met_deadline() => format!("{:.2} node-h, done {} s", o.node_hours, f.as_secs()),
            Some(f) => format!("{:.2} node-h, LATE ({} s)", o.node_hours, f.as_secs()),
            None => "never done".into(),
        };
        let ratio = |o: &Outcome| self.ratio(o).map(|r| format!("{r:.2}×")).unwrap_or_else(|| "—".into());
        let fixed = match &self.fixed {
            Some(f) => format!(
                "{:.2} node-h ({} node{}, done {} s)",
                f.node_hours,
                f.nodes,
                if f.nodes == 1 { "" } else { "s" },
                f.finish.as_secs()
            ),
            None => "none meets it".into(),
        };
        format!(
            "| {scenario} | {} | {fixed} | {} | {} ({}) |",
            run(&self.deadline),
            ratio(&self.deadline),
            run(&self.queue_length),
            ratio(&self.queue_length)
        )
    }
}

/// The header of `Comparison::markdown_row`'s table.
pub const MARKDOWN_HEADER: &str =
    "| scenario | deadline policy | best fixed fleet | ratio | queue-length (KEDA) rule |\n|---|---|---|---|---|";
