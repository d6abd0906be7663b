//! The coordinator's error type.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Core(#[from] hourglass_core::Error),
    /// An input file does not fit the model, or cannot be read as its format.
    #[error("{file}: {message}")]
    Input { file: String, message: String },
    /// The request itself is wrong (no inputs, conflicting job).
    #[error("{0}")]
    Request(String),
    /// No line end within the line limit after byte `at` (planning).
    #[error("no line end within the line limit after byte {at}")]
    LineTooLong { at: u64 },
}

impl Error {
    pub fn input(file: impl std::fmt::Display, message: impl std::fmt::Display) -> Self {
        Error::Input { file: file.to_string(), message: message.to_string() }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
