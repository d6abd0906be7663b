//! The runtime's errors. The worker maps each onto its variant of the same
//! name, so records and metrics keep their `kind()` labels.

use hourglass_core::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Core(#[from] hourglass_core::Error),
    /// ONNX Runtime could not be found or loaded.
    #[error("{0}")]
    RuntimeLibrary(String),
    /// The requested execution device cannot be used (its provider does
    /// not register, or a model cannot run on it under strict placement).
    #[error("device {device}: {message}")]
    Device { device: String, message: String },
    /// The model cannot be loaded or is not what the task says it is.
    #[error("model {model}: {message}")]
    Model { model: String, message: String },
    /// Inference failed on a batch.
    #[error("inference failed on {model}: {message}")]
    Inference { model: String, message: String },
}

impl Error {
    /// A short label for failed records and metrics (the worker's labels).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Core(e) if e.kind() == ErrorKind::Changed => "input_changed",
            Error::Core(e) => e.kind().as_str(),
            Error::RuntimeLibrary(_) => "runtime_library",
            Error::Device { .. } => "device",
            Error::Model { .. } => "model",
            Error::Inference { .. } => "inference",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
