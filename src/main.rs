//! The `hourglass` binary: argument parsing and wiring only. Every
//! behaviour lives in the library crates; this file turns flags into their
//! configs, connects queue, store and model, and maps errors to exit codes.

mod bench;
mod demo;
mod scaler_cmd;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use hourglass_coordinator::{schedule, status, submit, synth, trigger, verify};
use hourglass_core::ledger::JobSpec;
use hourglass_core::metrics::prometheus_client::registry::Registry;
use hourglass_core::model::ModelSignature;
use hourglass_core::task::Format;
use hourglass_core::telemetry::{self, LogFormat};
use hourglass_core::{BlobUrl, JobId, queue};
use hourglass_worker::lease::Worker;
use hourglass_worker::{ModelRuntime, RuntimeOptions, WorkerConfig, config};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// The embedded default queue: a SQLite file in the working directory.
const DEFAULT_QUEUE: &str = "local://./.hourglass/queue.db";

#[derive(Parser)]
#[command(
    name = "hourglass",
    version,
    about = "Deadline-driven batch inference: score huge batches of rows with ONNX models before a deadline"
)]
struct Cli {
    /// Log format on stderr: text or json.
    #[arg(long, global = true, default_value = "text")]
    log_format: LogFormat,
    /// Fault injection for tests: make every store and queue call unreliable
    /// (`first=N,fraction=F,latency=DUR,kind=transient|permanent,seed=S`).
    #[arg(long, global = true, hide = true, env = "HOURGLASS_FAULTS")]
    inject_faults: Option<hourglass_core::fault::FaultPlan>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate data, score it with K local worker processes, verify, summarise.
    Demo(demo::DemoArgs),
    /// Write synthetic CTR feature files (id + 39 features), deterministic by seed.
    GenData(GenDataArgs),
    /// Plan a job, check its inputs against the model, enqueue its shards.
    Submit(SubmitArgs),
    /// Lease shards from a queue and score them until stopped (SIGTERM drains).
    Worker(WorkerArgs),
    /// Show a job's progress from its ledger.
    Status(StatusArgs),
    /// Check a finished job: every input row has exactly one output row.
    Verify(VerifyArgs),
    /// Measure raw ONNX Runtime, decode and the full pipeline on the same data and threads.
    Bench(Box<bench::BenchArgs>),
    /// Scale the worker Deployment to meet the job's deadline (or `scaler simulate`).
    Scaler(Box<scaler_cmd::ScalerArgs>),
    /// Start jobs when files land in S3: read S3 event notifications from a
    /// queue, match them against rules, submit (idempotently).
    Watch(WatchArgs),
    /// Manage SQS queues.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Least-privilege IAM policies for each component.
    #[command(subcommand)]
    Iam(IamCommand),
}

#[derive(Subcommand)]
enum IamCommand {
    /// Print a component's IAM policy (deploy/iam/ROLE.json) scoped to a
    /// job's prefixes and queues, ready for `aws iam put-role-policy`.
    Policy(IamPolicyArgs),
}

#[derive(Args)]
struct IamPolicyArgs {
    /// worker, submit, scaler or watcher.
    #[arg(long)]
    role: String,
    /// Input prefix (s3://bucket/prefix/), above any {date} part.
    #[arg(long)]
    input: Option<String>,
    /// Output prefix: outputs and the job ledger.
    #[arg(long)]
    output: Option<String>,
    /// Model object or prefix.
    #[arg(long)]
    model: Option<String>,
    /// The work queue's URL or ARN.
    #[arg(long)]
    queue: Option<String>,
    /// Its dead-letter queue (default: the queue's name + `-dlq`).
    #[arg(long)]
    dlq: Option<String>,
    /// The S3 event notification queue (watcher).
    #[arg(long)]
    events_queue: Option<String>,
    /// Region of queue URLs that do not name one.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    region: String,
}

#[derive(Subcommand)]
enum QueueCommand {
    /// Create an SQS queue and its dead-letter queue `<name>-dlq`; prints the queue URL.
    ///
    /// Attributes: the visibility timeout is the workers' default lease
    /// (workers pass their own on every receive and extend it while they
    /// work); long polling of 20 s (the SQS maximum) is the default wait;
    /// messages and dead letters are kept 14 days (the SQS maximum), so a
    /// paused job survives a long weekend; after --max-attempts + 2
    /// receives a message moves to the dead-letter queue (a RedrivePolicy),
    /// a backstop for shards whose workers die every time: workers
    /// themselves give up at their own --max-attempts and record why.
    Create(QueueCreateArgs),
}

#[derive(Args)]
struct QueueCreateArgs {
    #[arg(long)]
    name: String,
    /// The workers' --max-attempts. SQS's redrive moves a message to the
    /// dead-letter queue after max-attempts + 2 receives: a worker must see
    /// the delivery past its last attempt to record the shard as failed
    /// (kind `lost`) before it goes, or the job would wait forever; the
    /// second spare covers a worker that dies while recording it.
    #[arg(long, default_value_t = config::DEFAULT_MAX_ATTEMPTS)]
    max_attempts: u32,
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    visibility_timeout: Duration,
}

#[derive(Args)]
struct GenDataArgs {
    /// Directory to write into.
    #[arg(long)]
    output: String,
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    #[arg(long, default_value_t = 4)]
    files: usize,
    #[arg(long, default_value = "csv")]
    format: FormatArg,
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum FormatArg {
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

#[derive(Args)]
struct SubmitArgs {
    /// Input file or prefix (directory) of .csv / .parquet files. May hold
    /// `{date}` (the run date, 2026-11-22) or `{date:%Y%m%d}`, as may
    /// --model, --output and --job-id.
    #[arg(long)]
    input: String,
    /// The ONNX model.
    #[arg(long)]
    model: String,
    /// Output prefix: part-<shard>.parquet files and the job ledger go here.
    #[arg(long)]
    output: String,
    /// Queue URL.
    #[arg(long, default_value = DEFAULT_QUEUE, env = "HOURGLASS_QUEUE")]
    queue: String,
    /// When the job must be done: `+1h` (from now), a time of day (`06:00`:
    /// the next one in --tz) or an RFC 3339 time.
    #[arg(long)]
    deadline: Option<String>,
    /// The run date `{date}` stands for: today (in --tz), yesterday, today-N
    /// or YYYY-MM-DD (to re-run or backfill a night).
    #[arg(long, default_value = "today")]
    date: String,
    /// Time zone of --date and of a time-of-day --deadline (IANA name).
    #[arg(long, default_value = "UTC", env = "HOURGLASS_TZ")]
    tz: String,
    /// Input format, when file names do not say it.
    #[arg(long)]
    format: Option<FormatArg>,
    /// Column that identifies rows; passed through to the outputs.
    #[arg(long, default_value = "id")]
    id_column: String,
    /// Target input bytes per shard (e.g. 64MiB). Default 64 MiB: about
    /// 0.4 M CTR rows, a few seconds of work, so a lost shard costs little.
    #[arg(long, default_value = "64MiB", value_parser = parse_bytes)]
    shard_size: u64,
    /// Malformed rows a shard may skip (they are written to
    /// _hourglass/bad/<shard>.csv); one more fails the shard.
    #[arg(long, default_value_t = 0)]
    max_bad_rows: u64,
    /// Job id (e.g. `ctr-{date}`); by default derived from the inputs, model
    /// and options, so submitting the same job again resumes it.
    #[arg(long)]
    job_id: Option<String>,
    /// Longest CSV line (e.g. 4MiB). A cut point with no line end within
    /// it, or a longer line, is an error naming the file and line.
    #[arg(long, default_value = "1MiB", value_parser = parse_bytes)]
    max_line_bytes: u64,
    /// If --output holds another job's ledger, delete that job's outputs
    /// and ledger first (a prefix belongs to one job; without this the
    /// submit is refused, naming both jobs).
    #[arg(long)]
    replace: bool,
    /// Wait until the job ends and exit like `hourglass status` (0
    /// succeeded, 3 failed, 5 could not read).
    #[arg(long)]
    wait: bool,
    /// How often --wait reads the ledger.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct WorkerArgs {
    /// Queue URL.
    #[arg(long, default_value = DEFAULT_QUEUE, env = "HOURGLASS_QUEUE")]
    queue: String,
    /// Shards scored at once; default: the cores divided by --threads (one
    /// shard per core, measured fastest: see README Performance).
    #[arg(long, env = "HOURGLASS_CONCURRENCY")]
    concurrency: Option<usize>,
    /// Shards leased ahead, waiting for a CPU slot with their input streaming in.
    #[arg(long, default_value_t = config::DEFAULT_PREFETCH_SHARDS, env = "HOURGLASS_PREFETCH_SHARDS")]
    prefetch_shards: usize,
    /// ONNX Runtime intra-op threads per shard; default: the cores divided by
    /// --concurrency when that is given, else 1.
    #[arg(long, env = "HOURGLASS_THREADS")]
    threads: Option<usize>,
    /// Rows per inference batch.
    #[arg(long, default_value_t = config::DEFAULT_BATCH_SIZE, env = "HOURGLASS_BATCH_SIZE")]
    batch_size: usize,
    /// Lease length; heartbeats extend it every third of it.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, env = "HOURGLASS_VISIBILITY_TIMEOUT")]
    visibility_timeout: Duration,
    /// Deliveries before a failing shard is recorded as failed and dead-lettered.
    #[arg(long, default_value_t = config::DEFAULT_MAX_ATTEMPTS, env = "HOURGLASS_MAX_ATTEMPTS")]
    max_attempts: u32,
    /// After SIGTERM, how long held shards may finish before they are released.
    #[arg(long, default_value = "90s", value_parser = humantime::parse_duration, env = "HOURGLASS_DRAIN_TIMEOUT")]
    drain_timeout: Duration,
    /// Long-poll wait per receive; default 1s on the local queue, 20s on SQS
    /// (where a stop request interrupts the poll).
    #[arg(long, value_parser = humantime::parse_duration)]
    poll_wait: Option<Duration>,
    /// Exit after the queue has been empty this long (default: serve until stopped).
    #[arg(long, value_parser = humantime::parse_duration)]
    exit_when_idle: Option<Duration>,
    /// Load this model before taking any message, so a bad model fails fast.
    #[arg(long, env = "HOURGLASS_MODEL")]
    model: Option<String>,
    /// Name in done and failed records (default: host-pid).
    #[arg(long)]
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
}

#[derive(Args)]
struct WatchArgs {
    /// The queue the bucket's event notifications go to (SQS URL).
    #[arg(long, env = "HOURGLASS_EVENTS_QUEUE")]
    events_queue: String,
    /// Rules: which objects start which jobs (YAML; see README).
    #[arg(long, env = "HOURGLASS_RULES")]
    rules: std::path::PathBuf,
    /// The work queue jobs' shards go to.
    #[arg(long, default_value = DEFAULT_QUEUE, env = "HOURGLASS_QUEUE")]
    queue: String,
    /// Long-poll wait per receive.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    poll_wait: Duration,
    /// How long an event is hidden while its job is planned (and before a retry).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    visibility_timeout: Duration,
    /// Serve Prometheus metrics and /healthz here (e.g. 0.0.0.0:9100).
    #[arg(long, env = "HOURGLASS_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
}

#[derive(Args)]
struct StatusArgs {
    /// The job's output prefix.
    output: String,
    /// The job's queue: shards whose messages are gone are reported as
    /// lost (the job as failed), and the dead-letter depth is shown.
    #[arg(long, env = "HOURGLASS_QUEUE")]
    queue: Option<String>,
    #[arg(long)]
    json: bool,
    /// Live view until the job succeeds or fails: progress, rows/s, ETA vs
    /// deadline, failures and a map of every shard (a progress line per
    /// refresh when stderr is not a terminal).
    #[arg(long)]
    watch: bool,
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    interval: Duration,
}

#[derive(Args)]
struct VerifyArgs {
    /// The job's output prefix.
    output: String,
    #[arg(long)]
    json: bool,
}

/// Parses `64MiB`, `1GB`, `1048576`.
fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size like 64MiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?}; use B, KiB, MiB, GiB")),
    };
    n.checked_mul(mult).filter(|&b| b > 0).ok_or_else(|| format!("{s:?} is out of range"))
}

fn parse_deadline(s: &str) -> Result<u64> {
    let now = SystemTime::now();
    let when = if let Some(rel) = s.strip_prefix('+') {
        now + humantime::parse_duration(rel)
            .with_context(|| format!("--deadline {s:?}: expected +DURATION like +1h"))?
    } else {
        humantime::parse_rfc3339_weak(s)
            .with_context(|| format!("--deadline {s:?}: expected +1h or an RFC 3339 time"))?
    };
    Ok(when.duration_since(UNIX_EPOCH).context("deadline before 1970")?.as_millis() as u64)
}

/// Loads the model through the worker runtime and checks that it can score
/// batches: a missing, corrupt or unfit model fails here, before anything
/// is planned or enqueued.
async fn load_model(model: &BlobUrl, threads: usize) -> Result<ModelRuntime> {
    let bytes = hourglass_core::store::open(model)?
        .get(model.key())
        .await
        .map_err(|e| anyhow::anyhow!("model {model}: cannot read: {e}"))?;
    let options = RuntimeOptions { intra_threads: threads, sessions: 1 };
    let source = model.to_string();
    Ok(tokio::task::spawn_blocking(move || {
        let runtime = ModelRuntime::load(&bytes, &source, options)?;
        runtime.check_batch_scoring()?;
        Ok::<_, hourglass_worker::Error>(runtime)
    })
    .await??)
}

/// Reads models for `watch` through the worker runtime.
struct RuntimeModels;

#[async_trait::async_trait]
impl trigger::ModelReader for RuntimeModels {
    async fn read(&self, model: &BlobUrl) -> hourglass_coordinator::Result<(ModelSignature, String)> {
        let runtime = load_model(model, 1)
            .await
            .map_err(|e| hourglass_coordinator::Error::Request(format!("model {model}: {e:#}")))?;
        Ok((runtime.signature().clone(), runtime.sha256().to_string()))
    }
}

async fn cmd_submit(a: SubmitArgs) -> Result<()> {
    let tz = schedule::time_zone(&a.tz)?;
    let now = jiff::Timestamp::now();
    let date = schedule::run_date(&a.date, now, &tz)?;
    let expand = |flag: &str, v: &str| schedule::expand(flag, v, date);
    let model = BlobUrl::parse(&expand("--model", &a.model)?)?;
    let runtime = load_model(&model, 1).await?;
    let deadline_unix_ms = match a.deadline.as_deref() {
        Some(d) if schedule::is_time_of_day(d) => {
            Some(schedule::next_time_of_day(d, now, &tz)?.as_millisecond().max(0) as u64)
        }
        Some(d) => Some(parse_deadline(d)?),
        None => None,
    };
    let spec = JobSpec {
        input: BlobUrl::parse(&expand("--input", &a.input)?)?,
        model: model.clone(),
        output: BlobUrl::parse(&expand("--output", &a.output)?)?.as_prefix(),
        format: a.format.map(Into::into),
        id_column: a.id_column,
        shard_bytes: a.shard_size,
        max_bad_rows: a.max_bad_rows,
        max_line_bytes: a.max_line_bytes,
        deadline_unix_ms,
    };
    let queue = queue::open(&a.queue)?;
    let job_id = match a.job_id.as_deref() {
        Some(id) => Some(JobId::parse(&expand("--job-id", id)?)?),
        None => None,
    };
    let request = submit::SubmitRequest {
        spec,
        job_id,
        signature: runtime.signature().clone(),
        model_sha256: runtime.sha256().to_string(),
        replace: a.replace,
    };
    let report = submit::submit(request, queue.as_ref()).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "job {} {}: {} shards (~{} rows), {} enqueued, {} already done\noutput {}\nqueue  {}",
            report.job,
            if report.resumed { "resumed" } else { "submitted" },
            report.shards,
            report.rows_estimate,
            report.enqueued,
            report.already_done,
            report.output,
            queue.name()
        );
        for s in &report.skipped_files {
            println!("skipped {} ({})", s.url, s.reason);
        }
        for f in &report.new_files {
            println!("not in this job (added after it was planned): {f}");
        }
    }
    if !a.wait {
        return Ok(());
    }
    let output = BlobUrl::parse(&report.output)?;
    loop {
        let s =
            status::status(&output, Some(queue.as_ref())).await.map_err(|e| exit_with(status::EXIT_UNREADABLE, e))?;
        eprintln!("{}", s.progress_line());
        if s.state != status::JobState::Running {
            print!("{}", s.render());
            return finished(s.state);
        }
        tokio::time::sleep(a.interval).await;
    }
}

/// Ends a command with a code other than 0 or 1 (see the README's exit
/// code table); `message`, if any, is printed as the error.
#[derive(Debug)]
struct ExitWith {
    code: u8,
    message: Option<String>,
}

impl std::fmt::Display for ExitWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message.as_deref().unwrap_or(""))
    }
}

impl std::error::Error for ExitWith {}

fn exit_with(code: u8, cause: impl std::fmt::Display) -> anyhow::Error {
    ExitWith { code, message: Some(format!("{cause:#}")) }.into()
}

/// The exit of a command that read a job to its end: 0 if it succeeded.
fn finished(state: status::JobState) -> Result<()> {
    match state.exit_code() {
        0 => Ok(()),
        code => Err(ExitWith { code, message: None }.into()),
    }
}

/// The CPU budget as (shards at once, ORT threads per shard): what is not
/// given fills the cores, favouring one single-threaded shard per core
/// (ORT's tree ensembles scale better across sessions than within one).
fn split_cores(cores: usize, concurrency: Option<usize>, threads: Option<usize>) -> (usize, usize) {
    match (concurrency, threads) {
        (Some(c), Some(t)) => (c, t),
        (Some(c), None) => (c, (cores / c.max(1)).max(1)),
        (None, Some(t)) => ((cores / t.max(1)).max(1), t),
        (None, None) => (cores.max(1), 1),
    }
}

async fn cmd_worker(a: WorkerArgs) -> Result<()> {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let (concurrency, threads) = split_cores(cores, a.concurrency, a.threads);
    let queue = queue::open(&a.queue)?;
    let long_poll = queue.long_poll();
    let config = WorkerConfig {
        concurrency,
        prefetch_shards: a.prefetch_shards,
        threads,
        batch_size: a.batch_size,
        visibility_timeout: a.visibility_timeout,
        max_attempts: a.max_attempts,
        drain_timeout: a.drain_timeout,
        poll_wait: a.poll_wait.unwrap_or(long_poll.wait),
        interrupt_receive: long_poll.interruptible,
        exit_when_idle: a.exit_when_idle,
        preload_model: a.model.as_deref().map(BlobUrl::parse).transpose()?,
        worker_id: a.worker_id.unwrap_or_else(config::default_worker_id),
        fault_batch_delay: a.fault_batch_delay,
        allow_prefixes: a
            .allow_prefixes
            .iter()
            .filter(|p| !p.trim().is_empty())
            .map(|p| BlobUrl::parse(p.trim()))
            .collect::<hourglass_core::Result<_>>()
            .context("--allow-prefix")?,
    };
    if let Err(e) = config.validate() {
        bail!(e);
    }
    // Fail fast, before any message is taken, when ONNX Runtime is missing.
    hourglass_worker::runtime::environment()?;
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    let worker = Arc::new(Worker::new(queue, config));
    let _metrics = serve_metrics(a.metrics_addr, |r| worker.metrics().register(r), worker.health()).await?;
    worker.run(shutdown).await?;
    Ok(())
}

/// Serves the metrics `register` adds at `addr`, when given, until the
/// returned task is dropped with the process.
async fn serve_metrics(
    addr: Option<SocketAddr>,
    register: impl FnOnce(&mut Registry),
    health: Arc<dyn hourglass_core::metrics::Health>,
) -> Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(addr) = addr else { return Ok(None) };
    let mut registry = Registry::default();
    register(&mut registry);
    let (bound, task) = hourglass_core::metrics::serve(addr, Arc::new(registry), health)
        .await
        .with_context(|| format!("--metrics-addr {addr}"))?;
    tracing::info!(%bound, "serving metrics");
    Ok(Some(task))
}

/// Cancels `token` on SIGTERM or Ctrl-C.
async fn stop_on_signal(token: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: stopping"),
    }
    token.cancel();
}

async fn cmd_status(a: StatusArgs) -> Result<()> {
    let unreadable = |e: hourglass_coordinator::Error| exit_with(status::EXIT_UNREADABLE, e);
    let output = BlobUrl::parse(&a.output)?;
    let queue = match a.queue.as_deref() {
        Some(q) => Some(queue::open(q).map_err(|e| exit_with(status::EXIT_UNREADABLE, e))?),
        None => None,
    };
    let queue = queue.as_deref();
    if !a.watch {
        let s = status::status(&output, queue).await.map_err(unreadable)?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&s)?);
        } else {
            print!("{}", s.render());
        }
        return match s.state {
            status::JobState::Running => Err(ExitWith { code: status::EXIT_RUNNING, message: None }.into()),
            state => finished(state),
        };
    }
    // On a terminal the whole view is redrawn in place; otherwise (logs, CI)
    // one progress line per refresh.
    let live = !a.json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut drawn_lines = 0;
    let mut last: Option<(std::time::Instant, u64)> = None;
    loop {
        let s = status::status(&output, queue).await.map_err(unreadable)?;
        let recent =
            last.map(|(at, rows)| s.rows_done.saturating_sub(rows) as f64 / at.elapsed().as_secs_f64().max(1e-3));
        last = Some((std::time::Instant::now(), s.rows_done));
        if a.json {
            println!("{}", serde_json::to_string(&s)?);
        } else if live {
            let view = s.live_view(recent);
            // Up to the first line drawn, clear to the end, draw again.
            if drawn_lines > 0 {
                eprint!("\x1b[{drawn_lines}A");
            }
            eprint!("\r\x1b[J{view}");
            drawn_lines = view.lines().count();
        } else {
            eprintln!("{}", s.progress_line());
        }
        if s.state != status::JobState::Running {
            if !a.json && !live {
                print!("{}", s.render());
            }
            return finished(s.state);
        }
        tokio::select! {
            _ = tokio::time::sleep(a.interval) => {}
            _ = tokio::signal::ctrl_c() => { eprintln!(); return Ok(()) }
        }
    }
}

async fn cmd_verify(a: VerifyArgs) -> Result<()> {
    let report =
        verify::verify(&BlobUrl::parse(&a.output)?).await.map_err(|e| exit_with(status::EXIT_UNREADABLE, e))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "input rows {}, output rows {}, missing {}, duplicates {}, unexpected {}, skipped as bad {}, other jobs' records {}, altered outputs {}",
            report.input_rows,
            report.output_rows,
            report.missing,
            report.duplicates,
            report.unexpected,
            report.bad_rows,
            report.foreign_records,
            report.altered_outputs
        );
    }
    if !report.ok() {
        return Err(exit_with(status::EXIT_MISMATCH, "verification failed: outputs do not match inputs one to one"));
    }
    Ok(())
}

async fn cmd_watch(a: WatchArgs) -> Result<()> {
    let file = a.rules.display().to_string();
    let text = std::fs::read_to_string(&a.rules).with_context(|| format!("--rules {file}"))?;
    let rules = trigger::Rules::parse(&file, &text)?;
    let watcher = trigger::Watcher {
        events: queue::open(&a.events_queue)?,
        work: queue::open(&a.queue)?,
        rules,
        models: Arc::new(RuntimeModels),
        metrics: Default::default(),
        poll_wait: a.poll_wait.min(queue::MAX_WAIT),
        visibility: a.visibility_timeout,
    };
    hourglass_worker::runtime::environment()?;
    let _metrics =
        serve_metrics(a.metrics_addr, |r| watcher.metrics.register(r), Arc::new(hourglass_core::metrics::Up)).await?;
    let stop = CancellationToken::new();
    tokio::spawn(stop_on_signal(stop.clone()));
    watcher.run(stop).await?;
    Ok(())
}

async fn cmd_gen_data(a: GenDataArgs) -> Result<()> {
    let dir = BlobUrl::parse(&a.output)?.as_prefix();
    let store = hourglass_core::store::open(&dir)?;
    let spec = synth::SynthSpec { rows: a.rows, files: a.files, format: a.format.into(), seed: a.seed };
    let files = synth::generate(store.as_ref(), &dir, &spec).await?;
    println!("wrote {} rows in {} files under {dir}", a.rows, files.len());
    Ok(())
}

async fn cmd_queue(c: QueueCommand) -> Result<()> {
    match c {
        QueueCommand::Create(a) => {
            let options =
                queue::CreateOptions { visibility_timeout: a.visibility_timeout, max_receives: a.max_attempts + 2 };
            println!("{}", queue::SqsQueue::create(&a.name, &options).await?);
        }
    }
    Ok(())
}

fn cmd_iam_policy(a: IamPolicyArgs) -> Result<()> {
    let url = |u: Option<String>| u.as_deref().map(BlobUrl::parse).transpose();
    let targets = hourglass_core::iam::Targets {
        input: url(a.input)?,
        output: url(a.output)?.map(|u| u.as_prefix()),
        model: url(a.model)?,
        queue: a.queue,
        dlq: a.dlq,
        events_queue: a.events_queue,
        region: a.region,
    };
    println!("{}", hourglass_core::iam::render(hourglass_core::iam::Role::parse(&a.role)?, &targets)?);
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let quiet = matches!(cli.command, Command::Bench(_));
    telemetry::init_with_default(cli.log_format, if quiet { "warn" } else { "info" });
    if let Some(plan) = cli.inject_faults.clone() {
        tracing::warn!(?plan, "fault injection is on");
        hourglass_core::fault::install(plan);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Demo(a) => demo::run(a).await,
            Command::GenData(a) => cmd_gen_data(a).await,
            Command::Submit(a) => cmd_submit(a).await,
            Command::Worker(a) => cmd_worker(a).await,
            Command::Status(a) => cmd_status(a).await,
            Command::Verify(a) => cmd_verify(a).await,
            Command::Queue(c) => cmd_queue(c).await,
            Command::Iam(IamCommand::Policy(a)) => cmd_iam_policy(a),
            Command::Watch(a) => cmd_watch(a).await,
            Command::Scaler(a) => scaler_cmd::run(*a).await,
            Command::Bench(a) => bench::run(*a).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<ExitWith>() {
            Some(ExitWith { code, message }) => {
                if let Some(m) = message {
                    eprintln!("error: {m}");
                }
                ExitCode::from(*code)
            }
            None => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}
