//! `hourglass doctor`: what this machine has for Hourglass, each finding
//! with the fix in one line when something a command needs is missing.
//! Exits non-zero when a check fails. Prints no secrets: for credentials it
//! names the source, never a key.

use super::load_model;
use anyhow::Result;
use clap::Args;
use futures::StreamExt;
use hourglass_core::{BlobUrl, queue, store};
use serde::Serialize;

#[derive(Args)]
pub struct DoctorArgs {
    /// Also check that this queue is reachable (reads its depth).
    #[arg(long, env = "HOURGLASS_QUEUE")]
    queue: Option<String>,
    /// Also check that this store prefix is reachable (lists under it).
    #[arg(long)]
    store: Option<String>,
    /// Also load this model and check it can score batches.
    #[arg(long)]
    model: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Check {
    name: &'static str,
    ok: bool,
    /// What was found.
    detail: String,
    /// What to do about a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

fn pass(name: &'static str, detail: impl Into<String>) -> Check {
    Check { name, ok: true, detail: detail.into(), fix: None }
}

fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check { name, ok: false, detail: detail.into(), fix: Some(fix.into()) }
}

pub async fn run(a: DoctorArgs) -> Result<()> {
    let mut checks = vec![pass("hourglass", crate::version::short())];
    checks.push(match hourglass_worker::runtime::library_info() {
        Ok((path, version)) => pass("onnxruntime", format!("{version} at {}", path.display())),
        Err(e) => fail(
            "onnxruntime",
            hourglass_core::error::chain(&e),
            "run `make setup` (onnxruntime==1.31.1 into .venv) or set ORT_DYLIB_PATH to libonnxruntime.so.1.31.1",
        ),
    });
    if let Ok(providers) = hourglass_worker::runtime::available_providers() {
        checks.push(pass("execution providers", providers.join(", ")));
    }
    checks.push(aws_settings());
    if let Some(url) = &a.queue {
        checks.push(match queue::open(url) {
            Ok(q) => match q.depth().await {
                Ok(d) => pass("queue", format!("{url}: {} visible, {} in flight", d.visible, d.in_flight)),
                Err(e) => fail("queue", hourglass_core::error::chain(&e), queue_fix(url, &e)),
            },
            Err(e) => fail("queue", e.to_string(), "use local://path, an SQS queue URL or sqs://name"),
        });
    }
    if let Some(url) = &a.store {
        checks.push(match BlobUrl::parse(url).map(|u| u.as_prefix()) {
            Ok(prefix) => match store::open(&prefix) {
                Ok(s) => match s.list(prefix.key()).next().await {
                    None | Some(Ok(_)) => pass("store", format!("{prefix}: listable")),
                    Some(Err(e)) => fail(
                        "store",
                        hourglass_core::error::chain(&e),
                        "check the bucket name, the region and s3:ListBucket on it (`hourglass iam policy`)",
                    ),
                },
                Err(e) => fail("store", e.to_string(), "use a directory path, file:// or s3://bucket/prefix/"),
            },
            Err(e) => fail("store", e.to_string(), "use a directory path, file:// or s3://bucket/prefix/"),
        });
    }
    if let Some(url) = &a.model {
        checks.push(match BlobUrl::parse(url) {
            Ok(m) => match load_model(&m, 1).await {
                Ok(rt) => pass("model", format!("{m}: sha256 {}, {} inputs", rt.sha256(), rt.signature().inputs.len())),
                Err(e) => fail("model", format!("{e:#}"), "check the path and that the model scores batches"),
            },
            Err(e) => fail("model", e.to_string(), "use a file path or s3://bucket/key.onnx"),
        });
    }
    let failed = checks.iter().filter(|c| !c.ok).count();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        for c in &checks {
            println!("{} {:<20} {}", if c.ok { "ok  " } else { "FAIL" }, c.name, c.detail);
            if let Some(fix) = &c.fix {
                println!("     {:<20} fix: {fix}", "");
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} check(s) failed");
    }
    Ok(())
}

fn queue_fix(url: &str, e: &hourglass_core::Error) -> String {
    use hourglass_core::ErrorKind as K;
    match e.kind() {
        K::NotFound => format!("create it: `hourglass queue create --name {}`", url.rsplit('/').next().unwrap_or(url)),
        K::Permission => "grant the sqs: actions of `hourglass iam policy --role worker`".into(),
        _ => "check AWS_REGION / AWS_ENDPOINT_URL and the network path to the queue".into(),
    }
}

/// The AWS settings in effect, as the SDK will read them; never a secret.
fn aws_settings() -> Check {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let region = var("AWS_REGION")
        .or_else(|| var("AWS_DEFAULT_REGION"))
        .map(|r| format!("region {r}"))
        .unwrap_or_else(|| "region from the profile or instance metadata".into());
    let mut endpoints: Vec<String> = ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_SQS"]
        .iter()
        .filter_map(|k| var(k).map(|v| format!("{k}={v}")))
        .collect();
    if endpoints.is_empty() {
        endpoints.push("AWS endpoints".into());
    }
    let credentials = if var("AWS_ACCESS_KEY_ID").is_some() {
        "credentials from the environment (AWS_ACCESS_KEY_ID)".to_string()
    } else if let Some(role) = var("AWS_ROLE_ARN").filter(|_| var("AWS_WEB_IDENTITY_TOKEN_FILE").is_some()) {
        format!("credentials from web identity (IRSA) as {role}")
    } else if var("AWS_CONTAINER_CREDENTIALS_FULL_URI").is_some()
        || var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").is_some()
    {
        "credentials from the container endpoint (EKS Pod Identity / ECS)".into()
    } else if let Some(p) = var("AWS_PROFILE") {
        format!("credentials from profile {p}")
    } else {
        "credentials from the default profile or instance metadata".into()
    };
    pass("aws", format!("{region}; {}; {credentials}", endpoints.join(", ")))
}
