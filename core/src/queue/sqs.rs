//! The SQS queue. Long polls up to 20 s, receives and sends 10 at a time
//! (retrying only the entries that failed), deletes in batches, extends and
//! releases leases with `ChangeMessageVisibility`, and reads depth from the
//! `Approximate…` attributes. The dead-letter queue is the one the queue's
//! RedrivePolicy names; `dead_letter` sends there with the reason, then
//! deletes the original.

use super::{BatchOutcome, Depth, MAX_BATCH, MAX_WAIT, Message, Queue, check_send_batch};
use crate::aws::{classify, sdk_config};
use crate::{Error, ErrorKind, MessageId, Receipt, Result};
use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName,
    SendMessageBatchRequestEntry,
};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::OnceCell;

/// SQS keeps messages 4 days by default; a nightly job's shards should
/// survive a weekend of paused workers, so queues are made with 14 days
/// (the maximum).
pub const RETENTION_SECS: u32 = 14 * 24 * 3600;

#[derive(Debug)]
pub struct SqsQueue {
    /// As given: an https URL, or `sqs://name` resolved on first use.
    name: String,
    client: OnceCell<Client>,
    url: OnceCell<String>,
    redrive: OnceCell<Option<Redrive>>,
}

/// The queue's RedrivePolicy: where and after how many receives.
#[derive(Debug)]
struct Redrive {
    dlq_url: String,
    max_receives: Option<u32>,
}

async fn client() -> Client {
    Client::new(sdk_config().await)
}

fn secs(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

/// Options for `hourglass queue create`.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    pub visibility_timeout: Duration,
    pub max_receives: u32,
}

impl SqsQueue {
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into(), client: OnceCell::new(), url: OnceCell::new(), redrive: OnceCell::new() }
    }

    async fn client(&self) -> &Client {
        self.client.get_or_init(client).await
    }

    fn err<E>(
        &self,
        op: &'static str,
        e: aws_sdk_sqs::error::SdkError<E, aws_sdk_sqs::config::http::HttpResponse>,
    ) -> Error
    where
        E: aws_sdk_sqs::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let (kind, message) = classify(&e);
        let message = match kind {
            ErrorKind::Permission => format!("{message} (needs sqs:{} on the queue)", sqs_action(op)),
            _ => message,
        };
        Error::queue(op, self.name.clone(), kind, message).caused_by(e)
    }

    async fn url(&self) -> Result<&str> {
        self.url
            .get_or_try_init(|| async {
                match self.name.strip_prefix("sqs://") {
                    Some(name) => {
                        let out = self
                            .client()
                            .await
                            .get_queue_url()
                            .queue_name(name)
                            .send()
                            .await
                            .map_err(|e| self.err("resolve", e))?;
                        Ok(out.queue_url().unwrap_or_default().to_string())
                    }
                    None => Ok(self.name.clone()),
                }
            })
            .await
            .map(|s| s.as_str())
    }

    /// The dead-letter queue from the RedrivePolicy, if there is one.
    async fn dlq_url(&self) -> Result<Option<&str>> {
        Ok(self.redrive().await?.map(|r| r.dlq_url.as_str()))
    }

    /// The RedrivePolicy, read once.
    async fn redrive(&self) -> Result<Option<&Redrive>> {
        let url = self.url().await?.to_string();
        let redrive = self
            .redrive
            .get_or_try_init(|| async {
                let client = self.client().await;
                let attrs = client
                    .get_queue_attributes()
                    .queue_url(&url)
                    .attribute_names(QueueAttributeName::RedrivePolicy)
                    .send()
                    .await
                    .map_err(|e| self.err("read attributes", e))?;
                let Some(policy) = attrs.attributes().and_then(|a| a.get(&QueueAttributeName::RedrivePolicy)) else {
                    return Ok(None);
                };
                let policy: serde_json::Value = serde_json::from_str(policy)
                    .map_err(|e| Error::queue("read attributes", self.name.clone(), ErrorKind::Permanent, e))?;
                let arn = policy["deadLetterTargetArn"].as_str().unwrap_or_default();
                // SQS writes the count as a string or a number.
                let max_receives = match &policy["maxReceiveCount"] {
                    serde_json::Value::String(s) => s.parse().ok(),
                    v => v.as_u64().and_then(|n| u32::try_from(n).ok()),
                };
                Ok(Some(Redrive { dlq_url: sibling_queue_url(&url, arn), max_receives }))
            })
            .await?;
        Ok(redrive.as_ref())
    }

    /// Creates `name` and its dead-letter queue `name-dlq`, with a
    /// RedrivePolicy after `max_receives` receives; returns the queue URL.
    pub async fn create(name: &str, options: &CreateOptions) -> Result<Created> {
        let client = client().await;
        let q = || format!("sqs://{name}");
        let err = |op, e: &dyn std::fmt::Display| Error::queue(op, q(), ErrorKind::Permanent, e);
        let dlq = client
            .create_queue()
            .queue_name(format!("{name}-dlq"))
            .attributes(QueueAttributeName::MessageRetentionPeriod, RETENTION_SECS.to_string())
            .send()
            .await
            .map_err(|e| err("create dead-letter queue", &aws_smithy_types::error::display::DisplayErrorContext(e)))?;
        let dlq_url = dlq.queue_url().unwrap_or_default().to_string();
        let attrs = client
            .get_queue_attributes()
            .queue_url(&dlq_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| err("read dead-letter queue", &aws_smithy_types::error::display::DisplayErrorContext(e)))?;
        let arn = attrs.attributes().and_then(|a| a.get(&QueueAttributeName::QueueArn)).cloned().unwrap_or_default();
        let redrive =
            serde_json::json!({ "deadLetterTargetArn": arn, "maxReceiveCount": options.max_receives.to_string() });
        let out = client
            .create_queue()
            .queue_name(name)
            .attributes(QueueAttributeName::VisibilityTimeout, options.visibility_timeout.as_secs().to_string())
            .attributes(QueueAttributeName::MessageRetentionPeriod, RETENTION_SECS.to_string())
            .attributes(QueueAttributeName::ReceiveMessageWaitTimeSeconds, MAX_WAIT.as_secs().to_string())
            .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
            .send()
            .await
            .map_err(|e| err("create", &aws_smithy_types::error::display::DisplayErrorContext(e)))?;
        Ok(Created {
            url: out.queue_url().unwrap_or_default().to_string(),
            dead_letter_url: dlq_url,
            dead_letter_arn: arn,
            max_receives: options.max_receives,
            visibility_timeout_secs: options.visibility_timeout.as_secs(),
            retention_secs: RETENTION_SECS,
            receive_wait_secs: MAX_WAIT.as_secs(),
        })
    }
}

/// What `SqsQueue::create` made (`hourglass queue create --json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Created {
    pub url: String,
    pub dead_letter_url: String,
    pub dead_letter_arn: String,
    /// Receives after which the redrive moves a message to the dead-letter queue.
    pub max_receives: u32,
    pub visibility_timeout_secs: u64,
    pub retention_secs: u32,
    pub receive_wait_secs: u64,
}

/// The URL of the queue `arn` names, from the URL of a queue in the same
/// account and region (SQS requires a dead-letter queue to be both): the
/// last path segment is the name. No `GetQueueUrl` call, so a worker's
/// policy needs no rights on the DLQ beyond `SendMessage`.
fn sibling_queue_url(url: &str, arn: &str) -> String {
    let name = arn.rsplit(':').next().unwrap_or_default();
    match url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => name.to_string(),
    }
}

fn sqs_action(op: &str) -> &'static str {
    match op {
        "send" => "SendMessage",
        "receive" => "ReceiveMessage",
        "ack" => "DeleteMessage",
        "extend visibility" | "release" => "ChangeMessageVisibility",
        "depth" | "read attributes" => "GetQueueAttributes",
        "resolve" => "GetQueueUrl",
        _ => "*",
    }
}

fn count(attrs: Option<&HashMap<QueueAttributeName, String>>, name: QueueAttributeName) -> u64 {
    attrs.and_then(|a| a.get(&name)).and_then(|v| v.parse().ok()).unwrap_or(0)
}

#[async_trait]
impl Queue for SqsQueue {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send_batch(&self, bodies: &[String]) -> Result<BatchOutcome> {
        let (send, mut outcome) = check_send_batch(&self.name, bodies)?;
        if send.is_empty() {
            return Ok(outcome);
        }
        let url = self.url().await?;
        // Entry ids are indices into `bodies`, so failures map back.
        let entries: Vec<SendMessageBatchRequestEntry> = send
            .iter()
            .map(|&i| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(&bodies[i])
                    .build()
                    .expect("id and body set")
            })
            .collect();
        let out = self
            .client()
            .await
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| self.err("send", e))?;
        outcome.failed.extend(out.failed().iter().map(|f| {
            let kind = if f.sender_fault() { ErrorKind::Invalid } else { ErrorKind::Transient };
            let msg = format!("{}: {}", f.code(), f.message().unwrap_or_default());
            (f.id().parse().unwrap_or(0), Error::queue("send", self.name.clone(), kind, msg))
        }));
        Ok(outcome)
    }

    async fn receive(&self, max: usize, wait: Duration, visibility: Duration) -> Result<Vec<Message>> {
        let url = self.url().await?;
        let out = self
            .client()
            .await
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(max.clamp(1, MAX_BATCH) as i32)
            .wait_time_seconds(secs(wait.min(MAX_WAIT)))
            .visibility_timeout(secs(visibility).max(1))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| self.err("receive", e))?;
        Ok(out
            .messages()
            .iter()
            .map(|m| Message {
                id: MessageId::new(m.message_id().unwrap_or_default()),
                receipt: Receipt::new(m.receipt_handle().unwrap_or_default()),
                body: m.body().unwrap_or_default().to_string(),
                receive_count: m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1),
            })
            .collect())
    }

    async fn extend(&self, receipt: &Receipt, visibility: Duration) -> Result<()> {
        let url = self.url().await?;
        self.client()
            .await
            .change_message_visibility()
            .queue_url(url)
            .receipt_handle(receipt.as_str())
            .visibility_timeout(secs(visibility))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.err("extend visibility", e))
    }

    async fn ack_batch(&self, receipts: &[Receipt]) -> Result<BatchOutcome> {
        if receipts.is_empty() {
            return Ok(BatchOutcome::default());
        }
        let url = self.url().await?;
        let entries: Vec<DeleteMessageBatchRequestEntry> = receipts
            .iter()
            .enumerate()
            .map(|(i, r)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(r.as_str())
                    .build()
                    .expect("set")
            })
            .collect();
        let out = self
            .client()
            .await
            .delete_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| self.err("ack", e))?;
        let failed = out
            .failed()
            .iter()
            .map(|f| {
                let msg = format!("{}: {}", f.code(), f.message().unwrap_or_default());
                (f.id().parse().unwrap_or(0), Error::queue("ack", self.name.clone(), ErrorKind::NotFound, msg))
            })
            .collect();
        Ok(BatchOutcome { failed })
    }

    async fn release(&self, receipt: &Receipt) -> Result<()> {
        self.extend(receipt, Duration::ZERO).await.map_err(|e| match e {
            Error::Queue { queue, kind, message, source, .. } => {
                Error::Queue { op: "release", queue, kind, message, source }
            }
            other => other,
        })
    }

    async fn dead_letter(&self, message: &Message, reason: &str) -> Result<()> {
        let Some(dlq) = self.dlq_url().await?.map(String::from) else {
            return Err(Error::queue(
                "dead-letter",
                self.name.clone(),
                ErrorKind::Permanent,
                "the queue has no RedrivePolicy naming a dead-letter queue (create it with `hourglass queue create`)",
            ));
        };
        let reason = reason.chars().take(4096).collect::<String>();
        self.client()
            .await
            .send_message()
            .queue_url(&dlq)
            .message_body(&message.body)
            .message_attributes(
                "hourglass_reason",
                MessageAttributeValue::builder().data_type("String").string_value(reason).build().expect("set"),
            )
            .send()
            .await
            .map_err(|e| self.err("dead-letter", e))?;
        let out = self.ack_batch(std::slice::from_ref(&message.receipt)).await?;
        match out.failed.into_iter().next() {
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    }

    async fn max_receives(&self) -> Result<Option<u32>> {
        Ok(self.redrive().await?.and_then(|r| r.max_receives))
    }

    async fn peek_dead_letters(&self, max: usize) -> Result<Vec<super::DeadLetter>> {
        let Some(dlq) = self.dlq_url().await?.map(String::from) else { return Ok(Vec::new()) };
        // SQS has no peek: a receive with a zero visibility timeout leaves
        // each message visible. Receives sample the queue, so a few rounds
        // gather distinct messages; a DLQ has no redrive of its own, so the
        // receive counts this raises there move nothing.
        let mut seen = std::collections::BTreeMap::new();
        for _ in 0..max.div_ceil(MAX_BATCH).clamp(1, 10) * 2 {
            let out = self
                .client()
                .await
                .receive_message()
                .queue_url(&dlq)
                .max_number_of_messages(MAX_BATCH as i32)
                .wait_time_seconds(0)
                .visibility_timeout(0)
                .message_attribute_names("hourglass_reason")
                .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
                .send()
                .await
                .map_err(|e| self.err("peek dead letters", e))?;
            if out.messages().is_empty() {
                break;
            }
            for m in out.messages() {
                let id = m.message_id().unwrap_or_default().to_string();
                let reason = m
                    .message_attributes()
                    .and_then(|a| a.get("hourglass_reason"))
                    .and_then(|v| v.string_value())
                    .unwrap_or("dead-lettered by the queue's redrive (no reason recorded)")
                    .to_string();
                let receive_count = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                seen.entry(id.clone()).or_insert(super::DeadLetter {
                    id: MessageId::new(id),
                    body: m.body().unwrap_or_default().to_string(),
                    receive_count,
                    reason,
                });
            }
            if seen.len() >= max {
                break;
            }
        }
        Ok(seen.into_values().take(max).collect())
    }

    async fn depth(&self) -> Result<Depth> {
        let url = self.url().await?;
        let attrs = self
            .client()
            .await
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| self.err("depth", e))?;
        let a = attrs.attributes();
        let dead = match self.dlq_url().await? {
            Some(dlq) => {
                let d = self
                    .client()
                    .await
                    .get_queue_attributes()
                    .queue_url(dlq)
                    .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
                    .send()
                    .await
                    .map_err(|e| self.err("depth", e))?;
                Some(count(d.attributes(), QueueAttributeName::ApproximateNumberOfMessages))
            }
            None => None,
        };
        Ok(Depth {
            visible: count(a, QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: count(a, QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            delayed: count(a, QueueAttributeName::ApproximateNumberOfMessagesDelayed),
            dead,
            oldest_age_ms: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dead_letter_queue_url_comes_from_the_queue_url() {
        assert_eq!(
            sibling_queue_url(
                "https://sqs.eu-west-1.amazonaws.com/123456789012/work",
                "arn:aws:sqs:eu-west-1:123456789012:work-dlq"
            ),
            "https://sqs.eu-west-1.amazonaws.com/123456789012/work-dlq"
        );
        assert_eq!(
            sibling_queue_url("http://127.0.0.1:5000/123456789012/q", "arn:aws:sqs:us-east-1:123456789012:q-dlq"),
            "http://127.0.0.1:5000/123456789012/q-dlq"
        );
    }
}
