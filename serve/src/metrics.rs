//! The server's metrics, declared in one place (`hourglass_serve_*`).

use crate::Loaded;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The server's metrics.
pub struct ServeMetrics {
    pub requests: Family<Vec<(String, String)>, Counter>,
    pub request_seconds: Histogram,
    pub queue_seconds: Histogram,
    pub batch_rows: Histogram,
    /// ONNX Runtime calls and the requests they answered: requests per
    /// call is how much batching happens.
    pub calls: Counter,
    pub batched_requests: Counter,
    pub queue_depth: Gauge,
    pub rejected: Counter,
    /// 1 for each model's serving version (labels: model, version, sha256).
    pub loaded: Family<Vec<(String, String)>, Gauge>,
    pub swaps: Family<Vec<(String, String)>, Counter>,
}

impl ServeMetrics {
    pub(crate) fn new() -> Self {
        let latency = || Histogram::new((0..16).map(|i| 0.0001 * 2f64.powi(i)));
        ServeMetrics {
            requests: Default::default(),
            request_seconds: latency(),
            queue_seconds: latency(),
            batch_rows: Histogram::new((0..14).map(|i| 2f64.powi(i))),
            calls: Counter::default(),
            batched_requests: Counter::default(),
            queue_depth: Gauge::default(),
            rejected: Counter::default(),
            loaded: Default::default(),
            swaps: Default::default(),
        }
    }

    /// Registers these metrics and the runtime's (the execution-provider
    /// fallbacks and the device in use), which every model-running process
    /// exports.
    pub fn register(&self, r: &mut Registry) {
        hourglass_runtime::metrics::register(r);
        let p = "hourglass_serve";
        r.register(format!("{p}_requests"), "Inference requests by model and outcome", self.requests.clone());
        r.register(format!("{p}_request_seconds"), "Time from request to response", self.request_seconds.clone());
        r.register(format!("{p}_queue_seconds"), "Time a request waited for its batch", self.queue_seconds.clone());
        r.register(format!("{p}_batch_rows"), "Rows per ONNX Runtime call", self.batch_rows.clone());
        r.register(format!("{p}_calls"), "ONNX Runtime calls (batches)", self.calls.clone());
        r.register(format!("{p}_batched_requests"), "Requests answered by those calls", self.batched_requests.clone());
        r.register(format!("{p}_queue_depth"), "Requests waiting for a batch", self.queue_depth.clone());
        r.register(format!("{p}_rejected"), "Requests refused because the queue was full", self.rejected.clone());
        r.register(format!("{p}_model_loaded"), "The version each model answers with (1)", self.loaded.clone());
        r.register(format!("{p}_model_swaps"), "Version switches by model and outcome", self.swaps.clone());
    }

    pub(crate) fn count(&self, model: &str, outcome: &str) {
        self.requests.get_or_create(&vec![("model".into(), model.into()), ("outcome".into(), outcome.into())]).inc();
    }

    pub(crate) fn loaded_labels(model: &str, l: &Loaded) -> Vec<(String, String)> {
        vec![
            ("model".into(), model.into()),
            ("version".into(), l.version.clone()),
            ("sha256".into(), l.runtime.sha256().into()),
            ("device".into(), l.runtime.device().to_string()),
        ]
    }
}
