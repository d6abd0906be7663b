//! Retries for queue calls, on the one policy of `crate::retry`, for the
//! calls that are safe to repeat and that no caller retries itself:
//! `depth`, `max_receives`, `ack_batch`, `release`, `dead_letter`. The
//! others are retried where their meaning is known: `receive` by the
//! consumer's poll loop, `extend` by the lease (which stops when the lease
//! runs out), `send_batch` entry by entry by `send_all`. A retried
//! `dead_letter` whose first try sent but did not delete may leave two
//! copies in the dead-letter queue: harmless, the failed record is what
//! `status` reads.

use super::{BatchOutcome, Depth, LongPoll, Message, Queue};
use crate::retry::Policy;
use crate::{Receipt, Result};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug)]
pub struct RetryQueue {
    inner: Arc<dyn Queue>,
    policy: Policy,
}

impl RetryQueue {
    pub fn new(inner: Arc<dyn Queue>) -> Self {
        Self { inner, policy: Policy::STANDARD }
    }
}

#[async_trait]
impl Queue for RetryQueue {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn long_poll(&self) -> LongPoll {
        self.inner.long_poll()
    }
    async fn send_batch(&self, bodies: &[String]) -> Result<BatchOutcome> {
        self.inner.send_batch(bodies).await
    }
    async fn receive(&self, max: usize, wait: Duration, visibility: Duration) -> Result<Vec<Message>> {
        self.inner.receive(max, wait, visibility).await
    }
    async fn extend(&self, receipt: &Receipt, visibility: Duration) -> Result<()> {
        self.inner.extend(receipt, visibility).await
    }
    async fn ack_batch(&self, receipts: &[Receipt]) -> Result<BatchOutcome> {
        self.policy.run("queue ack", || self.inner.ack_batch(receipts)).await
    }
    async fn release(&self, receipt: &Receipt) -> Result<()> {
        self.policy.run("queue release", || self.inner.release(receipt)).await
    }
    async fn dead_letter(&self, message: &Message, reason: &str) -> Result<()> {
        self.policy.run("queue dead-letter", || self.inner.dead_letter(message, reason)).await
    }
    async fn max_receives(&self) -> Result<Option<u32>> {
        self.policy.run("queue attributes", || self.inner.max_receives()).await
    }
    async fn depth(&self) -> Result<Depth> {
        self.policy.run("queue depth", || self.inner.depth()).await
    }
    async fn peek_dead_letters(&self, max: usize) -> Result<Vec<super::DeadLetter>> {
        self.policy.run("peek dead letters", || self.inner.peek_dead_letters(max)).await
    }
}
