//! `hourglass train submit`: read a training spec (YAML or JSON), check its
//! dataset, enqueue one trial per grid point on the batch queue; with
//! `--wait`, follow it to its end.

use super::DEFAULT_QUEUE;
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use hourglass_coordinator::train;
use hourglass_core::train::TrainSpec;
use hourglass_core::{BlobUrl, queue, schedule};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Subcommand)]
pub enum TrainCommand {
    /// Plan a training job from a spec and enqueue its trials.
    Submit(TrainSubmitArgs),
}

#[derive(Args)]
pub struct TrainSubmitArgs {
    /// The training spec, YAML or JSON (see docs/training.md).
    #[arg(long)]
    spec: PathBuf,
    /// Queue URL: the same queue batch jobs use.
    #[arg(long, default_value = DEFAULT_QUEUE, env = "HOURGLASS_QUEUE")]
    queue: String,
    /// Overrides the spec's `promote_if` (`auc > champion`, `logloss < champion`,
    /// `auc >= 0.75`).
    #[arg(long)]
    promote_if: Option<String>,
    /// Overrides the spec's `max_train_time`: a trainer running longer is
    /// stopped (SIGTERM, then SIGKILL) and its trial fails.
    #[arg(long)]
    max_train_time: Option<String>,
    /// When the job must be done (`+1h`, `06:00`, RFC 3339), for the scaler.
    #[arg(long, env = "HOURGLASS_DEADLINE")]
    deadline: Option<String>,
    /// Time zone of --deadline (IANA name).
    #[arg(long, default_value = "UTC", env = "HOURGLASS_TZ")]
    tz: String,
    /// If the output prefix holds another job, delete its ledger first.
    #[arg(long)]
    replace: bool,
    /// Wait until every trial is done and the promotion decided; exit like
    /// `hourglass status`.
    #[arg(long)]
    wait: bool,
    /// How often --wait reads the ledger.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(c: TrainCommand) -> Result<()> {
    match c {
        TrainCommand::Submit(a) => submit(a).await,
    }
}

async fn submit(a: TrainSubmitArgs) -> Result<()> {
    let text = std::fs::read_to_string(&a.spec).with_context(|| format!("--spec {}", a.spec.display()))?;
    // YAML is a superset of JSON: one parser reads both.
    let mut value: serde_json::Value =
        serde_yaml_ng::from_str(&text).with_context(|| format!("--spec {}: not YAML or JSON", a.spec.display()))?;
    // Locations may be written as plain or relative paths, as on the
    // command line; the record keeps them as absolute URLs.
    for path in ["/registry", "/output", "/dataset/train", "/dataset/holdout"] {
        if let Some(v) = value.pointer_mut(path)
            && let Some(s) = v.as_str()
        {
            let url = BlobUrl::parse(s).with_context(|| format!("--spec {}: {}", a.spec.display(), &path[1..]))?;
            *v = url.to_string().into();
        }
    }
    let mut spec: TrainSpec =
        serde_json::from_value(value).with_context(|| format!("--spec {}: not a training spec", a.spec.display()))?;
    if let Some(rule) = a.promote_if {
        spec.promote_if = Some(rule);
    }
    if let Some(limit) = a.max_train_time {
        spec.max_train_time = limit;
    }
    if let Some(d) = a.deadline.as_deref() {
        let tz = schedule::time_zone(&a.tz)?;
        let at = schedule::parse_instant("--deadline", d, jiff::Timestamp::now(), &tz)?;
        spec.deadline_unix_ms = Some(at.as_millisecond().max(0) as u64);
    }
    let queue = queue::open(&a.queue)?;
    let report = train::submit_train(spec, queue.as_ref(), a.replace).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "training job {} {}: {} trials, {} enqueued, {} already done\ndata   {} features, ~{} training rows, ~{} holdout rows\noutput {}\nqueue  {}",
            report.job,
            if report.resumed { "resumed" } else { "submitted" },
            report.trials,
            report.enqueued,
            report.already_done,
            report.features,
            report.train_rows,
            report.holdout_rows,
            report.output,
            queue.name()
        );
    }
    if !a.wait {
        return Ok(());
    }
    super::submit::wait_for_end(&BlobUrl::parse(&report.output)?, queue.as_ref(), a.interval).await
}
