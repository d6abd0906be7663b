//! One module per command: each turns its flags into a library call and
//! prints the result. What several commands share (exit codes, the metrics
//! endpoint, signals, loading a model) is here.

pub mod bench;
pub mod bench_ledger;
pub mod bench_serve;
pub mod bench_train;
pub mod completions;
pub mod demo;
pub mod doctor;
pub mod gen_data;
pub mod iam;
pub mod model;
pub mod queue;
pub mod scaler;
pub mod serve;
pub mod status;
pub mod submit;
pub mod train;
pub mod verify;
pub mod watch;
pub mod worker;

use anyhow::{Context, Result};
use hourglass_core::BlobUrl;
use hourglass_core::metrics::prometheus_client::registry::Registry;
use hourglass_core::task::Format;
use hourglass_runtime::device::{Device, DeviceOptions, Fallback};
use hourglass_runtime::{ModelRuntime, RuntimeOptions};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The embedded default queue: a SQLite file in the working directory.
pub const DEFAULT_QUEUE: &str = "local://./.hourglass/queue.db";

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum FormatArg {
    Csv,
    Parquet,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Csv => Format::Csv,
            FormatArg::Parquet => Format::Parquet,
        }
    }
}

/// Ends a command with a code other than 0 or 1 (see the README's exit
/// code table); `message`, if any, is printed as the error.
#[derive(Debug)]
pub struct ExitWith {
    pub code: u8,
    pub message: Option<String>,
}

impl std::fmt::Display for ExitWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message.as_deref().unwrap_or(""))
    }
}

impl std::error::Error for ExitWith {}

pub fn exit_with(code: u8, cause: impl std::fmt::Display) -> anyhow::Error {
    ExitWith { code, message: Some(format!("{cause:#}")) }.into()
}

/// The exit of a command that read a job to its end: 0 if it succeeded.
pub fn finished(state: hourglass_coordinator::status::JobState) -> Result<()> {
    match state.exit_code() {
        0 => Ok(()),
        code => Err(ExitWith { code, message: None }.into()),
    }
}

/// Where models run, shared by `worker`, `serve`, `bench` and `demo`.
#[derive(clap::Args, Clone, Debug)]
pub struct DeviceArgs {
    /// Where models run: cpu, cuda[:N] or tensorrt[:N] (GPU N; TensorRT
    /// hands the nodes it does not take to CUDA). A GPU device loads ONNX
    /// Runtime's GPU build from .venv-gpu (`make setup-gpu`) unless
    /// ORT_DYLIB_PATH names a library.
    #[arg(long, default_value = "cpu", env = "HOURGLASS_DEVICE")]
    pub device: Device,
    /// When the GPU cannot be used: `error` stops before any work is
    /// taken, naming the device and why; `cpu` runs on the CPU with a
    /// warning, hourglass_ep_fallback_total, and `cpu` reported as the
    /// device in use.
    #[arg(long, default_value = "error", env = "HOURGLASS_EP_FALLBACK")]
    pub ep_fallback: Fallback,
    /// Refuse a model any of whose nodes the GPU provider cannot take
    /// (ONNX Runtime would run those on the CPU): the GPU did all the work
    /// or nothing runs. Not with --ep-fallback cpu.
    #[arg(long, env = "HOURGLASS_STRICT_PLACEMENT")]
    pub strict_placement: bool,
    /// TensorRT engine and timing caches, one folder per model sha256
    /// (default: ~/.cache/hourglass/tensorrt). Keep it on a disk that
    /// outlives the process: building an engine takes seconds to minutes.
    #[arg(long, env = "HOURGLASS_TRT_ENGINE_CACHE")]
    pub trt_engine_cache: Option<std::path::PathBuf>,
}

impl DeviceArgs {
    /// The options as given, checked.
    pub fn options(&self) -> Result<DeviceOptions> {
        if self.strict_placement && self.ep_fallback == Fallback::Cpu {
            anyhow::bail!("--strict-placement refuses any CPU execution; it cannot be combined with --ep-fallback cpu");
        }
        Ok(DeviceOptions::new(self.device, self.ep_fallback, self.strict_placement, self.trt_engine_cache.clone()))
    }

    /// Settles the device before any work: loads ONNX Runtime (its GPU
    /// build for a GPU device) and runs the probe model on the device.
    /// Under `--ep-fallback error` an unusable device is the error here.
    pub async fn select(&self) -> Result<DeviceOptions> {
        let options = self.options()?;
        let selected = tokio::task::spawn_blocking(move || hourglass_runtime::select::select(&options))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
        Ok(selected)
    }

    /// The same flags for a worker process this one starts.
    pub fn to_args(&self) -> Vec<String> {
        let mut args =
            vec!["--device".into(), self.device.to_string(), "--ep-fallback".into(), self.ep_fallback.to_string()];
        if self.strict_placement {
            args.push("--strict-placement".into());
        }
        if let Some(dir) = &self.trt_engine_cache {
            args.extend(["--trt-engine-cache".into(), dir.display().to_string()]);
        }
        args
    }
}

/// Loads the model through the worker runtime and checks that it can score
/// batches: a missing, corrupt or unfit model fails here, before anything
/// is planned or enqueued.
pub async fn load_model(model: &BlobUrl, threads: usize) -> Result<ModelRuntime> {
    let bytes = hourglass_core::store::open(model)?
        .get(model.key())
        .await
        .with_context(|| format!("model {model}: cannot read"))?;
    // Planning reads the signature and probes a batch: on the CPU, whatever
    // the workers will score on.
    let options = RuntimeOptions { intra_threads: threads, ..Default::default() };
    let source = model.to_string();
    Ok(tokio::task::spawn_blocking(move || {
        let runtime = ModelRuntime::load(&bytes, &source, options)?;
        runtime.check_batch_scoring()?;
        Ok::<_, hourglass_worker::Error>(runtime)
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?)
}

/// Serves the metrics `register` adds at `addr`, when given, until the
/// returned task is dropped with the process.
pub async fn serve_metrics(
    addr: Option<SocketAddr>,
    register: impl FnOnce(&mut Registry),
    health: Arc<dyn hourglass_core::metrics::Health>,
) -> Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(addr) = addr else { return Ok(None) };
    let mut registry = Registry::default();
    hourglass_core::metrics::register_build_info(&mut registry, &crate::version::info());
    register(&mut registry);
    let (bound, task) = hourglass_core::metrics::serve(addr, Arc::new(registry), health)
        .await
        .with_context(|| format!("--metrics-addr {addr}"))?;
    tracing::info!(%bound, "serving metrics");
    Ok(Some(task))
}

/// The size of the terminal on stderr (columns, rows); 80 × 24 when it
/// cannot be told. Asked at every redraw, so a resize is followed.
pub fn terminal_size() -> (usize, usize) {
    match terminal_size::terminal_size_of(std::io::stderr()) {
        Some((w, h)) if w.0 > 0 && h.0 > 0 => (usize::from(w.0), usize::from(h.0)),
        _ => (80, 24),
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: stopping"),
    }
}

/// Cancels `token` on SIGTERM or Ctrl-C.
pub async fn stop_on_signal(token: CancellationToken) {
    stop_signal().await;
    token.cancel();
}
