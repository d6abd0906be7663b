//! An upgrade in the middle of a run loses nothing: this release's worker
//! serves one job whose `job.json`, records and queue messages were
//! written by a later release (extra optional fields, a newer `v`), and
//! refuses, by dead-letter with both versions named, only the message
//! whose writer set a `min_reader_v` past this release's. Every shard is
//! scored once and `verify` is clean.

mod common;

use common::*;
use hourglass_core::queue::{LocalQueue, Queue};
use serde_json::Value;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(180);

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

/// What a later release adds: fields this one does not know.
fn later(mut v: Value) -> Value {
    v["tenant"] = "ads".into();
    v["engine"] = "native-trees".into();
    v["drift"] = serde_json::json!({"psi": 0.02, "window": "1d"});
    v
}

#[test]
fn records_and_tasks_of_a_later_release_are_read_and_only_a_newer_reader_minimum_is_refused() {
    let s = Scratch::new();
    write_csv(&s.path("input/a.csv"), 0, 300, None);
    write_csv(&s.path("input/b.csv"), 300, 600, None);
    assert!(submit(&s, &[]).status.success());
    // The later release's job.json.
    let job_path = s.path("output/_hourglass/job.json");
    let job: Value = serde_json::from_slice(&std::fs::read(&job_path).unwrap()).unwrap();
    std::fs::write(&job_path, serde_json::to_vec_pretty(&later(job)).unwrap()).unwrap();
    // Its messages: the same tasks with its fields and version; one of them
    // says older readers must not take it.
    let q = LocalQueue::open(s.path("queue.db"), None).unwrap();
    let got = block_on(q.receive(10, Duration::from_secs(1), Duration::from_secs(600))).unwrap();
    assert_eq!(got.len(), 2);
    let mut bodies = Vec::new();
    let mut refused_shard = String::new();
    for (i, m) in got.iter().enumerate() {
        let mut task = later(serde_json::from_str(&m.body).unwrap());
        task["v"] = 3.into();
        if i == 1 {
            task["min_reader_v"] = 3.into();
            refused_shard = task["shard"].as_str().unwrap().to_string();
        }
        bodies.push(task.to_string());
    }
    block_on(q.send_batch(&bodies)).unwrap();
    let receipts: Vec<_> = got.iter().map(|m| m.receipt.clone()).collect();
    block_on(q.ack_batch(&receipts)).unwrap();

    let mut w = WorkerProc::spawn(&s, &["--exit-when-idle", "1s"]);
    assert!(w.wait_exit(LONG).success(), "{}", w.log.join("\n"));
    let st = status_json_of(&s.output(), &["--queue", &s.queue()]);
    assert_eq!(st["shards_done"], 1, "{st}");
    let dead = st["dead_lettered"].as_array().unwrap();
    assert_eq!(dead.len(), 1, "{st}");
    assert_eq!(dead[0]["shard"], refused_shard.as_str());
    let reason = dead[0]["reason"].as_str().unwrap();
    assert!(reason.contains("for readers of version 3 or later; this release reads version 2"), "{reason}");

    // The later release's done record (and its summary fields) read back.
    let done_dir = s.path("output/_hourglass/done");
    for e in std::fs::read_dir(&done_dir).unwrap().flatten() {
        let record: Value = serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap();
        std::fs::write(e.path(), serde_json::to_vec_pretty(&later(record)).unwrap()).unwrap();
    }
    // The later release sends the refused shard again, now readable.
    let dl = block_on(q.dead_letters()).unwrap();
    let mut task: Value = serde_json::from_str(&dl[0].body).unwrap();
    task.as_object_mut().unwrap().remove("min_reader_v");
    block_on(q.send_batch(&[task.to_string()])).unwrap();
    let mut w = WorkerProc::spawn(&s, &["--exit-when-idle", "1s"]);
    assert!(w.wait_exit(LONG).success(), "{}", w.log.join("\n"));
    let st = status_json(&s);
    assert_eq!((st["state"].as_str(), st["shards_done"].as_u64()), (Some("succeeded"), Some(2)), "{st}");
    let outputs = read_outputs(&s.path("output"));
    assert_eq!(outputs.len(), 600);
    assert!(outputs.values().all(|(n, _)| *n == 1), "a row scored twice");
    hourglass_ok(&["verify", &s.output()]);

    // A record whose writer needs a newer reader is refused by name.
    let mut record: Value = serde_json::from_slice(&std::fs::read(&job_path).unwrap()).unwrap();
    record["min_reader_v"] = 7.into();
    std::fs::write(&job_path, serde_json::to_vec_pretty(&record).unwrap()).unwrap();
    let out = hourglass(&["status", &s.output()]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && text.contains("for readers of version 7 or later"), "{text}");
}
