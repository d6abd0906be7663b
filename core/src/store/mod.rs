//! The `BlobStore` seam: where inputs, models, outputs and the job ledger
//! live. Backends: the filesystem and S3, both shaped by S3's semantics:
//! ranged reads as streams, paged listing, conditional create.

mod counting;
mod fs;
mod retry;
mod s3;
mod unreliable;

pub use counting::CountingStore;
pub use fs::FsStore;
pub use retry::RetryStore;
pub use s3::S3Store;
pub use unreliable::UnreliableStore;

use crate::url::Scheme;
use crate::{BlobUrl, Result};
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

/// A stream of body chunks; memory stays bounded by the chunk size however
/// large the range is.
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The full key within the store's bucket.
    pub key: String,
    pub size: u64,
    pub last_modified: Option<SystemTime>,
    /// Changes whenever the object is written: the ETag on S3; size,
    /// modification time and inode on the filesystem (every put renames a
    /// new file into place). Pins inputs and tells cached records apart.
    pub version: String,
}

/// Object storage as S3 shapes it: flat keys in a bucket, whole-object
/// writes, ranged reads.
///
/// Contract, for every backend:
/// - a `put` is atomic: readers see the old object, or the whole new one,
///   never a part;
/// - `put_if_absent` creates the object only if no object has the key, and
///   says whether it did; of racing callers exactly one wins;
/// - `put_if_version` replaces it only if it is still the version read;
///   of racing callers exactly one wins;
/// - `list` yields every object whose key starts with `prefix` (no
///   delimiter, recursive), in lexicographic key order, across pages;
/// - missing objects are errors of kind `NotFound`; `delete` of a missing
///   object succeeds.
#[async_trait]
pub trait BlobStore: Send + Sync + std::fmt::Debug {
    /// The URL of a key, for messages and records.
    fn url(&self, key: &str) -> BlobUrl;

    async fn get(&self, key: &str) -> Result<Bytes>;

    /// Streams `range` of the object; a range past the end is cut at the end.
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<ByteStream> {
        self.get_range_if(key, range, None).await
    }

    /// `get_range` of one version of the object: with `if_match`, an object
    /// whose `ObjectMeta::version` differs fails with kind `Changed` (S3's
    /// `If-Match`), so a shard never reads a file rewritten under its job.
    async fn get_range_if(&self, key: &str, range: Range<u64>, if_match: Option<&str>) -> Result<ByteStream>;

    async fn put(&self, key: &str, body: Bytes) -> Result<()>;

    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<bool>;

    /// Replaces the object only if it is still at `version` (its
    /// `ObjectMeta::version`; S3's `If-Match`), and says whether it did: a
    /// compare-and-swap. Of racing callers that read the same version,
    /// exactly one wins; a missing object is a lost race.
    async fn put_if_version(&self, key: &str, body: Bytes, version: &str) -> Result<bool>;

    async fn head(&self, key: &str) -> Result<ObjectMeta>;

    fn list<'a>(&'a self, prefix: &'a str) -> BoxStream<'a, Result<ObjectMeta>>;

    async fn delete(&self, key: &str) -> Result<()>;
}

/// Opens the store that holds `url`: the backend, behind fault injection
/// when the process installed a plan, behind retries.
pub fn open(url: &BlobUrl) -> Result<Arc<dyn BlobStore>> {
    let mut store: Arc<dyn BlobStore> = match url.scheme() {
        Scheme::File => Arc::new(FsStore::new()),
        Scheme::S3 => Arc::new(s3::open(url)),
    };
    if let Some(plan) = crate::fault::installed() {
        store = Arc::new(UnreliableStore::new(store, plan.clone()));
    }
    Ok(Arc::new(RetryStore::new(store)))
}

/// Reads a whole range into memory; for small reads (probes, footers).
pub async fn read_range(store: &dyn BlobStore, key: &str, range: Range<u64>) -> Result<Vec<u8>> {
    read_range_if(store, key, range, None).await
}

/// `read_range` of one version of the object (see `get_range_if`).
pub async fn read_range_if(
    store: &dyn BlobStore,
    key: &str,
    range: Range<u64>,
    if_match: Option<&str>,
) -> Result<Vec<u8>> {
    use futures::TryStreamExt;
    // Sized for the whole range up front (no regrowth copies), within
    // reason for a range read from a corrupt footer.
    let mut out = Vec::with_capacity((range.end - range.start).min(256 << 20) as usize);
    let mut stream = store.get_range_if(key, range, if_match).await?;
    while let Some(chunk) = stream.try_next().await? {
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Lists every object under `prefix` into a vector.
pub async fn list_all(store: &dyn BlobStore, prefix: &str) -> Result<Vec<ObjectMeta>> {
    use futures::TryStreamExt;
    store.list(prefix).try_collect().await
}
