//! Submission: plan (or reload the plan of) a job, write its record, and
//! enqueue the shards that have no done record yet. Re-submitting the same
//! job therefore resumes it.

use crate::plan::{check_file, cut_shards, list_inputs};
use crate::{Error, Result};
use hourglass_core::ledger::{InputFileRecord, JobRecord, JobSpec, LEDGER_VERSION, Ledger, now_ms};
use hourglass_core::model::ModelSignature;
use hourglass_core::queue::{Queue, send_all};
use hourglass_core::task::{ModelRef, ShardTask, TASK_VERSION};
use hourglass_core::{JobId, store};
use serde::Serialize;
use sha2::Digest;
use tracing::info;

#[derive(Debug, Clone)]
pub struct SubmitRequest {
    pub spec: JobSpec,
    /// Named by the user, or derived from the spec and the model.
    pub job_id: Option<JobId>,
    pub signature: ModelSignature,
    pub model_sha256: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SubmitReport {
    pub job: JobId,
    pub output: String,
    pub shards: usize,
    pub enqueued: usize,
    pub already_done: usize,
    pub rows_estimate: u64,
    pub resumed: bool,
}

/// The id of a job: a hash of what it computes (inputs, model bytes,
/// output, options), not of when it is due, so the same job submitted again
/// with a new deadline resumes.
pub fn derive_job_id(spec: &JobSpec, model_sha256: &str) -> JobId {
    let mut keyed = spec.clone();
    keyed.deadline_unix_ms = None;
    let mut h = sha2::Sha256::new();
    h.update(serde_json::to_vec(&keyed).expect("spec serializes"));
    h.update(model_sha256.as_bytes());
    JobId::new(format!("j-{}", &hex::encode(h.finalize())[..16]))
}

pub async fn submit(req: SubmitRequest, queue: &dyn Queue) -> Result<SubmitReport> {
    let spec = &req.spec;
    let job = req.job_id.clone().unwrap_or_else(|| derive_job_id(spec, &req.model_sha256));
    let ledger = Ledger::new(store::open(&spec.output)?, &spec.output);
    let (record, resumed) = match ledger.read_job().await? {
        Some(existing) => {
            if existing.job != job {
                return Err(Error::Request(format!(
                    "{} already holds job {} (a different input, model or option set); use another --output, or --job-id {} to resume that job",
                    ledger.root(),
                    existing.job,
                    existing.job
                )));
            }
            if existing.model_sha256 != req.model_sha256 {
                return Err(Error::Request(format!(
                    "job {job} was planned with model sha256 {}, but {} now has sha256 {}; outputs would mix two models",
                    existing.model_sha256, spec.model, req.model_sha256
                )));
            }
            // The plan is byte ranges and row groups of the files as they
            // were: a changed file would be read wrongly, so refuse.
            let input_store = store::open(&spec.input)?;
            for f in &existing.files {
                let now = match input_store.head(f.url.key()).await {
                    Ok(meta) => Some(meta.size),
                    Err(e) if e.is_not_found() => None,
                    Err(e) => return Err(e.into()),
                };
                if now != Some(f.size) {
                    return Err(Error::Request(format!(
                        "job {job} cannot resume: input {} {} since it was planned ({} bytes then); use another --output to plan a new job",
                        f.url,
                        now.map_or("is gone".to_string(), |n| format!("changed size to {n} bytes")),
                        f.size
                    )));
                }
            }
            let mut record = existing;
            if spec.deadline_unix_ms.is_some() {
                record.spec.deadline_unix_ms = spec.deadline_unix_ms;
            }
            (record, true)
        }
        None => {
            let input_store = store::open(&spec.input)?;
            let files = list_inputs(input_store.as_ref(), &spec.input, spec.format).await?;
            let mut checked = Vec::with_capacity(files.len());
            for f in &files {
                checked.push(check_file(input_store.as_ref(), f, &req.signature, &spec.id_column).await?);
            }
            let shards = cut_shards(input_store.as_ref(), &checked, spec.shard_bytes).await?;
            info!(files = files.len(), shards = shards.len(), "planned");
            let record = JobRecord {
                v: LEDGER_VERSION,
                job: job.clone(),
                spec: spec.clone(),
                model_sha256: req.model_sha256.clone(),
                submitted_at_ms: now_ms(),
                rows_estimate: shards.iter().map(|s| s.rows_estimate).sum(),
                files: files.iter().map(|f| InputFileRecord { url: f.url.clone(), size: f.size }).collect(),
                shards,
            };
            (record, false)
        }
    };
    // The record goes first: workers read it to finalize.
    ledger.write_job(&record).await?;
    let done = ledger.done_shards().await?;
    let mut bodies = Vec::new();
    for plan in record.shards.iter().filter(|s| !done.contains(&s.shard)) {
        let task = ShardTask {
            v: TASK_VERSION,
            job: job.clone(),
            shard: plan.shard.clone(),
            input: plan.input.clone(),
            model: ModelRef { url: record.spec.model.clone(), sha256: record.model_sha256.clone() },
            output: record.spec.output.as_prefix(),
            id_column: record.spec.id_column.clone(),
            max_bad_rows: record.spec.max_bad_rows,
            deadline_unix_ms: record.spec.deadline_unix_ms,
        };
        if resumed {
            // Tried again: it is no longer failed.
            ledger.clear_failed(&plan.shard).await?;
        }
        bodies.push(task.encode());
    }
    send_all(queue, &bodies).await?;
    if bodies.is_empty() {
        // Every shard is done (or the inputs hold no rows): make sure
        // `_SUCCESS` is there.
        ledger.try_finalize(&record).await?;
    }
    info!(job = %job, enqueued = bodies.len(), already_done = done.len(), "submitted");
    Ok(SubmitReport {
        job,
        output: ledger.root().to_string(),
        shards: record.shards.len(),
        enqueued: bodies.len(),
        already_done: record.shards.len() - bodies.len(),
        rows_estimate: record.rows_estimate,
        resumed,
    })
}
