//! `hourglass serve` driven by tritonclient (PyPI, in the project venv):
//! the KServe v2 protocol over HTTP with binary and JSON tensors, outputs
//! within 1e-6 of a direct ONNX Runtime run, concurrent requests of mixed
//! sizes batched and split back, malformed requests named; then SIGTERM
//! stops it cleanly.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

#[test]
fn tritonclient_speaks_to_hourglass_serve() {
    let model = model_path();
    let mut serve = WorkerProc::spawn_command(
        &[
            "serve",
            "--model",
            model.to_str().unwrap(),
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
            "--max-queue-delay",
            "2ms",
        ],
        &[],
    );
    let bound = |line: String| -> String {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        v["bound"].as_str().unwrap().to_string()
    };
    let addr = bound(serve.wait_for_line("serving HTTP", Duration::from_secs(60)));
    let grpc = bound(serve.wait_for_line("serving gRPC", Duration::from_secs(10)));
    let python = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/serve_client.py");
    let out =
        Command::new(python).arg(script).args([&addr, &grpc, "ctr_gbdt", model.to_str().unwrap()]).output().unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("OK"),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Every request counted, every call's rows observed (how many requests
    // share a call depends on timing: `hourglass bench` measures that).
    let text = scrape(&addr);
    let value = |name: &str| -> f64 {
        text.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0.0)
    };
    let ok = value("hourglass_serve_requests_total{model=\"ctr_gbdt\",outcome=\"ok\"}");
    let calls = value("hourglass_serve_batch_rows_count");
    assert!(ok >= 200.0 && calls > 0.0 && calls <= ok, "requests {ok}, calls {calls}\n{text}");
    assert_eq!(value("hourglass_serve_requests_total{model=\"ctr_gbdt\",outcome=\"bad_request\"}"), 5.0, "{text}");
    serve.signal("TERM");
    assert!(serve.wait_exit(Duration::from_secs(30)).success());
}
