//! Blob locations: `s3://bucket/key`, `file:///abs/path` or a plain path.

use crate::{Error, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    File,
    S3,
}

/// A location in a blob store. For `file` the bucket is empty and the key is
/// the absolute path without its leading `/`, so the filesystem looks like
/// one bucket rooted at `/`, and keys join the same way on every backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlobUrl {
    scheme: Scheme,
    bucket: String,
    key: String,
}

impl BlobUrl {
    /// Parses a URL or a plain path (relative paths are made absolute
    /// against the current directory, so tasks mean the same in every
    /// process).
    pub fn parse(input: &str) -> Result<Self> {
        if let Some(rest) = input.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(Error::invalid(format!("url {input:?}"), "s3 url has no bucket"));
            }
            return Ok(Self { scheme: Scheme::S3, bucket: bucket.to_string(), key: key.to_string() });
        }
        let path = if let Some(rest) = input.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(Error::invalid(
                    format!("url {input:?}"),
                    "file url must hold an absolute path (file:///…)",
                ));
            }
            PathBuf::from(rest)
        } else if input.contains("://") {
            return Err(Error::invalid(format!("url {input:?}"), "unsupported scheme; use s3://, file:// or a path"));
        } else if input.is_empty() {
            return Err(Error::invalid("url", "empty location"));
        } else {
            let p = PathBuf::from(input);
            if p.is_absolute() {
                p
            } else {
                std::env::current_dir()
                    .map_err(|e| {
                        Error::invalid(format!("path {input:?}"), format!("cannot resolve relative path: {e}"))
                    })?
                    .join(p)
            }
        };
        let trailing = input.ends_with('/') && input.len() > 1;
        let mut key = normalize(&path).to_string_lossy().trim_start_matches('/').to_string();
        if trailing && !key.is_empty() {
            key.push('/');
        }
        Ok(Self { scheme: Scheme::File, bucket: String::new(), key })
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// The same bucket with another key.
    pub fn with_key(&self, key: impl Into<String>) -> Self {
        Self { scheme: self.scheme, bucket: self.bucket.clone(), key: key.into() }
    }

    /// Treats this URL as a prefix ("directory") and appends `rel`.
    pub fn join(&self, rel: &str) -> Self {
        let mut key = self.key.clone();
        if !key.is_empty() && !key.ends_with('/') {
            key.push('/');
        }
        key.push_str(rel.trim_start_matches('/'));
        self.with_key(key)
    }

    /// This URL as a prefix: with a trailing `/` unless empty.
    pub fn as_prefix(&self) -> Self {
        if self.key.is_empty() || self.key.ends_with('/') {
            self.clone()
        } else {
            self.with_key(format!("{}/", self.key))
        }
    }

    /// The local path of a `file` URL.
    pub fn local_path(&self) -> Option<PathBuf> {
        (self.scheme == Scheme::File).then(|| PathBuf::from(format!("/{}", self.key)))
    }

    /// The last path segment (file name), if any.
    pub fn file_name(&self) -> &str {
        self.key.trim_end_matches('/').rsplit('/').next().unwrap_or("")
    }
}

/// Removes `.` and `..` without touching the filesystem.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

impl fmt::Display for BlobUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scheme {
            Scheme::File => write!(f, "file:///{}", self.key),
            Scheme::S3 => write!(f, "s3://{}/{}", self.bucket, self.key),
        }
    }
}

impl std::str::FromStr for BlobUrl {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl Serialize for BlobUrl {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BlobUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let url = Self::parse(&s).map_err(serde::de::Error::custom)?;
        if url.scheme == Scheme::File && !s.starts_with("file://") {
            return Err(serde::de::Error::custom(format!("{s:?}: stored urls must be absolute (file:// or s3://)")));
        }
        Ok(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_s3_file_and_paths() {
        let u = BlobUrl::parse("s3://feat/2026-11-22/a.csv").unwrap();
        assert_eq!((u.scheme(), u.bucket(), u.key()), (Scheme::S3, "feat", "2026-11-22/a.csv"));
        assert_eq!(u.to_string(), "s3://feat/2026-11-22/a.csv");
        let f = BlobUrl::parse("file:///tmp/x/../y/").unwrap();
        assert_eq!(f.key(), "tmp/y/");
        assert_eq!(f.to_string(), "file:///tmp/y/");
        assert_eq!(f.join("part-1.parquet").key(), "tmp/y/part-1.parquet");
        assert_eq!(BlobUrl::parse("/a/b").unwrap().as_prefix().key(), "a/b/");
        assert!(BlobUrl::parse("http://x").is_err());
        assert!(BlobUrl::parse("s3:///k").is_err());
        let rel = BlobUrl::parse("rel/dir").unwrap();
        assert!(rel.local_path().unwrap().is_absolute());
    }

    #[test]
    fn serde_requires_absolute() {
        let u: BlobUrl = serde_json::from_str("\"file:///a/b\"").unwrap();
        assert_eq!(u.key(), "a/b");
        assert!(serde_json::from_str::<BlobUrl>("\"a/b\"").is_err());
    }
}
