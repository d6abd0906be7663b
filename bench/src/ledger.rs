//! What the ledger costs as jobs grow (`hourglass bench ledger`). For each
//! job size it plans a synthetic job of N shards on the store, records
//! every shard as a worker does (is it done? the done record, the
//! completion check, the final check for the last), `workers` at a time in
//! plan order, and reads `status` half-way and at the end. Every store
//! request is counted as S3 bills it (a listing is one request per 1000
//! keys), and `latency` is added before each, as S3's own would be. No
//! model, queue or output is involved: only the ledger's own requests.

use futures::{StreamExt, TryStreamExt};
use hourglass_coordinator::status::{JobState, status_of};
use hourglass_core::fault::FaultPlan;
use hourglass_core::ledger::{AnyJob, DoneRecord, JobRecord, JobSpec, LEDGER_VERSION, Ledger, ShardPlan, now_ms};
use hourglass_core::store::{self, BlobStore, CountingStore, UnreliableStore};
use hourglass_core::task::{Format, ShardInput};
use hourglass_core::{BlobUrl, JobId, ShardId};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// What to measure.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Job sizes, in shards.
    pub shards: Vec<usize>,
    /// Where the ledgers go (one sub-prefix per size; a directory's are
    /// removed afterwards).
    pub store: BlobUrl,
    /// Added before every store request.
    pub latency: Duration,
    /// Shards recorded at once, as by that many workers.
    pub workers: usize,
}

#[derive(Debug, Serialize)]
pub struct Run {
    pub shards: usize,
    /// The store requests of recording every shard, per shard: the job
    /// record's HEAD, the done check, the done record, the completion
    /// check and the final check.
    pub requests_per_shard: f64,
    pub seconds_recording: f64,
    /// `status` with half of the shards done.
    pub status_half_secs: f64,
    pub status_half_requests: u64,
    /// `status` of the finished job.
    pub status_done_secs: f64,
    pub status_done_requests: u64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub store: String,
    pub latency_ms: f64,
    pub workers: usize,
    pub runs: Vec<Run>,
}

/// Runs every size of `spec`, reporting progress on stderr.
pub async fn measure(spec: &Spec) -> Result<Report> {
    let base = spec.store.as_prefix();
    let mut runs = Vec::new();
    for &n in &spec.shards {
        if n == 0 {
            return Err("--shards: a job has at least one shard".into());
        }
        let root = base.join(&format!("n{n}-{}/", now_ms()));
        eprintln!("{n} shards at {root} ({} ms per request, {} at once)…", spec.latency.as_millis(), spec.workers);
        let counting = Arc::new(CountingStore::new(store::open(&root)?));
        let plan = FaultPlan { latency: spec.latency, ..FaultPlan::default() };
        let delayed: Arc<dyn BlobStore> = Arc::new(UnreliableStore::new(counting.clone(), plan));
        let ledger = Ledger::new(delayed, &root);
        let job = synthetic_job(&root, n);
        ledger.create_job(&job).await?;
        let job = AnyJob::Infer(job);

        let (mut recording, mut run) = (
            Duration::ZERO,
            Run {
                shards: n,
                requests_per_shard: 0.0,
                seconds_recording: 0.0,
                status_half_secs: 0.0,
                status_half_requests: 0,
                status_done_secs: 0.0,
                status_done_requests: 0,
            },
        );
        let mut requests = 0;
        for (half, range) in [(true, 0..n / 2), (false, n / 2..n)] {
            let started = (Instant::now(), counting.requests());
            record(&ledger, &job, &root, range, spec.workers).await?;
            recording += started.0.elapsed();
            requests += counting.requests() - started.1;
            let started = (Instant::now(), counting.requests());
            let status = status_of(&ledger, None).await?;
            let (secs, reqs) = (started.0.elapsed().as_secs_f64(), counting.requests() - started.1);
            if half {
                (run.status_half_secs, run.status_half_requests) = (secs, reqs);
            } else {
                if status.state != JobState::Succeeded || status.shards_done != n as u64 {
                    return Err(format!(
                        "the bench job did not finish: {:?}, {} of {n} shards done",
                        status.state, status.shards_done
                    )
                    .into());
                }
                (run.status_done_secs, run.status_done_requests) = (secs, reqs);
            }
        }
        run.requests_per_shard = requests as f64 / n as f64;
        run.seconds_recording = recording.as_secs_f64();
        eprintln!(
            "  {:.2} requests/shard; status {:.2} s half-way ({} requests), {:.2} s done ({} requests)",
            run.requests_per_shard,
            run.status_half_secs,
            run.status_half_requests,
            run.status_done_secs,
            run.status_done_requests
        );
        if let Some(dir) = root.local_path() {
            let _ = std::fs::remove_dir_all(dir);
        }
        runs.push(run);
    }
    Ok(Report { store: base.to_string(), latency_ms: spec.latency.as_secs_f64() * 1e3, workers: spec.workers, runs })
}

/// What a worker does to the ledger for each shard of `range`, `workers`
/// at a time, on a shard's first delivery: the HEAD of `job.json` (is the
/// cached record still the prefix's?), the done check before writing (a
/// redelivery also checks before the work), the done record, the
/// completion check, and the final check when that says so. (The input
/// read and the output write are not counted.)
async fn record(
    ledger: &Ledger,
    job: &AnyJob,
    root: &BlobUrl,
    range: std::ops::Range<usize>,
    workers: usize,
) -> Result<()> {
    futures::stream::iter(range)
        .map(|i: usize| async move {
            let shard = ShardId::from_index(i);
            ledger.job_version().await?;
            if ledger.read_done(&shard).await?.is_none() {
                ledger.create_done(&done_record(job, root, &shard)).await?;
            }
            if ledger.may_complete(job, &shard).await? {
                ledger.try_finalize_any(job).await?;
            }
            Ok::<_, hourglass_core::Error>(())
        })
        .buffer_unordered(workers.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

fn synthetic_job(root: &BlobUrl, shards: usize) -> JobRecord {
    let input = ShardInput {
        url: root.join("input.csv"),
        format: Format::Csv,
        range: None,
        columns: None,
        row_groups: None,
        version: None,
        delimiter: None,
        compression: None,
        skip_header: false,
    };
    JobRecord {
        v: LEDGER_VERSION,
        job: JobId::parse("bench-ledger").expect("valid id"),
        spec: JobSpec {
            input: root.clone(),
            model: root.join("model.onnx"),
            output: root.clone(),
            format: Some(Format::Csv),
            id_column: "id".into(),
            shard_bytes: 64 << 20,
            max_bad_rows: 0,
            max_line_bytes: hourglass_core::task::DEFAULT_MAX_LINE_BYTES,
            deadline_unix_ms: None,
            csv: Default::default(),
            keep_columns: Vec::new(),
            keep_all: false,
            output_format: Default::default(),
        },
        model_sha256: String::new(),
        submitted_at_ms: now_ms(),
        rows_estimate: shards as u64 * 100_000,
        files: vec![],
        skipped_files: vec![],
        model_registry: None,
        shards: (0..shards)
            .map(|i| ShardPlan { shard: ShardId::from_index(i), input: input.clone(), rows_estimate: 100_000 })
            .collect(),
    }
}

fn done_record(job: &AnyJob, root: &BlobUrl, shard: &ShardId) -> DoneRecord {
    let now = now_ms();
    DoneRecord {
        v: LEDGER_VERSION,
        job: job.job().clone(),
        shard: shard.clone(),
        rows: 100_000,
        bad_rows: 0,
        seconds: 1.0,
        started_at_ms: now.saturating_sub(1000),
        finished_at_ms: now,
        worker: "bench".into(),
        attempt: 1,
        output: root.join(&format!("part-{shard}.parquet")),
        sha256: String::new(),
        trial: None,
        device: None,
        usage: Some(hourglass_core::cost::Usage {
            pod_seconds: 1.0,
            capacity_type: Some("spot".into()),
            instance_type: Some("m7i.2xlarge".into()),
        }),
    }
}
