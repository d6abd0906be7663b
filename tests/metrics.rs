//! Metrics as operators see them: a real Prometheus (Debian's 2.42, from
//! `scripts/tools`) scrapes a worker during an end-to-end job and its query
//! API returns the rows counter; every `hourglass_worker_*` and
//! `hourglass_watch_*` metric the Grafana dashboard and the alert rules
//! query is exported by the binaries (the scaler's are checked in
//! `scaler_kube.rs`, where a real API server runs).

// Tests wait for processes by polling from plain threads.
#![allow(clippy::disallowed_methods)]

mod common;

use common::prometheus::Prometheus;
use common::*;
use hourglass_core::queue;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(180);

#[test]
fn dashboards_and_alerts_query_only_hourglass_metrics_that_exist() {
    let used = metrics_used_by_dashboards_and_alerts();
    assert!(used.len() >= 15, "{used:?}");
    let unknown: Vec<_> = used
        .iter()
        .filter(|n| {
            ![
                "hourglass_worker_",
                "hourglass_scaler_",
                // The scaler, per job it follows: node-seconds and cost.
                "hourglass_job_",
                "hourglass_watch_",
                "hourglass_build_info",
                "hourglass_model_info",
                "hourglass_ep_fallback_total",
                "hourglass_device_info",
            ]
            .iter()
            .any(|p| n.starts_with(p))
        })
        .collect();
    assert!(unknown.is_empty(), "metrics no binary exports: {unknown:?}");
}

#[test]
fn prometheus_scrapes_a_worker_during_a_job() {
    let s = Scratch::new();
    write_csv(&s.path("input/a.csv"), 0, 3000, None);
    // b.csv fails for good (a non-number, no bad rows allowed): errors by kind.
    write_csv(&s.path("input/b.csv"), 3000, 3500, Some(3300));
    // The worker waits on an empty queue while Prometheus starts scraping it,
    // so the job runs under scrapes (slowed a little to span several).
    let mut worker = WorkerProc::spawn(
        &s,
        &["--metrics-addr", "127.0.0.1:0", "--max-attempts", "1", "--batch-size", "250", "--fault-batch-delay", "50ms"],
    );
    let addr = metrics_addr(&mut worker);
    let prometheus = Prometheus::start(&[&addr], &[]);
    prometheus.wait_until("the worker scraped", || {
        let up = prometheus.query("up");
        up.iter().any(|(_, v)| *v == 1.0).then_some(())
    });
    let idle = prometheus.query("hourglass_worker_shards_in_flight");
    assert_eq!(idle.first().map(|(_, v)| *v), Some(0.0), "{idle:?}");
    let out = submit(&s, &["--shard-size", "64KiB"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // The whole job, scraped: exactly the good rows, by job label.
    let samples = prometheus.wait_until("all 3000 rows", || {
        let s = prometheus.query("hourglass_worker_rows_total");
        (s.iter().map(|(_, v)| v).sum::<f64>() == 3000.0).then_some(s)
    });
    assert!(
        samples.iter().all(|(m, _)| m["hourglass_job"].as_str().is_some_and(|j| j.starts_with("j-"))),
        "{samples:?}"
    );
    let failed = prometheus.wait_until("the failed shard", || {
        let s = prometheus.query("hourglass_worker_shards_total");
        s.iter().find(|(m, _)| m["outcome"] == "failed").map(|(_, v)| *v)
    });
    assert_eq!(failed, 1.0);
    let errors = prometheus.query("hourglass_worker_errors_total");
    assert!(errors.iter().any(|(m, v)| m["kind"] == "bad_row" && *v >= 1.0), "{errors:?}");
    let p99 =
        prometheus.query("histogram_quantile(0.99,sum(rate(hourglass_worker_inference_seconds_bucket[1m]))by(le))");
    assert!(p99.first().is_some_and(|(_, v)| *v > 0.0), "{p99:?}");

    let text = scrape(&addr);
    assert_exports("the worker", "hourglass_worker_", &text);
    // The GPU fallback alert's device series, on the CPU too; its fallback
    // counter has a series once a fallback happened (tests/gpu.rs).
    assert_exports("the worker", "hourglass_device_info", &text);
    assert!(text.contains(r#"hourglass_device_info{requested="cpu",device="cpu"} 1"#), "{text}");
}

#[test]
fn the_watcher_exports_its_event_counts() {
    let s = Scratch::new();
    let events_url = format!("local://{}", s.s("events.db"));
    let rules = s.path("rules.yaml");
    let model = model_path();
    std::fs::write(
        &rules,
        format!(
            "rules:\n  - name: files\n    prefix: drops/\n    suffix: .csv\n    model: {}\n    output: {}\n",
            model.display(),
            s.s("out/{stem}/")
        ),
    )
    .unwrap();
    let queue = s.queue();
    let mut watch = WorkerProc::spawn_command(
        &[
            "watch",
            "--events-queue",
            &events_url,
            "--rules",
            rules.to_str().unwrap(),
            "--queue",
            &queue,
            "--metrics-addr",
            "127.0.0.1:0",
            "--poll-wait",
            "1s",
        ],
        &[],
    );
    let addr = metrics_addr(&mut watch);
    let events = queue::open(&events_url).unwrap();
    let test = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-11-22T00:00:00Z","Bucket":"feat"}"#;
    let other = r#"{"Records":[{"eventName":"ObjectCreated:Put","eventTime":"2026-11-22T00:00:00Z","s3":{"bucket":{"name":"feat"},"object":{"key":"elsewhere/x.csv","eTag":"1"}}}]}"#;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(events.send_batch(&[test.to_string(), other.to_string()]))
        .unwrap();
    watch.wait_for_line("S3 test event", LONG);
    let deadline = Instant::now() + LONG;
    let text = loop {
        let text = scrape(&addr);
        if text.contains(r#"outcome="unmatched""#) {
            break text;
        }
        assert!(Instant::now() < deadline, "no unmatched event counted:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(text.contains(r#"hourglass_watch_events_total{rule="",outcome="test"} 1"#), "{text}");
    assert_exports("the watcher", "hourglass_watch_", &text);
}

/// Polls `path` on `addr` until its status is `want`, at most a minute.
fn probe_until(addr: &str, path: &str, want: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = http_get(addr, path).unwrap();
        if status == want {
            return body;
        }
        assert!(Instant::now() < deadline, "{path} stayed {status} ({body}), wanted {want}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn worker_probes_report_the_model_the_queue_and_progress() {
    // Ready once the preloaded model is loaded and the queue answers; live.
    let s = Scratch::new();
    let model = model_path();
    let mut worker = WorkerProc::spawn(&s, &["--metrics-addr", "127.0.0.1:0", "--model", model.to_str().unwrap()]);
    let addr = metrics_addr(&mut worker);
    assert_eq!(probe_until(&addr, "/readyz", 200), "ok\n");
    assert_eq!(http_get(&addr, "/healthz").unwrap().0, 200);
    // A queue that cannot be reached: not ready (naming why), still live.
    let mut cut_off = WorkerProc::spawn_on(
        "http://127.0.0.1:9/000000000000/nowhere",
        &["--metrics-addr", "127.0.0.1:0", "--poll-wait", "1s"],
        &[],
    );
    let addr = metrics_addr(&mut cut_off);
    let why = probe_until(&addr, "/readyz", 503);
    assert!(why.contains("queue is unreachable"), "{why}");
    assert_eq!(http_get(&addr, "/healthz").unwrap().0, 200);
}
