//! Request-shape tests of the Kubernetes actuators against a mocked API
//! (tower-test): the exact requests the scaler sends, and how it takes the
//! server's 404, 403 and 409 answers. The real API server tier
//! (`tests/scaler_kube.rs` at the root) checks the same calls for real.

use std::time::{Duration, SystemTime};

use hourglass_core::metrics::Health;
use hourglass_core::queue;
use hourglass_scaler::kube::{DeploymentRef, EventType, Kube, KubeError};
use hourglass_scaler::policy::PolicyConfig;
use hourglass_scaler::run::{LoopConfig, Mode, Scaler};
use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock::{self, Handle};

type Mock = Handle<Request<Body>, Response<Body>>;

fn client() -> (Kube, Mock) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (Kube::new(kube::Client::new(service, "default")), handle)
}

fn worker() -> DeploymentRef {
    "batch/hourglass-worker".parse().unwrap()
}

fn reply(status: StatusCode, body: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
    reply(
        StatusCode::from_u16(code).unwrap(),
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code}),
    )
}

fn scale(replicas: i32, status_replicas: i32) -> Value {
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": "hourglass-worker", "namespace": "batch", "uid": "u-1", "resourceVersion": "7"},
        "spec": {"replicas": replicas},
        "status": {"replicas": status_replicas, "selector": "app=hourglass-worker"}
    })
}

/// HPAs in `batch`, each targeting the named Deployment.
fn hpa_list(targets: &[&str]) -> Value {
    let items: Vec<Value> = targets
        .iter()
        .map(|t| {
            json!({
                "metadata": {"name": format!("keda-hpa-{t}"), "namespace": "batch"},
                "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": t}, "maxReplicas": 10}
            })
        })
        .collect();
    json!({"kind": "HorizontalPodAutoscalerList", "apiVersion": "autoscaling/v1", "metadata": {}, "items": items})
}

fn pod_list() -> Value {
    json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": []})
}

async fn two_message_scaler(mode: Mode) -> (tempfile::TempDir, Scaler, Mock) {
    let dir = tempfile::tempdir().unwrap();
    let q = queue::open(&format!("local://{}/q.db", dir.path().display())).unwrap();
    queue::send_all(q.as_ref(), &["{}".to_string(), "{}".to_string()]).await.unwrap();
    let (kube, handle) = client();
    let cfg = LoopConfig {
        policy: PolicyConfig { target_messages_per_replica: 1, ..PolicyConfig::default() },
        interval: Duration::from_secs(1),
        worker: worker(),
        placeholders: None,
        deadline: None,
        prewarm: None,
        dry_run: false,
        mode,
        prices: Default::default(),
        protect_busy_pods: true,
    };
    (dir, Scaler::new(cfg, q, None, kube), handle)
}

#[tokio::test]
async fn an_hpa_on_the_worker_deployment_is_refused_with_one_event() {
    let (_dir, mut scaler, mut handle) = two_message_scaler(Mode::Patch).await;
    let server = tokio::spawn(async move {
        for tick in 0..2 {
            let (parts, _, send) = next(&mut handle).await;
            assert_eq!(parts.method, Method::GET);
            send.send_response(reply(StatusCode::OK, scale(0, 0)));
            let (_, _, send) = next(&mut handle).await;
            send.send_response(reply(StatusCode::OK, pod_list()));
            let (parts, _, send) = next(&mut handle).await;
            assert_eq!(parts.uri.path(), "/apis/autoscaling/v1/namespaces/batch/horizontalpodautoscalers");
            send.send_response(reply(StatusCode::OK, hpa_list(&["hourglass-worker"])));
            if tick == 0 {
                // No patch: a Warning Event saying why, once.
                let (parts, body, send) = next(&mut handle).await;
                assert_eq!((parts.method, parts.uri.path()), (Method::POST, "/api/v1/namespaces/batch/events"));
                let event: Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(
                    (event["type"].as_str(), event["reason"].as_str()),
                    (Some("Warning"), Some("AutoscalerConflict"))
                );
                let message = event["message"].as_str().unwrap();
                assert!(
                    message.contains("batch/keda-hpa-hourglass-worker") && message.contains("--mode advise"),
                    "{message}"
                );
                send.send_response(reply(StatusCode::CREATED, event));
            }
        }
        // Nothing else: no PATCH, no second Event.
        assert!(tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await.is_err());
    });
    for _ in 0..2 {
        let report = scaler.tick(SystemTime::now()).await.unwrap();
        assert_eq!(report.decision.desired_replicas, 2);
        assert_eq!(report.conflict.as_deref(), Some("batch/keda-hpa-hourglass-worker"));
        assert!(report.errors.is_empty(), "{:?}", report.errors);
    }
    server.await.unwrap();
    let mut registry = prometheus_client::registry::Registry::default();
    scaler.metrics().register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.lines().any(|l| l == "hourglass_scaler_autoscaler_conflict 1"), "{text}");
    assert!(text.lines().any(|l| l == "hourglass_scaler_scale_changes_total 0"), "{text}");
}

#[tokio::test]
async fn advise_mode_reads_writes_nothing_and_serves_the_decision_for_keda() {
    let (_dir, mut scaler, mut handle) = two_message_scaler(Mode::Advise).await;
    let keda = scaler.advice();
    assert!(matches!(keda.json("/keda"), Some(Err(_))), "no decision before the first tick");
    assert_eq!(keda.json("/other"), None);
    let server = tokio::spawn(async move {
        let (parts, _, send) = next(&mut handle).await;
        assert_eq!(parts.method, Method::GET);
        send.send_response(reply(StatusCode::OK, scale(0, 0)));
        let (parts, _, send) = next(&mut handle).await;
        assert_eq!(parts.method, Method::GET);
        send.send_response(reply(StatusCode::OK, pod_list()));
        // Reads only: no HPA check, no PATCH, no Event.
        assert!(tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await.is_err());
    });
    let report = scaler.tick(SystemTime::now()).await.unwrap();
    server.await.unwrap();
    assert!(report.changed_worker && report.errors.is_empty() && report.conflict.is_none());
    let doc: Value = serde_json::from_str(&keda.json("/keda").unwrap().unwrap()).unwrap();
    assert_eq!(doc["desiredReplicas"], 2, "{doc}");
    assert_eq!(doc["placeholderReplicas"], 0, "{doc}");
    assert_eq!(doc["verdict"], "no_deadline", "{doc}");
}

/// The next request, with its body.
async fn next(handle: &mut Mock) -> (http::request::Parts, Vec<u8>, tower_test::mock::SendResponse<Response<Body>>) {
    let (request, send) = tokio::time::timeout(Duration::from_secs(10), handle.next_request())
        .await
        .expect("a request within 10 s")
        .expect("the client sent a request");
    let (parts, body) = request.into_parts();
    let bytes = body.collect_bytes().await.unwrap();
    (parts, bytes.to_vec(), send)
}

#[tokio::test]
async fn scale_patch_is_a_merge_patch_of_spec_replicas_on_the_scale_subresource() {
    let (kube, mut handle) = client();
    let server = tokio::spawn(async move {
        let (parts, body, send) = next(&mut handle).await;
        assert_eq!(parts.method, Method::PATCH);
        assert_eq!(parts.uri.path(), "/apis/apps/v1/namespaces/batch/deployments/hourglass-worker/scale");
        assert_eq!(parts.headers["content-type"], "application/merge-patch+json");
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body, json!({"spec": {"replicas": 5}}), "only spec.replicas is written");
        send.send_response(reply(StatusCode::OK, scale(5, 2)));
    });
    kube.set_scale(&worker(), 5).await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn scale_read_takes_replicas_selector_and_uid() {
    let (kube, mut handle) = client();
    let server = tokio::spawn(async move {
        let (parts, _, send) = next(&mut handle).await;
        assert_eq!(parts.method, Method::GET);
        assert_eq!(parts.uri.path(), "/apis/apps/v1/namespaces/batch/deployments/hourglass-worker/scale");
        send.send_response(reply(StatusCode::OK, scale(3, 2)));
    });
    let s = kube.get_scale(&worker()).await.unwrap();
    assert_eq!((s.spec_replicas, s.status_replicas), (3, 2));
    assert_eq!(s.selector.as_deref(), Some("app=hourglass-worker"));
    assert_eq!(s.uid.as_deref(), Some("u-1"));
    server.await.unwrap();
}

#[tokio::test]
async fn not_found_forbidden_and_conflict_are_told_apart() {
    let (kube, mut handle) = client();
    let server = tokio::spawn(async move {
        for (code, reason) in [(404, "NotFound"), (403, "Forbidden"), (409, "Conflict")] {
            let (_, _, send) = next(&mut handle).await;
            send.send_response(status(code, reason, &format!("answer {code}")));
        }
    });
    let e = kube.set_scale(&worker(), 1).await.unwrap_err();
    assert!(matches!(e, KubeError::NotFound { .. }), "{e}");
    assert!(e.to_string().contains("batch/hourglass-worker"), "{e}");
    let e = kube.set_scale(&worker(), 1).await.unwrap_err();
    assert!(matches!(e, KubeError::Forbidden { .. }), "{e}");
    assert!(e.to_string().contains("deploy/scaler-rbac.yaml"), "{e}");
    let e = kube.set_scale(&worker(), 1).await.unwrap_err();
    assert!(matches!(e, KubeError::Conflict { .. }), "{e}");
    server.await.unwrap();
}

#[tokio::test]
async fn events_name_the_deployment_and_a_repeat_is_not_an_error() {
    let (kube, mut handle) = client();
    let server = tokio::spawn(async move {
        let (parts, body, send) = next(&mut handle).await;
        assert_eq!(parts.method, Method::POST);
        assert_eq!(parts.uri.path(), "/api/v1/namespaces/batch/events");
        let event: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(event["involvedObject"]["kind"], "Deployment");
        assert_eq!(event["involvedObject"]["name"], "hourglass-worker");
        assert_eq!(event["involvedObject"]["uid"], "u-1");
        assert_eq!(event["reason"], "ScaledUp");
        assert_eq!(event["type"], "Normal");
        send.send_response(reply(StatusCode::CREATED, event));
        let (_, _, send) = next(&mut handle).await;
        send.send_response(status(409, "AlreadyExists", "exists"));
    });
    kube.record_event(&worker(), Some("u-1"), EventType::Normal, "ScaledUp", "replicas 0 → 2").await.unwrap();
    kube.record_event(&worker(), Some("u-1"), EventType::Normal, "ScaledUp", "replicas 0 → 2").await.unwrap();
    server.await.unwrap();
}

/// A loop whose patch is refused keeps going, and the next tick tries again.
#[tokio::test]
async fn a_refused_patch_is_reported_and_retried_on_the_next_tick() {
    let (_dir, mut scaler, mut handle) = two_message_scaler(Mode::Patch).await;
    let server = tokio::spawn(async move {
        for attempt in 0..2 {
            let (parts, _, send) = next(&mut handle).await;
            assert_eq!((parts.method, attempt), (Method::GET, attempt));
            send.send_response(reply(StatusCode::OK, scale(0, 0)));
            let (parts, _, send) = next(&mut handle).await;
            assert_eq!(parts.method, Method::GET, "pods are listed");
            assert_eq!(parts.uri.path(), "/api/v1/namespaces/batch/pods");
            assert!(parts.uri.query().unwrap().contains("labelSelector=app%3Dhourglass-worker"), "{:?}", parts.uri);
            send.send_response(reply(
                StatusCode::OK,
                json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": []}),
            ));
            // Before a patch: no other autoscaler targets the Deployment.
            let (parts, _, send) = next(&mut handle).await;
            assert_eq!(parts.uri.path(), "/apis/autoscaling/v1/namespaces/batch/horizontalpodautoscalers");
            send.send_response(reply(StatusCode::OK, hpa_list(&["something-else"])));
            let (parts, body, send) = next(&mut handle).await;
            assert_eq!(parts.method, Method::PATCH);
            assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), json!({"spec": {"replicas": 2}}));
            if attempt == 0 {
                send.send_response(status(403, "Forbidden", "no"));
            } else {
                send.send_response(reply(StatusCode::OK, scale(2, 0)));
                let (parts, _, send) = next(&mut handle).await;
                assert_eq!(parts.uri.path(), "/api/v1/namespaces/batch/events");
                send.send_response(status(403, "Forbidden", "events refused"));
            }
        }
    });
    let first = scaler.tick(SystemTime::now()).await.unwrap();
    assert_eq!(first.decision.desired_replicas, 2);
    assert!(first.changed_worker);
    assert_eq!(first.errors.len(), 1, "{:?}", first.errors);
    let why = format!("{}: {}", first.errors[0], std::error::Error::source(&first.errors[0]).unwrap());
    assert!(why.contains("forbidden"), "{why}");
    assert_eq!(first.errors[0].kind(), hourglass_core::ErrorKind::Permission);
    let second = scaler.tick(SystemTime::now()).await.unwrap();
    assert_eq!(second.decision.desired_replicas, 2);
    assert_eq!(second.errors.len(), 1, "the refused event is reported, the scale went through: {:?}", second.errors);
    server.await.unwrap();

    // What a Prometheus scrape of the scaler shows after those two ticks.
    let mut registry = prometheus_client::registry::Registry::default();
    scaler.metrics().register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for line in [
        "hourglass_scaler_desired_replicas 2",
        "hourglass_scaler_placeholder_replicas 0",
        "hourglass_scaler_projected_finish_timestamp_seconds NaN",
        "hourglass_scaler_deadline_slack_seconds NaN",
        "hourglass_scaler_queue_messages{state=\"visible\"} 2",
        "hourglass_scaler_ticks_total 2",
        "hourglass_scaler_scale_changes_total 1",
        "hourglass_scaler_errors_total{op=\"patch_scale\",kind=\"forbidden\"} 1",
        "hourglass_scaler_errors_total{op=\"create_event\",kind=\"forbidden\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
}

/// A worker's metrics saying it holds `in_flight` shards, on a free port.
async fn worker_metrics(in_flight: u64) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let body = format!("hourglass_worker_shards_in_flight {in_flight}\n");
            let reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
            let _ = s.write_all(reply.as_bytes()).await;
        }
    });
    port
}

#[tokio::test]
async fn a_busy_worker_pod_is_annotated_before_the_scale_is_patched() {
    let (_dir, mut scaler, mut handle) = two_message_scaler(Mode::Patch).await;
    let port = worker_metrics(1).await;
    let server = tokio::spawn(async move {
        let (_, _, send) = next(&mut handle).await;
        send.send_response(reply(StatusCode::OK, scale(1, 1)));
        let (_, _, send) = next(&mut handle).await;
        send.send_response(reply(
            StatusCode::OK,
            json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [{
                "metadata": {"name": "w-1", "namespace": "batch", "annotations": {"keep": "me"}},
                "spec": {"nodeName": "n1", "containers": [{"name": "worker", "image": "x",
                         "ports": [{"name": "metrics", "containerPort": port}]}]},
                "status": {"phase": "Running", "podIP": "127.0.0.1"}
            }]}),
        ));
        // The pod's annotations, as a merge patch of exactly those keys.
        let (parts, body, send) = next(&mut handle).await;
        assert_eq!((parts.method, parts.uri.path()), (Method::PATCH, "/api/v1/namespaces/batch/pods/w-1"));
        assert_eq!(parts.headers["content-type"], "application/merge-patch+json");
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body,
            json!({"metadata": {"annotations": {
                "controller.kubernetes.io/pod-deletion-cost": "1001",
                "cluster-autoscaler.kubernetes.io/safe-to-evict": "false",
                "karpenter.sh/do-not-disrupt": "true"
            }}})
        );
        send.send_response(reply(
            StatusCode::OK,
            json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "w-1"}}),
        ));
        // Then the usual: no HPA, the scale patch, its Event.
        let (parts, _, send) = next(&mut handle).await;
        assert!(parts.uri.path().ends_with("/horizontalpodautoscalers"));
        send.send_response(reply(StatusCode::OK, hpa_list(&[])));
        let (parts, _, send) = next(&mut handle).await;
        assert_eq!(parts.method, Method::PATCH);
        assert!(parts.uri.path().ends_with("/deployments/hourglass-worker/scale"));
        send.send_response(reply(StatusCode::OK, scale(2, 1)));
        let (_, body, send) = next(&mut handle).await;
        send.send_response(reply(StatusCode::CREATED, serde_json::from_slice(&body).unwrap()));
    });
    let report = scaler.tick(SystemTime::now()).await.unwrap();
    server.await.unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.decision.desired_replicas, 2);
}
