//! The worker: leases tasks from a queue (shards to score, training trials
//! to run), does them and writes outputs and done records to the store.
//!
//! It owns the lease mechanics (`lease`: receive, heartbeat, ack, release,
//! drain, generic over a task handler), the handlers put together by kind
//! (`kinds`) (`infer`: score a
//! shard; `train`: stage a dataset, run a trainer, check and register its
//! model, promote the best), the per-shard pipeline (`shard`: read, decode
//! with `hourglass-format`, score with `hourglass-runtime`, encode), its
//! probes (`health`), its metrics (`metrics`) and the node it runs on
//! (`node`). It must not plan jobs or decide scale: it never imports the
//! coordinator or the scaler, nor the server or the benchmarks.

pub mod config;
pub mod error;
pub mod health;
pub mod infer;
pub mod kinds;
pub mod lease;
pub mod metrics;
pub mod node;
pub mod shard;
pub mod train;

pub use config::WorkerConfig;
pub use error::{Error, Result};
