//! Retries for store calls: retryable errors (throttled, transient) are
//! tried again with jittered exponential backoff, a bounded number of
//! times; other errors return at once. The S3 SDK retries its own HTTP
//! calls too; this layer covers every backend, and faults injected above
//! the SDK. Streams are retried only until their first item.

use super::{BlobStore, ByteStream, ObjectMeta};
use crate::{BlobUrl, Result};
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

/// Attempts per call: with a 20 % failure rate, 8 attempts fail together
/// about 3 times in a million calls.
pub const ATTEMPTS: u32 = 8;

#[derive(Debug)]
pub struct RetryStore {
    inner: Arc<dyn BlobStore>,
    attempts: u32,
}

/// Full jitter over an exponential backoff from 20 ms, capped at 2 s.
fn delay(attempt: u32) -> Duration {
    let cap = Duration::from_millis((20u64 << attempt.min(7)).min(2_000));
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    cap.mul_f64(0.5 + (nanos % 1000) as f64 / 2000.0)
}

impl RetryStore {
    pub fn new(inner: Arc<dyn BlobStore>) -> Self {
        Self { inner, attempts: ATTEMPTS }
    }

    async fn retry<T, Fut: Future<Output = Result<T>>>(&self, mut call: impl FnMut() -> Fut) -> Result<T> {
        let mut attempt = 1;
        loop {
            match call().await {
                Err(e) if e.is_retryable() && attempt < self.attempts => {
                    tracing::debug!(error = %e, attempt, "store call failed; retrying");
                    tokio::time::sleep(delay(attempt)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

#[async_trait]
impl BlobStore for RetryStore {
    fn url(&self, key: &str) -> BlobUrl {
        self.inner.url(key)
    }
    async fn get(&self, key: &str) -> Result<Bytes> {
        self.retry(|| self.inner.get(key)).await
    }
    async fn get_range_if(&self, key: &str, range: Range<u64>, if_match: Option<&str>) -> Result<ByteStream> {
        self.retry(|| self.inner.get_range_if(key, range.clone(), if_match)).await
    }
    async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        self.retry(|| self.inner.put(key, body.clone())).await
    }
    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<bool> {
        self.retry(|| self.inner.put_if_absent(key, body.clone())).await
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.retry(|| self.inner.head(key)).await
    }
    fn list<'a>(&'a self, prefix: &'a str) -> BoxStream<'a, Result<ObjectMeta>> {
        stream::once(async move {
            let mut attempt = 1;
            loop {
                let mut items = self.inner.list(prefix);
                match items.next().await {
                    Some(Err(e)) if e.is_retryable() && attempt < self.attempts => {
                        tokio::time::sleep(delay(attempt)).await;
                        attempt += 1;
                    }
                    first => return stream::iter(first).chain(items).boxed(),
                }
            }
        })
        .flatten()
        .boxed()
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.retry(|| self.inner.delete(key)).await
    }
}
