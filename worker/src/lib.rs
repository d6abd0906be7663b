//! The worker runtime: leases shard tasks from a queue, scores them with
//! ONNX Runtime and writes outputs and done records to the store.
//!
//! It owns the lease loop (`lease`: receive, heartbeat, ack, release,
//! drain), the per-shard pipeline (`shard`: read, decode, score, encode),
//! the model runtime (`runtime`: ONNX Runtime sessions, the one place that
//! touches `ort`), the codecs (`codec`: CSV and Parquet in, Parquet out) and
//! the bounded CPU pool that keeps decoding and inference off the async
//! runtime, its probes (`health`) and the measurements `bench` and `demo`
//! report (`bench`). It must not plan jobs or decide scale: it never imports
//! the coordinator or the scaler.

pub mod bench;
pub mod codec;
pub mod config;
pub mod error;
pub mod health;
pub mod infer;
pub mod lease;
pub mod metrics;
pub mod pool;
pub mod runtime;
pub mod serve;
pub mod shard;
pub mod train;

pub use config::WorkerConfig;
pub use error::{Error, Result};
pub use runtime::{ModelRuntime, RuntimeOptions};
