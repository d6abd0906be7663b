//! The exactly-once promise under real semantics, on the local backends
//! with real processes: a frozen worker that lost its lease writes nothing,
//! a prefix belongs to one job, stale and forged tasks are refused, shards
//! whose workers keep dying are recorded as lost, inputs are pinned, and
//! awkward input is an error or a skipped file, never a silent success.

mod common;

use common::*;
use hourglass_core::queue::{LocalQueue, Queue};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

const LONG: Duration = Duration::from_secs(180);

fn queue_of(s: &Scratch) -> LocalQueue {
    LocalQueue::open(s.path("queue.db"), None).unwrap()
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

/// Every file under `dir` with its bytes and modification time.
fn snapshot(dir: &Path) -> BTreeMap<String, (Vec<u8>, SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let meta = std::fs::metadata(&p).unwrap();
                out.insert(p.display().to_string(), (std::fs::read(&p).unwrap(), meta.modified().unwrap()));
            }
        }
    }
    out
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_frozen_worker_that_lost_its_lease_writes_nothing_after_success() {
    let s = Scratch::new();
    gen_data(&s, 6000, 1, "csv");
    assert!(submit(&s, &["--shard-size", "64MiB"]).status.success());
    // One shard; the worker scores it slowly and is frozen mid-shard.
    let mut frozen = WorkerProc::spawn(
        &s,
        &[
            "--visibility-timeout",
            "3s",
            "--batch-size",
            "500",
            "--fault-batch-delay",
            "300ms",
            "--prefetch-shards",
            "0",
        ],
    );
    let rescue = || {
        // Its lease lapses; another worker completes the job.
        let mut rescuer = WorkerProc::spawn(&s, &["--exit-when-idle", "1s"]);
        assert!(rescuer.wait_exit(LONG).success(), "{}", rescuer.log.join("\n"));
        assert!(s.path("output/_SUCCESS").is_file());
    };
    assert_frozen_worker_writes_nothing(&mut frozen, rescue, || snapshot(&s.path("output")));
    hourglass_ok(&["verify", &s.output()]);
}

#[test]
fn a_prefix_belongs_to_one_job_and_stale_tasks_never_write_there() {
    let s = Scratch::new();
    write_csv(&s.path("input/a.csv"), 0, 300, None);
    write_csv(&s.path("other/b.csv"), 1000, 1200, None);
    // Job A is submitted (its task waits in the queue), then the prefix is
    // wiped and job B, with other input, is submitted to it.
    let a = submit(&s, &["--json"]);
    assert!(a.status.success(), "{}", stderr(&a));
    let job_a = serde_json::from_slice::<serde_json::Value>(&a.stdout).unwrap()["job"].as_str().unwrap().to_string();
    // While A holds the prefix, another job is refused, naming both.
    let refused = submit_to(&s.s("other/"), &s.output(), &s.queue(), &[]);
    assert_eq!(refused.status.code(), Some(1));
    let err = stderr(&refused);
    assert!(err.contains(&format!("already holds job {job_a}")) && err.contains("--replace"), "{err}");
    std::fs::remove_dir_all(s.path("output")).unwrap();
    let b = submit_to(&s.s("other/"), &s.output(), &s.queue(), &["--json"]);
    assert!(b.status.success(), "{}", stderr(&b));
    let job_b = serde_json::from_slice::<serde_json::Value>(&b.stdout).unwrap()["job"].as_str().unwrap().to_string();
    assert_ne!(job_a, job_b);
    let mut w = WorkerProc::spawn(&s, &["--exit-when-idle", "1s"]);
    assert!(w.wait_exit(LONG).success(), "{}", w.log.join("\n"));
    // A's task was dead-lettered with the reason; B's outputs are B's rows.
    let dead = block_on(queue_of(&s).dead_letters()).unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].body.contains(&job_a), "{dead:?}");
    assert!(dead[0].reason.contains(&format!("the prefix holds job {job_b}")), "{}", dead[0].reason);
    let st = status_json(&s);
    assert_eq!((st["state"].as_str(), st["rows_done"].as_u64()), (Some("succeeded"), Some(200)), "{st}");
    let outputs = read_outputs(&s.path("output"));
    assert_eq!(outputs.len(), 200);
    assert!(outputs.keys().all(|id| id.parse::<u64>().unwrap() >= 1000), "job A's rows under job B");
    hourglass_ok(&["verify", &s.output()]);
    // --replace hands the prefix to another job explicitly.
    let replaced = submit(&s, &["--replace", "--json"]);
    assert!(replaced.status.success(), "{}", stderr(&replaced));
    let mut w = WorkerProc::spawn(&s, &["--exit-when-idle", "1s"]);
    assert!(w.wait_exit(LONG).success(), "{}", w.log.join("\n"));
    assert_eq!(status_json(&s)["rows_done"], 300);
    hourglass_ok(&["verify", &s.output()]);
}

#[test]
fn a_job_id_names_one_plan() {
    let s = Scratch::new();
    write_csv(&s.path("input/a.csv"), 0, 300, None);
    assert!(submit(&s, &["--job-id", "nightly-1"]).status.success());
    for (flag, value, field) in [
        ("--shard-size", "1MiB", "shard_bytes"),
        ("--max-bad-rows", "5", "max_bad_rows"),
        ("--id-column", "I1", "id_column"),
    ] {
        let out = submit(&s, &["--job-id", "nightly-1", flag, value]);
        assert_eq!(out.status.code(), Some(1), "{flag}");
        let err = stderr(&out);
        assert!(err.contains(&format!("was planned with {field}")), "{flag}: {err}");
    }
    // The same spec with a new deadline resumes.
    let again = submit(&s, &["--job-id", "nightly-1", "--deadline", "+2h", "--json"]);
    assert!(again.status.success(), "{}", stderr(&again));
    // Files added under the input prefix later are reported, not scored.
    write_csv(&s.path("input/late.csv"), 5000, 5010, None);
    let again = submit(&s, &["--job-id", "nightly-1", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert!(report["new_files"][0].as_str().unwrap().ends_with("late.csv"), "{report}");
}

#[test]
fn forged_tasks_are_refused_and_write_nothing() {
    let s = Scratch::new();
    write_csv(&s.path("input/a.csv"), 0, 100, None);
    let out = submit(&s, &["--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let q = queue_of(&s);
    let real = block_on(q.receive(1, Duration::from_secs(1), Duration::from_secs(60))).unwrap().remove(0);
    let task: serde_json::Value = serde_json::from_str(&real.body).unwrap();
    let forge = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut t = task.clone();
        edit(&mut t);
        t.to_string()
    };
    let secret = s.path("secret.csv");
    std::fs::write(&secret, "id,x\nsecret-line,1\n").unwrap();
    let bodies = vec![
        // An id that would escape the prefix.
        forge(&|t| t["shard"] = "../../x".into()),
        // Another file as input: not what the job planned for the shard.
        forge(&|t| t["input"]["url"] = format!("file://{}", secret.display()).into()),
        // A shard the job does not have.
        forge(&|t| t["shard"] = "999999".into()),
        // An output prefix without a job ledger.
        forge(&|t| t["output"] = format!("file://{}/", s.path("elsewhere").display()).into()),
    ];
    block_on(q.ack_batch(std::slice::from_ref(&real.receipt))).unwrap();
    block_on(q.send_batch(&bodies)).unwrap();
    let mut w = WorkerProc::spawn(&s, &["--exit-when-idle", "1s"]);
    assert!(w.wait_exit(LONG).success(), "{}", w.log.join("\n"));
    let dead = block_on(q.dead_letters()).unwrap();
    assert_eq!(dead.len(), 4, "{dead:?}");
    let reasons: Vec<&str> = dead.iter().map(|d| d.reason.as_str()).collect();
    assert!(reasons.iter().any(|r| r.contains("shard id \"../../x\"")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("its input differs from the plan")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("has no shard 999999")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("holds no job.json")), "{reasons:?}");
    assert!(!s.path("elsewhere").exists());
    let written: Vec<String> = snapshot(&s.path("output")).into_keys().collect();
    assert_eq!(written, vec![s.s("output/_hourglass/job.json")], "a refused task wrote under the prefix");

    // --allow-prefix: the real task, refused by a worker limited elsewhere.
    assert!(submit(&s, &[]).status.success());
    let mut w = WorkerProc::spawn(&s, &["--exit-when-idle", "1s", "--allow-prefix", &s.s("other/")]);
    assert!(w.wait_exit(LONG).success(), "{}", w.log.join("\n"));
    let dead = block_on(q.dead_letters()).unwrap();
    assert!(dead[4].reason.contains("outside this worker's --allow-prefix"), "{dead:?}");
    // Allowed: input, model and output prefixes.
    assert!(submit(&s, &[]).status.success());
    let model_dir = model_path().parent().unwrap().display().to_string();
    let allow = format!("{},{},{model_dir}", s.s("input"), s.s("output/"));
    let mut w = WorkerProc::spawn_on(&s.queue(), &["--exit-when-idle", "1s"], &[("HOURGLASS_ALLOW_PREFIXES", &allow)]);
    assert!(w.wait_exit(LONG).success(), "{}", w.log.join("\n"));
    assert_eq!(status_json(&s)["state"], "succeeded");
}

#[test]
fn a_shard_whose_workers_keep_dying_is_recorded_as_lost() {
    let s = Scratch::new();
    write_csv(&s.path("input/a.csv"), 0, 100, None);
    assert!(submit(&s, &[]).status.success());
    // Two deliveries whose holders died (leases lapse, nobody acks); the
    // second receive's long poll waits for the first lease to lapse.
    let q = queue_of(&s);
    for _ in 0..2 {
        let got = block_on(q.receive(1, Duration::from_secs(2), Duration::from_millis(100))).unwrap();
        assert_eq!(got.len(), 1);
    }
    let mut w = WorkerProc::spawn(&s, &["--exit-when-idle", "1s", "--max-attempts", "2"]);
    assert!(w.wait_exit(LONG).success(), "{}", w.log.join("\n"));
    let st = status_json(&s);
    assert_eq!(st["state"], "failed", "{st}");
    assert_eq!(st["failures"][0]["error_kind"], "lost", "{st}");
    let message = st["failures"][0]["message"].as_str().unwrap();
    assert!(message.contains("delivered 3 times without a result") && message.contains("OOM"), "{message}");
    assert_eq!(block_on(q.dead_letters()).unwrap().len(), 1);
}

#[test]
fn status_reports_shards_whose_messages_are_gone_as_lost() {
    let s = Scratch::new();
    write_csv(&s.path("input/a.csv"), 0, 100, None);
    assert!(submit(&s, &[]).status.success());
    // The redrive moved the message away without any worker recording it.
    let q = queue_of(&s);
    let got = block_on(q.receive(1, Duration::from_secs(1), Duration::from_secs(60))).unwrap();
    block_on(q.dead_letter(&got[0], "maxReceiveCount exceeded")).unwrap();
    // Without the queue the ledger alone cannot tell: still running (4).
    assert_eq!(status_json(&s)["state"], "running");
    let st = status_json_of(&s.output(), &["--queue", &s.queue()]);
    assert_eq!((st["state"].as_str(), st["shards_lost"].as_u64()), (Some("failed"), Some(1)), "{st}");
    assert_eq!(st["dead_letters"], 1);
    let text = hourglass(&["status", &s.output(), "--queue", &s.queue()]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("1 LOST"));
    // Could not read: exit 5.
    let missing = hourglass(&["status", &s.s("nowhere/")]);
    assert_eq!(missing.status.code(), Some(5), "{}", stderr(&missing));
    let missing = hourglass(&["verify", &s.s("nowhere/")]);
    assert_eq!(missing.status.code(), Some(5), "{}", stderr(&missing));
}

#[test]
fn submit_wait_exits_with_the_jobs_outcome() {
    let s = Scratch::new();
    write_csv(&s.path("input/a.csv"), 0, 100, None);
    write_csv(&s.path("input/b.csv"), 100, 400, Some(250));
    let mut w = WorkerProc::spawn(&s, &["--max-attempts", "1"]);
    let out = submit(&s, &["--wait", "--interval", "200ms"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("cannot parse \"abc\""));
    std::fs::write(s.path("input/b.csv"), "").unwrap();
    let out = submit(&s, &["--wait", "--interval", "200ms", "--replace"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    w.signal("TERM");
    assert!(w.wait_exit(LONG).success());
}

#[test]
fn an_input_rewritten_under_a_running_job_fails_its_shards() {
    let s = Scratch::new();
    write_csv(&s.path("input/a.csv"), 0, 100, None);
    let out = submit(&s, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Same size, other bytes.
    let text = std::fs::read_to_string(s.path("input/a.csv")).unwrap().replacen(",1", ",2", 1);
    std::fs::write(s.path("input/a.csv"), text).unwrap();
    let mut w = WorkerProc::spawn(&s, &["--exit-when-idle", "1s", "--max-attempts", "1"]);
    assert!(w.wait_exit(LONG).success(), "{}", w.log.join("\n"));
    let st = status_json(&s);
    assert_eq!(st["failures"][0]["error_kind"], "input_changed", "{st}");
}

fn assert_refused(s: &Scratch, input: &str, needles: &[&str]) {
    let out = submit_to(input, &s.output(), &s.queue(), &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{input}: {err}");
    for n in needles {
        assert!(err.contains(n), "{input}: {n:?} not in {err}");
    }
    assert_eq!(block_on(queue_of(s).depth()).unwrap().visible, 0, "something was enqueued");
    assert!(!s.path("output/_hourglass/job.json").exists());
}

#[test]
fn awkward_csv_is_an_error_or_a_skipped_file_never_a_silent_success() {
    let s = Scratch::new();
    let header: String = std::iter::once("id".to_string())
        .chain((1..=13).map(|i| format!("I{i}")))
        .chain((1..=26).map(|i| format!("C{i}")))
        .collect::<Vec<_>>()
        .join(",");
    let row = |id: u64| format!("{id}{}", ",1".repeat(39));
    let write = |name: &str, body: &[u8]| {
        let p = s.path(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, body).unwrap();
        p.display().to_string()
    };
    // CR-only line endings: the whole file would be one header line.
    let cr = write("cr/a.csv", format!("{header}\r{}\r{}\r", row(1), row(2)).as_bytes());
    assert_refused(&s, &cr, &["cr/a.csv", "line 1", "CR-only"]);
    // Mixed: CRLF, then a bare CR inside the data.
    let mixed = write("mixed/a.csv", format!("{header}\r\n{}\r\n{}\r{}\r\n", row(1), row(2), row(3)).as_bytes());
    assert_refused(&s, &mixed, &["mixed/a.csv", "line 3", "CR-only or mixed"]);
    // A line with no end within --max-line-bytes of a cut point.
    let long = format!("{header}\n{}\n{}{}\n", row(1), row(2), ",1".repeat(40_000));
    let long = write("long/a.csv", long.as_bytes());
    let out = submit_to(&long, &s.output(), &s.queue(), &["--shard-size", "1KiB", "--max-line-bytes", "8KiB"]);
    let err = stderr(&out);
    assert!(!out.status.success() && err.contains("long/a.csv") && err.contains("--max-line-bytes"), "{err}");
    // Non-UTF-8 ids.
    let mut bytes = format!("{header}\n").into_bytes();
    bytes.extend_from_slice(b"\xff\xfe");
    bytes.extend_from_slice(format!("{}\n", ",1".repeat(39)).as_bytes());
    let bad_id = write("utf8/a.csv", &bytes);
    assert_refused(&s, &bad_id, &["utf8/a.csv", "line 2", "not valid UTF-8"]);
    // Only empty and header-only files: nothing to score is an error.
    write("empty/a.csv", b"");
    write("empty/b.csv", format!("{header}\n").as_bytes());
    assert_refused(&s, &s.s("empty/"), &["holds no rows", "empty file (0 bytes)", "a header only"]);
    // Beside a real file they are skipped, recorded and shown.
    write("empty/c.csv", format!("{header}\n{}\n{}\n", row(1), row(2)).as_bytes());
    let out = submit_to(&s.s("empty/"), &s.output(), &s.queue(), &["--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["skipped_files"].as_array().unwrap().len(), 2, "{report}");
    let mut w = WorkerProc::spawn(&s, &["--exit-when-idle", "1s"]);
    assert!(w.wait_exit(LONG).success(), "{}", w.log.join("\n"));
    let st = status_json(&s);
    assert_eq!((st["state"].as_str(), st["rows_done"].as_u64()), (Some("succeeded"), Some(2)), "{st}");
    assert_eq!(st["skipped_files"].as_array().unwrap().len(), 2);
    let text = hourglass_ok(&["status", &s.output()]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("skipped  "), "skipped files are shown");
}

#[test]
fn a_stray_cr_past_the_sample_fails_its_shard_naming_the_line() {
    let s = Scratch::new();
    write_csv(&s.path("input/a.csv"), 0, 400, None);
    // Row id 300 is on line 302, past the rows the planner samples.
    let text = std::fs::read_to_string(s.path("input/a.csv")).unwrap().replacen("\n300,", "\n300\r,", 1);
    std::fs::write(s.path("input/a.csv"), text).unwrap();
    assert!(submit(&s, &[]).status.success());
    let mut w = WorkerProc::spawn(&s, &["--exit-when-idle", "1s", "--max-attempts", "1"]);
    assert!(w.wait_exit(LONG).success(), "{}", w.log.join("\n"));
    let st = status_json(&s);
    let message = st["failures"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("a.csv line 302") && message.contains("CR-only or mixed"), "{st}");
}

#[test]
fn models_a_batch_job_cannot_use_are_refused_at_submit() {
    let s = Scratch::new();
    write_csv(&s.path("input/a.csv"), 0, 50, None);
    let unfit = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/unfit");
    for (model, needles) in [
        ("fixed_batch.onnx", &["input \"input\"", "fixed batch dimension of 1"][..]),
        ("zipmap.onnx", &["output \"probabilities\"", "zipmap=False"][..]),
        ("string_output.onnx", &["output \"label\"", "float32, float64, int32 or int64"][..]),
    ] {
        let path = unfit.join(model);
        let out = hourglass(&[
            "submit",
            "--input",
            &s.input(),
            "--model",
            path.to_str().unwrap(),
            "--output",
            &s.output(),
            "--queue",
            &s.queue(),
        ]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{model}: {err}");
        for n in needles.iter().chain([&model]) {
            assert!(err.contains(n), "{model}: {n:?} not in {err}");
        }
        assert_eq!(block_on(queue_of(&s).depth()).unwrap().visible, 0, "{model}: something was enqueued");
        assert!(!s.path("output/_hourglass/job.json").exists(), "{model}");
    }
}

#[test]
fn a_worker_refuses_a_queue_that_would_drop_shards_without_a_record() {
    let s = Scratch::new();
    // This queue dead-letters after 3 receives: a worker trying 3 times
    // would never see the delivery that records a lost shard.
    let queue = format!("{}?max_receives=3", s.queue());
    let mut w = WorkerProc::spawn_on(&queue, &["--max-attempts", "3"], &[]);
    let status = w.wait_exit(LONG);
    assert_eq!(status.code(), Some(1), "{}", w.log.join("\n"));
    let err = w.log.join("\n");
    assert!(err.contains("dead-letters after 3 receives") && err.contains("--max-attempts 3"), "{err}");
}

#[test]
fn parquet_files_without_rows_are_skipped_and_shown() {
    let s = Scratch::new();
    gen_data(&s, 300, 1, "parquet");
    // The same schema with no rows: a writer closed before any batch (no
    // row group at all), and one with an empty batch written.
    let source = std::fs::File::open(s.path("input/part-00000.parquet")).unwrap();
    let schema =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(source).unwrap().schema().clone();
    for (name, empty_batch) in [("none.parquet", false), ("empty-group.parquet", true)] {
        let file = std::fs::File::create(s.path(&format!("input/{name}"))).unwrap();
        let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema.clone(), None).unwrap();
        if empty_batch {
            writer.write(&arrow_array::RecordBatch::new_empty(schema.clone())).unwrap();
        }
        writer.close().unwrap();
    }
    let out = submit(&s, &["--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let skipped = report["skipped_files"].as_array().unwrap();
    assert_eq!(skipped.len(), 2, "{report}");
    assert!(skipped.iter().all(|f| f["reason"].as_str().unwrap().contains("no rows")), "{report}");
    assert_eq!(report["shards"], 1, "{report}");
    let mut w = WorkerProc::spawn(&s, &["--exit-when-idle", "1s"]);
    assert!(w.wait_exit(LONG).success(), "{}", w.log.join("\n"));
    let st = status_json(&s);
    assert_eq!((st["state"].as_str(), st["rows_done"].as_u64()), (Some("succeeded"), Some(300)), "{st}");
    hourglass_ok(&["verify", &s.output()]);
}
