//! The runtime's metrics: execution-provider fallbacks and the device in
//! use. Process-wide: a fallback happens wherever a model is loaded
//! (worker, serve, bench), and every metrics endpoint the process serves
//! shows it (`register`).

use crate::device::Device;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::LazyLock;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FallbackLabels {
    /// The device asked for (`cuda:0`, `tensorrt:0`).
    pub requested: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeviceLabels {
    pub requested: String,
    /// The device in use.
    pub device: String,
}

struct DeviceMetrics {
    fallbacks: Family<FallbackLabels, Counter>,
    info: Family<DeviceLabels, Gauge>,
}

static METRICS: LazyLock<DeviceMetrics> =
    LazyLock::new(|| DeviceMetrics { fallbacks: Family::default(), info: Family::default() });

/// Registers `hourglass_ep_fallback_total` and `hourglass_device_info`.
pub fn register(registry: &mut Registry) {
    registry.register(
        "hourglass_ep_fallback",
        "Model loads that fell back to the CPU because the requested execution provider could not be used",
        METRICS.fallbacks.clone(),
    );
    registry.register(
        "hourglass_device_info",
        "1 for the device this process runs models on, labelled with the device asked for",
        METRICS.info.clone(),
    );
}

/// Fallbacks counted so far for `requested` (tests and `bench` read it).
pub fn fallback_count(requested: Device) -> u64 {
    METRICS.fallbacks.get_or_create(&FallbackLabels { requested: requested.to_string() }).get()
}

pub(crate) fn count_fallback(requested: Device, reason: &str) {
    METRICS.fallbacks.get_or_create(&FallbackLabels { requested: requested.to_string() }).inc();
    tracing::warn!(requested = %requested, device = "cpu", reason = %reason, "execution provider unavailable: running on the CPU (--ep-fallback cpu)");
}

pub(crate) fn set_info(requested: Device, device: Device) {
    METRICS.info.clear();
    METRICS.info.get_or_create(&DeviceLabels { requested: requested.to_string(), device: device.to_string() }).set(1);
}
