//! The model runtime against Python ONNX Runtime: the 1,000 golden rows,
//! decoded by the CSV codec and scored through `ModelRuntime`, match the
//! predictions `models/make_models.py` recorded, within 1e-5, for both
//! reference models.

//!
//! On the CPU by default. `scripts/gpu-check` runs the same tests on a GPU:
//! HOURGLASS_TEST_DEVICE=cuda|tensorrt loads ONNX Runtime's GPU build and
//! scores there (fallback `error`: the test fails if the GPU cannot be
//! used), and the device in use must be the one asked for.
//! HOURGLASS_TEST_EP_FALLBACK=cpu lets the script's plumbing be tried on a
//! machine without a GPU: the device in use must then be the CPU.

mod golden_check;

use golden_check::check_model;
use hourglass_runtime::device::{Device, DeviceOptions, Fallback};
use hourglass_runtime::metrics;
use hourglass_runtime::{ModelRuntime, RuntimeOptions};

/// The device under test (HOURGLASS_TEST_DEVICE, default cpu).
fn device_under_test() -> DeviceOptions {
    let parse = |var: &str| std::env::var(var).ok().filter(|v| !v.is_empty());
    let device: Device = parse("HOURGLASS_TEST_DEVICE").map(|d| d.parse().unwrap()).unwrap_or_default();
    let fallback: Fallback = parse("HOURGLASS_TEST_EP_FALLBACK").map(|f| f.parse().unwrap()).unwrap_or_default();
    hourglass_runtime::prefer_gpu_library(device.is_gpu());
    DeviceOptions::new(device, fallback, false, None)
}

fn check_on_device_under_test(name: &str) {
    let options = device_under_test();
    let runtime = check_model(name, RuntimeOptions { device: options.clone(), ..Default::default() });
    let expected = if options.fallback == Fallback::Cpu { Device::Cpu } else { options.device };
    assert_eq!(runtime.device(), expected, "{name} ran on {}", runtime.device());
    if options.device.is_gpu() {
        eprintln!("{name}: golden predictions matched on {}", runtime.device());
        assert_eq!(metrics::fallback_count(options.device) > 0, expected == Device::Cpu);
    }
}

#[test]
fn ctr_gbdt_matches_python_golden_predictions() {
    check_on_device_under_test("ctr_gbdt");
}

#[test]
fn ctr_mlp_matches_python_golden_predictions() {
    check_on_device_under_test("ctr_mlp");
}

#[test]
fn corrupt_model_is_a_clear_error() {
    let err =
        ModelRuntime::load(b"definitely not onnx", "bad.onnx", RuntimeOptions::default()).unwrap_err().to_string();
    assert!(err.contains("bad.onnx") && err.contains("not a loadable ONNX model"), "{err}");
}
