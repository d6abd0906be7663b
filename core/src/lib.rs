//! Contracts shared by every Hourglass component, and nothing else.
//!
//! `hourglass-core` owns the wire and storage formats (the shard task, the job
//! ledger), the identifiers, the two seams the engine is built on (`Queue`
//! and `BlobStore`) with their backends, URL parsing and telemetry setup. It
//! holds no engine logic: planning lives in the coordinator, scoring in the
//! worker, scaling in the scaler. It imports none of our other crates.

pub mod aws;
pub mod compat;
pub mod cost;
pub mod error;
pub mod fault;
pub mod iam;
pub mod ids;
pub mod jobs;
pub mod ledger;
pub mod metrics;
pub mod model;
pub mod queue;
pub mod registry;
pub mod retry;
pub mod rng;
pub mod schedule;
pub mod store;
pub mod task;
pub mod telemetry;
pub mod train;
pub mod units;
pub mod url;

pub use error::{Error, ErrorKind, Result};
pub use ids::{JobId, MessageId, Receipt, ShardId};
pub use url::BlobUrl;
