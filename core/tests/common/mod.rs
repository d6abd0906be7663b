//! Test support: the moto server `make test` starts (scripts/with-moto).

#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

/// The moto endpoint. Tests that need it fail, never skip, without it.
pub fn moto() -> String {
    std::env::var("HOURGLASS_TEST_MOTO").expect(
        "HOURGLASS_TEST_MOTO is not set: S3/SQS tests need the moto server that `make test` starts (scripts/with-moto)",
    )
}

/// A name unique to this test run: moto is shared by every test.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}-{}-{}-{nanos}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

pub async fn create_bucket(prefix: &str) -> String {
    moto();
    let bucket = unique(prefix);
    let conf =
        aws_sdk_s3::config::Builder::from(hourglass_core::aws::sdk_config().await).force_path_style(true).build();
    aws_sdk_s3::Client::from_conf(conf)
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("creating a bucket on moto");
    bucket
}
