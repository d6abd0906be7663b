//! `hourglass scaler simulate` end to end: the reference scenario under both
//! policies, with the timeline and the plot an operator looks at.

mod common;

use common::{Scratch, hourglass, hourglass_ok};

#[test]
fn reference_scenario_compares_both_policies_and_writes_timeline_and_plot() {
    let s = Scratch::new();
    let (csv, svg) = (s.s("timeline.csv"), s.s("plot.svg"));
    let out = hourglass_ok(&[
        "scaler",
        "simulate",
        "--rows",
        "1e9",
        "--deadline",
        "1h",
        "--pod-rows-per-sec",
        "250000",
        "--pod-start",
        "30s",
        "--node-boot",
        "3m",
        "--pods-per-node",
        "4",
        "--spot-interruptions-per-hour",
        "0.05",
        "--policy",
        "deadline",
        "--compare",
        "--json",
        "--timeline",
        &csv,
        "--plot",
        &svg,
    ]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The yardstick: one full node for 1000 s of work after 210 s of start,
    // billed with its 10-minute scale-down delay.
    let fixed = &report["fixed_fleet"];
    assert_eq!((fixed["nodes"].as_u64(), fixed["finish_seconds"].as_f64()), (Some(1), Some(1210.0)), "{report}");
    assert!((fixed["node_hours"].as_f64().unwrap() - 1810.0 / 3600.0).abs() < 1e-9);
    let runs = report["policies"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    // The deadline policy pays for that node and no more; KEDA's rule for 25.
    let vs = |i: usize| runs[i]["vs_fixed_fleet"].as_f64().unwrap();
    assert!(vs(0) <= 1.1 && vs(1) > 10.0, "{runs:?}");
    assert_eq!(runs[0]["policy"], "deadline");
    assert_eq!(runs[1]["policy"], "queue-length");
    assert_eq!(runs[0]["met_deadline"], true, "{runs:?}");
    for run in runs {
        // The comparison is computed for both, whichever wins.
        assert!(run["finish_seconds"].as_f64().unwrap() > 0.0, "{run}");
        assert!(run["node_hours"].as_f64().unwrap() > 0.0, "{run}");
        assert!(run["peak_nodes"].as_u64().unwrap() >= 1, "{run}");
    }

    let timeline = std::fs::read_to_string(&csv).unwrap();
    let mut lines = timeline.lines();
    assert_eq!(
        lines.next().unwrap(),
        "t_secs,desired_replicas,pods,ready_pods,placeholders,nodes,backlog_rows,projected_finish_secs"
    );
    let last = lines.last().unwrap();
    assert!(last.split(',').nth(6).unwrap().parse::<f64>().unwrap() == 0.0, "backlog ends at zero: {last}");
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<svg") && plot.trim_end().ends_with("</svg>"), "{}", &plot[..80.min(plot.len())]);

    // The human table names both policies and the fixed fleet.
    let out = hourglass_ok(&["scaler", "simulate", "--compare"]);
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("deadline") && table.contains("queue-length"), "{table}");
    assert!(table.contains("best fixed fleet") && table.contains("1.00x"), "{table}");
    // --markdown: the README's table rows.
    let out = hourglass_ok(&["scaler", "simulate", "--compare", "--markdown"]);
    let md = String::from_utf8(out.stdout).unwrap();
    assert!(md.starts_with("| scenario | deadline policy | best fixed fleet |"), "{md}");
    assert!(md.contains("| 1e9 rows, 1h deadline, 250k rows/s/pod") && md.contains("(1 node, done 1210 s)"), "{md}");
}

#[test]
fn bad_simulation_flags_are_named() {
    let out = hourglass(&["scaler", "simulate", "--rows", "lots"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--rows") && err.contains("lots"), "{err}");
}
