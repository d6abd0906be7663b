//! The scaler against a real Kubernetes API server (etcd + kube-apiserver
//! v1.20.2 on loopback, started by `scripts/with-kube` under `make test`):
//! the shipped manifests in `deploy/` apply, the scaler (the real binary,
//! authenticated as the `hourglass-scaler` service account, so only the
//! shipped Role's rights) scales a real Deployment and its placeholders,
//! the Role allows exactly what the scaler does, and placeholder pods get
//! their negative priority from the PriorityClass.

// Tests wait for processes by polling from plain threads.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::Write;
use std::path::PathBuf;

use common::kube::{Kube, ok};
use common::prometheus::Prometheus;
use common::{Scratch, WorkerProc, gen_data, metrics_addr, submit, write_csv};
use hourglass_core::queue;
use serde_json::Value;

/// The tests share the `batch` namespace and its two Deployments (the
/// Role names them): one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn kube() -> Kube {
    let k = Kube::from_env("HOURGLASS_TEST_KUBE");
    k.apply_file("deploy/placeholders.yaml");
    k.apply_file("deploy/scaler-rbac.yaml");
    k.apply(WORKER);
    k
}

/// A worker Deployment as the scaler sees it (the Helm chart ships the real
/// one); no controller manager runs here, so no pods appear by themselves.
const WORKER: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: hourglass-worker, namespace: batch}
spec:
  replicas: 0
  selector: {matchLabels: {app: hourglass-worker}}
  template:
    metadata: {labels: {app: hourglass-worker}}
    spec:
      containers:
        - name: worker
          image: hourglass:test
          resources: {requests: {cpu: "2", memory: 2Gi}}
"#;

/// The real scaler binary ticking every second in dry-run, as the scaler's
/// service account, following `output`'s ledger, serving metrics.
fn live_scaler(kubeconfig: &str, queue: &str, output: &str, placeholders: &str) -> WorkerProc {
    WorkerProc::spawn_command(
        &[
            "scaler",
            "--kubeconfig",
            kubeconfig,
            "--queue",
            queue,
            "--deployment",
            "batch/hourglass-worker",
            "--placeholders",
            placeholders,
            "--ledger",
            output,
            "--interval",
            "1s",
            "--dry-run",
            "--metrics-addr",
            "127.0.0.1:0",
            "--node-prices",
            "spot=0.1,*=0.2",
        ],
        &[],
    )
}

async fn queue_with(s: &Scratch, messages: usize) -> String {
    let url = s.queue();
    let q = queue::open(&url).unwrap();
    queue::send_all(q.as_ref(), &vec!["{}".to_string(); messages]).await.unwrap();
    url
}

#[tokio::test(flavor = "multi_thread")]
async fn scaler_scales_a_real_deployment_and_records_why() {
    let _one = SERIAL.lock().await;
    let k = kube();
    k.set_replicas("hourglass-worker", 0);
    k.set_replicas("hourglass-capacity", 0);
    let before = k.events("hourglass-worker", "ScaledUp").len();
    let s = Scratch::new();
    let queue = queue_with(&s, 6).await;
    let rule = ["--policy", "queue-length", "--target-messages-per-replica", "2", "--idle-cooldown", "0s"];

    // 6 messages at 2 per replica: 3 replicas, written through the scale
    // subresource, with an Event saying why.
    let out = ok(&k.scaler_once(&queue, &rule));
    assert!(out.contains("replicas 0 → 3"), "{out}");
    assert_eq!(k.replicas("hourglass-worker"), 3);
    let events = k.events("hourglass-worker", "ScaledUp");
    assert_eq!(events.len(), before + 1, "{events:?}");
    assert!(events.last().unwrap().contains("6 messages"), "{events:?}");

    // Level-triggered and idempotent: the same state writes nothing.
    ok(&k.scaler_once(&queue, &rule));
    assert_eq!(k.replicas("hourglass-worker"), 3);
    assert_eq!(k.events("hourglass-worker", "ScaledUp").len(), before + 1);

    // Someone scales it by hand: the next tick puts it back.
    k.set_replicas("hourglass-worker", 7);
    ok(&k.scaler_once(&queue, &rule));
    assert_eq!(k.replicas("hourglass-worker"), 3);

    // The queue drains: after the idle cooldown (0 here) it goes to zero.
    let q = queue::open(&queue).unwrap();
    let taken = q.receive(10, std::time::Duration::ZERO, std::time::Duration::from_secs(60)).await.unwrap();
    let receipts: Vec<_> = taken.iter().map(|m| m.receipt.clone()).collect();
    q.ack_batch(&receipts).await.unwrap();
    let out = ok(&k.scaler_once(&queue, &rule));
    assert!(out.contains("replicas 3 → 0"), "{out}");
    assert_eq!(k.replicas("hourglass-worker"), 0);
    assert!(!k.events("hourglass-worker", "ScaledDown").is_empty());
}

/// An HPA on the worker Deployment (KEDA's ScaledObjects make one named
/// keda-hpa-<name>): two autoscalers would undo each other's counts.
const WORKER_HPA: &str = r#"
apiVersion: autoscaling/v1
kind: HorizontalPodAutoscaler
metadata: {name: keda-hpa-hourglass-worker, namespace: batch}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: hourglass-worker}
  minReplicas: 1
  maxReplicas: 10
"#;

#[tokio::test(flavor = "multi_thread")]
async fn scaler_refuses_a_deployment_an_hpa_scales_and_advises_keda_instead() {
    let _one = SERIAL.lock().await;
    let k = kube();
    k.set_replicas("hourglass-worker", 1);
    let s = Scratch::new();
    let queue = queue_with(&s, 6).await;
    let rule = ["--policy", "queue-length", "--target-messages-per-replica", "2"];
    k.apply(WORKER_HPA);
    let before = k.events("hourglass-worker", "AutoscalerConflict").len();
    let out = k.scaler_once(&queue, &rule);
    k.admin(&["delete", "hpa", "keda-hpa-hourglass-worker", "-n", "batch"], None);
    // Refused: a non-zero exit naming the HPA, the count untouched, and a
    // Warning Event on the Deployment saying why and what to do.
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("batch/keda-hpa-hourglass-worker") && err.contains("--mode advise"), "{err}");
    assert_eq!(k.replicas("hourglass-worker"), 1);
    let events = k.events("hourglass-worker", "AutoscalerConflict");
    assert_eq!(events.len(), before + 1, "{events:?}");
    assert!(events.last().unwrap().contains("two autoscalers"), "{events:?}");
    // Without the HPA it scales again.
    ok(&k.scaler_once(&queue, &rule));
    assert_eq!(k.replicas("hourglass-worker"), 3);

    // --mode advise: the same decision, served at /keda as KEDA's
    // metrics-api scaler reads it, and nothing patched.
    k.set_replicas("hourglass-worker", 1);
    let kubeconfig = k.kubeconfig("scaler");
    let mut args = vec![
        "scaler",
        "--mode",
        "advise",
        "--kubeconfig",
        &kubeconfig,
        "--queue",
        &queue,
        "--deployment",
        "batch/hourglass-worker",
        "--interval",
        "1s",
        "--metrics-addr",
        "127.0.0.1:0",
    ];
    args.extend(rule);
    let mut scaler = WorkerProc::spawn_command(&args, &[]);
    let addr = common::metrics_addr(&mut scaler);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let doc = loop {
        let (status, body) = common::http_get(&addr, "/keda").unwrap();
        if status == 200 {
            break serde_json::from_str::<Value>(&body).unwrap();
        }
        assert_eq!(status, 503, "{body}");
        assert!(std::time::Instant::now() < deadline, "no decision at /keda: {body}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(doc["desiredReplicas"], 3, "{doc}");
    assert_eq!(doc["verdict"], "no_deadline", "{doc}");
    // Three ticks in, with the decision differing from the count all along:
    // still nothing written.
    let ticks = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("hourglass_scaler_ticks_total "))
            .map_or(0.0, |v| v.parse::<f64>().unwrap())
    };
    while ticks(&common::scrape(&addr)) < 3.0 {
        assert!(std::time::Instant::now() < deadline, "the scaler stopped ticking");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    drop(scaler);
    assert_eq!(k.replicas("hourglass-worker"), 1, "advise mode patched the Deployment");
}

/// A worker's metrics endpoint on loopback, saying it holds whatever
/// `in_flight` holds.
fn fake_worker_metrics(in_flight: std::sync::Arc<std::sync::atomic::AtomicU64>) -> u16 {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let body =
                format!("hourglass_worker_shards_in_flight {}\n", in_flight.load(std::sync::atomic::Ordering::SeqCst));
            let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread")]
async fn busy_worker_pods_are_marked_against_scale_down_and_idle_ones_released() {
    let _one = SERIAL.lock().await;
    let k = kube();
    k.set_replicas("hourglass-worker", 1);
    let in_flight = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1));
    let port = fake_worker_metrics(in_flight.clone());
    // A worker pod as the ReplicaSet would make it, bound to a node and
    // running on loopback (no scheduler or kubelet here: its node and
    // status are written as they would report them).
    let name = "hourglass-worker-busy-probe";
    // Bound to a node no kubelet serves: removed at once, not gracefully.
    let remove = ["delete", "pod", name, "-n", "batch", "--grace-period=0", "--force", "--ignore-not-found"];
    k.kubectl_as("admin", &remove, None);
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "batch", "labels": {"app": "hourglass-worker"}},
        "spec": {"nodeName": "node-a", "containers": [{"name": "worker", "image": "hourglass:test",
                 "ports": [{"name": "metrics", "containerPort": port}]}]},
    });
    k.admin(&["create", "-f", "-"], Some(&pod.to_string()));
    let mut running = k.json(&["get", "pod", name, "-n", "batch"]);
    running["status"] = serde_json::json!({"phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}]});
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("status.json");
    std::fs::write(&file, running.to_string()).unwrap();
    let status_uri = format!("/api/v1/namespaces/batch/pods/{name}/status");
    k.admin(&["replace", "--raw", &status_uri, "-f", file.to_str().unwrap()], None);

    let s = Scratch::new();
    let queue = queue_with(&s, 4).await;
    let rule = ["--policy", "queue-length", "--target-messages-per-replica", "2"];
    ok(&k.scaler_once(&queue, &rule));
    let annotations = |k: &Kube| k.json(&["get", "pod", name, "-n", "batch"])["metadata"]["annotations"].clone();
    let a = annotations(&k);
    assert_eq!(a["controller.kubernetes.io/pod-deletion-cost"], "1001", "{a}");
    assert_eq!(a["cluster-autoscaler.kubernetes.io/safe-to-evict"], "false", "{a}");
    assert_eq!(a["karpenter.sh/do-not-disrupt"], "true", "{a}");
    // The shard is done: the marks go, so its node can be consolidated.
    in_flight.store(0, std::sync::atomic::Ordering::SeqCst);
    ok(&k.scaler_once(&queue, &rule));
    let a = annotations(&k);
    for key in [
        "controller.kubernetes.io/pod-deletion-cost",
        "cluster-autoscaler.kubernetes.io/safe-to-evict",
        "karpenter.sh/do-not-disrupt",
    ] {
        assert!(a.get(key).is_none(), "{key} left on an idle pod: {a}");
    }
    // Opted out: nothing is written to pods.
    in_flight.store(3, std::sync::atomic::Ordering::SeqCst);
    let mut off = rule.to_vec();
    off.extend(["--protect-busy-pods", "false"]);
    ok(&k.scaler_once(&queue, &off));
    assert!(annotations(&k).get("karpenter.sh/do-not-disrupt").is_none());
    k.kubectl_as("admin", &remove, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn deadline_policy_sizes_from_the_ledger_and_prewarms_placeholders() {
    let _one = SERIAL.lock().await;
    let k = kube();
    k.set_replicas("hourglass-worker", 0);
    k.set_replicas("hourglass-capacity", 0);
    let s = Scratch::new();
    gen_data(&s, 20_000, 2, "csv");
    let out = submit(&s, &["--deadline", "+10m", "--shard-size", "64KiB"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let output = s.output();

    // 20k rows at a prior of 10 rows/s per pod, 10 minutes less pod start
    // and node boot (no nodes up): several pods, not one.
    let policy = ["--pod-rows-per-sec", "10", "--safety-margin", "0s", "--pod-start", "30s", "--node-boot", "3m"];
    let mut args = vec!["--ledger", &output];
    args.extend(policy);
    let out = ok(&k.scaler_once(&s.queue(), &args));
    let replicas = k.replicas("hourglass-worker");
    // 20,000 rows / (10 rows/s × 390 s) = 5.1 → 6 pods, which need two
    // 4-pod nodes: both are paid for, so both are filled.
    assert_eq!(replicas, 8, "{out}");
    let events = k.events("hourglass-worker", "ScaledUp");
    assert!(events.last().unwrap().contains("projected finish"), "{events:?}");
    assert!(events.last().unwrap().contains("rows left"), "{events:?}");

    // Pre-warm window open now: room for 12 worker pods is held, less the
    // 8 asked for already.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() % 86_400;
    let at = format!("{:02}:{:02}", now / 3600, now / 60 % 60);
    let mut args = vec!["--ledger", &output, "--prewarm-at", &at, "--prewarm-replicas", "12"];
    args.extend(policy);
    let out = ok(&k.scaler_once(&s.queue(), &args));
    assert!(out.contains("placeholders 4"), "{out}");
    assert_eq!(k.json(&["get", "deployment", "hourglass-capacity", "-n", "batch"])["spec"]["replicas"], 4);
    assert!(!k.events("hourglass-capacity", "Placeholders").is_empty());
}

#[test]
fn shipped_role_allows_exactly_what_the_scaler_does() {
    let _one = SERIAL.blocking_lock();
    let k = kube();
    let yes: &[&[&str]] = &[
        &["get", "deployments.apps/hourglass-worker", "--subresource=scale", "-n", "batch"],
        &["patch", "deployments.apps/hourglass-worker", "--subresource=scale", "-n", "batch"],
        &["get", "deployments.apps/hourglass-capacity", "--subresource=scale", "-n", "batch"],
        &["patch", "deployments.apps/hourglass-capacity", "--subresource=scale", "-n", "batch"],
        &["list", "pods", "-n", "batch"],
        &["patch", "pods/any-worker", "-n", "batch"],
        &["list", "horizontalpodautoscalers.autoscaling", "-n", "batch"],
        &["create", "events", "-n", "batch"],
    ];
    let no: &[&[&str]] = &[
        // Not the Deployments themselves, only their scale.
        &["get", "deployments.apps/hourglass-worker", "-n", "batch"],
        &["patch", "deployments.apps/hourglass-worker", "-n", "batch"],
        &["update", "deployments.apps/hourglass-worker", "--subresource=scale", "-n", "batch"],
        &["delete", "deployments.apps/hourglass-worker", "-n", "batch"],
        // Not other Deployments' scale.
        &["patch", "deployments.apps/something-else", "--subresource=scale", "-n", "batch"],
        // Pods are counted and annotated, never read one by one, made or removed.
        &["get", "pods/anything", "-n", "batch"],
        &["delete", "pods", "-n", "batch"],
        &["create", "pods", "-n", "batch"],
        &["create", "pods/eviction", "-n", "batch"],
        &["get", "secrets", "-n", "batch"],
        // Other autoscalers are looked for, never changed.
        &["delete", "horizontalpodautoscalers.autoscaling", "-n", "batch"],
        &["patch", "horizontalpodautoscalers.autoscaling/keda-hpa-hourglass-worker", "-n", "batch"],
        &["update", "events", "-n", "batch"],
        // Nothing outside its namespace.
        &["list", "pods", "-n", "default"],
        &["create", "events", "-n", "default"],
        &["patch", "deployments.apps/hourglass-worker", "--subresource=scale", "-n", "default"],
        &["list", "nodes"],
    ];
    for args in yes {
        assert!(k.scaler_can(args), "the scaler needs: {args:?}");
    }
    for args in no {
        assert!(!k.scaler_can(args), "the scaler must not be able to: {args:?}");
    }
    // The server itself refuses the rest, not just the review API.
    let out = k.kubectl_as("scaler", &["get", "deployment", "hourglass-worker", "-n", "batch"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("forbidden"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn placeholder_pods_get_their_negative_priority_from_the_priority_class() {
    let _one = SERIAL.blocking_lock();
    let k = kube();
    let class = k.json(&["get", "priorityclass", "hourglass-placeholder"]);
    assert_eq!(class["value"], -10);
    assert_eq!(class["preemptionPolicy"], "Never");

    // No controller manager here: make the pods the Deployments would make
    // from their templates, and let admission resolve their priority.
    for (deployment, name, want) in
        [("hourglass-capacity", "placeholder-probe", -10), ("hourglass-worker", "worker-probe", 0)]
    {
        let d = k.json(&["get", "deployment", deployment, "-n", "batch"]);
        let template = &d["spec"]["template"];
        let pod = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "batch", "labels": template["metadata"]["labels"]},
            "spec": template["spec"],
        });
        let _ = k.kubectl_as("admin", &["delete", "pod", name, "-n", "batch", "--wait=false"], None);
        k.admin(&["create", "-f", "-"], Some(&pod.to_string()));
        let created = k.json(&["get", "pod", name, "-n", "batch"]);
        assert_eq!(created["spec"]["priority"], want, "{deployment}: {created}");
        if want < 0 {
            assert_eq!(created["spec"]["priorityClassName"], "hourglass-placeholder");
            assert_eq!(created["spec"]["preemptionPolicy"], "Never");
        }
        k.admin(&["delete", "pod", name, "-n", "batch", "--wait=false"], None);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn scaler_exports_what_the_dashboard_and_alerts_use() {
    let _one = SERIAL.lock().await;
    let k = kube();
    let s = Scratch::new();
    gen_data(&s, 2000, 2, "csv");
    assert!(submit(&s, &["--shard-size", "32KiB", "--deadline", "+1h"]).status.success());
    let (queue, output, kubeconfig) = (s.queue(), s.output(), k.kubeconfig("scaler"));
    // Runs the scaler until its metrics show `needle`; returns them.
    let scrape_when = |placeholders: &str, needle: &str| {
        let mut scaler = live_scaler(&kubeconfig, &queue, &output, placeholders);
        let addr = common::metrics_addr(&mut scaler);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let text = common::scrape(&addr);
            if text.contains(needle) {
                return text;
            }
            assert!(std::time::Instant::now() < deadline, "no {needle:?} in:\n{text}");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    let healthy = scrape_when("batch/hourglass-capacity", r#"hourglass_scaler_job_shards{hourglass_job="#);
    assert!(healthy.contains(r#"state="pending"} "#), "{healthy}");
    assert!(healthy.contains(r#"hourglass_scaler_job_shards_planned{hourglass_job="#), "{healthy}");
    assert!(healthy.contains("hourglass_build_info{"), "{healthy}");
    assert!(healthy.contains(r#"hourglass_scaler_queue_messages{state="visible"}"#), "{healthy}");
    // A placeholder Deployment the Role does not cover: a failed call, counted.
    let failing = scrape_when("batch/not-ours", "hourglass_scaler_errors_total{");
    assert!(failing.contains(r#"op="get_scale""#), "{failing}");
    let text = format!("{healthy}\n{failing}");
    common::assert_exports("the scaler", "hourglass_scaler_", &text);
    common::assert_exports("the scaler", "hourglass_job_", &text);
}

#[tokio::test(flavor = "multi_thread")]
async fn scaler_sizes_for_every_job_the_index_has_on_its_queue() {
    let _one = SERIAL.lock().await;
    let k = kube();
    k.set_replicas("hourglass-worker", 0);
    let s = Scratch::new();
    gen_data(&s, 20_000, 2, "csv");
    let (queue, index) = (s.queue(), s.s("jobs-index/"));
    // Tonight's run, due in an hour, and an S3-triggered job on the same
    // queue due in ten minutes, both registered in the index.
    let (nightly, triggered) = (s.s("preds/nightly/"), s.s("preds/triggered/"));
    let mut planned = Vec::new();
    for (output, deadline) in [(&nightly, "+60m"), (&triggered, "+10m")] {
        let out = common::submit_to(
            &s.input(),
            output,
            &queue,
            &["--deadline", deadline, "--shard-size", "64KiB", "--jobs-index", &index, "--json"],
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        planned.push((report["rows_estimate"].as_u64().unwrap(), report["enqueued"].as_u64().unwrap()));
    }
    // Another queue's job in the same index is not this scaler's.
    let other = s.s("other-queue.db");
    let out = common::submit_to(
        &s.input(),
        &s.s("preds/elsewhere/"),
        &format!("local://{other}"),
        &["--deadline", "+1m", "--shard-size", "64KiB", "--jobs-index", &index],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tick = |args: &[&str]| -> Value {
        let mut all = vec![
            "--dry-run",
            "--json",
            "--pod-rows-per-sec",
            "10",
            "--pod-start",
            "30s",
            "--node-boot",
            "3m",
            "--rows-per-message",
            "1000",
        ];
        all.extend(args);
        serde_json::from_str(&ok(&k.scaler_once(&queue, &all))).unwrap()
    };
    let one = tick(&["--ledger", &nightly]);
    let all = tick(&["--jobs-index", &index]);
    let backlog = |v: &Value| v["signals"]["backlog_rows"].as_u64().unwrap();
    let deadline = |v: &Value| v["signals"]["deadline_unix_seconds"].as_f64().unwrap();
    // Both jobs' rows, and the earlier deadline: about 50 minutes earlier.
    assert_eq!(backlog(&all), planned[0].0 + planned[1].0, "{all}");
    // One ledger alone sees the other job only as messages on the queue,
    // counted at --rows-per-message.
    assert_eq!(backlog(&one), planned[0].0 + planned[1].1 * 1000, "{one}");
    assert!((deadline(&one) - deadline(&all) - 3000.0).abs() < 120.0, "{one}\n{all}");
    let desired = |v: &Value| v["decision"]["desired_replicas"].as_u64().unwrap();
    assert!(desired(&all) > desired(&one), "{one}\n{all}");
    // The index and an explicit --ledger of one of its jobs count it once.
    let both = tick(&["--jobs-index", &index, "--ledger", &nightly]);
    assert_eq!(backlog(&both), backlog(&all), "{both}");
}

#[tokio::test(flavor = "multi_thread")]
async fn scaler_follows_a_nightly_ledger_by_date() {
    let _one = SERIAL.lock().await;
    let k = kube();
    k.set_replicas("hourglass-worker", 0);
    let s = Scratch::new();
    gen_data(&s, 20_000, 2, "csv");
    // The nightly submit and the scaler expand {date} the same way (today, UTC).
    let nightly = s.s("preds/dt={date}/");
    let queue = s.queue();
    let out = common::submit_to(&s.input(), &nightly, &queue, &["--deadline", "+10m", "--shard-size", "64KiB"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let policy = ["--pod-rows-per-sec", "10", "--safety-margin", "0s", "--pod-start", "30s", "--node-boot", "3m"];
    let mut args = vec!["--ledger", &nightly];
    args.extend(policy);
    let out = ok(&k.scaler_once(&queue, &args));
    // Sized from that night's ledger (rows left), as with a fixed --ledger.
    assert_eq!(k.replicas("hourglass-worker"), 8, "{out}");
    assert!(k.events("hourglass-worker", "ScaledUp").last().unwrap().contains("rows left"));
    let bad = k.scaler_once(&queue, &["--ledger", &s.s("preds/{dat}/")]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("{dat}"), "{}", String::from_utf8_lossy(&bad.stderr));
}

/// Every query of every Grafana panel (and of its variables), run against
/// a real Prometheus scraping a worker, two scalers (one of them failing,
/// for the error panels) and a watcher during a job, returns data.
#[tokio::test(flavor = "multi_thread")]
async fn every_dashboard_query_returns_data_during_a_job() {
    let _one = SERIAL.lock().await;
    let k = kube();
    let s = Scratch::new();
    write_csv(&s.path("input/a.csv"), 0, 4000, None);
    // b.csv fails for good (a non-number, no bad rows allowed): errors by kind.
    write_csv(&s.path("input/b.csv"), 4000, 4500, Some(4300));
    let (queue, output, kubeconfig) = (s.queue(), s.output(), k.kubeconfig("scaler"));
    let mut worker = WorkerProc::spawn(
        &s,
        &[
            "--metrics-addr",
            "127.0.0.1:0",
            "--max-attempts",
            "1",
            "--batch-size",
            "250",
            "--fault-batch-delay",
            "50ms",
            "--model",
            common::model_path().to_str().unwrap(),
        ],
    );
    let scaler = |placeholders: &str| live_scaler(&kubeconfig, &queue, &output, placeholders);
    let (mut healthy, mut failing) = (scaler("batch/hourglass-capacity"), scaler("batch/not-ours"));
    let events = format!("local://{}", s.s("events.db"));
    let rules = s.path("rules.yaml");
    let rule = format!(
        "rules:\n  - name: drops\n    prefix: drops/\n    model: {}\n    output: {}\n",
        common::model_path().display(),
        s.s("watched/{stem}/")
    );
    std::fs::write(&rules, rule).unwrap();
    let mut watcher = WorkerProc::spawn_command(
        &[
            "watch",
            "--events-queue",
            &events,
            "--rules",
            rules.to_str().unwrap(),
            "--queue",
            &queue,
            "--poll-wait",
            "1s",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
        &[],
    );
    let targets =
        [metrics_addr(&mut worker), metrics_addr(&mut healthy), metrics_addr(&mut failing), metrics_addr(&mut watcher)];
    let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
    let prometheus = Prometheus::start(&targets, &[("namespace", "batch")]);
    let test_event = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-11-22T00:00:00Z","Bucket":"feat"}"#;
    queue::open(&events).unwrap().send_batch(&[test_event.to_string()]).await.unwrap();
    let out = submit(&s, &["--shard-size", "64KiB", "--deadline", "+1h"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    prometheus.wait_until("the job's rows and its failed shard", || {
        let rows: f64 = prometheus.query("sum(hourglass_worker_rows_total)").iter().map(|(_, v)| v).sum();
        let failed = prometheus.query(r#"hourglass_worker_shards_total{outcome="failed"}"#);
        let watched = prometheus.query("hourglass_watch_events_total");
        (rows == 4000.0 && !failed.is_empty() && !watched.is_empty()).then_some(())
    });
    // rate() and increase() need two samples in their window: a few scrapes
    // after the last change.
    prometheus.wait_until("three scrapes of every series", || {
        let scrapes = prometheus.query("min(count_over_time(hourglass_watch_events_total[1m]))");
        let rows = prometheus.query("min(count_over_time(hourglass_worker_rows_total[1m]))");
        let errors = prometheus.query("min(count_over_time(hourglass_scaler_errors_total[1m]))");
        [scrapes, rows, errors].iter().all(|s| s.first().is_some_and(|(_, n)| *n >= 3.0)).then_some(())
    });

    let dashboard: Value = serde_json::from_slice(
        &std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/helm/hourglass/files/dashboard.json"))
            .unwrap(),
    )
    .unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push((panel["title"].as_str().unwrap().to_string(), target["expr"].as_str().unwrap().to_string()));
        }
    }
    // A variable's label_values(metric{…}, label): its metric with the label.
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(def) = var["definition"].as_str().and_then(|d| d.strip_prefix("label_values(")) {
            let (metric, label) = def.trim_end_matches(')').rsplit_once(',').unwrap();
            queries.push((format!("variable {}", var["name"]), format!("count by ({}) ({metric})", label.trim())));
        }
    }
    assert!(queries.len() >= 25, "{queries:?}");
    let expand = |q: &str| q.replace("$namespace", "batch").replace("$job", ".*").replace("$__rate_interval", "1m");
    let empty: Vec<_> = queries
        .iter()
        .filter(|(_, q)| prometheus.query(&expand(q)).is_empty())
        .map(|(title, q)| format!("{title}: {q}"))
        .collect();
    assert!(empty.is_empty(), "dashboard queries without data:\n{}", empty.join("\n"));
}
