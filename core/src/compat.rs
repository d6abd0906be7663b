//! How the contracts change between releases, so that a rolling upgrade
//! in the middle of a nightly run (new submitter and scaler with old
//! workers still draining, or the reverse) loses nothing.
//!
//! Every contract a process writes for another to read (queue tasks,
//! `job.json`, done and failed records, bucket summaries, `_SUCCESS`, the
//! registry's manifests and aliases, the jobs index, training records)
//! carries its version `v`. The rule, for every reader:
//! - unknown fields are accepted and ignored: a release adds only
//!   optional fields, which an older reader may skip without changing what
//!   the record means (a tenant label, an engine name, a drift summary);
//! - a newer `v` alone is accepted on the same terms;
//! - a writer whose record an older reader must not interpret (a field
//!   that changes the meaning of the others) sets `min_reader_v`, the
//!   oldest contract version that reads it correctly; a reader below it
//!   refuses the record with a message naming both versions, and the task
//!   is dead-lettered rather than misread;
//! - writers never require new fields in old records: a field added later
//!   has a default (`#[serde(default)]`), so records of earlier releases
//!   keep reading.

use serde_json::Value;

/// The field a writer sets when older readers must refuse its record.
pub const MIN_READER_FIELD: &str = "min_reader_v";

/// Refuses `value` if its writer asked for a newer reader than `reads`,
/// the contract version this build reads up to; `what` names the record
/// (its URL, or "task"). Any other record is for the reader to decode.
pub fn check_reader(what: &str, value: &Value, reads: u32) -> Result<(), String> {
    let Some(min) = value.get(MIN_READER_FIELD) else { return Ok(()) };
    let Some(min) = min.as_u64() else {
        return Err(format!("{what}: {MIN_READER_FIELD} {min} is not a version number"));
    };
    if min > u64::from(reads) {
        let written =
            value.get("v").and_then(Value::as_u64).map(|v| format!("version {v}")).unwrap_or("a later version".into());
        return Err(format!(
            "{what} was written at contract {written} for readers of version {min} or later; this release reads version {reads}: upgrade it (hourglass {})",
            env!("CARGO_PKG_VERSION")
        ));
    }
    Ok(())
}

/// Decodes one contract by the rule: `what` names it in errors, `reads`
/// is the contract version this build reads up to, `kind` says what it
/// is when the bytes are not one ("ledger record", "manifest").
pub fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8], reads: u32, kind: &str) -> Result<T, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("corrupt {kind}: {e}"))?;
    check_reader(what, &value, reads)?;
    serde_json::from_value(value).map_err(|e| format!("corrupt {kind}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_a_minimum_reader_past_ours_is_refused() {
        assert!(check_reader("r", &json!({"v": 9, "tenant": "ads"}), 1).is_ok());
        assert!(check_reader("r", &json!({"v": 2, "min_reader_v": 1}), 1).is_ok());
        let e = check_reader("s3://b/done/s.json", &json!({"v": 3, "min_reader_v": 3}), 1).unwrap_err();
        assert!(
            e.contains("contract version 3 for readers of version 3 or later; this release reads version 1"),
            "{e}"
        );
        assert!(check_reader("r", &json!({"min_reader_v": "x"}), 1).is_err());
    }
}
