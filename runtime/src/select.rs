//! Choosing the device for a process before any work: the requested
//! provider is registered and a tiny probe model committed and run on it,
//! so a provider that registers but cannot run (no driver, no GPU) shows at
//! start, not on the first shard.

use crate::device::DeviceOptions;
use crate::session::{ModelRuntime, RuntimeOptions};
use crate::tensor::InputData;
use crate::{Error, Result};

/// The model `select` commits on the requested device:
/// `y = x · [¼ ¼ ¼ ¼]ᵀ + 1` (MatMul, Add; every provider runs both).
/// Written by `runtime/assets/make_device_probe.py`.
pub const PROBE_MODEL: &[u8] = include_bytes!("../assets/device_probe.onnx");

/// Decides the device for this process before any work: registers the
/// requested provider and commits the probe model on it. On failure,
/// `--ep-fallback error` returns the error (naming the device, the reason
/// and the fix), `cpu` returns CPU options, counted and warned about.
pub fn select(options: &DeviceOptions) -> Result<DeviceOptions> {
    crate::library::prefer_gpu_library(options.device.is_gpu());
    let probe = RuntimeOptions { device: options.clone(), ..Default::default() };
    let runtime = ModelRuntime::load(PROBE_MODEL, "the device probe model", probe)?;
    let out = runtime.run(&[InputData::F32(vec![1.0; 8])], 2)?;
    if out.first().map(|c| c.data.get_f64(0)) != Some(2.0) {
        return Err(Error::Device {
            device: options.device.to_string(),
            message: format!("the probe model gave {:?} on it, expected 2", out.first().map(|c| c.data.get_f64(0))),
        });
    }
    let device = runtime.device();
    crate::metrics::set_info(options.requested(), device);
    let mut selected = options.clone();
    if device != options.device {
        selected.requested = Some(options.requested());
        selected.device = device;
    }
    tracing::info!(requested = %selected.requested(), device = %device, strict = options.strict, "execution device selected");
    Ok(selected)
}
