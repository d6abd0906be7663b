//! The model registry from the command line, on the local store: push,
//! aliases, promotion checks, rollback, and a job that pins the version an
//! alias named at submit, unchanged by a promotion while it runs.

mod common;

use common::*;

fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

#[test]
fn push_alias_promote_rollback_and_pin() {
    let s = Scratch::new();
    let reg = s.s("registry");
    let gbdt = model_path();
    let mlp = gbdt.with_file_name("ctr_mlp.onnx");
    let push = |file: &std::path::Path, extra: &[&str]| {
        let mut args = vec!["model", "push", file.to_str().unwrap(), "--registry", &reg, "--name", "ctr", "--json"];
        args.extend(extra);
        let o = hourglass_ok(&args);
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let v1 = push(&gbdt, &["--alias", "champion", "--metric", "auc=0.70"]);
    let v2 = push(&mlp, &["--metric", "auc=0.69"]);
    assert_eq!((v1["version"].as_u64(), v2["version"].as_u64()), (Some(1), Some(2)));
    assert_eq!(v1["lineage"]["source"].as_str().unwrap(), format!("file://{}", gbdt.display()));
    // Triton's layout.
    for f in ["ctr/config.pbtxt", "ctr/1/model.onnx", "ctr/1/manifest.json", "ctr/2/model.onnx", "ctr/aliases.json"] {
        assert!(s.path(&format!("registry/{f}")).is_file(), "{f}");
    }
    // A model that cannot score batches never gets in.
    let unfit = gbdt.with_file_name("unfit/zipmap.onnx");
    let refused = hourglass(&["model", "push", unfit.to_str().unwrap(), "--registry", &reg, "--name", "ctr"]);
    assert!(!refused.status.success(), "{}", out(&refused));

    // A job submitted through the alias pins version 1.
    gen_data(&s, 3000, 2, "csv");
    let reference = format!("{reg}/ctr@champion");
    let (input, output, queue) = (s.input(), s.output(), s.queue());
    let o = hourglass(&[
        "submit",
        "--input",
        &input,
        "--model",
        &reference,
        "--output",
        &output,
        "--queue",
        &queue,
        "--shard-size",
        "16KiB",
    ]);
    assert!(o.status.success(), "{}", out(&o));
    let job: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.path("output/_hourglass/job.json")).unwrap()).unwrap();
    assert_eq!(job["model_registry"]["version"], 1);
    assert_eq!(job["model_registry"]["alias"], "champion");
    assert_eq!(job["model_sha256"], v1["sha256"]);

    // Promotion: --require-metric refuses a worse model, then it goes.
    let base = ["model", "promote", "--registry", &reg, "--name", "ctr", "--version", "2"];
    let worse = hourglass(&[&base[..], &["--require-metric", "auc"]].concat());
    assert!(!worse.status.success() && out(&worse).contains("worse than version 1"), "{}", out(&worse));
    hourglass_ok(&base);
    let show = hourglass_ok(&["model", "show", &reference, "--json"]);
    let shown: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(shown["manifest"]["version"], 2);

    // The running job keeps version 1: its workers score with it.
    let mut worker = WorkerProc::spawn(&s, &["--exit-when-idle", "1s"]);
    assert!(worker.wait_exit(std::time::Duration::from_secs(120)).success());
    assert_eq!(status_json(&s)["state"], "succeeded");
    let done = std::fs::read_dir(s.path("output/_hourglass/done")).unwrap().count();
    assert!(done > 1);
    let expected = direct_scores(&read_csv_inputs(&s.path("input")));
    assert_exactly_once(&read_outputs(&s.path("output")), &expected, true);

    // A version whose columns the champion's rows lack is refused.
    let manifest = s.path("registry/ctr/1/manifest.json");
    let v3 = push(&gbdt, &[]);
    assert_eq!(v3["version"], 3);
    let m3 = s.path("registry/ctr/3/manifest.json");
    let text = std::fs::read_to_string(&m3).unwrap().replacen("\"I1\"", "\"not_a_column\"", 1);
    assert!(text.contains("not_a_column"), "the reference model names its features I1…");
    std::fs::write(&m3, text).unwrap();
    assert!(manifest.is_file());
    let refused = hourglass(&["model", "promote", "--registry", &reg, "--name", "ctr", "--version", "3"]);
    assert!(!refused.status.success() && out(&refused).contains("not_a_column"), "{}", out(&refused));

    // Rollback steps back through the alias's history.
    let back = hourglass_ok(&["model", "rollback", "--registry", &reg, "--name", "ctr"]);
    assert!(out(&back).contains("2 → 1"), "{}", out(&back));
    let again = hourglass(&["model", "rollback", "--registry", &reg, "--name", "ctr"]);
    assert!(!again.status.success() && out(&again).contains("no earlier version"), "{}", out(&again));
    // An alias set with a stale expectation is refused.
    let stale = hourglass(&[
        "model",
        "alias",
        "set",
        "--registry",
        &reg,
        "--name",
        "ctr",
        "--alias",
        "champion",
        "--version",
        "2",
        "--expect",
        "3",
    ]);
    assert!(!stale.status.success() && out(&stale).contains("someone else moved it"), "{}", out(&stale));
    let list = hourglass_ok(&["model", "list", "--registry", &reg, "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(listed[0]["versions"], serde_json::json!([1, 2, 3]));
    assert_eq!(listed[0]["aliases"]["champion"], 1);

    // Parity: a re-push of the champion's model scores the same and goes;
    // another model is refused, with how far apart they are.
    let v4 = push(&gbdt, &[]);
    let parity = |v: &str| {
        hourglass(&[
            "model",
            "promote",
            "--registry",
            &reg,
            "--name",
            "ctr",
            "--version",
            v,
            "--require-parity",
            "1e-6",
        ])
    };
    let other = parity("2");
    // (The MLP has other outputs than the GBDT: refused for that.)
    assert!(!other.status.success() && out(&other).contains("--require-parity"), "{}", out(&other));
    let same = parity(&v4["version"].to_string());
    assert!(same.status.success() && out(&same).contains("agree within 0e0"), "{}", out(&same));
}
