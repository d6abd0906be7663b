//! Least-privilege IAM policies, one per component, as the files in
//! `deploy/iam/` state them: exactly the S3 and SQS actions the store and
//! queue backends perform for that component, on the job's prefixes and
//! queues. `hourglass iam policy` renders them; the tests run whole jobs on
//! moto with IAM enforced under nothing but these documents.
//!
//! Why each right: reads are `s3:GetObject` (ranged GETs and HEADs);
//! outputs, done records and `_SUCCESS` are `s3:PutObject` (conditional
//! creates included; multipart uploads abort with
//! `s3:AbortMultipartUpload`); `s3:ListBucket` is on the bucket, without a
//! prefix condition, because S3 answers a GET of a missing key (a shard not
//! yet done) with 404 only to a principal that may list the bucket, and 403
//! otherwise; only the submitter deletes (`--replace`, failed records of
//! retried shards). Workers dead-letter with `sqs:SendMessage` on the DLQ,
//! whose URL they derive from the queue's (no `GetQueueUrl`). Batch calls
//! are authorized as their single actions on AWS (`SendMessage`,
//! `DeleteMessage`); the policies also name `sqs:SendMessageBatch` and
//! `sqs:DeleteMessageBatch`, which some implementations (moto) check.

use crate::url::Scheme;
use crate::{BlobUrl, Error, Result};

/// A component that gets its own role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Worker,
    Submit,
    Scaler,
    Watcher,
    /// `hourglass serve`: reads models (and aliases) under `--model`, the
    /// registry root or one model's URL.
    Serve,
    /// A worker that runs training trials: reads the dataset (`--input`),
    /// writes the job's ledger (`--output`) and registers versions in the
    /// registry (`--model`, its root: a version is claimed with a
    /// conditional put and an alias moved by compare-and-swap, both
    /// `s3:PutObject`).
    Trainer,
}

impl Role {
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "worker" => Role::Worker,
            "submit" => Role::Submit,
            "scaler" => Role::Scaler,
            "watcher" => Role::Watcher,
            "serve" => Role::Serve,
            "trainer" => Role::Trainer,
            other => {
                return Err(Error::invalid(
                    format!("role {other:?}"),
                    "use worker, submit, scaler, watcher, serve or trainer",
                ));
            }
        })
    }

    /// The template, as shipped in `deploy/iam/`.
    pub fn template(self) -> &'static str {
        match self {
            Role::Worker => include_str!("../../deploy/iam/worker.json"),
            Role::Submit => include_str!("../../deploy/iam/submit.json"),
            Role::Scaler => include_str!("../../deploy/iam/scaler.json"),
            Role::Watcher => include_str!("../../deploy/iam/watcher.json"),
            Role::Serve => include_str!("../../deploy/iam/serve.json"),
            Role::Trainer => include_str!("../../deploy/iam/trainer.json"),
        }
    }
}

/// What a policy is scoped to. Prefixes are S3 URLs (`s3://bucket/prefix/`,
/// or one object); queues are SQS URLs or ARNs.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    pub input: Option<BlobUrl>,
    pub output: Option<BlobUrl>,
    pub model: Option<BlobUrl>,
    pub queue: Option<String>,
    /// Default: the queue's ARN with `-dlq` appended (`queue create`'s name).
    pub dlq: Option<String>,
    pub events_queue: Option<String>,
    /// For queue URLs that do not name their region (a local endpoint).
    pub region: String,
}

/// The ARN of an SQS queue given by ARN or URL
/// (`https://sqs.REGION.amazonaws.com/ACCOUNT/NAME`, or any endpoint's
/// `…/ACCOUNT/NAME`, taking `region` then).
pub fn queue_arn(queue: &str, region: &str) -> Result<String> {
    if queue.starts_with("arn:") {
        return Ok(queue.to_string());
    }
    let bad = || {
        Error::invalid(
            format!("queue {queue:?}"),
            "expected an SQS queue URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME) or ARN",
        )
    };
    let rest = queue.strip_prefix("https://").or_else(|| queue.strip_prefix("http://")).ok_or_else(bad)?;
    let mut parts = rest.split('/');
    let host = parts.next().ok_or_else(bad)?;
    let (account, name) = match (parts.next(), parts.next(), parts.next()) {
        (Some(a), Some(n), None) if !a.is_empty() && !n.is_empty() => (a, n),
        _ => return Err(bad()),
    };
    let region = host
        .strip_prefix("sqs.")
        .and_then(|h| h.split('.').next())
        .filter(|r| host.ends_with(".amazonaws.com") && !r.is_empty())
        .unwrap_or(region);
    Ok(format!("arn:aws:sqs:{region}:{account}:{name}"))
}

fn s3(url: &BlobUrl, flag: &str) -> Result<(String, String)> {
    if url.scheme() != Scheme::S3 {
        return Err(Error::invalid(format!("{flag} {url}"), "IAM policies are for s3:// locations"));
    }
    Ok((format!("arn:aws:s3:::{}", url.bucket()), format!("arn:aws:s3:::{}/{}*", url.bucket(), url.key())))
}

/// Renders `role`'s policy for `targets`. Every placeholder the template
/// uses must have a value; the result is checked to be JSON.
pub fn render(role: Role, targets: &Targets) -> Result<String> {
    let mut values: Vec<(&str, String)> = Vec::new();
    let locations = [
        ("INPUT_BUCKET", "INPUT_OBJECTS", &targets.input, "--input"),
        ("OUTPUT_BUCKET", "OUTPUT_OBJECTS", &targets.output, "--output"),
        ("MODEL_BUCKET", "MODEL_OBJECTS", &targets.model, "--model"),
    ];
    for (bucket_name, objects_name, url, flag) in locations {
        if let Some(url) = url {
            let (bucket, objects) = s3(url, flag)?;
            values.push((bucket_name, bucket));
            values.push((objects_name, objects));
        }
    }
    if let Some(q) = &targets.queue {
        let arn = queue_arn(q, &targets.region)?;
        let dlq = match &targets.dlq {
            Some(d) => queue_arn(d, &targets.region)?,
            None => format!("{arn}-dlq"),
        };
        values.push(("QUEUE_ARN", arn));
        values.push(("DLQ_ARN", dlq));
    }
    if let Some(q) = &targets.events_queue {
        values.push(("EVENTS_QUEUE_ARN", queue_arn(q, &targets.region)?));
    }
    let mut text = role.template().to_string();
    for (name, value) in &values {
        text = text.replace(&format!("${{{name}}}"), value);
    }
    if let Some(start) = text.find("${") {
        let name: String = text[start + 2..].chars().take_while(|c| *c != '}').collect();
        let flag = match name.as_str() {
            "INPUT_BUCKET" | "INPUT_OBJECTS" => "--input",
            "OUTPUT_BUCKET" | "OUTPUT_OBJECTS" => "--output",
            "MODEL_OBJECTS" | "MODEL_BUCKET" => "--model",
            "QUEUE_ARN" | "DLQ_ARN" => "--queue",
            _ => "--events-queue",
        };
        return Err(Error::invalid(format!("the {role:?} policy"), format!("needs {flag} (for ${{{name}}})")));
    }
    serde_json::from_str::<serde_json::Value>(&text).map_err(|e| Error::invalid("rendered policy", e))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets() -> Targets {
        Targets {
            input: Some(BlobUrl::parse("s3://feat/ctr/").unwrap()),
            output: Some(BlobUrl::parse("s3://preds/ctr/").unwrap()),
            model: Some(BlobUrl::parse("s3://models/ctr/").unwrap()),
            queue: Some("https://sqs.eu-west-1.amazonaws.com/123456789012/ctr".into()),
            dlq: None,
            events_queue: Some("arn:aws:sqs:eu-west-1:123456789012:events".into()),
            region: "us-east-1".into(),
        }
    }

    #[test]
    fn every_role_renders_to_scoped_json() {
        for role in [Role::Worker, Role::Submit, Role::Scaler, Role::Watcher, Role::Serve] {
            let text = render(role, &targets()).unwrap();
            let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
            for s in doc["Statement"].as_array().unwrap() {
                for r in s["Resource"].as_array().unwrap() {
                    let r = r.as_str().unwrap();
                    assert!(r != "*" && !r.contains("${"), "{role:?}: {r}");
                }
            }
        }
        let worker = render(Role::Worker, &targets()).unwrap();
        assert!(
            worker.contains("arn:aws:s3:::preds/ctr/*")
                && worker.contains("arn:aws:sqs:eu-west-1:123456789012:ctr-dlq")
        );
        assert!(!worker.contains("s3:DeleteObject"), "workers never delete");
    }

    #[test]
    fn missing_targets_and_queue_urls_are_named() {
        let err = render(Role::Worker, &Targets { region: "us-east-1".into(), ..Default::default() }).unwrap_err();
        assert!(err.to_string().contains("needs --input"), "{err}");
        assert_eq!(
            queue_arn("http://127.0.0.1:5000/123456789012/q", "us-east-1").unwrap(),
            "arn:aws:sqs:us-east-1:123456789012:q"
        );
        assert!(queue_arn("sqs://q", "us-east-1").is_err());
    }
}
