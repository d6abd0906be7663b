//! A store that counts its requests as S3 bills them (a listing is one
//! request per 1000 keys), for `hourglass bench ledger` and the ledger's
//! request-count tests.

use super::{BlobStore, ByteStream, ObjectMeta};
use crate::{BlobUrl, Result};
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub struct CountingStore {
    inner: Arc<dyn BlobStore>,
    requests: AtomicU64,
}

impl CountingStore {
    pub fn new(inner: Arc<dyn BlobStore>) -> Self {
        Self { inner, requests: AtomicU64::new(0) }
    }

    /// Requests so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Takes back `n` requests a measurement should not count.
    pub fn uncount(&self, n: u64) {
        self.requests.fetch_sub(n, Ordering::Relaxed);
    }

    fn count(&self, n: u64) {
        self.requests.fetch_add(n, Ordering::Relaxed);
    }
}

#[async_trait]
impl BlobStore for CountingStore {
    fn url(&self, key: &str) -> BlobUrl {
        self.inner.url(key)
    }
    async fn get(&self, key: &str) -> Result<Bytes> {
        self.count(1);
        self.inner.get(key).await
    }
    async fn get_range_if(&self, key: &str, range: Range<u64>, if_match: Option<&str>) -> Result<ByteStream> {
        self.count(1);
        self.inner.get_range_if(key, range, if_match).await
    }
    async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        self.count(1);
        self.inner.put(key, body).await
    }
    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<bool> {
        self.count(1);
        self.inner.put_if_absent(key, body).await
    }
    async fn put_if_version(&self, key: &str, body: Bytes, version: &str) -> Result<bool> {
        self.count(1);
        self.inner.put_if_version(key, body, version).await
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.count(1);
        self.inner.head(key).await
    }
    fn list<'a>(&'a self, prefix: &'a str) -> BoxStream<'a, Result<ObjectMeta>> {
        futures::stream::once(async move {
            let all: Vec<Result<ObjectMeta>> = self.inner.list(prefix).collect().await;
            self.count((all.len() as u64).div_ceil(1000).max(1));
            futures::stream::iter(all)
        })
        .flatten()
        .boxed()
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.count(1);
        self.inner.delete(key).await
    }
}
