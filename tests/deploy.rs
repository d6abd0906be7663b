//! The deployment artifacts, checked with the real tools `make test`
//! installs (scripts/tools): the Helm chart lints strictly and renders
//! manifests that validate against the Kubernetes 1.33 schemas, with the
//! production properties the chart promises; the alert rules pass
//! `promtool check rules` and their unit tests.

mod common;

use common::{run_ok as run, tool};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> PathBuf {
    root().join("deploy/helm/hourglass")
}

fn helm(args: &[&str]) -> Command {
    let mut c = Command::new(tool("helm"));
    // No user's helm state leaks in, none is written outside a temp dir.
    let home = std::env::temp_dir().join("hourglass-helm-home");
    c.env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .args(args);
    c
}

/// The chart rendered with every component on (ci/full-values.yaml).
fn render() -> (String, Vec<Value>) {
    let values = chart().join("ci/full-values.yaml");
    let out =
        run(&mut helm(&["template", "hg", chart().to_str().unwrap(), "-n", "batch", "-f", values.to_str().unwrap()]));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc).unwrap();
        if !v.is_null() {
            docs.push(v);
        }
    }
    (text, docs)
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

#[test]
fn chart_lints_strictly() {
    let c = chart();
    run(&mut helm(&["lint", "--strict", c.to_str().unwrap()]));
    let values = c.join("ci/full-values.yaml");
    run(&mut helm(&["lint", "--strict", c.to_str().unwrap(), "-f", values.to_str().unwrap()]));
}

/// `kubernetes-validate --strict` (the project venv's) of rendered
/// manifests against Kubernetes 1.33's schemas: its report.
fn kubernetes_validate(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rendered.yaml");
    std::fs::write(&file, text).unwrap();
    let validator = root().join(".venv/bin/kubernetes-validate");
    let out = run(Command::new(&validator).args(["--strict", "-k", "1.33.0", file.to_str().unwrap()]));
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn chart_renders_manifests_valid_for_kubernetes_1_33() {
    let (text, docs) = render();
    let report = kubernetes_validate(&text);
    let builtin = docs.iter().filter(|d| !d["apiVersion"].as_str().unwrap().contains("monitoring.coreos.com")).count();
    assert_eq!(report.matches(" passed for resource ").count(), builtin, "{report}");
    assert!(!report.contains("ERROR"), "{report}");
    let kinds: Vec<_> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    for kind in [
        "Deployment",
        "PodDisruptionBudget",
        "CronJob",
        "PriorityClass",
        "Role",
        "RoleBinding",
        "PodMonitor",
        "NetworkPolicy",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
}

#[test]
fn chart_workers_are_safe_on_spot() {
    let (_, docs) = render();
    let worker = find(&docs, "Deployment", "hg-hourglass-worker");
    assert!(worker["spec"]["replicas"].is_null(), "the scaler owns replicas; helm upgrade must not reset them");
    let pod = &worker["spec"]["template"]["spec"];
    let config = find(&docs, "ConfigMap", "hg-hourglass-config");
    let drain: u64 = config["data"]["HOURGLASS_DRAIN_TIMEOUT"].as_str().unwrap().trim_end_matches('s').parse().unwrap();
    assert!(pod["terminationGracePeriodSeconds"].as_u64().unwrap() > drain, "{pod}");
    assert_eq!(config["data"]["AWS_EC2_METADATA_DISABLED"], "true", "no node instance role fallback");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["envFrom"][0]["configMapRef"]["name"], "hg-hourglass-config");
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")] {
        assert_eq!(c[probe]["httpGet"]["port"], "metrics", "{probe}");
        assert_eq!(c[probe]["httpGet"]["path"], path, "{probe}");
    }
    assert_eq!(c["resources"]["requests"], c["resources"]["limits"], "a Guaranteed pod owns its cores");
    let terms = &pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
    assert_eq!(terms[0]["matchExpressions"][0]["key"], "karpenter.sh/capacity-type");
    assert_eq!(pod["tolerations"][0]["key"], "hourglass.dev/spot");
    // Placeholders land where workers do and are room for exactly one.
    let capacity = &find(&docs, "Deployment", "hg-hourglass-capacity")["spec"]["template"]["spec"];
    assert_eq!(capacity["affinity"], pod["affinity"]);
    assert_eq!(capacity["tolerations"], pod["tolerations"]);
    assert_eq!(capacity["containers"][0]["resources"], c["resources"]);
    assert!(find(&docs, "PriorityClass", "hg-hourglass-capacity")["value"].as_i64().unwrap() < 0);
    let pdb = find(&docs, "PodDisruptionBudget", "hg-hourglass-worker");
    assert_eq!(pdb["spec"]["selector"]["matchLabels"], worker["spec"]["selector"]["matchLabels"]);
    // Every service account is an IAM role (IRSA), one per component.
    for sa in ["worker", "scaler", "nightly", "watcher"] {
        let account = find(&docs, "ServiceAccount", &format!("hg-hourglass-{sa}"));
        let arn = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].as_str().unwrap_or_default();
        assert!(
            arn.ends_with(&format!("role/hourglass-{}", if sa == "nightly" { "submit" } else { sa })),
            "{sa}: {arn}"
        );
    }
    let cron = find(&docs, "CronJob", "hg-hourglass-nightly");
    assert_eq!(cron["spec"]["concurrencyPolicy"], "Forbid");
    let args: Vec<_> = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(args.contains(&"--job-id=ctr-{date}") && args.contains(&"--tz=Europe/Berlin"), "{args:?}");
}

#[test]
fn chart_never_holds_a_spot_drain_and_lets_only_monitoring_scrape() {
    // No budget by default: a worker loses nothing when evicted.
    let values: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(chart().join("values.yaml")).unwrap()).unwrap();
    assert_eq!(values["worker"]["pdb"]["enabled"], false);
    // Enabled, it lets a whole node's workers go at once and never keeps an
    // unready pod from being evicted.
    let (_, docs) = render();
    let pdb = find(&docs, "PodDisruptionBudget", "hg-hourglass-worker");
    assert_eq!(pdb["spec"]["maxUnavailable"].as_u64(), values["scaler"]["podsPerNode"].as_u64(), "{pdb:?}");
    assert_eq!(pdb["spec"]["unhealthyPodEvictionPolicy"], "AlwaysAllow");
    // NetworkPolicy: only the monitoring namespaces (and, to the workers,
    // the scaler reading their shards in flight), only the metrics port.
    for component in ["worker", "scaler", "watcher"] {
        let np = find(&docs, "NetworkPolicy", &format!("hg-hourglass-{component}"));
        let deployment = find(&docs, "Deployment", &format!("hg-hourglass-{component}"));
        assert_eq!(np["spec"]["podSelector"]["matchLabels"], deployment["spec"]["selector"]["matchLabels"]);
        assert_eq!(np["spec"]["policyTypes"], serde_json::json!(["Ingress"]));
        let rules = np["spec"]["ingress"].as_array().unwrap();
        assert_eq!(rules.len(), 1, "{np:?}");
        let from = rules[0]["from"].as_array().unwrap();
        let namespaces: Vec<_> = from
            .iter()
            .filter_map(|f| f["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"].as_str())
            .collect();
        assert_eq!(namespaces, ["monitoring", "observability"]);
        let pods: Vec<_> = from.iter().filter(|f| f.get("podSelector").is_some()).collect();
        if component == "worker" {
            let scaler = find(&docs, "Deployment", "hg-hourglass-scaler");
            assert_eq!(pods.len(), 1, "{np:?}");
            assert_eq!(pods[0]["podSelector"]["matchLabels"], scaler["spec"]["selector"]["matchLabels"]);
        } else {
            assert!(pods.is_empty(), "{np:?}");
        }
        assert_eq!(rules[0]["ports"], serde_json::json!([{"port": "metrics", "protocol": "TCP"}]));
    }
}

#[test]
fn chart_scaler_role_is_the_minimal_one() {
    let (_, docs) = render();
    let role = find(&docs, "Role", "hg-hourglass-scaler");
    let shipped: Value = serde_yaml_ng::Deserializer::from_str(
        &std::fs::read_to_string(root().join("deploy/scaler-rbac.yaml")).unwrap(),
    )
    .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
    .find(|d| d["kind"] == "Role")
    .unwrap();
    // The same verbs on the same resources as the Role tests/scaler_kube.rs
    // proves minimal, for this release's two Deployments.
    let mut rules = shipped["rules"].clone();
    rules[0]["resourceNames"] = serde_json::json!(["hg-hourglass-worker", "hg-hourglass-capacity"]);
    assert_eq!(role["rules"], rules);
    let scaler = &find(&docs, "Deployment", "hg-hourglass-scaler")["spec"];
    assert_eq!(scaler["replicas"], 1);
    let args = scaler["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(args.contains("--deployment=batch/hg-hourglass-worker"), "{args}");
    assert!(args.contains("--placeholders=batch/hg-hourglass-capacity"), "{args}");
    assert!(args.contains("--ledger=s3://scores/ctr/dt={date}/") && args.contains("--tz=Europe/Berlin"), "{args}");
}

#[test]
fn chart_prometheus_rule_is_the_tested_rules_file() {
    let (_, docs) = render();
    let rule = find(&docs, "PrometheusRule", "hg-hourglass");
    let file: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(chart().join("files/alerts.yaml")).unwrap()).unwrap();
    assert_eq!(rule["spec"], file);
    let dir = tempfile::tempdir().unwrap();
    let rendered = dir.path().join("rules.yaml");
    std::fs::write(&rendered, serde_yaml_ng::to_string(&rule["spec"]).unwrap()).unwrap();
    run(Command::new(tool("promtool")).args(["check", "rules", rendered.to_str().unwrap()]));
    let dashboard = find(&docs, "ConfigMap", "hg-hourglass-dashboard");
    let json: Value = serde_json::from_str(dashboard["data"]["hourglass.json"].as_str().unwrap()).unwrap();
    assert_eq!(json["uid"], "hourglass");
}

#[test]
fn chart_names_a_missing_required_value() {
    let out = helm(&["template", "hg", chart().to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is required"), "{err}");
    let values = chart().join("ci/full-values.yaml");
    let out = helm(&["template", "hg", chart().to_str().unwrap(), "-f", values.to_str().unwrap()])
        .args(["--set", "worker.terminationGraceExtraSeconds=0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    // values.schema.json refuses it first, naming the value.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/worker/terminationGraceExtraSeconds"), "{err}");
}

/// `helm template` of the full values plus `extra` flags: (stdout, stderr, ok).
fn render_with(extra: &[&str]) -> (String, String, bool) {
    let values = chart().join("ci/full-values.yaml");
    let out = helm(&["template", "hg", chart().to_str().unwrap(), "-n", "batch", "-f", values.to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.success(),
    )
}

fn docs_of(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
        .filter(|d| !d.is_null())
        .collect()
}

#[test]
fn chart_values_are_typed_by_its_schema() {
    // Numbers are numbers: a quoted one, a typo'd key and a bad duration are
    // refused, each naming the value.
    for (flag, named) in [
        ("config.batchSize=lots", "/config/batchSize"),
        ("scaler.maxReplicas=-1", "/scaler/maxReplicas"),
        ("config.visibilityTimeout=soon", "/config/visibilityTimeout"),
        ("scaler.prewarm.at=25:00", "/scaler/prewarm/at"),
        ("worker.replica=3", "replica"),
    ] {
        let (_, err, ok) = render_with(&["--set", flag]);
        assert!(!ok && err.contains(named), "{flag}: {err}");
    }
    let (_, err, ok) = render_with(&["--set-string", "config.maxAttempts=3"]);
    assert!(!ok && err.contains("/config/maxAttempts"), "{err}");
}

#[test]
fn chart_follows_the_usual_overrides() {
    let (text, err, ok) = render_with(&[
        "--set",
        "fullnameOverride=ctr",
        "--set",
        "worker.serviceAccount.create=false",
        "--set",
        "worker.serviceAccount.name=shared-ml",
        "--set",
        "nightly.nodeSelector.pool=batch",
    ]);
    assert!(ok, "{err}");
    let docs = docs_of(&text);
    let worker = find(&docs, "Deployment", "ctr-worker");
    let pod = &worker["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "shared-ml");
    assert!(
        !docs.iter().any(|d| d["kind"] == "ServiceAccount" && d["metadata"]["name"] == "ctr-worker"),
        "serviceAccount.create=false creates none"
    );
    // extraEnv and extraArgs, log level through the ConfigMap.
    let container = &pod["containers"][0];
    assert!(container["env"].as_array().unwrap().iter().any(|e| e["name"] == "RUST_BACKTRACE"), "{container:?}");
    assert!(container["args"].as_array().unwrap().iter().any(|a| *a == "--prefetch-shards=2"), "{container:?}");
    let config = find(&docs, "ConfigMap", "ctr-config");
    assert_eq!(config["data"]["HOURGLASS_LOG"], "hourglass_worker=debug,info");
    // Workers spread across zones; the scaler and the nightly job keep
    // their own node selectors.
    let spread = &pod["topologySpreadConstraints"][0];
    assert_eq!(spread["topologyKey"], "topology.kubernetes.io/zone");
    assert_eq!(spread["labelSelector"]["matchLabels"]["app.kubernetes.io/component"], "worker");
    let scaler = find(&docs, "Deployment", "ctr-scaler");
    assert_eq!(scaler["spec"]["template"]["spec"]["nodeSelector"]["node.kubernetes.io/lifecycle"], "on-demand");
    let nightly = find(&docs, "CronJob", "ctr-nightly");
    assert_eq!(nightly["spec"]["jobTemplate"]["spec"]["template"]["spec"]["nodeSelector"]["pool"], "batch");
    // nameOverride renames the app label too.
    let (text, err, ok) = render_with(&["--set", "nameOverride=scoring"]);
    assert!(ok, "{err}");
    let docs = docs_of(&text);
    let worker = find(&docs, "Deployment", "hg-scoring-worker");
    assert_eq!(worker["metadata"]["labels"]["app.kubernetes.io/name"], "scoring");
}

#[test]
fn chart_has_notes_and_an_icon_that_shows() {
    // NOTES.txt renders only on install, which needs a cluster: render it
    // through `tpl` from a copy of the chart instead, as a ConfigMap.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("hourglass");
    run(Command::new("cp").args(["-r", chart().to_str().unwrap(), copy.to_str().unwrap()]));
    std::fs::copy(chart().join("templates/NOTES.txt"), copy.join("notes.tpl")).unwrap();
    std::fs::write(
        copy.join("templates/zz-notes.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\ndata:\n  notes: {{ tpl (.Files.Get \"notes.tpl\") . | quote }}\n",
    )
    .unwrap();
    let values = chart().join("ci/full-values.yaml");
    let out =
        run(&mut helm(&["template", "hg", copy.to_str().unwrap(), "-n", "batch", "-f", values.to_str().unwrap()]));
    let docs = docs_of(&String::from_utf8_lossy(&out.stdout));
    let notes = find(&docs, "ConfigMap", "notes")["data"]["notes"].as_str().unwrap().to_string();
    assert!(notes.contains("hourglass status --watch") && notes.contains("hg-hourglass-scaler"), "{notes}");
    assert!(notes.contains("https://sqs.us-east-1.amazonaws.com/123456789012/hourglass-work"), "{notes}");
    let meta: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(chart().join("Chart.yaml")).unwrap()).unwrap();
    let icon = meta["icon"].as_str().unwrap();
    let b64 = icon.strip_prefix("data:image/svg+xml;base64,").expect("an inline SVG icon");
    let svg = base64_decode(b64);
    assert_eq!(svg, std::fs::read(root().join("docs/icon.svg")).unwrap(), "Chart.yaml's icon is docs/icon.svg");
    assert!(String::from_utf8(svg).unwrap().starts_with("<svg"));
}

fn base64_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = ALPHABET.iter().position(|a| *a == c).expect("base64") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let rules = chart().join("files/alerts.yaml");
    let out = run(Command::new(tool("promtool")).args(["check", "rules", rules.to_str().unwrap()]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("SUCCESS: 8 rules found"));
    let tests = root().join("deploy/prometheus/alerts.test.yaml");
    let out = run(Command::new(tool("promtool")).args(["test", "rules", tests.to_str().unwrap()]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("SUCCESS"), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn every_alert_has_a_runbook_section() {
    let rules: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(chart().join("files/alerts.yaml")).unwrap()).unwrap();
    let runbooks = std::fs::read_to_string(root().join("docs/runbooks.md")).unwrap();
    let anchors: Vec<String> =
        runbooks.lines().filter_map(|l| l.strip_prefix("## ")).map(|h| h.trim().to_lowercase()).collect();
    let alerts: Vec<&Value> =
        rules["groups"].as_array().unwrap().iter().flat_map(|g| g["rules"].as_array().unwrap()).collect();
    assert!(alerts.len() >= 6);
    for rule in alerts {
        let name = rule["alert"].as_str().unwrap();
        let url = rule["annotations"]["runbook_url"].as_str().unwrap_or_else(|| panic!("{name}: no runbook_url"));
        let anchor = url.split_once("docs/runbooks.md#").map(|(_, a)| a).unwrap_or_else(|| panic!("{name}: {url}"));
        assert_eq!(anchor, name.to_lowercase(), "{name}: {url}");
        assert!(anchors.iter().any(|a| a == anchor), "{name}: no section `## {name}` in docs/runbooks.md");
        let description = rule["annotations"]["description"].as_str().unwrap();
        assert!(description.contains("namespace"), "{name}: the description does not name the namespace");
    }
}

#[test]
fn chart_serves_online_from_a_registry_alias_on_on_demand_nodes() {
    let (_, docs) = render();
    let serve = find(&docs, "Deployment", "hg-hourglass-serve");
    assert!(serve["spec"]["replicas"].is_null(), "the HPA owns replicas");
    let pod = &serve["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let args: Vec<&str> = c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert!(args.contains(&"--model=s3://ml-models/registry/ctr@champion"), "{args:?}");
    assert!(args.contains(&"--preferred-batch-size=64,256"), "{args:?}");
    // Ready = listening = the model loaded and warmed.
    for (probe, path) in [("readinessProbe", "/v2/health/ready"), ("startupProbe", "/v2/health/ready")] {
        assert_eq!(c[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], "http", "{probe}");
    }
    let terms = &pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
    assert_eq!(terms[0]["matchExpressions"][0]["key"], "karpenter.sh/capacity-type");
    assert_eq!(terms[0]["matchExpressions"][0]["values"][0], "on-demand", "not on spot");
    assert!(pod["tolerations"].is_null(), "the spot taint is not tolerated");
    let threads = c["env"].as_array().unwrap().iter().find(|e| e["name"] == "HOURGLASS_SERVE_THREADS").unwrap();
    assert_eq!(threads["valueFrom"]["resourceFieldRef"]["resource"], "limits.cpu");
    let selector = &serve["spec"]["selector"]["matchLabels"];
    let service = find(&docs, "Service", "hg-hourglass-serve");
    assert_eq!(&service["spec"]["selector"], selector);
    let ports: Vec<&str> =
        service["spec"]["ports"].as_array().unwrap().iter().map(|p| p["targetPort"].as_str().unwrap()).collect();
    assert_eq!(ports, ["http", "grpc"]);
    let hpa = find(&docs, "HorizontalPodAutoscaler", "hg-hourglass-serve");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "hg-hourglass-serve");
    assert_eq!(hpa["spec"]["metrics"][0]["resource"]["name"], "cpu");
    let pdb = find(&docs, "PodDisruptionBudget", "hg-hourglass-serve");
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], selector);
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    // Without a model the chart refuses to render.
    let (_, err, ok) = render_with(&["--set", "serve.model="]);
    assert!(!ok && err.contains("serve.model is required"), "{err}");
}

#[test]
fn chart_workers_take_trainers_and_a_scratch_size_for_training() {
    let (text, err, ok) = render_with(&[
        "--set",
        "worker.training.trainers.lightgbm=python3 /opt/hourglass/trainers/lightgbm_onnx.py",
        "--set",
        "worker.training.slots=2",
        "--set",
        "worker.training.scratchSizeLimit=8Gi",
    ]);
    assert!(ok, "{err}");
    let docs = docs_of(&text);
    let pod = &find(&docs, "Deployment", "hg-hourglass-worker")["spec"]["template"]["spec"];
    let args: Vec<&str> = pod["containers"][0]["args"].as_array().unwrap().iter().filter_map(|a| a.as_str()).collect();
    assert!(args.contains(&"--trainer=lightgbm=python3 /opt/hourglass/trainers/lightgbm_onnx.py"), "{args:?}");
    assert!(args.contains(&"--train-slots=2"), "{args:?}");
    let tmp = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "tmp").unwrap();
    assert_eq!(tmp["emptyDir"]["sizeLimit"], "8Gi");
    // Without trainers, no training flags.
    let (text, _, _) = render_with(&[]);
    assert!(!text.contains("--trainer=") && !text.contains("--train-slots"));
    let (_, err, ok) = render_with(&["--set", "worker.training.slots=0"]);
    assert!(!ok && err.contains("/worker/training/slots"), "{err}");
}

/// `gpu.enabled`: the workers, the placeholders that hold room for them
/// and (with gpu.serve) the serve pods get a GPU, the GPU pool's selector
/// and tolerations, the `-gpu` image and the device flags; TensorRT gets its
/// engine cache volume; the scaler sizes at the GPU rate. The manifests
/// stay valid for Kubernetes, and contradictory or mistyped values are
/// refused at render.
#[test]
fn chart_runs_workers_on_a_gpu_node_pool() {
    let (text, err, ok) = render_with(&[
        "--set",
        "gpu.enabled=true",
        "--set",
        "gpu.device=tensorrt",
        "--set",
        "gpu.serve=true",
        "--set",
        "gpu.nodeSelector.karpenter\\.k8s\\.aws/instance-gpu-manufacturer=nvidia",
        "--set",
        "gpu.engineCacheHostPath=/var/cache/hourglass-trt",
        "--set",
        "gpu.batchSize=131072",
        "--set",
        "gpu.podRowsPerSec=3000000",
    ]);
    assert!(ok, "{err}");
    let docs = docs_of(&text);
    for (kind, name) in [
        ("Deployment", "hg-hourglass-worker"),
        ("Deployment", "hg-hourglass-capacity"),
        ("Deployment", "hg-hourglass-serve"),
    ] {
        let pod = &find(&docs, kind, name)["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], 1, "{name}");
        assert_eq!(pod["nodeSelector"]["karpenter.k8s.aws/instance-gpu-manufacturer"], "nvidia", "{name}");
        let tolerations = pod["tolerations"].as_array().unwrap();
        assert!(tolerations.iter().any(|t| t["key"] == "nvidia.com/gpu" && t["effect"] == "NoSchedule"), "{name}");
        if name.ends_with("capacity") {
            continue;
        }
        assert!(c["image"].as_str().unwrap().ends_with(":0.1.0-gpu"), "{name}: {}", c["image"]);
        let args: Vec<&str> = c["args"].as_array().unwrap().iter().filter_map(|a| a.as_str()).collect();
        for flag in ["--device=tensorrt", "--ep-fallback=error", "--trt-engine-cache=/var/cache/hourglass/tensorrt"] {
            assert!(args.contains(&flag), "{name}: {args:?}");
        }
        assert_eq!(args.contains(&"--batch-size=131072"), name.ends_with("worker"), "{name}: {args:?}");
        let cache = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "trt-engines").unwrap();
        assert_eq!(cache["hostPath"]["path"], "/var/cache/hourglass-trt");
        let mounts = c["volumeMounts"].as_array().unwrap();
        assert!(mounts.iter().any(|m| m["name"] == "trt-engines"), "{name}");
    }
    let scaler = &find(&docs, "Deployment", "hg-hourglass-scaler")["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = scaler["args"].as_array().unwrap().iter().filter_map(|a| a.as_str()).collect();
    assert!(args.contains(&"--device-class=tensorrt"), "{args:?}");
    assert!(args.contains(&"--pod-rows-per-sec=cpu=250000,tensorrt=3000000"), "{args:?}");
    // Valid for the API server.
    let report = kubernetes_validate(&text);
    assert!(!report.contains("ERROR"), "{report}");
    // Off: no GPU anywhere.
    let (text, _, _) = render_with(&[]);
    assert!(!text.contains("nvidia.com/gpu") && !text.contains("--device=") && !text.contains("-gpu\n"));
    // Refused: strict placement with a CPU fallback, an unknown device.
    let (_, err, ok) =
        render_with(&["--set", "gpu.enabled=true", "--set", "gpu.strictPlacement=true", "--set", "gpu.fallback=cpu"]);
    assert!(!ok && err.contains("cannot be combined with gpu.fallback=cpu"), "{err}");
    let (_, err, ok) = render_with(&["--set", "gpu.enabled=true", "--set", "gpu.device=rocm"]);
    assert!(!ok && err.contains("/gpu/device"), "{err}");
}

#[test]
fn chart_hands_scaling_to_keda_with_the_scaler_advising() {
    let (text, err, ok) = render_with(&["--set", "keda.enabled=true", "--set", "keda.fallbackReplicas=4"]);
    assert!(ok, "{err}");
    let docs = docs_of(&text);
    // Against KEDA's own CRD schema (its 2.16 models), offline.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rendered.yaml");
    std::fs::write(&file, &text).unwrap();
    let out = run(Command::new(root().join(".venv/bin/python")).arg(root().join("tests/keda_validate.py")).arg(&file));
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(report.lines().filter(|l| l.starts_with("ok ScaledObject")).count(), 2, "{report}");
    // The workers follow desiredReplicas, the placeholders placeholderReplicas,
    // both read from the scaler's /keda with targetValue 1.
    for (name, value) in [("hg-hourglass-worker", "desiredReplicas"), ("hg-hourglass-capacity", "placeholderReplicas")]
    {
        let so = &find(&docs, "ScaledObject", name)["spec"];
        assert_eq!(so["scaleTargetRef"]["name"], name);
        let trigger = &so["triggers"][0];
        assert_eq!(trigger["type"], "metrics-api");
        assert_eq!(trigger["metadata"]["url"], "http://hg-hourglass-scaler.batch.svc:9100/keda");
        assert_eq!(trigger["metadata"]["valueLocation"], value);
        assert_eq!(trigger["metadata"]["targetValue"], "1");
        assert_eq!(
            so["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
            0
        );
    }
    assert_eq!(find(&docs, "ScaledObject", "hg-hourglass-worker")["spec"]["fallback"]["replicas"], 4);
    // The scaler advises and cannot write: no patch, no events, no HPA list.
    let scaler = &find(&docs, "Deployment", "hg-hourglass-scaler")["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = scaler["args"].as_array().unwrap().iter().filter_map(|a| a.as_str()).collect();
    assert!(args.contains(&"--mode=advise") && args.iter().any(|a| a.starts_with("--metrics-addr=")), "{args:?}");
    let role = find(&docs, "Role", "hg-hourglass-scaler");
    assert_eq!(role["rules"][0]["verbs"], serde_json::json!(["get"]));
    assert_eq!(role["rules"].as_array().unwrap().len(), 2, "{}", role["rules"]);
    let svc = find(&docs, "Service", "hg-hourglass-scaler");
    assert_eq!(svc["spec"]["ports"][0]["port"], 9100);
    // KEDA's namespace may reach it through the NetworkPolicy.
    let policy = find(&docs, "NetworkPolicy", "hg-hourglass-scaler");
    assert!(policy.to_string().contains(r#""kubernetes.io/metadata.name":"keda""#), "{policy}");
    let report = kubernetes_validate(&text);
    assert!(!report.contains("ERROR"), "{report}");
    // Off (the default): the scaler patches, and no ScaledObject exists.
    // A jobs index reaches the submit, the watcher and the scaler through
    // the shared config.
    let (text, err, ok) = render_with(&["--set", "config.jobsIndex=s3://scores/_hourglass-jobs/"]);
    assert!(ok, "{err}");
    let config = find(&docs_of(&text), "ConfigMap", "hg-hourglass-config").clone();
    assert_eq!(config["data"]["HOURGLASS_JOBS_INDEX"], "s3://scores/_hourglass-jobs/");
    // Cost: workers on a pinned spot placement say so in their records;
    // the scaler prices the jobs it follows.
    let (text, err, ok) = render_with(&["--set", "scaler.nodePrices=spot=0.12\\,on-demand=0.38"]);
    assert!(ok, "{err}");
    let docs = docs_of(&text);
    let args =
        |name: &str| find(&docs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(args("hg-hourglass-worker").contains("--capacity-type=spot"), "{}", args("hg-hourglass-worker"));
    assert!(
        args("hg-hourglass-scaler").contains("--node-prices=spot=0.12,on-demand=0.38"),
        "{}",
        args("hg-hourglass-scaler")
    );
    let (text, _, _) = render_with(&[]);
    assert!(!text.contains("kind: ScaledObject") && !text.contains("--mode=advise"));
    // A ScaledObject needs the scaler it reads.
    let (_, err, ok) = render_with(&["--set", "keda.enabled=true", "--set", "scaler.enabled=false"]);
    assert!(!ok && err.contains("needs scaler.enabled"), "{err}");
}
