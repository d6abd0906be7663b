//! The one AWS SDK configuration every S3 and SQS client shares, loaded
//! once per process the SDK's own way: region from `AWS_REGION` or the
//! profile, credentials from the default chain (env, profile, web identity
//! / IRSA, container and instance metadata), endpoints from
//! `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL_SQS`.
//! One HTTP stack (hyper 1 + rustls with ring) serves every client.

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use tokio::sync::OnceCell;

static CONFIG: OnceCell<SdkConfig> = OnceCell::const_new();

/// The shared SDK configuration. The SDK's own retries are off: every store
/// and queue call is retried by `crate::retry` (jittered, with one
/// documented budget), and stacking the SDK's attempts under ours would
/// multiply them.
pub async fn sdk_config() -> &'static SdkConfig {
    CONFIG
        .get_or_init(|| async {
            let http =
                aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https();
            aws_config::defaults(BehaviorVersion::latest())
                .http_client(http)
                .retry_config(RetryConfig::disabled())
                .load()
                .await
        })
        .await
}

/// Whether an S3 endpoint override is set: then path-style addressing,
/// since S3-compatible servers (moto, MinIO) rarely serve bucket hosts.
pub fn s3_endpoint_overridden() -> bool {
    std::env::var_os("AWS_ENDPOINT_URL_S3").is_some() || std::env::var_os("AWS_ENDPOINT_URL").is_some()
}

/// Classifies an SDK error: `(kind, message with the service's code)`.
pub fn classify<E>(
    err: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> (crate::ErrorKind, String)
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    use crate::ErrorKind as K;
    use aws_sdk_s3::error::SdkError;
    let message = aws_smithy_types::error::display::DisplayErrorContext(err).to_string();
    let kind = match err {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let code = se.err().code().unwrap_or_default();
            match (status, code) {
                (
                    _,
                    "NoSuchKey"
                    | "NotFound"
                    | "NoSuchUpload"
                    | "AWS.SimpleQueueService.NonExistentQueue"
                    | "QueueDoesNotExist",
                ) => K::NotFound,
                (404, "NoSuchBucket") => K::Permanent,
                (404, _) => K::NotFound,
                (
                    _,
                    "AccessDenied"
                    | "AccessDeniedException"
                    | "InvalidAccessKeyId"
                    | "SignatureDoesNotMatch"
                    | "ExpiredToken",
                ) => K::Permission,
                (401 | 403, _) => K::Permission,
                (
                    _,
                    "SlowDown" | "Throttling" | "ThrottlingException" | "RequestThrottled" | "RequestLimitExceeded",
                ) => K::Throttled,
                (429 | 503, _) => K::Throttled,
                (500..=599, _) => K::Transient,
                _ => K::Permanent,
            }
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => K::Transient,
        _ => K::Permanent,
    };
    (kind, message)
}
