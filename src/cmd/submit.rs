//! `hourglass submit`: plan a job, check its inputs against the model,
//! enqueue its shards; with `--wait`, follow it to its end.

use super::{DEFAULT_QUEUE, FormatArg, exit_with, finished, load_model};
use anyhow::Result;
use clap::Args;
use hourglass_coordinator::{status, submit};
use hourglass_core::ledger::JobSpec;
use hourglass_core::units::parse_bytes;
use hourglass_core::{BlobUrl, JobId, queue, schedule};
use std::time::Duration;

#[derive(Args)]
pub struct SubmitArgs {
    /// Register the job in this jobs index (a store prefix, e.g.
    /// s3://ops/hourglass/jobs/) so a scaler given the same --jobs-index
    /// follows it with every other job on the queue.
    #[arg(long, env = "HOURGLASS_JOBS_INDEX")]
    jobs_index: Option<String>,
    /// Input file or prefix (directory) of .csv / .parquet files. May hold
    /// `{date}` (the run date, 2026-11-22) or `{date:%Y%m%d}`, as may
    /// --model, --output and --job-id.
    #[arg(long, env = "HOURGLASS_INPUT")]
    input: String,
    /// The ONNX model: a file or URL, or a registry model `ROOT/NAME@ALIAS`
    /// or `ROOT/NAME/VERSION` (resolved once: the job pins the version).
    #[arg(long, env = "HOURGLASS_MODEL")]
    model: String,
    /// Output prefix: part-<shard>.parquet (.csv, .jsonl) files and the job
    /// ledger go here.
    #[arg(long, env = "HOURGLASS_OUTPUT")]
    output: String,
    /// Queue URL.
    #[arg(long, default_value = DEFAULT_QUEUE, env = "HOURGLASS_QUEUE")]
    queue: String,
    /// When the job must be done: `+1h` (from now), a time of day (`06:00`:
    /// the next one in --tz) or an RFC 3339 time (without an offset: in
    /// --tz). The same forms as the scaler's --deadline.
    #[arg(long, env = "HOURGLASS_DEADLINE")]
    deadline: Option<String>,
    /// The run date `{date}` stands for: today (in --tz), yesterday, today-N
    /// or YYYY-MM-DD (to re-run or backfill a night).
    #[arg(long, default_value = "today", env = "HOURGLASS_DATE")]
    date: String,
    /// Time zone of --date and --deadline (IANA name).
    #[arg(long, default_value = "UTC", env = "HOURGLASS_TZ")]
    tz: String,
    /// Input format, when file names do not say it.
    #[arg(long, env = "HOURGLASS_FORMAT")]
    format: Option<FormatArg>,
    /// Column that identifies rows; passed through to the outputs.
    #[arg(long, default_value = "id", env = "HOURGLASS_ID_COLUMN")]
    id_column: String,
    /// Target input bytes per shard (e.g. 64MiB). Default 64 MiB: about
    /// 0.4 M CTR rows, a few seconds of work, so a lost shard costs little.
    #[arg(long, default_value = "64MiB", value_parser = parse_bytes, env = "HOURGLASS_SHARD_SIZE")]
    shard_size: u64,
    /// Malformed rows a shard may skip (they are written to
    /// _hourglass/bad/<shard>.csv); one more fails the shard.
    #[arg(long, default_value_t = 0, env = "HOURGLASS_MAX_BAD_ROWS")]
    max_bad_rows: u64,
    /// Job id (e.g. `ctr-{date}`); by default derived from the inputs, model
    /// and options, so submitting the same job again resumes it.
    #[arg(long, env = "HOURGLASS_JOB_ID")]
    job_id: Option<String>,
    /// Longest CSV line (e.g. 4MiB). A cut point with no line end within
    /// it, or a longer line, is an error naming the file and line.
    #[arg(long, default_value = "1MiB", value_parser = parse_bytes, env = "HOURGLASS_MAX_LINE_BYTES")]
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
    #[command(flatten)]
    shape: ShapeArgs,
}

/// How CSV inputs are read and what outputs hold (`submit`, `watch`).
#[derive(Args, Clone, Debug)]
pub struct ShapeArgs {
    /// Field delimiter of CSV inputs: one character, or `tab` for TSV.
    /// Default: a comma, or a tab for files named .tsv (.tsv.gz, .tsv.zst).
    #[arg(long, value_parser = hourglass_core::task::parse_delimiter, env = "HOURGLASS_DELIMITER")]
    delimiter: Option<char>,
    /// The CSV files have no header line. Their columns are --columns, or
    /// else the id column followed by the model's feature names.
    #[arg(long, env = "HOURGLASS_NO_HEADER")]
    no_header: bool,
    /// Column names of header-less CSV files, in file order (comma-separated;
    /// with --no-header).
    #[arg(long, value_delimiter = ',', requires = "no_header", env = "HOURGLASS_COLUMNS")]
    columns: Vec<String>,
    /// Input columns written to the output next to the id, in input order
    /// (comma-separated), so predictions need no join back to their rows.
    #[arg(long, value_delimiter = ',', conflicts_with = "keep_all", env = "HOURGLASS_KEEP_COLUMNS")]
    keep_columns: Vec<String>,
    /// Write every input column to the output (the id once).
    #[arg(long, env = "HOURGLASS_KEEP_ALL")]
    keep_all: bool,
    /// Output encoding: parquet, csv or jsonl.
    #[arg(long, default_value = "parquet", env = "HOURGLASS_OUTPUT_FORMAT")]
    output_format: hourglass_core::task::OutputFormat,
}

impl ShapeArgs {
    /// Puts these options into `spec`. Header-less files without --columns
    /// are the id column, then the model's features in input order.
    pub fn apply(&self, spec: &mut JobSpec, signature: &hourglass_core::model::ModelSignature) -> Result<()> {
        let mut columns = self.columns.clone();
        if self.no_header && columns.is_empty() {
            columns.push(spec.id_column.clone());
            for input in &signature.inputs {
                match signature.feature_names.get(&input.name) {
                    Some(names) => columns.extend(names.iter().cloned()),
                    None => anyhow::bail!(
                        "--no-header: the model names no features for input {:?}; give the files' columns with --columns",
                        input.name
                    ),
                }
            }
        }
        spec.csv = hourglass_core::ledger::CsvOptions { delimiter: self.delimiter, no_header: self.no_header, columns };
        spec.keep_columns = self.keep_columns.iter().map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect();
        spec.keep_all = self.keep_all;
        spec.output_format = self.output_format;
        Ok(())
    }
}

pub async fn run(a: SubmitArgs) -> Result<()> {
    let tz = schedule::time_zone(&a.tz)?;
    let now = jiff::Timestamp::now();
    let date = schedule::run_date(&a.date, now, &tz)?;
    let expand = |flag: &str, v: &str| schedule::expand(flag, v, date);
    let (model, model_registry) = hourglass_core::registry::resolve_ref(&expand("--model", &a.model)?).await?;
    let runtime = load_model(&model, 1).await?;
    if let Some(pin) = &model_registry {
        tracing::info!(name = %pin.name, version = pin.version, alias = ?pin.alias, "model resolved from the registry");
    }
    let deadline_unix_ms = match a.deadline.as_deref() {
        Some(d) => Some(schedule::parse_instant("--deadline", d, now, &tz)?.as_millisecond().max(0) as u64),
        None => None,
    };
    let mut spec = JobSpec {
        input: BlobUrl::parse(&expand("--input", &a.input)?)?,
        model: model.clone(),
        output: BlobUrl::parse(&expand("--output", &a.output)?)?.as_prefix(),
        format: a.format.map(Into::into),
        id_column: a.id_column,
        shard_bytes: a.shard_size,
        max_bad_rows: a.max_bad_rows,
        max_line_bytes: a.max_line_bytes,
        deadline_unix_ms,
        csv: Default::default(),
        keep_columns: Vec::new(),
        keep_all: false,
        output_format: Default::default(),
    };
    a.shape.apply(&mut spec, runtime.signature())?;
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
        model_registry,
        jobs_index: a.jobs_index.as_deref().map(BlobUrl::parse).transpose()?,
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
    wait_for_end(&BlobUrl::parse(&report.output)?, queue.as_ref(), a.interval).await
}

/// `--wait`: reads the job's ledger every `interval`, a progress line each
/// time, until it ends; prints its status and exits like `status`.
pub async fn wait_for_end(
    output: &BlobUrl,
    queue: &dyn hourglass_core::queue::Queue,
    interval: Duration,
) -> Result<()> {
    loop {
        let s = status::status(output, Some(queue)).await.map_err(|e| exit_with(status::EXIT_UNREADABLE, e))?;
        eprintln!("{}", s.progress_line());
        if s.state != status::JobState::Running {
            print!("{}", s.render());
            return finished(s.state);
        }
        tokio::time::sleep(interval).await;
    }
}
