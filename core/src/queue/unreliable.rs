//! Fault injection for queues: see `crate::fault`.

use super::{BatchOutcome, Depth, Message, Queue};
use crate::fault::{FaultPlan, Injector};
use crate::{Error, Receipt, Result};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

/// A `Queue` that fails and slows down as its plan says.
#[derive(Debug)]
pub struct UnreliableQueue {
    inner: Arc<dyn Queue>,
    injector: Injector,
}

impl UnreliableQueue {
    pub fn new(inner: Arc<dyn Queue>, plan: FaultPlan) -> Self {
        Self { inner, injector: Injector::new(plan) }
    }

    async fn check(&self, op: &'static str) -> Result<()> {
        let name = self.inner.name().to_string();
        self.injector.check(op, |kind, m| Error::queue(op, name, kind, m)).await
    }
}

#[async_trait]
impl Queue for UnreliableQueue {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn long_poll(&self) -> super::LongPoll {
        self.inner.long_poll()
    }
    async fn send_batch(&self, bodies: &[String]) -> Result<BatchOutcome> {
        self.check("send").await?;
        self.inner.send_batch(bodies).await
    }
    async fn receive(&self, max: usize, wait: Duration, visibility: Duration) -> Result<Vec<Message>> {
        self.check("receive").await?;
        self.inner.receive(max, wait, visibility).await
    }
    async fn extend(&self, receipt: &Receipt, visibility: Duration) -> Result<()> {
        self.check("extend visibility").await?;
        self.inner.extend(receipt, visibility).await
    }
    async fn ack_batch(&self, receipts: &[Receipt]) -> Result<BatchOutcome> {
        self.check("ack").await?;
        self.inner.ack_batch(receipts).await
    }
    async fn release(&self, receipt: &Receipt) -> Result<()> {
        self.check("release").await?;
        self.inner.release(receipt).await
    }
    async fn dead_letter(&self, message: &Message, reason: &str) -> Result<()> {
        self.check("dead-letter").await?;
        self.inner.dead_letter(message, reason).await
    }
    async fn max_receives(&self) -> Result<Option<u32>> {
        self.inner.max_receives().await
    }

    async fn depth(&self) -> Result<Depth> {
        self.check("depth").await?;
        self.inner.depth().await
    }

    async fn peek_dead_letters(&self, max: usize) -> Result<Vec<super::DeadLetter>> {
        self.check("peek dead letters").await?;
        self.inner.peek_dead_letters(max).await
    }
}
