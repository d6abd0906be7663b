//! The `Queue` seam, with SQS semantics: at-least-once delivery, leases by
//! visibility timeout, batch operations that report per-entry failures, and a
//! dead-letter queue. Backends: the local SQLite queue and SQS.

mod local;
mod retry;
mod sqs;
mod unreliable;

pub use local::LocalQueue;
pub use retry::RetryQueue;
pub use sqs::{CreateOptions, Created, SqsQueue};
pub use unreliable::UnreliableQueue;

use crate::task::MAX_TASK_BYTES;
use crate::{Error, ErrorKind, MessageId, Receipt, Result};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

/// SQS takes at most 10 entries per batch call; every backend holds to it.
pub const MAX_BATCH: usize = 10;
/// SQS refuses a batch whose bodies add up to more than 256 KiB.
pub const MAX_BATCH_BYTES: usize = 256 * 1024;
/// SQS long polls for at most 20 s.
pub const MAX_WAIT: Duration = Duration::from_secs(20);

/// How a backend's `receive` waits, for a consumer's poll loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LongPoll {
    /// A good wait per receive: long where a poll costs a request (SQS),
    /// short where a receive holds a local lock.
    pub wait: Duration,
    /// Whether a receive may be dropped mid-wait (on a stop request) without
    /// harm beyond its messages coming back after their lease.
    pub interruptible: bool,
}

/// The one batch rule, for every backend's `send_batch`: at most
/// `MAX_BATCH` entries (else the call fails), each body at most
/// `MAX_TASK_BYTES` (else that entry fails, by index), the bodies sent
/// adding up to at most `MAX_BATCH_BYTES` (else the call fails). Returns
/// the indices to send and the entries already failed.
pub fn check_send_batch(queue: &str, bodies: &[String]) -> Result<(Vec<usize>, BatchOutcome)> {
    if bodies.len() > MAX_BATCH {
        return Err(Error::invalid(queue, format!("batch of {} exceeds {MAX_BATCH} entries", bodies.len())));
    }
    let mut send = Vec::with_capacity(bodies.len());
    let mut outcome = BatchOutcome::default();
    let mut total = 0;
    for (i, body) in bodies.iter().enumerate() {
        if body.len() > MAX_TASK_BYTES {
            let why = format!("message of {} bytes exceeds {MAX_TASK_BYTES}", body.len());
            outcome.failed.push((i, Error::queue("send", queue, ErrorKind::Invalid, why)));
        } else {
            total += body.len();
            send.push(i);
        }
    }
    if total > MAX_BATCH_BYTES {
        return Err(Error::invalid(queue, format!("batch of {total} bytes exceeds {MAX_BATCH_BYTES}")));
    }
    Ok((send, outcome))
}

/// Cuts `bodies` into batches `check_send_batch` accepts: at most
/// `MAX_BATCH` entries and `MAX_BATCH_BYTES` each (an oversized body goes
/// alone, to fail by itself).
pub fn batches(bodies: &[String]) -> Vec<&[String]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, body) in bodies.iter().enumerate() {
        let len = body.len().min(MAX_BATCH_BYTES);
        if i > start && (i - start == MAX_BATCH || bytes + len > MAX_BATCH_BYTES) {
            out.push(&bodies[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += len;
    }
    if start < bodies.len() {
        out.push(&bodies[start..]);
    }
    out
}

/// One delivery of a message.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: MessageId,
    /// Valid for this delivery only: after the visibility timeout lapses and
    /// another consumer receives the message, this receipt is stale.
    pub receipt: Receipt,
    pub body: String,
    /// How many times the message has been delivered, this time included.
    pub receive_count: u32,
}

/// Messages by state, as SQS approximates them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Depth {
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
    /// Messages in the dead-letter queue, where the backend can tell.
    pub dead: Option<u64>,
    /// Age of the oldest message still queued (visible or in flight), where
    /// the backend can tell: the local queue can; SQS says it only through
    /// CloudWatch (`ApproximateAgeOfOldestMessage`), not its API.
    pub oldest_age_ms: Option<u64>,
}

/// Per-entry failures of a batch call: `(index in the request, error)`.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    pub failed: Vec<(usize, Error)>,
}

/// Contract, for every backend:
/// - `receive` returns at most `max` (≤ `MAX_BATCH`) messages, waiting up to
///   `wait` (≤ `MAX_WAIT`) for the first; each is hidden from other
///   consumers for `visibility` and its receive count goes up by one;
/// - a message delivered more than the queue's max-receives times is moved
///   to the dead-letter queue instead of being delivered again;
/// - `extend` resets the lease to `visibility` from now; `release` makes the
///   message visible at once; both fail on a stale receipt;
/// - `ack` deletes; a stale receipt is reported as that entry's failure;
/// - `dead_letter` moves one delivered message to the dead-letter queue with
///   a reason (for messages that can never succeed);
/// - batch calls report partial failures in `BatchOutcome`, by index.
#[async_trait]
pub trait Queue: Send + Sync + std::fmt::Debug {
    /// A printable name (URL) for messages and metrics.
    fn name(&self) -> &str;

    /// How `receive` waits here: asked of the queue, never guessed from
    /// its URL. The default is SQS's: 20 s polls, safe to cut short.
    fn long_poll(&self) -> LongPoll {
        LongPoll { wait: MAX_WAIT, interruptible: true }
    }

    async fn send_batch(&self, bodies: &[String]) -> Result<BatchOutcome>;

    async fn receive(&self, max: usize, wait: Duration, visibility: Duration) -> Result<Vec<Message>>;

    async fn extend(&self, receipt: &Receipt, visibility: Duration) -> Result<()>;

    async fn ack_batch(&self, receipts: &[Receipt]) -> Result<BatchOutcome>;

    async fn release(&self, receipt: &Receipt) -> Result<()>;

    async fn dead_letter(&self, message: &Message, reason: &str) -> Result<()>;

    /// Receives after which the queue itself dead-letters a message (its
    /// redrive), or `None` when it never does.
    async fn max_receives(&self) -> Result<Option<u32>>;

    async fn depth(&self) -> Result<Depth>;

    /// Up to `max` messages of the dead-letter queue with the reasons they
    /// were dead-lettered for, left where they are (for `status --queue`,
    /// which names the cause of a shard that has no failed record because
    /// the store refused it). Oldest first where the backend can tell.
    async fn peek_dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>>;
}

/// A message in the dead-letter queue.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub id: MessageId,
    pub body: String,
    pub receive_count: u32,
    pub reason: String,
}

/// Opens a queue by URL (behind fault injection when the process installed
/// a plan): `local://path/to/queue.db` (relative to the current
/// directory, or `local:///abs/path`), with an optional
/// `?max_receives=N` used when the queue is created.
pub fn open(url: &str) -> Result<Arc<dyn Queue>> {
    let mut queue = open_backend(url)?;
    if let Some(plan) = crate::fault::installed() {
        queue = Arc::new(UnreliableQueue::new(queue, plan.clone()));
    }
    Ok(Arc::new(RetryQueue::new(queue)))
}

fn open_backend(url: &str) -> Result<Arc<dyn Queue>> {
    if let Some(rest) = url.strip_prefix("local://") {
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut max_receives = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("max_receives", v)) => {
                    max_receives = Some(v.parse::<u32>().map_err(|_| {
                        Error::invalid(format!("queue url {url:?}"), "max_receives must be a positive integer")
                    })?);
                }
                _ => return Err(Error::invalid(format!("queue url {url:?}"), format!("unknown parameter {pair:?}"))),
            }
        }
        if path.is_empty() {
            return Err(Error::invalid(format!("queue url {url:?}"), "no path after local://"));
        }
        return Ok(Arc::new(LocalQueue::open(path, max_receives)?));
    }
    if url.starts_with("https://") || url.starts_with("http://") || url.starts_with("sqs://") {
        return Ok(Arc::new(SqsQueue::new(url)));
    }
    Err(Error::queue(
        "open",
        url,
        ErrorKind::Permanent,
        "unsupported queue url; use local://path, an SQS queue url (https://…) or sqs://name",
    ))
}

/// Sends every body in `batches`, retrying only the entries that failed
/// with a retryable error, within the retry policy's budget.
pub async fn send_all(queue: &dyn Queue, bodies: &[String]) -> Result<()> {
    const ATTEMPTS: u32 = crate::retry::Policy::STANDARD.attempts;
    for chunk in batches(bodies) {
        let mut pending: Vec<String> = chunk.to_vec();
        let mut attempt = 0;
        while !pending.is_empty() {
            attempt += 1;
            let outcome = match queue.send_batch(&pending).await {
                Ok(o) => o,
                Err(e) if e.is_retryable() && attempt < ATTEMPTS => {
                    tokio::time::sleep(crate::retry::delay(attempt)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut retry = Vec::new();
            for (i, err) in outcome.failed {
                if !err.is_retryable() || attempt >= ATTEMPTS {
                    return Err(err);
                }
                retry.push(pending[i].clone());
            }
            if !retry.is_empty() {
                tokio::time::sleep(crate::retry::delay(attempt)).await;
            }
            pending = retry;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_hold_to_the_count_and_byte_limits() {
        let small: Vec<String> = (0..25).map(|i| format!("m{i}")).collect();
        let sizes: Vec<usize> = batches(&small).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [10, 10, 5]);
        // 100 KiB bodies: two fit under 256 KiB, the third does not.
        let big: Vec<String> = (0..5).map(|_| "x".repeat(100 << 10)).collect();
        let sizes: Vec<usize> = batches(&big).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [2, 2, 1]);
        for b in batches(&big) {
            assert!(check_send_batch("q", b).is_ok());
        }
        assert!(batches(&[]).is_empty());
    }

    #[test]
    fn one_batch_rule_for_every_backend() {
        let eleven: Vec<String> = (0..11).map(|i| i.to_string()).collect();
        assert!(check_send_batch("q", &eleven).unwrap_err().to_string().contains("exceeds 10 entries"));
        let three: Vec<String> = (0..3).map(|_| "x".repeat(100 << 10)).collect();
        assert!(check_send_batch("q", &three).unwrap_err().to_string().contains("bytes exceeds"));
        let mixed = vec!["ok".to_string(), "x".repeat(MAX_TASK_BYTES + 1), "ok2".to_string()];
        let (send, outcome) = check_send_batch("q", &mixed).unwrap();
        assert_eq!(send, [0, 2]);
        assert_eq!(outcome.failed.len(), 1);
        assert_eq!(outcome.failed[0].0, 1);
    }
}
