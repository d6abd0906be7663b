//! The shard task: one queue message, JSON, version 1, unknown fields
//! rejected. It carries everything a stateless worker needs to score one
//! shard and record the result; the attempt count comes from the queue.

use crate::{BlobUrl, Error, JobId, Result, ShardId};
use serde::{Deserialize, Serialize};

/// Longest CSV line accepted by default: a cut point looks this far for a
/// line end, and a worker buffers no more than this of one line.
pub const DEFAULT_MAX_LINE_BYTES: u64 = 1 << 20;

/// The version this build writes and the only one it reads.
pub const TASK_VERSION: u32 = 1;
/// SQS refuses bodies over 256 KiB; the local queue holds itself to the same
/// limit so a job that works locally works on SQS.
pub const MAX_TASK_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    Parquet,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Parquet => "parquet",
        }
    }

    /// Guesses the format from a file name; `None` for files to skip.
    pub fn from_file_name(name: &str) -> Option<Self> {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".csv") {
            Some(Format::Csv)
        } else if lower.ends_with(".parquet") || lower.ends_with(".pq") {
            Some(Format::Parquet)
        } else {
            None
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The part of one input file a shard covers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardInput {
    pub url: BlobUrl,
    pub format: Format,
    /// CSV: byte range `[start, end)`; `start` is the first byte of a line
    /// after the header, `end` is one past a newline or the end of the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<[u64; 2]>,
    /// CSV: the header's column names (only the first shard holds the header
    /// line, and it is excluded from every range).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
    /// Parquet: the row groups of this shard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_groups: Option<Vec<usize>>,
    /// The file's version when the job was planned (`ObjectMeta::version`):
    /// reads send it as `If-Match`, so a file rewritten under a running job
    /// fails its shards (kind `changed`) instead of being misread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRef {
    pub url: BlobUrl,
    /// Hex sha256 of the model bytes; a worker refuses a model that differs.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardTask {
    pub v: u32,
    pub job: JobId,
    pub shard: ShardId,
    pub input: ShardInput,
    pub model: ModelRef,
    /// The job's output prefix; the ledger lives under it.
    pub output: BlobUrl,
    /// Name of the column passed through to the output to identify rows.
    pub id_column: String,
    /// Malformed rows a shard may skip (recorded, never dropped silently).
    pub max_bad_rows: u64,
    /// Longest CSV line the worker buffers.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_unix_ms: Option<u64>,
}

fn default_max_line_bytes() -> u64 {
    DEFAULT_MAX_LINE_BYTES
}

impl ShardTask {
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a shard task always serializes")
    }

    /// Decodes and validates one message body. Every failure is `Invalid`:
    /// the message can never succeed and belongs in the dead-letter queue.
    pub fn decode(body: &str) -> Result<Self> {
        if body.len() > MAX_TASK_BYTES {
            return Err(Error::invalid(
                "shard task",
                format!("message of {} bytes exceeds the {} byte limit", body.len(), MAX_TASK_BYTES),
            ));
        }
        let value: serde_json::Value =
            serde_json::from_str(body).map_err(|e| Error::invalid("shard task", format!("not json: {e}")))?;
        match value.get("v").and_then(|v| v.as_u64()) {
            Some(v) if v == u64::from(TASK_VERSION) => {}
            Some(v) => {
                return Err(Error::invalid(
                    "shard task",
                    format!("unknown version {v}; this worker reads version {TASK_VERSION}"),
                ));
            }
            None => return Err(Error::invalid("shard task", "missing version field \"v\"")),
        }
        let task: ShardTask = serde_json::from_value(value).map_err(|e| Error::invalid("shard task", e.to_string()))?;
        task.validate()?;
        Ok(task)
    }

    fn validate(&self) -> Result<()> {
        let what = || format!("shard task {}/{}", self.job, self.shard);
        match self.input.format {
            Format::Csv => {
                let Some([start, end]) = self.input.range else {
                    return Err(Error::invalid(what(), "csv input needs a byte range"));
                };
                if start > end {
                    return Err(Error::invalid(what(), format!("byte range {start}-{end} is reversed")));
                }
                if self.input.columns.as_ref().is_none_or(|c| c.is_empty()) {
                    return Err(Error::invalid(what(), "csv input needs its header columns"));
                }
            }
            Format::Parquet => {
                if self.input.row_groups.is_none() {
                    return Err(Error::invalid(what(), "parquet input needs row groups"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> ShardTask {
        ShardTask {
            v: TASK_VERSION,
            job: JobId::parse("j1").unwrap(),
            shard: ShardId::from_index(3),
            input: ShardInput {
                url: BlobUrl::parse("s3://in/a.csv").unwrap(),
                format: Format::Csv,
                range: Some([10, 20]),
                columns: Some(vec!["id".into(), "x".into()]),
                row_groups: None,
                version: None,
            },
            model: ModelRef { url: BlobUrl::parse("s3://m/model.onnx").unwrap(), sha256: "ab".into() },
            output: BlobUrl::parse("s3://out/p/").unwrap(),
            id_column: "id".into(),
            max_bad_rows: 0,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            deadline_unix_ms: None,
        }
    }

    #[test]
    fn round_trips() {
        let t = task();
        assert_eq!(ShardTask::decode(&t.encode()).unwrap(), t);
    }

    #[test]
    fn rejects_unknown_fields_versions_and_oversize() {
        let mut v: serde_json::Value = serde_json::from_str(&task().encode()).unwrap();
        v["surprise"] = 1.into();
        let err = ShardTask::decode(&v.to_string()).unwrap_err().to_string();
        assert!(err.contains("unknown field"), "{err}");
        v.as_object_mut().unwrap().remove("surprise");
        v["v"] = 2.into();
        let err = ShardTask::decode(&v.to_string()).unwrap_err().to_string();
        assert!(err.contains("unknown version 2"), "{err}");
        let big = format!("{{\"v\":1,\"pad\":\"{}\"}}", "x".repeat(MAX_TASK_BYTES));
        assert!(ShardTask::decode(&big).unwrap_err().to_string().contains("exceeds"));
        assert!(ShardTask::decode("{not json").unwrap_err().to_string().contains("not json"));
    }

    #[test]
    fn csv_needs_range_and_columns() {
        let mut t = task();
        t.input.range = None;
        assert!(ShardTask::decode(&t.encode()).is_err());
    }
}
