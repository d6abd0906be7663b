//! Codecs: CSV and Parquet shards in, Parquet out. Decoders produce
//! `Batch`es of at most `batch_size` rows, so memory is bounded by the batch,
//! not the shard.

pub mod csv;
pub mod output;
pub mod parquet;
mod parquet_direct;

use crate::runtime::InputData;
use arrow_array::ArrayRef;

/// Decoded rows: the id column, passed through untouched, and one
/// row-major buffer per model input.
#[derive(Debug)]
pub struct Batch {
    pub ids: ArrayRef,
    /// The kept input columns, in the order the shard was told.
    pub kept: Vec<ArrayRef>,
    pub inputs: Vec<InputData>,
    pub rows: usize,
}
