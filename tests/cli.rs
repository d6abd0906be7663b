//! The CLI's conventions, on the real binary: version, completions,
//! suggestions, log levels, doctor, machine-readable output, and the one
//! time grammar shared by every `--deadline`.

mod common;

use common::*;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn version_names_the_revision_and_the_onnx_runtime_it_loads() {
    let out = hourglass_ok(&["--version"]);
    let text = stdout(&out);
    let first = text.lines().next().unwrap();
    assert!(first.starts_with("hourglass 0.") && first.contains('('), "{text}");
    assert!(text.contains("onnxruntime 1.31.1 (") && text.contains("libonnxruntime.so.1.31.1"), "{text}");
    // -V is the short line only (no library load).
    assert_eq!(stdout(&hourglass_ok(&["-V"])).lines().count(), 1);
}

#[test]
fn completions_suggestions_and_usage_errors() {
    let bash = stdout(&hourglass_ok(&["completions", "bash"]));
    assert!(bash.contains("_hourglass()") && bash.contains("submit"), "{bash}");
    let zsh = stdout(&hourglass_ok(&["completions", "zsh"]));
    assert!(zsh.contains("#compdef hourglass"), "{zsh}");
    let typo = hourglass(&["submti"]);
    assert_eq!(typo.status.code(), Some(2));
    assert!(stderr(&typo).contains("similar subcommand exists: 'submit'"), "{}", stderr(&typo));
    let bad_level = hourglass(&["--log-level", "loud[", "doctor"]);
    assert_eq!(bad_level.status.code(), Some(2), "{}", stderr(&bad_level));
    assert!(stderr(&bad_level).contains("--log-level"), "{}", stderr(&bad_level));
}

#[test]
fn doctor_checks_what_a_command_needs_and_says_the_fix() {
    let s = Scratch::new();
    let model = model_path();
    let ok = hourglass_ok(&[
        "doctor",
        "--queue",
        &s.queue(),
        "--store",
        &s.s("input/"),
        "--model",
        model.to_str().unwrap(),
        "--json",
    ]);
    let checks: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    let names: Vec<&str> = checks.as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    for name in ["onnxruntime", "execution providers", "aws", "queue", "store", "model"] {
        assert!(names.contains(&name), "{name} missing: {names:?}");
    }
    // Every check passes; a GPU this machine lacks is reported, not failed.
    assert!(checks.as_array().unwrap().iter().all(|c| c["ok"] == true || c["optional"] == true), "{checks}");
    assert!(checks.as_array().unwrap().iter().any(|c| c["name"] == "device" && c["ok"] == true), "{checks}");
    let providers = &checks.as_array().unwrap().iter().find(|c| c["name"] == "execution providers").unwrap()["detail"];
    assert!(providers.as_str().unwrap().contains("CPUExecutionProvider"), "{providers}");
    // Never a secret, only the source.
    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    let out =
        common::hourglass_env(&["doctor"], &[("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE"), ("AWS_SECRET_ACCESS_KEY", secret)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("credentials from the environment") && !text.contains(secret) && !text.contains("AKIAEXAMPLE"),
        "{text}"
    );
    // A missing model: non-zero, with the fix.
    let bad = hourglass(&["doctor", "--model", &s.s("nope.onnx")]);
    assert_eq!(bad.status.code(), Some(1));
    let text = stdout(&bad);
    assert!(text.contains("FAIL model") && text.contains("fix:"), "{text}");
}

#[test]
fn gen_data_reports_what_it_wrote_as_json() {
    let s = Scratch::new();
    let out = hourglass_ok(&["gen-data", "--output", &s.s("input/"), "--rows", "100", "--files", "2", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["rows"], 100);
    assert_eq!(report["files"].as_array().unwrap().len(), 2);
}

#[test]
fn every_deadline_flag_reads_the_same_forms() {
    // The simulator counts from --start; a time of day, a duration and an
    // RFC 3339 time one hour after it all mean the same deadline.
    let secs = |deadline: &str| {
        let out = hourglass_ok(&[
            "scaler",
            "simulate",
            "--rows",
            "1e8",
            "--start",
            "2026-11-22T05:00:00+01:00",
            "--tz",
            "Europe/Berlin",
            "--deadline",
            deadline,
            "--json",
        ]);
        let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        runs[0]["deadline_seconds"].as_f64().unwrap()
    };
    for form in ["+1h", "1h", "06:00", "2026-11-22T06:00:00+01:00", "2026-11-22T06:00"] {
        assert_eq!(secs(form), 3600.0, "--deadline {form}");
    }
    let bad = hourglass(&["scaler", "simulate", "--deadline", "tomorrow"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains(r#"--deadline "tomorrow""#), "{}", stderr(&bad));
    // submit reads the same grammar (a time of day in --tz).
    let s = Scratch::new();
    gen_data(&s, 100, 1, "csv");
    let out = submit(&s, &["--deadline", "06:00", "--tz", "Europe/Berlin", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let job: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.path("output/_hourglass/job.json")).unwrap()).unwrap();
    let deadline_ms = job["spec"]["deadline_unix_ms"].as_u64().unwrap();
    let local = jiff::Timestamp::from_millisecond(deadline_ms as i64)
        .unwrap()
        .to_zoned(jiff::tz::TimeZone::get("Europe/Berlin").unwrap());
    assert_eq!((local.hour(), local.minute()), (6, 0), "{local}");
}
