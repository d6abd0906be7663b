//! End-to-end tests of the whole system on the local backends: real
//! `hourglass` processes, a real SQLite queue, real files, real ONNX Runtime.

mod common;

use common::*;
use hourglass_core::queue::{LocalQueue, Queue};
use std::collections::HashMap;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(180);

fn queue_of(s: &Scratch) -> LocalQueue {
    LocalQueue::open(s.path("queue.db"), None).unwrap()
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

fn scored_job(format: &str, shard_size: &str) {
    let s = Scratch::new();
    gen_data(&s, 200_000, 2, format);
    let out = submit(&s, &["--shard-size", shard_size, "--deadline", "+1h"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut a = WorkerProc::spawn(&s, &["--exit-when-idle", "1s"]);
    let mut b = WorkerProc::spawn(&s, &["--exit-when-idle", "1s"]);
    assert!(a.wait_exit(LONG).success(), "{}", a.log.join("\n"));
    assert!(b.wait_exit(LONG).success(), "{}", b.log.join("\n"));
    assert!(s.path("output/_SUCCESS").is_file());
    let st = status_json(&s);
    assert_eq!(st["state"], "succeeded", "{st}");
    assert_eq!(st["rows_done"], 200_000);
    assert!(st["shards_total"].as_u64().unwrap() >= 4, "{st}");
    assert_eq!(st["shards_done"], st["shards_total"]);
    assert!(st["slack_secs"].as_f64().unwrap() > 0.0, "{st}");
    let inputs =
        if format == "csv" { read_csv_inputs(&s.path("input")) } else { read_parquet_inputs(&s.path("input")) };
    assert_eq!(inputs.len(), 200_000);
    let expected = direct_scores(&inputs);
    assert_exactly_once(&read_outputs(&s.path("output")), &expected, true);
    let v = hourglass_ok(&["verify", &s.output(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!((v["input_rows"].as_u64(), v["output_rows"].as_u64()), (Some(200_000), Some(200_000)));
    // Submitting the same job again resumes it: nothing left to enqueue.
    let again = submit(&s, &["--shard-size", shard_size, "--json"]);
    assert!(again.status.success());
    let report: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!((report["resumed"].as_bool(), report["enqueued"].as_u64()), (Some(true), Some(0)), "{report}");
}

#[test]
fn a_jobs_cost_is_its_pod_seconds_on_the_nodes_it_ran_on() {
    let s = Scratch::new();
    gen_data(&s, 20_000, 2, "csv");
    let out = submit(&s, &["--shard-size", "64KiB"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The node kind as the chart gives it (a pinned capacity type) and the
    // operator (an instance type); no metadata service is asked.
    let mut w = WorkerProc::spawn_on(
        &s.queue(),
        &["--exit-when-idle", "1s", "--capacity-type", "SPOT", "--instance-type", "m7i.2xlarge"],
        &[("AWS_EC2_METADATA_DISABLED", "true")],
    );
    assert!(w.wait_exit(LONG).success(), "{}", w.log.join("\n"));
    // Every done record carries its usage.
    let done_dir = s.path("output/_hourglass/done");
    let mut records = 0;
    for entry in std::fs::read_dir(&done_dir).unwrap() {
        let record: serde_json::Value = serde_json::from_slice(&std::fs::read(entry.unwrap().path()).unwrap()).unwrap();
        let usage = &record["usage"];
        assert_eq!(
            (usage["capacity_type"].as_str(), usage["instance_type"].as_str()),
            (Some("spot"), Some("m7i.2xlarge"))
        );
        assert!(usage["pod_seconds"].as_f64().unwrap() > 0.0, "{record}");
        records += 1;
    }
    assert!(records >= 2, "{records} done records");
    // status: node-seconds = pod-seconds ÷ pods per node, priced by the
    // most specific entry; read from the finished bucket's summary.
    let st = status_json_of(&s.output(), &["--pods-per-node", "8", "--node-prices", "spot=1,m7i.2xlarge/spot=0.16"]);
    let pod_seconds = st["usage"]["m7i.2xlarge/spot"].as_f64().unwrap();
    let cost = &st["cost"];
    assert!(pod_seconds > 0.0 && (cost["pod_seconds"].as_f64().unwrap() - pod_seconds).abs() < 1e-9, "{st}");
    let node_seconds = cost["node_seconds"].as_f64().unwrap();
    assert!((node_seconds - pod_seconds / 8.0).abs() < 1e-9, "{cost}");
    assert_eq!(cost["spot_share"], 1.0);
    assert!((cost["dollars"].as_f64().unwrap() - node_seconds / 3600.0 * 0.16).abs() < 1e-12, "{cost}");
    let text = hourglass_ok(&["status", &s.output(), "--node-prices", "spot=0.16"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("cost ") && text.contains("100% spot") && text.contains('$'), "{text}");
}

#[test]
fn csv_job_scores_every_row_exactly_once() {
    scored_job("csv", "4MiB");
}

#[test]
fn parquet_job_scores_every_row_exactly_once() {
    scored_job("parquet", "1MiB");
}

#[test]
fn sigkill_mid_shard_loses_and_duplicates_nothing() {
    let s = Scratch::new();
    gen_data(&s, 30_000, 2, "csv");
    assert!(submit(&s, &["--shard-size", "2MiB"]).status.success());
    // Slow batches, so the worker is reliably inside a shard when killed.
    let mut doomed =
        WorkerProc::spawn(&s, &["--visibility-timeout", "5s", "--batch-size", "1000", "--fault-batch-delay", "200ms"]);
    let started = doomed.wait_for_line("shard started", LONG);
    let shard: String = serde_json::from_str::<serde_json::Value>(&started).unwrap()["span"]["shard"]
        .as_str()
        .expect("shard in the span")
        .to_string();
    doomed.child.kill().unwrap();
    doomed.child.wait().unwrap();
    assert!(
        !s.path(&format!("output/_hourglass/done/{shard}.json")).exists(),
        "the killed worker had finished its shard; the test did not kill it mid-shard"
    );
    // The shard it was scoring and the one it had leased ahead (--prefetch-shards 1).
    assert_eq!(block_on(queue_of(&s).depth()).unwrap().in_flight, 2, "the killed worker's leases are still held");
    let mut rescuer = WorkerProc::spawn(&s, &["--exit-when-idle", "1s"]);
    assert!(rescuer.wait_exit(LONG).success(), "{}", rescuer.log.join("\n"));
    assert!(s.path("output/_SUCCESS").is_file());
    let done: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.path(&format!("output/_hourglass/done/{shard}.json"))).unwrap())
            .unwrap();
    assert_eq!(done["attempt"], 2, "the killed shard was redelivered: {done}");
    let expected: HashMap<String, f32> =
        read_csv_inputs(&s.path("input")).into_iter().map(|(id, _)| (id, 0.0)).collect();
    assert_exactly_once(&read_outputs(&s.path("output")), &expected, false);
}

#[test]
fn poison_shard_is_dead_lettered_and_reported() {
    let s = Scratch::new();
    write_csv(&s.path("input/a.csv"), 0, 500, None);
    // Line 1 is the header: row id 650 of a file starting at id 500 is on line 152,
    // past the rows the planner samples, so only the worker can find it.
    write_csv(&s.path("input/b.csv"), 500, 1000, Some(650));
    let out = submit(&s, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut w = WorkerProc::spawn(&s, &["--exit-when-idle", "1s", "--max-attempts", "2"]);
    assert!(w.wait_exit(LONG).success(), "{}", w.log.join("\n"));
    let dead = block_on(queue_of(&s).dead_letters()).unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].receive_count, 2);
    let want = "b.csv line 152, column 6 (\"I5\"): cannot parse \"abc\" as a number";
    assert!(dead[0].reason.contains(want), "{}", dead[0].reason);
    let st = status_json(&s);
    assert_eq!(st["state"], "failed", "{st}");
    assert_eq!(st["shards_failed"], 1);
    assert_eq!(st["failures"][0]["attempts"], 2);
    assert!(st["failures"][0]["message"].as_str().unwrap().contains(want), "{st}");
    assert!(!s.path("output/_SUCCESS").exists());
    let text = hourglass(&["status", &s.output()]);
    assert_eq!(text.status.code(), Some(3), "a failed job's status exits 3");
    assert!(String::from_utf8_lossy(&text.stdout).contains(want));

    // A resubmit with nothing changed retries only the failed shard (it
    // fails again the same way, as its input is still bad).
    let again = submit(&s, &["--json"]);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    let report: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!((report["resumed"].as_bool(), report["enqueued"].as_u64()), (Some(true), Some(1)), "{report}");
    assert_eq!(status_json(&s)["shards_failed"], 0, "a resubmitted shard is no longer failed");
    let mut w = WorkerProc::spawn(&s, &["--exit-when-idle", "1s", "--max-attempts", "1"]);
    assert!(w.wait_exit(LONG).success(), "{}", w.log.join("\n"));
    assert_eq!(status_json(&s)["state"], "failed");

    // Fixing the row in place (same size) rewrites the file: the planned
    // byte ranges may no longer hold, so the job cannot resume...
    let fixed = std::fs::read_to_string(s.path("input/b.csv")).unwrap().replacen(",abc", ",123", 1);
    std::fs::write(s.path("input/b.csv"), fixed).unwrap();
    let refused = submit(&s, &[]);
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("cannot resume: input") && err.contains("b.csv was rewritten"), "{err}");
    // ...and --replace plans it again from the fixed files.
    let replaced = submit(&s, &["--replace", "--json"]);
    assert!(replaced.status.success(), "{}", String::from_utf8_lossy(&replaced.stderr));
    let report: serde_json::Value = serde_json::from_slice(&replaced.stdout).unwrap();
    assert_eq!(report["resumed"], false, "{report}");
    assert!(report["replaced_objects"].as_u64().unwrap() >= 3, "{report}");
    let mut w = WorkerProc::spawn(&s, &["--exit-when-idle", "1s"]);
    assert!(w.wait_exit(LONG).success(), "{}", w.log.join("\n"));
    assert_eq!(status_json(&s)["state"], "succeeded");
    hourglass_ok(&["verify", &s.output()]);

    // A grown input cannot resume either.
    write_csv(&s.path("input/a.csv"), 0, 600, None);
    let refused = submit(&s, &[]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("cannot resume: input"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

#[test]
fn bad_rows_within_the_limit_are_skipped_and_recorded() {
    let s = Scratch::new();
    write_csv(&s.path("input/b.csv"), 0, 400, Some(300));
    assert!(submit(&s, &["--max-bad-rows", "3"]).status.success());
    let mut w = WorkerProc::spawn(&s, &["--exit-when-idle", "1s"]);
    assert!(w.wait_exit(LONG).success(), "{}", w.log.join("\n"));
    assert!(s.path("output/_SUCCESS").is_file());
    let bad = std::fs::read_to_string(s.path("output/_hourglass/bad/000000.csv")).unwrap();
    assert!(bad.starts_with("line,column,reason,row\n302,"), "{bad}");
    assert!(bad.contains("cannot parse"), "{bad}");
    let outputs = read_outputs(&s.path("output"));
    assert_eq!(outputs.len(), 399);
    assert!(!outputs.contains_key("300"));
    let st = status_json(&s);
    assert_eq!(st["bad_rows"], 1);
    hourglass_ok(&["verify", &s.output()]);
}

fn assert_rejected(s: &Scratch, out: &std::process::Output, needles: &[&str]) {
    assert!(!out.status.success(), "submit should fail");
    let err = String::from_utf8_lossy(&out.stderr);
    for n in needles {
        assert!(err.contains(n), "error should mention {n:?}: {err}");
    }
    if s.path("queue.db").exists() {
        let d = block_on(queue_of(s).depth()).unwrap();
        assert_eq!((d.visible, d.in_flight), (0, 0), "nothing may be enqueued");
    }
}

/// One number grammar for the planner and the worker: a value padded with a
/// no-break space (U+00A0) is refused by both, and both show it.
#[test]
fn a_number_padded_with_a_no_break_space_is_refused_by_the_planner_and_the_worker_alike() {
    let padded = |path: &std::path::Path, from: u64, to: u64, bad: u64| {
        write_csv(path, from, to, Some(bad));
        let text = std::fs::read_to_string(path).unwrap().replace(",abc", ",7\u{a0}");
        std::fs::write(path, text).unwrap();
    };
    let shown = "cannot parse \"7\\u{a0}\" as a number (it holds U+00A0, a no-break space";
    // In the rows the planner samples: refused at submit.
    let s = Scratch::new();
    padded(&s.path("input/a.csv"), 0, 10, 3);
    assert_rejected(&s, &submit(&s, &[]), &["a.csv", "line 5, column 6 (\"I5\")", shown]);
    // Past them: the worker refuses the row with the same words.
    let s = Scratch::new();
    padded(&s.path("input/b.csv"), 0, 400, 300);
    let out = submit(&s, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut w = WorkerProc::spawn(&s, &["--exit-when-idle", "1s", "--max-attempts", "1"]);
    assert!(w.wait_exit(LONG).success(), "{}", w.log.join("\n"));
    let dead = block_on(queue_of(&s).dead_letters()).unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].reason.contains("b.csv line 302, column 6 (\"I5\")"), "{}", dead[0].reason);
    assert!(dead[0].reason.contains(shown), "{}", dead[0].reason);
}

#[test]
fn schema_mismatches_are_rejected_before_anything_is_enqueued() {
    // A missing column, named.
    let s = Scratch::new();
    write_csv(&s.path("input/a.csv"), 0, 10, None);
    let text = std::fs::read_to_string(s.path("input/a.csv")).unwrap().replacen(",C26", ",X26", 1);
    std::fs::write(s.path("input/b.csv"), text).unwrap();
    assert_rejected(&s, &submit(&s, &[]), &["b.csv", "missing column \"C26\""]);

    // A non-numeric value where the model wants a number, with line and column.
    let s = Scratch::new();
    write_csv(&s.path("input/a.csv"), 0, 10, Some(3));
    assert_rejected(&s, &submit(&s, &[]), &["a.csv", "line 5, column 6 (\"I5\")", "cannot parse \"abc\" as a number"]);

    // Parquet with a string feature column.
    let s = Scratch::new();
    gen_data(&s, 100, 1, "parquet");
    let path = s.path("input/part-00000.parquet");
    rewrite_parquet_with_string_column(&path, "C3");
    assert_rejected(&s, &submit(&s, &[]), &["part-00000.parquet", "column \"C3\" has type Utf8"]);

    // A missing id column.
    let s = Scratch::new();
    write_csv(&s.path("input/a.csv"), 0, 10, None);
    assert_rejected(&s, &submit(&s, &["--id-column", "row_id"]), &["id column \"row_id\" is missing"]);
}

fn rewrite_parquet_with_string_column(path: &std::path::Path, column: &str) {
    rewrite_parquet(path, Some(column), parquet::basic::Compression::SNAPPY);
}

/// Rewrites a Parquet file with another compression, optionally turning one
/// column into strings.
fn rewrite_parquet(path: &std::path::Path, string_column: Option<&str>, compression: parquet::basic::Compression) {
    use arrow_array::{ArrayRef, RecordBatch, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    use std::sync::Arc;
    let file = std::fs::File::open(path).unwrap();
    let batches: Vec<RecordBatch> = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap())
        .collect();
    let schema = batches[0].schema();
    let is_target = |name: &str| string_column == Some(name);
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| if is_target(f.name()) { Field::new(f.name(), DataType::Utf8, false) } else { f.as_ref().clone() })
        .collect();
    let new_schema = Arc::new(Schema::new(fields));
    let props = parquet::file::properties::WriterProperties::builder().set_compression(compression).build();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path).unwrap(), new_schema.clone(), Some(props))
            .unwrap();
    for b in batches {
        let cols: Vec<ArrayRef> = b
            .columns()
            .iter()
            .zip(schema.fields())
            .map(|(c, f)| {
                if is_target(f.name()) {
                    Arc::new(StringArray::from(vec!["x"; c.len()])) as ArrayRef
                } else {
                    c.clone()
                }
            })
            .collect();
        writer.write(&RecordBatch::try_new(new_schema.clone(), cols).unwrap()).unwrap();
    }
    writer.close().unwrap();
}

#[test]
fn parquet_inputs_in_every_common_codec_are_scored() {
    use parquet::basic::{Compression, GzipLevel, ZstdLevel};
    let s = Scratch::new();
    gen_data(&s, 4_000, 4, "parquet");
    let codecs = [
        Compression::ZSTD(ZstdLevel::default()),
        Compression::GZIP(GzipLevel::default()),
        Compression::LZ4_RAW,
        Compression::UNCOMPRESSED,
    ];
    for (i, codec) in codecs.into_iter().enumerate() {
        rewrite_parquet(&s.path(&format!("input/part-{i:05}.parquet")), None, codec);
    }
    assert!(submit(&s, &[]).status.success());
    let mut w = WorkerProc::spawn(&s, &["--exit-when-idle", "1s"]);
    assert!(w.wait_exit(LONG).success(), "{}", w.log.join("\n"));
    let expected = direct_scores(&read_parquet_inputs(&s.path("input")));
    assert_exactly_once(&read_outputs(&s.path("output")), &expected, true);
}

#[test]
fn corrupt_or_missing_model_fails_fast() {
    let s = Scratch::new();
    write_csv(&s.path("input/a.csv"), 0, 10, None);
    std::fs::write(s.path("bad.onnx"), b"this is not a model").unwrap();
    let (input, output, queue, bad) = (s.input(), s.output(), s.queue(), s.s("bad.onnx"));
    let out = hourglass(&["submit", "--input", &input, "--model", &bad, "--output", &output, "--queue", &queue]);
    assert_rejected(&s, &out, &["bad.onnx", "not a loadable ONNX model"]);
    let missing = s.s("nope.onnx");
    let out = hourglass(&["submit", "--input", &input, "--model", &missing, "--output", &output, "--queue", &queue]);
    assert_rejected(&s, &out, &["nope.onnx", "cannot read"]);
    // A worker told to preload a bad model exits non-zero before taking work.
    let mut w = WorkerProc::spawn(&s, &["--model", &bad]);
    let status = w.wait_exit(LONG);
    assert!(!status.success());
    assert!(w.log.join("\n").contains("not a loadable ONNX model"), "{}", w.log.join("\n"));
}

#[test]
fn sigterm_finishes_the_held_shard_and_exits_zero() {
    let s = Scratch::new();
    write_csv(&s.path("input/a.csv"), 0, 5_000, None);
    assert!(submit(&s, &[]).status.success());
    let mut w = WorkerProc::spawn(&s, &["--batch-size", "500", "--fault-batch-delay", "100ms"]);
    w.wait_for_line("shard started", LONG);
    w.signal("TERM");
    assert!(w.wait_exit(LONG).success(), "{}", w.log.join("\n"));
    assert!(w.log.iter().any(|l| l.contains("shard done")), "{}", w.log.join("\n"));
    assert!(s.path("output/_SUCCESS").is_file());
    let expected: HashMap<String, f32> = (0..5_000).map(|i| (i.to_string(), 0.0)).collect();
    assert_exactly_once(&read_outputs(&s.path("output")), &expected, false);
}

#[test]
fn sigterm_past_the_drain_timeout_releases_the_shard() {
    let s = Scratch::new();
    write_csv(&s.path("input/a.csv"), 0, 5_000, None);
    assert!(submit(&s, &[]).status.success());
    let mut w =
        WorkerProc::spawn(&s, &["--batch-size", "100", "--fault-batch-delay", "200ms", "--drain-timeout", "500ms"]);
    w.wait_for_line("shard started", LONG);
    w.signal("TERM");
    assert!(w.wait_exit(LONG).success(), "{}", w.log.join("\n"));
    assert!(w.log.iter().any(|l| l.contains("shard released")), "{}", w.log.join("\n"));
    assert!(!s.path("output/_SUCCESS").exists());
    // Released means visible again at once, not after the lease.
    assert_eq!(block_on(queue_of(&s).depth()).unwrap().visible, 1);
    let mut next = WorkerProc::spawn(&s, &["--exit-when-idle", "1s"]);
    assert!(next.wait_exit(LONG).success(), "{}", next.log.join("\n"));
    assert!(s.path("output/_SUCCESS").is_file());
    let expected: HashMap<String, f32> = (0..5_000).map(|i| (i.to_string(), 0.0)).collect();
    assert_exactly_once(&read_outputs(&s.path("output")), &expected, false);
}

#[test]
fn a_missing_onnx_runtime_is_a_clear_error_not_a_panic() {
    let s = Scratch::new();
    let not_a_library = format!("{}/README.md", env!("CARGO_MANIFEST_DIR"));
    for (path, want) in [
        ("/nonexistent/libonnxruntime.so.1.31.1", "does not name a file"),
        (not_a_library.as_str(), "failed to load ONNX Runtime"),
    ] {
        let out = std::process::Command::new(BIN)
            .args(["worker", "--queue", &s.queue()])
            .env("ORT_DYLIB_PATH", path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(want) && !err.contains("panicked"), "{err}");
    }
}

#[test]
fn nightly_submit_expands_the_run_date_and_resumes_on_retry() {
    let s = Scratch::new();
    let night = s.s("input/2026-11-21/");
    hourglass_ok(&["gen-data", "--output", &night, "--rows", "3000", "--files", "1", "--format", "csv"]);
    let input = s.s("input/{date}/");
    let output = s.s("output/dt={date:%Y%m%d}/");
    let queue = s.queue();
    let nightly = |date: &str| {
        let when = ["--job-id", "ctr-{date}", "--date", date, "--deadline", "06:00", "--tz", "Europe/Berlin", "--json"];
        submit_to(&input, &output, &queue, &when)
    };
    let first = nightly("2026-11-21");
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let report: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(report["job"], "ctr-2026-11-21", "{report}");
    assert_eq!(report["resumed"], false, "{report}");
    assert!(report["output"].as_str().unwrap().ends_with("output/dt=20261121/"), "{report}");
    let job: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.path("output/dt=20261121/_hourglass/job.json")).unwrap()).unwrap();
    // The next 06:00 in Berlin is 05:00 or 04:00 UTC, at most a day ahead.
    let deadline_ms = job["spec"]["deadline_unix_ms"].as_u64().expect("deadline recorded");
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    assert!(deadline_ms > now_ms && deadline_ms <= now_ms + 86_400_000, "{job}");
    assert!(matches!((deadline_ms / 1000) % 86_400, 14_400 | 18_000), "06:00 Berlin is 04:00 or 05:00 UTC: {job}");

    // The CronJob retried: the same night resolves to the same job, resumed.
    let mut w = WorkerProc::spawn(&s, &["--exit-when-idle", "1s"]);
    assert!(w.wait_exit(Duration::from_secs(120)).success(), "{}", w.log.join("\n"));
    let again = nightly("2026-11-21");
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    let report: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!((report["job"].as_str(), report["resumed"].as_bool()), (Some("ctr-2026-11-21"), Some(true)));
    assert_eq!(report["enqueued"], 0, "{report}");

    // Another night with no files yet is a clear error naming the expanded path.
    let missing = nightly("2026-11-22");
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("2026-11-22"), "{err}");
    let typo = submit_to(&s.s("input/{day}/"), &output, &queue, &[]);
    let err = String::from_utf8_lossy(&typo.stderr);
    assert!(!typo.status.success() && err.contains("--input") && err.contains("{day}"), "{err}");
}

#[test]
fn status_watch_follows_a_job_to_the_end() {
    let s = Scratch::new();
    gen_data(&s, 4000, 2, "csv");
    assert!(submit(&s, &["--shard-size", "64KiB", "--deadline", "+1h"]).status.success());
    let mut w =
        WorkerProc::spawn(&s, &["--exit-when-idle", "1s", "--batch-size", "500", "--fault-batch-delay", "20ms"]);
    // Not a terminal: a progress line per refresh, then the summary.
    let plain = hourglass_ok(&["status", &s.output(), "--watch", "--interval", "200ms"]);
    let err = String::from_utf8_lossy(&plain.stderr);
    assert!(err.lines().last().unwrap_or_default().contains("100%"), "{err}");
    let summary = String::from_utf8_lossy(&plain.stdout);
    assert!(summary.contains("state    Succeeded") && summary.contains("slack"), "{summary}");
    assert!(w.wait_exit(LONG).success(), "{}", w.log.join("\n"));
    // On a terminal (a pty from script(1)): the live view with its shard map.
    let cmd = format!("{BIN} status {} --watch --interval 200ms", s.output());
    let tty = std::process::Command::new("script").args(["-qec", &cmd, "/dev/null"]).output().unwrap();
    let view = String::from_utf8_lossy(&tty.stdout);
    assert!(tty.status.success(), "{view}");
    assert!(view.contains("shards   # done  ! failed  . pending"), "{view}");
    let shards = status_json(&s)["shards_total"].as_u64().unwrap() as usize;
    assert!(view.contains(&format!("         {}\r\n", "#".repeat(shards))), "{view}");
}
