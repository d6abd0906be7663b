//! The file formats Hourglass reads and writes, and their rules.
//!
//! Inputs: CSV and TSV (plain, gzip or zstd) and Parquet, decoded into
//! `Batch`es of row-major tensors (`csv`, `parquet`); outputs: Parquet,
//! CSV or JSON lines (`output`). The read rules — what a number is
//! (`number`), where a line ends (`lines`), how a compressed stream opens
//! (`compression`), how a Parquet footer is read (`parquet::read_footer`) —
//! live here once: the coordinator checks files at submit with the same
//! code the worker decodes them with, so a file the planner accepts is a
//! file the worker reads.
//!
//! It imports only `hourglass-core` (for the model's bindings and the blob
//! store); the worker and the coordinator import it.

pub mod batch;
pub mod compression;
pub mod csv;
pub mod error;
pub mod lines;
pub mod number;
pub mod output;
pub mod parquet;
mod parquet_direct;
pub mod tensor;

pub use batch::{Batch, empty_tensor, recycle, tensor_buffer};
pub use error::{Error, Result};
