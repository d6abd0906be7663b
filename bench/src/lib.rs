//! Every measurement Hourglass reports, each written once; `hourglass bench
//! …` and `demo` are thin front ends over it, and no product crate carries
//! a measurement loop.
//!
//! - `ceiling`: ONNX Runtime alone, the ceiling every ratio is against;
//! - `proc`: where a process's CPU and memory go, from `/proc`;
//! - `pipeline`: the batch pipeline's stages (raw, decode only, the whole
//!   pipeline in worker processes) and the report `bench` and `demo` print;
//! - `serve_load`: a closed-loop load generator against `hourglass serve`
//!   over loopback, HTTP and gRPC;
//! - `ledger`: the ledger's own store requests per shard and `status`'s
//!   latency as jobs grow.
//!
//! Criterion micro-benchmarks stay beside what they measure
//! (`format/benches`).

pub mod ceiling;
pub mod ledger;
pub mod pipeline;
pub mod proc;
pub mod serve_load;
