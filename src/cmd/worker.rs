//! `hourglass worker`: lease shards from a queue and score them until
//! stopped (SIGTERM drains).

use super::{DEFAULT_QUEUE, DeviceArgs, serve_metrics, stop_on_signal};
use anyhow::{Context, Result, bail};
use clap::Args;
use hourglass_core::{BlobUrl, queue};
use hourglass_worker::{WorkerConfig, config};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Args)]
pub struct WorkerArgs {
    /// Queue URL.
    #[arg(long, default_value = DEFAULT_QUEUE, env = "HOURGLASS_QUEUE")]
    queue: String,
    /// Shards scored at once; default: the cores divided by --threads (one
    /// shard per core, measured fastest: see docs/performance.md).
    #[arg(long, env = "HOURGLASS_CONCURRENCY")]
    concurrency: Option<usize>,
    /// Shards leased ahead, waiting for a CPU slot with their input streaming in.
    #[arg(long, default_value_t = config::DEFAULT_PREFETCH_SHARDS, env = "HOURGLASS_PREFETCH_SHARDS")]
    prefetch_shards: usize,
    /// ONNX Runtime intra-op threads per shard; default: the cores divided by
    /// --concurrency when that is given, else 1.
    #[arg(long, env = "HOURGLASS_THREADS")]
    threads: Option<usize>,
    /// Rows per inference batch; default: by device, 8192 on the CPU and
    /// 65536 on a GPU (larger calls amortise the copy to the device).
    #[arg(long, env = "HOURGLASS_BATCH_SIZE")]
    batch_size: Option<usize>,
    /// Lease length; heartbeats extend it every third of it.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, env = "HOURGLASS_VISIBILITY_TIMEOUT")]
    visibility_timeout: Duration,
    /// Deliveries before a failing shard is recorded as failed and dead-lettered.
    #[arg(long, default_value_t = config::DEFAULT_MAX_ATTEMPTS, env = "HOURGLASS_MAX_ATTEMPTS")]
    max_attempts: u32,
    /// After SIGTERM, how long held shards may finish before they are released.
    #[arg(long, default_value = "90s", value_parser = humantime::parse_duration, env = "HOURGLASS_DRAIN_TIMEOUT")]
    drain_timeout: Duration,
    /// Long-poll wait per receive; default: what the queue says (1 s on the
    /// local queue, 20 s on SQS, where a stop request interrupts the poll).
    #[arg(long, value_parser = humantime::parse_duration, env = "HOURGLASS_POLL_WAIT")]
    poll_wait: Option<Duration>,
    /// Exit after the queue has been empty this long (default: serve until stopped).
    #[arg(long, value_parser = humantime::parse_duration, env = "HOURGLASS_EXIT_WHEN_IDLE")]
    exit_when_idle: Option<Duration>,
    /// Load this model before taking any message, so a bad model fails fast
    /// (a file, URL or registry reference `ROOT/NAME@ALIAS`).
    #[arg(long, env = "HOURGLASS_MODEL")]
    model: Option<String>,
    /// Name in done and failed records (default: host-pid).
    #[arg(long, env = "HOURGLASS_WORKER_ID")]
    worker_id: Option<String>,
    /// Serve Prometheus metrics and the probes here (e.g. 0.0.0.0:9100):
    /// /healthz (the lease loop makes progress), /readyz (model loaded,
    /// queue reachable).
    #[arg(long, env = "HOURGLASS_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// Fault injection for tests: sleep before each batch.
    #[arg(long, hide = true, default_value = "0s", value_parser = humantime::parse_duration)]
    fault_batch_delay: Duration,
    /// Prefixes this worker may read or write (repeatable, or
    /// comma-separated in the environment variable). A task whose input,
    /// model or output lies elsewhere is dead-lettered. Default: any.
    #[arg(long = "allow-prefix", env = "HOURGLASS_ALLOW_PREFIXES", value_delimiter = ',')]
    allow_prefixes: Vec<String>,
    /// A trainer training jobs may name: `NAME=COMMAND` (repeatable, or
    /// `;`-separated in the environment variable), e.g.
    /// `lightgbm=.venv/bin/python trainers/lightgbm_onnx.py`. A job names a
    /// trainer; it never carries a command. See docs/training.md.
    #[arg(long = "trainer", env = "HOURGLASS_TRAINERS", value_delimiter = ';', value_parser = hourglass_worker::train::parse_trainer)]
    trainers: Vec<(String, Vec<String>)>,
    /// Trainers running at once in this worker; each may use
    /// cores / --train-slots threads.
    #[arg(long, default_value_t = 1, env = "HOURGLASS_TRAIN_SLOTS")]
    train_slots: usize,
    /// Threads each trainer may use (HOURGLASS_THREADS in its
    /// environment); default: the cores divided by --train-slots.
    #[arg(long, env = "HOURGLASS_TRAIN_THREADS")]
    train_threads: Option<usize>,
    /// Where datasets are staged and trainers write (default: a folder in
    /// the system's temporary directory).
    #[arg(long, env = "HOURGLASS_WORK_DIR")]
    work_dir: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
    /// The node's capacity type (spot, on-demand), recorded with each
    /// shard's pod-seconds for the job's cost; default: asked of the EC2
    /// instance metadata service, if reachable.
    #[arg(long, env = "HOURGLASS_CAPACITY_TYPE")]
    capacity_type: Option<String>,
    /// The node's instance type (m7i.2xlarge); default: from the instance
    /// metadata service, if reachable.
    #[arg(long, env = "HOURGLASS_INSTANCE_TYPE")]
    instance_type: Option<String>,
}

pub async fn run(a: WorkerArgs) -> Result<()> {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let (concurrency, threads) = config::split_cores(cores, a.concurrency, a.threads);
    let queue = queue::open(&a.queue)?;
    let long_poll = queue.long_poll();
    // Before any message is taken: ONNX Runtime loads and the device runs
    // the probe model, or the worker exits saying why.
    let device = a.device.select().await?;
    let config = WorkerConfig {
        node: hourglass_worker::node::NodeInfo::discover(a.capacity_type.clone(), a.instance_type.clone()),
        concurrency,
        prefetch_shards: a.prefetch_shards,
        threads,
        batch_size: a.batch_size.unwrap_or(device.device.default_batch_size()),
        visibility_timeout: a.visibility_timeout,
        max_attempts: a.max_attempts,
        drain_timeout: a.drain_timeout,
        poll_wait: a.poll_wait.unwrap_or(long_poll.wait),
        interrupt_receive: long_poll.interruptible,
        exit_when_idle: a.exit_when_idle,
        preload_model: match a.model.as_deref() {
            Some(m) => Some(hourglass_core::registry::resolve_ref(m).await?.0),
            None => None,
        },
        worker_id: a.worker_id.unwrap_or_else(config::default_worker_id),
        fault_batch_delay: a.fault_batch_delay,
        allow_prefixes: a
            .allow_prefixes
            .iter()
            .filter(|p| !p.trim().is_empty())
            .map(|p| BlobUrl::parse(p.trim()))
            .collect::<hourglass_core::Result<_>>()
            .context("--allow-prefix")?,
        device,
    };
    if let Err(e) = config.validate() {
        bail!(e);
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    let mut train = hourglass_worker::train::TrainConfig {
        trainers: a.trainers.into_iter().collect(),
        slots: a.train_slots.max(1),
        threads: a.train_threads.unwrap_or(cores / a.train_slots.max(1)).max(1),
        ..Default::default()
    };
    if let Some(dir) = a.work_dir {
        train.work_dir = dir;
    }
    let worker = Arc::new(hourglass_worker::kinds::worker(queue, config, train));
    let _metrics = serve_metrics(a.metrics_addr, |r| worker.metrics().register(r), worker.health()).await?;
    worker.run(shutdown).await?;
    Ok(())
}
