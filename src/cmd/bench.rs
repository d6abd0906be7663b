//! `hourglass bench`: where the worker stands against the ONNX Runtime
//! ceiling, measured in one run on the same data and thread budget:
//! - raw: ONNX Runtime alone on pre-decoded in-memory batches (the ceiling);
//! - decode: reading and decoding the shards, no scoring;
//! - pipeline: the full worker path, files to written outputs, through the
//!   local queue and the ledger.
//!
//! One warm-up round first (excluded), then `--reps` rounds, each running
//! the three stages in turn so machine noise hits them alike; medians are
//! reported.

use anyhow::{Context, Result, bail};
use clap::Args;
use hourglass_coordinator::{synth, verify};
use hourglass_core::ledger::{JobSpec, Ledger};
use hourglass_core::task::{Format, ShardTask};
use hourglass_core::{BlobUrl, queue, store};
use hourglass_worker::runtime::InputData;
use hourglass_worker::shard::{ShardJob, score_shard};
use hourglass_worker::{ModelRuntime, RuntimeOptions, config};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Args)]
pub struct BenchArgs {
    #[arg(long, default_value = "models/ctr_gbdt.onnx")]
    model: String,
    #[arg(long, default_value_t = 4_000_000)]
    rows: u64,
    #[arg(long, default_value = "parquet")]
    format: super::FormatArg,
    /// The CPU budget: ONNX Runtime threads (and decode) across all shards.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Shards in flight at once; the ORT threads are split between them.
    /// Default: one shard per thread.
    #[arg(long)]
    concurrency: Option<usize>,
    #[arg(long, default_value_t = config::DEFAULT_BATCH_SIZE)]
    batch_size: usize,
    /// Shards the pipeline's worker leases ahead of its CPU slots.
    #[arg(long, default_value_t = config::DEFAULT_PREFETCH_SHARDS)]
    prefetch_shards: usize,
    /// Measured rounds (after one warm-up round); medians are reported.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    #[arg(long, default_value_t = 4)]
    files: usize,
    #[arg(long, default_value = "32MiB", value_parser = super::parse_bytes)]
    shard_size: u64,
    /// Rows held in memory for the raw stage (cycled up to --rows).
    #[arg(long, default_value_t = 262_144)]
    raw_rows: usize,
    /// Working directory: generated inputs are kept and reused.
    #[arg(long, default_value = ".hourglass/bench")]
    dir: String,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Stage {
    rows_per_sec: f64,
    /// Every round, for the spread.
    rounds: Vec<f64>,
}

#[derive(Debug, Serialize)]
struct Report {
    model: String,
    format: String,
    rows: u64,
    shards: usize,
    threads: usize,
    concurrency: usize,
    ort_threads_per_shard: usize,
    prefetch_shards: usize,
    batch_size: usize,
    reps: usize,
    /// The better of the two raw layouts below: the ceiling.
    raw: Stage,
    /// `threads` sessions of 1 intra-op thread, in parallel.
    raw_sessions: Stage,
    /// 1 session of `threads` intra-op threads.
    raw_intra: Stage,
    decode: Stage,
    pipeline: Stage,
    /// Ratio of the medians.
    pipeline_over_raw: f64,
    /// Each round's pipeline over the same round's raw: the spread shows
    /// how much of a difference is the machine's noise.
    pipeline_over_raw_rounds: Vec<f64>,
    decode_over_raw: f64,
    /// Where a row's CPU time goes, in microseconds per row per thread of
    /// the budget: ONNX Runtime (from raw), reading + decoding (from
    /// decode), and the rest of the pipeline (encoding and writing outputs,
    /// queue, ledger, scheduling gaps) as the remainder.
    us_per_row_ort: f64,
    us_per_row_decode: f64,
    us_per_row_rest: f64,
    /// Peak resident memory of the process over the pipeline rounds.
    pipeline_peak_rss_mib: f64,
    /// CPU time of the pipeline rounds (median) as a share of wall time ×
    /// `threads`: the CPU pool threads (decode, ORT, encode) and every other
    /// thread (the async runtime: IO, queue, ledger). Pool well under 1.0
    /// means idle gaps; other above a few percent means IO work competing
    /// with the pool for the budget.
    pipeline_cpu_pool: f64,
    pipeline_cpu_other: f64,
    /// Nodes with this CPU budget needed to score 1e9 rows in one hour at
    /// the pipeline's rate.
    nodes_for_1e9_rows_in_1h: u64,
}

fn median(v: &[f64]) -> f64 {
    let mut sorted = v.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn stage(rounds: Vec<f64>) -> Stage {
    Stage { rows_per_sec: median(&rounds), rounds }
}

/// One look at a running process through `/proc/PID`.
#[derive(Debug, Clone, Copy, Default)]
struct ProcSample {
    at_ms: u64,
    /// VmHWM: the peak resident set so far.
    peak_rss_kib: u64,
    /// On-CPU nanoseconds of its live CPU pool threads (`hourglass-cpu-*`)
    /// and of its other threads (the async runtime), from `schedstat`.
    pool_ns: u64,
    other_ns: u64,
}

fn sample_process(pid: u32) -> Option<ProcSample> {
    let root = std::path::PathBuf::from(format!("/proc/{pid}"));
    let status = std::fs::read_to_string(root.join("status")).ok()?;
    let hwm = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let mut s = ProcSample {
        at_ms: hourglass_core::ledger::now_ms(),
        peak_rss_kib: hwm.split_whitespace().nth(1)?.parse().ok()?,
        ..Default::default()
    };
    for t in std::fs::read_dir(root.join("task")).ok()?.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let ns = std::fs::read_to_string(t.path().join("schedstat"))
            .ok()
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        if comm.starts_with("hourglass-cpu") {
            s.pool_ns += ns;
        } else {
            s.other_ns += ns;
        }
    }
    Some(s)
}

pub async fn run(a: BenchArgs) -> Result<()> {
    if a.threads == 0 || a.reps == 0 || a.batch_size == 0 {
        bail!("--threads, --reps and --batch-size must be at least 1");
    }
    let concurrency = a.concurrency.unwrap_or(a.threads).clamp(1, a.threads);
    let ort_threads = (a.threads / concurrency).max(1);
    let format: Format = a.format.into();
    let dir = std::path::absolute(&a.dir).context("resolving --dir")?;
    let input = BlobUrl::parse(&format!("{}/input-{format}-{}-{}/", dir.display(), a.rows, a.files))?;
    let marker = dir.join(format!("input-{format}-{}-{}.ok", a.rows, a.files));
    if !marker.exists() {
        eprintln!("generating {} rows of {format} in {} files (kept for later runs)…", a.rows, a.files);
        let path = input.local_path().context("local input")?;
        if path.exists() {
            std::fs::remove_dir_all(&path)?;
        }
        let spec = synth::SynthSpec { rows: a.rows, files: a.files, format, seed: 42 };
        synth::generate(store::open(&input)?.as_ref(), &input, &spec).await?;
        std::fs::write(&marker, b"")?;
    }
    let model_url = BlobUrl::parse(&a.model)?;
    let model = Arc::new(super::load_model(&model_url, ort_threads).await?);

    // The plan, once: the shard tasks every stage works through.
    let scratch = dir.join("run");
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch)?;
    }
    std::fs::create_dir_all(&scratch)?;
    let plan_queue = format!("local://{}/plan.db", scratch.display());
    let spec = |output: &BlobUrl| super::demo::job_spec(&input, &model_url, output, format, a.shard_size);
    let plan_output = BlobUrl::parse(&format!("{}/plan-out/", scratch.display()))?;
    let tasks = plan(&plan_queue, spec(&plan_output), &model).await?;
    eprintln!(
        "{} rows, {} shards; budget {} threads: {concurrency} shards at once × {ort_threads} ORT threads; batch {}",
        a.rows,
        tasks.len(),
        a.threads,
        a.batch_size
    );

    let (mut raw_s, mut raw_i, mut dec, mut pipe) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut peak_kib = 0u64;
    let (mut cpu_pool, mut cpu_other, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..=a.reps {
        let warm = round == 0;
        let label = if warm { "warm-up".to_string() } else { format!("round {round}/{}", a.reps) };

        let (model_path, raw_rows, total, threads) = (model_url.clone(), a.raw_rows, a.rows, a.threads);
        let batch = a.batch_size;
        let (s, i) = tokio::task::spawn_blocking(move || -> Result<(f64, f64)> {
            let sessions = raw(&model_path, raw_rows, total, batch, threads, 1)?;
            let intra = raw(&model_path, raw_rows, total, batch, 1, threads)?;
            Ok((sessions, intra))
        })
        .await??;

        let d = decode(&tasks, &model, a.batch_size, concurrency).await?;

        let output = BlobUrl::parse(&format!("{}/out-{round}/", scratch.display()))?;
        let queue_url = format!("local://{}/q-{round}.db", scratch.display());
        let worker = WorkerArgs {
            concurrency,
            prefetch_shards: a.prefetch_shards,
            threads: ort_threads,
            batch_size: a.batch_size,
            // 100× slower than anything measured, plus start-up.
            time_limit: Duration::from_secs(60 + a.rows / 10_000),
        };
        let pr = pipeline(&queue_url, spec(&output), &model, &worker).await?;
        let p = pr.rows_per_sec;
        peak_kib = peak_kib.max(pr.peak_rss_kib);
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
            cpu_pool.push(pr.cpu_pool_s / (pr.wall_s * a.threads as f64));
            cpu_other.push(pr.cpu_other_s / (pr.wall_s * a.threads as f64));
            ratios.push(p / s.max(i));
            raw_s.push(s);
            raw_i.push(i);
            dec.push(d);
            pipe.push(p);
        }
    }
    let (raw_sessions, raw_intra, decode, pipeline) = (stage(raw_s), stage(raw_i), stage(dec), stage(pipe));
    let raw = if raw_sessions.rows_per_sec >= raw_intra.rows_per_sec {
        Stage { rows_per_sec: raw_sessions.rows_per_sec, rounds: raw_sessions.rounds.clone() }
    } else {
        Stage { rows_per_sec: raw_intra.rows_per_sec, rounds: raw_intra.rounds.clone() }
    };
    let per_row = |rows_per_sec: f64| 1e6 * a.threads as f64 / rows_per_sec;
    let report = Report {
        model: a.model.clone(),
        format: format.to_string(),
        rows: a.rows,
        shards: tasks.len(),
        threads: a.threads,
        concurrency,
        ort_threads_per_shard: ort_threads,
        prefetch_shards: a.prefetch_shards,
        batch_size: a.batch_size,
        reps: a.reps,
        pipeline_over_raw: pipeline.rows_per_sec / raw.rows_per_sec,
        pipeline_over_raw_rounds: ratios,
        decode_over_raw: decode.rows_per_sec / raw.rows_per_sec,
        nodes_for_1e9_rows_in_1h: (1e9 / (pipeline.rows_per_sec * 3600.0)).ceil() as u64,
        pipeline_peak_rss_mib: peak_kib as f64 / 1024.0,
        pipeline_cpu_pool: median(&cpu_pool),
        pipeline_cpu_other: median(&cpu_other),
        us_per_row_ort: per_row(raw.rows_per_sec),
        us_per_row_decode: per_row(decode.rows_per_sec),
        us_per_row_rest: per_row(pipeline.rows_per_sec) - per_row(raw.rows_per_sec) - per_row(decode.rows_per_sec),
        raw,
        raw_sessions,
        raw_intra,
        decode,
        pipeline,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let r = &report;
        println!(
            "hourglass bench: {} rows of {}, {} shards, {} threads ({} shards × {} ORT threads), batch {}, median of {}",
            r.rows, r.format, r.shards, r.threads, r.concurrency, r.ort_threads_per_shard, r.batch_size, r.reps
        );
        println!(
            "  raw       {:>10.0} rows/s  (ONNX Runtime alone; {} sessions × 1 thread {:.0}, 1 session × {} threads {:.0})",
            r.raw.rows_per_sec, r.threads, r.raw_sessions.rows_per_sec, r.threads, r.raw_intra.rows_per_sec
        );
        println!(
            "  decode    {:>10.0} rows/s  (read + decode only; {:.2} × raw)",
            r.decode.rows_per_sec, r.decode_over_raw
        );
        println!("  pipeline  {:>10.0} rows/s  (files → outputs via queue and ledger)", r.pipeline.rows_per_sec);
        let rounds: Vec<String> = r.pipeline_over_raw_rounds.iter().map(|x| format!("{x:.3}")).collect();
        println!("  pipeline / raw   {:.3}  (each round: {})", r.pipeline_over_raw, rounds.join(", "));
        println!(
            "  µs/row/thread    ORT {:.2}, decode {:.2}, rest {:.2} (encode, write, queue, ledger)",
            r.us_per_row_ort, r.us_per_row_decode, r.us_per_row_rest
        );
        println!(
            "  pipeline CPU     pool threads {:.0}%, other threads {:.0}% of {} cores",
            100.0 * r.pipeline_cpu_pool,
            100.0 * r.pipeline_cpu_other,
            r.threads
        );
        println!("  peak RSS         {:.0} MiB (pipeline rounds)", r.pipeline_peak_rss_mib);
        println!(
            "  1e9 rows in 1 h  {} node(s) of {} threads at the pipeline's rate",
            r.nodes_for_1e9_rows_in_1h, r.threads
        );
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// Plans the job once and returns its shard tasks (from the queue, as a
/// worker would receive them).
async fn plan(queue_url: &str, spec: JobSpec, model: &ModelRuntime) -> Result<Vec<ShardTask>> {
    let q = queue::open(queue_url)?;
    let report = super::demo::submit_job(q.as_ref(), spec, model).await?;
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

/// ONNX Runtime alone: `rows` rows through `sessions` sessions of `intra`
/// threads, cycling over `held` pre-decoded rows.
fn raw(model: &BlobUrl, held: usize, rows: u64, batch: usize, sessions: usize, intra: usize) -> Result<f64> {
    const WIDTH: usize = 39;
    let path = model.local_path().context("--model must be a local file for the raw stage")?;
    let runtime = ModelRuntime::load_file(&path, RuntimeOptions { intra_threads: intra, sessions })?;
    let held = held.max(batch);
    let data = synth::features(held, 7);
    let batches: Vec<InputData> = data.chunks(batch * WIDTH).map(|c| InputData::F32(c.to_vec())).collect();
    drop(data);
    for b in batches.iter().take(sessions) {
        runtime.run(std::slice::from_ref(b), b.len() / WIDTH)?;
    }
    let calls = rows.div_ceil(batch as u64) as usize;
    Ok(runtime.raw_rows_per_sec(&batches, WIDTH, calls, sessions)?)
}

/// Read and decode every shard, `concurrency` at a time, no scoring.
async fn decode(tasks: &[ShardTask], model: &Arc<ModelRuntime>, batch: usize, concurrency: usize) -> Result<f64> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tasks = Arc::new(tasks.to_vec());
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (next, tasks, model) = (next.clone(), tasks.clone(), model.clone());
        let handle = tokio::runtime::Handle::current();
        set.spawn_blocking(move || -> Result<u64> {
            let mut rows = 0;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(task) = tasks.get(i) else { return Ok(rows) };
                let job = ShardJob {
                    task: task.clone(),
                    model: model.clone(),
                    batch_size: batch,
                    cancel: CancellationToken::new(),
                    fault_batch_delay: Duration::ZERO,
                    decode_only: true,
                    inference_seconds: None,
                };
                rows += score_shard(&handle, &job, None)?.rows;
            }
        });
    }
    let mut rows = 0;
    while let Some(r) = set.join_next().await {
        rows += r??;
    }
    Ok(rows as f64 / t.elapsed().as_secs_f64())
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
}

/// One pipeline round, as seen from outside the worker process.
struct PipelineRound {
    rows_per_sec: f64,
    wall_s: f64,
    peak_rss_kib: u64,
    cpu_pool_s: f64,
    cpu_other_s: f64,
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
    super::demo::submit_job(q.as_ref(), spec, model).await?;
    drop(q);
    let exe = std::env::current_exe().context("locating the hourglass binary")?;
    let mut child = std::process::Command::new(exe)
        .args(["worker", "--queue", queue_url, "--model", &model_url.to_string(), "--worker-id", "bench"])
        .args(["--concurrency", &w.concurrency.to_string(), "--threads", &w.threads.to_string()])
        .args(["--prefetch-shards", &w.prefetch_shards.to_string(), "--batch-size", &w.batch_size.to_string()])
        .args(["--poll-wait", "100ms", "--exit-when-idle", "200ms"])
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .spawn()
        .context("starting `hourglass worker`")?;
    let (pid, time_limit, spawned) = (child.id(), w.time_limit, Instant::now());
    let samples = tokio::task::spawn_blocking(move || -> Result<Vec<ProcSample>> {
        let mut samples = Vec::new();
        loop {
            if spawned.elapsed() > time_limit {
                let _ = child.kill();
                let _ = child.wait();
                bail!("`hourglass worker` still running after {time_limit:?}; killed it");
            }
            // Sampled before the exit check, so the last sample is taken
            // at most one period before exit, in the idle wait.
            if let Some(s) = sample_process(pid) {
                samples.push(s);
            }
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    bail!("`hourglass worker` exited with {status}");
                }
                return Ok(samples);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await??;
    let ledger = Ledger::new(store::open(&output)?, &output);
    let done = ledger.done_records().await?;
    let failed = ledger.failed_records().await?;
    if !failed.is_empty() {
        bail!("{} shards failed in the pipeline round: {}", failed.len(), failed[0].message);
    }
    let started_ms = done.iter().map(|d| d.started_at_ms).min().context("no shard finished")?;
    let end_ms = done.iter().map(|d| d.finished_at_ms).max().context("no shard finished")?;
    let rows: u64 = done.iter().map(|d| d.rows).sum();
    let wall_s = (end_ms.saturating_sub(started_ms)).max(1) as f64 / 1000.0;
    // CPU within the window: the last sample before it to the first after.
    let last = *samples.last().context("the worker exited before it could be sampled")?;
    let before = samples.iter().rev().find(|s| s.at_ms <= started_ms).copied().unwrap_or_default();
    let after = samples.iter().find(|s| s.at_ms >= end_ms).copied().unwrap_or(last);
    Ok(PipelineRound {
        rows_per_sec: rows as f64 / wall_s,
        wall_s: after.at_ms.saturating_sub(before.at_ms).max(1) as f64 / 1000.0,
        peak_rss_kib: last.peak_rss_kib,
        cpu_pool_s: after.pool_ns.saturating_sub(before.pool_ns) as f64 / 1e9,
        cpu_other_s: after.other_ns.saturating_sub(before.other_ns) as f64 / 1e9,
    })
}
