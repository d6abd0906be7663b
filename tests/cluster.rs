//! Placeholders and the scaler on a cluster that schedules: the cluster
//! tier of `scripts/with-kube` (kube-apiserver, kube-scheduler and
//! kube-controller-manager v1.20.2) with hollow nodes (kubemark
//! `--morph=kubelet`: a real kubelet on a fake container runtime). Pods are
//! really created by the ReplicaSet controller, bound or preempted by the
//! scheduler and reported Running by a kubelet.
//!
//! The cluster autoscaler cannot be built here, so [`Autoscaler`] plays its
//! part the way it behaves for one node group: a pod the scheduler marks
//! unschedulable (and has not nominated onto a node by preemption) asks
//! for a node, which registers after a boot delay; a node with no pods
//! bound for the scale-down delay is removed. Pods of priority below -10
//! (its expendable cutoff) neither ask for nodes nor hold them.

// The harness polls the API server from plain threads.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::kube::{Kube, ok};
use common::{Scratch, WorkerProc, gen_data, status_json, submit};
use serde_json::Value;

/// The tests share the cluster, its nodes and the `batch` namespace.
static SERIAL: Mutex<()> = Mutex::new(());

/// A hollow node reports 1 CPU and 3840 MiB; workers and placeholders
/// request a quarter of it, so four fit on a node, as `--pods-per-node 4`
/// tells the scaler.
const PODS_PER_NODE: usize = 4;
const REQUESTS: &str = "--requests=cpu=250m,memory=900Mi";

/// The worker Deployment as the chart shapes it, sized for hollow nodes.
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
      terminationGracePeriodSeconds: 0
      containers:
        - name: worker
          image: hourglass:test
          resources: {requests: {cpu: 250m, memory: 900Mi}}
"#;

fn cluster() -> Kube {
    let k = Kube::from_env("HOURGLASS_TEST_CLUSTER");
    k.apply_file("deploy/placeholders.yaml");
    k.apply_file("deploy/scaler-rbac.yaml");
    // One placeholder holds room for one worker: the same requests.
    k.admin(&["set", "resources", "deployment/hourglass-capacity", "-n", "batch", "-c", "pause", REQUESTS], None);
    k.apply(WORKER);
    k.set_replicas("hourglass-worker", 0);
    k.set_replicas("hourglass-capacity", 0);
    wait_for(&k, "no pods and no nodes left from an earlier test", Duration::from_secs(120), |c| {
        c.pods.is_empty() && c.nodes.is_empty()
    });
    k
}

#[derive(Debug, Clone)]
struct Pod {
    name: String,
    /// "worker", "placeholder" or whatever else.
    role: String,
    node: Option<String>,
    phase: String,
    /// The scheduler found no node for it and nominated none by preemption.
    unschedulable: bool,
    priority: i64,
    deleting: bool,
}

/// What the cluster looks like at one moment.
struct Snapshot {
    pods: Vec<Pod>,
    /// Node name → Ready.
    nodes: BTreeMap<String, bool>,
}

impl Snapshot {
    fn take(k: &Kube) -> Self {
        let pods = k.json(&["get", "pods", "--all-namespaces"]);
        let pods = pods["items"].as_array().unwrap().iter().map(pod_of).collect();
        let nodes = k.json(&["get", "nodes"]);
        let nodes = nodes["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                let ready = n["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True");
                (n["metadata"]["name"].as_str().unwrap().to_owned(), ready)
            })
            .collect();
        Snapshot { pods, nodes }
    }

    fn running(&self, role: &str) -> Vec<&Pod> {
        self.pods.iter().filter(|p| p.role == role && p.phase == "Running" && !p.deleting).collect()
    }
}

fn pod_of(p: &Value) -> Pod {
    let labels = &p["metadata"]["labels"];
    let role = if labels["app"] == "hourglass-worker" {
        "worker"
    } else if labels["app.kubernetes.io/component"] == "capacity" {
        "placeholder"
    } else {
        "other"
    };
    let unschedulable = p["status"]["nominatedNodeName"].is_null()
        && p["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "PodScheduled" && c["status"] == "False" && c["reason"] == "Unschedulable");
    Pod {
        name: p["metadata"]["name"].as_str().unwrap().to_owned(),
        role: role.to_owned(),
        node: p["spec"]["nodeName"].as_str().map(str::to_owned),
        phase: p["status"]["phase"].as_str().unwrap_or("").to_owned(),
        unschedulable,
        priority: p["spec"]["priority"].as_i64().unwrap_or(0),
        deleting: !p["metadata"]["deletionTimestamp"].is_null(),
    }
}

/// Polls until `done` holds, at most `timeout`; returns that snapshot.
fn wait_for(k: &Kube, what: &str, timeout: Duration, done: impl Fn(&Snapshot) -> bool) -> Snapshot {
    let deadline = Instant::now() + timeout;
    loop {
        let now = Snapshot::take(k);
        if done(&now) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "waited {timeout:?} for {what}; pods: {:#?}; nodes: {:?}",
            now.pods,
            now.nodes
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What the stand-in autoscaler did, in order.
#[derive(Debug, Clone, PartialEq)]
enum Change {
    /// A node was asked for (it registers after the boot delay).
    Requested(String),
    /// It registered and reports Ready.
    Up(String),
    /// It was empty for the scale-down delay and is gone.
    Removed(String),
}

/// A cluster autoscaler for one node group of hollow nodes (see the module
/// documentation); stops its nodes when dropped.
struct Autoscaler {
    stop: Arc<AtomicBool>,
    changes: Arc<Mutex<Vec<(Instant, Change)>>>,
    thread: Option<JoinHandle<()>>,
}

/// A node of the group: asked for, then booting, then a running hollow kubelet.
struct HollowNode {
    due: Instant,
    kubelet: Option<(Child, tempfile::TempDir)>,
    ready_at: Option<Instant>,
    empty_since: Option<Instant>,
}

impl HollowNode {
    /// Capacity still on its way: asked for, not yet up.
    fn booting(&self) -> bool {
        self.ready_at.is_none()
    }
}

/// Pods that hold room on `node` (bound there, not finished).
fn bound_to(seen: &Snapshot, node: &str) -> usize {
    seen.pods
        .iter()
        .filter(|p| p.node.as_deref() == Some(node) && p.priority >= -10)
        .filter(|p| p.phase != "Succeeded" && p.phase != "Failed")
        .count()
}

impl Autoscaler {
    fn start(k: &Kube, boot: Duration, scale_down: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let changes = Arc::new(Mutex::new(Vec::new()));
        let k = Kube { dir: k.dir.clone() };
        let (stop2, changes2) = (stop.clone(), changes.clone());
        let thread = std::thread::spawn(move || {
            let mut nodes: BTreeMap<String, HollowNode> = BTreeMap::new();
            let mut next = 0;
            while !stop2.load(Ordering::SeqCst) {
                let now = Instant::now();
                let seen = Snapshot::take(&k);
                let log = |c: Change| changes2.lock().unwrap().push((Instant::now(), c));
                for (name, node) in nodes.iter_mut() {
                    if node.kubelet.is_none() && now >= node.due {
                        node.kubelet = Some(start_hollow_node(&k, name));
                    }
                    if node.kubelet.is_some() && node.ready_at.is_none() && seen.nodes.get(name) == Some(&true) {
                        node.ready_at = Some(now);
                        log(Change::Up(name.clone()));
                    }
                }
                // Scale up: enough nodes for the pods nothing can place, as
                // the real autoscaler simulates it: a waiting pod that fits
                // in the room of a node already up needs no new node (the
                // scheduler places it on its next retry, whose backoff grows
                // on a loaded machine), and a booting node's room counts as
                // coming. No grace period in wall time: how fast a busy
                // machine schedules must not change how many nodes it asks for.
                let waiting = seen.pods.iter().filter(|p| p.unschedulable && !p.deleting && p.priority >= -10).count();
                let room: usize = nodes
                    .iter()
                    .filter(|(name, n)| !n.booting() && seen.nodes.get(*name) == Some(&true))
                    .map(|(name, _)| PODS_PER_NODE.saturating_sub(bound_to(&seen, name)))
                    .sum();
                let booting = nodes.values().filter(|n| n.booting()).count();
                for _ in booting..waiting.saturating_sub(room).div_ceil(PODS_PER_NODE) {
                    next += 1;
                    let name = format!("hollow-{next}");
                    nodes.insert(
                        name.clone(),
                        HollowNode { due: now + boot, kubelet: None, ready_at: None, empty_since: None },
                    );
                    log(Change::Requested(name));
                }
                // Scale down: nodes with nothing bound for the delay, and
                // none while pods wait for room (they may land there).
                let mut gone = Vec::new();
                for (name, node) in nodes.iter_mut().filter(|(_, n)| !n.booting()) {
                    if bound_to(&seen, name) > 0 || waiting > 0 {
                        node.empty_since = None;
                    } else if now - *node.empty_since.get_or_insert(now) >= scale_down {
                        gone.push(name.clone());
                    }
                }
                for name in gone {
                    remove_node(&k, &name, nodes.remove(&name).unwrap());
                    log(Change::Removed(name));
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            for (name, node) in nodes {
                remove_node(&k, &name, node);
            }
        });
        Autoscaler { stop, changes, thread: Some(thread) }
    }

    fn changes(&self) -> Vec<Change> {
        self.changes.lock().unwrap().iter().map(|(_, c)| c.clone()).collect()
    }

    /// When `change` happened.
    fn at(&self, change: &Change) -> Instant {
        let changes = self.changes.lock().unwrap();
        changes.iter().find(|(_, c)| c == change).unwrap_or_else(|| panic!("no {change:?} in {changes:?}")).0
    }

    fn requested(&self) -> usize {
        self.changes().iter().filter(|c| matches!(c, Change::Requested(_))).count()
    }
}

impl Drop for Autoscaler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A hollow kubelet registering node `name`, with its own ports and files.
fn start_hollow_node(k: &Kube, name: &str) -> (Child, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let log = File::create(dir.path().join("kubelet.log")).unwrap();
    let child = Command::new(k.dir.join("kubemark"))
        .args([
            "--morph=kubelet".to_owned(),
            format!("--name={name}"),
            format!("--kubeconfig={}", k.kubeconfig("admin")),
            format!("--kubelet-port={}", free_port()),
            format!("--kubelet-read-only-port={}", free_port()),
            "--node-labels=hourglass.dev/node-group=spot".to_owned(),
        ])
        .env("TMPDIR", dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting kubemark");
    (child, dir)
}

fn remove_node(k: &Kube, name: &str, node: HollowNode) {
    if let Some((mut child, _dir)) = node.kubelet {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = k.kubectl_as("admin", &["delete", "node", name, "--ignore-not-found", "--wait=false"], None);
}

fn nodes_of<'a>(pods: &[&'a Pod]) -> Vec<&'a str> {
    let mut nodes: Vec<&str> = pods.iter().filter_map(|p| p.node.as_deref()).collect();
    nodes.sort_unstable();
    nodes.dedup();
    nodes
}

const BOOT: Duration = Duration::from_secs(5);
const SCALE_DOWN: Duration = Duration::from_secs(4);
const LONG: Duration = Duration::from_secs(120);

#[test]
fn placeholders_hold_a_warm_node_that_workers_take_at_once_by_preemption() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let k = cluster();
    let ca = Autoscaler::start(&k, BOOT, SCALE_DOWN);

    // Cold: no node up, four workers asked for. They wait for a node boot.
    let t = Instant::now();
    k.set_replicas("hourglass-worker", PODS_PER_NODE as u32);
    let now = wait_for(&k, "4 workers Running", LONG, |c| c.running("worker").len() == PODS_PER_NODE);
    let cold = t.elapsed();
    let ready = ca.at(&Change::Up("hollow-1".into())) - t;
    assert_eq!(nodes_of(&now.running("worker")).len(), 1);
    assert_eq!(ca.requested(), 1, "{:?}", ca.changes());
    // The job is over: the pods go, then the empty node.
    k.set_replicas("hourglass-worker", 0);
    wait_for(&k, "the empty node removed", LONG, |c| c.pods.is_empty() && c.nodes.is_empty());
    assert_eq!(ca.changes().last(), Some(&Change::Removed("hollow-1".into())), "{:?}", ca.changes());

    // Pre-warm: placeholders for four workers make the autoscaler boot a
    // node, and hold it.
    k.set_replicas("hourglass-capacity", PODS_PER_NODE as u32);
    let now = wait_for(&k, "4 placeholders Running", LONG, |c| c.running("placeholder").len() == PODS_PER_NODE);
    let warm = nodes_of(&now.running("placeholder"));
    assert_eq!(warm.len(), 1, "{:?}", now.pods);
    let warm = warm[0].to_owned();
    // Held, not scaled down: a placeholder is a pod like any other to the
    // autoscaler.
    std::thread::sleep(SCALE_DOWN + Duration::from_secs(1));
    assert_eq!(Snapshot::take(&k).nodes.keys().collect::<Vec<_>>(), [&warm]);

    // Scale-up: the workers preempt the placeholders and run on the warm
    // node, with no boot to wait for.
    let t = Instant::now();
    k.set_replicas("hourglass-worker", PODS_PER_NODE as u32);
    let now = wait_for(&k, "4 workers Running", LONG, |c| c.running("worker").len() == PODS_PER_NODE);
    let prewarmed = t.elapsed();
    assert_eq!(nodes_of(&now.running("worker")), [warm.as_str()], "{:?}", now.pods);
    let preempted = k.json(&["get", "events", "-n", "batch", "--field-selector", "reason=Preempted"]);
    let preempted: Vec<&str> =
        preempted["items"].as_array().unwrap().iter().filter_map(|e| e["message"].as_str()).collect();
    assert!(preempted.iter().any(|m| m.contains(&warm)), "no preemption on {warm}: {preempted:?}");
    // The displaced placeholders ask for a node of their own, and hold it
    // as headroom while the ReplicaSet keeps four of them.
    let now = wait_for(&k, "the displaced placeholders Running again", LONG, |c| {
        c.running("placeholder").len() == PODS_PER_NODE
    });
    let headroom = nodes_of(&now.running("placeholder"));
    assert_eq!(headroom.len(), 1);
    assert_ne!(headroom[0], warm);
    assert_eq!(ca.requested(), 3, "{:?}", ca.changes());

    // Both to zero: every node empties and goes.
    k.set_replicas("hourglass-worker", 0);
    k.set_replicas("hourglass-capacity", 0);
    wait_for(&k, "every node removed", LONG, |c| c.pods.is_empty() && c.nodes.is_empty());
    let removed = ca.changes().iter().filter(|c| matches!(c, Change::Removed(_))).count();
    assert_eq!(removed, 3, "{:?}", ca.changes());
    eprintln!(
        "scale-up to Running, {PODS_PER_NODE} worker pods: {cold:.1?} with no node up (boot delay {BOOT:?}, \
         node Ready after {ready:.1?}), {prewarmed:.1?} onto a node pre-warmed by placeholders"
    );
}

#[test]
fn scaler_decisions_become_running_pods_and_the_fleet_goes_to_zero_after_the_job() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let k = cluster();
    let ca = Autoscaler::start(&k, BOOT, SCALE_DOWN);
    let s = Scratch::new();
    gen_data(&s, 20_000, 2, "csv");
    let out = submit(&s, &["--deadline", "+10m", "--shard-size", "64KiB"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let output = s.output();
    // 20,000 rows at a prior of 10 rows/s per pod within 10 minutes: 6
    // pods, on two 4-pod nodes that are then both filled (see
    // scaler_kube.rs). Patched for real, as the scaler's service account.
    let args = [
        "--ledger",
        &output,
        "--pod-rows-per-sec",
        "10",
        "--safety-margin",
        "0s",
        "--pod-start",
        "30s",
        "--node-boot",
        "3m",
        "--pods-per-node",
        "4",
    ];
    let out = ok(&k.scaler_once(&s.queue(), &args));
    assert_eq!(k.replicas("hourglass-worker"), 8, "{out}");
    let placeholders = k.replicas("hourglass-capacity") as usize;
    let now = wait_for(&k, "the scaler's pods Running", LONG, |c| {
        c.running("worker").len() == 8 && c.running("placeholder").len() == placeholders
    });
    let workers = now.running("worker");
    let nodes = nodes_of(&workers);
    assert_eq!(nodes.len(), 2, "{:?}", now.pods);
    for node in &nodes {
        assert_eq!(workers.iter().filter(|p| p.node.as_deref() == Some(node)).count(), PODS_PER_NODE);
    }
    // Another tick changes nothing that is Running.
    let again = ok(&k.scaler_once(&s.queue(), &args));
    assert_eq!(k.replicas("hourglass-worker"), 8, "{again}");

    // The job runs to done (a worker process here, on the same queue and
    // store), and the next tick takes the fleet down at once.
    let mut w = WorkerProc::spawn(&s, &["--exit-when-idle", "1s"]);
    assert!(w.wait_exit(LONG).success());
    assert_eq!(status_json(&s)["state"], "succeeded");
    let out = ok(&k.scaler_once(&s.queue(), &args));
    assert!(out.contains("replicas 8 → 0"), "{out}");
    assert_eq!(k.replicas("hourglass-capacity"), 0, "{out}");
    let before: Vec<String> = now.pods.iter().map(|p| p.name.clone()).collect();
    wait_for(&k, "every node removed after the job", LONG, |c| c.pods.is_empty() && c.nodes.is_empty());
    let removed: Vec<Change> = ca.changes().into_iter().filter(|c| matches!(c, Change::Removed(_))).collect();
    assert_eq!(removed.len(), ca.requested(), "{:?} (pods were {before:?})", ca.changes());
}
