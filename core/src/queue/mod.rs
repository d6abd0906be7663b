//! The `Queue` seam, with SQS semantics: at-least-once delivery, leases by
//! visibility timeout, batch operations that report per-entry failures, and a
//! dead-letter queue. Backends: the local SQLite queue and SQS.

mod local;
mod sqs;

pub use local::LocalQueue;
pub use sqs::{CreateOptions, SqsQueue};

use crate::{Error, ErrorKind, MessageId, Receipt, Result};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

/// SQS takes at most 10 entries per batch call; every backend holds to it.
pub const MAX_BATCH: usize = 10;
/// SQS long polls for at most 20 s.
pub const MAX_WAIT: Duration = Duration::from_secs(20);

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
}

/// Opens a queue by URL (behind fault injection when the process installed
/// a plan): `local://path/to/queue.db` (relative to the current
/// directory, or `local:///abs/path`), with an optional
/// `?max_receives=N` used when the queue is created.
pub fn open(url: &str) -> Result<Arc<dyn Queue>> {
    let queue = open_backend(url)?;
    Ok(match crate::fault::installed() {
        Some(plan) => Arc::new(crate::fault::UnreliableQueue::new(queue, plan.clone())),
        None => queue,
    })
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
                    })?)
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

/// Sends every body, `MAX_BATCH` at a time, retrying only the entries that
/// failed with a retryable error, a bounded number of times.
pub async fn send_all(queue: &dyn Queue, bodies: &[String]) -> Result<()> {
    const ATTEMPTS: u32 = 5;
    for chunk in bodies.chunks(MAX_BATCH) {
        let mut pending: Vec<String> = chunk.to_vec();
        let mut attempt = 0;
        while !pending.is_empty() {
            attempt += 1;
            let outcome = match queue.send_batch(&pending).await {
                Ok(o) => o,
                Err(e) if e.is_retryable() && attempt < ATTEMPTS => {
                    tokio::time::sleep(backoff(attempt)).await;
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
                tokio::time::sleep(backoff(attempt)).await;
            }
            pending = retry;
        }
    }
    Ok(())
}

/// Exponential backoff from 50 ms, capped at 2 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((50u64 << attempt.min(6)).min(2_000))
}
