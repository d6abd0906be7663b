//! `hourglass serve` driven by tritonclient (PyPI, in the project venv):
//! the KServe v2 protocol over HTTP with binary and JSON tensors, outputs
//! within 1e-6 of a direct ONNX Runtime run, concurrent requests of mixed
//! sizes batched and split back, malformed requests named; then SIGTERM
//! stops it cleanly.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

/// The project venv's Python and a script under tests/.
fn python_script(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    (root.join(".venv/bin/python"), root.join("tests").join(name))
}

#[test]
fn tritonclient_speaks_to_hourglass_serve() {
    let model = model_path();
    let (mut serve, addr, grpc) = spawn_serve(&["--model", model.to_str().unwrap(), "--max-queue-delay", "2ms"], &[]);
    let (python, script) = python_script("serve_client.py");
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

/// 32 clients (HTTP and gRPC) for 10 s while the registry alias the server
/// follows moves from version 1 (GBDT) to version 2 (MLP): no request
/// fails, every answer names its version, and once any request is answered
/// by version 2 none sent later is answered by version 1.
#[test]
fn an_alias_move_swaps_versions_under_load_without_failing_a_request() {
    let s = Scratch::new();
    let reg = s.s("registry");
    let models = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models");
    let push = |file: &str| {
        let path = models.join(file);
        hourglass_ok(&[
            "model",
            "push",
            path.to_str().unwrap(),
            "--registry",
            &reg,
            "--name",
            "ctr",
            "--alias",
            "champion",
        ]);
    };
    push("ctr_gbdt.onnx");
    let reference = format!("{reg}/ctr@champion");
    let (mut serve, addr, grpc) = spawn_serve(&["--model", &reference, "--follow-interval", "100ms"], &[]);
    let (python, script) = python_script("serve_swap_client.py");
    let mut client = Command::new(python)
        .arg(script)
        .args([&addr, &grpc, "ctr", "10"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(client.stdout.take().unwrap()));
    assert_eq!(lines.next().unwrap().unwrap(), "WARM");
    push("ctr_mlp.onnx");
    serve.wait_for_line("now serving the new version", Duration::from_secs(30));
    let summary = lines.next().expect("the client's summary").unwrap();
    assert!(client.wait().unwrap().success());
    eprintln!("swap under load: {summary}");
    let v: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(v["failed"], 0, "{summary}");
    assert!(v["by_version"]["1"].as_u64().unwrap_or(0) > 0, "{summary}");
    assert!(v["by_version"]["2"].as_u64().unwrap_or(0) > 0, "{summary}");
    assert_eq!(v["stale_after_switch"], 0, "{summary}");
    assert_eq!(v["last_versions"], serde_json::json!(["2"]), "{summary}");
    let text = scrape(&addr);
    assert!(text.contains("hourglass_serve_model_loaded{model=\"ctr\",version=\"2\""), "{text}");
    assert!(!text.contains("version=\"1\""), "{text}");
    serve.signal("TERM");
    assert!(serve.wait_exit(Duration::from_secs(30)).success());
}

/// `hourglass bench serve` end to end on a tiny matrix: every cell ran
/// without a failed request, batching on grouped requests, and the report
/// carries raw ONNX Runtime and the targets (figures are for the README,
/// not asserted).
#[test]
fn bench_serve_reports_every_cell() {
    let out = hourglass_ok(&[
        "bench",
        "serve",
        "--model",
        model_path().to_str().unwrap(),
        "--concurrency",
        "1,8",
        "--rows",
        "1,16",
        "--duration",
        "300ms",
        "--warmup",
        "100ms",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let cells = v["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 2 * 2 * 2 * 2, "protocols × rows × concurrency × batching");
    for c in cells {
        assert_eq!(c["failed"], 0, "{c}");
        assert!(c["requests"].as_u64().unwrap() > 0, "{c}");
        assert!(c["requests_per_call"].as_f64().unwrap() >= 1.0, "{c}");
        if c["batching"] == false {
            assert_eq!(c["requests_per_call"], 1.0, "batching off is one request per call: {c}");
        }
    }
    assert!(v["raw"]["rows_per_sec"].as_f64().unwrap() > 0.0);
    assert_eq!(v["raw"]["rows"], 16);
}
