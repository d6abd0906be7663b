//! A closed-loop load generator for `hourglass bench serve`: `concurrency`
//! virtual users, each on its own connection, send a request, wait for the
//! answer, send the next. Requests are the protocol's binary forms (HTTP's
//! binary tensor extension, gRPC's `raw_input_contents`), as production
//! clients such as tritonclient send them. Latencies are taken per request
//! after a warm-up; answers are checked (status, version present).

use crate::ceiling::{self, Until};
use bytes::Bytes;
use hourglass_serve::grpc::proto::{ModelInferRequest, ModelInferResponse, model_infer_request::InferInputTensor};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use prost::Message;
use serde::Serialize;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http,
    Grpc,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Http => "HTTP",
            Protocol::Grpc => "gRPC",
        })
    }
}

/// One load run's shape.
#[derive(Debug, Clone)]
pub struct Load {
    pub protocol: Protocol,
    pub addr: SocketAddr,
    pub model: String,
    /// The input's name and width (features per row).
    pub input: String,
    pub width: usize,
    pub rows: usize,
    pub concurrency: usize,
    pub warmup: Duration,
    pub duration: Duration,
}

/// What a load run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    pub requests: u64,
    pub failed: u64,
    pub requests_per_sec: f64,
    pub rows_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// The first failure's message, if any.
    pub error: Option<String>,
}

/// Runs `load` and reports.
pub async fn run(load: &Load) -> Measured {
    let start = Instant::now();
    let measure_from = start + load.warmup;
    let end = measure_from + load.duration;
    let users: Vec<_> = (0..load.concurrency)
        .map(|k| {
            let load = load.clone();
            tokio::spawn(async move { user(&load, k, measure_from, end).await })
        })
        .collect();
    let mut latencies = Vec::new();
    let (mut failed, mut error) = (0u64, None);
    for u in futures::future::join_all(users).await {
        match u {
            Ok(r) => {
                latencies.extend(r.latencies);
                failed += r.failed;
                if error.is_none() {
                    error = r.error;
                }
            }
            Err(e) => {
                failed += 1;
                error.get_or_insert(format!("a virtual user panicked: {e}"));
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1] * 1e3
    };
    let secs = load.duration.as_secs_f64();
    let requests = latencies.len() as u64;
    Measured {
        requests,
        failed,
        requests_per_sec: requests as f64 / secs,
        rows_per_sec: (requests * load.rows as u64) as f64 / secs,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        error,
    }
}

struct UserResult {
    latencies: Vec<f64>,
    failed: u64,
    error: Option<String>,
}

/// The same rows every time: the server's work does not depend on values.
fn features(rows: usize, width: usize, seed: usize) -> Vec<u8> {
    (0..rows * width).flat_map(|i| (((i * 7919 + seed * 104_729) % 1000) as f32 / 250.0 - 1.0).to_le_bytes()).collect()
}

async fn user(load: &Load, k: usize, measure_from: Instant, end: Instant) -> UserResult {
    let mut out = UserResult { latencies: Vec::new(), failed: 0, error: None };
    let data = features(load.rows, load.width, k);
    let fail = |out: &mut UserResult, e: String| {
        out.failed += 1;
        out.error.get_or_insert(e);
    };
    // One connection per virtual user, whatever the protocol.
    let stream = match tokio::net::TcpStream::connect(load.addr).await {
        Ok(s) => s,
        Err(e) => {
            fail(&mut out, format!("connect: {e}"));
            return out;
        }
    };
    let _ = stream.set_nodelay(true);
    match load.protocol {
        Protocol::Http => {
            let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
                Ok(c) => c,
                Err(e) => {
                    fail(&mut out, format!("handshake: {e}"));
                    return out;
                }
            };
            tokio::spawn(conn);
            let head = serde_json::json!({
                "inputs": [{"name": load.input, "datatype": "FP32", "shape": [load.rows, load.width],
                            "parameters": {"binary_data_size": data.len()}}],
                "parameters": {"binary_data_output": true},
            });
            let head = serde_json::to_vec(&head).expect("JSON serializes");
            let mut body = head.clone();
            body.extend(&data);
            let body = Bytes::from(body);
            let uri = format!("/v2/models/{}/infer", load.model);
            while Instant::now() < end {
                let req = hyper::Request::post(&uri)
                    .header(hyper::header::HOST, "bench")
                    .header("inference-header-content-length", head.len())
                    .header(hyper::header::CONTENT_TYPE, "application/octet-stream")
                    .body(Full::new(body.clone()))
                    .expect("a valid request");
                let sent = Instant::now();
                let result = async {
                    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
                    let status = resp.status();
                    let bytes = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
                    if !status.is_success() {
                        return Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)));
                    }
                    Ok(())
                }
                .await;
                record(&mut out, sent, measure_from, end, result);
            }
        }
        Protocol::Grpc => {
            // gRPC framed by hand on a bare HTTP/2 connection: the cheapest
            // client, so that the CPU it takes from the server is small.
            let mut builder = hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
            builder
                .initial_stream_window_size(hourglass_serve::grpc::WINDOW)
                .initial_connection_window_size(hourglass_serve::grpc::WINDOW * 4)
                .max_frame_size(hourglass_serve::grpc::FRAME);
            let (mut sender, conn) = match builder.handshake(TokioIo::new(stream)).await {
                Ok(c) => c,
                Err(e) => {
                    fail(&mut out, format!("handshake: {e}"));
                    return out;
                }
            };
            tokio::spawn(conn);
            let message = ModelInferRequest {
                model_name: load.model.clone(),
                inputs: vec![InferInputTensor {
                    name: load.input.clone(),
                    datatype: "FP32".into(),
                    shape: vec![load.rows as i64, load.width as i64],
                    ..Default::default()
                }],
                raw_input_contents: vec![bytes::Bytes::from(data)],
                ..Default::default()
            }
            .encode_to_vec();
            // The gRPC message frame: not compressed, length, message.
            let mut framed = Vec::with_capacity(5 + message.len());
            framed.push(0);
            framed.extend((message.len() as u32).to_be_bytes());
            framed.extend(message);
            let body = Bytes::from(framed);
            let uri = format!("http://{}/inference.GRPCInferenceService/ModelInfer", load.addr);
            while Instant::now() < end {
                let req = hyper::Request::post(&uri)
                    .header(hyper::header::CONTENT_TYPE, "application/grpc")
                    .header("te", "trailers")
                    .body(Full::new(body.clone()))
                    .expect("a valid request");
                let sent = Instant::now();
                let result = async {
                    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
                    let headers = resp.headers().clone();
                    let collected = resp.into_body().collect().await.map_err(|e| e.to_string())?;
                    let trailers = collected.trailers().cloned().unwrap_or_default();
                    let field = |name: &str| {
                        trailers.get(name).or_else(|| headers.get(name)).and_then(|v| v.to_str().ok()).map(String::from)
                    };
                    if field("grpc-status").as_deref() != Some("0") {
                        return Err(format!(
                            "grpc-status {}: {}",
                            field("grpc-status").unwrap_or_default(),
                            field("grpc-message").unwrap_or_default()
                        ));
                    }
                    let data = collected.to_bytes();
                    let answer = ModelInferResponse::decode(data.get(5..).unwrap_or_default())
                        .map_err(|e| format!("decoding the answer: {e}"))?;
                    if answer.model_version.is_empty() {
                        return Err("an answer without model_version".into());
                    }
                    Ok(())
                }
                .await;
                record(&mut out, sent, measure_from, end, result);
            }
        }
    }
    out
}

fn record(out: &mut UserResult, sent: Instant, measure_from: Instant, end: Instant, result: Result<(), String>) {
    let done = Instant::now();
    match result {
        Ok(()) if sent >= measure_from && done <= end => out.latencies.push((done - sent).as_secs_f64()),
        Ok(()) => {}
        Err(e) => {
            out.failed += 1;
            out.error.get_or_insert(e);
        }
    }
}

/// `hourglass bench serve`'s matrix and its answers.
#[derive(Debug, Clone)]
pub struct BenchSpec {
    pub model_name: String,
    pub threads: usize,
    pub concurrency: Vec<usize>,
    pub rows: Vec<usize>,
    pub protocols: Vec<Protocol>,
    pub max_batch_size: usize,
    pub max_queue_delay: Duration,
    pub warmup: Duration,
    pub duration: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub protocol: Protocol,
    pub batching: bool,
    pub rows: usize,
    pub concurrency: usize,
    #[serde(flatten)]
    pub measured: Measured,
    /// Where the CPU went during the cell (warm-up included).
    pub cpu: CpuSplit,
    /// Requests per ONNX Runtime call (warm-up included).
    pub requests_per_call: f64,
}

/// CPU seconds per second of the cell, by thread group: the inference
/// instances (ONNX Runtime and batching), the server's async runtime
/// (network, protocol parsing, encoding), and the load generator's own
/// runtime.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CpuSplit {
    pub inference: f64,
    pub server: f64,
    pub client: f64,
}

/// The load generator's threads' name (15 bytes: Linux's limit).
const CLIENT_THREADS: &str = "hg-bench-client";

/// CPU nanoseconds so far by group (Linux; zeros elsewhere).
fn cpu_ns() -> [u64; 3] {
    let mut out = [0u64; 3];
    for (name, ns) in crate::proc::thread_cpu_ns(std::path::Path::new("/proc/self")) {
        let group = if crate::proc::is_pool_thread(&name) {
            0
        } else if name.starts_with(CLIENT_THREADS) {
            2
        } else {
            1
        };
        out[group] += ns;
    }
    out
}

/// ONNX Runtime alone on the same threads, the ceiling.
#[derive(Debug, Clone, Serialize)]
pub struct Raw {
    /// Rows/s with `threads` sessions each scoring `rows`-row batches.
    pub rows: usize,
    pub rows_per_sec: f64,
    /// One 1-row call, alone: the model's own latency.
    pub one_row_p50_ms: f64,
    pub one_row_p99_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub threads: usize,
    pub max_batch_size: usize,
    pub max_queue_delay_ms: f64,
    pub duration_s: f64,
    pub raw: Raw,
    pub cells: Vec<Cell>,
}

/// Measures ONNX Runtime alone: `threads` threads, each on its own session,
/// score `rows`-row batches for `duration`; then 1-row calls one at a time.
pub fn raw(
    runtime: &hourglass_runtime::ModelRuntime,
    threads: usize,
    rows: usize,
    duration: Duration,
) -> hourglass_runtime::Result<Raw> {
    let full = hourglass_serve::zeros(runtime, rows);
    let one = hourglass_serve::zeros(runtime, 1);
    for _ in 0..threads {
        runtime.run_tensors(&full, rows)?;
    }
    let (scored, took) = ceiling::measure(threads, Until::Elapsed(duration), |_| -> hourglass_runtime::Result<u64> {
        runtime.run_tensors(&full, rows)?;
        Ok(rows as u64)
    })?;
    let rows_per_sec = scored as f64 / took.as_secs_f64();
    let mut lat = Vec::new();
    let started = Instant::now();
    while started.elapsed() < duration / 2 {
        let t = Instant::now();
        runtime.run_tensors(&one, 1)?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1];
    Ok(Raw { rows, rows_per_sec, one_row_p50_ms: pct(0.5), one_row_p99_ms: pct(0.99) })
}

/// Runs the matrix: for batching on and off, a fresh server on loopback
/// (HTTP and gRPC) on `threads` inference threads; every protocol × rows ×
/// concurrency cell in turn.
pub async fn bench(
    runtime: std::sync::Arc<hourglass_runtime::ModelRuntime>,
    spec: &BenchSpec,
) -> Result<BenchReport, Box<dyn std::error::Error + Send + Sync>> {
    let largest = spec.rows.iter().copied().max().unwrap_or(1);
    let raw = {
        let (runtime, threads, duration) = (runtime.clone(), spec.threads, spec.duration);
        tokio::task::spawn_blocking(move || raw(&runtime, threads, largest, duration))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?
    };
    let input = runtime.signature().inputs[0].name.clone();
    let width = runtime.signature().inputs[0].width().unwrap_or(1) as usize;
    // The load generator on a runtime of its own, one thread, so that its
    // CPU is told apart from the server's.
    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(CLIENT_THREADS)
        .enable_all()
        .build()?;
    let mut cells = Vec::new();
    for batching in [true, false] {
        let config = hourglass_serve::ServeConfig {
            max_batch_size: if batching { spec.max_batch_size } else { 1 },
            max_queue_delay: if batching { spec.max_queue_delay } else { Duration::ZERO },
            preferred_batch_sizes: Vec::new(),
            queue_limit: 4096,
            instances: spec.threads,
            request_timeout: Duration::from_secs(30),
            max_inflight_bytes: 1 << 30,
        };
        let model =
            hourglass_serve::Model { name: spec.model_name.clone(), version: "1".into(), runtime: runtime.clone() };
        let server = hourglass_serve::Server::new(vec![model], config);
        let stop = tokio_util::sync::CancellationToken::new();
        let registry = std::sync::Arc::new(prometheus_client::registry::Registry::default());
        let loopback: SocketAddr = "127.0.0.1:0".parse().expect("an address");
        let (http, http_task) = hourglass_serve::http::serve(server.clone(), loopback, registry, stop.clone()).await?;
        let (grpc, grpc_task) = hourglass_serve::grpc::serve(server.clone(), loopback, stop.clone()).await?;
        for &protocol in &spec.protocols {
            for &rows in &spec.rows {
                for &concurrency in &spec.concurrency {
                    let load = Load {
                        protocol,
                        addr: if protocol == Protocol::Http { http } else { grpc },
                        model: spec.model_name.clone(),
                        input: input.clone(),
                        width,
                        rows,
                        concurrency,
                        warmup: spec.warmup,
                        duration: spec.duration,
                    };
                    let before = (cpu_ns(), Instant::now());
                    let calls_before = (server.metrics.calls.get(), server.metrics.batched_requests.get());
                    let measured = client.spawn(async move { run(&load).await }).await?;
                    let (after, secs) = (cpu_ns(), before.1.elapsed().as_secs_f64());
                    let share = |g: usize| after[g].saturating_sub(before.0[g]) as f64 / 1e9 / secs;
                    let cpu = CpuSplit { inference: share(0), server: share(1), client: share(2) };
                    let calls = server.metrics.calls.get() - calls_before.0;
                    let requests_per_call =
                        (server.metrics.batched_requests.get() - calls_before.1) as f64 / calls.max(1) as f64;
                    tracing::info!(%protocol, batching, rows, concurrency, rps = measured.requests_per_sec, p99_ms = measured.p99_ms, "measured");
                    cells.push(Cell { protocol, batching, rows, concurrency, measured, cpu, requests_per_call });
                }
            }
        }
        stop.cancel();
        let _ = http_task.await;
        let _ = grpc_task.await;
    }
    client.shutdown_background();
    Ok(BenchReport {
        model: spec.model_name.clone(),
        threads: spec.threads,
        max_batch_size: spec.max_batch_size,
        max_queue_delay_ms: spec.max_queue_delay.as_secs_f64() * 1e3,
        duration_s: spec.duration.as_secs_f64(),
        raw,
        cells,
    })
}

impl BenchReport {
    fn cell(&self, protocol: Protocol, batching: bool, rows: usize, concurrency: usize) -> Option<&Cell> {
        self.cells.iter().find(|c| {
            c.protocol == protocol && c.batching == batching && c.rows == rows && c.concurrency == concurrency
        })
    }

    /// The three targets, per protocol, as ratios measured in this
    /// run: (label, value, target, met).
    pub fn targets(&self) -> Vec<(String, String, String, bool)> {
        let mut out = Vec::new();
        let protocols: Vec<Protocol> = [Protocol::Http, Protocol::Grpc]
            .into_iter()
            .filter(|p| self.cells.iter().any(|c| c.protocol == *p))
            .collect();
        let largest = self.raw.rows;
        for p in protocols {
            if let (Some(on), Some(off)) = (self.cell(p, true, 1, 64), self.cell(p, false, 1, 64)) {
                let ratio = on.measured.requests_per_sec / off.measured.requests_per_sec.max(1e-9);
                let met = ratio >= 3.0 && on.measured.p99_ms <= off.measured.p99_ms;
                out.push((
                    format!("{p} 1-row requests at concurrency 64: batching on / off"),
                    format!("{ratio:.2}× req/s; p99 {:.2} ms vs {:.2} ms", on.measured.p99_ms, off.measured.p99_ms),
                    "≥ 3×, p99 no worse".into(),
                    met,
                ));
            }
            let best = self
                .cells
                .iter()
                .filter(|c| c.protocol == p && c.batching && c.rows == largest)
                .map(|c| c.measured.rows_per_sec)
                .fold(0.0, f64::max);
            if best > 0.0 {
                let ratio = best / self.raw.rows_per_sec.max(1e-9);
                out.push((
                    format!("{p} {largest}-row requests at saturation / raw ONNX Runtime"),
                    format!("{ratio:.2} ({best:.0} vs {:.0} rows/s)", self.raw.rows_per_sec),
                    "≥ 0.7".into(),
                    ratio >= 0.7,
                ));
            }
            if let Some(c1) = self.cell(p, true, 1, 1) {
                let bound = self.raw.one_row_p99_ms + self.max_queue_delay_ms + 1.0;
                out.push((
                    format!("{p} concurrency 1, 1 row: p99"),
                    format!(
                        "{:.2} ms (model p99 {:.2} + delay {:.2} + 1 = {bound:.2} ms)",
                        c1.measured.p99_ms, self.raw.one_row_p99_ms, self.max_queue_delay_ms
                    ),
                    "≤ model + delay + 1 ms".into(),
                    c1.measured.p99_ms <= bound,
                ));
            }
        }
        out
    }

    /// The table (Markdown, as the README shows it) and the targets.
    pub fn render(&self) -> String {
        let mut s = format!(
            "model {}, {} inference threads, max batch {} rows, queue delay {:.2} ms, {:.0} s per cell\n\
             raw ONNX Runtime: {:.0} rows/s at {} rows per call; one 1-row call p50 {:.3} ms, p99 {:.3} ms\n\n",
            self.model,
            self.threads,
            self.max_batch_size,
            self.max_queue_delay_ms,
            self.duration_s,
            self.raw.rows_per_sec,
            self.raw.rows,
            self.raw.one_row_p50_ms,
            self.raw.one_row_p99_ms
        );
        s += "| protocol | batching | rows/request | concurrency | requests/s | rows/s | p50 ms | p99 ms | requests/call | failed | CPU: inference / server / client |\n";
        s += "|---|---|---|---|---|---|---|---|---|---|---|\n";
        for c in &self.cells {
            let m = &c.measured;
            s += &format!(
                "| {} | {} | {} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.1} | {} | {:.2} / {:.2} / {:.2} |\n",
                c.protocol,
                if c.batching { "on" } else { "off" },
                c.rows,
                c.concurrency,
                m.requests_per_sec,
                m.rows_per_sec,
                m.p50_ms,
                m.p99_ms,
                c.requests_per_call,
                m.failed,
                c.cpu.inference,
                c.cpu.server,
                c.cpu.client
            );
        }
        s += "\n";
        for (label, value, target, met) in self.targets() {
            s += &format!("{} {label}: {value} (target {target})\n", if met { "met " } else { "MISS" });
        }
        s
    }
}
