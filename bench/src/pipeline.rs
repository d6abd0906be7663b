//! Measurement for `hourglass bench` and `hourglass demo`: where the worker
//! stands against the ONNX Runtime ceiling, on the same data and thread
//! budget.
//! - raw: ONNX Runtime alone on pre-decoded in-memory batches (the ceiling);
//! - decode: reading and decoding the shards, no scoring;
//! - pipeline: the full worker path, measured from outside the worker
//!   process (its done records for the rate, `/proc` for its memory and CPU).
//!
//! The CLI plans the job and runs the rounds; the stages and the report
//! are here, next to the code they measure.

use crate::ceiling::{self, Until};
use crate::proc;
use hourglass_core::ledger::{DoneRecord, now_ms};
use hourglass_core::task::ShardTask;
use hourglass_runtime::{InputData, ModelRuntime, RuntimeOptions};
use hourglass_worker::Result;
use hourglass_worker::shard::{ShardJob, score_shard};
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The median of `v` (0 when empty).
pub fn median(v: &[f64]) -> f64 {
    let mut sorted = v.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// One stage's rate over the measured rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    /// The median round.
    pub rows_per_sec: f64,
    /// Every round, for the spread.
    pub rounds: Vec<f64>,
}

impl Stage {
    pub fn new(rounds: Vec<f64>) -> Self {
        Stage { rows_per_sec: median(&rounds), rounds }
    }
}

/// ONNX Runtime alone: `rows` rows through `options.sessions` sessions of
/// `options.intra_threads` threads each on `options.device`, cycling over `features` (row-major, `width` per row) in
/// batches of `batch`. One warm-up call per session first (the first runs
/// allocate arenas).
pub fn raw_rows_per_sec(
    model: &Path,
    features: &[f32],
    width: usize,
    rows: u64,
    batch: usize,
    options: RuntimeOptions,
) -> Result<f64> {
    let sessions = options.sessions.max(1);
    let runtime = ModelRuntime::load_file(model, options)?;
    let batches: Vec<InputData> = features.chunks(batch * width).map(|c| InputData::F32(c.to_vec())).collect();
    if batches.is_empty() {
        return Err(hourglass_runtime::Error::Model {
            model: model.display().to_string(),
            message: "no rows to measure".into(),
        }
        .into());
    }
    for b in batches.iter().take(sessions) {
        runtime.run(std::slice::from_ref(b), b.len() / width)?;
    }
    let calls = rows.div_ceil(batch as u64) as usize;
    let (scored, took) = ceiling::measure(sessions, Until::Calls(calls), |c| -> Result<u64> {
        let b = &batches[c % batches.len()];
        runtime.run(std::slice::from_ref(b), b.len() / width)?;
        Ok((b.len() / width) as u64)
    })?;
    Ok(scored as f64 / took.as_secs_f64())
}

/// Reads and decodes every shard, `concurrency` at a time, scoring nothing.
pub async fn decode_rows_per_sec(
    tasks: &[ShardTask],
    model: &Arc<ModelRuntime>,
    batch: usize,
    concurrency: usize,
) -> Result<f64> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tasks = Arc::new(tasks.to_vec());
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
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
                    pool: None,
                };
                rows += score_shard(&handle, &job, None)?.rows;
            }
        });
    }
    let mut rows = 0;
    while let Some(r) = set.join_next().await {
        // A panic in a decode thread is a bug: let it surface as one.
        rows += r.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
    }
    Ok(rows as f64 / t.elapsed().as_secs_f64())
}

/// One look at a running process through `/proc/PID`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    pub at_ms: u64,
    /// VmHWM: the peak resident set so far.
    pub peak_rss_kib: u64,
    /// On-CPU nanoseconds of its live CPU pool threads (`hourglass-cpu-*`)
    /// and of its other threads (the async runtime), from `schedstat`.
    pub pool_ns: u64,
    pub other_ns: u64,
}

/// Samples process `pid`; `None` once it is gone (or off Linux).
pub fn sample_process(pid: u32) -> Option<ProcSample> {
    let root = std::path::PathBuf::from(format!("/proc/{pid}"));
    let mut s = ProcSample { at_ms: now_ms(), peak_rss_kib: proc::peak_rss_kib(&root)?, ..Default::default() };
    for (name, ns) in proc::thread_cpu_ns(&root) {
        if proc::is_pool_thread(&name) {
            s.pool_ns += ns;
        } else {
            s.other_ns += ns;
        }
    }
    Some(s)
}

/// How a measured worker process ended.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("`hourglass worker` still running after {0:?}; killed it")]
    TimedOut(Duration),
    #[error("`hourglass worker` exited with {0}")]
    Failed(std::process::ExitStatus),
    #[error("waiting for `hourglass worker`: {0}")]
    Io(#[from] std::io::Error),
}

/// Samples `child` every 20 ms until it exits (successfully, or it is an
/// error), killing it after `time_limit`. Blocking: run it off the async
/// runtime.
#[allow(clippy::disallowed_methods)] // A blocking helper: it sleeps its own thread.
pub fn watch_process(
    mut child: std::process::Child,
    time_limit: Duration,
) -> std::result::Result<Vec<ProcSample>, WatchError> {
    let (pid, spawned) = (child.id(), Instant::now());
    let mut samples = Vec::new();
    loop {
        if spawned.elapsed() > time_limit {
            let _ = child.kill();
            let _ = child.wait();
            return Err(WatchError::TimedOut(time_limit));
        }
        // Sampled before the exit check, so the last sample is taken at
        // most one period before exit, in the idle wait.
        if let Some(s) = sample_process(pid) {
            samples.push(s);
        }
        if let Some(status) = child.try_wait()? {
            return if status.success() { Ok(samples) } else { Err(WatchError::Failed(status)) };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One pipeline round, as seen from outside the worker process.
#[derive(Debug, Clone, Copy)]
pub struct PipelineRound {
    pub rows_per_sec: f64,
    pub wall_s: f64,
    pub peak_rss_kib: u64,
    pub cpu_pool_s: f64,
    pub cpu_other_s: f64,
}

impl PipelineRound {
    /// The rate is from the first shard's start (the model is loaded by
    /// then: loading is warm-up, as for raw) to the last shard's done
    /// record; CPU is counted from the last sample before that window to
    /// the first after it. `None` when no shard finished or nothing was
    /// sampled.
    pub fn from_records(done: &[DoneRecord], samples: &[ProcSample]) -> Option<Self> {
        let started_ms = done.iter().map(|d| d.started_at_ms).min()?;
        let end_ms = done.iter().map(|d| d.finished_at_ms).max()?;
        let rows: u64 = done.iter().map(|d| d.rows).sum();
        let wall_s = (end_ms.saturating_sub(started_ms)).max(1) as f64 / 1000.0;
        let last = *samples.last()?;
        let before = samples.iter().rev().find(|s| s.at_ms <= started_ms).copied().unwrap_or_default();
        let after = samples.iter().find(|s| s.at_ms >= end_ms).copied().unwrap_or(last);
        Some(PipelineRound {
            rows_per_sec: rows as f64 / wall_s,
            wall_s: after.at_ms.saturating_sub(before.at_ms).max(1) as f64 / 1000.0,
            peak_rss_kib: last.peak_rss_kib,
            cpu_pool_s: after.pool_ns.saturating_sub(before.pool_ns) as f64 / 1e9,
            cpu_other_s: after.other_ns.saturating_sub(before.other_ns) as f64 / 1e9,
        })
    }
}

/// What was measured, and how.
#[derive(Debug, Clone, Serialize)]
pub struct Setup {
    pub model: String,
    pub format: String,
    pub rows: u64,
    pub shards: usize,
    pub threads: usize,
    pub concurrency: usize,
    pub ort_threads_per_shard: usize,
    pub prefetch_shards: usize,
    pub batch_size: usize,
    pub reps: usize,
    /// The device every stage ran on (`cpu` after a fallback).
    pub device: String,
    /// The device asked for (`--device`).
    pub requested_device: String,
}

/// The measured rounds of every stage, warm-up excluded.
#[derive(Debug, Default)]
pub struct Rounds {
    pub raw_sessions: Vec<f64>,
    pub raw_intra: Vec<f64>,
    pub decode: Vec<f64>,
    pub pipeline: Vec<PipelineRound>,
}

/// `hourglass bench --json`.
#[derive(Debug, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub setup: Setup,
    /// The better of the two raw layouts below: the ceiling.
    pub raw: Stage,
    /// `threads` sessions of 1 intra-op thread, in parallel.
    pub raw_sessions: Stage,
    /// 1 session of `threads` intra-op threads.
    pub raw_intra: Stage,
    pub decode: Stage,
    pub pipeline: Stage,
    /// Ratio of the medians.
    pub pipeline_over_raw: f64,
    /// Each round's pipeline over the same round's raw: the spread shows
    /// how much of a difference is the machine's noise.
    pub pipeline_over_raw_rounds: Vec<f64>,
    pub decode_over_raw: f64,
    /// Where a row's CPU time goes, in microseconds per row per thread of
    /// the budget: ONNX Runtime (from raw), reading + decoding (from
    /// decode), and the rest of the pipeline (encoding and writing outputs,
    /// queue, ledger, scheduling gaps) as the remainder.
    pub us_per_row_ort: f64,
    pub us_per_row_decode: f64,
    pub us_per_row_rest: f64,
    /// Peak resident memory of the worker process over the pipeline rounds.
    pub pipeline_peak_rss_mib: f64,
    /// CPU time of the pipeline rounds (median) as a share of wall time ×
    /// `threads`: the CPU pool threads (decode, ORT, encode) and every other
    /// thread (the async runtime: IO, queue, ledger). Pool well under 1.0
    /// means idle gaps; other above a few percent means IO work competing
    /// with the pool for the budget.
    pub pipeline_cpu_pool: f64,
    pub pipeline_cpu_other: f64,
    /// Nodes with this CPU budget needed to score 1e9 rows in one hour at
    /// the pipeline's rate.
    pub nodes_for_1e9_rows_in_1h: u64,
}

impl Report {
    pub fn new(setup: Setup, r: Rounds) -> Self {
        let threads = setup.threads as f64;
        let ratios: Vec<f64> = r
            .pipeline
            .iter()
            .zip(r.raw_sessions.iter().zip(&r.raw_intra))
            .map(|(p, (s, i))| p.rows_per_sec / s.max(*i))
            .collect();
        let cpu_pool: Vec<f64> = r.pipeline.iter().map(|p| p.cpu_pool_s / (p.wall_s * threads)).collect();
        let cpu_other: Vec<f64> = r.pipeline.iter().map(|p| p.cpu_other_s / (p.wall_s * threads)).collect();
        let peak_kib = r.pipeline.iter().map(|p| p.peak_rss_kib).max().unwrap_or(0);
        let pipeline = Stage::new(r.pipeline.iter().map(|p| p.rows_per_sec).collect());
        let (raw_sessions, raw_intra, decode) =
            (Stage::new(r.raw_sessions), Stage::new(r.raw_intra), Stage::new(r.decode));
        let raw =
            if raw_sessions.rows_per_sec >= raw_intra.rows_per_sec { raw_sessions.clone() } else { raw_intra.clone() };
        let per_row = |rows_per_sec: f64| 1e6 * threads / rows_per_sec;
        Report {
            setup,
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
        }
    }

    /// The human-readable report.
    pub fn render(&self) -> String {
        let (r, s) = (self, &self.setup);
        let rounds: Vec<String> = r.pipeline_over_raw_rounds.iter().map(|x| format!("{x:.3}")).collect();
        [
            format!(
                "hourglass bench: {} rows of {}, {} shards, {} threads ({} shards × {} ORT threads), batch {}, on {}{}, median of {}",
                s.rows,
                s.format,
                s.shards,
                s.threads,
                s.concurrency,
                s.ort_threads_per_shard,
                s.batch_size,
                s.device,
                if s.device != s.requested_device {
                    format!(" (asked for {}: fell back)", s.requested_device)
                } else {
                    String::new()
                },
                s.reps
            ),
            format!(
                "  raw       {:>10.0} rows/s  (ONNX Runtime alone; {} sessions × 1 thread {:.0}, 1 session × {} threads {:.0})",
                r.raw.rows_per_sec, s.threads, r.raw_sessions.rows_per_sec, s.threads, r.raw_intra.rows_per_sec
            ),
            format!("  decode    {:>10.0} rows/s  (read + decode only; {:.2} × raw)", r.decode.rows_per_sec, r.decode_over_raw),
            format!("  pipeline  {:>10.0} rows/s  (files → outputs via queue and ledger)", r.pipeline.rows_per_sec),
            format!("  pipeline / raw   {:.3}  (each round: {})", r.pipeline_over_raw, rounds.join(", ")),
            format!(
                "  µs/row/thread    ORT {:.2}, decode {:.2}, rest {:.2} (encode, write, queue, ledger)",
                r.us_per_row_ort, r.us_per_row_decode, r.us_per_row_rest
            ),
            format!(
                "  pipeline CPU     pool threads {:.0}%, other threads {:.0}% of {} cores",
                100.0 * r.pipeline_cpu_pool,
                100.0 * r.pipeline_cpu_other,
                s.threads
            ),
            format!("  peak RSS         {:.0} MiB (pipeline rounds)", r.pipeline_peak_rss_mib),
            format!("  1e9 rows in 1 h  {} node(s) of {} threads at the pipeline's rate", r.nodes_for_1e9_rows_in_1h, s.threads),
        ]
        .join("\n")
            + "\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn samples_this_process() {
        let s = sample_process(std::process::id()).expect("/proc is readable");
        assert!(s.peak_rss_kib > 0 && s.other_ns > 0, "{s:?}");
    }
}
