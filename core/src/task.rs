//! Tasks: one queue message each, JSON; the attempt count comes from the
//! queue. Unknown fields and newer versions are read by the rule of
//! [`crate::compat`]: accepted, unless the writer set a `min_reader_v`
//! past this build's, which is refused naming both versions.
//!
//! Version 2 of the contract adds `kind`: `infer` (a [`ShardTask`]: score
//! one shard) or `train` (a [`TrainTask`]: run one trial of a training
//! job). Version 1 messages have no `kind` and are shard tasks; they still
//! parse. Versions after 2 keep `kind`.

use crate::{BlobUrl, Error, JobId, Result, ShardId};
use serde::{Deserialize, Serialize};

/// Longest CSV line accepted by default: a cut point looks this far for a
/// line end, and a worker buffers no more than this of one line.
pub const DEFAULT_MAX_LINE_BYTES: u64 = 1 << 20;

/// The version this build writes. It also reads [`TASK_VERSION_V1`].
pub const TASK_VERSION: u32 = 2;
/// Shard tasks before task kinds existed: no `kind` field.
pub const TASK_VERSION_V1: u32 = 1;
/// SQS refuses bodies over 256 KiB; the local queue holds itself to the same
/// limit so a job that works locally works on SQS.
pub const MAX_TASK_BYTES: usize = 256 * 1024;

/// What a task asks a worker to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskKind {
    Infer,
    Train,
}

impl TaskKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Infer => "infer",
            TaskKind::Train => "train",
        }
    }
}

impl std::fmt::Display for TaskKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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
    /// Delimited text is CSV whatever its delimiter (`.csv`, `.tsv`), also
    /// compressed (`.csv.gz`, `.tsv.zst`: see [`Compression`]).
    pub fn from_file_name(name: &str) -> Option<Self> {
        let lower = name.to_ascii_lowercase();
        let stem = Compression::strip_extension(&lower);
        if stem.ends_with(".csv") || stem.ends_with(".tsv") {
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

/// A compressed CSV file. A compressed stream cannot be entered at a byte
/// offset, so such a file is one shard, read from its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Gzip,
    Zstd,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    /// What the name's last extension says (`.gz`, `.zst`, `.zstd`).
    pub fn from_file_name(name: &str) -> Option<Self> {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".gz") {
            Some(Compression::Gzip)
        } else if lower.ends_with(".zst") || lower.ends_with(".zstd") {
            Some(Compression::Zstd)
        } else {
            None
        }
    }

    /// What the first bytes say: gzip's `1f 8b`, zstd's frame magic.
    pub fn from_magic(head: &[u8]) -> Option<Self> {
        if head.starts_with(&[0x1f, 0x8b]) {
            Some(Compression::Gzip)
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Compression::Zstd)
        } else {
            None
        }
    }

    /// `name` without a compression extension (lower case in, lower case out).
    pub fn strip_extension(lower: &str) -> &str {
        [".gz", ".zst", ".zstd"].iter().find_map(|e| lower.strip_suffix(e)).unwrap_or(lower)
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a shard's output object is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// Typed columns, Snappy-compressed: the default.
    #[default]
    Parquet,
    /// A header line, then one line per row; RFC 4180 quoting.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

impl OutputFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            OutputFormat::Parquet => "parquet",
            OutputFormat::Csv => "csv",
            OutputFormat::Jsonl => "jsonl",
        }
    }

    pub fn is_parquet(&self) -> bool {
        *self == OutputFormat::Parquet
    }
}

impl std::str::FromStr for OutputFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "parquet" => Ok(OutputFormat::Parquet),
            "csv" => Ok(OutputFormat::Csv),
            "jsonl" | "ndjson" => Ok(OutputFormat::Jsonl),
            other => Err(format!("unknown output format {other:?}: parquet, csv or jsonl")),
        }
    }
}

impl std::fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A delimiter as the CLI takes it: one ASCII character, or `tab`/`\t`.
pub fn parse_delimiter(s: &str) -> std::result::Result<char, String> {
    let c = match s {
        "tab" | "\\t" | "\t" => '\t',
        "comma" => ',',
        "semicolon" => ';',
        "pipe" => '|',
        _ => {
            let mut chars = s.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => c,
                _ => return Err(format!("delimiter {s:?}: one character, or tab")),
            }
        }
    };
    if !c.is_ascii() || c == '"' || c == '\n' || c == '\r' {
        return Err(format!("delimiter {c:?}: an ASCII character other than a quote or a line end"));
    }
    Ok(c)
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The part of one input file a shard covers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardInput {
    pub url: BlobUrl,
    pub format: Format,
    /// CSV: byte range `[start, end)`; `start` is the first byte of a line
    /// after the header, `end` is one past a newline or the end of the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<[u64; 2]>,
    /// CSV: the header's column names (only the first shard holds the header
    /// line, and it is excluded from every range), or the names the job gave
    /// a file without a header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
    /// CSV: the field delimiter; `None` is a comma.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<char>,
    /// CSV: the file is compressed; the shard is the whole file (`range`
    /// covers its compressed bytes) and is read from its first byte.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
    /// A compressed CSV's first line is its header, to skip (an
    /// uncompressed range leaves the header out instead).
    #[serde(default, skip_serializing_if = "is_false")]
    pub skip_header: bool,
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
pub struct ModelRef {
    pub url: BlobUrl,
    /// Hex sha256 of the model bytes; a worker refuses a model that differs.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Input columns written to the output next to the id, in input order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keep_columns: Vec<String>,
    /// Every input column is written to the output (the id once).
    #[serde(default, skip_serializing_if = "is_false")]
    pub keep_all: bool,
    #[serde(default, skip_serializing_if = "OutputFormat::is_parquet")]
    pub output_format: OutputFormat,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_unix_ms: Option<u64>,
}

fn default_max_line_bytes() -> u64 {
    DEFAULT_MAX_LINE_BYTES
}

/// One trial of a training job: its parameters. Everything else (dataset,
/// trainer, registry, promotion rule) is in the job's `job.json`, which the
/// worker reads and trusts; the task only says which trial to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainTask {
    pub v: u32,
    pub job: JobId,
    pub trial: ShardId,
    /// The training job's output prefix; its ledger lives under it.
    pub output: BlobUrl,
    /// The trial's trainer parameters (the job's base parameters with one
    /// point of its grid applied).
    pub params: serde_json::Map<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_unix_ms: Option<u64>,
}

/// A decoded queue message.
// One per delivery, matched once and moved into its handler: boxing the
// larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Task {
    Infer(ShardTask),
    Train(TrainTask),
}

/// What the lease mechanics need of any task, whatever its kind.
pub trait UnitTask {
    fn kind(&self) -> TaskKind;
    fn job(&self) -> &JobId;
    /// The shard or trial: the unit the job's ledger records.
    fn unit(&self) -> &ShardId;
    /// The job's output prefix.
    fn output(&self) -> &BlobUrl;
    /// Every location the task names, for the worker's prefix allow-list.
    fn urls(&self) -> Vec<(&'static str, &BlobUrl)>;
}

impl UnitTask for ShardTask {
    fn kind(&self) -> TaskKind {
        TaskKind::Infer
    }
    fn job(&self) -> &JobId {
        &self.job
    }
    fn unit(&self) -> &ShardId {
        &self.shard
    }
    fn output(&self) -> &BlobUrl {
        &self.output
    }
    fn urls(&self) -> Vec<(&'static str, &BlobUrl)> {
        vec![("input", &self.input.url), ("model", &self.model.url), ("output", &self.output)]
    }
}

impl UnitTask for TrainTask {
    fn kind(&self) -> TaskKind {
        TaskKind::Train
    }
    fn job(&self) -> &JobId {
        &self.job
    }
    fn unit(&self) -> &ShardId {
        &self.trial
    }
    fn output(&self) -> &BlobUrl {
        &self.output
    }
    fn urls(&self) -> Vec<(&'static str, &BlobUrl)> {
        vec![("output", &self.output)]
    }
}

impl Task {
    pub fn kind(&self) -> TaskKind {
        match self {
            Task::Infer(_) => TaskKind::Infer,
            Task::Train(_) => TaskKind::Train,
        }
    }

    /// Version 2 JSON: the task's fields and its `kind`.
    pub fn encode(&self) -> String {
        let (kind, mut value) = match self {
            Task::Infer(t) => (TaskKind::Infer, serde_json::to_value(t)),
            Task::Train(t) => (TaskKind::Train, serde_json::to_value(t)),
        };
        let value = value.as_mut().expect("a task always serializes");
        value["v"] = TASK_VERSION.into();
        value["kind"] = kind.as_str().into();
        value.to_string()
    }

    /// Decodes and validates one message body. Every failure is `Invalid`:
    /// the message can never succeed and belongs in the dead-letter queue.
    pub fn decode(body: &str) -> Result<Self> {
        if body.len() > MAX_TASK_BYTES {
            return Err(Error::invalid(
                "task",
                format!("message of {} bytes exceeds the {} byte limit", body.len(), MAX_TASK_BYTES),
            ));
        }
        let mut value: serde_json::Value =
            serde_json::from_str(body).map_err(|e| Error::invalid("task", format!("not json: {e}")))?;
        crate::compat::check_reader("task", &value, TASK_VERSION).map_err(|m| Error::invalid("task", m))?;
        if let Some(o) = value.as_object_mut() {
            o.remove(crate::compat::MIN_READER_FIELD);
        }
        let kind = match value.get("v").and_then(|v| v.as_u64()) {
            Some(v) if v == u64::from(TASK_VERSION_V1) => TaskKind::Infer,
            Some(v) if v >= u64::from(TASK_VERSION) => {
                let kind = value.as_object_mut().and_then(|o| o.remove("kind"));
                match kind.as_ref().and_then(|k| k.as_str()) {
                    Some("infer") => TaskKind::Infer,
                    Some("train") => TaskKind::Train,
                    Some(other) => {
                        return Err(Error::invalid(
                            "task",
                            format!("unknown kind {other:?}; this worker runs \"infer\" and \"train\" tasks"),
                        ));
                    }
                    None => return Err(Error::invalid("task", format!("version {v} task without a \"kind\""))),
                }
            }
            Some(v) => {
                return Err(Error::invalid(
                    "task",
                    format!(
                        "unknown version {v}; this worker reads versions {TASK_VERSION_V1} to {TASK_VERSION} and later ones"
                    ),
                ));
            }
            None => return Err(Error::invalid("task", "missing version field \"v\"")),
        };
        match kind {
            TaskKind::Infer => {
                let task: ShardTask =
                    serde_json::from_value(value).map_err(|e| Error::invalid("shard task", e.to_string()))?;
                task.validate()?;
                Ok(Task::Infer(task))
            }
            TaskKind::Train => {
                let task: TrainTask =
                    serde_json::from_value(value).map_err(|e| Error::invalid("train task", e.to_string()))?;
                Ok(Task::Train(task))
            }
        }
    }
}

impl ShardTask {
    /// The version 2 message of this shard task.
    pub fn encode(&self) -> String {
        Task::Infer(self.clone()).encode()
    }

    /// Decodes a message that must be a shard task (`hourglass bench`).
    pub fn decode(body: &str) -> Result<Self> {
        match Task::decode(body)? {
            Task::Infer(t) => Ok(t),
            Task::Train(t) => Err(Error::invalid(
                format!("task {}/{}", t.job, t.trial),
                "a training trial where a shard task was expected",
            )),
        }
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
                delimiter: None,
                compression: None,
                skip_header: false,
            },
            model: ModelRef { url: BlobUrl::parse("s3://m/model.onnx").unwrap(), sha256: "ab".into() },
            output: BlobUrl::parse("s3://out/p/").unwrap(),
            id_column: "id".into(),
            max_bad_rows: 0,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            keep_columns: Vec::new(),
            keep_all: false,
            output_format: Default::default(),
            deadline_unix_ms: None,
        }
    }

    use proptest::strategy::Strategy as _;

    proptest::proptest! {
        // Any body, and any field of a real task replaced by any JSON
        // scalar: decoded or refused as invalid, never a panic.
        #[test]
        fn any_message_body_decodes_or_is_refused(
            body in "[\\[\\]{}\",:a-z0-9 ]{0,120}",
            field in 0usize..16,
            value in proptest::prop_oneof![
                proptest::prelude::any::<i64>().prop_map(serde_json::Value::from),
                "[a-z0-9]{0,8}".prop_map(serde_json::Value::from),
                proptest::prelude::Just(serde_json::Value::Null),
            ],
        ) {
            let _ = Task::decode(&body);
            let mut v: serde_json::Value = serde_json::from_str(&task().encode()).unwrap();
            let keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            v[&keys[field % keys.len()]] = value;
            if let Err(e) = Task::decode(&v.to_string()) {
                proptest::prop_assert_eq!(e.kind(), crate::ErrorKind::Invalid);
            }
        }
    }

    #[test]
    fn round_trips() {
        let t = task();
        assert_eq!(ShardTask::decode(&t.encode()).unwrap(), t);
    }

    #[test]
    fn reads_later_releases_fields_and_refuses_what_needs_a_newer_reader() {
        let mut v: serde_json::Value = serde_json::from_str(&task().encode()).unwrap();
        // A later release's optional fields and version: read as before.
        v["tenant"] = "ads".into();
        v["v"] = 3.into();
        assert_eq!(ShardTask::decode(&v.to_string()).unwrap().shard, task().shard);
        // One whose meaning an older reader would get wrong: refused.
        v["min_reader_v"] = 3.into();
        let err = ShardTask::decode(&v.to_string()).unwrap_err().to_string();
        assert!(err.contains("for readers of version 3 or later; this release reads version 2"), "{err}");
        v.as_object_mut().unwrap().remove("min_reader_v");
        v.as_object_mut().unwrap().remove("kind");
        let err = ShardTask::decode(&v.to_string()).unwrap_err().to_string();
        assert!(err.contains("without a \"kind\""), "{err}");
        v["v"] = 0.into();
        let err = ShardTask::decode(&v.to_string()).unwrap_err().to_string();
        assert!(err.contains("unknown version 0"), "{err}");
        let big = format!("{{\"v\":1,\"pad\":\"{}\"}}", "x".repeat(MAX_TASK_BYTES));
        assert!(ShardTask::decode(&big).unwrap_err().to_string().contains("exceeds"));
        assert!(ShardTask::decode("{not json").unwrap_err().to_string().contains("not json"));
    }

    #[test]
    fn version_1_messages_still_parse_as_shard_tasks() {
        let mut v: serde_json::Value = serde_json::from_str(&task().encode()).unwrap();
        assert_eq!(v["kind"], "infer");
        v.as_object_mut().unwrap().remove("kind");
        v["v"] = 1.into();
        let old = Task::decode(&v.to_string()).unwrap();
        let Task::Infer(t) = old else { panic!("not a shard task") };
        assert_eq!(t.v, 1);
        assert_eq!(t.shard, task().shard);
        // A version 1 message's kind is an unknown field: ignored.
        v["kind"] = "infer".into();
        assert!(matches!(Task::decode(&v.to_string()).unwrap(), Task::Infer(_)));
    }

    #[test]
    fn train_tasks_round_trip_and_unknown_kinds_are_refused() {
        let mut params = serde_json::Map::new();
        params.insert("num_leaves".into(), 31.into());
        let t = Task::Train(TrainTask {
            v: TASK_VERSION,
            job: JobId::parse("t1").unwrap(),
            trial: ShardId::parse("trial-0002").unwrap(),
            output: BlobUrl::parse("s3://out/train/").unwrap(),
            params,
            deadline_unix_ms: None,
        });
        assert_eq!(Task::decode(&t.encode()).unwrap(), t);
        let mut v: serde_json::Value = serde_json::from_str(&t.encode()).unwrap();
        v["kind"] = "dance".into();
        assert!(Task::decode(&v.to_string()).unwrap_err().to_string().contains("unknown kind \"dance\""));
        assert!(ShardTask::decode(&t.encode()).unwrap_err().to_string().contains("training trial"));
    }

    #[test]
    fn csv_needs_range_and_columns() {
        let mut t = task();
        t.input.range = None;
        assert!(ShardTask::decode(&t.encode()).is_err());
    }
}
