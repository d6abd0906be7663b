//! `--device` and `--ep-fallback` through the real binary, on a machine
//! without a GPU: `worker`, `serve`, `bench` and `doctor` against ONNX
//! Runtime's GPU build (`.venv-gpu`, installed by `make test` through
//! `make setup-gpu-runtime`), and the CPU build's "not enabled in this
//! build". The device a done record, serve metadata and the metrics report
//! must be the one really used: `cpu` after a fallback.
//! `scripts/gpu-check` runs the GPU half of this on a machine with a GPU.

mod common;

use common::*;
use hourglass_core::queue::{LocalQueue, Queue};
use std::path::PathBuf;
use std::time::Duration;

/// `libonnxruntime.so.1.31.1` in a project venv; the test fails (never
/// skips) when setup did not install it.
fn venv_library(venv: &str) -> PathBuf {
    let lib = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(venv).join("lib");
    std::fs::read_dir(&lib)
        .unwrap_or_else(|e| panic!("{}: {e} (make setup / make setup-gpu-runtime)", lib.display()))
        .flatten()
        .map(|e| e.path().join("site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("no libonnxruntime.so.1.31.1 under {}", lib.display()))
}

fn gpu_library() -> String {
    venv_library(".venv-gpu").to_string_lossy().into_owned()
}

fn cpu_library() -> String {
    venv_library(".venv").to_string_lossy().into_owned()
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A small submitted job: (scratch, shards).
fn job() -> (Scratch, u64) {
    let s = Scratch::new();
    gen_data(&s, 20_000, 2, "csv");
    let out = submit(&s, &["--shard-size", "256KiB", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let shards = report["shards"].as_u64().unwrap();
    assert!(shards >= 2);
    (s, shards)
}

#[test]
fn worker_with_error_policy_exits_before_leasing_and_names_the_missing_library() {
    let (s, shards) = job();
    for (device, provider) in [("cuda", "CUDA"), ("tensorrt:0", "TensorRT")] {
        let out = hourglass_env(
            &["worker", "--queue", &s.queue(), "--device", device, "--ep-fallback", "error", "--exit-when-idle", "1s"],
            &[("ORT_DYLIB_PATH", &gpu_library())],
        );
        let err = stderr(&out);
        assert!(!out.status.success(), "{device}: {err}");
        let canonical = if device == "cuda" { "cuda:0" } else { device };
        assert!(err.contains(&format!("device {canonical}: {provider} execution provider unavailable")), "{err}");
        assert!(err.contains("cannot open shared object file"), "{err}");
        // The wheel alone lacks CUDA (libcublas…); after `make setup-gpu`
        // TensorRT (libnvinfer) or, on a machine without one, the driver's
        // libcuda.so.1. Each is named with its fix.
        let fix =
            [("libcublas", "make setup-gpu"), ("libnvinfer", "GPU_TENSORRT=1"), ("libcuda.so.1", "no NVIDIA driver")]
                .into_iter()
                .find(|(lib, _)| err.contains(lib))
                .unwrap_or_else(|| panic!("no missing library named: {err}"))
                .1;
        assert!(err.contains(fix), "the fix is named: {err}");
    }
    let depth = block_on(LocalQueue::open(s.path("queue.db"), None).unwrap().depth()).unwrap();
    assert_eq!((depth.visible, depth.in_flight), (shards, 0), "nothing was leased");
    assert!(!s.path("output/_hourglass/done").exists(), "nothing was written");
}

#[test]
fn cpu_build_says_gpu_providers_are_not_enabled() {
    for device in ["cuda", "tensorrt"] {
        let out = hourglass_env(
            &["worker", "--queue", "local:///nonexistent/q.db", "--device", device],
            &[("ORT_DYLIB_PATH", &cpu_library())],
        );
        let err = stderr(&out);
        assert!(!out.status.success());
        assert!(err.contains("execution provider is not enabled in this build"), "{err}");
        assert!(err.contains("is the CPU build") && err.contains("make setup-gpu"), "{err}");
    }
}

#[test]
fn strict_placement_refuses_cpu_fallback_and_bad_devices_are_named() {
    let out = hourglass(&["worker", "--device", "cuda", "--ep-fallback", "cpu", "--strict-placement"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("cannot be combined with --ep-fallback cpu"), "{}", stderr(&out));
    let out = hourglass(&["worker", "--device", "gpu"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("expected cpu, cuda[:N] or tensorrt[:N]"), "{}", stderr(&out));
}

/// `--ep-fallback cpu` (here through the environment variables): the job
/// completes on the CPU, exactly once and with the reference scores, every
/// done record says `cpu`, and the metrics count the fallback.
#[test]
fn worker_falls_back_to_cpu_and_reports_the_device_in_use() {
    for device in ["cuda:0", "tensorrt:1"] {
        let (s, shards) = job();
        let gpu = gpu_library();
        let env = [("ORT_DYLIB_PATH", gpu.as_str()), ("HOURGLASS_DEVICE", device), ("HOURGLASS_EP_FALLBACK", "cpu")];
        let mut worker = WorkerProc::spawn_on(&s.queue(), &["--metrics-addr", "127.0.0.1:0"], &env);
        let addr = metrics_addr(&mut worker);
        let warned = worker.log.iter().any(|l| l.contains("running on the CPU") && l.contains(device));
        assert!(warned, "a fallback warning for {device}:\n{}", worker.log.join("\n"));
        for _ in 0..shards {
            worker.wait_for_line("shard done", Duration::from_secs(120));
        }
        let text = scrape(&addr);
        assert!(text.contains(&format!("hourglass_ep_fallback_total{{requested=\"{device}\"}} 1")), "{text}");
        assert!(text.contains(&format!("hourglass_device_info{{requested=\"{device}\",device=\"cpu\"}} 1")), "{text}");
        assert!(text.contains("device=\"cpu\"} 1") && text.contains("hourglass_model_info{"), "{text}");
        worker.signal("TERM");
        assert!(worker.wait_exit(Duration::from_secs(60)).success());
        assert_eq!(status_json(&s)["state"], "succeeded");
        let done = s.path("output/_hourglass/done");
        let mut records = 0;
        for entry in std::fs::read_dir(&done).unwrap() {
            let record: serde_json::Value =
                serde_json::from_slice(&std::fs::read(entry.unwrap().path()).unwrap()).unwrap();
            assert_eq!(record["device"], "cpu", "{record}");
            records += 1;
        }
        assert_eq!(records, shards);
        let expected = direct_scores(&read_csv_inputs(&s.path("input")));
        assert_exactly_once(&read_outputs(&s.path("output")), &expected, true);
    }
}

/// serve under `--device cuda --ep-fallback cpu`: the model metadata says
/// `cpu` over HTTP (parameters) and gRPC (response metadata), and the
/// fallback is counted on its /metrics.
#[test]
fn serve_reports_the_device_in_use() {
    let model = model_path();
    let gpu = gpu_library();
    let args = ["--model", model.to_str().unwrap(), "--device", "cuda", "--ep-fallback", "cpu"];
    let (mut serve, addr, grpc) = spawn_serve(&args, &[("ORT_DYLIB_PATH", gpu.as_str())]);
    let (code, body) = http_get(&addr, "/v2/models/ctr_gbdt").unwrap();
    assert_eq!(code, 200, "{body}");
    let meta: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(meta["parameters"]["device"], "cpu", "{meta}");
    // gRPC's ModelMetadataResponse has no parameters: a response header,
    // read with the protocol's own stubs (tritonclient's).
    let script = "import sys, grpc\n\
        from tritonclient.grpc import service_pb2, service_pb2_grpc\n\
        stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(sys.argv[1]))\n\
        request = service_pb2.ModelMetadataRequest(name='ctr_gbdt')\n\
        _, call = stub.ModelMetadata.with_call(request, timeout=10)\n\
        print(dict(call.initial_metadata()).get('hourglass-device'))\n";
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let out = std::process::Command::new(python).args(["-c", script, &grpc]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "cpu");
    let text = scrape(&addr);
    assert!(text.contains("hourglass_ep_fallback_total{requested=\"cuda:0\"} 1"), "{text}");
    assert!(text.contains("device=\"cpu\""), "{text}");
    serve.signal("TERM");
    assert!(serve.wait_exit(Duration::from_secs(30)).success());
}

/// On the CPU build and `--device cpu`, the metadata says `cpu` and no
/// fallback happened: the field reports, it is not a constant.
#[test]
fn serve_on_cpu_reports_cpu_without_a_fallback() {
    let model = model_path();
    let (mut serve, addr, _) = spawn_serve(&["--model", model.to_str().unwrap()], &[]);
    let (_, body) = http_get(&addr, "/v2/models/ctr_gbdt").unwrap();
    let meta: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(meta["parameters"]["device"], "cpu", "{meta}");
    let text = scrape(&addr);
    assert!(text.contains("hourglass_device_info{requested=\"cpu\",device=\"cpu\"} 1"), "{text}");
    assert!(!text.contains("hourglass_ep_fallback_total{"), "{text}");
    serve.signal("TERM");
    assert!(serve.wait_exit(Duration::from_secs(30)).success());
}

/// bench's report says where it really ran and what was asked.
#[test]
fn bench_reports_the_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let out = hourglass_env(
        &[
            "bench",
            "--rows",
            "20000",
            "--files",
            "1",
            "--reps",
            "1",
            "--raw-rows",
            "8192",
            "--shard-size",
            "1MiB",
            "--dir",
            dir.path().to_str().unwrap(),
            "--json",
            "--device",
            "cuda",
            "--ep-fallback",
            "cpu",
        ],
        &[("ORT_DYLIB_PATH", &gpu_library())],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["device"], "cpu", "{report}");
    assert_eq!(report["requested_device"], "cuda:0", "{report}");
    assert_eq!(report["batch_size"], 8192, "the CPU's default batch after the fallback: {report}");
}

/// doctor names each device and why it does not register; a GPU asked for
/// with --device that does not work fails it.
#[test]
fn doctor_reports_which_providers_register() {
    let out = hourglass(&["doctor", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let checks: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let devices: Vec<&serde_json::Value> =
        checks.as_array().unwrap().iter().filter(|c| c["name"] == "device").collect();
    assert_eq!(devices.len(), 3, "{checks}");
    assert_eq!(devices[0]["ok"], true, "{checks}");
    for d in &devices[1..] {
        assert_eq!((d["ok"].as_bool(), d["optional"].as_bool()), (Some(false), Some(true)), "{d}");
        assert!(d["detail"].as_str().unwrap().contains("execution provider unavailable"), "{d}");
    }
    let out = hourglass(&["doctor", "--device", "cuda:0"]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("FAIL device") && text.contains("cuda:0"), "{text}");
}
