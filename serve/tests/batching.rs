//! The serving batcher on the real model: requests of different sizes that
//! meet in one batch are scored in one ONNX Runtime call and each gets its
//! own rows back, exactly as when scored alone; a batch reaching a
//! preferred size goes at once; a request alone is never held back for the
//! queue delay. Waits are made deterministic by holding an `Arrival` (a
//! request "on its way"), and a one-hour delay turns any wrongful wait
//! into a test timeout, not a timing measurement.

use hourglass_runtime::{ColumnData, InputData};
use hourglass_runtime::{ModelRuntime, RuntimeOptions};
use hourglass_serve::{Given, GivenInput, Model, ServeConfig, Server};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const HOUR: Duration = Duration::from_secs(3600);
const WIDTH: usize = 39;

fn server(max_batch_size: usize, preferred: Vec<usize>) -> (Arc<Server>, Arc<ModelRuntime>) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/ctr_gbdt.onnx");
    let runtime = Arc::new(ModelRuntime::load_file(&path, RuntimeOptions::default()).unwrap());
    let config = ServeConfig {
        max_batch_size,
        max_queue_delay: HOUR,
        preferred_batch_sizes: preferred,
        queue_limit: 64,
        instances: 1,
        request_timeout: HOUR,
        max_inflight_bytes: 1 << 30,
    };
    let model = Model { name: "m".into(), version: "7".into(), runtime: runtime.clone() };
    (Server::new(vec![model], config), runtime)
}

fn rows(n: usize, seed: usize) -> Vec<f32> {
    (0..n * WIDTH).map(|i| ((i * 31 + seed * 17) % 97) as f32 / 10.0 - 2.0).collect()
}

async fn infer(server: &Server, x: &[f32]) -> Vec<f32> {
    let n = x.len() / WIDTH;
    let given =
        vec![GivenInput { name: "input", datatype: "FP32", shape: vec![n as i64, WIDTH as i64], data: Given::F32(x) }];
    let answer = server.infer("m", None, given, &["probabilities"], server.arrival("m")).await.unwrap();
    assert_eq!(answer.version, "7");
    assert_eq!(answer.outputs[0].shape, vec![n as i64, 2]);
    match &answer.outputs[0].data {
        ColumnData::F32(v) => v.clone(),
        other => panic!("{other:?}"),
    }
}

fn alone(runtime: &ModelRuntime, x: &[f32]) -> Vec<f32> {
    let out = runtime.run_tensors(&[InputData::F32(x.to_vec())], x.len() / WIDTH).unwrap();
    let probs = out.iter().find(|t| t.name == "probabilities").unwrap();
    match &probs.data {
        ColumnData::F32(v) => v.clone(),
        other => panic!("{other:?}"),
    }
}

async fn within_a_minute<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f).await.expect("held back: the batcher waited for the queue delay")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_meeting_in_a_batch_are_scored_in_one_call_and_split_back() {
    let (server, runtime) = server(6, vec![]);
    // Something is "on its way": the forming batch waits until it is full.
    let held = server.arrival("m");
    let inputs: Vec<Vec<f32>> = [1, 3, 2].iter().enumerate().map(|(i, &n)| rows(n, i)).collect();
    let answers = within_a_minute(futures::future::join_all(inputs.iter().map(|x| infer(&server, x)))).await;
    drop(held);
    assert_eq!(server.metrics.calls.get(), 1, "one ONNX Runtime call for the three requests");
    assert_eq!(server.metrics.batched_requests.get(), 3);
    for (x, got) in inputs.iter().zip(answers) {
        assert_eq!(got, alone(&runtime, x), "each request gets exactly its own rows");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_reaching_a_preferred_size_goes_without_waiting() {
    let (server, _) = server(100, vec![4]);
    let held = server.arrival("m");
    let (a, b) = (rows(1, 1), rows(3, 2));
    within_a_minute(futures::future::join(infer(&server, &a), infer(&server, &b))).await;
    drop(held);
    assert_eq!(server.metrics.calls.get(), 1);
    assert_eq!(server.metrics.batched_requests.get(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_alone_is_not_held_for_the_queue_delay() {
    let (server, runtime) = server(256, vec![]);
    let x = rows(5, 3);
    let got = within_a_minute(infer(&server, &x)).await;
    assert_eq!(got, alone(&runtime, &x));
    assert_eq!(server.metrics.calls.get(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_instead_of_growing() {
    // One instance scoring 256-row calls of the deep model (~1 ms each), a
    // queue of one: 100 requests submitted at once cannot all wait.
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/ctr_deep.onnx");
    let runtime = Arc::new(ModelRuntime::load_file(&path, RuntimeOptions::default()).unwrap());
    let config = ServeConfig {
        max_batch_size: 1,
        max_queue_delay: Duration::ZERO,
        preferred_batch_sizes: vec![],
        queue_limit: 1,
        instances: 1,
        request_timeout: HOUR,
        max_inflight_bytes: 1 << 30,
    };
    let server = Server::new(vec![Model { name: "m".into(), version: "1".into(), runtime }], config);
    let x = rows(256, 5);
    let calls = (0..100).map(|_| {
        let given =
            vec![GivenInput { name: "input", datatype: "FP32", shape: vec![256, WIDTH as i64], data: Given::F32(&x) }];
        server.infer("m", None, given, &[], server.arrival("m"))
    });
    let results = within_a_minute(futures::future::join_all(calls)).await;
    let refused: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(!refused.is_empty(), "no request was refused");
    for e in &refused {
        assert_eq!(e.kind, hourglass_serve::Refusal::Busy, "{e:?}");
        assert!(e.message.contains("queue is full"), "{e:?}");
    }
    assert!(results.iter().filter(|r| r.is_ok()).count() >= 1);
    assert_eq!(server.metrics.rejected.get(), refused.len() as u64);
}
