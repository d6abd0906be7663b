//! The format's errors: a bad row, input that cannot be decoded, output
//! that cannot be encoded, or the store failing underneath. The worker maps
//! each onto its own variant of the same name (same `kind()` label).

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Core(#[from] hourglass_core::Error),
    /// A malformed input row; `line` is 1-based in the file.
    #[error("{file} line {line}{}: {message}", column.as_ref().map(|c| format!(", column {c}")).unwrap_or_default())]
    BadRow { file: String, line: u64, column: Option<String>, message: String },
    /// Input that cannot be decoded at all (corrupt Parquet, bad encoding).
    #[error("{file}: {message}")]
    Decode { file: String, message: String },
    /// Encoding the output failed.
    #[error("failed to encode output for shard {shard}: {message}")]
    Encode { shard: String, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
