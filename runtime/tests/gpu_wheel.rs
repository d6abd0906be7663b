//! The GPU path on a machine without a GPU, against ONNX Runtime's GPU
//! build (`onnxruntime-gpu==1.31.1` in `.venv-gpu`, which `make test`
//! installs with `make setup-gpu-runtime`). This test binary loads that
//! library and nothing else (the ONNX Runtime environment is per process):
//! - `--ep-fallback error` fails with the provider's own reason, naming the
//!   device and the library that is missing, and counts no fallback;
//! - `--ep-fallback cpu` runs the golden check on the CPU, counts one
//!   fallback per model load and reports `cpu` as the device in use;
//! - the same for TensorRT; strict placement never falls back.
//!
//! Each test asks for its own GPU index, so the fallback counters (labelled
//! by the device asked for) are not shared between tests running at once.
//! Without the GPU build the first assertion fails: `make test` installs it.

mod golden_check;

use golden_check::check_model;
use hourglass_runtime::device::{Device, DeviceOptions, Fallback};
use hourglass_runtime::{self as runtime, ModelRuntime};
use hourglass_runtime::{Error, RuntimeOptions};
use hourglass_runtime::{device, metrics, select};

/// Loads the GPU build (`.venv-gpu` is looked for first, walking up from
/// the crate) and checks it is the one loaded.
fn gpu_build() {
    runtime::prefer_gpu_library(true);
    let (path, version) = runtime::library_info().expect("ONNX Runtime loads");
    assert!(
        path.to_string_lossy().contains(runtime::GPU_VENV),
        "expected onnxruntime-gpu from {} (`make setup-gpu-runtime`), loaded {}",
        runtime::GPU_VENV,
        path.display()
    );
    assert_eq!(version, "1.31.1");
    let providers = runtime::available_providers().unwrap();
    for p in ["CUDAExecutionProvider", "TensorrtExecutionProvider"] {
        assert!(providers.iter().any(|x| x == p), "{p} not built into {}: {providers:?}", path.display());
    }
}

fn options(device: Device, fallback: Fallback) -> RuntimeOptions {
    let cache = std::env::temp_dir().join(format!("hourglass-trt-test-{}", std::process::id()));
    RuntimeOptions { device: DeviceOptions::new(device, fallback, false, Some(cache)), ..Default::default() }
}

fn model_bytes(name: &str) -> Vec<u8> {
    std::fs::read(golden_check::models_dir().join(format!("{name}.onnx"))).unwrap()
}

/// The error policy: a `Device` error with the provider's reason, no
/// fallback counted.
fn assert_refused(device: Device, options: RuntimeOptions, missing: &str) {
    gpu_build();
    let err = ModelRuntime::load(&model_bytes("ctr_gbdt"), "ctr_gbdt.onnx", options).unwrap_err();
    assert!(matches!(err, Error::Device { .. }), "{err:?}");
    assert_eq!(err.kind(), "device");
    let text = err.to_string();
    assert!(text.starts_with(&format!("device {device}: ")), "{text}");
    assert!(text.contains(missing), "the reason names {missing}: {text}");
    assert!(text.contains("cannot open shared object file"), "{text}");
    assert_eq!(metrics::fallback_count(device), 0);
}

/// The missing library: what the CUDA provider needs first and the
/// wheel does not ship. With `make setup-gpu`'s CUDA wheels installed it
/// is the driver's `libcuda.so.1` instead; both are named.
fn first_missing() -> &'static str {
    let (path, _) = runtime::library_info().unwrap();
    if device::wheel_library_dirs(&path).is_empty() { "libcublas" } else { "libcuda.so.1" }
}

#[test]
fn cuda_with_error_policy_names_the_missing_library() {
    gpu_build();
    let missing = first_missing();
    assert_refused(Device::Cuda(3), options(Device::Cuda(3), Fallback::Error), missing);
}

#[test]
fn tensorrt_with_error_policy_names_the_missing_library() {
    gpu_build();
    let (path, _) = runtime::library_info().unwrap();
    let missing = if device::wheel_library_dirs(&path).is_empty() { "libcublas" } else { "libnvinfer" };
    assert_refused(Device::TensorRt(3), options(Device::TensorRt(3), Fallback::Error), missing);
}

#[test]
fn strict_placement_never_falls_back() {
    gpu_build();
    let mut o = options(Device::Cuda(4), Fallback::Cpu);
    o.device.strict = true;
    let err = ModelRuntime::load(&model_bytes("ctr_mlp"), "ctr_mlp.onnx", o).unwrap_err();
    assert!(matches!(err, Error::Device { .. }), "{err:?}");
    assert_eq!(metrics::fallback_count(Device::Cuda(4)), 0);
}

/// Both reference models on the CPU after the fallback: golden outputs,
/// one fallback counted per load, `cpu` as the device in use.
fn assert_golden_after_fallback(gbdt: Device, mlp: Device) {
    gpu_build();
    for (name, device) in [("ctr_gbdt", gbdt), ("ctr_mlp", mlp)] {
        let runtime = check_model(name, options(device, Fallback::Cpu));
        assert_eq!(runtime.device(), Device::Cpu, "{name} asked for {device}");
        assert_eq!(metrics::fallback_count(device), 1, "{name}: one fallback for one load of {device}");
    }
}

#[test]
fn cuda_falls_back_to_cpu_and_matches_golden() {
    assert_golden_after_fallback(Device::Cuda(1), Device::Cuda(2));
}

#[test]
fn tensorrt_falls_back_to_cpu_and_matches_golden() {
    assert_golden_after_fallback(Device::TensorRt(1), Device::TensorRt(2));
}

#[test]
fn select_settles_on_cpu_once_and_says_what_was_asked() {
    gpu_build();
    let asked = DeviceOptions::new(Device::Cuda(5), Fallback::Cpu, false, None);
    let selected = select::select(&asked).unwrap();
    assert_eq!(selected.device, Device::Cpu);
    assert_eq!(selected.requested(), Device::Cuda(5));
    assert_eq!(metrics::fallback_count(Device::Cuda(5)), 1);
    // Later loads go straight to the CPU: no second fallback.
    let runtime = check_model("ctr_gbdt", RuntimeOptions { device: selected, ..Default::default() });
    assert_eq!(runtime.device(), Device::Cpu);
    assert_eq!(metrics::fallback_count(Device::Cuda(5)), 1);
    let refused = select::select(&DeviceOptions::new(Device::Cuda(6), Fallback::Error, false, None)).unwrap_err();
    assert!(refused.to_string().starts_with("device cuda:6: CUDA execution provider unavailable"), "{refused}");
}
