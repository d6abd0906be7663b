//! The one error type of `hourglass-core`: a small kind plus the context a
//! person needs (which object, which queue, which operation).

use std::fmt;

/// What went wrong, bounded, so it can be a metric label and drive retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The object, queue or record does not exist.
    NotFound,
    /// Credentials or permissions refuse the operation.
    Permission,
    /// The backend asked us to slow down.
    Throttled,
    /// A passing fault (timeout, connection reset, busy database).
    Transient,
    /// Will fail again the same way (bad request, corrupt data).
    Permanent,
    /// The input itself is wrong (malformed message, unknown version).
    Invalid,
    /// The object is no longer the version that was pinned (`If-Match`).
    Changed,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::Permission => "permission",
            ErrorKind::Throttled => "throttled",
            ErrorKind::Transient => "transient",
            ErrorKind::Permanent => "permanent",
            ErrorKind::Invalid => "invalid",
            ErrorKind::Changed => "changed",
        }
    }

    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Throttled | ErrorKind::Transient)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A blob store operation failed; `target` is the full URL (with range).
    #[error("failed to {op} {target}: {message}")]
    Store { op: &'static str, target: String, kind: ErrorKind, message: String },
    /// A queue operation failed.
    #[error("queue {queue}: failed to {op}: {message}")]
    Queue { op: &'static str, queue: String, kind: ErrorKind, message: String },
    /// A message, record or URL does not follow the contract.
    #[error("{what}: {message}")]
    Invalid { what: String, message: String },
}

impl Error {
    pub fn store(op: &'static str, target: impl Into<String>, kind: ErrorKind, message: impl fmt::Display) -> Self {
        Error::Store { op, target: target.into(), kind, message: message.to_string() }
    }

    pub fn queue(op: &'static str, queue: impl Into<String>, kind: ErrorKind, message: impl fmt::Display) -> Self {
        Error::Queue { op, queue: queue.into(), kind, message: message.to_string() }
    }

    pub fn invalid(what: impl Into<String>, message: impl fmt::Display) -> Self {
        Error::Invalid { what: what.into(), message: message.to_string() }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Store { kind, .. } | Error::Queue { kind, .. } => *kind,
            Error::Invalid { .. } => ErrorKind::Invalid,
        }
    }

    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }

    pub fn is_not_found(&self) -> bool {
        self.kind() == ErrorKind::NotFound
    }
}

/// Maps an IO error to a kind; used by the filesystem store and local queue.
pub fn io_kind(err: &std::io::Error) -> ErrorKind {
    use std::io::ErrorKind as K;
    match err.kind() {
        K::NotFound => ErrorKind::NotFound,
        K::PermissionDenied | K::ReadOnlyFilesystem => ErrorKind::Permission,
        K::Interrupted | K::TimedOut | K::WouldBlock => ErrorKind::Transient,
        _ => ErrorKind::Permanent,
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
