//! Least privilege that is proven: whole jobs on a moto server that
//! enforces IAM (`INITIAL_NO_AUTH_ACTION_COUNT`), each component signing
//! with the keys of an IAM user that holds nothing but its rendered
//! `deploy/iam/` policy.
//!
//! What moto checks (read from moto 5.2's `moto/iam/access_control.py` and
//! `moto/core/authorization.py`): the SigV4 signature against the user's
//! key; for S3 the action and the resource ARN (`arn:aws:s3:::bucket` or
//! `arn:aws:s3:::bucket/key`); for SQS the action and the queue's ARN. It
//! does not evaluate `Condition` blocks against request context (a
//! conditioned statement never allows), nor resource-based (bucket or
//! queue) policies; it checks SQS batch calls as `sqs:SendMessageBatch` and
//! `sqs:DeleteMessageBatch` (AWS authorizes them as the single actions).

// Tests wait for processes by polling from plain threads.
#![allow(clippy::disallowed_methods)]

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(120);

fn venv(bin: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin").join(bin)
}

/// A moto server of this test's own, enforcing IAM after three requests.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(venv("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "3")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server from .venv (make setup installs it)");
        // Wait for the port with a bare connect: an HTTP request would use
        // up one of the three unchecked requests.
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto did not start on port {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { child, endpoint: format!("http://127.0.0.1:{port}") }
    }

    fn env(&self, keys: &Keys) -> Vec<(String, String)> {
        vec![
            ("AWS_ENDPOINT_URL".into(), self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID".into(), keys.0.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), keys.1.clone()),
            ("AWS_REGION".into(), "us-east-1".into()),
        ]
    }

    fn py(&self, keys: Option<&Keys>, args: &[&str]) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/moto_iam.py");
        let mut cmd = Command::new(venv("python"));
        cmd.arg(script).args(args).env("AWS_ENDPOINT_URL", &self.endpoint);
        // Bootstrap's three unchecked requests still need signing keys.
        let bootstrap = Keys("bootstrap".into(), "bootstrap".into());
        cmd.envs(self.env(keys.unwrap_or(&bootstrap)));
        String::from_utf8(run_ok(&mut cmd).stdout).unwrap()
    }

    fn user(&self, admin: &Keys, name: &str, policy: &str) -> Keys {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), policy).unwrap();
        keys_of(&self.py(Some(admin), &["user", name, file.path().to_str().unwrap()]))
    }

    /// Replaces user `name`'s policy (moto applies it to the next request).
    fn set_policy(&self, admin: &Keys, name: &str, policy: &str) {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), policy).unwrap();
        self.py(Some(admin), &["policy", name, file.path().to_str().unwrap()]);
    }

    /// `hourglass ARGS` signing with `keys`; run it with `run_ok` or `.output()`.
    fn hourglass(&self, keys: &Keys, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args).envs(self.env(keys)).stdin(Stdio::null());
        cmd
    }

    fn worker(&self, keys: &Keys, queue: &str, extra: &[&str]) -> WorkerProc {
        let env = self.env(keys);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        WorkerProc::spawn_on(queue, extra, &env)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Keys(String, String);

fn keys_of(out: &str) -> Keys {
    let mut parts = out.split_whitespace();
    Keys(parts.next().unwrap().to_string(), parts.next().unwrap().to_string())
}

/// A bucket with inputs and the model, and a queue; returns the admin's
/// keys and the queue URL.
fn world(moto: &Moto, rows: &str, queue_name: &str) -> (Keys, String) {
    let admin = keys_of(&moto.py(None, &["bootstrap"]));
    moto.py(Some(&admin), &["bucket", "data"]);
    moto.py(Some(&admin), &["put", "data", "models/ctr_gbdt.onnx", model_path().to_str().unwrap()]);
    let generate = ["gen-data", "--output", "s3://data/in/", "--rows", rows, "--files", "2", "--format", "csv"];
    run_ok(&mut moto.hourglass(&admin, &generate));
    let queue = make_queue(moto, &admin, queue_name);
    (admin, queue)
}

fn make_queue(moto: &Moto, admin: &Keys, name: &str) -> String {
    let out = run_ok(&mut moto.hourglass(admin, &["queue", "create", "--name", name]));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn policy(moto: &Moto, admin: &Keys, role: &str, output: &str, queue: &str) -> String {
    policy_with(moto, admin, role, output, queue, &[])
}

fn policy_with(moto: &Moto, admin: &Keys, role: &str, output: &str, queue: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "iam",
        "policy",
        "--role",
        role,
        "--input",
        "s3://data/in/",
        "--output",
        output,
        "--model",
        "s3://data/models/",
        "--queue",
        queue,
    ];
    args.extend(extra);
    String::from_utf8(run_ok(&mut moto.hourglass(admin, &args)).stdout).unwrap()
}

fn submit(moto: &Moto, keys: &Keys, output: &str, queue: &str) -> Command {
    let args = [
        "submit",
        "--input",
        "s3://data/in/",
        "--model",
        "s3://data/models/ctr_gbdt.onnx",
        "--output",
        output,
        "--queue",
        queue,
        "--shard-size",
        "256KiB",
    ];
    moto.hourglass(keys, &args)
}

#[test]
fn the_rendered_policies_run_a_whole_job_with_iam_enforced() {
    let moto = Moto::start();
    let (admin, queue) = world(&moto, "3000", "work");
    let out = "s3://data/out/";
    let submitter = moto.user(&admin, "submit", &policy(&moto, &admin, "submit", out, &queue));
    let worker = moto.user(&admin, "worker", &policy(&moto, &admin, "worker", out, &queue));
    let scaler = moto.user(&admin, "scaler", &policy(&moto, &admin, "scaler", out, &queue));
    // Enforcement is on: a user without a policy is refused.
    let nobody = moto.user(
        &admin,
        "nobody",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"sqs:ListQueues","Resource":"*"}]}"#,
    );
    let refused = submit(&moto, &nobody, out, &queue).output().unwrap();
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("needs s3:"));

    run_ok(&mut submit(&moto, &submitter, out, &queue));
    let worker_args = ["--exit-when-idle", "2s", "--poll-wait", "1s"];
    let mut a = moto.worker(&worker, &queue, &worker_args);
    let mut b = moto.worker(&worker, &queue, &worker_args);
    for w in [&mut a, &mut b] {
        assert!(w.wait_exit(LONG).success(), "{}", w.log.join("\n"));
        let log = w.log.join("\n");
        assert!(!log.contains("AccessDenied") && !log.contains("needs s3:") && !log.contains("needs sqs:"), "{log}");
    }
    // The scaler's role reads the ledger and the queue depths.
    let st = run_ok(&mut moto.hourglass(&scaler, &["status", out, "--queue", &queue, "--json"]));
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!((st["state"].as_str(), st["rows_done"].as_u64()), (Some("succeeded"), Some(3000)), "{st}");
    assert_eq!(st["dead_letters"], 0);
    run_ok(&mut moto.hourglass(&submitter, &["verify", out]));
    // A resubmit (resume) works with the submit role too.
    run_ok(&mut submit(&moto, &submitter, out, &queue));
    // Scoped: the worker role cannot write outside its output prefix.
    let other = moto
        .hourglass(&worker, &["gen-data", "--output", "s3://data/elsewhere/", "--rows", "10", "--files", "1"])
        .output()
        .unwrap();
    assert!(!other.status.success() && String::from_utf8_lossy(&other.stderr).contains("needs s3:PutObject"));

    // The watcher's role: an S3 event on its queue starts a job over that
    // object, which the workers' role scores.
    let events = make_queue(&moto, &admin, "events");
    let watcher_policy = policy_with(&moto, &admin, "watcher", out, &queue, &["--events-queue", &events]);
    let watcher = moto.user(&admin, "watcher", &watcher_policy);
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(
        &rules,
        "rules:\n- name: files\n  prefix: in/\n  suffix: .csv\n  model: s3://data/models/ctr_gbdt.onnx\n  output: s3://data/out/watched/{stem}/\n",
    )
    .unwrap();
    let env = moto.env(&watcher);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let args = [
        "watch",
        "--events-queue",
        &events,
        "--rules",
        rules.to_str().unwrap(),
        "--queue",
        &queue,
        "--poll-wait",
        "1s",
    ];
    let mut watch = WorkerProc::spawn_command(&args, &env);
    let event = r#"{"Records":[{"eventName":"ObjectCreated:Put","eventTime":"2026-11-23T01:00:00Z","s3":{"bucket":{"name":"data"},"object":{"key":"in/part-00000.csv","eTag":"e1"}}}]}"#;
    moto.py(Some(&admin), &["send", &events, event]);
    watch.wait_for_line("job started", LONG);
    let mut w = moto.worker(&worker, &queue, &worker_args);
    assert!(w.wait_exit(LONG).success(), "{}", w.log.join("\n"));
    assert_eq!(moto.py(Some(&admin), &["exists", "data", "out/watched/part-00000/_SUCCESS"]).trim(), "yes");
    watch.signal("TERM");
    assert!(watch.wait_exit(LONG).success(), "{}", watch.log.join("\n"));
    for log in [&watch.log, &w.log] {
        let log = log.join("\n");
        assert!(!log.contains("AccessDenied") && !log.contains("needs s3:") && !log.contains("needs sqs:"), "{log}");
    }
}

#[test]
fn a_worker_missing_any_one_action_fails_naming_it() {
    let moto = Moto::start();
    let (admin, _) = world(&moto, "500", "unused");
    let actions = [
        "s3:GetObject",
        "s3:PutObject",
        "s3:ListBucket",
        "sqs:ReceiveMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
    ];
    for (i, action) in actions.iter().enumerate() {
        let queue = make_queue(&moto, &admin, &format!("q{i}"));
        let out = format!("s3://data/out{i}/");
        let mut doc: serde_json::Value = serde_json::from_str(&policy(&moto, &admin, "worker", &out, &queue)).unwrap();
        // On AWS a batch call is authorized as its single action: removing
        // `sqs:DeleteMessage` removes `sqs:DeleteMessageBatch` with it.
        for s in doc["Statement"].as_array_mut().unwrap() {
            s["Action"].as_array_mut().unwrap().retain(|a| !a.as_str().unwrap().starts_with(action));
        }
        doc["Statement"].as_array_mut().unwrap().retain(|s| !s["Action"].as_array().unwrap().is_empty());
        let keys = moto.user(&admin, &format!("worker{i}"), &doc.to_string());
        run_ok(&mut submit(&moto, &admin, &out, &queue));
        // Slow batches and a short lease: the heartbeat extends it at least once.
        let args = [
            "--exit-when-idle",
            "1s",
            "--poll-wait",
            "1s",
            "--visibility-timeout",
            "3s",
            "--batch-size",
            "100",
            "--fault-batch-delay",
            "500ms",
        ];
        let mut w = moto.worker(&keys, &queue, &args);
        let line = w.wait_for_line(action, LONG);
        assert!(line.contains(&format!("needs {action}")), "{action}: {line}");
        let _ = w.child.kill();
        let _ = w.child.wait();
        // Without these the job cannot finish; the others fail the queue's
        // bookkeeping (acks, depth) after the job's outputs are complete.
        if !matches!(*action, "sqs:DeleteMessage" | "sqs:GetQueueAttributes") {
            let key = format!("out{i}/_SUCCESS");
            assert_eq!(moto.py(Some(&admin), &["exists", "data", &key]).trim(), "no", "{action}");
        }
    }
}

fn role_policy(moto: &Moto, admin: &Keys, role: &str, input: &str, output: &str, model: &str, queue: &str) -> String {
    let args =
        ["iam", "policy", "--role", role, "--input", input, "--output", output, "--model", model, "--queue", queue];
    String::from_utf8(run_ok(&mut moto.hourglass(admin, &args)).stdout).unwrap()
}

/// A training sweep under the `submit` and `trainer` policies alone: the
/// trainer reads the dataset, writes its job's ledger and registers and
/// promotes versions in the registry, and nothing else. A plain `worker`
/// policy (no registry writes) fails the trial naming the missing right.
#[test]
fn a_training_sweep_runs_under_the_trainer_policy_and_not_the_worker_policy() {
    let moto = Moto::start();
    let admin = keys_of(&moto.py(None, &["bootstrap"]));
    moto.py(Some(&admin), &["bucket", "data"]);
    for (dir, rows, seed) in [("s3://data/ds/train/", "8000", "1"), ("s3://data/ds/holdout/", "2000", "2")] {
        let args = [
            "gen-data", "--output", dir, "--rows", rows, "--files", "1", "--format", "parquet", "--label", "clicked",
            "--seed", seed,
        ];
        run_ok(&mut moto.hourglass(&admin, &args));
    }
    let queue = make_queue(&moto, &admin, "train");
    let (input, model) = ("s3://data/ds/", "s3://data/registry/");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let trainer = format!("lightgbm={} {}", venv("python").display(), root.join("trainers/lightgbm_onnx.py").display());
    let dir = tempfile::tempdir().unwrap();
    let spec = |output: &str| {
        let path = dir.path().join(format!("{}.yaml", output.len()));
        let text = format!(
            "name: ctr\nregistry: {model}\ntrainer: lightgbm\noutput: {output}\ndataset:\n  train: s3://data/ds/train/\n  holdout: s3://data/ds/holdout/\n  label: clicked\n  id_column: id\nparams: {{n_estimators: 10}}\ngrid: {{num_leaves: [4, 8]}}\npromote_if: auc > champion\n"
        );
        std::fs::write(&path, text).unwrap();
        path
    };

    let out = "s3://data/runs/ok/";
    let submitter = moto.user(&admin, "submit", &role_policy(&moto, &admin, "submit", input, out, model, &queue));
    let trainer_keys = moto.user(&admin, "trainer", &role_policy(&moto, &admin, "trainer", input, out, model, &queue));
    let path = spec(out);
    run_ok(&mut moto.hourglass(&submitter, &["train", "submit", "--spec", path.to_str().unwrap(), "--queue", &queue]));
    let args = ["--exit-when-idle", "2s", "--poll-wait", "1s", "--trainer", &trainer];
    let mut w = moto.worker(&trainer_keys, &queue, &args);
    assert!(w.wait_exit(LONG).success(), "{}", w.log.join("\n"));
    let log = w.log.join("\n");
    assert!(!log.contains("AccessDenied") && !log.contains("needs s3:") && !log.contains("needs sqs:"), "{log}");
    let st = run_ok(&mut moto.hourglass(&submitter, &["status", out, "--json"]));
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(st["state"], "succeeded", "{st}");
    assert_eq!(st["promotion"]["promoted"], true, "{st}");

    // The batch worker's role cannot register: the trial fails, named.
    let denied = "s3://data/runs/denied/";
    let submitter2 = moto.user(&admin, "submit2", &role_policy(&moto, &admin, "submit", input, denied, model, &queue));
    let worker_keys = moto.user(&admin, "worker", &role_policy(&moto, &admin, "worker", input, denied, model, &queue));
    let path = spec(denied);
    let args2 = ["train", "submit", "--spec", path.to_str().unwrap(), "--queue", &queue];
    run_ok(&mut moto.hourglass(&submitter2, &args2));
    let args = ["--exit-when-idle", "2s", "--poll-wait", "1s", "--max-attempts", "1", "--trainer", &trainer];
    let mut w = moto.worker(&worker_keys, &queue, &args);
    assert!(w.wait_exit(LONG).success(), "{}", w.log.join("\n"));
    let st = moto.hourglass(&submitter2, &["status", denied, "--json"]).output().unwrap();
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(st["state"], "failed", "{st}");
    let message = st["failures"][0]["message"].as_str().unwrap();
    assert!(message.contains("needs s3:PutObject") && message.contains("registry/ctr/"), "{message}");
}

/// `policy` without `s3:PutObject` anywhere: the output refuses writes.
fn without_puts(policy: &str) -> String {
    let mut p: serde_json::Value = serde_json::from_str(policy).unwrap();
    for st in p["Statement"].as_array_mut().unwrap() {
        if let Some(actions) = st["Action"].as_array_mut() {
            actions.retain(|a| a != "s3:PutObject");
        } else if st["Action"] == "s3:PutObject" {
            st["Action"] = serde_json::json!([]);
        }
    }
    p["Statement"].as_array_mut().unwrap().retain(|st| st["Action"] != serde_json::json!([]));
    p.to_string()
}

#[test]
fn an_output_bucket_that_denies_writes_mid_job_fails_the_job_with_its_cause() {
    let moto = Moto::start();
    let (admin, queue) = world(&moto, "2000", "denied");
    let out = "s3://data/out/";
    let worker_policy = policy(&moto, &admin, "worker", out, &queue);
    let worker = moto.user(&admin, "worker", &worker_policy);
    // The job is submitted (job.json written); then the workers' writes to
    // the output are denied, records included.
    run_ok(&mut submit(&moto, &admin, out, &queue));
    moto.set_policy(&admin, "worker", &without_puts(&worker_policy));
    let mut w = moto.worker(&worker, &queue, &["--exit-when-idle", "2s", "--poll-wait", "1s", "--max-attempts", "2"]);
    // Bounded: the job ends instead of redelivering forever.
    assert!(w.wait_exit(LONG).success(), "{}", w.log.join("\n"));
    let log = w.log.join("\n");
    assert!(!log.contains("OOM kill or spot interruption"), "{log}");
    // The cause reaches status through the dead-letter queue, which is all
    // that took it.
    let st = moto.hourglass(&admin, &["status", out, "--queue", &queue, "--json"]).output().unwrap();
    assert_eq!(st.status.code(), Some(3), "a failed job: {}", String::from_utf8_lossy(&st.stderr));
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(st["state"], "failed", "{st}");
    assert_eq!(st["shards_lost"], st["shards_total"], "{st}");
    // moto under IAM enforcement has been seen to keep one of two dead
    // letters sent 20 ms apart (the body of one, the reason of the other;
    // the worker's log shows both sent): every unit it keeps must name the
    // cause.
    let dead = st["dead_lettered"].as_array().unwrap();
    assert!(!dead.is_empty(), "{st}");
    for d in dead {
        assert!(d["reason"].as_str().unwrap().contains("needs s3:PutObject"), "{d}");
    }
    // Nothing half-written: no output and no upload in progress.
    assert_eq!(moto.py(Some(&admin), &["list", "data", "out/"]).trim(), "out/_hourglass/job.json");
    assert_eq!(moto.py(Some(&admin), &["uploads", "data"]).trim(), "0");
}
