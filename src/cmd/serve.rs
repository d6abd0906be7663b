//! `hourglass serve`: online inference over the KServe v2 / Open Inference
//! Protocol (HTTP), on the worker's model runtime and CPU pool.

use super::stop_signal;
use anyhow::{Context, Result};
use clap::Args;
use hourglass_core::store;
use hourglass_worker::pool::CpuPool;
use hourglass_worker::serve::{ServeConfig, Server};
use hourglass_worker::{ModelRuntime, RuntimeOptions};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Args)]
pub struct ServeArgs {
    /// A model to serve (repeatable): a file or URL, served under its file
    /// stem (`models/ctr_gbdt.onnx` → `ctr_gbdt`), or a registry model
    /// `ROOT/NAME@ALIAS` / `ROOT/NAME/VERSION`, served under NAME.
    #[arg(long = "model", required = true, env = "HOURGLASS_SERVE_MODELS", value_delimiter = ',')]
    models: Vec<String>,
    /// Where to listen for HTTP (KServe v2 REST, /metrics).
    #[arg(long, default_value = "0.0.0.0:8000", env = "HOURGLASS_HTTP_ADDR")]
    http_addr: SocketAddr,
    /// Most rows in one ONNX Runtime call; 1 turns dynamic batching off.
    #[arg(long, default_value_t = 256, env = "HOURGLASS_MAX_BATCH_SIZE")]
    max_batch_size: usize,
    /// How long a request may wait for others to share its batch.
    #[arg(long, default_value = "1ms", value_parser = humantime::parse_duration, env = "HOURGLASS_MAX_QUEUE_DELAY")]
    max_queue_delay: Duration,
    /// Requests waiting per model before new ones get 429.
    #[arg(long, default_value_t = 1024, env = "HOURGLASS_QUEUE_LIMIT")]
    queue_limit: usize,
    /// CPU threads for inference (batches run at once, one session each);
    /// default: the cores.
    #[arg(long, env = "HOURGLASS_THREADS")]
    threads: Option<usize>,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, env = "HOURGLASS_REQUEST_TIMEOUT")]
    request_timeout: Duration,
}

pub async fn run(a: ServeArgs) -> Result<()> {
    let threads = a.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    hourglass_worker::runtime::environment()?;
    let mut models = Vec::new();
    for reference in &a.models {
        let (url, pin) = hourglass_core::registry::resolve_ref(reference).await?;
        let (name, version) = match &pin {
            Some(p) => (p.name.clone(), p.version.to_string()),
            None => {
                let stem = url.key().rsplit('/').next().unwrap_or("model").trim_end_matches(".onnx").to_string();
                (stem, "1".to_string())
            }
        };
        let bytes = store::open(&url)?.get(url.key()).await.with_context(|| format!("model {url}: cannot read"))?;
        let options = RuntimeOptions { intra_threads: 1, sessions: threads };
        let source = url.to_string();
        let runtime = tokio::task::spawn_blocking(move || {
            let r = ModelRuntime::load(&bytes, &source, options)?;
            r.check_batch_scoring()?;
            Ok::<_, hourglass_worker::Error>(r)
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
        tracing::info!(model = %name, version = %version, sha256 = runtime.sha256(), source = %url, "model loaded");
        models.push((name, version, Arc::new(runtime)));
    }
    let config = ServeConfig {
        max_batch_size: a.max_batch_size.max(1),
        max_queue_delay: if a.max_batch_size <= 1 { Duration::ZERO } else { a.max_queue_delay },
        queue_limit: a.queue_limit,
        instances: threads,
        request_timeout: a.request_timeout,
    };
    let server = Server::new(models, CpuPool::new(threads), config);
    let mut registry = hourglass_core::metrics::prometheus_client::registry::Registry::default();
    hourglass_core::metrics::register_build_info(&mut registry, &crate::version::info());
    server.metrics.register(&mut registry);
    let stop = CancellationToken::new();
    let (bound, task) = server
        .serve(a.http_addr, Arc::new(registry), stop.clone())
        .await
        .with_context(|| format!("--http-addr {}", a.http_addr))?;
    tracing::info!(%bound, "serving");
    stop_signal().await;
    stop.cancel();
    task.await.context("the server task")?;
    tracing::info!("stopped: every in-flight request answered");
    Ok(())
}
