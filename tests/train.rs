//! Training jobs end to end, on the local queue and filesystem store: real
//! worker processes, the reference LightGBM trainer in the project venv,
//! the registry, and a batch job scoring with the promoted model.

mod common;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use common::*;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// AUC a model trained on the synthetic labelled data must beat on rows it
/// never saw. The labels are a noisy logistic rule of six features; the
/// reference trainer reaches about 0.66-0.67 with 40k rows, chance is 0.5.
const MIN_HOLDOUT_AUC: f64 = 0.6;

fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn reference_trainer() -> String {
    format!("lightgbm={} {}", repo(".venv/bin/python").display(), repo("trainers/lightgbm_onnx.py").display())
}

fn test_trainer(name: &str, script: &str) -> String {
    format!("{name}={}", repo(&format!("tests/trainers/{script}")).display())
}

/// Labelled data: 40k training rows in 2 files, 10k holdout rows.
fn dataset(s: &Scratch) {
    gen_labelled(&s.s("data/train/"), "40000", "2", "1");
    gen_labelled(&s.s("data/holdout/"), "10000", "1", "2");
}

/// Writes a training spec (YAML) and returns its path.
fn spec(s: &Scratch, file: &str, output: &str, trainer: &str, params: &str, grid: &str, promote_if: &str) -> String {
    let text = format!(
        "name: ctr\nregistry: {}\ntrainer: {trainer}\noutput: {}\ndataset:\n  train: {}\n  holdout: {}\n  label: clicked\n  id_column: id\nparams: {params}\ngrid: {grid}\n{promote_if}",
        s.s("registry"),
        s.s(output),
        s.s("data/train/"),
        s.s("data/holdout/"),
    );
    std::fs::write(s.path(file), text).unwrap();
    s.s(file)
}

fn train_submit(s: &Scratch, spec: &str) -> serde_json::Value {
    let out = hourglass_ok(&["train", "submit", "--spec", spec, "--queue", &s.queue(), "--json"]);
    serde_json::from_slice(&out.stdout).unwrap()
}

fn trainer_worker(s: &Scratch, id: &str, trainers: &[String], extra: &[&str]) -> WorkerProc {
    let mut args: Vec<&str> = vec!["--exit-when-idle", "3s", "--worker-id", id];
    for t in trainers {
        args.extend(["--trainer", t.as_str()]);
    }
    args.extend(extra);
    WorkerProc::spawn_on(&s.queue(), &args, &[])
}

/// The registry's versions of `ctr` with their manifests.
fn versions(s: &Scratch) -> Vec<serde_json::Value> {
    let dir = s.path("registry/ctr");
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(&dir) else { return out };
    for e in entries {
        let manifest = e.unwrap().path().join("manifest.json");
        if manifest.exists() {
            out.push(serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap());
        }
    }
    out.sort_by_key(|m| m["version"].as_u64());
    out
}

fn champion(s: &Scratch) -> Option<u64> {
    let text = std::fs::read(s.path("registry/ctr/aliases.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
    v["aliases"]["champion"].as_u64()
}

/// Labels of the holdout rows by id.
fn holdout_labels(dir: &Path) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let bytes = bytes::Bytes::from(std::fs::read(e.unwrap().path()).unwrap());
        for batch in ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap().build().unwrap() {
            let batch = batch.unwrap();
            let ids = batch.column_by_name("id").unwrap().as_primitive::<Int64Type>();
            let y = batch.column_by_name("clicked").unwrap().as_primitive::<Int64Type>();
            for i in 0..batch.num_rows() {
                out.insert(ids.value(i).to_string(), y.value(i) as f64);
            }
        }
    }
    out
}

/// ROC AUC by ranks (no ties expected in float scores of 10k rows matter).
fn auc(pairs: &mut [(f64, f64)]) -> f64 {
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let pos = pairs.iter().filter(|p| p.1 == 1.0).count() as f64;
    let neg = pairs.len() as f64 - pos;
    let rank_sum: f64 = pairs.iter().enumerate().filter(|(_, p)| p.1 == 1.0).map(|(i, _)| i as f64 + 1.0).sum();
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

#[test]
fn a_sweep_registers_every_trial_promotes_the_best_and_a_batch_job_scores_with_it() {
    let s = Scratch::new();
    dataset(&s);
    let spec_path = spec(
        &s,
        "sweep.yaml",
        "runs/sweep/",
        "lightgbm",
        "{n_estimators: 40}",
        "{num_leaves: [7, 31], learning_rate: [0.05, 0.2]}",
        "promote_if: auc > champion\n",
    );
    let report = train_submit(&s, &spec_path);
    assert_eq!((report["trials"].as_u64(), report["enqueued"].as_u64()), (Some(4), Some(4)), "{report}");
    let trainers = [reference_trainer()];
    let mut w1 = trainer_worker(&s, "w1", &trainers, &[]);
    let mut w2 = trainer_worker(&s, "w2", &trainers, &[]);
    assert!(w1.wait_exit(Duration::from_secs(240)).success(), "{}", w1.log.join("\n"));
    assert!(w2.wait_exit(Duration::from_secs(60)).success(), "{}", w2.log.join("\n"));

    let st = status_json_of(&s.s("runs/sweep/"), &[]);
    assert_eq!(st["state"], "succeeded", "{st}");
    assert_eq!(st["kind"], "train");
    let trials = st["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 4);
    for t in trials {
        assert_eq!(t["state"], "done", "{t}");
        let a = t["metrics"]["auc"].as_f64().unwrap();
        assert!(a > MIN_HOLDOUT_AUC, "trial auc {a}: {t}");
        assert!(t["metrics"]["logloss"].as_f64().unwrap() > 0.0);
        assert!(t["metrics"]["max_prediction_diff"].as_f64().unwrap() <= 1e-5, "{t}");
        assert!(t["trainer_seconds"].as_f64().unwrap() > 0.0);
    }
    // Both workers trained: the sweep ran on the fleet, not one process.
    let workers: std::collections::BTreeSet<String> = std::fs::read_dir(s.path("runs/sweep/_hourglass/done"))
        .unwrap()
        .map(|e| {
            let r: serde_json::Value = serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap();
            r["worker"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(workers.len(), 2, "trials ran on {workers:?}");

    // Four versions, each with its lineage; the best one is the champion.
    let registered = versions(&s);
    assert_eq!(registered.len(), 4, "{registered:?}");
    let best = trials
        .iter()
        .max_by(|a, b| a["metrics"]["auc"].as_f64().unwrap().total_cmp(&b["metrics"]["auc"].as_f64().unwrap()))
        .unwrap();
    assert_eq!(champion(&s), best["version"].as_u64(), "{st}");
    assert_eq!(st["promotion"]["promoted"], true, "{st}");
    for m in &registered {
        let lineage = &m["lineage"];
        assert!(lineage["training_run"].as_str().unwrap().contains("/trial-000"), "{m}");
        assert_eq!(lineage["trainer"]["name"], "lightgbm");
        assert!(lineage["trainer"]["sha256"].as_object().unwrap().values().any(|v| v.as_str().unwrap().len() == 64));
        assert_eq!(lineage["dataset"].as_array().unwrap().len(), 3, "two training files and one holdout file");
        assert!(lineage["dataset"][0]["version"].is_string());
        assert!(lineage["params"]["num_leaves"].is_number());
        assert!(m["metrics"]["auc"].is_number());
    }

    // A batch job with @champion scores the held-out rows better than chance.
    let champion_ref = format!("{}/ctr@champion", s.s("registry"));
    let out = hourglass(&[
        "submit",
        "--input",
        &s.s("data/holdout/"),
        "--model",
        &champion_ref,
        "--output",
        &s.s("scored/"),
        "--queue",
        &s.queue(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut w = trainer_worker(&s, "scorer", &[], &[]);
    assert!(w.wait_exit(Duration::from_secs(120)).success());
    let labels = holdout_labels(&s.path("data/holdout"));
    let scores = read_outputs(&s.path("scored"));
    assert_eq!(scores.len(), labels.len());
    let mut pairs: Vec<(f64, f64)> = scores.iter().map(|(id, (_, p))| (*p as f64, labels[id])).collect();
    let batch_auc = auc(&mut pairs);
    assert!(batch_auc > MIN_HOLDOUT_AUC, "batch auc {batch_auc}");
    // The batch path and the worker's validation score the same rows the
    // same way.
    let recorded = best["metrics"]["auc"].as_f64().unwrap();
    assert!((batch_auc - recorded).abs() < 1e-3, "batch {batch_auc} vs recorded {recorded}");

    // A weaker sweep does not take the alias: `auc > champion` fails.
    let weak = spec(
        &s,
        "weak.yaml",
        "runs/weak/",
        "lightgbm",
        "{n_estimators: 2, num_leaves: 2}",
        "{}",
        "promote_if: auc > champion\n",
    );
    train_submit(&s, &weak);
    let mut w = trainer_worker(&s, "w3", &trainers, &[]);
    assert!(w.wait_exit(Duration::from_secs(120)).success(), "{}", w.log.join("\n"));
    let st = status_json_of(&s.s("runs/weak/"), &[]);
    assert_eq!(st["state"], "succeeded", "{st}");
    assert_eq!(st["promotion"]["promoted"], false, "{st}");
    assert!(st["promotion"]["reason"].as_str().unwrap().contains("is not > the champion's"), "{st}");
    assert_eq!(champion(&s), best["version"].as_u64(), "the champion stays");
    assert_eq!(versions(&s).len(), 5, "the weak model is registered, not promoted");
}

#[test]
fn a_worker_killed_mid_training_has_its_trial_rerun_elsewhere_and_registered_once() {
    let s = Scratch::new();
    dataset(&s);
    // Enough trees that the trial is still training when the worker dies.
    // A rule on a metric no trial records: nothing to rank, nothing moves,
    // and the job still completes.
    let rule = "promote_if: rmse < champion\n";
    let spec_path = spec(&s, "one.yaml", "runs/one/", "lightgbm", "{n_estimators: 400}", "{}", rule);
    train_submit(&s, &spec_path);
    let trainers = [reference_trainer()];
    let mut doomed = trainer_worker(&s, "doomed", &trainers, &["--visibility-timeout", "3s"]);
    doomed.wait_for_line("trainer progress", Duration::from_secs(120));
    doomed.signal("KILL");
    doomed.wait_exit(Duration::from_secs(10));
    let mut rescuer = trainer_worker(&s, "rescuer", &trainers, &[]);
    assert!(rescuer.wait_exit(Duration::from_secs(240)).success(), "{}", rescuer.log.join("\n"));

    let st = status_json_of(&s.s("runs/one/"), &[]);
    assert_eq!(st["state"], "succeeded", "{st}");
    assert_eq!(st["promotion"]["promoted"], false, "{st}");
    assert!(st["promotion"]["reason"].as_str().unwrap().contains("no trial recorded the metric \"rmse\""), "{st}");
    assert_eq!(champion(&s), None);
    let done: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.path("runs/one/_hourglass/done/trial-0000.json")).unwrap()).unwrap();
    assert_eq!(done["worker"], "rescuer", "{done}");
    assert!(done["attempt"].as_u64().unwrap() >= 2, "{done}");
    let versions = versions(&s);
    assert_eq!(versions.len(), 1, "registered exactly once: {versions:?}");
    assert_eq!(done["trial"]["version"], versions[0]["version"]);
    // No version was left half-made: every claimed model.onnx has a manifest.
    let claimed = std::fs::read_dir(s.path("registry/ctr")).unwrap().filter(|e| {
        let p = e.as_ref().unwrap().path();
        p.join("model.onnx").exists()
    });
    assert_eq!(claimed.count(), 1);
}

#[test]
fn failing_trainers_and_refused_models_are_recorded_with_their_reasons_and_never_registered() {
    let s = Scratch::new();
    dataset(&s);
    let cases = [
        ("exits", "exits_nonzero.sh", "trainer_failed", "exited with exit status: 3"),
        ("garbage", "writes_garbage_onnx.sh", "model_refused", "not a loadable ONNX model"),
        ("skewed", "skewed_predictions.sh", "model_refused", "holdout row 6"),
        ("stuck", "never_finishes.sh", "trainer_timeout", "ran past the job's max_train_time of 3s"),
    ];
    let mut trainers = Vec::new();
    for (name, script, _, _) in &cases {
        let path = spec(&s, &format!("{name}.yaml"), &format!("runs/{name}/"), name, "{n_estimators: 10}", "{}", "");
        // --max-train-time overrides the spec's (1h by default).
        let limit = if *name == "stuck" { "3s" } else { "10m" };
        hourglass_ok(&["train", "submit", "--spec", &path, "--queue", &s.queue(), "--max-train-time", limit]);
        trainers.push(test_trainer(name, script));
    }
    let mut w = trainer_worker(&s, "w", &trainers, &["--max-attempts", "1"]);
    assert!(w.wait_exit(Duration::from_secs(180)).success(), "{}", w.log.join("\n"));
    for (name, _, kind, reason) in cases {
        let st = status_json_of(&s.s(&format!("runs/{name}/")), &[]);
        assert_eq!(st["state"], "failed", "{name}: {st}");
        let f = &st["failures"][0];
        assert_eq!(f["error_kind"], kind, "{name}: {st}");
        assert!(f["message"].as_str().unwrap().contains(reason), "{name}: {f}");
        if name == "exits" {
            let log = std::fs::read_to_string(s.path("runs/exits/_hourglass/logs/trial-0000.log")).unwrap();
            assert!(log.contains("fatal: the learning rate"), "{log}");
            let tail = f["log_tail"].as_str().unwrap();
            assert!(tail.contains("fatal: the learning rate"), "{tail}");
            assert!(tail.contains("\"progress\": 0.1"), "{tail}");
        }
    }
    assert!(versions(&s).is_empty(), "a refused model is never registered");
    // `status` prints the failed trainer's last lines.
    let out = hourglass(&["status", &s.s("runs/exits/")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("failed   trial trial-0000") && text.contains("| fatal: the learning rate"), "{text}");
}

#[test]
fn a_spec_whose_dataset_lacks_a_column_is_refused_at_submit_naming_file_and_column() {
    let s = Scratch::new();
    dataset(&s);
    let path = spec(&s, "bad.yaml", "runs/bad/", "lightgbm", "{}", "{}", "");
    let text = std::fs::read_to_string(&path).unwrap().replace("label: clicked", "label: converted");
    std::fs::write(&path, text).unwrap();
    let out = hourglass(&["train", "submit", "--spec", &path, "--queue", &s.queue()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("part-00000.parquet") && err.contains("converted"), "{err}");
    // A grid axis with no values is refused before anything is read.
    let path = spec(&s, "empty.yaml", "runs/empty/", "lightgbm", "{}", "{num_leaves: []}", "");
    let out = hourglass(&["train", "submit", "--spec", &path, "--queue", &s.queue()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("axis \"num_leaves\" has no values"));
}
