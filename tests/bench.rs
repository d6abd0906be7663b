//! `hourglass bench` runs every stage on real files and checks the
//! pipeline's outputs (every input row exactly once) before it reports.
//! Numbers are not asserted: performance is read from the report, never
//! tested with timings.

mod common;

use common::{Scratch, hourglass_ok, model_path};

#[test]
fn bench_reports_every_stage_for_both_formats() {
    let s = Scratch::new();
    let model = model_path();
    for format in ["csv", "parquet"] {
        let dir = s.s(&format!("bench-{format}"));
        let out = hourglass_ok(&[
            "bench",
            "--model",
            model.to_str().unwrap(),
            "--rows",
            "20000",
            "--files",
            "2",
            "--format",
            format,
            "--reps",
            "1",
            "--threads",
            "2",
            "--raw-rows",
            "8192",
            "--dir",
            &dir,
            "--json",
        ]);
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["rows"], 20000);
        assert_eq!(r["format"], format);
        for stage in ["raw", "raw_sessions", "raw_intra", "decode", "pipeline"] {
            let rate = r[stage]["rows_per_sec"].as_f64().unwrap();
            assert!(rate.is_finite() && rate > 0.0, "{stage}: {r}");
            assert_eq!(r[stage]["rounds"].as_array().unwrap().len(), 1, "{stage}");
        }
        let ratio = r["pipeline_over_raw"].as_f64().unwrap();
        let expected = r["pipeline"]["rows_per_sec"].as_f64().unwrap() / r["raw"]["rows_per_sec"].as_f64().unwrap();
        assert!((ratio - expected).abs() < 1e-9, "{r}");
        assert!(r["pipeline_peak_rss_mib"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["nodes_for_1e9_rows_in_1h"].as_u64().unwrap() >= 1, "{r}");
        // Inputs are kept for the next run; the scratch of the rounds is not.
        assert!(!std::path::Path::new(&dir).join("run").exists());
    }
}

#[test]
fn bench_measures_both_reference_models_on_both_formats_in_one_run() {
    let s = Scratch::new();
    let dir = s.s("bench-all");
    let out = hourglass_ok(&[
        "bench",
        "--all-models",
        "--format",
        "parquet",
        "--format",
        "csv",
        "--rows",
        "8000",
        "--files",
        "1",
        "--reps",
        "1",
        "--raw-rows",
        "8192",
        "--dir",
        &dir,
        "--json",
    ]);
    let all: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let runs: Vec<(String, String)> = all
        .iter()
        .map(|r| (r["model"].as_str().unwrap().to_string(), r["format"].as_str().unwrap().to_string()))
        .collect();
    let want = [
        ("models/ctr_gbdt.onnx", "parquet"),
        ("models/ctr_gbdt.onnx", "csv"),
        ("models/ctr_mlp.onnx", "parquet"),
        ("models/ctr_mlp.onnx", "csv"),
    ];
    assert_eq!(runs, want.map(|(m, f)| (m.to_string(), f.to_string())));
    for r in &all {
        assert!(r["pipeline_over_raw"].as_f64().unwrap() > 0.0, "{r}");
    }
}

/// `bench ledger` on the filesystem: a 2,500-shard job recorded 32 at a
/// time as workers do costs 5 store requests per shard and a few per
/// bucket (outputs and inputs aside), counted as S3 bills them: the job
/// record's HEAD, the done check before writing, the done record, one
/// bucket listing and one read into a bucket summary. A full listing per shard would add 3 pages each here,
/// 100 at 100k shards. `status` of the finished job reads the buckets'
/// summaries, not every done record.
#[test]
fn bench_ledger_counts_requests_per_shard() {
    let dir = tempfile::tempdir().unwrap();
    let out = hourglass_ok(&["bench", "ledger", "--shards", "2500", "--store", dir.path().to_str().unwrap(), "--json"]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let run = &r["runs"][0];
    assert_eq!(run["shards"], 2500, "{r}");
    let per_shard = run["requests_per_shard"].as_f64().unwrap();
    assert!((5.0..=5.02).contains(&per_shard), "{per_shard} requests per shard: {r}");
    // Finished: the job record, listings and three summaries, not 2,500 GETs.
    assert!(run["status_done_requests"].as_u64().unwrap() < 20, "{r}");
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "the bench's ledgers are removed");
}
