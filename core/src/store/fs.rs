//! The filesystem store: the whole filesystem as one bucket rooted at `/`.
//! Writes go to a hidden temp file in the target directory and are renamed
//! into place, so a reader never sees half an object; `put_if_absent` links
//! the temp file, which fails if the target exists.

use super::{BlobStore, ByteStream, ObjectMeta};
use crate::error::io_kind;
use crate::{BlobUrl, Error, Result};
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Files in flight start with this; listings skip them.
const TEMP_PREFIX: &str = ".hourglass-tmp-";
/// Chunk size of ranged reads: large enough to amortise the blocking-pool
/// hop, small enough that a stream holds little memory.
const READ_CHUNK_BYTES: u64 = 1 << 20;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Default, Clone)]
pub struct FsStore;

impl FsStore {
    pub fn new() -> Self {
        Self
    }

    fn path(key: &str) -> PathBuf {
        PathBuf::from(format!("/{}", key.trim_start_matches('/')))
    }

    fn err(op: &'static str, key: &str, e: std::io::Error) -> Error {
        let message = e.to_string();
        Error::store(op, format!("file:///{}", key.trim_start_matches('/')), io_kind(&e), message).caused_by(e)
    }

    fn write_temp(path: &Path, body: &[u8]) -> std::io::Result<PathBuf> {
        let dir = path.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(dir)?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = dir.join(format!(
            "{TEMP_PREFIX}{}-{}-{name}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let written = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(body)?;
            // Durable before it becomes visible: the ledger relies on a done
            // record never pointing at an output that a crash could lose.
            f.sync_all()
        })();
        match written {
            Ok(()) => Ok(tmp),
            Err(e) => {
                // A full or failing disk must not keep the part written: the
                // next attempt needs the space (a killed process's temp files
                // are skipped by `list` and swept by `hourglass verify`).
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }
}

/// A file's version: size, modification time and inode. A put renames a
/// new file into place, so its inode changes even within one mtime tick.
fn version(meta: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!("{}-{}.{:09}-{}", meta.size(), meta.mtime(), meta.mtime_nsec(), meta.ino())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(Error::store("run", "file:///", crate::ErrorKind::Transient, e)),
    }
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<ObjectMeta>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.kind() == std::io::ErrorKind::NotADirectory => {
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(TEMP_PREFIX) {
            continue;
        }
        let path = entry.path();
        let key = path.to_string_lossy().trim_start_matches('/').to_string();
        let ft = entry.file_type()?;
        if ft.is_dir() {
            // Descend only where keys under this directory can match.
            let dir_key = format!("{key}/");
            if dir_key.starts_with(prefix) || prefix.starts_with(&dir_key) {
                walk(&path, prefix, out)?;
            }
        } else if key.starts_with(prefix) {
            let meta = entry.metadata()?;
            out.push(ObjectMeta {
                key,
                size: meta.len(),
                last_modified: meta.modified().ok(),
                version: version(&meta),
            });
        }
    }
    Ok(())
}

#[async_trait]
impl BlobStore for FsStore {
    fn url(&self, key: &str) -> BlobUrl {
        BlobUrl::parse(&format!("file:///{}", key.trim_start_matches('/'))).expect("absolute file url")
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let k = key.to_string();
        blocking(move || std::fs::read(Self::path(&k)).map(Bytes::from).map_err(|e| Self::err("get", &k, e))).await
    }

    async fn get_range_if(&self, key: &str, range: Range<u64>, if_match: Option<&str>) -> Result<ByteStream> {
        let k = key.to_string();
        let if_match = if_match.map(String::from);
        let file = blocking(move || {
            let mut f = std::fs::File::open(Self::path(&k)).map_err(|e| Self::err("get", &k, e))?;
            // The open file is the version read from here on, whatever is
            // renamed over the path later.
            if let Some(want) = if_match {
                let now = version(&f.metadata().map_err(|e| Self::err("get", &k, e))?);
                if now != want {
                    return Err(Error::store(
                        "get",
                        format!("file:///{}", k.trim_start_matches('/')),
                        crate::ErrorKind::Changed,
                        format!("the file is no longer version {want} (now {now})"),
                    ));
                }
            }
            f.seek(SeekFrom::Start(range.start)).map_err(|e| Self::err("get", &k, e))?;
            Ok(f)
        })
        .await?;
        let label = format!("{key} bytes {}-{}", range.start, range.end.saturating_sub(1));
        let state = (Some(file), range.end.saturating_sub(range.start), label);
        Ok(stream::unfold(state, |(file, remaining, label)| async move {
            let mut file = file?;
            if remaining == 0 {
                return None;
            }
            let want = remaining.min(READ_CHUNK_BYTES);
            let lbl = label.clone();
            let res = tokio::task::spawn_blocking(move || {
                // Read into spare capacity: no zeroing first. `read_to_end`
                // retries interrupted reads and stops at the file's end.
                let mut buf = Vec::with_capacity(want as usize);
                (&mut file).take(want).read_to_end(&mut buf).map_err(|e| Self::err("get", &lbl, e))?;
                Ok((file, buf))
            })
            .await;
            match res {
                Ok(Ok((file, buf))) => {
                    let n = buf.len() as u64;
                    // A short read means the end of the file: stop after it.
                    let next = if n < want { 0 } else { remaining - n };
                    if n == 0 {
                        return None;
                    }
                    Some((Ok(Bytes::from(buf)), (Some(file), next, label)))
                }
                Ok(Err(e)) => Some((Err(e), (None, 0, label))),
                Err(e) => {
                    if e.is_panic() {
                        std::panic::resume_unwind(e.into_panic());
                    }
                    Some((Err(Error::store("get", label.clone(), crate::ErrorKind::Transient, e)), (None, 0, label)))
                }
            }
        })
        .boxed())
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        let k = key.to_string();
        blocking(move || {
            let path = Self::path(&k);
            let tmp = Self::write_temp(&path, &body).map_err(|e| Self::err("put", &k, e))?;
            std::fs::rename(&tmp, &path).map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                Self::err("put", &k, e)
            })
        })
        .await
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<bool> {
        let k = key.to_string();
        blocking(move || {
            let path = Self::path(&k);
            let tmp = Self::write_temp(&path, &body).map_err(|e| Self::err("put", &k, e))?;
            let linked = std::fs::hard_link(&tmp, &path);
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(Self::err("put", &k, e)),
            }
        })
        .await
    }

    async fn put_if_version(&self, key: &str, body: Bytes, expected: &str) -> Result<bool> {
        let (k, expected) = (key.to_string(), expected.to_string());
        blocking(move || {
            let path = Self::path(&k);
            let err = |e| Self::err("put", &k, e);
            let dir = path.parent().unwrap_or(Path::new("/"));
            // The directory's lock orders compare-and-swaps on its files
            // across processes (flock); plain puts do not take it.
            let lock = std::fs::File::open(dir).map_err(err)?;
            lock.lock().map_err(err)?;
            let current = match std::fs::metadata(&path) {
                Ok(meta) => version(&meta),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(err(e)),
            };
            if current != expected {
                return Ok(false);
            }
            let tmp = Self::write_temp(&path, &body).map_err(err)?;
            std::fs::rename(&tmp, &path).map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                err(e)
            })?;
            Ok(true)
        })
        .await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let k = key.to_string();
        blocking(move || {
            let meta = std::fs::metadata(Self::path(&k)).map_err(|e| Self::err("head", &k, e))?;
            if meta.is_dir() {
                return Err(Self::err("head", &k, std::io::Error::from(std::io::ErrorKind::NotFound)));
            }
            Ok(ObjectMeta {
                key: k.trim_start_matches('/').to_string(),
                size: meta.len(),
                last_modified: meta.modified().ok(),
                version: version(&meta),
            })
        })
        .await
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxStream<'a, Result<ObjectMeta>> {
        let prefix = prefix.trim_start_matches('/').to_string();
        stream::once(async move {
            let p = prefix.clone();
            blocking(move || {
                // Start at the deepest directory the prefix names.
                let dir = match p.rfind('/') {
                    Some(i) => PathBuf::from(format!("/{}", &p[..i])),
                    None => PathBuf::from("/"),
                };
                let mut out = Vec::new();
                walk(&dir, &p, &mut out).map_err(|e| Self::err("list", &p, e))?;
                out.sort_by(|a, b| a.key.cmp(&b.key));
                Ok(out)
            })
            .await
        })
        .flat_map(|res: Result<Vec<ObjectMeta>>| match res {
            Ok(v) => stream::iter(v.into_iter().map(Ok)).left_stream(),
            Err(e) => stream::iter(vec![Err(e)]).right_stream(),
        })
        .boxed()
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let k = key.to_string();
        blocking(move || match std::fs::remove_file(Self::path(&k)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Self::err("delete", &k, e)),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{list_all, read_range};

    #[tokio::test]
    async fn put_get_range_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_string_lossy().trim_start_matches('/').to_string();
        let s = FsStore::new();
        let k = format!("{root}/a/b.txt");
        s.put(&k, Bytes::from_static(b"hello world")).await.unwrap();
        assert_eq!(&s.get(&k).await.unwrap()[..], b"hello world");
        assert_eq!(read_range(&s, &k, 6..100).await.unwrap(), b"world");
        assert_eq!(read_range(&s, &k, 0..5).await.unwrap(), b"hello");
        assert!(s.put_if_absent(&format!("{root}/a/c"), Bytes::new()).await.unwrap());
        assert!(!s.put_if_absent(&format!("{root}/a/c"), Bytes::new()).await.unwrap());
        s.put(&format!("{root}/ab"), Bytes::new()).await.unwrap();
        let keys: Vec<_> = list_all(&s, &format!("{root}/a")).await.unwrap().into_iter().map(|m| m.key).collect();
        assert_eq!(keys, vec![format!("{root}/a/b.txt"), format!("{root}/a/c"), format!("{root}/ab")]);
        let keys = list_all(&s, &format!("{root}/a/")).await.unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(s.head(&k).await.unwrap().size, 11);
        s.delete(&k).await.unwrap();
        s.delete(&k).await.unwrap();
        assert!(s.get(&k).await.unwrap_err().is_not_found());
        assert!(s.head(&format!("{root}/a")).await.unwrap_err().is_not_found());
    }
}
