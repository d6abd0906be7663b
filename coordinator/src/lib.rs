//! The coordinator: turns a user's request into a job and watches it.
//!
//! It owns planning (`plan`: list the input files, read their schemas,
//! check them against the model, cut shards), submission (`submit`: write
//! the job record, enqueue the shards not yet done), and reading the ledger
//! (`status`, `verify`). `synth` generates the reference CTR data for demos
//! and benchmarks. It never scores rows and never scales anything; the
//! model's signature reaches it from the CLI, which loads the model through
//! the worker runtime.

pub mod error;
pub mod plan;
pub mod status;
pub mod submit;
pub mod synth;
pub mod train;
pub mod trigger;
pub mod verify;

pub use error::{Error, Result};
