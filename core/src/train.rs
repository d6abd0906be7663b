//! The training job contract: what a user asks for (`TrainSpec`, the
//! `train.yaml` of `hourglass train submit`), what submit records in the
//! job's `job.json` (`TrainJobRecord`: the spec, the dataset files as they
//! were, one trial per grid point), what a worker records per trial
//! (`TrialResult`, inside its done record) and what the last trial decides
//! (`PromotionRecord`).
//!
//! A training job runs on the same queue, workers, scaler and ledger as a
//! batch job: its trials are the units its ledger records, each trial one
//! queue message.

use crate::task::{Format, TASK_VERSION, TrainTask};
use crate::{BlobUrl, Error, JobId, Result, ShardId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The most trials one job may plan: a grid is a product, and a typo in
/// one axis should not enqueue a million trials.
pub const MAX_TRIALS: usize = 1000;

/// The data a training job learns from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    /// A file or a prefix of Parquet/CSV files to train on.
    pub train: BlobUrl,
    /// A file or a prefix of files held out: never shown to the trainer for
    /// fitting, scored again by the worker to check and measure the model.
    pub holdout: BlobUrl,
    /// The label column: 0/1 (or false/true) per row.
    pub label: String,
    /// Feature columns, in model input order; every column but the label
    /// and the id column when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<String>>,
    /// A row id column that is not a feature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_column: Option<String>,
    /// Forced format; guessed from file names when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
}

/// A training job as the user writes it (YAML or JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    /// The registry model the trials become versions of.
    pub name: String,
    /// The registry root (`s3://bucket/models`, a directory).
    pub registry: BlobUrl,
    pub dataset: DatasetSpec,
    /// A trainer the workers know by this name (`--trainer NAME=COMMAND`):
    /// a job names a trainer, it never carries a command to run.
    pub trainer: String,
    /// Parameters every trial gets.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub params: Map<String, Value>,
    /// One trial per point of the product of these axes (sorted by name),
    /// each point applied over `params`. No grid: one trial.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub grid: BTreeMap<String, Vec<Value>>,
    /// The job's output prefix: its ledger and each trial's log.
    pub output: BlobUrl,
    /// `METRIC > champion`, `METRIC < champion` or `METRIC >= 0.7`:
    /// when the best trial moves the alias. Left out: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote_if: Option<String>,
    /// The alias a promotion moves.
    #[serde(default = "default_alias")]
    pub alias: String,
    /// A trainer running longer is killed and the trial fails (`30m`).
    #[serde(default = "default_max_train_time")]
    pub max_train_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_unix_ms: Option<u64>,
}

fn default_alias() -> String {
    "champion".into()
}

fn default_max_train_time() -> String {
    "1h".into()
}

impl TrainSpec {
    /// Checks what can be checked without reading anything.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, why: String| Error::invalid(format!("train spec field {field:?}"), why);
        if self.trainer.is_empty() {
            return Err(bad("trainer", "names no trainer".into()));
        }
        if self.dataset.label.is_empty() {
            return Err(bad("dataset.label", "names no column".into()));
        }
        self.max_train_time()?;
        if let Some(rule) = &self.promote_if {
            PromoteRule::parse(rule)?;
        }
        for (axis, values) in &self.grid {
            if values.is_empty() {
                return Err(bad("grid", format!("axis {axis:?} has no values: the product would be empty")));
            }
        }
        self.trials()?;
        Ok(())
    }

    pub fn max_train_time(&self) -> Result<std::time::Duration> {
        humantime::parse_duration(&self.max_train_time).map_err(|e| {
            Error::invalid("train spec field \"max_train_time\"", format!("{:?}: {e}", self.max_train_time))
        })
    }

    /// The trials' parameters: `params` with each grid point applied, in a
    /// fixed order (axes by name, the last axis varying fastest).
    pub fn trials(&self) -> Result<Vec<Map<String, Value>>> {
        let mut points: Vec<Map<String, Value>> = vec![self.params.clone()];
        for (axis, values) in &self.grid {
            let mut next = Vec::with_capacity(points.len() * values.len());
            for p in &points {
                for v in values {
                    let mut q = p.clone();
                    q.insert(axis.clone(), v.clone());
                    next.push(q);
                }
            }
            if next.len() > MAX_TRIALS {
                return Err(Error::invalid(
                    "train spec field \"grid\"",
                    format!("the grid has more than {MAX_TRIALS} points; split the sweep"),
                ));
            }
            points = next;
        }
        Ok(points)
    }
}

/// One planned trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialPlan {
    pub trial: ShardId,
    pub params: Map<String, Value>,
    /// Training rows the trial reads (the scaler's backlog unit).
    pub rows_estimate: u64,
}

/// A dataset file as it was when the job was planned; staged copies are
/// read with `If-Match` on its version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetFile {
    pub url: BlobUrl,
    pub size: u64,
    /// `ObjectMeta::version` at planning (ETag on S3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub format: Format,
    /// Rows, when the planner could count them cheaply (Parquet footers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
}

/// A training job's `job.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainJobRecord {
    pub v: u32,
    /// Always `train`: what tells this record from a batch job's.
    pub kind: crate::task::TaskKind,
    pub job: JobId,
    pub spec: TrainSpec,
    pub submitted_at_ms: u64,
    /// Feature columns, in model input order (the spec's, or the files').
    pub features: Vec<String>,
    pub train_files: Vec<DatasetFile>,
    pub holdout_files: Vec<DatasetFile>,
    pub trials: Vec<TrialPlan>,
}

impl TrainJobRecord {
    pub fn task_for(&self, plan: &TrialPlan) -> TrainTask {
        TrainTask {
            v: TASK_VERSION,
            job: self.job.clone(),
            trial: plan.trial.clone(),
            output: self.spec.output.as_prefix(),
            params: plan.params.clone(),
            deadline_unix_ms: self.spec.deadline_unix_ms,
        }
    }

    /// Why `task` is not a trial of this job, or `None` when it is exactly
    /// what `task_for` makes of its trial.
    pub fn refuses(&self, task: &TrainTask) -> Option<String> {
        if task.job != self.job {
            return Some(format!("the prefix holds job {}, this task is for job {}", self.job, task.job));
        }
        let Some(plan) = self.trials.iter().find(|t| t.trial == task.trial) else {
            return Some(format!("job {} has no trial {}", self.job, task.trial));
        };
        let expected = self.task_for(plan);
        if expected.output != task.output {
            return Some(format!("its output differs from job {}'s job.json", self.job));
        }
        if expected.params != task.params {
            return Some(format!(
                "its params differ from the plan of trial {} in job {}'s job.json",
                task.trial, self.job
            ));
        }
        None
    }

    /// The registry lineage tag of a trial: how a re-run finds a version an
    /// earlier attempt registered before it died.
    pub fn training_run(&self, trial: &ShardId) -> String {
        format!("{}/{}", self.job, trial)
    }
}

/// Which registry version a trial claimed: created once per trial with
/// put-if-absent, before the version's manifest, so an attempt that follows
/// one that died completes the same version instead of adding another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub v: u32,
    pub job: JobId,
    pub trial: ShardId,
    pub name: String,
    pub version: u64,
}

/// What a trial produced, in its done record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialResult {
    pub params: Map<String, Value>,
    /// The registry version the trial's model became.
    pub version: u64,
    /// Holdout metrics recomputed by the worker (`auc`, `logloss`, …).
    pub metrics: BTreeMap<String, f64>,
    /// What the trainer itself reported in `metrics.json`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub trainer_metrics: BTreeMap<String, f64>,
    /// Seconds the trainer process ran (the rest of the trial is staging,
    /// validation and registration).
    pub trainer_seconds: f64,
    pub holdout_rows: u64,
    /// Largest |worker prediction − trainer prediction| over the holdout.
    pub max_prediction_diff: f64,
}

/// Which way a metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Higher,
    Lower,
}

/// Higher is better unless the metric's name says it is a loss or error.
pub fn better_for(metric: &str) -> Better {
    let m = metric.to_ascii_lowercase();
    if ["loss", "error", "rmse", "mae", "mse"].iter().any(|w| m.contains(w)) { Better::Lower } else { Better::Higher }
}

/// `--promote-if`: `METRIC OP champion` or `METRIC OP NUMBER`.
#[derive(Debug, Clone, PartialEq)]
pub struct PromoteRule {
    pub metric: String,
    pub op: CompareOp,
    pub against: Against,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Gt,
    Ge,
    Lt,
    Le,
}

impl CompareOp {
    pub fn as_str(self) -> &'static str {
        match self {
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
        }
    }

    pub fn holds(self, a: f64, b: f64) -> bool {
        match self {
            CompareOp::Gt => a > b,
            CompareOp::Ge => a >= b,
            CompareOp::Lt => a < b,
            CompareOp::Le => a <= b,
        }
    }

    /// Which way the operator prefers the metric: `>` wants it higher.
    pub fn better(self) -> Better {
        match self {
            CompareOp::Gt | CompareOp::Ge => Better::Higher,
            CompareOp::Lt | CompareOp::Le => Better::Lower,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Against {
    /// The metric the alias's current version recorded.
    Champion,
    Value(f64),
}

impl PromoteRule {
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::invalid(format!("promote rule {s:?}"), format!("{why}; write METRIC > champion or METRIC >= 0.75"))
        };
        let words: Vec<&str> = s.split_whitespace().collect();
        let [metric, op, rhs] = words[..] else { return Err(bad("expected three words")) };
        let op = match op {
            ">" => CompareOp::Gt,
            ">=" => CompareOp::Ge,
            "<" => CompareOp::Lt,
            "<=" => CompareOp::Le,
            _ => return Err(bad(&format!("unknown comparison {op:?}"))),
        };
        if metric.is_empty() || !metric.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(bad(&format!("{metric:?} is not a metric name")));
        }
        let against = if rhs == "champion" {
            Against::Champion
        } else {
            Against::Value(rhs.parse().map_err(|_| bad(&format!("{rhs:?} is neither `champion` nor a number")))?)
        };
        Ok(PromoteRule { metric: metric.to_string(), op, against })
    }
}

impl std::fmt::Display for PromoteRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.against {
            Against::Champion => write!(f, "{} {} champion", self.metric, self.op.as_str()),
            Against::Value(v) => write!(f, "{} {} {v}", self.metric, self.op.as_str()),
        }
    }
}

/// What the job decided once every trial was done: written before
/// `_SUCCESS`, once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromotionRecord {
    pub v: u32,
    pub job: JobId,
    /// The metric trials were ranked by, and which way.
    pub metric: String,
    pub better: Better,
    /// The best trial, its version and value; `None` when no trial
    /// recorded the metric (nothing to rank: nothing is promoted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_trial: Option<ShardId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_value: Option<f64>,
    pub alias: String,
    /// The version the alias named before, and its recorded metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub champion_version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub champion_value: Option<f64>,
    pub promoted: bool,
    pub reason: String,
    pub decided_at_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(grid: &str) -> TrainSpec {
        serde_json::from_str(&format!(
            r#"{{"name":"ctr","registry":"file:///r","trainer":"lightgbm","output":"file:///o",
                "dataset":{{"train":"file:///d/train","holdout":"file:///d/holdout","label":"clicked"}},
                "params":{{"n_estimators":50}},"grid":{grid}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn the_grid_is_a_product_over_the_base_params() {
        let s = spec(r#"{"num_leaves":[15,31],"learning_rate":[0.05,0.1]}"#);
        let t = s.trials().unwrap();
        assert_eq!(t.len(), 4);
        // Axes by name: learning_rate first, num_leaves varying fastest.
        assert_eq!(t[1]["learning_rate"], 0.05);
        assert_eq!(t[1]["num_leaves"], 31);
        assert!(t.iter().all(|p| p["n_estimators"] == 50));
        assert_eq!(spec("{}").trials().unwrap().len(), 1);
        let err = spec(r#"{"a":[]}"#).validate().unwrap_err().to_string();
        assert!(err.contains("no values"), "{err}");
        let huge: Vec<u32> = (0..40).collect();
        let g = format!(r#"{{"a":{huge:?},"b":{huge:?}}}"#);
        assert!(spec(&g).validate().unwrap_err().to_string().contains("more than 1000"));
    }

    #[test]
    fn promote_rules_parse_and_name_their_mistakes() {
        let r = PromoteRule::parse("auc > champion").unwrap();
        assert_eq!((r.metric.as_str(), r.op, r.against.clone()), ("auc", CompareOp::Gt, Against::Champion));
        assert_eq!(r.to_string(), "auc > champion");
        let r = PromoteRule::parse("logloss <= 0.45").unwrap();
        assert_eq!((r.op.better(), r.against), (Better::Lower, Against::Value(0.45)));
        for bad in ["auc", "auc >> champion", "auc > chump", "a-b > 1"] {
            assert!(PromoteRule::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(better_for("logloss"), Better::Lower);
        assert_eq!(better_for("auc"), Better::Higher);
    }
}
