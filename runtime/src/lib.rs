//! The model runtime: the one place that touches ONNX Runtime (`ort`).
//!
//! It finds and loads the library (`library`), chooses the execution
//! device and its providers (`device`, `select`), loads models and runs
//! batches (`session`), counts fallbacks and reports the device in use
//! (`metrics`), and owns the bounded CPU pool that keeps decoding and
//! inference off the async runtime (`pool`). Batch workers, `serve`,
//! `bench` and training validation all run models through it.
//!
//! Imports point down: `error` ← `library` ← `device` ← `metrics` ←
//! `session` ← `select`; `pool` stands alone. It imports `hourglass-core`
//! (signatures) and `hourglass-format` (the tensors it runs on), never the
//! worker or the server.

pub mod device;
pub mod error;
pub mod library;
pub mod metrics;
pub mod pool;
pub mod select;
pub mod session;

pub use device::{Device, DeviceOptions, Fallback};
pub use error::{Error, Result};
pub use hourglass_format::tensor;
pub use hourglass_format::tensor::{ColumnData, InputData, OutputColumn, OutputTensor};
pub use library::{
    CPU_VENV, GPU_VENV, ORT_LIBRARY, available_providers, environment, find_library, library_info, prefer_gpu_library,
};
pub use session::{ModelRuntime, RuntimeOptions};
