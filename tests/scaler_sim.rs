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
    // --markdown: the table rows of docs/scaler.md.
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

#[test]
fn several_jobs_each_finish_against_their_own_deadline() {
    let out = hourglass_ok(&[
        "scaler",
        "simulate",
        "--pod-rows-per-sec",
        "25000",
        "--job",
        "rows=1e9,deadline=1h",
        "--job",
        "rows=2e8,at=20m,deadline=35m",
        "--json",
    ]);
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let jobs = runs[0]["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2, "{runs}");
    assert_eq!(
        (jobs[1]["arrival_seconds"].as_f64(), jobs[1]["deadline_seconds"].as_f64()),
        (Some(1200.0), Some(2100.0))
    );
    for job in jobs {
        assert_eq!(job["met_deadline"], true, "{job}");
        assert!(job["finish_seconds"].as_f64().unwrap() > job["arrival_seconds"].as_f64().unwrap(), "{job}");
    }
    for bad in ["rows=1e9", "rows=0,deadline=1h", "rows=1e9,at=2h,deadline=1h", "rows=1e9,deadline=1h,prio=1"] {
        let out = hourglass(&["scaler", "simulate", "--job", bad]);
        assert!(!out.status.success(), "{bad}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("--job"), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn a_live_ledger_becomes_the_simulated_job() {
    let s = Scratch::new();
    common::gen_data(&s, 3000, 2, "csv");
    let out = common::submit(&s, &["--shard-size", "32KiB", "--deadline", "+45m"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = hourglass_ok(&["scaler", "simulate", "--from-ledger", &s.output(), "--shard-rows", "500", "--json"]);
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let job = &runs[0]["jobs"][0];
    // Rows left: the planned estimate of a job with nothing done (about
    // 3000 rows); due in 45 minutes from now.
    let rows = job["rows"].as_f64().unwrap();
    assert!((2000.0..4000.0).contains(&rows), "{job}");
    let deadline = job["deadline_seconds"].as_f64().unwrap();
    assert!((2600.0..=2700.0).contains(&deadline), "{job}");
    assert_eq!(job["met_deadline"], true, "{job}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("rows left") && said.contains("no rate measured yet"), "{said}");
    // A prefix without a job is named.
    let out = hourglass(&["scaler", "simulate", "--from-ledger", &s.s("nothing-here/")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no job record"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn each_policy_is_priced_at_the_spot_node_hour() {
    let out = hourglass_ok(&["scaler", "simulate", "--compare", "--node-prices", "on-demand=0.4,spot=0.16", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for run in report["policies"].as_array().unwrap() {
        let (hours, dollars) = (run["node_hours"].as_f64().unwrap(), run["cost_dollars"].as_f64().unwrap());
        assert!((dollars - 0.16 * hours).abs() < 1e-9, "{run}");
    }
    let fixed = &report["fixed_fleet"];
    assert!((fixed["cost_dollars"].as_f64().unwrap() - 0.16 * fixed["node_hours"].as_f64().unwrap()).abs() < 1e-9);
    let table = String::from_utf8(hourglass_ok(&["scaler", "simulate", "--node-prices", "spot=0.16"]).stdout).unwrap();
    assert!(table.contains("cost") && table.contains("$0.08"), "{table}");
    // Prices that leave the simulated spot nodes out are refused.
    let out = hourglass(&["scaler", "simulate", "--node-prices", "on-demand=0.4"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("spot=DOLLARS"));
}
