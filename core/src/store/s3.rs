//! The S3 store: one bucket. Ranged reads stream the body (a range is never
//! held whole in memory), listings page, small bodies go in one PUT and
//! large ones as a multipart upload with parts sent concurrently and
//! aborted on failure, so nothing half-written is ever visible.

use super::{BlobStore, ByteStream, ObjectMeta};
use crate::aws::{classify, s3_endpoint_overridden, sdk_config};
use crate::url::Scheme;
use crate::{BlobUrl, Error, ErrorKind, Result};
use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream as SdkBody;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use std::ops::Range;
use std::time::SystemTime;
use tokio::sync::OnceCell;

/// Bodies above this go as multipart uploads.
pub const MULTIPART_THRESHOLD_BYTES: usize = 16 << 20;
/// Part size: S3's minimum is 5 MiB; 8 MiB keeps a 1 GiB object at 128 parts.
pub const PART_BYTES: usize = 8 << 20;
/// Parts in flight per upload.
const PART_CONCURRENCY: usize = 4;

#[derive(Debug)]
pub struct S3Store {
    bucket: String,
    client: OnceCell<Client>,
    multipart_threshold: usize,
    part_bytes: usize,
}

impl S3Store {
    pub fn new(bucket: impl Into<String>) -> Self {
        Self::with_multipart(bucket, MULTIPART_THRESHOLD_BYTES, PART_BYTES)
    }

    /// A store with other multipart sizes (tests use small ones).
    pub fn with_multipart(bucket: impl Into<String>, threshold: usize, part_bytes: usize) -> Self {
        Self {
            bucket: bucket.into(),
            client: OnceCell::new(),
            multipart_threshold: threshold,
            part_bytes: part_bytes.max(5 << 20),
        }
    }

    async fn client(&self) -> &Client {
        self.client
            .get_or_init(|| async {
                let conf = aws_sdk_s3::config::Builder::from(sdk_config().await)
                    .force_path_style(s3_endpoint_overridden())
                    .build();
                Client::from_conf(conf)
            })
            .await
    }

    fn target(&self, key: &str) -> String {
        format!("s3://{}/{}", self.bucket, key)
    }

    fn err<E>(
        &self,
        op: &'static str,
        target: String,
        e: aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> Error
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let (kind, message) = classify(&e);
        let message = match kind {
            // S3 answers a read of a missing key with 403, not 404, to a
            // principal that may not list the bucket.
            ErrorKind::Permission if matches!(op, "get" | "head") => format!(
                "{message} (needs s3:GetObject on {target}, and s3:ListBucket on bucket {} where the key may not exist)",
                self.bucket
            ),
            ErrorKind::Permission => format!("{message} (needs s3:{} on {target})", s3_action(op)),
            _ => message,
        };
        Error::store(op, target, kind, message).caused_by(e)
    }

    /// A PUT that happens only if the key is absent (`If-None-Match: *`),
    /// or, with `version`, only if the object is still that version
    /// (`If-Match`). `Ok(false)`: the condition failed (412, 409 for a
    /// racing write, 404 for an object gone since it was read).
    async fn put_conditional(&self, key: &str, body: Bytes, version: Option<&str>) -> Result<bool> {
        let target = self.target(key);
        let put = self.client().await.put_object().bucket(&self.bucket).key(key).body(SdkBody::from(body));
        let put = match version {
            None => put.if_none_match("*"),
            Some(v) => put.if_match(v),
        };
        match put.send().await {
            Ok(_) => Ok(true),
            Err(e)
                if e.raw_response().is_some_and(|r| match r.status().as_u16() {
                    412 | 409 => true,
                    // A 404 to If-None-Match is a missing bucket: an error.
                    404 => version.is_some(),
                    _ => false,
                }) =>
            {
                Ok(false)
            }
            Err(e) => Err(self.err("put", target, e)),
        }
    }

    async fn put_multipart(&self, key: &str, body: Bytes) -> Result<()> {
        let client = self.client().await;
        let target = self.target(key);
        let created = client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.err("put", target.clone(), e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        let parts: Vec<(i32, Bytes)> = (0..body.len())
            .step_by(self.part_bytes)
            .enumerate()
            .map(|(i, start)| (i as i32 + 1, body.slice(start..(start + self.part_bytes).min(body.len()))))
            .collect();
        let uploaded: Result<Vec<CompletedPart>> = stream::iter(parts)
            .map(|(number, chunk)| {
                let (upload_id, target) = (upload_id.clone(), target.clone());
                async move {
                    let out = client
                        .upload_part()
                        .bucket(&self.bucket)
                        .key(key)
                        .upload_id(upload_id)
                        .part_number(number)
                        .body(SdkBody::from(chunk))
                        .send()
                        .await
                        .map_err(|e| self.err("put", format!("{target} part {number}"), e))?;
                    Ok(CompletedPart::builder().part_number(number).set_e_tag(out.e_tag().map(String::from)).build())
                }
            })
            .buffered(PART_CONCURRENCY)
            .try_collect()
            .await;
        let completed = match uploaded {
            Ok(parts) => client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
                .send()
                .await
                .map(|_| ())
                .map_err(|e| self.err("put", target.clone(), e)),
            Err(e) => Err(e),
        };
        if completed.is_err() {
            // Leave no parts behind (they are billed, and invisible anyway).
            let _ = client.abort_multipart_upload().bucket(&self.bucket).key(key).upload_id(&upload_id).send().await;
        }
        completed
    }
}

fn s3_action(op: &str) -> &'static str {
    match op {
        "get" | "head" => "GetObject",
        "put" => "PutObject",
        "list" => "ListBucket",
        "delete" => "DeleteObject",
        _ => "*",
    }
}

fn to_system_time(t: Option<&aws_sdk_s3::primitives::DateTime>) -> Option<SystemTime> {
    t.and_then(|d| SystemTime::try_from(*d).ok())
}

#[async_trait]
impl BlobStore for S3Store {
    fn url(&self, key: &str) -> BlobUrl {
        BlobUrl::parse(&self.target(key)).expect("s3 url")
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let target = self.target(key);
        let out = self
            .client()
            .await
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.err("get", target.clone(), e))?;
        let body = out.body.collect().await.map_err(|e| Error::store("get", target, ErrorKind::Transient, e))?;
        Ok(body.into_bytes())
    }

    async fn get_range_if(&self, key: &str, range: Range<u64>, if_match: Option<&str>) -> Result<ByteStream> {
        if range.end <= range.start {
            return Ok(stream::empty().boxed());
        }
        let target = format!("{} bytes {}-{}", self.target(key), range.start, range.end - 1);
        let res = self
            .client()
            .await
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(format!("bytes={}-{}", range.start, range.end - 1))
            .set_if_match(if_match.map(String::from))
            .send()
            .await;
        let out = match res {
            Ok(out) => out,
            // A range that starts past the end is empty, as on the filesystem.
            Err(e)
                if e.as_service_error().is_some() && e.raw_response().is_some_and(|r| r.status().as_u16() == 416) =>
            {
                return Ok(stream::empty().boxed());
            }
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 412) => {
                return Err(Error::store(
                    "get",
                    target,
                    ErrorKind::Changed,
                    format!("the object is no longer version {}", if_match.unwrap_or_default()),
                ));
            }
            Err(e) => return Err(self.err("get", target, e)),
        };
        Ok(stream::unfold((out.body, target), |(mut body, target)| async move {
            match body.try_next().await {
                Ok(Some(chunk)) => Some((Ok(chunk), (body, target))),
                Ok(None) => None,
                Err(e) => Some((Err(Error::store("get", target.clone(), ErrorKind::Transient, e)), (body, target))),
            }
        })
        .boxed())
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        if body.len() > self.multipart_threshold {
            return self.put_multipart(key, body).await;
        }
        let target = self.target(key);
        self.client()
            .await
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(SdkBody::from(body))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.err("put", target, e))
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<bool> {
        self.put_conditional(key, body, None).await
    }

    async fn put_if_version(&self, key: &str, body: Bytes, version: &str) -> Result<bool> {
        self.put_conditional(key, body, Some(version)).await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let target = self.target(key);
        let out = self
            .client()
            .await
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.err("head", target, e))?;
        Ok(ObjectMeta {
            key: key.to_string(),
            size: out.content_length().unwrap_or(0).max(0) as u64,
            last_modified: to_system_time(out.last_modified()),
            version: out.e_tag().unwrap_or_default().to_string(),
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxStream<'a, Result<ObjectMeta>> {
        stream::once(async move {
            let pages =
                self.client().await.list_objects_v2().bucket(&self.bucket).prefix(prefix).into_paginator().send();
            stream::unfold(pages, move |mut pages| async move {
                let page = pages.next().await?;
                let items: Vec<Result<ObjectMeta>> = match page {
                    Ok(page) => page
                        .contents()
                        .iter()
                        .map(|o| {
                            Ok(ObjectMeta {
                                key: o.key().unwrap_or_default().to_string(),
                                size: o.size().unwrap_or(0).max(0) as u64,
                                last_modified: to_system_time(o.last_modified()),
                                version: o.e_tag().unwrap_or_default().to_string(),
                            })
                        })
                        .collect(),
                    Err(e) => vec![Err(self.err("list", self.target(prefix), e))],
                };
                Some((stream::iter(items), pages))
            })
            .flatten()
        })
        .flatten()
        .boxed()
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let target = self.target(key);
        self.client()
            .await
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.err("delete", target, e))
    }
}

/// Opens the S3 store of an `s3://` URL's bucket.
pub(super) fn open(url: &BlobUrl) -> S3Store {
    debug_assert_eq!(url.scheme(), Scheme::S3);
    S3Store::new(url.bucket())
}
