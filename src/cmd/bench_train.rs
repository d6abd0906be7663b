//! `hourglass bench train`: what a sweep costs beyond its trainers. For
//! each sweep size it submits a training job of N trials (one per seed) to
//! a fresh local queue, runs W worker processes, and compares the sweep's
//! wall time (submit to `_SUCCESS`, promotion included) with the sum of
//! its trainers' own seconds divided by W: the part leasing, staging,
//! validation, registration and scheduling add.

use super::demo::Workers;
use anyhow::{Context, Result, bail};
use clap::Args;
use hourglass_coordinator::{status, synth, train};
use hourglass_core::task::Format;
use hourglass_core::train::TrainSpec;
use hourglass_core::{BlobUrl, queue};
use serde::Serialize;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct BenchTrainArgs {
    /// Sweep sizes: trials per job (comma-separated).
    #[arg(long, default_value = "4,16", value_delimiter = ',')]
    trials: Vec<usize>,
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Threads each trainer may use (workers × this should be the cores).
    #[arg(long, default_value_t = 1)]
    train_threads: usize,
    /// Labelled training rows (the holdout is a quarter of it).
    #[arg(long, default_value_t = 40_000)]
    rows: u64,
    /// Trees per trial.
    #[arg(long, default_value_t = 50)]
    n_estimators: u64,
    /// The trainer the workers run.
    #[arg(long, default_value = "lightgbm=.venv/bin/python trainers/lightgbm_onnx.py")]
    trainer: String,
    /// Working directory (data is kept and reused).
    #[arg(long, default_value = ".hourglass/bench-train")]
    dir: String,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct SweepRow {
    trials: usize,
    workers: usize,
    wall_secs: f64,
    trainer_secs_sum: f64,
    /// Sum of trainer seconds / workers: a perfect fleet's wall time.
    ideal_secs: f64,
    /// wall / ideal (the target: at most 1.2).
    ratio: f64,
    /// Mean seconds a trial held its worker beyond its trainer (staging,
    /// validation, registration).
    mean_trial_overhead_secs: f64,
}

pub async fn run(a: BenchTrainArgs) -> Result<()> {
    if a.workers == 0 || a.trials.contains(&0) {
        bail!("--workers and --trials must be at least 1");
    }
    let dir = std::path::absolute(&a.dir).context("resolving --dir")?;
    let (train_dir, holdout_dir) = (dir.join(format!("train-{}", a.rows)), dir.join(format!("holdout-{}", a.rows)));
    for (path, rows, seed) in [(&train_dir, a.rows, 1), (&holdout_dir, (a.rows / 4).max(1), 2)] {
        if !path.join("_ok").exists() {
            let url = BlobUrl::parse(&format!("{}/", path.display()))?;
            let store = hourglass_core::store::open(&url)?;
            let spec =
                synth::SynthSpec { rows, files: 2, format: Format::Parquet, seed, label: Some("clicked".into()) };
            synth::generate(store.as_ref(), &url, &spec).await?;
            std::fs::write(path.join("_ok"), b"")?;
        }
    }
    let exe = std::env::current_exe()?;
    let mut rows = Vec::new();
    for &n in &a.trials {
        let run = dir.join(format!("run-{n}"));
        if run.exists() {
            std::fs::remove_dir_all(&run)?;
        }
        std::fs::create_dir_all(&run)?;
        let queue_url = format!("local://{}", run.join("queue.db").display());
        let output = BlobUrl::parse(&format!("{}/out/", run.display()))?;
        let seeds: Vec<serde_json::Value> = (0..n).map(|s| s.into()).collect();
        let spec: TrainSpec = serde_json::from_value(serde_json::json!({
            "name": "bench",
            "registry": format!("file://{}/registry/", run.display()),
            "trainer": a.trainer.split_once('=').map(|(n, _)| n).unwrap_or("lightgbm"),
            "output": output.to_string(),
            "dataset": {
                "train": format!("file://{}/", train_dir.display()),
                "holdout": format!("file://{}/", holdout_dir.display()),
                "label": "clicked", "id_column": "id",
            },
            "params": {"n_estimators": a.n_estimators},
            "grid": {"seed": seeds},
            "promote_if": "auc > champion",
        }))?;
        let queue = queue::open(&queue_url)?;
        let started = Instant::now();
        train::submit_train(spec, queue.as_ref(), false).await?;
        let mut workers = Workers(Vec::new());
        for i in 0..a.workers {
            let log = std::fs::File::create(run.join(format!("worker-{i}.log")))?;
            workers.0.push(
                Command::new(&exe)
                    .args(["worker", "--queue", &queue_url, "--exit-when-idle", "1s", "--trainer", &a.trainer])
                    .args(["--train-threads", &a.train_threads.to_string(), "--worker-id", &format!("bench-{i}")])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .context("starting a worker process")?,
            );
        }
        let done = loop {
            let s = status::status(&output, None).await?;
            match s.state {
                status::JobState::Succeeded => break s,
                status::JobState::Failed => bail!("the sweep failed:\n{}", s.render()),
                status::JobState::Running => {}
            }
            for (i, c) in workers.0.iter_mut().enumerate() {
                if let Some(code) = c.try_wait()?
                    && !code.success()
                {
                    bail!("worker {i} exited with {code}; see {}", run.join(format!("worker-{i}.log")).display());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let wall = started.elapsed().as_secs_f64();
        drop(workers);
        let trainer: f64 = done.trials.iter().filter_map(|t| t.trainer_seconds).sum();
        let held: f64 = done.trials.iter().filter_map(|t| t.seconds).sum();
        let ideal = trainer / a.workers as f64;
        let row = SweepRow {
            trials: n,
            workers: a.workers,
            wall_secs: wall,
            trainer_secs_sum: trainer,
            ideal_secs: ideal,
            ratio: wall / ideal,
            mean_trial_overhead_secs: (held - trainer) / n as f64,
        };
        if !a.json {
            eprintln!(
                "{n} trials on {} workers: wall {wall:.1}s, trainers {trainer:.1}s in all, ideal {ideal:.1}s, ratio {:.2}, {:.2}s per trial beyond its trainer",
                a.workers, row.ratio, row.mean_trial_overhead_secs
            );
        }
        rows.push(row);
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!("| trials | workers | sweep wall | Σ trainer time / workers | ratio | per-trial overhead |");
        println!("|---|---|---|---|---|---|");
        for r in &rows {
            println!(
                "| {} | {} | {:.1} s | {:.1} s | {:.2}× | {:.2} s |",
                r.trials, r.workers, r.wall_secs, r.ideal_secs, r.ratio, r.mean_trial_overhead_secs
            );
        }
    }
    Ok(())
}
