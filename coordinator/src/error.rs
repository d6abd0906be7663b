//! The coordinator's error type: like every crate's, each variant has a
//! bounded kind (`hourglass_core::ErrorKind`) that says whether a retry can
//! help, and keeps its cause as a `source`, not as text.

use hourglass_core::ErrorKind;

type Cause = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Core(#[from] hourglass_core::Error),
    /// An input file does not fit the model, or cannot be read as its format.
    #[error("{file}: {message}")]
    Input { file: String, message: String },
    /// The output prefix already belongs to another job, or to this job
    /// planned otherwise: submitting again would mix two plans.
    #[error("{0}")]
    Conflict(String),
    /// The request itself cannot be carried out (no rows to score, no job
    /// at a prefix).
    #[error("{0}")]
    Invalid(String),
    /// The model could not be read or loaded.
    #[error("model: {0}")]
    Model(#[source] Cause),
    /// A library call failed inside the coordinator (the Parquet writer of
    /// synthetic data); `what` says which.
    #[error("{what}")]
    Internal {
        what: String,
        #[source]
        source: Cause,
    },
    /// No line end within the line limit after byte `at` (planning).
    #[error("no line end within the line limit after byte {at}")]
    LineTooLong { at: u64 },
}

impl Error {
    pub fn input(file: impl std::fmt::Display, message: impl std::fmt::Display) -> Self {
        Error::Input { file: file.to_string(), message: message.to_string() }
    }

    /// A model that could not be loaded; the cause stays its source.
    pub fn model(cause: impl Into<Cause>) -> Self {
        Error::Model(cause.into())
    }

    pub fn internal(what: impl Into<String>, source: impl Into<Cause>) -> Self {
        Error::Internal { what: what.into(), source: source.into() }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Core(e) => e.kind(),
            Error::Input { .. } | Error::Invalid(_) | Error::LineTooLong { .. } => ErrorKind::Invalid,
            Error::Conflict(_) => ErrorKind::Changed,
            // A store error anywhere in the cause chain decides (a model
            // unreadable while S3 throttles is worth another try).
            Error::Model(cause) => {
                let mut next: Option<&(dyn std::error::Error + 'static)> = Some(cause.as_ref());
                while let Some(e) = next {
                    if let Some(core) = e.downcast_ref::<hourglass_core::Error>() {
                        return core.kind();
                    }
                    next = e.source();
                }
                ErrorKind::Invalid
            }
            Error::Internal { .. } => ErrorKind::Permanent,
        }
    }

    /// Whether trying again later can succeed (the store or queue was
    /// unreachable or throttled).
    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_sources() {
        let core = hourglass_core::Error::store("get", "s3://b/k", ErrorKind::Throttled, "slow down");
        assert!(Error::from(core).is_retryable());
        let model = Error::model(hourglass_core::Error::store("get", "s3://b/m", ErrorKind::Transient, "reset"));
        assert!(model.is_retryable(), "a model unreadable for a passing reason is retryable");
        assert!(std::error::Error::source(&model).is_some());
        assert!(!Error::input("f.csv", "line 3: bad").is_retryable());
        assert!(!Error::Conflict("other job".into()).is_retryable());
    }
}
