//! The worker's error type: each variant knows whether a retry can help and
//! has a short bounded `kind()` for records and metric labels.

use hourglass_core::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Core(#[from] hourglass_core::Error),
    /// The model runtime's: ONNX Runtime not found, a device that cannot
    /// be used, a model refused, inference failed (`hourglass_runtime`).
    #[error(transparent)]
    Runtime(hourglass_runtime::Error),
    /// A malformed input row; `line` is 1-based in the file.
    #[error("{file} line {line}{}: {message}", column.as_ref().map(|c| format!(", column {c}")).unwrap_or_default())]
    BadRow { file: String, line: u64, column: Option<String>, message: String },
    /// Input that cannot be decoded at all (corrupt Parquet, bad encoding).
    #[error("{file}: {message}")]
    Decode { file: String, message: String },
    /// Encoding the output failed.
    #[error("failed to encode output for shard {shard}: {message}")]
    Encode { shard: String, message: String },
    /// The worker is stopping and gave the shard up.
    #[error("shard abandoned: the worker is shutting down")]
    Cancelled,
    /// The lease ran out or was taken over: another worker owns the shard.
    #[error("lease lost: {0}")]
    LeaseLost(String),
    /// A training trial failed: the trainer or its model (see
    /// [`TrialFailure`]).
    #[error("{message}")]
    Trial { kind: TrialFailure, message: String, log_tail: Option<String> },
    /// Delivered more times than allowed without any attempt recording a
    /// result: its workers died while holding it.
    #[error(
        "delivered {deliveries} times without a result (max attempts {max_attempts}): OOM kill or spot interruption?"
    )]
    Lost { deliveries: u32, max_attempts: u32 },
}

/// Why a training trial failed; its label is the failed record's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrialFailure {
    /// The trainer exited non-zero, or could not be started.
    TrainerFailed,
    /// The trainer ran past `max_train_time` (or the drain timeout).
    TrainerTimeout,
    /// The job names a trainer this worker was not given (`--trainer`).
    TrainerUnknown,
    /// The model the trainer wrote is refused: not loadable, not binding
    /// the dataset, predictions or outputs wrong.
    ModelRefused,
}

impl TrialFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            TrialFailure::TrainerFailed => "trainer_failed",
            TrialFailure::TrainerTimeout => "trainer_timeout",
            TrialFailure::TrainerUnknown => "trainer_unknown",
            TrialFailure::ModelRefused => "model_refused",
        }
    }
}

/// A runtime error; a store error underneath stays a store error (its
/// retry rule and kind).
impl From<hourglass_runtime::Error> for Error {
    fn from(e: hourglass_runtime::Error) -> Self {
        use hourglass_runtime::Error as R;
        match e {
            R::Core(e) => Error::Core(e),
            other => Error::Runtime(other),
        }
    }
}

/// A format error is the worker's variant of the same name.
impl From<hourglass_format::Error> for Error {
    fn from(e: hourglass_format::Error) -> Self {
        use hourglass_format::Error as F;
        match e {
            F::Core(e) => Error::Core(e),
            F::BadRow { file, line, column, message } => Error::BadRow { file, line, column, message },
            F::Decode { file, message } => Error::Decode { file, message },
            F::Encode { shard, message } => Error::Encode { shard, message },
        }
    }
}

impl Error {
    /// A short label for failed records and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Core(e) if e.kind() == ErrorKind::Changed => "input_changed",
            Error::Core(e) => e.kind().as_str(),
            Error::Runtime(e) => e.kind(),
            Error::BadRow { .. } => "bad_row",
            Error::Decode { .. } => "decode",
            Error::Encode { .. } => "encode",
            Error::Cancelled => "cancelled",
            Error::LeaseLost(_) => "lease_lost",
            Error::Trial { kind, .. } => kind.as_str(),
            Error::Lost { .. } => "lost",
        }
    }

    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Core(e) => e.is_retryable(),
            Error::Cancelled => true,
            _ => false,
        }
    }

    /// The trainer output that explains a failed trial.
    pub fn log_tail(&self) -> Option<&str> {
        match self {
            Error::Trial { log_tail, .. } => log_tail.as_deref(),
            _ => None,
        }
    }

    /// Whether the message itself is unusable (never worth another attempt).
    pub fn is_invalid_message(&self) -> bool {
        matches!(self, Error::Core(e) if e.kind() == ErrorKind::Invalid)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
