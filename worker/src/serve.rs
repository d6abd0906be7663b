//! `hourglass serve`: online inference on the worker's own `ModelRuntime`
//! and CPU pool (no second inference path), speaking the KServe v2 / Open
//! Inference Protocol over HTTP/1.1: health, server and model metadata, and
//! `infer` with JSON tensors or the binary tensor data extension.
//!
//! Requests are batched dynamically, as Triton does: a model's batcher
//! takes the first waiting request, gathers more for up to
//! `max_queue_delay` or until `max_batch_size` rows, runs them as one
//! `ModelRuntime` call and splits the outputs back. A full queue answers
//! 429 rather than growing; a request not answered within
//! `request_timeout` gets 504.

use crate::ModelRuntime;
use crate::pool::CpuPool;
use crate::runtime::{ColumnData, InputData, OutputTensor};
use bytes::Bytes;
use hourglass_core::model::DType;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// How requests are batched and bounded.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Most rows in one batch; 1 turns batching off (each request alone).
    pub max_batch_size: usize,
    /// How long the first request of a batch may wait for others.
    pub max_queue_delay: Duration,
    /// Requests waiting per model before new ones get 429.
    pub queue_limit: usize,
    /// Batches run at once per model (one ONNX Runtime session each).
    pub instances: usize,
    pub request_timeout: Duration,
}

/// A model being served under a name.
pub struct Served {
    pub name: String,
    pub version: String,
    pub runtime: Arc<ModelRuntime>,
    queue: mpsc::Sender<Job>,
}

struct Job {
    inputs: Vec<InputData>,
    rows: usize,
    enqueued: Instant,
    reply: oneshot::Sender<Result<Vec<OutputTensor>, String>>,
}

/// The server's metrics.
pub struct ServeMetrics {
    pub requests: prometheus_client::metrics::family::Family<Vec<(String, String)>, Counter>,
    pub request_seconds: Histogram,
    pub queue_seconds: Histogram,
    pub batch_rows: Histogram,
    pub queue_depth: Gauge,
    pub rejected: Counter,
}

impl ServeMetrics {
    fn new() -> Self {
        let latency = || Histogram::new((0..16).map(|i| 0.0001 * 2f64.powi(i)));
        ServeMetrics {
            requests: Default::default(),
            request_seconds: latency(),
            queue_seconds: latency(),
            batch_rows: Histogram::new((0..14).map(|i| 2f64.powi(i))),
            queue_depth: Gauge::default(),
            rejected: Counter::default(),
        }
    }

    pub fn register(&self, r: &mut Registry) {
        let p = "hourglass_serve";
        r.register(format!("{p}_requests"), "Inference requests by model and outcome", self.requests.clone());
        r.register(format!("{p}_request_seconds"), "Time from request to response", self.request_seconds.clone());
        r.register(format!("{p}_queue_seconds"), "Time a request waited for its batch", self.queue_seconds.clone());
        r.register(format!("{p}_batch_rows"), "Rows per ONNX Runtime call", self.batch_rows.clone());
        r.register(format!("{p}_queue_depth"), "Requests waiting for a batch", self.queue_depth.clone());
        r.register(format!("{p}_rejected"), "Requests refused because the queue was full", self.rejected.clone());
    }

    fn count(&self, model: &str, outcome: &str) {
        self.requests.get_or_create(&vec![("model".into(), model.into()), ("outcome".into(), outcome.into())]).inc();
    }
}

/// Everything the HTTP handlers need.
pub struct Server {
    models: BTreeMap<String, Served>,
    config: ServeConfig,
    pub metrics: Arc<ServeMetrics>,
    ready: std::sync::atomic::AtomicBool,
}

impl Server {
    /// Starts a batcher per model on `pool`.
    pub fn new(models: Vec<(String, String, Arc<ModelRuntime>)>, pool: CpuPool, config: ServeConfig) -> Arc<Self> {
        let metrics = Arc::new(ServeMetrics::new());
        let mut served = BTreeMap::new();
        for (name, version, runtime) in models {
            let (tx, rx) = mpsc::channel(config.queue_limit.max(1));
            tokio::spawn(batcher(rx, runtime.clone(), pool.clone(), config.clone(), metrics.clone()));
            served.insert(name.clone(), Served { name, version, runtime, queue: tx });
        }
        Arc::new(Server { models: served, config, metrics, ready: true.into() })
    }

    /// Binds `addr` and serves until `stop` is cancelled; then stops
    /// accepting, lets open connections finish, and returns.
    pub async fn serve(
        self: Arc<Self>,
        addr: SocketAddr,
        registry: Arc<Registry>,
        stop: CancellationToken,
    ) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let open = Arc::new(Semaphore::new(Semaphore::MAX_PERMITS));
            loop {
                let (stream, _) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(c) => c,
                        Err(e) => { tracing::warn!(error = %e, "accept failed"); continue }
                    },
                    _ = stop.cancelled() => break,
                };
                let (server, registry, permit) = (self.clone(), registry.clone(), open.clone().acquire_owned().await);
                let stop = stop.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let service = service_fn(move |req| {
                        let (server, registry) = (server.clone(), registry.clone());
                        async move { Ok::<_, std::convert::Infallible>(server.handle(req, &registry).await) }
                    });
                    let conn =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                    tokio::pin!(conn);
                    tokio::select! {
                        r = conn.as_mut() => { if let Err(e) = r { tracing::debug!(error = %e, "connection ended") } }
                        _ = stop.cancelled() => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                });
            }
            self.ready.store(false, std::sync::atomic::Ordering::Relaxed);
            // Every connection done: in-flight requests answered.
            let _ = open.acquire_many(Semaphore::MAX_PERMITS as u32).await;
        });
        Ok((bound, task))
    }

    async fn handle(&self, req: Request<Incoming>, registry: &Registry) -> Response<Full<Bytes>> {
        let path = req.uri().path().trim_end_matches('/').to_string();
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        match (req.method(), parts.as_slice()) {
            (&Method::GET, ["v2", "health", "live"]) => empty(StatusCode::OK),
            (&Method::GET, ["v2", "health", "ready"]) => {
                if self.ready.load(std::sync::atomic::Ordering::Relaxed) {
                    empty(StatusCode::OK)
                } else {
                    empty(StatusCode::SERVICE_UNAVAILABLE)
                }
            }
            (&Method::GET, ["v2"]) => json_response(
                StatusCode::OK,
                &json!({"name": "hourglass", "version": env!("CARGO_PKG_VERSION"), "extensions": ["binary_tensor_data"]}),
            ),
            (&Method::GET, ["metrics"]) => {
                let mut text = String::new();
                let _ = prometheus_client::encoding::text::encode(&mut text, registry);
                text_response(StatusCode::OK, text)
            }
            (&Method::GET, ["v2", "models", name, rest @ ..]) => match self.model(name, rest) {
                Ok((m, [])) => json_response(StatusCode::OK, &metadata(m)),
                Ok((_, ["ready"])) => empty(StatusCode::OK),
                Ok(_) => error(StatusCode::NOT_FOUND, format!("no route {path}")),
                Err(resp) => resp,
            },
            (&Method::POST, ["v2", "models", name, rest @ ..]) => match self.model(name, rest) {
                Ok((m, ["infer"])) => self.infer(m, req).await,
                Ok(_) => error(StatusCode::NOT_FOUND, format!("no route {path}")),
                Err(resp) => resp,
            },
            _ => error(StatusCode::NOT_FOUND, format!("no route {} {path}", req.method())),
        }
    }

    /// The model a path names, with the rest of the path after an optional
    /// `versions/V`; `Err` is the 404 to answer.
    #[allow(clippy::result_large_err)] // Built once per request, on the error path.
    fn model<'a, 'b>(
        &'a self,
        name: &str,
        rest: &'b [&'b str],
    ) -> Result<(&'a Served, &'b [&'b str]), Response<Full<Bytes>>> {
        let m = self.models.get(name).ok_or_else(|| {
            error(StatusCode::NOT_FOUND, format!("unknown model {name:?}; serving: {}", self.names()))
        })?;
        match rest {
            ["versions", v, tail @ ..] if *v == m.version => Ok((m, tail)),
            ["versions", v, ..] => Err(error(
                StatusCode::NOT_FOUND,
                format!("model {name:?} has no version {v:?}; serving version {}", m.version),
            )),
            tail => Ok((m, tail)),
        }
    }

    fn names(&self) -> String {
        self.models.keys().cloned().collect::<Vec<_>>().join(", ")
    }

    async fn infer(&self, m: &Served, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let started = Instant::now();
        let header_len = req
            .headers()
            .get("inference-header-content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("reading the request body: {e}")),
        };
        let parsed = match parse_request(&body, header_len, &m.runtime) {
            Ok(p) => p,
            Err(msg) => {
                self.metrics.count(&m.name, "bad_request");
                return error(StatusCode::BAD_REQUEST, msg);
            }
        };
        let (tx, rx) = oneshot::channel();
        let job = Job { inputs: parsed.inputs, rows: parsed.rows, enqueued: Instant::now(), reply: tx };
        if m.queue.try_send(job).is_err() {
            self.metrics.rejected.inc();
            self.metrics.count(&m.name, "rejected");
            return error(StatusCode::TOO_MANY_REQUESTS, format!("model {:?}: the queue is full; retry later", m.name));
        }
        self.metrics.queue_depth.inc();
        let outputs = match tokio::time::timeout(self.config.request_timeout, rx).await {
            Ok(Ok(Ok(outputs))) => outputs,
            Ok(Ok(Err(msg))) => {
                self.metrics.count(&m.name, "error");
                return error(StatusCode::INTERNAL_SERVER_ERROR, msg);
            }
            Ok(Err(_)) => return error(StatusCode::INTERNAL_SERVER_ERROR, "the batcher stopped".into()),
            Err(_) => {
                self.metrics.count(&m.name, "timeout");
                return error(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("no answer within {:?}", self.config.request_timeout),
                );
            }
        };
        self.metrics.count(&m.name, "ok");
        self.metrics.request_seconds.observe(started.elapsed().as_secs_f64());
        respond(m, parsed.id, &parsed.outputs, parsed.binary_output, outputs)
    }
}

/// A parsed `infer` request.
struct Parsed {
    id: Option<Value>,
    inputs: Vec<InputData>,
    rows: usize,
    /// Requested outputs (all when empty), each with whether it goes binary.
    outputs: Vec<(String, bool)>,
    binary_output: bool,
}

fn datatype(d: Option<DType>) -> &'static str {
    match d {
        Some(DType::Float32) => "FP32",
        Some(DType::Int64) => "INT64",
        Some(DType::Int32) => "INT32",
        _ => "BYTES",
    }
}

fn metadata(m: &Served) -> Value {
    let tensors = |specs: &[hourglass_core::model::TensorSpec]| -> Vec<Value> {
        specs
            .iter()
            .map(|t| {
                let shape: Vec<i64> = t.shape.iter().map(|d| d.map(|n| n as i64).unwrap_or(-1)).collect();
                json!({"name": t.name, "datatype": datatype(t.dtype), "shape": shape})
            })
            .collect()
    };
    let sig = m.runtime.signature();
    json!({
        "name": m.name,
        "versions": [m.version],
        "platform": "onnxruntime_onnx",
        "inputs": tensors(&sig.inputs),
        "outputs": tensors(&sig.outputs),
        "parameters": {"sha256": m.runtime.sha256()},
    })
}

fn parse_request(body: &[u8], header_len: Option<usize>, runtime: &ModelRuntime) -> Result<Parsed, String> {
    let (head, mut binary) = match header_len {
        Some(n) if n <= body.len() => (&body[..n], &body[n..]),
        Some(n) => return Err(format!("Inference-Header-Content-Length {n} exceeds the body's {} bytes", body.len())),
        None => (body, &body[body.len()..]),
    };
    let req: Value = serde_json::from_slice(head).map_err(|e| format!("the request is not JSON: {e}"))?;
    let given = req["inputs"].as_array().ok_or("the request has no \"inputs\" array")?;
    let sig = runtime.signature();
    let mut by_name: BTreeMap<&str, &Value> = BTreeMap::new();
    for input in given {
        let name = input["name"].as_str().ok_or("an input has no \"name\"")?;
        if !sig.inputs.iter().any(|s| s.name == name) {
            let known: Vec<&str> = sig.inputs.iter().map(|s| s.name.as_str()).collect();
            return Err(format!("unknown input {name:?}; the model takes {}", known.join(", ")));
        }
        by_name.insert(name, input);
    }
    // Binary data comes in the order the inputs are listed.
    let mut binary_parts: BTreeMap<&str, &[u8]> = BTreeMap::new();
    for input in given {
        if let Some(size) = input["parameters"]["binary_data_size"].as_u64() {
            let size = size as usize;
            if size > binary.len() {
                return Err(format!(
                    "input {:?}: binary_data_size {size} but only {} bytes follow the header",
                    input["name"].as_str().unwrap_or(""),
                    binary.len()
                ));
            }
            binary_parts.insert(input["name"].as_str().unwrap_or(""), &binary[..size]);
            binary = &binary[size..];
        }
    }
    let mut rows = None;
    let mut inputs = Vec::with_capacity(sig.inputs.len());
    for spec in &sig.inputs {
        let input = by_name.get(spec.name.as_str()).ok_or_else(|| format!("input {:?} is missing", spec.name))?;
        let name = &spec.name;
        let want = datatype(spec.dtype);
        let got = input["datatype"].as_str().unwrap_or("");
        if got != want {
            return Err(format!("input {name:?}: datatype {got:?}, the model takes {want}"));
        }
        let shape: Vec<i64> = input["shape"]
            .as_array()
            .ok_or_else(|| format!("input {name:?} has no \"shape\""))?
            .iter()
            .map(|d| {
                d.as_i64().filter(|d| *d >= 0).ok_or_else(|| format!("input {name:?}: bad shape {}", input["shape"]))
            })
            .collect::<Result<_, _>>()?;
        let width = spec.width().unwrap_or(1) as i64;
        let n = match (shape.as_slice(), spec.shape.len()) {
            ([n, w], 2) if *w == width => *n,
            ([n], 1) => *n,
            ([n, 1], 1) => *n,
            _ => {
                let dims: Vec<String> =
                    spec.shape.iter().map(|d| d.map(|x| x.to_string()).unwrap_or("-1".into())).collect();
                return Err(format!("input {name:?}: shape {shape:?} does not fit the model's [{}]", dims.join(", ")));
            }
        } as usize;
        if *rows.get_or_insert(n) != n {
            return Err(format!("input {name:?} has {n} rows, another input {}", rows.unwrap_or(0)));
        }
        let count = n * width as usize;
        let data = match binary_parts.get(name.as_str()) {
            Some(bytes) => decode_binary(name, spec.dtype, bytes, count)?,
            None => decode_json(name, spec.dtype, &input["data"], count)?,
        };
        inputs.push(data);
    }
    let rows = rows.unwrap_or(0);
    if rows == 0 {
        return Err("the request has no rows".into());
    }
    let binary_output = req["parameters"]["binary_data_output"].as_bool().unwrap_or(false);
    let mut outputs = Vec::new();
    for o in req["outputs"].as_array().into_iter().flatten() {
        let name = o["name"].as_str().ok_or("a requested output has no \"name\"")?;
        if !sig.outputs.iter().any(|s| s.name == name) {
            let known: Vec<&str> = sig.outputs.iter().map(|s| s.name.as_str()).collect();
            return Err(format!("unknown output {name:?}; the model has {}", known.join(", ")));
        }
        outputs.push((name.to_string(), o["parameters"]["binary_data"].as_bool().unwrap_or(binary_output)));
    }
    Ok(Parsed { id: req.get("id").cloned(), inputs, rows, outputs, binary_output })
}

fn decode_binary(name: &str, dtype: Option<DType>, bytes: &[u8], count: usize) -> Result<InputData, String> {
    let want = count * 4 * if dtype == Some(DType::Int64) { 2 } else { 1 };
    if bytes.len() != want {
        return Err(format!("input {name:?}: {} bytes of binary data, its shape needs {want}", bytes.len()));
    }
    Ok(match dtype {
        Some(DType::Int64) => {
            InputData::I64(bytes.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes"))).collect())
        }
        _ => {
            InputData::F32(bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect())
        }
    })
}

fn decode_json(name: &str, dtype: Option<DType>, data: &Value, count: usize) -> Result<InputData, String> {
    fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
        match v {
            Value::Array(a) => a.iter().for_each(|x| flatten(x, out)),
            other => out.push(other),
        }
    }
    let mut flat = Vec::with_capacity(count);
    flatten(data, &mut flat);
    if flat.len() != count {
        return Err(format!("input {name:?}: {} values, its shape needs {count}", flat.len()));
    }
    let bad = |i: usize| format!("input {name:?}: element {i} is not a number");
    Ok(match dtype {
        Some(DType::Int64) => InputData::I64(
            flat.iter().enumerate().map(|(i, v)| v.as_i64().ok_or_else(|| bad(i))).collect::<Result<_, _>>()?,
        ),
        _ => InputData::F32(
            flat.iter()
                .enumerate()
                .map(|(i, v)| v.as_f64().map(|x| x as f32).ok_or_else(|| bad(i)))
                .collect::<Result<_, _>>()?,
        ),
    })
}

fn respond(
    m: &Served,
    id: Option<Value>,
    requested: &[(String, bool)],
    binary_default: bool,
    outputs: Vec<OutputTensor>,
) -> Response<Full<Bytes>> {
    let mut entries = Vec::new();
    let mut binary = Vec::new();
    for t in outputs {
        let as_binary = if requested.is_empty() {
            binary_default
        } else {
            match requested.iter().find(|(n, _)| *n == t.name) {
                Some((_, b)) => *b,
                None => continue,
            }
        };
        let (dt, bytes, values): (&str, Vec<u8>, Value) = match &t.data {
            ColumnData::F32(v) => ("FP32", v.iter().flat_map(|x| x.to_le_bytes()).collect(), json!(v)),
            ColumnData::F64(v) => ("FP64", v.iter().flat_map(|x| x.to_le_bytes()).collect(), json!(v)),
            ColumnData::I32(v) => ("INT32", v.iter().flat_map(|x| x.to_le_bytes()).collect(), json!(v)),
            ColumnData::I64(v) => ("INT64", v.iter().flat_map(|x| x.to_le_bytes()).collect(), json!(v)),
        };
        let mut entry = json!({"name": t.name, "datatype": dt, "shape": t.shape});
        if as_binary {
            entry["parameters"] = json!({"binary_data_size": bytes.len()});
            binary.extend(bytes);
        } else {
            entry["data"] = values;
        }
        entries.push(entry);
    }
    let mut head = json!({"model_name": m.name, "model_version": m.version, "outputs": entries});
    if let Some(id) = id {
        head["id"] = id;
    }
    let head = serde_json::to_vec(&head).expect("JSON serializes");
    if binary.is_empty() {
        return bytes_response(StatusCode::OK, "application/json", head, None);
    }
    let len = head.len();
    let mut body = head;
    body.extend(binary);
    bytes_response(StatusCode::OK, "application/octet-stream", body, Some(len))
}

/// Gathers jobs into batches and runs them, `instances` at a time.
async fn batcher(
    mut rx: mpsc::Receiver<Job>,
    runtime: Arc<ModelRuntime>,
    pool: CpuPool,
    config: ServeConfig,
    metrics: Arc<ServeMetrics>,
) {
    let running = Arc::new(Semaphore::new(config.instances.max(1)));
    while let Some(first) = rx.recv().await {
        let mut rows = first.rows;
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + config.max_queue_delay;
        while rows < config.max_batch_size {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(job)) => {
                    rows += job.rows;
                    batch.push(job);
                }
                _ => break,
            }
        }
        let permit = running.clone().acquire_owned().await.expect("never closed");
        let (runtime, pool, metrics) = (runtime.clone(), pool.clone(), metrics.clone());
        tokio::spawn(async move {
            let _permit = permit;
            metrics.queue_depth.dec_by(batch.len() as i64);
            metrics.batch_rows.observe(rows as f64);
            for job in &batch {
                metrics.queue_seconds.observe(job.enqueued.elapsed().as_secs_f64());
            }
            let inputs = concat(&batch);
            let result = pool.run(move || runtime.run_tensors(&inputs, rows)).await;
            split_back(batch, rows, result.map_err(|e| e.to_string()));
        });
    }
}

/// The batch's inputs, request after request.
fn concat(batch: &[Job]) -> Vec<InputData> {
    let n_inputs = batch[0].inputs.len();
    (0..n_inputs)
        .map(|i| match &batch[0].inputs[i] {
            InputData::F32(_) => InputData::F32(
                batch
                    .iter()
                    .flat_map(|j| match &j.inputs[i] {
                        InputData::F32(v) => v.as_slice(),
                        _ => &[],
                    })
                    .copied()
                    .collect(),
            ),
            InputData::I64(_) => InputData::I64(
                batch
                    .iter()
                    .flat_map(|j| match &j.inputs[i] {
                        InputData::I64(v) => v.as_slice(),
                        _ => &[],
                    })
                    .copied()
                    .collect(),
            ),
        })
        .collect()
}

/// Each job's rows of every output, in request order.
fn split_back(batch: Vec<Job>, rows: usize, result: Result<Vec<OutputTensor>, String>) {
    let outputs = match result {
        Ok(o) => o,
        Err(msg) => {
            for job in batch {
                let _ = job.reply.send(Err(msg.clone()));
            }
            return;
        }
    };
    let mut offset = 0;
    for job in batch {
        let mine = outputs
            .iter()
            .map(|t| {
                let per_row = t.data.len().checked_div(rows).unwrap_or(0);
                let range = offset * per_row..(offset + job.rows) * per_row;
                let mut shape = t.shape.clone();
                if let Some(first) = shape.first_mut() {
                    *first = job.rows as i64;
                }
                let data = match &t.data {
                    ColumnData::F32(v) => ColumnData::F32(v[range].to_vec()),
                    ColumnData::F64(v) => ColumnData::F64(v[range].to_vec()),
                    ColumnData::I32(v) => ColumnData::I32(v[range].to_vec()),
                    ColumnData::I64(v) => ColumnData::I64(v[range].to_vec()),
                };
                OutputTensor { name: t.name.clone(), shape, data }
            })
            .collect();
        offset += job.rows;
        let _ = job.reply.send(Ok(mine));
    }
}

fn bytes_response(
    status: StatusCode,
    content_type: &str,
    body: Vec<u8>,
    header_len: Option<usize>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, content_type.parse().expect("static header"));
    if let Some(n) = header_len {
        r.headers_mut().insert("inference-header-content-length", n.into());
    }
    r
}

fn json_response(status: StatusCode, v: &Value) -> Response<Full<Bytes>> {
    bytes_response(status, "application/json", serde_json::to_vec(v).expect("JSON serializes"), None)
}

fn text_response(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    bytes_response(status, "text/plain; version=0.0.4", text.into_bytes(), None)
}

fn empty(status: StatusCode) -> Response<Full<Bytes>> {
    bytes_response(status, "application/json", Vec::new(), None)
}

/// The protocol's error body: `{"error": "..."}`.
fn error(status: StatusCode, message: String) -> Response<Full<Bytes>> {
    json_response(status, &json!({ "error": message }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_batch_is_concatenated_in_order_and_split_back_by_rows() {
        let mut replies = Vec::new();
        let batch: Vec<Job> = [1usize, 3, 2]
            .iter()
            .enumerate()
            .map(|(i, &rows)| {
                let (tx, rx) = oneshot::channel();
                replies.push(rx);
                let values = (0..rows * 2).map(|k| (i * 100 + k) as f32).collect();
                Job { inputs: vec![InputData::F32(values)], rows, enqueued: Instant::now(), reply: tx }
            })
            .collect();
        let joined = concat(&batch);
        assert_eq!(joined[0].len(), 12);
        // A fake model: output row r = [x0 + x1, r as i64].
        let InputData::F32(x) = &joined[0] else { panic!() };
        let sums: Vec<f32> = x.chunks(2).map(|c| c[0] + c[1]).collect();
        let outputs = vec![
            OutputTensor { name: "sum".into(), shape: vec![6], data: ColumnData::F32(sums.clone()) },
            OutputTensor { name: "pair".into(), shape: vec![6, 2], data: ColumnData::I64((0..12).collect()) },
        ];
        split_back(batch, 6, Ok(outputs));
        let mut offset = 0;
        for (rx, rows) in replies.into_iter().zip([1usize, 3, 2]) {
            let got = rx.await.unwrap().unwrap();
            assert_eq!(got[0].shape, vec![rows as i64]);
            assert_eq!(got[0].data, ColumnData::F32(sums[offset..offset + rows].to_vec()));
            assert_eq!(got[1].shape, vec![rows as i64, 2]);
            assert_eq!(got[1].data, ColumnData::I64((offset as i64 * 2..(offset + rows) as i64 * 2).collect()));
            offset += rows;
        }
    }
}
