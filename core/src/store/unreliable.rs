//! Fault injection for stores: see `crate::fault`.

use super::{BlobStore, ByteStream, ObjectMeta};
use crate::fault::{FaultPlan, Injector};
use crate::{BlobUrl, Error, Result};
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use std::ops::Range;
use std::sync::Arc;

/// A `BlobStore` that fails and slows down as its plan says.
#[derive(Debug)]
pub struct UnreliableStore {
    inner: Arc<dyn BlobStore>,
    injector: Injector,
}

impl UnreliableStore {
    pub fn new(inner: Arc<dyn BlobStore>, plan: FaultPlan) -> Self {
        Self { inner, injector: Injector::new(plan) }
    }

    async fn check(&self, op: &'static str, key: &str) -> Result<()> {
        let target = self.inner.url(key).to_string();
        self.injector.check(op, |kind, m| Error::store(op, target, kind, m)).await
    }
}

#[async_trait]
impl BlobStore for UnreliableStore {
    fn url(&self, key: &str) -> BlobUrl {
        self.inner.url(key)
    }
    async fn get(&self, key: &str) -> Result<Bytes> {
        self.check("get", key).await?;
        self.inner.get(key).await
    }
    async fn get_range_if(&self, key: &str, range: Range<u64>, if_match: Option<&str>) -> Result<ByteStream> {
        self.check("get", key).await?;
        self.inner.get_range_if(key, range, if_match).await
    }
    async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        self.check("put", key).await?;
        self.inner.put(key, body).await
    }
    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<bool> {
        self.check("put", key).await?;
        self.inner.put_if_absent(key, body).await
    }
    async fn put_if_version(&self, key: &str, body: Bytes, version: &str) -> Result<bool> {
        self.check("put", key).await?;
        self.inner.put_if_version(key, body, version).await
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.check("head", key).await?;
        self.inner.head(key).await
    }
    fn list<'a>(&'a self, prefix: &'a str) -> BoxStream<'a, Result<ObjectMeta>> {
        stream::once(async move {
            match self.check("list", prefix).await {
                Ok(()) => self.inner.list(prefix),
                Err(e) => stream::iter(vec![Err(e)]).boxed(),
            }
        })
        .flatten()
        .boxed()
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.check("delete", key).await?;
        self.inner.delete(key).await
    }
}
