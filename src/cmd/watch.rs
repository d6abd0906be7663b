//! `hourglass watch`: start jobs when files land in S3.

use super::{DEFAULT_QUEUE, load_model, serve_metrics, stop_on_signal};
use anyhow::{Context, Result};
use clap::Args;
use hourglass_coordinator::trigger;
use hourglass_core::model::ModelSignature;
use hourglass_core::{BlobUrl, queue};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Args)]
pub struct WatchArgs {
    /// Register each job it submits in this jobs index (see `submit --jobs-index`).
    #[arg(long, env = "HOURGLASS_JOBS_INDEX")]
    jobs_index: Option<String>,
    /// The queue the bucket's event notifications go to (SQS URL).
    #[arg(long, env = "HOURGLASS_EVENTS_QUEUE")]
    events_queue: String,
    /// Rules: which objects start which jobs (YAML; see deploy/helm/hourglass/README.md).
    #[arg(long, env = "HOURGLASS_RULES")]
    rules: std::path::PathBuf,
    /// The work queue jobs' shards go to.
    #[arg(long, default_value = DEFAULT_QUEUE, env = "HOURGLASS_QUEUE")]
    queue: String,
    /// Long-poll wait per receive.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration, env = "HOURGLASS_POLL_WAIT")]
    poll_wait: Duration,
    /// How long an event is hidden while its job is planned (and before a retry).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, env = "HOURGLASS_VISIBILITY_TIMEOUT")]
    visibility_timeout: Duration,
    /// Serve Prometheus metrics and /healthz here (e.g. 0.0.0.0:9100).
    #[arg(long, env = "HOURGLASS_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
}

/// Reads models for `watch` through the worker runtime.
struct RuntimeModels;

#[async_trait::async_trait]
impl trigger::ModelReader for RuntimeModels {
    async fn read(&self, model: &BlobUrl) -> hourglass_coordinator::Result<(ModelSignature, String)> {
        let runtime = load_model(model, 1).await.map_err(hourglass_coordinator::Error::model)?;
        Ok((runtime.signature().clone(), runtime.sha256().to_string()))
    }
}

pub async fn run(a: WatchArgs) -> Result<()> {
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
        jobs_index: a.jobs_index.as_deref().map(BlobUrl::parse).transpose()?,
    };
    hourglass_runtime::environment()?;
    let _metrics =
        serve_metrics(a.metrics_addr, |r| watcher.metrics.register(r), Arc::new(hourglass_core::metrics::Up)).await?;
    let stop = CancellationToken::new();
    tokio::spawn(stop_on_signal(stop.clone()));
    watcher.run(stop).await?;
    Ok(())
}
