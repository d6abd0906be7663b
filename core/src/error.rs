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

/// The underlying error a store or queue error came from (an SDK error, an
/// IO error, a SQLite error), kept for `source()` chains and downcasts.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A blob store operation failed; `target` is the full URL (with range).
    /// `message` says what the person needs (with the backend's error code
    /// and a hint); `source`, when kept, is the backend's own error.
    #[error("failed to {op} {target}: {message}")]
    Store {
        op: &'static str,
        target: String,
        kind: ErrorKind,
        message: String,
        #[source]
        source: Option<Cause>,
    },
    /// A queue operation failed.
    #[error("queue {queue}: failed to {op}: {message}")]
    Queue {
        op: &'static str,
        queue: String,
        kind: ErrorKind,
        message: String,
        #[source]
        source: Option<Cause>,
    },
    /// A message, record or URL does not follow the contract.
    #[error("{what}: {message}")]
    Invalid { what: String, message: String },
}

impl Error {
    pub fn store(op: &'static str, target: impl Into<String>, kind: ErrorKind, message: impl fmt::Display) -> Self {
        Error::Store { op, target: target.into(), kind, message: message.to_string(), source: None }
    }

    pub fn queue(op: &'static str, queue: impl Into<String>, kind: ErrorKind, message: impl fmt::Display) -> Self {
        Error::Queue { op, queue: queue.into(), kind, message: message.to_string(), source: None }
    }

    pub fn invalid(what: impl Into<String>, message: impl fmt::Display) -> Self {
        Error::Invalid { what: what.into(), message: message.to_string() }
    }

    /// Keeps `cause` as this error's source.
    pub fn caused_by(mut self, cause: impl Into<Cause>) -> Self {
        if let Error::Store { source, .. } | Error::Queue { source, .. } = &mut self {
            *source = Some(cause.into());
        }
        self
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

/// An error and its causes on one line, `outer: inner: innermost`, for logs
/// and the CLI. A cause whose text its parent already shows (a message
/// that quotes the SDK's error, say) is not repeated.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        let text = e.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = e.source();
    }
    out
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_keep_causes_without_repeating_them() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "permission denied");
        let e = Error::store("get", "file:///x", io_kind(&io), io.to_string()).caused_by(io);
        assert_eq!(e.kind(), ErrorKind::Permission);
        assert!(std::error::Error::source(&e).unwrap().downcast_ref::<std::io::Error>().is_some());
        assert_eq!(chain(&e), "failed to get file:///x: permission denied");
    }
}
