//! The `infer` task handler: score one shard of a batch job and record it.
//! The lease mechanics around it (checks, heartbeat, ack, records) are in
//! `lease`; this module only turns a held shard into an output object and
//! its done record, in the order `lease`'s header states.

use crate::lease::{Lease, TaskHandler, Work};
use crate::metrics::WorkerMetrics;
use crate::shard::{OpenedInput, ShardJob, score_shard};
use crate::{Error, Result, WorkerConfig};
use bytes::Bytes;
use hourglass_core::ledger::{AnyJob, DoneRecord, LEDGER_VERSION, Ledger, now_ms};
use hourglass_core::task::ShardTask;
use hourglass_core::{BlobUrl, store};
use hourglass_runtime::device::Device;
use hourglass_runtime::pool::CpuPool;
use hourglass_runtime::{ModelRuntime, RuntimeOptions};
use sha2::Digest;
use std::collections::HashMap;
use std::sync::Arc;
use tracing::info;

/// Scores shards with models cached by sha256.
pub struct InferHandler {
    config: WorkerConfig,
    pool: CpuPool,
    models: tokio::sync::Mutex<HashMap<String, Arc<ModelRuntime>>>,
    metrics: Arc<WorkerMetrics>,
}

impl InferHandler {
    pub fn new(config: WorkerConfig, pool: CpuPool, metrics: Arc<WorkerMetrics>) -> Self {
        Self { config, pool, models: Default::default(), metrics }
    }

    fn runtime_options(&self) -> RuntimeOptions {
        RuntimeOptions::new(self.config.threads, self.config.concurrency, &self.config.device)
    }

    /// Fetches, checks and loads a model, once per sha256: the cache lock is
    /// held across the load so concurrent shards of a new job load it once.
    async fn load_model(&self, url: &BlobUrl, expected_sha256: Option<&str>) -> Result<Arc<ModelRuntime>> {
        let mut models = self.models.lock().await;
        if let Some(m) = expected_sha256.and_then(|sha| models.get(sha)) {
            return Ok(m.clone());
        }
        let bytes = store::open(url)?.get(url.key()).await?;
        let sha = hex::encode(sha2::Sha256::digest(&bytes));
        if let Some(expected) = expected_sha256.filter(|e| *e != sha) {
            return Err(Error::Runtime(hourglass_runtime::Error::Model {
                model: url.to_string(),
                message: format!("sha256 is {sha}, the job expects {expected}; the model changed after submit"),
            }));
        }
        if let Some(m) = models.get(&sha) {
            return Ok(m.clone());
        }
        let (source, options) = (url.to_string(), self.runtime_options());
        let model = Arc::new(self.pool.run(move || ModelRuntime::load(&bytes, &source, options)).await?);
        models.insert(sha, model.clone());
        let device = model.device().to_string();
        self.metrics.model_loaded(&url.to_string(), model.sha256(), &device);
        info!(model = %url, sha256 = model.sha256(), device = %device, "model loaded");
        Ok(model)
    }
}

impl TaskHandler for InferHandler {
    type Task = ShardTask;

    /// Loads `--model` before any message, when asked to preload.
    async fn start(&self) -> Result<bool> {
        match self.config.preload_model.clone() {
            Some(url) => self.load_model(&url, None).await.map(|_| true),
            None => Ok(false),
        }
    }

    fn refuses(&self, record: &AnyJob, task: &ShardTask) -> Option<String> {
        match record {
            AnyJob::Infer(job) => job.refuses(task),
            AnyJob::Train(job) => Some(format!("the prefix holds training job {}, this is a shard task", job.job)),
        }
    }

    /// Scores a shard and records it. `Ok(None)`: another attempt recorded
    /// it first, and this one wrote nothing after noticing.
    async fn run(&self, work: Work<'_, ShardTask>) -> Result<Option<DoneRecord>> {
        let Work { task, ledger, attempt, lease, .. } = work;
        let model = self.load_model(&task.model.url, Some(&task.model.sha256)).await?;
        let model_device = model.device();
        let job = ShardJob {
            task: task.clone(),
            model,
            batch_size: self.config.batch_size,
            cancel: lease.cancel_token(),
            fault_batch_delay: self.config.fault_batch_delay,
            decode_only: false,
            inference_seconds: Some(self.metrics.inference_seconds.clone()),
            pool: Some(self.pool.clone()),
        };
        let handle = tokio::runtime::Handle::current();
        // Opened while the shard may still wait for a pool thread.
        let input = OpenedInput::open(task).await?;
        // Started when a pool thread takes it, not while it waits for one.
        let (started_at_ms, outcome) = self.pool.run(move || (now_ms(), score_shard(&handle, &job, Some(input)))).await;
        let outcome = lease.check(outcome)?;
        let who = Scorer {
            worker: &self.config.worker_id,
            device: model_device,
            node: self.config.node.get(),
            concurrency: self.config.concurrency,
        };
        write_output(ledger, lease, task, who, attempt, started_at_ms, outcome).await
    }

    async fn finalize(&self, ledger: &Ledger, record: &AnyJob) -> Result<bool> {
        Ok(ledger.try_finalize_any(record).await?)
    }
}

/// Who scored a shard, for its done record.
struct Scorer<'a> {
    worker: &'a str,
    /// The device the model really ran on.
    device: Device,
    node: crate::node::NodeKind,
    /// Shards the pod scores at once: each holds that share of it.
    concurrency: usize,
}

/// Writes a scored shard: output, bad rows, then the done record, each
/// only with lease time left and no other attempt's record in place.
async fn write_output(
    ledger: &Ledger,
    lease: &Lease,
    task: &ShardTask,
    who: Scorer<'_>,
    attempt: u32,
    started_at_ms: u64,
    outcome: crate::shard::ShardOutcome,
) -> Result<Option<DoneRecord>> {
    lease.check_writable()?;
    if ledger.read_done(&task.shard).await?.is_some() {
        return Ok(None);
    }
    let out_url = ledger.output_url(&task.shard, task.output_format);
    let sha256 = hex::encode(sha2::Sha256::digest(&outcome.output));
    ledger.store().put(out_url.key(), Bytes::from(outcome.output)).await?;
    if let Some(bad) = outcome.bad_rows_csv {
        ledger.store().put(ledger.bad_rows_url(&task.shard).key(), Bytes::from(bad)).await?;
    }
    lease.check_writable()?;
    let finished_at_ms = now_ms();
    let usage = hourglass_core::cost::Usage {
        pod_seconds: finished_at_ms.saturating_sub(started_at_ms) as f64 / 1000.0 / who.concurrency.max(1) as f64,
        capacity_type: who.node.capacity_type.clone(),
        instance_type: who.node.instance_type.clone(),
    };
    let done = DoneRecord {
        v: LEDGER_VERSION,
        job: task.job.clone(),
        shard: task.shard.clone(),
        rows: outcome.rows,
        bad_rows: outcome.bad_rows,
        seconds: outcome.seconds,
        started_at_ms,
        finished_at_ms,
        worker: who.worker.to_string(),
        attempt,
        output: out_url,
        sha256,
        trial: None,
        device: Some(who.device.to_string()),
        usage: Some(usage),
    };
    Ok(ledger.create_done(&done).await?.then_some(done))
}
