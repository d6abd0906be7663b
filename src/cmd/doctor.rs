//! `hourglass doctor`: what this machine has for Hourglass, each finding
//! with the fix in one line when something a command needs is missing.
//! Exits non-zero when a check fails. Prints no secrets: for credentials it
//! names the source, never a key.

use super::load_model;
use anyhow::Result;
use clap::Args;
use futures::StreamExt;
use hourglass_core::{BlobUrl, queue, store};
use hourglass_runtime::device::{Device, DeviceOptions, Fallback};
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
    /// Check that this device registers and runs a probe model (repeatable:
    /// cpu, cuda[:N], tensorrt[:N]); a device named here that does not
    /// work fails the doctor. Default: all three are reported, and a GPU
    /// that does not work here is information, not a failure. Asking for a
    /// GPU loads ONNX Runtime's GPU build (.venv-gpu), as a worker would.
    #[arg(long = "device", value_delimiter = ',')]
    devices: Vec<Device>,
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
    /// Reported, not required: a failure does not fail the doctor.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    optional: bool,
}

fn pass(name: &'static str, detail: impl Into<String>) -> Check {
    Check { name, ok: true, detail: detail.into(), fix: None, optional: false }
}

fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check { name, ok: false, detail: detail.into(), fix: Some(fix.into()), optional: false }
}

pub async fn run(a: DoctorArgs) -> Result<()> {
    let mut checks = vec![pass("hourglass", crate::version::short())];
    let required = !a.devices.is_empty();
    let devices = if required { a.devices.clone() } else { vec![Device::Cpu, Device::Cuda(0), Device::TensorRt(0)] };
    hourglass_runtime::prefer_gpu_library(devices.iter().any(Device::is_gpu));
    checks.push(match hourglass_runtime::library_info() {
        Ok((path, version)) => pass("onnxruntime", format!("{version} at {}", path.display())),
        Err(e) => fail(
            "onnxruntime",
            hourglass_core::error::chain(&e),
            "run `make setup` (onnxruntime==1.31.1 into .venv) or set ORT_DYLIB_PATH to libonnxruntime.so.1.31.1",
        ),
    });
    if let Ok(providers) = hourglass_runtime::available_providers() {
        checks.push(pass("execution providers", format!("built in: {}", providers.join(", "))));
    }
    if devices.iter().any(Device::is_gpu) && hourglass_runtime::environment().is_ok() {
        let found = hourglass_runtime::device::preload_gpu_libraries();
        let names: Vec<String> =
            found.iter().filter_map(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()).collect();
        checks.push(pass(
            "gpu libraries",
            if names.is_empty() {
                "none in the ONNX Runtime venv (site-packages/nvidia, tensorrt_libs): the system's and \
                 LD_LIBRARY_PATH's are used"
                    .to_string()
            } else {
                format!("preloaded from the ONNX Runtime venv: {}", names.join(", "))
            },
        ));
    }
    for device in devices {
        let options = DeviceOptions::new(device, Fallback::Error, false, None);
        let probe = tokio::task::spawn_blocking(move || hourglass_runtime::select::select(&options))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        let mut check = match probe {
            Ok(_) => pass("device", format!("{device}: registers and runs the probe model")),
            Err(e) => fail(
                "device",
                hourglass_core::error::chain(&e),
                if device.is_gpu() {
                    "a GPU node with the NVIDIA driver, after `make setup-gpu`: see docs/gpu.md"
                } else {
                    "run `make setup`"
                },
            ),
        };
        check.optional = !required && device.is_gpu();
        checks.push(check);
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
    let failed = checks.iter().filter(|c| !c.ok && !c.optional).count();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        for c in &checks {
            let mark = match (c.ok, c.optional) {
                (true, _) => "ok  ",
                (false, true) => "--  ",
                (false, false) => "FAIL",
            };
            println!("{mark} {:<20} {}", c.name, c.detail);
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
