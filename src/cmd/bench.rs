//! `hourglass bench`: where the worker stands against the ONNX Runtime
//! ceiling, measured in one run on the same data and thread budget:
//! - raw: ONNX Runtime alone on pre-decoded in-memory batches (the ceiling);
//! - decode: reading and decoding the shards, no scoring;
//! - pipeline: the full worker path, files to written outputs, through the
//!   local queue and the ledger.
//!
//! One warm-up round first (excluded), then `--reps` rounds, each running
//! the three stages in turn so machine noise hits them alike; medians are
//! reported. The stages and the report are `hourglass_bench::pipeline`; this
//! command makes the data, plans the job and runs the rounds.

use super::demo::{job_spec, submit_job};
use super::{FormatArg, load_model};
use anyhow::{Context, Result, bail};
use clap::Args;
use hourglass_bench::pipeline::{self as measure, PipelineRound, Report, Rounds, Setup};
use hourglass_coordinator::{synth, verify};
use hourglass_core::ledger::{JobSpec, Ledger};
use hourglass_core::task::{Format, ShardTask};
use hourglass_core::units::parse_bytes;
use hourglass_core::{BlobUrl, queue, store};
use hourglass_runtime::{ModelRuntime, RuntimeOptions};
use hourglass_worker::config;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: Option<BenchWhat>,
    /// The model(s) to measure; repeatable. Each model × format is one run,
    /// reported in turn and then side by side.
    #[arg(long, default_value = "models/ctr_gbdt.onnx")]
    model: Vec<String>,
    /// Both reference models: models/ctr_gbdt.onnx and models/ctr_mlp.onnx.
    #[arg(long, conflicts_with = "model")]
    all_models: bool,
    #[arg(long, default_value_t = 4_000_000)]
    rows: u64,
    /// Input format(s); repeatable.
    #[arg(long, default_value = "parquet")]
    format: Vec<FormatArg>,
    /// The CPU budget: ONNX Runtime threads (and decode) across all shards.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Shards in flight at once; the ORT threads are split between them.
    /// Default: one shard per thread.
    #[arg(long)]
    concurrency: Option<usize>,
    /// Rows per batch; default: by device (8192 on the CPU, 65536 on a GPU).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Shards the pipeline's worker leases ahead of its CPU slots.
    #[arg(long, default_value_t = config::DEFAULT_PREFETCH_SHARDS)]
    prefetch_shards: usize,
    /// Measured rounds (after one warm-up round); medians are reported.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    #[arg(long, default_value_t = 4)]
    files: usize,
    #[arg(long, default_value = "32MiB", value_parser = parse_bytes)]
    shard_size: u64,
    /// Rows held in memory for the raw stage (cycled up to --rows).
    #[arg(long, default_value_t = 262_144)]
    raw_rows: usize,
    /// Working directory: generated inputs are kept and reused.
    #[arg(long, default_value = ".hourglass/bench")]
    dir: String,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    device: super::DeviceArgs,
}

#[derive(clap::Subcommand)]
enum BenchWhat {
    /// `hourglass serve` under load over loopback (HTTP and gRPC):
    /// concurrency × request size, dynamic batching on and off, beside raw
    /// ONNX Runtime on the same threads.
    Serve(super::bench_serve::BenchServeArgs),
    /// A training sweep's wall time against its trainers' time divided by
    /// the workers: what leasing, staging, validation and registration add.
    Train(super::bench_train::BenchTrainArgs),
    /// The ledger's own store requests per shard and `status` latency as
    /// jobs grow (1k, 10k, 100k shards), on a directory or S3, with a
    /// latency added to every request.
    Ledger(super::bench_ledger::BenchLedgerArgs),
}

/// Features per row of the reference CTR models.
const WIDTH: usize = 39;

pub async fn run(a: BenchArgs) -> Result<()> {
    match a.what {
        Some(BenchWhat::Serve(s)) => return super::bench_serve::run(s).await,
        Some(BenchWhat::Train(t)) => return super::bench_train::run(t).await,
        Some(BenchWhat::Ledger(l)) => return super::bench_ledger::run(l).await,
        None => {}
    }
    let models: Vec<String> =
        if a.all_models { REFERENCE_MODELS.iter().map(|m| m.to_string()).collect() } else { a.model.clone() };
    let mut reports = Vec::new();
    for model in &models {
        for &format in &a.format {
            reports.push(run_one(&a, model, format.into()).await?);
            if !a.json {
                print!("{}", reports.last().expect("just pushed").render());
            }
        }
    }
    if a.json {
        match reports.as_slice() {
            [one] => println!("{}", serde_json::to_string_pretty(one)?),
            all => println!("{}", serde_json::to_string_pretty(all)?),
        }
    } else if reports.len() > 1 {
        println!(
            "\n| model | format | raw rows/s | pipeline rows/s | pipeline / raw (each round) | µs/row/thread: ORT / decode / rest | peak RSS |"
        );
        println!("|---|---|---|---|---|---|---|");
        for r in &reports {
            let rounds: Vec<String> = r.pipeline_over_raw_rounds.iter().map(|x| format!("{x:.3}")).collect();
            println!(
                "| {} | {} | {:.0} | {:.0} | {:.3} ({}) | {:.2} / {:.2} / {:.2} | {:.0} MiB |",
                r.setup.model.rsplit('/').next().unwrap_or(&r.setup.model).trim_end_matches(".onnx"),
                r.setup.format,
                r.raw.rows_per_sec,
                r.pipeline.rows_per_sec,
                r.pipeline_over_raw,
                rounds.join(", "),
                r.us_per_row_ort,
                r.us_per_row_decode,
                r.us_per_row_rest,
                r.pipeline_peak_rss_mib
            );
        }
    }
    Ok(())
}

/// The reference models `--all-models` measures.
const REFERENCE_MODELS: [&str; 2] = ["models/ctr_gbdt.onnx", "models/ctr_mlp.onnx"];

/// One model on one format: data made (or reused), the plan, the rounds.
async fn run_one(a: &BenchArgs, model_path: &str, format: Format) -> Result<Report> {
    let device = a.device.select().await?;
    let batch_size = a.batch_size.unwrap_or(device.device.default_batch_size());
    if a.threads == 0 || a.reps == 0 || batch_size == 0 {
        bail!("--threads, --reps and --batch-size must be at least 1");
    }
    let concurrency = a.concurrency.unwrap_or(a.threads).clamp(1, a.threads);
    let ort_threads = (a.threads / concurrency).max(1);
    let dir = std::path::absolute(&a.dir).context("resolving --dir")?;
    let input = BlobUrl::parse(&format!("{}/input-{format}-{}-{}/", dir.display(), a.rows, a.files))?;
    let marker = dir.join(format!("input-{format}-{}-{}.ok", a.rows, a.files));
    if !marker.exists() {
        eprintln!("generating {} rows of {format} in {} files (kept for later runs)…", a.rows, a.files);
        let path = input.local_path().context("local input")?;
        if path.exists() {
            std::fs::remove_dir_all(&path)?;
        }
        let spec = synth::SynthSpec { rows: a.rows, files: a.files, format, seed: 42, label: None };
        synth::generate(store::open(&input)?.as_ref(), &input, &spec).await?;
        std::fs::write(&marker, b"")?;
    }
    let model_url = BlobUrl::parse(model_path)?;
    let model = Arc::new(load_model(&model_url, ort_threads).await?);

    // The plan, once: the shard tasks every stage works through.
    let scratch = dir.join("run");
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch)?;
    }
    std::fs::create_dir_all(&scratch)?;
    let plan_queue = format!("local://{}/plan.db", scratch.display());
    let spec = |output: &BlobUrl| job_spec(&input, &model_url, output, format, a.shard_size);
    let plan_output = BlobUrl::parse(&format!("{}/plan-out/", scratch.display()))?;
    let tasks = plan(&plan_queue, spec(&plan_output), &model).await?;
    eprintln!(
        "{} rows, {} shards; budget {} threads: {concurrency} shards at once × {ort_threads} ORT threads; batch {}",
        a.rows,
        tasks.len(),
        a.threads,
        batch_size
    );

    let features = Arc::new(synth::features(a.raw_rows.max(batch_size), 7));
    let mut rounds = Rounds::default();
    for round in 0..=a.reps {
        let warm = round == 0;
        let label = if warm { "warm-up".to_string() } else { format!("round {round}/{}", a.reps) };

        let path = model_url.local_path().context("--model must be a local file for the raw stage")?;
        let (features, total, threads, batch) = (features.clone(), a.rows, a.threads, batch_size);
        let device = device.clone();
        let (s, i) = tokio::task::spawn_blocking(move || -> Result<(f64, f64)> {
            let by_sessions = RuntimeOptions::new(1, threads, &device);
            let sessions = measure::raw_rows_per_sec(&path, &features, WIDTH, total, batch, by_sessions)?;
            let by_intra = RuntimeOptions::new(threads, 1, &device);
            let intra = measure::raw_rows_per_sec(&path, &features, WIDTH, total, batch, by_intra)?;
            Ok((sessions, intra))
        })
        .await??;

        let d = measure::decode_rows_per_sec(&tasks, &model, batch_size, concurrency).await?;

        let output = BlobUrl::parse(&format!("{}/out-{round}/", scratch.display()))?;
        let queue_url = format!("local://{}/q-{round}.db", scratch.display());
        let worker = WorkerArgs {
            concurrency,
            prefetch_shards: a.prefetch_shards,
            threads: ort_threads,
            batch_size,
            // 100× slower than anything measured, plus start-up.
            time_limit: Duration::from_secs(60 + a.rows / 10_000),
            device: a.device.to_args(),
        };
        let pr = pipeline(&queue_url, spec(&output), &model, &worker).await?;
        let p = pr.rows_per_sec;
        if round == 1 {
            let check = verify::verify(&output).await?;
            if !check.ok() {
                bail!("pipeline outputs do not match the inputs one to one: {check:?}");
            }
        }
        if let Some(path) = output.local_path() {
            let _ = std::fs::remove_dir_all(path);
        }
        eprintln!(
            "{label}: raw {s:.0} / {i:.0} rows/s (sessions / intra), decode {d:.0}, pipeline {p:.0}{}",
            if warm { " (excluded)" } else { "" }
        );
        if !warm {
            rounds.raw_sessions.push(s);
            rounds.raw_intra.push(i);
            rounds.decode.push(d);
            rounds.pipeline.push(pr);
        }
    }
    let setup = Setup {
        model: model_path.to_string(),
        format: format.to_string(),
        rows: a.rows,
        shards: tasks.len(),
        threads: a.threads,
        concurrency,
        ort_threads_per_shard: ort_threads,
        prefetch_shards: a.prefetch_shards,
        batch_size,
        reps: a.reps,
        device: device.device.to_string(),
        requested_device: device.requested().to_string(),
    };
    let report = Report::new(setup, rounds);
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(report)
}

/// Plans the job once and returns its shard tasks (from the queue, as a
/// worker would receive them).
async fn plan(queue_url: &str, spec: JobSpec, model: &ModelRuntime) -> Result<Vec<ShardTask>> {
    let q = queue::open(queue_url)?;
    let report = submit_job(q.as_ref(), spec, model).await?;
    let mut tasks = Vec::with_capacity(report.shards);
    loop {
        let batch = q.receive(10, Duration::ZERO, Duration::from_secs(3600)).await?;
        if batch.is_empty() {
            break;
        }
        for m in batch {
            tasks.push(ShardTask::decode(&m.body)?);
        }
    }
    if tasks.len() != report.shards {
        bail!("planned {} shards, read back {}", report.shards, tasks.len());
    }
    Ok(tasks)
}

/// How the pipeline's worker process is run.
struct WorkerArgs {
    concurrency: usize,
    prefetch_shards: usize,
    threads: usize,
    batch_size: usize,
    /// A worker still running after this is stuck: it is killed and the
    /// bench fails instead of waiting forever.
    time_limit: Duration,
    /// Its --device flags: the same as the bench's.
    device: Vec<String>,
}

/// The worker as deployed: `hourglass worker` in its own process, on a
/// fresh local queue and output. Submit is not timed; the rate is from the
/// first shard's start (the model is loaded by then: loading is warm-up, as
/// for raw) to the last shard's done record. Its peak RSS and CPU time are
/// sampled from `/proc` while it runs, so this process's own memory (raw
/// and decode stages) never counts against it.
async fn pipeline(queue_url: &str, spec: JobSpec, model: &ModelRuntime, w: &WorkerArgs) -> Result<PipelineRound> {
    let q = queue::open(queue_url)?;
    let output = spec.output.clone();
    let model_url = spec.model.clone();
    submit_job(q.as_ref(), spec, model).await?;
    drop(q);
    let exe = std::env::current_exe().context("locating the hourglass binary")?;
    let child = std::process::Command::new(exe)
        .args(["worker", "--queue", queue_url, "--model", &model_url.to_string(), "--worker-id", "bench"])
        .args(["--concurrency", &w.concurrency.to_string(), "--threads", &w.threads.to_string()])
        .args(["--prefetch-shards", &w.prefetch_shards.to_string(), "--batch-size", &w.batch_size.to_string()])
        .args(["--poll-wait", "100ms", "--exit-when-idle", "200ms"])
        .args(&w.device)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .spawn()
        .context("starting `hourglass worker`")?;
    let time_limit = w.time_limit;
    let samples = tokio::task::spawn_blocking(move || measure::watch_process(child, time_limit))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
    let ledger = Ledger::new(store::open(&output)?, &output);
    let done = ledger.done_records().await?;
    let failed = ledger.failed_records().await?;
    if !failed.is_empty() {
        bail!("{} shards failed in the pipeline round: {}", failed.len(), failed[0].message);
    }
    PipelineRound::from_records(&done, &samples)
        .context("no shard finished, or the worker exited before it could be sampled")
}
