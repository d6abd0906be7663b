//! End-to-end tests on S3 and SQS, served by the moto server `make test`
//! starts: real `hourglass` processes, real AWS SDK clients over HTTP.

// Tests wait for processes by polling from plain threads.
#![allow(clippy::disallowed_methods)]

mod common;

use bytes::Bytes;
use common::*;
use hourglass_core::BlobUrl;
use hourglass_core::queue::{Queue, SqsQueue};
use hourglass_core::store::{self, BlobStore};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(240);

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn moto() -> String {
    std::env::var("HOURGLASS_TEST_MOTO").expect(
        "HOURGLASS_TEST_MOTO is not set: S3/SQS tests need the moto server that `make test` starts (scripts/with-moto)",
    )
}

fn unique(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        nanos % 100_000
    )
}

/// A bucket with the reference model, and a queue with its DLQ.
struct Aws {
    bucket: String,
    queue: String,
    store: Arc<dyn BlobStore>,
}

/// An S3 client for moto (path-style addressing), for what the store does
/// not do: buckets, versioning, notifications.
async fn s3_client() -> aws_sdk_s3::Client {
    let conf =
        aws_sdk_s3::config::Builder::from(hourglass_core::aws::sdk_config().await).force_path_style(true).build();
    aws_sdk_s3::Client::from_conf(conf)
}

impl Aws {
    fn new(max_attempts: u32) -> Self {
        moto();
        let bucket = unique("hg");
        rt().block_on(async { s3_client().await.create_bucket().bucket(&bucket).send().await.unwrap() });
        let store = store::open(&BlobUrl::parse(&format!("s3://{bucket}/")).unwrap()).unwrap();
        rt().block_on(store.put("models/ctr_gbdt.onnx", Bytes::from(std::fs::read(model_path()).unwrap()))).unwrap();
        let out =
            hourglass_ok(&["queue", "create", "--name", &unique("q"), "--max-attempts", &max_attempts.to_string()]);
        let queue = String::from_utf8(out.stdout).unwrap().trim().to_string();
        assert!(queue.starts_with("http://127.0.0.1"), "{queue}");
        Self { bucket, queue, store }
    }
    fn url(&self, rel: &str) -> String {
        format!("s3://{}/{rel}", self.bucket)
    }
    fn submit(&self, extra: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        let (input, model, output) = (self.url("in/"), self.url("models/ctr_gbdt.onnx"), self.url("out/"));
        std::process::Command::new(BIN)
            .args(["submit", "--input", &input, "--model", &model, "--output", &output, "--queue", &self.queue])
            .args(extra)
            .envs(env.iter().copied())
            .output()
            .unwrap()
    }
    fn worker(&self, extra: &[&str], env: &[(&str, &str)]) -> WorkerProc {
        WorkerProc::spawn_on(&self.queue, extra, env)
    }
    fn exists(&self, key: &str) -> bool {
        rt().block_on(self.store.head(key)).is_ok()
    }
    fn outputs(&self) -> HashMap<String, (u32, f32)> {
        rt().block_on(async {
            let metas = hourglass_core::store::list_all(self.store.as_ref(), "out/part-").await.unwrap();
            let mut parts = Vec::new();
            for m in metas {
                parts.push(self.store.get(&m.key).await.unwrap());
            }
            parse_outputs(parts)
        })
    }
    fn status(&self) -> serde_json::Value {
        status_json_of(&self.url("out/"), &[])
    }
    fn queue(&self) -> SqsQueue {
        SqsQueue::new(self.queue.clone())
    }
}

fn ids(n: u64) -> HashMap<String, f32> {
    (0..n).map(|i| (i.to_string(), 0.0)).collect()
}

fn job_on_s3(format: &str, shard_size: &str) {
    let aws = Aws::new(3);
    hourglass_ok(&["gen-data", "--output", &aws.url("in/"), "--rows", "20000", "--files", "2", "--format", format]);
    let out = aws.submit(&["--shard-size", shard_size], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut a = aws.worker(&["--exit-when-idle", "2s", "--poll-wait", "1s"], &[]);
    let mut b = aws.worker(&["--exit-when-idle", "2s", "--poll-wait", "1s"], &[]);
    assert!(a.wait_exit(LONG).success(), "{}", a.log.join("\n"));
    assert!(b.wait_exit(LONG).success(), "{}", b.log.join("\n"));
    assert!(aws.exists("out/_SUCCESS"));
    let st = aws.status();
    assert_eq!((st["state"].as_str(), st["rows_done"].as_u64()), (Some("succeeded"), Some(20_000)), "{st}");
    assert_exactly_once(&aws.outputs(), &ids(20_000), false);
    hourglass_ok(&["verify", &aws.url("out/")]);
    // Re-submitting resumes from the ledger on S3: nothing left to enqueue.
    let again = aws.submit(&["--shard-size", shard_size, "--json"], &[]);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    let report: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!((report["resumed"].as_bool(), report["enqueued"].as_u64()), (Some(true), Some(0)), "{report}");
}

#[test]
fn csv_on_s3_and_sqs_scores_every_row_exactly_once() {
    job_on_s3("csv", "256KiB");
}

#[test]
fn parquet_on_s3_and_sqs_scores_every_row_exactly_once() {
    job_on_s3("parquet", "64KiB");
}

#[test]
fn sigkill_on_sqs_loses_and_duplicates_nothing() {
    let aws = Aws::new(3);
    hourglass_ok(&["gen-data", "--output", &aws.url("in/"), "--rows", "6000", "--files", "1", "--format", "csv"]);
    assert!(aws.submit(&["--shard-size", "300KiB"], &[]).status.success());
    let slow =
        ["--visibility-timeout", "5s", "--batch-size", "500", "--fault-batch-delay", "200ms", "--poll-wait", "1s"];
    let mut doomed = aws.worker(&slow, &[]);
    doomed.wait_for_line("shard started", LONG);
    doomed.child.kill().unwrap();
    doomed.child.wait().unwrap();
    let mut rescuer = aws.worker(&["--exit-when-idle", "2s", "--poll-wait", "1s"], &[]);
    assert!(rescuer.wait_exit(LONG).success(), "{}", rescuer.log.join("\n"));
    assert!(aws.exists("out/_SUCCESS"));
    assert_exactly_once(&aws.outputs(), &ids(6000), false);
}

#[test]
fn sigterm_on_sqs_drains_within_the_timeout_and_exits_zero() {
    let aws = Aws::new(3);
    hourglass_ok(&["gen-data", "--output", &aws.url("in/"), "--rows", "3000", "--files", "1", "--format", "csv"]);
    assert!(aws.submit(&[], &[]).status.success());
    let mut w = aws.worker(&["--batch-size", "300", "--fault-batch-delay", "100ms", "--drain-timeout", "30s"], &[]);
    w.wait_for_line("shard started", LONG);
    let stopped = std::time::Instant::now();
    w.signal("TERM");
    assert!(w.wait_exit(LONG).success(), "{}", w.log.join("\n"));
    assert!(stopped.elapsed() < Duration::from_secs(30), "exited within the drain timeout");
    assert!(aws.exists("out/_SUCCESS"), "{}", w.log.join("\n"));
    assert_exactly_once(&aws.outputs(), &ids(3000), false);
    let d = rt().block_on(aws.queue().depth()).unwrap();
    assert_eq!((d.visible, d.in_flight), (0, 0));
}

#[test]
fn flaky_backends_still_complete_the_job_correctly() {
    let aws = Aws::new(5);
    hourglass_ok(&["gen-data", "--output", &aws.url("in/"), "--rows", "8000", "--files", "2", "--format", "csv"]);
    let faults = [("HOURGLASS_FAULTS", "fraction=0.2,seed=7")];
    let out = aws.submit(&["--shard-size", "256KiB"], &faults);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let faults_b = [("HOURGLASS_FAULTS", "fraction=0.2,seed=11")];
    // A lost ack (not retried, by design) brings the shard back after its
    // lease, to be acked as already done: keep leases short here.
    let args = ["--exit-when-idle", "3s", "--poll-wait", "1s", "--visibility-timeout", "10s"];
    let mut a = aws.worker(&args, &faults);
    let mut b = aws.worker(&args, &faults_b);
    assert!(a.wait_exit(LONG).success(), "{}", a.log.join("\n"));
    assert!(b.wait_exit(LONG).success(), "{}", b.log.join("\n"));
    assert!(a.log.iter().chain(&b.log).any(|l| l.contains("injected fault")), "faults were injected");
    let st = aws.status();
    assert_eq!(st["state"], "succeeded", "{st}");
    let rows: Vec<(String, Vec<f32>)> = rt().block_on(async {
        let mut rows = Vec::new();
        for m in hourglass_core::store::list_all(aws.store.as_ref(), "in/").await.unwrap() {
            let text = String::from_utf8(aws.store.get(&m.key).await.unwrap().to_vec()).unwrap();
            for line in text.lines().skip(1) {
                let mut f = line.split(',');
                let id = f.next().unwrap().to_string();
                rows.push((id, f.map(|v| v.parse().unwrap()).collect()));
            }
        }
        rows
    });
    assert_exactly_once(&aws.outputs(), &direct_scores(&rows), true);
}

#[test]
fn a_permanent_error_surfaces_with_context_and_dead_letters_the_shard() {
    let aws = Aws::new(3);
    hourglass_ok(&["gen-data", "--output", &aws.url("in/"), "--rows", "500", "--files", "1", "--format", "csv"]);
    assert!(aws.submit(&[], &[]).status.success());
    // The input vanishes after planning: every attempt finds it missing.
    rt().block_on(aws.store.delete("in/part-00000.csv")).unwrap();
    let mut w = aws.worker(&["--exit-when-idle", "2s", "--poll-wait", "1s", "--max-attempts", "2"], &[]);
    assert!(w.wait_exit(LONG).success(), "{}", w.log.join("\n"));
    let st = aws.status();
    assert_eq!(st["state"], "failed", "{st}");
    let msg = st["failures"][0]["message"].as_str().unwrap();
    assert!(msg.contains(&format!("s3://{}/in/part-00000.csv", aws.bucket)), "{msg}");
    assert_eq!(st["failures"][0]["error_kind"], "not_found");
    assert_eq!(rt().block_on(aws.queue().depth()).unwrap().dead, Some(1));
    assert!(!aws.exists("out/_SUCCESS"));
}

#[test]
fn poison_messages_are_dead_lettered_and_the_worker_keeps_serving() {
    let aws = Aws::new(3);
    hourglass_ok(&["gen-data", "--output", &aws.url("in/"), "--rows", "500", "--files", "1", "--format", "csv"]);
    assert!(aws.submit(&[], &[]).status.success());
    let poison = [
        "{not json".to_string(),
        r#"{"v":99,"job":"j","shard":"000001"}"#.to_string(),
        format!(r#"{{"v":1,"pad":"{}"}}"#, "x".repeat(300 * 1024)),
    ];
    rt().block_on(async {
        let client = aws_sdk_sqs::Client::new(hourglass_core::aws::sdk_config().await);
        for body in &poison {
            client.send_message().queue_url(&aws.queue).message_body(body).send().await.unwrap();
        }
    });
    let mut w = aws.worker(&["--exit-when-idle", "2s", "--poll-wait", "1s"], &[]);
    assert!(w.wait_exit(LONG).success(), "{}", w.log.join("\n"));
    let log = w.log.join("\n");
    // A newer version alone is read (the compat rule); this one has no kind.
    for reason in ["not json", "version 99 task without a", "exceeds the 262144 byte limit"] {
        assert!(log.contains("poison message") && log.contains(reason), "no logged reason {reason:?}:\n{log}");
    }
    assert!(aws.exists("out/_SUCCESS"), "the real shard was still served");
    assert_eq!(rt().block_on(aws.queue().depth()).unwrap().dead, Some(3));
}

/// A real bucket notification (S3 → SQS on moto): objects landing start
/// jobs through `hourglass watch`, once per object, and the jobs run.
#[test]
fn s3_events_start_jobs_once() {
    let aws = Aws::new(3);
    let events = String::from_utf8(hourglass_ok(&["queue", "create", "--name", &unique("ev")]).stdout).unwrap();
    let events = events.trim().to_string();
    rt().block_on(async {
        let sdk = hourglass_core::aws::sdk_config().await;
        let sqs = aws_sdk_sqs::Client::new(sdk);
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(&events)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap();
        let arn = attrs.attributes().unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn].clone();
        use aws_sdk_s3::types::*;
        let s3 = s3_client().await;
        let prefix = FilterRule::builder().name(FilterRuleName::Prefix).value("drops/").build();
        let notification = NotificationConfiguration::builder()
            .queue_configurations(
                QueueConfiguration::builder()
                    .queue_arn(arn)
                    .events(Event::from("s3:ObjectCreated:*"))
                    .filter(
                        NotificationConfigurationFilter::builder()
                            .key(S3KeyFilter::builder().filter_rules(prefix).build())
                            .build(),
                    )
                    .build()
                    .unwrap(),
            )
            .build();
        s3.put_bucket_notification_configuration()
            .bucket(&aws.bucket)
            .notification_configuration(notification)
            .send()
            .await
            .unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yaml");
    let model = aws.url("models/ctr_gbdt.onnx");
    std::fs::write(
        &rules,
        format!(
            "rules:\n\
             - name: daily\n  prefix: drops/daily/\n  ready: _READY\n  model: {model}\n  output: s3://{b}/scores/{{dir}}\n  deadline: +1h\n\
             - name: files\n  prefix: drops/files/\n  suffix: .csv\n  model: {model}\n  output: s3://{b}/scores/files/{{stem}}/\n",
            b = aws.bucket
        ),
    )
    .unwrap();
    let rules = rules.to_str().unwrap().to_string();
    let mut watch = WorkerProc::spawn_command(
        &["watch", "--events-queue", &events, "--rules", &rules, "--queue", &aws.queue, "--poll-wait", "1s"],
        &[],
    );
    // The notification's test event reached the queue.
    watch.wait_for_line("S3 test event", LONG);
    let worker = aws.worker(&["--poll-wait", "1s"], &[]);

    // A directory of files waits for its marker; the marker starts one job over it.
    hourglass_ok(&["gen-data", "--output", &aws.url("drops/daily/d1/"), "--rows", "3000", "--files", "2"]);
    rt().block_on(aws.store.put("drops/daily/d1/_READY", bytes::Bytes::new())).unwrap();
    let started = watch.wait_for_line("job started", LONG);
    assert!(started.contains("drops/daily/d1/_READY"), "{started}");
    // One object, one job.
    hourglass_ok(&["gen-data", "--output", &aws.url("drops/files/"), "--rows", "1000", "--files", "1"]);
    let started = watch.wait_for_line("job started", LONG);
    assert!(started.contains("drops/files/"), "{started}");

    for out in ["scores/drops/daily/d1/", "scores/files/part-00000/"] {
        let deadline = std::time::Instant::now() + LONG;
        while !aws.exists(&format!("{out}_SUCCESS")) {
            assert!(std::time::Instant::now() < deadline, "{out} not done");
            std::thread::sleep(Duration::from_millis(200));
        }
        hourglass_ok(&["verify", &aws.url(out)]);
    }
    let st = status_json_of(&aws.url("scores/drops/daily/d1/"), &[]);
    assert_eq!((st["rows_done"].as_u64(), st["state"].as_str()), (Some(3000), Some("succeeded")), "{st}");
    assert!(st["job"].as_str().unwrap().starts_with("daily-"), "{st}");

    // The same marker again (same bytes, same ETag) is the same job: not a second one.
    rt().block_on(aws.store.put("drops/daily/d1/_READY", bytes::Bytes::new())).unwrap();
    let dup = watch.wait_for_line("job already started", LONG);
    assert!(dup.contains("drops/daily/d1/_READY"), "{dup}");
    let shards =
        rt().block_on(hourglass_core::store::list_all(aws.store.as_ref(), "scores/drops/daily/d1/part-")).unwrap();
    assert_eq!(shards.len() as u64, st["shards_total"].as_u64().unwrap(), "no second job's outputs");
    drop(worker);
    let _ = watch.child.kill();
    assert!(watch.log.iter().all(|l| !l.contains("\"level\":\"ERROR\"")), "{}", watch.log.join("\n"));
}

/// The frozen-worker case on S3 and SQS: SQS may even accept a stale
/// receipt's extension, so the worker's own clock must notice. The bucket is
/// versioned: any write under the prefix, same bytes or not, is a new
/// version.
#[test]
fn a_frozen_worker_on_sqs_writes_nothing_after_success() {
    let aws = Aws::new(3);
    rt().block_on(async {
        let versioning = aws_sdk_s3::types::VersioningConfiguration::builder()
            .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
            .build();
        let s3 = s3_client().await;
        s3.put_bucket_versioning().bucket(&aws.bucket).versioning_configuration(versioning).send().await.unwrap();
    });
    hourglass_ok(&["gen-data", "--output", &aws.url("in/"), "--rows", "6000", "--files", "1", "--format", "csv"]);
    assert!(aws.submit(&[], &[]).status.success());
    let slow = [
        "--visibility-timeout",
        "3s",
        "--batch-size",
        "500",
        "--fault-batch-delay",
        "300ms",
        "--prefetch-shards",
        "0",
        "--poll-wait",
        "1s",
    ];
    let mut frozen = aws.worker(&slow, &[]);
    let rescue = || {
        let mut rescuer = aws.worker(&["--exit-when-idle", "2s", "--poll-wait", "1s"], &[]);
        assert!(rescuer.wait_exit(LONG).success(), "{}", rescuer.log.join("\n"));
        assert!(aws.exists("out/_SUCCESS"));
    };
    let versions = || {
        rt().block_on(async {
            let out = s3_client().await.list_object_versions().bucket(&aws.bucket).prefix("out/").send().await.unwrap();
            let mut v: Vec<(String, String)> = out
                .versions()
                .iter()
                .map(|v| (v.key().unwrap_or_default().to_string(), v.version_id().unwrap_or_default().to_string()))
                .collect();
            v.sort();
            v
        })
    };
    assert_frozen_worker_writes_nothing(&mut frozen, rescue, versions);
    hourglass_ok(&["verify", &aws.url("out/")]);
}

/// A training sweep on S3 and SQS: the dataset staged from S3 with
/// `If-Match`, each trial's model registered in a registry on S3 (version
/// claims by conditional put, the alias moved by compare-and-swap), the
/// best promoted; then a batch job scores with `@champion`.
#[test]
fn a_training_sweep_on_s3_and_sqs_registers_and_promotes_once() {
    let aws = Aws::new(3);
    gen_labelled(&aws.url("data/train/"), "20000", "1", "1");
    gen_labelled(&aws.url("data/holdout/"), "5000", "1", "2");
    let spec = tempfile::NamedTempFile::new().unwrap();
    let text = format!(
        "name: ctr\nregistry: {}\ntrainer: lightgbm\noutput: {}\ndataset:\n  train: {}\n  holdout: {}\n  label: clicked\n  id_column: id\nparams: {{n_estimators: 20}}\ngrid: {{num_leaves: [4, 15]}}\npromote_if: auc > champion\n",
        aws.url("registry"),
        aws.url("runs/sweep/"),
        aws.url("data/train/"),
        aws.url("data/holdout/"),
    );
    std::fs::write(spec.path(), text).unwrap();
    hourglass_ok(&["train", "submit", "--spec", spec.path().to_str().unwrap(), "--queue", &aws.queue]);
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let trainer = format!(
        "lightgbm={} {}",
        root.join(".venv/bin/python").display(),
        root.join("trainers/lightgbm_onnx.py").display()
    );
    let mut w = aws.worker(&["--exit-when-idle", "2s", "--poll-wait", "1s", "--trainer", &trainer], &[]);
    assert!(w.wait_exit(LONG).success(), "{}", w.log.join("\n"));
    let st = status_json_of(&aws.url("runs/sweep/"), &[]);
    assert_eq!(st["state"], "succeeded", "{st}");
    assert_eq!(st["promotion"]["promoted"], true, "{st}");
    let manifests = rt().block_on(hourglass_core::store::list_all(aws.store.as_ref(), "registry/ctr/")).unwrap();
    let versions = manifests.iter().filter(|m| m.key.ends_with("/manifest.json")).count();
    assert_eq!(versions, 2, "{manifests:?}");
    assert!(aws.exists("registry/ctr/aliases.json"));
    // The champion scores a batch job on S3.
    let champion = format!("{}/ctr@champion", aws.url("registry"));
    let out = std::process::Command::new(BIN)
        .args(["submit", "--input", &aws.url("data/holdout/"), "--model", &champion])
        .args(["--output", &aws.url("out/"), "--queue", &aws.queue])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut w = aws.worker(&["--exit-when-idle", "2s", "--poll-wait", "1s"], &[]);
    assert!(w.wait_exit(LONG).success(), "{}", w.log.join("\n"));
    assert_exactly_once(&aws.outputs(), &ids(5000), false);
}

#[test]
fn compressed_tsv_and_kept_columns_on_s3_into_jsonl_outputs() {
    use std::io::Write;
    let aws = Aws::new(3);
    let scratch = Scratch::new();
    let gen_dir = scratch.path("gen");
    hourglass_ok(&["gen-data", "--output", gen_dir.to_str().unwrap(), "--rows", "3000", "--files", "1"]);
    let text = std::fs::read_to_string(gen_dir.join("part-00000.csv")).unwrap();
    let tsv = text.replace(',', "\t");
    // The rows in two files with the header: a gzip TSV and a zstd TSV,
    // each one shard.
    let lines: Vec<&str> = tsv.lines().collect();
    let half = lines.len() / 2;
    let mut first = lines[..half].join("\n");
    first.push('\n');
    let mut second = lines[half..].join("\n");
    second.push('\n');
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(first.as_bytes()).unwrap();
    rt().block_on(aws.store.put("in/a.tsv.gz", Bytes::from(gz.finish().unwrap()))).unwrap();
    let mut with_header = lines[0].to_string() + "\n";
    with_header.push_str(&second);
    rt().block_on(
        aws.store.put("in/b.tsv.zst", Bytes::from(zstd::stream::encode_all(with_header.as_bytes(), 3).unwrap())),
    )
    .unwrap();
    let out = aws.submit(&["--keep-columns", "I3", "--output-format", "jsonl", "--json"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["shards"], 2, "{report}");
    let mut w = aws.worker(&["--exit-when-idle", "2s", "--poll-wait", "1s"], &[]);
    assert!(w.wait_exit(LONG).success(), "{}", w.log.join("\n"));
    let st = aws.status();
    assert_eq!((st["state"].as_str(), st["rows_done"].as_u64()), (Some("succeeded"), Some(3000)), "{st}");
    hourglass_ok(&["verify", &aws.url("out/")]);
    // Every row once, with its I3 text and the model's own score.
    let expected = direct_scores(&read_csv_inputs(&gen_dir));
    let i3: HashMap<&str, &str> = text
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0], f[3])
        })
        .collect();
    let mut seen = 0;
    rt().block_on(async {
        for m in hourglass_core::store::list_all(aws.store.as_ref(), "out/part-").await.unwrap() {
            assert!(m.key.ends_with(".jsonl"), "{}", m.key);
            let body = aws.store.get(&m.key).await.unwrap();
            for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let row: serde_json::Value = serde_json::from_slice(line).unwrap();
                let id = row["id"].as_str().unwrap();
                assert_eq!(row["I3"].as_str(), Some(i3[id]), "{row}");
                assert_eq!(row["probabilities_1"].as_f64().unwrap() as f32, expected[id], "{row}");
                seen += 1;
            }
        }
    });
    assert_eq!(seen, 3000);
}
