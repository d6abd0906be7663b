//! The `hourglass` binary: argument parsing and wiring only. Each command
//! lives in its own module under `cmd/`, turns its flags into the library
//! crates' configs and prints their results; this file holds the global
//! flags, the dispatch and the mapping of errors to exit codes.

mod cmd;
mod version;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use hourglass_core::telemetry::{self, LogFormat};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "hourglass",
    about = "Deadline-driven batch inference: score huge batches of rows with ONNX models before a deadline",
    after_help = "Exit codes: 0 ok, 1 error, 2 usage, 3 job failed, 4 job running, 5 ledger unreadable, 6 verify mismatch."
)]
struct Cli {
    /// Log format on stderr: text or json.
    #[arg(long, global = true, default_value = "text", env = "HOURGLASS_LOG_FORMAT")]
    log_format: LogFormat,
    /// Log level or filter (`debug`, `hourglass_worker=debug,info`); wins
    /// over -v/-q. RUST_LOG is read too.
    #[arg(long, global = true, env = "HOURGLASS_LOG")]
    log_level: Option<String>,
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    verbose: u8,
    /// Less log output (-q warnings only, -qq errors only).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    quiet: u8,
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
    Demo(cmd::demo::DemoArgs),
    /// Write synthetic CTR feature files (id + 39 features), deterministic by seed.
    GenData(cmd::gen_data::GenDataArgs),
    /// Plan a job, check its inputs against the model, enqueue its shards.
    Submit(Box<cmd::submit::SubmitArgs>),
    /// Lease shards from a queue and score them until stopped (SIGTERM drains).
    Worker(Box<cmd::worker::WorkerArgs>),
    /// Serve models online: KServe v2 / Open Inference Protocol over HTTP and
    /// gRPC, with dynamic batching, following registry aliases.
    Serve(Box<cmd::serve::ServeArgs>),
    /// Show a job's progress from its ledger.
    Status(cmd::status::StatusArgs),
    /// Check a finished job: every input row has exactly one output row.
    Verify(cmd::verify::VerifyArgs),
    /// Measure raw ONNX Runtime, decode and the full pipeline on the same data and threads.
    Bench(Box<cmd::bench::BenchArgs>),
    /// Scale the worker Deployment to meet the job's deadline (or `scaler simulate`).
    Scaler(Box<cmd::scaler::ScalerArgs>),
    /// Start jobs when files land in S3: read S3 event notifications from a
    /// queue, match them against rules, submit (idempotently).
    Watch(cmd::watch::WatchArgs),
    /// Training jobs on the worker fleet: sweeps whose trials register
    /// validated models in the registry.
    #[command(subcommand)]
    Train(cmd::train::TrainCommand),
    /// Manage SQS queues.
    #[command(subcommand)]
    Queue(cmd::queue::QueueCommand),
    /// The model registry: versions, aliases, promotion and rollback.
    #[command(subcommand)]
    Model(cmd::model::ModelCommand),
    /// Least-privilege IAM policies for each component.
    #[command(subcommand)]
    Iam(cmd::iam::IamCommand),
    /// Check this machine: ONNX Runtime, the venv, AWS settings, and whether
    /// a queue and a store are reachable.
    Doctor(cmd::doctor::DoctorArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(cmd::completions::CompletionsArgs),
}

/// The default log level for a command, before -v/-q: `bench` and `demo`
/// keep per-shard and planning lines out of their reports (the demo's
/// workers log to files).
fn log_filter(cli: &Cli) -> String {
    if let Some(level) = &cli.log_level {
        return level.clone();
    }
    const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];
    let base: i32 =
        if matches!(cli.command, Command::Bench(_) | Command::Demo(_) | Command::Completions(_) | Command::Doctor(_)) {
            1
        } else {
            2
        };
    let at = (base + i32::from(cli.verbose) - i32::from(cli.quiet)).clamp(0, 4);
    LEVELS[at as usize].to_string()
}

fn main() -> ExitCode {
    // Finding ONNX Runtime costs a library load: only for `--version`.
    let mut command = Cli::command().version(version::short());
    if std::env::args_os().any(|a| a == "--version") {
        command = command.long_version(version::long());
    }
    let matches = command.get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if let Err(e) = telemetry::init_with_default(cli.log_format, &log_filter(&cli), cli.log_level.is_some()) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
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
            Command::Demo(a) => cmd::demo::run(a).await,
            Command::GenData(a) => cmd::gen_data::run(a).await,
            Command::Submit(a) => cmd::submit::run(*a).await,
            Command::Worker(a) => cmd::worker::run(*a).await,
            Command::Status(a) => cmd::status::run(a).await,
            Command::Verify(a) => cmd::verify::run(a).await,
            Command::Queue(c) => cmd::queue::run(c).await,
            Command::Train(c) => cmd::train::run(c).await,
            Command::Iam(c) => cmd::iam::run(c),
            Command::Serve(a) => cmd::serve::run(*a).await,
            Command::Model(c) => cmd::model::run(c).await,
            Command::Watch(a) => cmd::watch::run(a).await,
            Command::Scaler(a) => cmd::scaler::run(*a).await,
            Command::Bench(a) => cmd::bench::run(*a).await,
            Command::Doctor(a) => cmd::doctor::run(a).await,
            Command::Completions(a) => cmd::completions::run(a, Cli::command()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<cmd::ExitWith>() {
            Some(cmd::ExitWith { code, message }) => {
                if let Some(m) = message {
                    eprintln!("error: {m}");
                }
                ExitCode::from(*code)
            }
            None => {
                eprintln!("error: {}", hourglass_core::error::chain(e.as_ref()));
                ExitCode::FAILURE
            }
        },
    }
}
