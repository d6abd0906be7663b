//! The model runtime against Python ONNX Runtime: the 1,000 golden rows,
//! decoded by the CSV codec and scored through `ModelRuntime`, match the
//! predictions `models/make_models.py` recorded, within 1e-5, for both
//! reference models.

mod golden_check;

use golden_check::check_model;
use hourglass_worker::{ModelRuntime, RuntimeOptions};

#[test]
fn ctr_gbdt_matches_python_golden_predictions() {
    check_model("ctr_gbdt", RuntimeOptions::default());
}

#[test]
fn ctr_mlp_matches_python_golden_predictions() {
    check_model("ctr_mlp", RuntimeOptions::default());
}

#[test]
fn corrupt_model_is_a_clear_error() {
    let err =
        ModelRuntime::load(b"definitely not onnx", "bad.onnx", RuntimeOptions::default()).unwrap_err().to_string();
    assert!(err.contains("bad.onnx") && err.contains("not a loadable ONNX model"), "{err}");
}
