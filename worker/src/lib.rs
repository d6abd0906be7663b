//! The worker runtime: leases tasks from a queue (shards to score, training
//! trials to run), does them and writes outputs and done records to the
//! store.
//!
//! It owns the lease mechanics (`lease`: receive, heartbeat, ack, release,
//! drain, generic over a task handler), the handlers (`infer`: score a
//! shard; `train`: stage a dataset, run a trainer, check and register its
//! model, promote the best), the per-shard pipeline (`shard`: read, decode with `hourglass-format`,
//! score, encode), the model runtime (`runtime`: ONNX Runtime sessions, the
//! one place that touches `ort`) and
//! the bounded CPU pool that keeps decoding and inference off the async
//! runtime, its probes (`health`) and the measurements `bench` and `demo`
//! report (`bench`). It must not plan jobs or decide scale: it never imports
//! the coordinator or the scaler.

pub mod bench;
pub mod config;
pub mod device;
pub mod error;
pub mod health;
pub mod infer;
pub mod lease;
pub mod metrics;
pub mod node;
pub mod pool;
pub mod runtime;
pub mod serve;
pub mod shard;
pub mod train;

pub use config::WorkerConfig;
pub use error::{Error, Result};
pub use runtime::{ModelRuntime, RuntimeOptions};
