//! Retries for store calls, on the one policy of `crate::retry`: retryable
//! errors (throttled, transient) are tried again with jittered exponential
//! backoff, within the policy's budget; other errors return at once. The
//! SDK's own retries are off, so this layer is the only one, and covers
//! faults injected above the SDK too. Streams are retried only until their
//! first item.

use super::{BlobStore, ByteStream, ObjectMeta};
use crate::retry::Policy;
use crate::{BlobUrl, Result};
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use std::ops::Range;
use std::sync::Arc;

#[derive(Debug)]
pub struct RetryStore {
    inner: Arc<dyn BlobStore>,
    policy: Policy,
}

impl RetryStore {
    pub fn new(inner: Arc<dyn BlobStore>) -> Self {
        Self { inner, policy: Policy::STANDARD }
    }
}

#[async_trait]
impl BlobStore for RetryStore {
    fn url(&self, key: &str) -> BlobUrl {
        self.inner.url(key)
    }
    async fn get(&self, key: &str) -> Result<Bytes> {
        self.policy.run("store get", || self.inner.get(key)).await
    }
    async fn get_range_if(&self, key: &str, range: Range<u64>, if_match: Option<&str>) -> Result<ByteStream> {
        self.policy.run("store get", || self.inner.get_range_if(key, range.clone(), if_match)).await
    }
    async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        self.policy.run("store put", || self.inner.put(key, body.clone())).await
    }
    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<bool> {
        self.policy.run("store put", || self.inner.put_if_absent(key, body.clone())).await
    }
    async fn put_if_version(&self, key: &str, body: Bytes, version: &str) -> Result<bool> {
        self.policy.run("store put", || self.inner.put_if_version(key, body.clone(), version)).await
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.policy.run("store head", || self.inner.head(key)).await
    }
    fn list<'a>(&'a self, prefix: &'a str) -> BoxStream<'a, Result<ObjectMeta>> {
        stream::once(async move {
            let mut attempt = 1;
            loop {
                let mut items = self.inner.list(prefix);
                match items.next().await {
                    Some(Err(e)) if e.is_retryable() && attempt < self.policy.attempts => {
                        tokio::time::sleep(self.policy.delay(attempt)).await;
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
        self.policy.run("store delete", || self.inner.delete(key)).await
    }
}
