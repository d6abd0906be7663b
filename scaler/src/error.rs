//! The scaler's error type: like every crate's, each variant has a bounded
//! kind that says whether a retry can help, and keeps its cause as a
//! `source`.

use crate::kube::KubeError;
use hourglass_core::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The queue's depth could not be read.
    #[error("reading queue depth")]
    QueueDepth(#[source] hourglass_core::Error),
    /// The job's ledger could not be read.
    #[error("reading the ledger")]
    Ledger(#[source] hourglass_core::Error),
    /// A Kubernetes API call failed.
    #[error("Kubernetes {op}")]
    Kube {
        op: &'static str,
        #[source]
        source: KubeError,
    },
    /// The kubeconfig file could not be read or used.
    #[error("kubeconfig {path}")]
    Kubeconfig {
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::QueueDepth(e) | Error::Ledger(e) => e.kind(),
            Error::Kube { source, .. } => source.error_kind(),
            Error::Kubeconfig { .. } => ErrorKind::Invalid,
        }
    }

    /// Whether the next tick may succeed where this one failed.
    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
