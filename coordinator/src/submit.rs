//! Submission: plan (or reload the plan of) a job, write its record, and
//! enqueue the shards that have no done record yet. Re-submitting the same
//! job therefore resumes it.

use crate::plan::{check_file, cut_shards, list_inputs};
use crate::{Error, Result};
use hourglass_core::jobs::{IndexEntry, JobsIndex};
use hourglass_core::ledger::{InputFileRecord, JobRecord, JobSpec, LEDGER_VERSION, Ledger, SkippedFile, now_ms};
use hourglass_core::model::ModelSignature;
use hourglass_core::queue::{Queue, send_all};
use hourglass_core::store::BlobStore;
use hourglass_core::{BlobUrl, JobId, ShardId, store};
use serde::Serialize;
use sha2::Digest;
use tracing::{info, warn};

#[derive(Debug, Clone)]
pub struct SubmitRequest {
    pub spec: JobSpec,
    /// Named by the user, or derived from the spec and the model.
    pub job_id: Option<JobId>,
    pub signature: ModelSignature,
    pub model_sha256: String,
    /// Clear a prefix that holds another job's ledger and outputs first.
    pub replace: bool,
    /// The registry model `spec.model` was resolved from.
    pub model_registry: Option<hourglass_core::ledger::RegistryPin>,
    /// Register the job here before enqueueing (see `hourglass_core::jobs`),
    /// so a scaler following the queue sees every job on it.
    pub jobs_index: Option<BlobUrl>,
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
    /// Input files with no rows, planned as no shard.
    pub skipped_files: Vec<SkippedFile>,
    /// Files under the input prefix that appeared after the job was
    /// planned (a resume scores only the planned files).
    pub new_files: Vec<String>,
    /// Objects deleted by `--replace`.
    pub replaced_objects: usize,
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
    JobId::parse(&format!("j-{}", &hex::encode(h.finalize())[..16])).expect("hex ids are valid")
}

/// Plans a new job, or checks that a resubmit names exactly the job its
/// prefix holds, then enqueues every shard without a done record.
pub async fn submit(req: SubmitRequest, queue: &dyn Queue) -> Result<SubmitReport> {
    let spec = &req.spec;
    let job = req.job_id.clone().unwrap_or_else(|| derive_job_id(spec, &req.model_sha256));
    let ledger = Ledger::new(store::open(&spec.output)?, &spec.output);
    let input_store = store::open(&spec.input)?;
    let mut replaced_objects = 0;
    if req.replace && ledger.read_job().await?.is_some() {
        replaced_objects = ledger.clear().await?;
        info!(output = %ledger.root(), deleted = replaced_objects, "--replace: cleared the prefix's previous job");
    }
    let (record, resumed) = match ledger.read_job().await? {
        Some(existing) => (check_resume(&ledger, existing, &req, &job, input_store.as_ref()).await?, true),
        None => {
            let record = plan(&req, &job, input_store.as_ref()).await?;
            // A prefix belongs to one job: of two submits racing for it,
            // one creates the record and the other must be the same job.
            if ledger.create_job(&record).await? {
                (record, false)
            } else {
                let existing = ledger
                    .read_job()
                    .await?
                    .ok_or_else(|| Error::Conflict(format!("{}: job.json vanished while submitting", ledger.root())))?;
                (check_resume(&ledger, existing, &req, &job, input_store.as_ref()).await?, true)
            }
        }
    };
    let new_files = if resumed { new_input_files(&record, input_store.as_ref()).await? } else { vec![] };
    for f in &new_files {
        warn!(file = %f, job = %job, "input file added after the job was planned; a resume does not score it (submit to a new --output to include it)");
    }
    let open = open_units(&ledger, record.shards.iter().map(|s| &s.shard), resumed).await?;
    let bodies: Vec<String> =
        record.shards.iter().filter(|s| open.contains(&s.shard)).map(|s| record.task_for(s).encode()).collect();
    // Registered before its first message is sent: a scaler never sees
    // work on the queue whose job it cannot find.
    if let (Some(index), false) = (&req.jobs_index, bodies.is_empty()) {
        let entry = IndexEntry {
            v: hourglass_core::jobs::INDEX_VERSION,
            job: job.clone(),
            output: ledger.root().to_string(),
            queue: queue.name().to_string(),
            submitted_at_ms: now_ms(),
            deadline_unix_ms: record.spec.deadline_unix_ms,
        };
        JobsIndex::open(index)?.register(&entry).await?;
    }
    send_all(queue, &bodies).await?;
    if bodies.is_empty() {
        // Every shard is done: make sure `_SUCCESS` is there.
        ledger.try_finalize(&record).await?;
    }
    info!(job = %job, enqueued = bodies.len(), already_done = record.shards.len() - bodies.len(), "submitted");
    Ok(SubmitReport {
        job,
        output: ledger.root().to_string(),
        shards: record.shards.len(),
        enqueued: bodies.len(),
        already_done: record.shards.len() - bodies.len(),
        rows_estimate: record.rows_estimate,
        resumed,
        skipped_files: record.skipped_files.clone(),
        new_files,
        replaced_objects,
    })
}

/// The units (shards or trials) of a job without a done record: the ones
/// a submit enqueues. On a resume, their failed records are cleared (only
/// those that exist, so a role without broad delete rights can resume).
pub(crate) async fn open_units<'a>(
    ledger: &Ledger,
    units: impl Iterator<Item = &'a ShardId>,
    resumed: bool,
) -> Result<std::collections::BTreeSet<ShardId>> {
    let done = ledger.done_shards().await?;
    let failed = if resumed { ledger.failed_shards().await? } else { Default::default() };
    let mut open = std::collections::BTreeSet::new();
    for unit in units.filter(|u| !done.contains(*u)) {
        if failed.contains(unit) {
            ledger.clear_failed(unit).await?;
        }
        open.insert(unit.clone());
    }
    Ok(open)
}

async fn plan(req: &SubmitRequest, job: &JobId, input_store: &dyn BlobStore) -> Result<JobRecord> {
    let spec = &req.spec;
    let files = list_inputs(input_store, &spec.input, spec.format).await?;
    let opts = crate::plan::ReadOptions::of(spec);
    let mut checked = Vec::with_capacity(files.len());
    for f in &files {
        checked.push(check_file(input_store, f, &req.signature, &spec.id_column, spec.max_line_bytes, &opts).await?);
    }
    let skipped_files: Vec<SkippedFile> =
        checked.iter().filter_map(|c| Some(SkippedFile { url: c.file.url.clone(), reason: c.skip.clone()? })).collect();
    for s in &skipped_files {
        warn!(file = %s.url, reason = %s.reason, "input file has no rows; skipped");
    }
    let shards = cut_shards(input_store, &checked, spec.shard_bytes, spec.max_line_bytes).await?;
    if shards.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: the input holds no rows ({} file(s), all skipped: {}); nothing to score",
            spec.input,
            files.len(),
            skipped_files.iter().map(|s| format!("{} ({})", s.url, s.reason)).collect::<Vec<_>>().join(", ")
        )));
    }
    info!(files = files.len(), skipped = skipped_files.len(), shards = shards.len(), "planned");
    Ok(JobRecord {
        v: LEDGER_VERSION,
        job: job.clone(),
        spec: spec.clone(),
        model_sha256: req.model_sha256.clone(),
        submitted_at_ms: now_ms(),
        rows_estimate: shards.iter().map(|s| s.rows_estimate).sum(),
        files: files
            .iter()
            .map(|f| InputFileRecord {
                url: f.url.clone(),
                size: f.size,
                version: Some(f.version.clone()),
                columns: None,
            })
            .collect(),
        skipped_files,
        shards,
        model_registry: req.model_registry.clone(),
    })
}

/// A resubmit must name the job the prefix holds, with the same spec and
/// model, over input files that have not changed. Returns the record to
/// enqueue from (with the new deadline, if one was given).
async fn check_resume(
    ledger: &Ledger,
    existing: JobRecord,
    req: &SubmitRequest,
    job: &JobId,
    input_store: &dyn BlobStore,
) -> Result<JobRecord> {
    let spec = &req.spec;
    if existing.job != *job {
        return Err(Error::Conflict(format!(
            "{} already holds job {}, not job {job} (a different input, model or option set); use another --output, --job-id {} to resume that job, or --replace to delete it and start job {job}",
            ledger.root(),
            existing.job,
            existing.job
        )));
    }
    if let Some((field, then, now)) = existing.spec.differs_from(spec) {
        return Err(Error::Conflict(format!(
            "job {job} at {} was planned with {field} {then}, not {now}; a job id names one plan: use another --job-id or --output",
            ledger.root()
        )));
    }
    if existing.model_sha256 != req.model_sha256 {
        return Err(Error::Conflict(format!(
            "job {job} was planned with model sha256 {}, but {} now has sha256 {}; outputs would mix two models",
            existing.model_sha256, spec.model, req.model_sha256
        )));
    }
    // The plan is byte ranges and row groups of the files as they were: a
    // changed file would be read wrongly, so refuse.
    for f in &existing.files {
        let now = match input_store.head(f.url.key()).await {
            Ok(meta) => Some(meta),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e.into()),
        };
        let changed = match &now {
            None => Some("is gone".to_string()),
            Some(m) if m.size != f.size => Some(format!("changed size to {} bytes ({} then)", m.size, f.size)),
            Some(m) if f.version.as_ref().is_some_and(|v| *v != m.version) => {
                Some(format!("was rewritten (version {} then, {} now)", f.version.as_deref().unwrap_or(""), m.version))
            }
            Some(_) => None,
        };
        if let Some(how) = changed {
            return Err(Error::Conflict(format!(
                "job {job} cannot resume: input {} {how} since it was planned; use another --output to plan a new job",
                f.url
            )));
        }
    }
    let mut record = existing;
    if spec.deadline_unix_ms.is_some() && spec.deadline_unix_ms != record.spec.deadline_unix_ms {
        record.spec.deadline_unix_ms = spec.deadline_unix_ms;
        ledger.update_job(&record).await?;
    }
    Ok(record)
}

/// Input files listed now that the job's plan does not know.
async fn new_input_files(record: &JobRecord, input_store: &dyn BlobStore) -> Result<Vec<String>> {
    let known: std::collections::BTreeSet<String> = record
        .files
        .iter()
        .map(|f| f.url.to_string())
        .chain(record.skipped_files.iter().map(|s| s.url.to_string()))
        .collect();
    let listed = match list_inputs(input_store, &record.spec.input, record.spec.format).await {
        Ok(files) => files,
        Err(Error::Input { .. }) => vec![],
        Err(e) => return Err(e),
    };
    Ok(listed.into_iter().map(|f| f.url.to_string()).filter(|u| !known.contains(u)).collect())
}
