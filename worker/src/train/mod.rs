//! The `train` task handler: run one trial of a training job, check its
//! model, register it, and when the last trial is done, decide the
//! promotion.
//!
//! One trial, in order:
//! 1. an attempt that follows one that died finds the version that one
//!    claimed (`_hourglass/registered/<trial>.json`); if its manifest is
//!    written the trial is recorded done from it, without training again;
//! 2. the dataset is staged (once per job per worker, `If-Match` on each
//!    file's planned version) and the trainer runs (`trainer`);
//! 3. the model is checked (`validate`) and refused with the reason when it
//!    does not load, bind, or predict what the trainer predicted;
//! 4. with lease time left and no done record: the trainer's log is kept,
//!    a version is claimed (or the earlier attempt's claim completed), its
//!    manifest written with metrics, parameters and lineage, then the done
//!    record is created.
//!
//! Of two attempts, the registration record decides which version the
//! trial is: a version claimed by the loser never gets a manifest and stays
//! invisible to every reader.

pub mod stage;
pub mod trainer;
pub mod validate;

use crate::error::TrialFailure;
use crate::lease::{Lease, TaskHandler, TrainSlot, Work};
use crate::metrics::WorkerMetrics;
use crate::{Error, Result, WorkerConfig};
use bytes::Bytes;
use hourglass_core::ledger::{AnyJob, DoneRecord, LEDGER_VERSION, Ledger, now_ms};
use hourglass_core::registry::{Lineage, Manifest, Registry, TrainerLineage};
use hourglass_core::task::TrainTask;
use hourglass_core::train::{
    Against, Better, PromoteRule, PromotionRecord, Registration, TrainJobRecord, TrialResult, better_for,
};
use hourglass_runtime::pool::CpuPool;
use hourglass_runtime::{ModelRuntime, RuntimeOptions};
use sha2::Digest;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tracing::{info, warn};
use validate::refused;

/// What a worker needs to run trials.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Trainers by the name a job gives: the command to run.
    pub trainers: BTreeMap<String, Vec<String>>,
    /// Where datasets are staged and trainers write their outputs.
    pub work_dir: PathBuf,
    /// Trainers running at once in this worker.
    pub slots: usize,
    /// CPU threads each trainer may use (`HOURGLASS_THREADS`).
    pub threads: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            trainers: BTreeMap::new(),
            work_dir: std::env::temp_dir().join(format!("hourglass-train-{}", std::process::id())),
            slots: 1,
            threads: 1,
        }
    }
}

/// Parses `NAME=COMMAND` (the command split on whitespace).
pub fn parse_trainer(s: &str) -> std::result::Result<(String, Vec<String>), String> {
    let (name, command) = s.split_once('=').ok_or_else(|| format!("{s:?}: expected NAME=COMMAND"))?;
    let command: Vec<String> = command.split_whitespace().map(String::from).collect();
    if name.trim().is_empty() || command.is_empty() {
        return Err(format!("{s:?}: expected NAME=COMMAND"));
    }
    Ok((name.trim().to_string(), command))
}

pub struct TrainHandler {
    worker: WorkerConfig,
    config: TrainConfig,
    pool: CpuPool,
    slots: Arc<Semaphore>,
    staged: stage::StagedData,
    metrics: Arc<WorkerMetrics>,
}

/// Manifest metric keys: the worker's own, and the trainer's under a prefix.
const TRAINER_METRIC_PREFIX: &str = "trainer.";

impl TrainHandler {
    pub fn new(worker: WorkerConfig, config: TrainConfig, pool: CpuPool, metrics: Arc<WorkerMetrics>) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(config.slots.max(1))),
            staged: stage::StagedData::new(config.work_dir.join("data")),
            worker,
            config,
            pool,
            metrics,
        }
    }

    /// The trial's result, rebuilt from a version's manifest (an earlier
    /// attempt registered it and died before its done record).
    fn result_from(manifest: &Manifest, task: &TrainTask) -> TrialResult {
        let m = &manifest.metrics;
        TrialResult {
            params: task.params.clone(),
            version: manifest.version,
            metrics: m.iter().filter(|(k, _)| !k.contains('.')).map(|(k, v)| (k.clone(), *v)).collect(),
            trainer_metrics: m
                .iter()
                .filter_map(|(k, v)| Some((k.strip_prefix(TRAINER_METRIC_PREFIX)?.to_string(), *v)))
                .collect(),
            trainer_seconds: m.get("trainer_seconds").copied().unwrap_or(0.0),
            holdout_rows: m.get("holdout_rows").copied().unwrap_or(0.0) as u64,
            max_prediction_diff: m.get("max_prediction_diff").copied().unwrap_or(0.0),
        }
    }

    fn done_record(
        &self,
        task: &TrainTask,
        job: &TrainJobRecord,
        registry: &Registry,
        manifest: &Manifest,
        (attempt, started_at_ms, seconds): (u32, u64, f64),
    ) -> DoneRecord {
        let finished_at_ms = now_ms();
        let node = self.worker.node.get();
        let usage = hourglass_core::cost::Usage {
            pod_seconds: finished_at_ms.saturating_sub(started_at_ms) as f64
                / 1000.0
                / self.worker.concurrency.max(1) as f64,
            capacity_type: node.capacity_type,
            instance_type: node.instance_type,
        };
        DoneRecord {
            v: LEDGER_VERSION,
            job: task.job.clone(),
            shard: task.trial.clone(),
            rows: job.trials.iter().find(|t| t.trial == task.trial).map(|t| t.rows_estimate).unwrap_or(0),
            bad_rows: 0,
            seconds,
            started_at_ms,
            finished_at_ms,
            worker: self.worker.worker_id.clone(),
            attempt,
            output: registry.model_url(&manifest.name, manifest.version),
            sha256: manifest.sha256.clone(),
            trial: Some(Self::result_from(manifest, task)),
            device: None,
            usage: Some(usage),
        }
    }

    /// The trainer's command and the sha256 of every file it names.
    fn lineage_of(&self, name: &str, command: &[String]) -> TrainerLineage {
        let mut sha256 = BTreeMap::new();
        for arg in command {
            let path = std::path::Path::new(arg);
            let resolved = if path.is_file() { Some(path.to_path_buf()) } else { None };
            if let Some(p) = resolved
                && let Ok(bytes) = std::fs::read(&p)
            {
                sha256.insert(arg.clone(), hex::encode(sha2::Sha256::digest(&bytes)));
            }
        }
        TrainerLineage { name: name.to_string(), command: command.to_vec(), sha256 }
    }

    /// Runs the trainer; the trial's output directory on success, with
    /// the trainer's seconds and log.
    async fn train(
        &self,
        task: &TrainTask,
        job: &TrainJobRecord,
        lease: &Lease,
        slot: Option<TrainSlot>,
        ledger: &Ledger,
    ) -> Result<(PathBuf, f64, String, u64)> {
        let command = self.config.trainers.get(&job.spec.trainer).ok_or_else(|| Error::Trial {
            kind: TrialFailure::TrainerUnknown,
            message: format!(
                "this worker knows no trainer {:?} (known: {}); start workers with --trainer {}=COMMAND",
                job.spec.trainer,
                if self.config.trainers.is_empty() {
                    "none".to_string()
                } else {
                    self.config.trainers.keys().cloned().collect::<Vec<_>>().join(", ")
                },
                job.spec.trainer
            ),
            log_tail: None,
        })?;
        let staged = self.staged.stage(job).await?;
        let cancel = lease.cancel_token();
        let _slot = match slot {
            Some(s) => s,
            None => tokio::select! {
                s = self.slots.clone().acquire_owned() => s.expect("the semaphore is never closed"),
                _ = cancel.cancelled() => return lease.check(Err(Error::Cancelled)),
            },
        };
        // The trial starts now, not while it waited for the slot.
        let started_at_ms = now_ms();
        let out = self.config.work_dir.join("trials").join(format!("{}-{}", task.job, task.trial));
        let _ = tokio::fs::remove_dir_all(&out).await;
        tokio::fs::create_dir_all(&out).await.map_err(|e| Error::Trial {
            kind: TrialFailure::TrainerFailed,
            message: format!("cannot create {}: {e}", out.display()),
            log_tail: None,
        })?;
        let paths = |files: &[validate::LocalFile]| {
            files.iter().map(|f| f.path.display().to_string()).collect::<Vec<_>>().join("\n")
        };
        let env = vec![
            ("HOURGLASS_TRAIN_FILES".to_string(), paths(&staged.train)),
            ("HOURGLASS_HOLDOUT_FILES".to_string(), paths(&staged.holdout)),
            ("HOURGLASS_DATA_FORMAT".to_string(), staged.format.as_str().to_string()),
            ("HOURGLASS_LABEL".to_string(), job.spec.dataset.label.clone()),
            ("HOURGLASS_FEATURES".to_string(), job.features.join(",")),
            ("HOURGLASS_PARAMS".to_string(), serde_json::Value::Object(task.params.clone()).to_string()),
            ("HOURGLASS_OUTPUT_DIR".to_string(), out.display().to_string()),
            ("HOURGLASS_THREADS".to_string(), self.config.threads.to_string()),
            ("HOURGLASS_JOB".to_string(), task.job.to_string()),
            ("HOURGLASS_TRIAL".to_string(), task.trial.to_string()),
        ];
        let max_time = job.spec.max_train_time()?;
        info!(trainer = %job.spec.trainer, params = %serde_json::Value::Object(task.params.clone()), "trainer started");
        let ended =
            trainer::run(trainer::TrainerRun { command: command.clone(), env, max_time, lease: lease.clone() }).await;
        // A failed run's whole log is kept beside its record's tail.
        if let Err(trainer::TrainerEnd::Failed { log, .. } | trainer::TrainerEnd::TimedOut { log }) = &ended
            && let Err(e) = ledger.store().put(ledger.trial_log_url(&task.trial).key(), Bytes::from(log.clone())).await
        {
            warn!(error = %e, "could not keep the failed trainer's log");
        }
        match ended {
            Ok(exit) => Ok((out, exit.seconds, exit.log, started_at_ms)),
            Err(trainer::TrainerEnd::Failed { message, log }) => Err(Error::Trial {
                kind: TrialFailure::TrainerFailed,
                message: format!("trainer {:?} failed: {message}", job.spec.trainer),
                log_tail: Some(trainer::tail(&log)),
            }),
            Err(trainer::TrainerEnd::TimedOut { log }) => Err(Error::Trial {
                kind: TrialFailure::TrainerTimeout,
                message: format!(
                    "trainer {:?} ran past the job's max_train_time of {} and was stopped",
                    job.spec.trainer, job.spec.max_train_time
                ),
                log_tail: Some(trainer::tail(&log)),
            }),
            Err(trainer::TrainerEnd::LeaseLost | trainer::TrainerEnd::Abandoned) => lease.check(Err(Error::Cancelled)),
        }
    }
}

impl TaskHandler for TrainHandler {
    type Task = TrainTask;

    /// The training slots, when this worker trains at all (the lease loop
    /// receives a trial only with one free).
    fn slots(&self) -> Option<Arc<Semaphore>> {
        (!self.config.trainers.is_empty()).then(|| self.slots.clone())
    }

    fn refuses(&self, record: &AnyJob, task: &TrainTask) -> Option<String> {
        match record {
            AnyJob::Train(job) => job.refuses(task),
            AnyJob::Infer(job) => Some(format!("the prefix holds batch job {}, this is a training trial", job.job)),
        }
    }

    async fn run(&self, work: Work<'_, TrainTask>) -> Result<Option<DoneRecord>> {
        let Work { task, ledger, record, attempt, lease, train_slot } = work;
        let AnyJob::Train(job) = record else { unreachable!("refuses() lets only training jobs through") };
        let started_at_ms = now_ms();
        let registry = Registry::open(&job.spec.registry)?;
        let name = job.spec.name.as_str();
        let claimed = ledger.read_registration(&task.trial).await?;
        if let Some(reg) = &claimed
            && registry.is_described(name, reg.version).await?
        {
            info!(version = reg.version, "an earlier attempt registered this trial; recording it");
            let manifest = registry.manifest(name, reg.version).await?;
            lease.check_writable()?;
            let done = self.done_record(task, job, &registry, &manifest, (attempt, started_at_ms, 0.0));
            return Ok(ledger.create_done(&done).await?.then_some(done));
        }

        let (out, trainer_seconds, log, started_at_ms) = self.train(task, job, lease, train_slot, ledger).await?;
        let model_path = out.join("model.onnx");
        let bytes = Bytes::from(
            tokio::fs::read(&model_path).await.map_err(|e| refused(format!("the trainer wrote no model.onnx: {e}")))?,
        );
        let trainer_metrics = read_metrics(&out.join("metrics.json"))?;
        let predictions = validate::read_predictions(&out.join("holdout_predictions.txt"))?;
        // Everything the trainer wrote is in memory now.
        if let Err(e) = tokio::fs::remove_dir_all(&out).await {
            warn!(dir = %out.display(), error = %e, "could not remove the trial's output directory");
        }
        let staged = self.staged.stage(job).await?;
        let (label, features) = (job.spec.dataset.label.clone(), job.features.clone());
        let (model_bytes, batch_size) = (bytes.clone(), self.worker.batch_size);
        let handle = tokio::runtime::Handle::current();
        // On the CPU whatever the worker scores on: the check compares with
        // the trainer's own (CPU) predictions to 1e-5.
        let options = RuntimeOptions { intra_threads: self.worker.threads, ..Default::default() };
        let (signature, scored) = self
            .pool
            .run(move || -> Result<_> {
                let model = ModelRuntime::load(&model_bytes, "the trial's model.onnx", options)
                    .map_err(|e| refused(format!("not a loadable ONNX model: {e}")))?;
                let scored = validate::score_holdout(&handle, &model, &staged.holdout, &label, &features, batch_size)?;
                Ok((model.signature().clone(), scored))
            })
            .await?;
        let max_diff = validate::compare(&scored.scores, &predictions)?;
        let mut metrics = validate::metrics(&scored);
        metrics.insert("max_prediction_diff".into(), max_diff);
        metrics.insert("trainer_seconds".into(), trainer_seconds);
        for (k, v) in &trainer_metrics {
            metrics.insert(format!("{TRAINER_METRIC_PREFIX}{k}"), *v);
        }
        info!(
            auc = metrics.get("auc").copied(),
            logloss = metrics.get("logloss").copied(),
            max_prediction_diff = max_diff,
            trainer_seconds,
            "model checked"
        );

        // Record: only with lease time left and no other attempt recorded.
        lease.check_writable()?;
        if ledger.read_done(&task.trial).await?.is_some() {
            return Ok(None);
        }
        let log_url = ledger.trial_log_url(&task.trial);
        ledger.store().put(log_url.key(), Bytes::from(log)).await?;
        let (version, rewrite) = match claimed {
            Some(reg) => (reg.version, true),
            None => {
                let version = registry.claim_version(name, bytes.clone()).await?;
                let reg = Registration {
                    v: LEDGER_VERSION,
                    job: task.job.clone(),
                    trial: task.trial.clone(),
                    name: name.to_string(),
                    version,
                };
                if ledger.create_registration(&reg).await? {
                    (version, false)
                } else {
                    // Another attempt claimed first; version `version`
                    // stays an invisible orphan.
                    let theirs = ledger.read_registration(&task.trial).await?.ok_or_else(|| {
                        Error::Core(hourglass_core::Error::invalid(
                            ledger.root().to_string(),
                            "a registration record vanished after put-if-absent refused ours",
                        ))
                    })?;
                    if registry.is_described(name, theirs.version).await? {
                        return Ok(None);
                    }
                    (theirs.version, true)
                }
            }
        };
        lease.check_writable()?;
        let lineage = Lineage {
            pushed_by: self.worker.worker_id.clone(),
            source: Some(job.spec.output.as_prefix().to_string()),
            training_run: Some(job.training_run(&task.trial)),
            trainer: self.config.trainers.get(&job.spec.trainer).map(|c| self.lineage_of(&job.spec.trainer, c)),
            params: task.params.clone(),
            dataset: job.train_files.iter().chain(&job.holdout_files).cloned().collect(),
        };
        let manifest = registry.describe_version(name, version, bytes, rewrite, signature, lineage, metrics).await?;
        self.metrics.model_loaded(&registry.model_url(name, version).to_string(), &manifest.sha256, "cpu");
        info!(model = name, version, "trial registered");
        let seconds = now_ms().saturating_sub(started_at_ms) as f64 / 1000.0;
        let done = self.done_record(task, job, &registry, &manifest, (attempt, started_at_ms, seconds));
        Ok(ledger.create_done(&done).await?.then_some(done))
    }

    async fn finalize(&self, ledger: &Ledger, record: &AnyJob) -> Result<bool> {
        let AnyJob::Train(job) = record else { return Ok(ledger.try_finalize_any(record).await?) };
        let listed = ledger.done_shards().await?;
        if !job.trials.iter().all(|t| listed.contains(&t.trial)) || ledger.success().await?.is_some() {
            return Ok(false);
        }
        if ledger.read_promotion().await?.is_none() {
            let Some(done) = ledger.all_done(record).await? else { return Ok(false) };
            let decision = promote(job, &done).await?;
            info!(
                promoted = decision.promoted,
                best_trial = ?decision.best_trial,
                version = ?decision.best_version,
                reason = %decision.reason,
                "promotion decided"
            );
            ledger.create_promotion(&decision).await?;
        }
        Ok(ledger.try_finalize_any(record).await?)
    }
}

/// `metrics.json`: an object; its numbers are kept, anything else ignored.
fn read_metrics(path: &std::path::Path) -> Result<BTreeMap<String, f64>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| refused(format!("the trainer wrote no readable metrics.json: {e}")))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| refused(format!("metrics.json is not JSON: {e}")))?;
    let obj = value.as_object().ok_or_else(|| refused("metrics.json is not a JSON object".into()))?;
    Ok(obj.iter().filter_map(|(k, v)| Some((k.clone(), v.as_f64()?))).collect())
}

/// Picks the best trial and moves the alias when the job's rule holds.
/// Safe to run again after a crash: an alias already at the best version
/// counts as promoted.
async fn promote(job: &TrainJobRecord, done: &[DoneRecord]) -> Result<PromotionRecord> {
    let rule = job.spec.promote_if.as_deref().map(PromoteRule::parse).transpose()?;
    let metric = rule.as_ref().map(|r| r.metric.clone()).unwrap_or_else(|| "auc".into());
    let better = rule.as_ref().map(|r| r.op.better()).unwrap_or_else(|| better_for(&metric));
    let scored: Vec<(&DoneRecord, &TrialResult, f64)> = done
        .iter()
        .filter_map(|d| {
            let t = d.trial.as_ref()?;
            Some((d, t, *t.metrics.get(&metric).or_else(|| t.trainer_metrics.get(&metric))?))
        })
        .collect();
    let best = scored.iter().copied().reduce(|a, b| {
        let b_wins = match better {
            Better::Higher => b.2 > a.2,
            Better::Lower => b.2 < a.2,
        };
        if b_wins { b } else { a }
    });
    let registry = Registry::open(&job.spec.registry)?;
    let name = &job.spec.name;
    let alias = &job.spec.alias;
    let (aliases, _) = registry.aliases(name).await?;
    let champion_version = aliases.aliases.get(alias).copied();
    let champion = match champion_version {
        Some(v) => Some(registry.manifest(name, v).await?),
        None => None,
    };
    let champion_value = champion.as_ref().and_then(|m| m.metrics.get(&metric).copied());
    let mut record = PromotionRecord {
        v: LEDGER_VERSION,
        job: job.job.clone(),
        metric: metric.clone(),
        better,
        best_trial: best.map(|b| b.0.shard.clone()),
        best_version: best.map(|b| b.1.version),
        best_value: best.map(|b| b.2),
        alias: alias.clone(),
        champion_version,
        champion_value,
        promoted: false,
        reason: String::new(),
        decided_at_ms: now_ms(),
    };
    let Some((_, best_trial, best_value)) = best else {
        record.reason = format!("no trial recorded the metric {metric:?}; nothing to rank, {alias} left alone");
        return Ok(record);
    };
    let Some(rule) = rule else {
        record.reason = format!("no promote_if rule; {alias} left alone");
        return Ok(record);
    };
    if champion_version == Some(best_trial.version) {
        record.promoted = true;
        record.reason = format!("{alias} already points at version {}", best_trial.version);
        return Ok(record);
    }
    let verdict: std::result::Result<(), String> = match (&rule.against, &champion, champion_value) {
        (Against::Champion, None, _) => Ok(()),
        (Against::Champion, Some(c), None) => {
            Err(format!("the champion (version {}) recorded no {metric}; promote by hand", c.version))
        }
        (Against::Champion, Some(_), Some(cv)) => {
            if rule.op.holds(best_value, cv) {
                Ok(())
            } else {
                Err(format!("{metric} {best_value:.6} is not {} the champion's {cv:.6}", rule.op.as_str()))
            }
        }
        (Against::Value(v), _, _) => {
            if rule.op.holds(best_value, *v) {
                Ok(())
            } else {
                Err(format!("{metric} {best_value:.6} is not {} {v}", rule.op.as_str()))
            }
        }
    };
    let verdict = match (verdict, &champion) {
        (Ok(()), Some(c)) => {
            let candidate = registry.manifest(name, best_trial.version).await?;
            hourglass_core::registry::check_binds(&c.signature, &candidate.signature)
                .map_err(|e| format!("it does not bind to the champion's columns: {e}"))
        }
        (v, _) => v,
    };
    match verdict {
        Ok(()) => {
            let by = format!("hourglass train {}", job.job);
            registry.set_alias(name, alias, best_trial.version, Some(champion_version), &by).await?;
            record.promoted = true;
            record.reason = match champion_value {
                Some(cv) => format!("{rule} held: {best_value:.6} against {cv:.6}"),
                None if champion_version.is_none() => format!("no {alias} yet; the best trial becomes it"),
                None => format!("{rule} held"),
            };
        }
        Err(why) => record.reason = why,
    }
    if !record.promoted {
        warn!(reason = %record.reason, "best trial not promoted");
    }
    Ok(record)
}
