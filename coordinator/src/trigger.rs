//! S3-triggered batches: `hourglass watch` reads S3 event notifications
//! (the standard `ObjectCreated` JSON an S3 bucket sends to SQS, and the
//! `s3:TestEvent` it sends when the notification is configured), matches
//! each new object against rules, and submits a job per match.
//!
//! A rule either starts a job per object (prefix + suffix), or waits for a
//! marker object (`ready: _READY`) and starts one job over the marker's
//! whole directory. Submission is idempotent: a job's id is derived from
//! the rule and the object (bucket, key, ETag), and an event whose job
//! already exists at its output is acknowledged without a second job.
//! Events are acknowledged only once handled; a passing failure (S3 or the
//! work queue unreachable) leaves the event to be delivered again.

use crate::submit::{SubmitReport, SubmitRequest, submit};
use crate::{Error, Result};
use async_trait::async_trait;
use hourglass_core::ledger::{JobSpec, Ledger};
use hourglass_core::model::ModelSignature;
use hourglass_core::queue::{Message, Queue};
use hourglass_core::task::Format;
use hourglass_core::{BlobUrl, JobId, schedule, store};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use sha2::Digest;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The rules file (`--rules rules.yaml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Names the rule in logs and metrics, and starts its jobs' ids.
    pub name: String,
    /// Only objects in this bucket (default: any).
    #[serde(default)]
    pub bucket: Option<String>,
    /// Only keys under this prefix.
    #[serde(default)]
    pub prefix: String,
    /// Only keys ending so (e.g. `.parquet`); ignored with `ready`.
    #[serde(default)]
    pub suffix: String,
    /// A marker file name (e.g. `_READY`): its arrival starts one job over
    /// the directory it lands in, instead of one job per object.
    #[serde(default)]
    pub ready: Option<String>,
    pub model: String,
    /// The output prefix; may use `{bucket}`, `{key}`, `{dir}` (the key's
    /// directory), `{stem}` (the file name without extension), `{name}`
    /// (the rule's name) and `{date}` (the event's date, UTC).
    pub output: String,
    /// `+1h` after the event, or a time of day (`06:00`) in `tz`.
    #[serde(default)]
    pub deadline: Option<String>,
    #[serde(default)]
    pub tz: Option<String>,
    #[serde(default)]
    pub format: Option<Format>,
    #[serde(default = "default_id_column")]
    pub id_column: String,
    #[serde(default = "default_shard_bytes")]
    pub shard_bytes: u64,
    #[serde(default)]
    pub max_bad_rows: u64,
    /// CSV reading, as `submit`'s `--delimiter`, `--no-header`, `--columns`.
    #[serde(default)]
    pub delimiter: Option<char>,
    #[serde(default)]
    pub no_header: bool,
    #[serde(default)]
    pub columns: Vec<String>,
    /// Input columns passed through, as `--keep-columns` / `--keep-all`.
    #[serde(default)]
    pub keep_columns: Vec<String>,
    #[serde(default)]
    pub keep_all: bool,
    #[serde(default)]
    pub output_format: hourglass_core::task::OutputFormat,
}

fn default_id_column() -> String {
    "id".into()
}

fn default_shard_bytes() -> u64 {
    64 << 20
}

impl Rules {
    /// Parses and checks a rules file; errors name the file and the rule.
    pub fn parse(file: &str, text: &str) -> Result<Self> {
        let rules: Rules = serde_yaml_ng::from_str(text).map_err(|e| Error::input(file, e))?;
        if rules.rules.is_empty() {
            return Err(Error::input(file, "no rules"));
        }
        for (i, r) in rules.rules.iter().enumerate() {
            let at = |m: String| Error::input(file, format!("rule {} ({:?}): {m}", i + 1, r.name));
            if r.name.is_empty() || r.name.len() > 40 || !r.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err(at("name: use 1 to 40 letters, digits or '-'".into()));
            }
            hourglass_core::registry::ModelRef::parse(&r.model).map_err(|e| at(format!("model: {e}")))?;
            let probe = Event::probe();
            let out = r.render_output(&probe).map_err(|e| at(e.to_string()))?;
            BlobUrl::parse(&out).map_err(|e| at(format!("output: {e}")))?;
            if let Some(tz) = &r.tz {
                schedule::time_zone(tz).map_err(|e| at(e.to_string()))?;
            }
            if let Some(d) = &r.deadline {
                let tz = schedule::time_zone(r.tz.as_deref().unwrap_or("UTC")).map_err(|e| at(e.to_string()))?;
                schedule::parse_instant("deadline", d, jiff::Timestamp::now(), &tz).map_err(|e| at(e.to_string()))?;
            }
            if let Some(marker) = &r.ready
                && (marker.is_empty() || marker.contains('/'))
            {
                return Err(at(format!("ready {marker:?}: a file name, like _READY")));
            }
        }
        Ok(rules)
    }

    /// The first rule the object matches, and the input it starts a job on.
    pub fn route(&self, event: &Event) -> Option<(&Rule, BlobUrl)> {
        self.rules.iter().find_map(|r| r.input_for(event).map(|input| (r, input)))
    }
}

impl Rule {
    fn input_for(&self, e: &Event) -> Option<BlobUrl> {
        if self.bucket.as_ref().is_some_and(|b| *b != e.bucket) || !e.key.starts_with(&self.prefix) {
            return None;
        }
        let name = e.key.rsplit('/').next().unwrap_or_default();
        let url = match &self.ready {
            Some(marker) if name == marker => format!("s3://{}/{}", e.bucket, e.dir()),
            Some(_) => return None,
            None if name.starts_with('_') || name.starts_with('.') || !e.key.ends_with(&self.suffix) => return None,
            None => format!("s3://{}/{}", e.bucket, e.key),
        };
        BlobUrl::parse(&url).ok()
    }

    fn render_output(&self, e: &Event) -> Result<String> {
        let name = e.key.rsplit('/').next().unwrap_or_default();
        let stem = name.split('.').next().unwrap_or(name);
        let mut s = self.output.clone();
        for (k, v) in [("{bucket}", e.bucket.as_str()), ("{key}", &e.key), ("{dir}", e.dir()), ("{stem}", stem)] {
            s = s.replace(k, v);
        }
        s = s.replace("{name}", &self.name);
        let date = e.time.to_zoned(jiff::tz::TimeZone::UTC).date();
        Ok(schedule::expand(&format!("rule {:?} output", self.name), &s, date)?)
    }

    /// The job this object starts: its id (rule + object identity), spec.
    fn job(&self, e: &Event, input: BlobUrl) -> Result<(JobId, JobSpec)> {
        let mut h = sha2::Sha256::new();
        for part in [e.bucket.as_str(), &e.key, &e.etag] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        let job = JobId::parse(&format!("{}-{}", self.name, &hex::encode(h.finalize())[..16]))?;
        let deadline_unix_ms = match &self.deadline {
            None => None,
            Some(d) => {
                // Durations count from the event, times of day are the next
                // after it.
                let tz = schedule::time_zone(self.tz.as_deref().unwrap_or("UTC"))?;
                let at = schedule::parse_instant(&format!("rule {:?} deadline", self.name), d, e.time, &tz)?;
                Some(at.as_millisecond().max(0) as u64)
            }
        };
        let spec = JobSpec {
            input,
            model: BlobUrl::parse(&self.model)?,
            output: BlobUrl::parse(&self.render_output(e)?)?.as_prefix(),
            format: self.format,
            id_column: self.id_column.clone(),
            shard_bytes: self.shard_bytes,
            max_bad_rows: self.max_bad_rows,
            max_line_bytes: hourglass_core::task::DEFAULT_MAX_LINE_BYTES,
            deadline_unix_ms,
            csv: hourglass_core::ledger::CsvOptions {
                delimiter: self.delimiter,
                no_header: self.no_header,
                columns: self.columns.clone(),
            },
            keep_columns: self.keep_columns.clone(),
            keep_all: self.keep_all,
            output_format: self.output_format,
        };
        Ok((job, spec))
    }
}

/// One object created, from an S3 event record.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub bucket: String,
    /// Decoded (S3 sends keys form-encoded: `a+b%2Fc` is `a b/c`).
    pub key: String,
    pub etag: String,
    pub time: jiff::Timestamp,
}

impl Event {
    fn dir(&self) -> &str {
        match self.key.rfind('/') {
            Some(i) => &self.key[..=i],
            None => "",
        }
    }

    fn probe() -> Self {
        Event {
            bucket: "bucket".into(),
            key: "dir/file.csv".into(),
            etag: String::new(),
            time: jiff::Timestamp::UNIX_EPOCH,
        }
    }
}

/// What an event notification message holds.
#[derive(Debug, PartialEq)]
pub enum Notification {
    /// Sent once when a bucket's notification is configured.
    Test { bucket: String },
    /// `ObjectCreated:*` records (other event names are left out).
    Created(Vec<Event>),
}

#[derive(Deserialize)]
struct RawNotification {
    #[serde(rename = "Event")]
    event: Option<String>,
    #[serde(rename = "Bucket")]
    bucket: Option<String>,
    #[serde(rename = "Records")]
    records: Option<Vec<RawRecord>>,
}

#[derive(Deserialize)]
struct RawRecord {
    #[serde(rename = "eventName")]
    event_name: String,
    #[serde(rename = "eventTime")]
    event_time: Option<String>,
    s3: RawS3,
}

#[derive(Deserialize)]
struct RawS3 {
    bucket: RawBucket,
    object: RawObject,
}

#[derive(Deserialize)]
struct RawBucket {
    name: String,
}

#[derive(Deserialize)]
struct RawObject {
    key: String,
    #[serde(rename = "eTag", default)]
    etag: Option<String>,
    #[serde(default)]
    sequencer: Option<String>,
}

/// Parses an S3 event notification as S3 sends it to SQS.
pub fn parse_notification(body: &str) -> Result<Notification> {
    let bad = |m: String| Error::Invalid(format!("S3 event notification: {m}"));
    let raw: RawNotification = serde_json::from_str(body).map_err(|e| bad(format!("not the S3 event JSON: {e}")))?;
    if raw.event.as_deref() == Some("s3:TestEvent") {
        return Ok(Notification::Test { bucket: raw.bucket.unwrap_or_default() });
    }
    let records = raw.records.ok_or_else(|| bad("no Records and not an s3:TestEvent".into()))?;
    let mut events = Vec::new();
    for r in records {
        if !r.event_name.starts_with("ObjectCreated:") {
            continue;
        }
        let time = match r.event_time.as_deref() {
            Some(t) => t.parse().map_err(|e| bad(format!("eventTime {t:?}: {e}")))?,
            None => jiff::Timestamp::now(),
        };
        events.push(Event {
            bucket: r.s3.bucket.name,
            key: form_decode(&r.s3.object.key).ok_or_else(|| bad(format!("key {:?}: bad escape", r.s3.object.key)))?,
            etag: r.s3.object.etag.or(r.s3.object.sequencer).unwrap_or_default(),
            time,
        });
    }
    Ok(Notification::Created(events))
}

/// `application/x-www-form-urlencoded` decoding, as S3 encodes event keys.
fn form_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Reads models for submission: the CLI loads them with the worker runtime
/// (the coordinator never imports the worker).
#[async_trait]
pub trait ModelReader: Send + Sync {
    /// The model's signature and sha256.
    async fn read(&self, model: &BlobUrl) -> Result<(ModelSignature, String)>;
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    rule: String,
    outcome: String,
}

/// `hourglass_watch_events_total{rule, outcome}`: submitted, duplicate,
/// unmatched, test, rejected (a permanent error), retried.
#[derive(Default)]
pub struct WatchMetrics {
    events: Family<OutcomeLabels, Counter>,
}

impl WatchMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register("hourglass_watch_events", "S3 events handled by rule and outcome", self.events.clone());
    }

    fn count(&self, rule: &str, outcome: &str) {
        self.events.get_or_create(&OutcomeLabels { rule: rule.into(), outcome: outcome.into() }).inc();
    }
}

pub struct Watcher {
    pub events: Arc<dyn Queue>,
    pub work: Arc<dyn Queue>,
    pub rules: Rules,
    pub models: Arc<dyn ModelReader>,
    pub metrics: Arc<WatchMetrics>,
    pub poll_wait: Duration,
    /// How long an event is hidden while it is handled, and before a retry.
    pub visibility: Duration,
    /// Where submitted jobs are registered for the scaler.
    pub jobs_index: Option<hourglass_core::BlobUrl>,
}

/// What handling one event did.
#[derive(Debug)]
pub enum Handled {
    Submitted(SubmitReport),
    /// Its job already exists at its output: nothing to do.
    Duplicate(JobId),
    Unmatched,
}

impl Watcher {
    /// Handles events until `stop` is cancelled.
    pub async fn run(&self, stop: CancellationToken) -> Result<()> {
        info!(events = self.events.name(), work = self.work.name(), rules = self.rules.rules.len(), "watching");
        while !stop.is_cancelled() {
            let received = tokio::select! {
                r = self.events.receive(10, self.poll_wait, self.visibility) => r,
                _ = stop.cancelled() => break,
            };
            let messages = match received {
                Ok(m) => m,
                Err(e) => {
                    warn!(error = %e, "receiving events failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = stop.cancelled() => break,
                    }
                }
            };
            for m in messages {
                self.handle_message(&m).await;
            }
        }
        Ok(())
    }

    /// Handles every record of one notification; acks unless a passing
    /// failure means the notification should come again.
    pub async fn handle_message(&self, m: &Message) {
        let events = match parse_notification(&m.body) {
            Ok(Notification::Test { bucket }) => {
                info!(bucket, "S3 test event: the bucket's notifications reach this queue");
                self.metrics.count("", "test");
                return self.ack(m).await;
            }
            Ok(Notification::Created(events)) => events,
            Err(e) => {
                warn!(message = %m.id, error = %e, "not an S3 event; dropping it");
                self.metrics.count("", "rejected");
                return self.ack(m).await;
            }
        };
        let mut retry = false;
        for event in &events {
            match self.handle_event(event).await {
                Ok(Handled::Submitted(r)) => {
                    info!(job = %r.job, shards = r.shards, enqueued = r.enqueued, bucket = event.bucket, key = event.key, "job started");
                }
                Ok(Handled::Duplicate(job)) => {
                    info!(%job, key = event.key, "job already started for this object");
                }
                Ok(Handled::Unmatched) => {}
                Err((rule, e)) if is_passing(&e) => {
                    warn!(rule, key = event.key, error = %e, "submit failed; the event will come again");
                    self.metrics.count(&rule, "retried");
                    retry = true;
                }
                Err((rule, e)) => {
                    warn!(rule, key = event.key, error = %e, "event rejected: fix the input or the rule, then put the object again");
                }
            }
        }
        if retry {
            // Handled records are idempotent: the retry skips them.
            let _ = self.events.extend(&m.receipt, self.visibility).await;
        } else {
            self.ack(m).await;
        }
    }

    /// Routes one object and submits its job unless it exists.
    pub async fn handle_event(&self, event: &Event) -> Result<Handled, (String, Error)> {
        let Some((rule, input)) = self.rules.route(event) else {
            self.metrics.count("", "unmatched");
            return Ok(Handled::Unmatched);
        };
        let fail = |e: Error| {
            self.metrics.count(&rule.name, if is_passing(&e) { "retried" } else { "rejected" });
            (rule.name.clone(), e)
        };
        let (job, spec) = rule.job(event, input).map_err(&fail)?;
        let ledger = Ledger::new(store::open(&spec.output).map_err(|e| fail(e.into()))?, &spec.output);
        if let Some(existing) = ledger.read_job().await.map_err(|e| fail(e.into()))?
            && existing.job == job
        {
            self.metrics.count(&rule.name, "duplicate");
            return Ok(Handled::Duplicate(job));
        }
        // A registry alias is resolved per job: each job pins the version
        // that was current when its object arrived.
        let mut spec = spec;
        let (model, model_registry) =
            hourglass_core::registry::resolve_ref(&rule.model).await.map_err(|e| fail(e.into()))?;
        spec.model = model;
        let (signature, model_sha256) = self.models.read(&spec.model).await.map_err(fail)?;
        let request = SubmitRequest {
            spec,
            job_id: Some(job),
            signature,
            model_sha256,
            replace: false,
            model_registry,
            jobs_index: self.jobs_index.clone(),
        };
        let report = submit(request, self.work.as_ref()).await.map_err(fail)?;
        self.metrics.count(&rule.name, "submitted");
        Ok(Handled::Submitted(report))
    }

    async fn ack(&self, m: &Message) {
        if let Err(e) = self.events.ack_batch(std::slice::from_ref(&m.receipt)).await {
            warn!(error = %e, "ack failed; the event will come again and be found handled");
        }
    }
}

/// A failure worth retrying the event for (S3 or SQS unreachable, throttled).
fn is_passing(e: &Error) -> bool {
    e.is_retryable()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = r#"
rules:
  - name: daily
    prefix: drops/daily/
    ready: _READY
    model: s3://models/ctr.onnx
    output: s3://scores/daily/{dir}
    deadline: "06:00"
    tz: Europe/Berlin
  - name: clicks
    bucket: feat
    prefix: incoming/
    suffix: .parquet
    model: s3://models/ctr.onnx
    output: s3://scores/{name}/{date}/{stem}/
    deadline: +1h
"#;

    fn event(bucket: &str, key: &str) -> Event {
        Event {
            bucket: bucket.into(),
            key: key.into(),
            etag: "e1".into(),
            time: "2026-11-22T01:00:00Z".parse().unwrap(),
        }
    }

    proptest::proptest! {
        // Whatever a queue message holds: an answer, never a panic, and no
        // more events than records in the body.
        #[test]
        fn any_message_body_parses_or_is_refused(
            body in "[\\[\\]{}\",:a-zA-Z0-9%+ ]{0,200}",
            key in "[a-zA-Z0-9%+/]{0,20}",
        ) {
            let _ = parse_notification(&body);
            let shaped = format!(r#"{{"Records":[{{"eventName":"ObjectCreated:Put","s3":{{"bucket":{{"name":"b"}},"object":{{"key":"{key}"}}}}}}]}}"#);
            if let Ok(Notification::Created(events)) = parse_notification(&shaped) {
                proptest::prop_assert!(events.len() <= 1);
            }
        }
    }

    #[test]
    fn parses_the_s3_notification_shapes() {
        let test = r#"{"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-11-22T22:09:02.754Z", "Bucket": "bkt1"}"#;
        assert_eq!(parse_notification(test).unwrap(), Notification::Test { bucket: "bkt1".into() });
        let created = r#"{"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "eventTime": "2026-11-22T22:09:02.762Z",
            "eventName": "ObjectCreated:Put", "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": "bkt1", "arn": "arn:aws:s3:::bkt1"},
            "object": {"key": "in%2Fa+b%C3%A9.csv", "size": 1, "eTag": "9dd4"}}},
            {"eventName": "ObjectRemoved:Delete", "s3": {"bucket": {"name": "bkt1"}, "object": {"key": "x"}}}]}"#;
        let Notification::Created(events) = parse_notification(created).unwrap() else { panic!() };
        assert_eq!(events.len(), 1, "removals are left out");
        assert_eq!(events[0].key, "in/a bé.csv");
        assert_eq!(events[0].etag, "9dd4");
        let err = parse_notification("{\"hello\": 1}").unwrap_err().to_string();
        assert!(err.contains("no Records"), "{err}");
        assert!(parse_notification("not json").is_err());
    }

    #[test]
    fn routes_objects_and_markers() {
        let rules = Rules::parse("rules.yaml", RULES).unwrap();
        let (r, input) = rules.route(&event("feat", "incoming/x/part-1.parquet")).unwrap();
        assert_eq!((r.name.as_str(), input.to_string().as_str()), ("clicks", "s3://feat/incoming/x/part-1.parquet"));
        assert!(rules.route(&event("other", "incoming/x/part-1.parquet")).is_none(), "bucket filter");
        assert!(rules.route(&event("feat", "incoming/x/part-1.csv")).is_none(), "suffix filter");
        assert!(rules.route(&event("feat", "incoming/_SUCCESS.parquet")).is_none(), "markers are not data");
        assert!(rules.route(&event("any", "drops/daily/2026-11-22/part-0.csv")).is_none(), "waits for the marker");
        let (r, input) = rules.route(&event("any", "drops/daily/2026-11-22/_READY")).unwrap();
        assert_eq!((r.name.as_str(), input.to_string().as_str()), ("daily", "s3://any/drops/daily/2026-11-22/"));
    }

    #[test]
    fn jobs_are_named_by_rule_and_object() {
        let rules = Rules::parse("rules.yaml", RULES).unwrap();
        let e = event("feat", "incoming/x/part-1.parquet");
        let (rule, input) = rules.route(&e).unwrap();
        let (job, spec) = rule.job(&e, input.clone()).unwrap();
        assert!(job.as_str().starts_with("clicks-"), "{job}");
        assert_eq!(spec.output.to_string(), "s3://scores/clicks/2026-11-22/part-1/");
        assert_eq!(spec.deadline_unix_ms, Some(e.time.as_millisecond() as u64 + 3_600_000));
        assert_eq!(rule.job(&e, input.clone()).unwrap().0, job, "the same object, the same job");
        let again = Event { etag: "e2".into(), ..e.clone() };
        assert_ne!(rule.job(&again, input).unwrap().0, job, "new content under the key is a new job");

        let marker = event("b", "drops/daily/2026-11-22/_READY");
        let (rule, input) = rules.route(&marker).unwrap();
        let (_, spec) = rule.job(&marker, input).unwrap();
        assert_eq!(spec.output.to_string(), "s3://scores/daily/drops/daily/2026-11-22/");
        // 06:00 Berlin (UTC+1 in November) after 01:00 UTC.
        assert_eq!(
            spec.deadline_unix_ms,
            Some("2026-11-22T05:00:00Z".parse::<jiff::Timestamp>().unwrap().as_millisecond() as u64)
        );
    }

    #[test]
    fn bad_rules_name_the_file_and_rule() {
        let cases = [
            ("rules: []", "no rules"),
            (
                "rules:\n  - name: a\n    model: s3://m/x.onnx\n    output: s3://o/{bogus}/\n",
                "unknown placeholder {bogus}",
            ),
            ("rules:\n  - name: a b\n    model: s3://m/x.onnx\n    output: s3://o/\n", "rule 1 (\"a b\"): name"),
            (
                "rules:\n  - name: a\n    model: s3://m/x.onnx\n    output: s3://o/\n    deadline: soon\n",
                "deadline \"soon\"",
            ),
            (
                "rules:\n  - name: a\n    model: s3://m/x.onnx\n    output: s3://o/\n    colour: red\n",
                "unknown field `colour`",
            ),
        ];
        for (text, want) in cases {
            let err = Rules::parse("rules.yaml", text).unwrap_err().to_string();
            assert!(err.starts_with("rules.yaml") && err.contains(want), "{text}: {err}");
        }
    }
}
