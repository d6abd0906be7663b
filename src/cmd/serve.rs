//! `hourglass serve`: online inference over the KServe v2 / Open Inference
//! Protocol (HTTP and gRPC), on the worker's model runtime and CPU pool.

use super::stop_signal;
use anyhow::{Context, Result};
use clap::Args;
use hourglass_runtime::RuntimeOptions;
use hourglass_serve::{self as serve, Model, ServeConfig, Server};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Args)]
pub struct ServeArgs {
    /// A model to serve (repeatable): a file or URL, served under its file
    /// stem (`models/ctr_gbdt.onnx` → `ctr_gbdt`), or a registry model
    /// `ROOT/NAME@ALIAS` / `ROOT/NAME/VERSION`, served under NAME. An
    /// alias is followed: when it moves, the new version is loaded,
    /// warmed and switched to without failing a request.
    #[arg(long = "model", required = true, env = "HOURGLASS_SERVE_MODELS", value_delimiter = ',')]
    models: Vec<String>,
    /// Where to listen for HTTP (KServe v2 REST, /metrics).
    #[arg(long, default_value = "0.0.0.0:8000", env = "HOURGLASS_HTTP_ADDR")]
    http_addr: SocketAddr,
    /// Where to listen for gRPC (KServe v2 GRPCInferenceService); `off`
    /// serves HTTP only.
    #[arg(long, default_value = "0.0.0.0:8001", env = "HOURGLASS_GRPC_ADDR", value_parser = parse_grpc_addr)]
    grpc_addr: GrpcAddr,
    /// Most rows in one ONNX Runtime call; 1 turns dynamic batching off.
    /// Default: by device, 256 on the CPU, 4096 on a GPU.
    #[arg(long, env = "HOURGLASS_MAX_BATCH_SIZE")]
    max_batch_size: Option<usize>,
    /// The most a forming batch waits for requests already arriving (being
    /// received or parsed), from its first request's queueing (`500us`,
    /// `2ms`); a request alone does not wait.
    #[arg(long, default_value = "1ms", value_parser = humantime::parse_duration, env = "HOURGLASS_MAX_QUEUE_DELAY")]
    max_queue_delay: Duration,
    /// Batch sizes (rows) sent without waiting out the delay when nothing
    /// else is waiting (repeatable or comma-separated), as Triton's
    /// `preferred_batch_size`.
    #[arg(long = "preferred-batch-size", env = "HOURGLASS_PREFERRED_BATCH_SIZES", value_delimiter = ',')]
    preferred_batch_sizes: Vec<usize>,
    /// Requests waiting per model before new ones get 429 /
    /// RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = 1024, env = "HOURGLASS_QUEUE_LIMIT")]
    queue_limit: usize,
    /// CPU threads for inference (batches run at once, one session each);
    /// default: the cores (HOURGLASS_SERVE_THREADS: HOURGLASS_THREADS is
    /// the worker's per-shard setting).
    #[arg(long, env = "HOURGLASS_SERVE_THREADS")]
    threads: Option<usize>,
    /// A request not answered in this long gets 504 / DEADLINE_EXCEEDED.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, env = "HOURGLASS_REQUEST_TIMEOUT")]
    request_timeout: Duration,
    /// Bytes of requests in flight (received, decoded, queued, being
    /// scored) before new ones get 429 / RESOURCE_EXHAUSTED, so that no
    /// mix of requests can grow the server into an OOM kill. Default: a
    /// quarter of the memory limit (cgroup, else the machine's), at least
    /// 128 MiB. Accepts suffixes: 512MiB, 2GiB.
    #[arg(long, env = "HOURGLASS_MAX_INFLIGHT_BYTES", value_parser = parse_bytes)]
    max_inflight_bytes: Option<usize>,
    /// How often a model served from a registry alias checks the alias.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration, env = "HOURGLASS_FOLLOW_INTERVAL")]
    follow_interval: Duration,
    #[command(flatten)]
    device: super::DeviceArgs,
}

#[derive(Clone, Copy)]
pub struct GrpcAddr(Option<SocketAddr>);

fn parse_grpc_addr(s: &str) -> Result<GrpcAddr, String> {
    if s == "off" {
        return Ok(GrpcAddr(None));
    }
    s.parse().map(|a| GrpcAddr(Some(a))).map_err(|e| format!("{s:?}: {e} (HOST:PORT or off)"))
}

/// A byte count: a number with an optional KiB/MiB/GiB (or K/M/G) suffix.
fn parse_bytes(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: usize = digits.parse().map_err(|_| format!("{s:?}: a byte count such as 536870912, 512MiB or 2GiB"))?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KiB" | "k" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        other => return Err(format!("{s:?}: unknown unit {other:?} (B, KiB, MiB, GiB)")),
    };
    n.checked_mul(1 << shift).filter(|n| *n > 0).ok_or_else(|| format!("{s:?}: out of range"))
}

pub async fn run(a: ServeArgs) -> Result<()> {
    let threads = a.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    // Before any model: ONNX Runtime loads and the device runs the probe
    // model, or serve exits saying why.
    let device = a.device.select().await?;
    let options = RuntimeOptions::new(1, threads, &device);
    let max_batch_size = a.max_batch_size.unwrap_or(device.device.default_serve_batch_size()).max(1);
    let mut models = Vec::new();
    let mut follows = Vec::new();
    for reference in &a.models {
        let (url, pin) = hourglass_core::registry::resolve_ref(reference).await?;
        let (name, version) = match &pin {
            Some(p) => (p.name.clone(), p.version.to_string()),
            None => {
                let stem = url.key().rsplit('/').next().unwrap_or("model").trim_end_matches(".onnx").to_string();
                (stem, "1".to_string())
            }
        };
        if models.iter().any(|m: &Model| m.name == name) {
            anyhow::bail!("--model {reference}: another --model is already served as {name:?}");
        }
        let runtime = Arc::new(serve::load(&url, options.clone()).await.with_context(|| format!("model {reference}"))?);
        serve::warm(&runtime, max_batch_size).await.with_context(|| format!("warming model {reference}"))?;
        tracing::info!(model = %name, version = %version, sha256 = runtime.sha256(), device = %runtime.device(), source = %url, "model loaded and warmed");
        if pin.as_ref().is_some_and(|p| p.alias.is_some()) {
            follows.push((name.clone(), reference.clone()));
        }
        models.push(Model { name, version, runtime });
    }
    let config = ServeConfig {
        max_batch_size,
        max_queue_delay: if max_batch_size <= 1 { Duration::ZERO } else { a.max_queue_delay },
        preferred_batch_sizes: a.preferred_batch_sizes.clone(),
        queue_limit: a.queue_limit,
        instances: threads,
        request_timeout: a.request_timeout,
        max_inflight_bytes: a.max_inflight_bytes.unwrap_or_else(serve::limits::default_inflight_bytes),
    };
    let server = Server::new(models, config);
    let mut registry = hourglass_core::metrics::prometheus_client::registry::Registry::default();
    hourglass_core::metrics::register_build_info(&mut registry, &crate::version::info());
    server.metrics.register(&mut registry);
    let stop = CancellationToken::new();
    for (name, reference) in follows {
        tokio::spawn(server.clone().follow(name, reference, options.clone(), a.follow_interval, stop.clone()));
    }
    let (bound, http) = serve::http::serve(server.clone(), a.http_addr, Arc::new(registry), stop.clone())
        .await
        .with_context(|| format!("--http-addr {}", a.http_addr))?;
    tracing::info!(%bound, max_inflight_bytes = server.inflight().limit(), "serving HTTP");
    let grpc = match a.grpc_addr.0 {
        Some(addr) => {
            let (bound, task) = serve::grpc::serve(server.clone(), addr, stop.clone())
                .await
                .with_context(|| format!("--grpc-addr {addr}"))?;
            tracing::info!(%bound, "serving gRPC");
            Some(task)
        }
        None => None,
    };
    stop_signal().await;
    server.set_not_ready();
    stop.cancel();
    http.await.context("the HTTP server task")?;
    if let Some(grpc) = grpc {
        grpc.await.context("the gRPC server task")?;
    }
    tracing::info!("stopped: every in-flight request answered");
    Ok(())
}
