//! `hourglass demo`: the whole flow on embedded defaults. Generates CTR
//! rows, submits them to a local queue, runs K worker processes of this
//! binary until the job succeeds, verifies every input row has exactly one
//! output row, and measures raw ONNX Runtime on the same model and thread
//! budget for comparison.

use super::{FormatArg, load_model};
use anyhow::{Context, Result, bail};
use clap::Args;
use hourglass_bench::pipeline as measure;
use hourglass_coordinator::{status, submit, synth, verify};
use hourglass_core::ledger::JobSpec;
use hourglass_core::task::Format;
use hourglass_core::units::parse_bytes;
use hourglass_core::{BlobUrl, queue, store};
use hourglass_runtime::ModelRuntime;
use std::io::IsTerminal;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct DemoArgs {
    #[arg(long, default_value_t = 2_000_000)]
    rows: u64,
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// ONNX Runtime threads per worker.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    #[arg(long, default_value = "csv")]
    format: FormatArg,
    /// Input files to generate.
    #[arg(long, default_value_t = 4)]
    files: usize,
    #[arg(long, default_value = "models/ctr_gbdt.onnx")]
    model: String,
    /// Working directory for inputs, outputs, the queue and worker logs.
    #[arg(long, default_value = ".hourglass/demo")]
    dir: String,
    /// Target input bytes per shard.
    #[arg(long, default_value = "32MiB", value_parser = parse_bytes)]
    shard_size: u64,
    /// Rows for the raw ONNX Runtime measurement.
    #[arg(long, default_value_t = 400_000)]
    raw_rows: usize,
    #[command(flatten)]
    device: super::DeviceArgs,
}

/// Kills worker processes left behind if the demo fails half-way.
pub(crate) struct Workers(pub(crate) Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

pub async fn run(a: DemoArgs) -> Result<()> {
    let format: Format = a.format.into();
    // Settled here, before anything is generated: an unusable device under
    // --ep-fallback error stops the demo with the reason at once.
    let device = a.device.select().await?;
    let dir = std::path::absolute(&a.dir).context("resolving --dir")?;
    for sub in ["input", "output"] {
        let p = dir.join(sub);
        if p.exists() {
            std::fs::remove_dir_all(&p).with_context(|| format!("clearing {}", p.display()))?;
        }
    }
    for f in ["queue.db", "queue.db-wal", "queue.db-shm"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    std::fs::create_dir_all(&dir)?;
    let input = BlobUrl::parse(&format!("{}/input/", dir.display()))?;
    let output = BlobUrl::parse(&format!("{}/output/", dir.display()))?;
    let queue_url = format!("local://{}/queue.db", dir.display());

    eprintln!("generating {} rows of {} in {} files…", a.rows, format, a.files);
    let t = Instant::now();
    let spec = synth::SynthSpec { rows: a.rows, files: a.files, format, seed: 42, label: None };
    synth::generate(store::open(&input)?.as_ref(), &input, &spec).await?;
    let gen_secs = t.elapsed().as_secs_f64();

    let model_url = BlobUrl::parse(&a.model)?;
    let model = load_model(&model_url, a.threads).await?;
    let queue = queue::open(&queue_url)?;
    let report =
        submit_job(queue.as_ref(), job_spec(&input, &model_url, &output, format, a.shard_size), &model).await?;
    eprintln!("job {}: {} shards; starting {} workers…", report.job, report.shards, a.workers);

    let exe = std::env::current_exe()?;
    let started = Instant::now();
    let mut workers = Workers(Vec::new());
    for i in 0..a.workers {
        let log = std::fs::File::create(dir.join(format!("worker-{i}.log")))?;
        let child = Command::new(&exe)
            .args(["worker", "--queue", &queue_url, "--threads", &a.threads.to_string(), "--exit-when-idle", "1s"])
            .args(["--worker-id", &format!("demo-{i}")])
            .args(a.device.to_args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting a worker process")?;
        workers.0.push(child);
    }
    let mut live = std::io::stderr().is_terminal().then(status::LiveView::default);
    let final_status = loop {
        let s = status::status(&output, None).await?;
        if let Some(view) = live.as_mut() {
            let (columns, rows) = super::terminal_size();
            let line = format!("{}\n", s.progress_line());
            eprint!("{}", view.frame(&status::fit_line(&line, columns), columns, rows));
        }
        if s.state != status::JobState::Running {
            break s;
        }
        for (i, c) in workers.0.iter_mut().enumerate() {
            if let Some(code) = c.try_wait()?
                && !code.success()
            {
                bail!("worker {i} exited with {code}; see {}", dir.join(format!("worker-{i}.log")).display());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let wall = started.elapsed().as_secs_f64();
    for c in &mut workers.0 {
        c.wait()?;
    }
    if final_status.state != status::JobState::Succeeded {
        bail!("job did not succeed:\n{}", final_status.render());
    }

    let check = verify::verify(&output).await?;
    if !check.ok() {
        bail!("verification failed: {check:?}");
    }

    eprintln!("measuring raw ONNX Runtime on {} in-memory rows…", a.raw_rows);
    let raw_rows = a.raw_rows;
    let options = hourglass_runtime::RuntimeOptions::new(a.threads, a.workers, &device);
    let path = model_url.local_path().context("--model must be a local file for the raw measurement")?;
    let raw = tokio::task::spawn_blocking(move || {
        const WIDTH: usize = 39;
        let batch = options.device.device.default_batch_size();
        let features = synth::features(raw_rows.max(batch), 7);
        measure::raw_rows_per_sec(&path, &features, WIDTH, raw_rows as u64, batch, options)
    })
    .await??;
    let rows_per_sec = a.rows as f64 / wall;
    let on = match device.requested() {
        r if r != device.device => format!("{} (asked for {r}: fell back)", device.device),
        _ => device.device.to_string(),
    };
    println!("hourglass demo ({format}, {} workers × {} ORT threads, on {on})", a.workers, a.threads);
    println!("  rows            {}", a.rows);
    println!("  shards          {}", report.shards);
    println!("  generate        {gen_secs:.1} s");
    println!("  wall (score)    {wall:.2} s");
    println!("  rows/s          {rows_per_sec:.0}");
    println!("  raw ORT rows/s  {raw:.0} (same model, {} sessions × {} threads, no IO)", a.workers, a.threads);
    println!("  pipeline / raw  {:.2}", rows_per_sec / raw);
    println!(
        "  verified        {} input rows → {} output rows, 0 missing, 0 duplicates",
        check.input_rows, check.output_rows
    );
    println!("  outputs         {output}");
    Ok(())
}

/// The job the demo and the bench run: synthetic CTR files, ids in `id`, no
/// bad rows allowed, no deadline.
pub(crate) fn job_spec(
    input: &BlobUrl,
    model: &BlobUrl,
    output: &BlobUrl,
    format: Format,
    shard_bytes: u64,
) -> JobSpec {
    JobSpec {
        input: input.clone(),
        model: model.clone(),
        output: output.clone(),
        format: Some(format),
        id_column: "id".into(),
        shard_bytes,
        max_bad_rows: 0,
        max_line_bytes: hourglass_core::task::DEFAULT_MAX_LINE_BYTES,
        deadline_unix_ms: None,
        csv: Default::default(),
        keep_columns: Vec::new(),
        keep_all: false,
        output_format: Default::default(),
    }
}

/// Submits `spec` for `model` (already loaded) to `queue`.
pub(crate) async fn submit_job(
    queue: &dyn queue::Queue,
    spec: JobSpec,
    model: &ModelRuntime,
) -> Result<submit::SubmitReport> {
    let request = submit::SubmitRequest {
        spec,
        job_id: None,
        signature: model.signature().clone(),
        model_sha256: model.sha256().to_string(),
        replace: false,
        model_registry: None,
        jobs_index: None,
    };
    Ok(submit::submit(request, queue).await?)
}
