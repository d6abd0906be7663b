//! `hourglass serve`: online inference on the batch workers' own
//! `ModelRuntime` and CPU pool (`hourglass-runtime`; no second inference
//! path), speaking the KServe v2 / Open
//! Inference Protocol over HTTP/1.1 ([`http`]: JSON tensors and the binary
//! tensor data extension) and gRPC ([`grpc`]: `GRPCInferenceService`,
//! typed contents or `raw_input_contents`).
//!
//! Both protocols parse into the same [`GivenInput`]s and go through
//! [`Server::infer`]: the inputs are checked against the model (name,
//! datatype, shape, byte length), queued for the model's dynamic batcher
//! ([`batch`]), and answered with the version that scored them. A full
//! queue is refused (429 / `RESOURCE_EXHAUSTED`) rather than grown; a
//! request not answered within `request_timeout` gets 504 /
//! `DEADLINE_EXCEEDED`.
//!
//! A model served from a registry alias is followed ([`Server::follow`]):
//! when the alias moves, the new version is loaded and warmed beside the
//! old one, new requests switch to it at once, and the old version's
//! batcher answers what it already holds and stops.

mod batch;
pub mod grpc;
pub mod http;
pub mod limits;
pub mod metrics;
mod tensor_json;

use batch::Job;
use hourglass_core::model::{DType, TensorSpec};
use hourglass_runtime::ModelRuntime;
use hourglass_runtime::pool::CpuPool;
use hourglass_runtime::{InputData, OutputTensor, RuntimeOptions};
use limits::{Charge, InflightBytes};
pub use metrics::ServeMetrics;
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// How requests are batched and bounded.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Most rows in one batch; 1 turns batching off (each request alone).
    pub max_batch_size: usize,
    /// How long the first request of a batch may wait for others.
    pub max_queue_delay: Duration,
    /// Batch sizes (rows) worth sending without waiting out the delay:
    /// a batch that reaches one with nothing else waiting goes at once.
    pub preferred_batch_sizes: Vec<usize>,
    /// Requests waiting per model before new ones are refused.
    pub queue_limit: usize,
    /// Batches run at once per model (one ONNX Runtime session each).
    pub instances: usize,
    pub request_timeout: Duration,
    /// Bytes of requests in flight (received, decoded, queued, scored)
    /// before new ones are refused; see [`limits`].
    pub max_inflight_bytes: usize,
}

/// One version of a model, loaded, with its batcher.
pub struct Loaded {
    pub version: String,
    pub runtime: Arc<ModelRuntime>,
    queue: std::sync::mpsc::SyncSender<Job>,
    /// The instance loops' threads; they end when `queue` is dropped.
    _pool: CpuPool,
}

/// A served name and the version it answers with now.
struct Slot {
    current: RwLock<Arc<Loaded>>,
    /// Requests for this model being received or parsed, not yet queued:
    /// what a forming batch may wait for.
    arriving: Arc<AtomicUsize>,
}

/// A request on its way to a model's queue; counted in the model's
/// `arriving` until dropped (queued, refused or failed).
pub struct Arrival(Option<Arc<AtomicUsize>>);

impl Drop for Arrival {
    fn drop(&mut self) {
        if let Some(n) = &self.0 {
            n.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// What a request gives for one input, before it is checked.
pub struct GivenInput<'a> {
    pub name: &'a str,
    pub datatype: &'a str,
    pub shape: Vec<i64>,
    pub data: Given<'a>,
}

pub enum Given<'a> {
    /// Little-endian bytes: HTTP's binary extension, gRPC's raw contents.
    Raw(&'a [u8]),
    /// A JSON `data` array (nested or flat), as received.
    Json(&'a RawValue),
    F32(&'a [f32]),
    I64(&'a [i64]),
    /// No data at all.
    Missing,
}

/// A scored request: the outputs asked for, and who scored them.
pub struct Answer {
    pub model: String,
    pub version: String,
    pub outputs: Vec<OutputTensor>,
}

/// Why a request was not answered; each protocol maps the kind to its
/// status (HTTP code, gRPC code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    BadRequest,
    NotFound,
    /// The model's queue is full, or the server's in-flight bytes.
    Busy,
    /// The request alone is over a limit: retrying will not help.
    TooLarge,
    Timeout,
    /// Shutting down.
    Unavailable,
    Internal,
}

#[derive(Debug)]
pub struct ServeError {
    pub kind: Refusal,
    pub message: String,
}

impl ServeError {
    pub(crate) fn new(kind: Refusal, message: impl Into<String>) -> Self {
        ServeError { kind, message: message.into() }
    }
}

/// A tensor's name, protocol datatype and shape (-1: any).
pub struct TensorMeta {
    pub name: String,
    pub datatype: &'static str,
    pub shape: Vec<i64>,
}

/// A model's metadata as both protocols report it.
pub struct ModelMeta {
    pub name: String,
    pub version: String,
    pub sha256: String,
    /// The device the model really runs on (`cpu` after a fallback).
    pub device: String,
    pub inputs: Vec<TensorMeta>,
    pub outputs: Vec<TensorMeta>,
}

/// A model to serve at startup.
pub struct Model {
    pub name: String,
    pub version: String,
    pub runtime: Arc<ModelRuntime>,
}

/// Everything the protocol handlers need.
pub struct Server {
    models: BTreeMap<String, Slot>,
    config: ServeConfig,
    pub metrics: Arc<ServeMetrics>,
    ready: AtomicBool,
    inflight: InflightBytes,
}

impl Server {
    /// Starts each model's instances. Warm the models first ([`warm`]):
    /// the server reports ready from the start.
    pub fn new(models: Vec<Model>, config: ServeConfig) -> Arc<Self> {
        let metrics = Arc::new(ServeMetrics::new());
        let inflight = InflightBytes::new(config.max_inflight_bytes);
        let mut server = Server { models: BTreeMap::new(), config, metrics, ready: true.into(), inflight };
        for m in models {
            let arriving = Arc::new(AtomicUsize::new(0));
            let loaded = server.start(m.version, m.runtime, &arriving);
            server.metrics.loaded.get_or_create(&ServeMetrics::loaded_labels(&m.name, &loaded)).set(1);
            server.models.insert(m.name, Slot { current: RwLock::new(loaded), arriving });
        }
        Arc::new(server)
    }

    fn start(&self, version: String, runtime: Arc<ModelRuntime>, arriving: &Arc<AtomicUsize>) -> Arc<Loaded> {
        let (tx, rx) = std::sync::mpsc::sync_channel(self.config.queue_limit.max(1));
        let rx = Arc::new(std::sync::Mutex::new(rx));
        let pool = CpuPool::new(self.config.instances.max(1));
        for _ in 0..pool.threads() {
            let (rx, runtime, config, metrics, arriving) =
                (rx.clone(), runtime.clone(), self.config.clone(), self.metrics.clone(), arriving.clone());
            pool.spawn(move || batch::instance(rx, runtime, config, metrics, arriving));
        }
        Arc::new(Loaded { version, runtime, queue: tx, _pool: pool })
    }

    /// How long a request's body may take to arrive.
    pub fn body_timeout(&self) -> Duration {
        self.config.request_timeout
    }

    /// The budget every request's bytes are drawn from.
    pub fn inflight(&self) -> &InflightBytes {
        &self.inflight
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Marks the server not ready (shutting down): readiness probes fail so
    /// that load balancers stop sending before the listeners close.
    pub fn set_not_ready(&self) {
        self.ready.store(false, Ordering::Relaxed);
    }

    /// Marks a request for `name` as on its way: a batch being formed
    /// waits for it (up to the queue delay). Take it before reading the
    /// request body; [`Server::infer`] ends it once the request is queued.
    pub fn arrival(&self, name: &str) -> Arrival {
        Arrival(self.models.get(name).map(|slot| {
            slot.arriving.fetch_add(1, Ordering::AcqRel);
            slot.arriving.clone()
        }))
    }

    pub fn names(&self) -> Vec<String> {
        self.models.keys().cloned().collect()
    }

    /// The version `name` answers with now; `version`, when given, must be
    /// it.
    pub fn loaded(&self, name: &str, version: Option<&str>) -> Result<Arc<Loaded>, ServeError> {
        let slot = self.models.get(name).ok_or_else(|| {
            ServeError::new(Refusal::NotFound, format!("unknown model {name:?}; serving: {}", self.names().join(", ")))
        })?;
        let loaded = slot.current.read().expect("not poisoned").clone();
        match version {
            Some(v) if !v.is_empty() && v != loaded.version => Err(ServeError::new(
                Refusal::NotFound,
                format!("model {name:?} has no version {v:?}; serving version {}", loaded.version),
            )),
            _ => Ok(loaded),
        }
    }

    pub fn metadata(&self, name: &str, version: Option<&str>) -> Result<ModelMeta, ServeError> {
        let loaded = self.loaded(name, version)?;
        let sig = loaded.runtime.signature();
        let tensors = |specs: &[TensorSpec]| -> Vec<TensorMeta> {
            specs
                .iter()
                .map(|t| TensorMeta {
                    name: t.name.clone(),
                    datatype: datatype(t.dtype),
                    shape: t.shape.iter().map(|d| d.map(|n| n as i64).unwrap_or(-1)).collect(),
                })
                .collect()
        };
        Ok(ModelMeta {
            name: name.to_string(),
            version: loaded.version.clone(),
            sha256: loaded.runtime.sha256().to_string(),
            device: loaded.runtime.device().to_string(),
            inputs: tensors(&sig.inputs),
            outputs: tensors(&sig.outputs),
        })
    }

    /// Checks a request against the model, waits for its batch and answers
    /// with the outputs asked for (all when `outputs` is empty), in the
    /// model's order.
    pub async fn infer(
        &self,
        name: &str,
        version: Option<&str>,
        given: Vec<GivenInput<'_>>,
        outputs: &[&str],
        arrival: Arrival,
    ) -> Result<Answer, ServeError> {
        let started = Instant::now();
        let loaded = self.loaded(name, version)?;
        let result = self.infer_on(name, &loaded, given, outputs, arrival).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => match e.kind {
                Refusal::BadRequest | Refusal::NotFound => "bad_request",
                Refusal::Busy | Refusal::TooLarge => "rejected",
                Refusal::Timeout => "timeout",
                Refusal::Unavailable | Refusal::Internal => "error",
            },
        };
        self.metrics.count(name, outcome);
        if result.is_ok() {
            self.metrics.request_seconds.observe(started.elapsed().as_secs_f64());
        }
        result
    }

    async fn infer_on(
        &self,
        name: &str,
        loaded: &Loaded,
        given: Vec<GivenInput<'_>>,
        outputs: &[&str],
        arrival: Arrival,
    ) -> Result<Answer, ServeError> {
        let sig = loaded.runtime.signature();
        for o in outputs {
            if !sig.outputs.iter().any(|s| s.name == *o) {
                let known: Vec<&str> = sig.outputs.iter().map(|s| s.name.as_str()).collect();
                return Err(ServeError::new(
                    Refusal::BadRequest,
                    format!("unknown output {o:?}; the model has {}", known.join(", ")),
                ));
            }
        }
        let (inputs, rows, charge) = bind(&loaded.runtime, given, &self.inflight)?;
        let (tx, rx) = oneshot::channel();
        let job = Job { inputs, rows, enqueued: Instant::now(), reply: tx, _charge: charge };
        // Arrived before it is queued: an instance woken by this request
        // must not wait for it as if it were still on its way.
        drop(arrival);
        if loaded.queue.try_send(job).is_err() {
            self.metrics.rejected.inc();
            return Err(ServeError::new(Refusal::Busy, format!("model {name:?}: the queue is full; retry later")));
        }
        self.metrics.queue_depth.inc();
        let mut all = match tokio::time::timeout(self.config.request_timeout, rx).await {
            Ok(Ok(Ok(outputs))) => outputs,
            Ok(Ok(Err(refused))) => return Err(refused),
            Ok(Err(_)) => return Err(ServeError::new(Refusal::Internal, "the batcher stopped")),
            Err(_) => {
                return Err(ServeError::new(
                    Refusal::Timeout,
                    format!("no answer within {:?}", self.config.request_timeout),
                ));
            }
        };
        if !outputs.is_empty() {
            all.retain(|t| outputs.contains(&t.name.as_str()));
        }
        Ok(Answer { model: name.to_string(), version: loaded.version.clone(), outputs: all })
    }

    /// Switches `name` to a loaded, warmed version: requests from now on
    /// go to it; the old version answers what it holds, then its batcher
    /// stops once the last request holding it is done.
    pub fn swap(&self, name: &str, version: String, runtime: Arc<ModelRuntime>) -> Result<String, ServeError> {
        let slot = self
            .models
            .get(name)
            .ok_or_else(|| ServeError::new(Refusal::NotFound, format!("unknown model {name:?}")))?;
        let next = self.start(version, runtime, &slot.arriving);
        let old = std::mem::replace(&mut *slot.current.write().expect("not poisoned"), next.clone());
        self.metrics.loaded.remove(&ServeMetrics::loaded_labels(name, &old));
        self.metrics.loaded.get_or_create(&ServeMetrics::loaded_labels(name, &next)).set(1);
        Ok(old.version.clone())
    }

    /// Follows a registry alias: every `every`, resolves `reference`; when
    /// it names another version, loads it, warms it and swaps it in. A
    /// failed load leaves the current version serving and is retried.
    pub async fn follow(
        self: Arc<Self>,
        name: String,
        reference: String,
        options: RuntimeOptions,
        every: Duration,
        stop: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.cancelled() => return,
            }
            let current = match self.loaded(&name, None) {
                Ok(l) => l.version.clone(),
                Err(_) => return,
            };
            let label = |outcome: &str| vec![("model".to_string(), name.clone()), ("outcome".into(), outcome.into())];
            match self.follow_once(&name, &reference, &current, options.clone()).await {
                Ok(None) => {}
                Ok(Some(version)) => {
                    self.metrics.swaps.get_or_create(&label("ok")).inc();
                    tracing::info!(model = %name, from = %current, to = %version, "alias moved: now serving the new version");
                }
                Err(e) => {
                    self.metrics.swaps.get_or_create(&label("failed")).inc();
                    tracing::warn!(model = %name, reference = %reference, error = %e, "following the alias failed; still serving version {current}");
                }
            }
        }
    }

    async fn follow_once(
        &self,
        name: &str,
        reference: &str,
        current: &str,
        options: RuntimeOptions,
    ) -> Result<Option<String>, hourglass_runtime::Error> {
        let (url, pin) = hourglass_core::registry::resolve_ref(reference).await?;
        let version = pin.map(|p| p.version.to_string()).unwrap_or_else(|| current.to_string());
        if version == current {
            return Ok(None);
        }
        tracing::info!(model = %name, from = %current, to = %version, "alias moved: loading the new version beside the old");
        let runtime = Arc::new(load(&url, options).await?);
        warm(&runtime, self.config.max_batch_size).await?;
        let _ = self.swap(name, version.clone(), runtime);
        Ok(Some(version))
    }
}

/// Reads and loads a model for serving; refuses one that cannot score
/// batches.
pub async fn load(
    url: &hourglass_core::BlobUrl,
    options: RuntimeOptions,
) -> Result<ModelRuntime, hourglass_runtime::Error> {
    let bytes = hourglass_core::store::open(url)?.get(url.key()).await?;
    let source = url.to_string();
    tokio::task::spawn_blocking(move || {
        let r = ModelRuntime::load(&bytes, &source, options)?;
        r.check_batch_scoring()?;
        Ok(r)
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// Runs a model once at one row and once at a full batch on every session
/// at once, so that the first requests do not pay for ONNX Runtime's lazy
/// setup.
pub async fn warm(runtime: &Arc<ModelRuntime>, max_batch: usize) -> Result<(), hourglass_runtime::Error> {
    let runtime = runtime.clone();
    tokio::task::spawn_blocking(move || {
        std::thread::scope(|s| {
            let runs: Vec<_> = (0..runtime.sessions().max(1))
                .map(|_| {
                    s.spawn(|| -> Result<(), hourglass_runtime::Error> {
                        for rows in [1, max_batch.max(1)] {
                            runtime.run_tensors(&zeros(&runtime, rows), rows)?;
                        }
                        Ok(())
                    })
                })
                .collect();
            runs.into_iter().try_for_each(|r| r.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
        })
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// Zeros for every input of `runtime`'s model, `rows` rows: the warm-up
/// batch (and `bench serve`'s ceiling input).
pub fn zeros(runtime: &ModelRuntime, rows: usize) -> Vec<InputData> {
    runtime
        .signature()
        .inputs
        .iter()
        .map(|s| {
            let n = rows * s.width().unwrap_or(1) as usize;
            match s.dtype {
                Some(DType::Int64) => InputData::I64(vec![0; n]),
                _ => InputData::F32(vec![0.0; n]),
            }
        })
        .collect()
}

/// The protocol's datatype for a model tensor type.
pub fn datatype(d: Option<DType>) -> &'static str {
    match d {
        Some(DType::Float32) => "FP32",
        Some(DType::Int64) => "INT64",
        Some(DType::Int32) => "INT32",
        _ => "BYTES",
    }
}

/// Checks the given inputs against the model and decodes them, in the
/// model's input order; returns them with the row count and the charge of
/// their decoded bytes. Every size is checked against the data given
/// before anything is allocated, and the decoded bytes are drawn from
/// `inflight` before they are decoded.
fn bind(
    runtime: &ModelRuntime,
    given: Vec<GivenInput<'_>>,
    inflight: &InflightBytes,
) -> Result<(Vec<InputData>, usize, Charge), ServeError> {
    let bad = |m: String| ServeError::new(Refusal::BadRequest, m);
    let sig = runtime.signature();
    let mut by_name: BTreeMap<&str, GivenInput<'_>> = BTreeMap::new();
    for input in given {
        if !sig.inputs.iter().any(|s| s.name == input.name) {
            let known: Vec<&str> = sig.inputs.iter().map(|s| s.name.as_str()).collect();
            return Err(bad(format!("unknown input {:?}; the model takes {}", input.name, known.join(", "))));
        }
        if by_name.contains_key(input.name) {
            return Err(bad(format!("input {:?} is given twice", input.name)));
        }
        by_name.insert(input.name, input);
    }
    let mut rows = None;
    let mut planned = Vec::with_capacity(sig.inputs.len());
    let mut decoded_bytes = 0usize;
    for spec in &sig.inputs {
        let name = &spec.name;
        let input = by_name.get(name.as_str()).ok_or_else(|| bad(format!("input {name:?} is missing")))?;
        let want = datatype(spec.dtype);
        if input.datatype != want {
            return Err(bad(format!("input {name:?}: datatype {:?}, the model takes {want}", input.datatype)));
        }
        let shape = &input.shape;
        if shape.iter().any(|d| *d < 0) {
            return Err(bad(format!("input {name:?}: bad shape {shape:?}: a dimension is negative")));
        }
        let width = spec.width().unwrap_or(1) as i64;
        let n = match (shape.as_slice(), spec.shape.len()) {
            ([n, w], 2) if *w == width => *n,
            ([n], 1) => *n,
            ([n, 1], 1) => *n,
            _ => {
                let dims: Vec<String> =
                    spec.shape.iter().map(|d| d.map(|x| x.to_string()).unwrap_or("-1".into())).collect();
                return Err(bad(format!(
                    "input {name:?}: shape {shape:?} does not fit the model's [{}]",
                    dims.join(", ")
                )));
            }
        } as usize;
        if *rows.get_or_insert(n) != n {
            return Err(bad(format!("input {name:?} has {n} rows, another input {}", rows.unwrap_or(0))));
        }
        let int64 = spec.dtype == Some(DType::Int64);
        let elem = if int64 { 8 } else { 4 };
        let count = n.checked_mul(width as usize).filter(|c| c.checked_mul(elem).is_some()).ok_or_else(|| {
            bad(format!("input {name:?}: shape {shape:?} has more elements than any request can hold"))
        })?;
        // The most values the data can really hold: what is charged.
        let can_hold = match &input.data {
            Given::Raw(bytes) => {
                if bytes.len() != count * elem {
                    return Err(bad(format!(
                        "input {name:?}: {} bytes of binary data, its shape needs {}",
                        bytes.len(),
                        count * elem
                    )));
                }
                count
            }
            Given::F32(v) if !int64 => check_count(name, v.len(), count)?,
            Given::I64(v) if int64 => check_count(name, v.len(), count)?,
            Given::F32(_) | Given::I64(_) => {
                return Err(bad(format!("input {name:?}: the contents are of another type than its datatype")));
            }
            Given::Missing => return Err(bad(format!("input {name:?} has no data"))),
            Given::Json(raw) => count.min(tensor_json::most_values(raw)),
        };
        decoded_bytes += can_hold * elem;
        planned.push((name.as_str(), int64, count));
    }
    let rows = rows.unwrap_or(0);
    if rows == 0 {
        return Err(bad("the request has no rows".into()));
    }
    let charge = inflight.take(decoded_bytes, "decoding the request's tensors")?;
    let mut inputs = Vec::with_capacity(planned.len());
    for (name, int64, count) in planned {
        inputs.push(decode(name, int64, &by_name[name].data, count).map_err(bad)?);
    }
    Ok((inputs, rows, charge))
}

fn check_count(name: &str, given: usize, count: usize) -> Result<usize, ServeError> {
    if given != count {
        return Err(ServeError::new(
            Refusal::BadRequest,
            format!("input {name:?}: {given} values, its shape needs {count}"),
        ));
    }
    Ok(count)
}

/// Decodes data whose size [`bind`] has checked.
fn decode(name: &str, int64: bool, data: &Given<'_>, count: usize) -> Result<InputData, String> {
    Ok(match data {
        Given::Raw(bytes) if int64 => {
            InputData::I64(bytes.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes"))).collect())
        }
        Given::Raw(bytes) => {
            InputData::F32(bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect())
        }
        Given::F32(v) => InputData::F32(v.to_vec()),
        Given::I64(v) => InputData::I64(v.to_vec()),
        Given::Json(raw) => match tensor_json::decode(name, raw, count, int64)? {
            tensor_json::Values::F32(v) => InputData::F32(v),
            tensor_json::Values::I64(v) => InputData::I64(v),
        },
        Given::Missing => return Err(format!("input {name:?} has no data")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    fn runtime() -> &'static ModelRuntime {
        static RUNTIME: OnceLock<ModelRuntime> = OnceLock::new();
        RUNTIME.get_or_init(|| {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/ctr_gbdt.onnx");
            ModelRuntime::load_file(&path, RuntimeOptions::default()).expect("the reference model loads")
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        // Every protocol's data (HTTP binary and JSON, gRPC raw and typed)
        // with any declared shape: refused, or decoded to exactly the shape;
        // the charge never passes the budget and is given back in full.
        #[test]
        fn any_declared_shape_is_checked_against_the_data_given(
            shape in prop::collection::vec(prop_oneof![any::<i64>(), 0i64..4, Just(39i64), Just(i64::MAX)], 0..4),
            values in prop_oneof![0usize..200, Just(39usize), Just(78usize)],
            kind in 0u8..4,
            datatype in prop_oneof![Just("FP32"), Just("INT64"), Just("")],
        ) {
            let raw = vec![0u8; values * 4];
            let floats = vec![0.5f32; values];
            let ints = vec![1i64; values];
            let json = RawValue::from_string(format!("[{}]", vec!["1"; values].join(","))).unwrap();
            let data = match kind {
                0 => Given::Raw(&raw),
                1 => Given::F32(&floats),
                2 => Given::I64(&ints),
                _ => Given::Json(&json),
            };
            let budget = InflightBytes::new(1 << 20);
            let given = vec![GivenInput { name: "input", datatype, shape, data }];
            match bind(runtime(), given, &budget) {
                Ok((inputs, rows, charge)) => {
                    prop_assert_eq!(inputs[0].len(), rows * 39);
                    prop_assert!(charge.bytes() <= budget.limit());
                }
                Err(e) => prop_assert!(
                    matches!(e.kind, Refusal::BadRequest | Refusal::Busy | Refusal::TooLarge),
                    "{:?}: {}", e.kind, e.message
                ),
            }
            prop_assert_eq!(budget.used(), 0);
        }
    }
}
