//! Where every ledger object lives, relative to the job's output prefix:
//! the one place keys are spelled. `LAYOUT` is the table the module
//! documentation shows (a test keeps the two equal), and every key below
//! matches one of its patterns (a test checks that too).

use crate::ShardId;
use crate::task::OutputFormat;

/// Every object under an output prefix: its key pattern and what it holds.
pub const LAYOUT: &[(&str, &str)] = &[
    ("part-<shard>.<ext>", "outputs, one per shard, deterministic keys"),
    ("_hourglass/job.json", "the plan: spec, unit list, estimates, model sha256"),
    ("_hourglass/done/<unit>.json", "written after the output, before the ack"),
    ("_hourglass/failed/<unit>.json", "written when a unit gives up"),
    ("_hourglass/bad/<shard>.csv", "skipped rows with their reasons"),
    ("_hourglass/buckets/<job>/b<bucket>.json", "marker: the bucket's units are all done"),
    ("_hourglass/summaries/<job>/b<bucket>.json", "a complete bucket's done records in one object"),
    ("_hourglass/registered/<trial>.json", "a trial's registry version, claimed once"),
    ("_hourglass/logs/<trial>.log", "a trial's trainer output"),
    ("_hourglass/promotion.json", "a training job's promotion decision"),
    ("_SUCCESS", "written once, when every unit is done"),
];

pub const JOB: &str = "_hourglass/job.json";
pub const DONE: &str = "_hourglass/done/";
pub const FAILED: &str = "_hourglass/failed/";
pub const PROMOTION: &str = "_hourglass/promotion.json";
pub const SUCCESS: &str = "_SUCCESS";

pub fn output(shard: &ShardId, format: OutputFormat) -> String {
    format!("part-{shard}.{}", format.as_str())
}

pub fn done(unit: &ShardId) -> String {
    format!("{DONE}{unit}.json")
}

pub fn failed(unit: &ShardId) -> String {
    format!("{FAILED}{unit}.json")
}

pub fn bad_rows(shard: &ShardId) -> String {
    format!("_hourglass/bad/{shard}.csv")
}

/// The folder of a job's bucket markers.
pub fn bucket_markers(job: &crate::JobId) -> String {
    format!("_hourglass/buckets/{job}/")
}

/// The folder of a job's bucket summaries.
pub fn summaries(job: &crate::JobId) -> String {
    format!("_hourglass/summaries/{job}/")
}

pub fn summary(job: &crate::JobId, bucket: &str) -> String {
    format!("{}b{bucket}.json", summaries(job))
}

pub fn registered(trial: &ShardId) -> String {
    format!("_hourglass/registered/{trial}.json")
}

pub fn trial_log(trial: &ShardId) -> String {
    format!("_hourglass/logs/{trial}.log")
}

/// Whether `rel` is an object the ledger or the job wrote (what `submit
/// --replace` clears): the ledger, `_SUCCESS`, outputs at the top level.
pub fn is_ledgers(rel: &str) -> bool {
    rel.starts_with("_hourglass/") || rel == SUCCESS || (rel.starts_with("part-") && !rel.contains('/'))
}

/// `LAYOUT` as the module documentation shows it.
pub fn table() -> String {
    let width = LAYOUT.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + "<output>/".len();
    LAYOUT.iter().map(|(k, what)| format!("//! {:width$}  {what}\n", format!("<output>/{k}"))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `key` fits `pattern` (`<name>` matches one path segment's
    /// worth of characters, no `/`).
    fn fits(key: &str, pattern: &str) -> bool {
        let mut rest = key;
        let mut parts = pattern.split('<').peekable();
        let first = parts.next().unwrap();
        let Some(r) = rest.strip_prefix(first) else { return false };
        rest = r;
        for part in parts {
            let (_, literal) = part.split_once('>').unwrap();
            if literal.is_empty() {
                return !rest.is_empty() && !rest.contains('/');
            }
            let Some(at) = rest.find(literal) else { return false };
            if at == 0 || rest[..at].contains('/') {
                return false;
            }
            rest = &rest[at + literal.len()..];
        }
        rest.is_empty()
    }

    #[test]
    fn every_key_is_in_the_layout() {
        let unit = ShardId::parse("000123").unwrap();
        let job = crate::JobId::parse("j-1").unwrap();
        let keys = [
            output(&unit, OutputFormat::Parquet),
            JOB.to_string(),
            done(&unit),
            failed(&unit),
            bad_rows(&unit),
            format!("{}b000.json", bucket_markers(&job)),
            summary(&job, "000"),
            registered(&unit),
            trial_log(&unit),
            PROMOTION.to_string(),
            SUCCESS.to_string(),
        ];
        for key in &keys {
            assert!(LAYOUT.iter().any(|(p, _)| fits(key, p)), "{key} is in no pattern of LAYOUT");
            assert!(is_ledgers(key), "{key} is cleared by --replace");
        }
        assert!(!fits("_hourglass/done/a/b.json", "_hourglass/done/<unit>.json"));
        assert!(!is_ledgers("input/part-1.csv"));
    }

    /// The module documentation's table is `LAYOUT`.
    #[test]
    fn the_documented_layout_is_the_code() {
        let doc = include_str!("mod.rs");
        assert!(doc.contains(&table()), "core/src/ledger/mod.rs's key table should read:\n{}", table());
    }
}
