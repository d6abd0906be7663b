//! `hourglass bench serve`: `hourglass serve` under a closed-loop load
//! generator over loopback (HTTP and gRPC), concurrency × request size,
//! dynamic batching on and off, beside raw ONNX Runtime on the same
//! threads. The measurement is `hourglass_bench::serve_load`.

use anyhow::{Result, anyhow, bail};
use clap::Args;
use hourglass_bench::serve_load::{self as load, BenchSpec, Protocol};
use hourglass_core::BlobUrl;
use hourglass_runtime::RuntimeOptions;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
pub struct BenchServeArgs {
    #[arg(long, default_value = "models/ctr_gbdt.onnx")]
    model: String,
    /// Inference threads (the server's CPU pool and ONNX Runtime sessions;
    /// the raw figure uses as many).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Virtual users, each on its own connection (comma-separated).
    #[arg(long, default_value = "1,16,64,256", value_delimiter = ',')]
    concurrency: Vec<usize>,
    /// Rows per request (comma-separated).
    #[arg(long, default_value = "1,256", value_delimiter = ',')]
    rows: Vec<usize>,
    /// http, grpc or both (comma-separated).
    #[arg(long, default_value = "http,grpc", value_delimiter = ',')]
    protocol: Vec<String>,
    /// Dynamic batching's limits when on (off is max batch 1, no delay).
    #[arg(long, default_value_t = 256)]
    max_batch_size: usize,
    #[arg(long, default_value = "1ms", value_parser = humantime::parse_duration)]
    max_queue_delay: Duration,
    /// Measured time per cell, after `--warmup`.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    duration: Duration,
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    warmup: Duration,
    #[arg(long)]
    json: bool,
}

pub async fn run(a: BenchServeArgs) -> Result<()> {
    if a.threads == 0 || a.concurrency.contains(&0) || a.rows.contains(&0) {
        bail!("--threads, --concurrency and --rows must be at least 1");
    }
    let protocols = a
        .protocol
        .iter()
        .map(|p| match p.as_str() {
            "http" => Ok(Protocol::Http),
            "grpc" => Ok(Protocol::Grpc),
            other => Err(anyhow!("--protocol {other:?}: use http or grpc")),
        })
        .collect::<Result<Vec<_>>>()?;
    hourglass_runtime::environment()?;
    let url = BlobUrl::parse(&a.model)?;
    let name = url.key().rsplit('/').next().unwrap_or("model").trim_end_matches(".onnx").to_string();
    let runtime =
        Arc::new(hourglass_serve::load(&url, RuntimeOptions { sessions: a.threads, ..Default::default() }).await?);
    let spec = BenchSpec {
        model_name: name,
        threads: a.threads,
        concurrency: a.concurrency,
        rows: a.rows,
        protocols,
        max_batch_size: a.max_batch_size.max(1),
        max_queue_delay: a.max_queue_delay,
        warmup: a.warmup,
        duration: a.duration,
    };
    eprintln!(
        "measuring {} cells of {:?} each…",
        spec.concurrency.len() * spec.rows.len() * spec.protocols.len() * 2,
        spec.duration + spec.warmup
    );
    let report = load::bench(runtime, &spec).await.map_err(|e| anyhow!(e))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(())
}
