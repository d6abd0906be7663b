//! `hourglass scaler simulate`: the policy against a simulated cluster,
//! from flags or from the ledgers of real jobs.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use hourglass_core::ledger::Ledger;
use hourglass_core::units::parse_count as count;
use hourglass_core::{BlobUrl, schedule, store};
use hourglass_scaler::signals::LedgerWatch;
use hourglass_scaler::sim::{self, Scenario, SimJob};

use super::{PodRate, PolicyArg, PolicyArgs, duration, parse_sim_job};

#[derive(Args)]
pub(super) struct SimulateArgs {
    #[arg(long, default_value = "1e9", value_parser = count)]
    rows: f64,
    #[arg(long, default_value = "1e6", value_parser = count)]
    shard_rows: f64,
    /// The deadline, in the forms of `submit --deadline`, counted from
    /// --start: `1h` / `+1h` after it, `06:00` (the next one after it, in
    /// --tz) or an RFC 3339 time.
    #[arg(long, default_value = "+1h")]
    deadline: String,
    /// When the simulated run starts: `now`, a time of day (the next one,
    /// in --tz) or an RFC 3339 time. Matters only for a --deadline that is
    /// not a duration.
    #[arg(long, default_value = "now")]
    start: String,
    #[arg(long, default_value = "UTC", env = "HOURGLASS_TZ")]
    tz: String,
    #[arg(long, default_value = "60s", value_parser = duration)]
    visibility_timeout: Duration,
    /// Nodes already up at the start (pre-warmed).
    #[arg(long, default_value_t = 0)]
    initial_nodes: u32,
    /// A job sharing the queue (repeatable; instead of --rows/--deadline):
    /// `rows=2e8,at=20m,deadline=35m`, times from --start (`at` defaults
    /// to 0). Each job's finish is shown against its own deadline.
    #[arg(long = "job", value_parser = parse_sim_job)]
    jobs: Vec<SimJob>,
    /// Take a job from a live (or last night's) ledger: its rows left, its
    /// deadline (from now) and its measured rate (repeatable; with
    /// --job too). The run starts now.
    #[arg(long = "from-ledger")]
    from_ledger: Vec<String>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Run both policies on the same scenario and print them side by side
    /// with the best fixed fleet (the fewest fully packed nodes started at
    /// once that meet the deadline) and each one's node-hours over it.
    #[arg(long)]
    compare: bool,
    /// With --compare: print the comparison as a markdown table row (the
    /// docs/scaler.md's table is made of these).
    #[arg(long, requires = "compare", conflicts_with = "json")]
    markdown: bool,
    /// Write the timeline (one row per tick) as CSV.
    #[arg(long)]
    timeline: Option<PathBuf>,
    /// Write a plot of replicas, nodes, backlog and projected finish as SVG.
    #[arg(long)]
    plot: Option<PathBuf>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    policy: PolicyArgs,
}

/// Jobs read from ledgers for `simulate --from-ledger`: each one's rows
/// left and deadline from now, and the rows/s per pod they measured
/// (weighted by rows left), if any did.
async fn jobs_from_ledgers(prefixes: &[String], worker_concurrency: u32) -> Result<(Vec<SimJob>, Option<f64>)> {
    let now_ms = hourglass_core::ledger::now_ms();
    let (mut jobs, mut weighted, mut weight) = (Vec::new(), 0.0, 0.0);
    for prefix in prefixes {
        let url = BlobUrl::parse(prefix)?.as_prefix();
        let mut watch = LedgerWatch::new(Ledger::new(store::open(&url)?, &url));
        let p = watch.refresh().await.with_context(|| format!("--from-ledger {url}"))?;
        let (Some(job), Some(rows)) = (&p.job, p.backlog_rows) else {
            bail!("--from-ledger {url}: no job record there");
        };
        let Some(deadline_ms) = p.deadline_unix_ms else {
            bail!("--from-ledger {url}: job {job} has no deadline to simulate against");
        };
        if rows == 0 {
            eprintln!("--from-ledger {url}: job {job} is done; left out");
            continue;
        }
        let left = Duration::from_millis(deadline_ms.saturating_sub(now_ms));
        if left.is_zero() {
            bail!("--from-ledger {url}: job {job}'s deadline has passed");
        }
        if let Some(r) = p.rows_per_sec {
            weighted += r * f64::from(worker_concurrency.max(1)) * rows as f64;
            weight += rows as f64;
        }
        eprintln!(
            "--from-ledger {url}: job {job}, {rows} rows left, deadline in {}, {}",
            humantime::format_duration(Duration::from_secs(left.as_secs())),
            p.rows_per_sec
                .map(|r| format!("{:.0} rows/s per pod measured", r * f64::from(worker_concurrency.max(1))))
                .unwrap_or_else(|| "no rate measured yet".into())
        );
        jobs.push(SimJob { rows: rows as f64, arrival: Duration::ZERO, deadline: left });
    }
    Ok((jobs, (weight > 0.0).then(|| weighted / weight)))
}

pub(super) async fn simulate(a: SimulateArgs) -> Result<()> {
    let tz = schedule::time_zone(&a.tz)?;
    let now = jiff::Timestamp::now();
    let start = match a.start.as_str() {
        "now" => now,
        s => schedule::parse_instant("--start", s, now, &tz)?,
    };
    let deadline = schedule::parse_instant("--deadline", &a.deadline, start, &tz)?;
    let deadline = Duration::try_from(deadline.duration_since(start))
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("--deadline {:?} is not after --start {:?}", a.deadline, a.start))?;
    let (mut jobs, measured) = jobs_from_ledgers(&a.from_ledger, a.policy.worker_concurrency).await?;
    jobs.extend(a.jobs.iter().cloned());
    let mut policy = a.policy.clone();
    if let Some(rate) = measured {
        // The ledgers' measured rate is the prior the live scaler would use.
        policy.pod_rows_per_sec = vec![PodRate { class: None, rows_per_sec: rate }];
    }
    let a = SimulateArgs { policy, ..a };
    let scenario = Scenario {
        rows: a.rows,
        shard_rows: a.shard_rows,
        deadline,
        jobs,
        pod_rows_per_sec: a.policy.pod_rate(),
        spot_interruptions_per_node_hour: a.policy.spot_interruptions_per_hour,
        visibility_timeout: a.visibility_timeout,
        initial_nodes: a.initial_nodes,
        seed: a.seed,
        ..Scenario::reference()
    };
    let chosen = a.policy.config(a.shard_rows);
    let (runs, fixed) = if a.compare {
        let c = sim::Comparison::run(&scenario, &chosen);
        if a.markdown {
            println!("{}\n{}", sim::MARKDOWN_HEADER, c.markdown_row(&scenario.label(&chosen)));
            return Ok(());
        }
        let (d, q) = ((PolicyArg::Deadline, c.deadline), (PolicyArg::QueueLength, c.queue_length));
        (if a.policy.policy == PolicyArg::Deadline { vec![d, q] } else { vec![q, d] }, c.fixed)
    } else {
        (vec![(a.policy.policy, sim::simulate(&scenario, &chosen))], None)
    };
    let ratio = |o: &sim::Outcome| fixed.as_ref().map(|f| o.node_hours / f.node_hours);
    // The simulated nodes are spot nodes of no particular instance type.
    let price = a.policy.node_prices.as_ref().and_then(|p| p.per_node_hour("?/spot"));
    if a.policy.node_prices.is_some() && price.is_none() {
        bail!("--node-prices has no price for the simulated spot nodes: give spot=DOLLARS or *=DOLLARS");
    }
    let dollars = |node_hours: f64| price.map(|p| p * node_hours);
    let (policy, main) = &runs[0];
    if let Some(path) = &a.timeline {
        std::fs::write(path, sim::timeline_csv(main)).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &a.plot {
        let title = format!(
            "{} policy: {:.0e} rows, deadline {}",
            policy_name(*policy),
            a.rows,
            humantime::format_duration(deadline)
        );
        std::fs::write(path, sim::timeline_svg(main, &title)).with_context(|| format!("writing {}", path.display()))?;
    }
    if a.json {
        let rows: Vec<_> = runs
            .iter()
            .map(|(p, o)| {
                serde_json::json!({
                    "policy": policy_name(*p),
                    "finish_seconds": o.finish.map(|f| f.as_secs_f64()),
                    "deadline_seconds": o.deadline.as_secs_f64(),
                    "met_deadline": o.met_deadline(),
                    "node_hours": o.node_hours,
                    "peak_nodes": o.peak_nodes,
                    "shards_redone": o.shards_redone,
                    "vs_fixed_fleet": ratio(o),
                    "cost_dollars": dollars(o.node_hours),
                    "jobs": o.jobs.iter().map(|j| serde_json::json!({
                        "rows": j.rows,
                        "arrival_seconds": j.arrival.as_secs_f64(),
                        "deadline_seconds": j.deadline.as_secs_f64(),
                        "finish_seconds": j.finish.map(|f| f.as_secs_f64()),
                        "met_deadline": j.met_deadline(),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let out = if a.compare {
            serde_json::json!({
                "policies": rows,
                "fixed_fleet": fixed.as_ref().map(|f| serde_json::json!({
                    "nodes": f.nodes,
                    "node_hours": f.node_hours,
                    "cost_dollars": dollars(f.node_hours),
                    "finish_seconds": f.finish.as_secs_f64(),
                })),
            })
        } else {
            serde_json::Value::Array(rows)
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let usd = |node_hours: f64| dollars(node_hours).map(|d| format!(" {:>9}", format!("${d:.2}"))).unwrap_or_default();
    println!(
        "{:<16} {:>10} {:>10} {:>6} {:>11} {:>9} {:>11} {:>14}{}",
        "policy",
        "finish",
        "deadline",
        "met",
        "node-hours",
        "vs fixed",
        "peak nodes",
        "shards redone",
        if price.is_some() { format!(" {:>9}", "cost") } else { String::new() }
    );
    let vs = |r: Option<f64>| r.map(|r| format!("{r:.2}x")).unwrap_or_else(|| "-".into());
    for (p, o) in &runs {
        println!(
            "{:<16} {:>10} {:>10} {:>6} {:>11.2} {:>9} {:>11} {:>14}{}",
            policy_name(*p),
            o.finish.map(|f| format!("{} s", f.as_secs())).unwrap_or_else(|| "never".into()),
            format!("{} s", o.deadline.as_secs()),
            if o.met_deadline() { "yes" } else { "NO" },
            o.node_hours,
            vs(ratio(o)),
            o.peak_nodes,
            o.shards_redone,
            usd(o.node_hours)
        );
    }
    if a.compare {
        match &fixed {
            Some(f) => println!(
                "{:<16} {:>10} {:>10} {:>6} {:>11.2} {:>9} {:>11} {:>14}{}",
                "best fixed fleet",
                format!("{} s", f.finish.as_secs()),
                format!("{} s", deadline.as_secs()),
                "yes",
                f.node_hours,
                "1.00x",
                f.nodes,
                "-",
                usd(f.node_hours)
            ),
            None if runs[0].1.jobs.len() > 1 => {
                println!("best fixed fleet: not defined for several jobs arriving over time");
            }
            None => println!("best fixed fleet: no number of nodes started at once meets the deadline"),
        }
    }
    if runs[0].1.jobs.len() > 1 {
        println!(
            "\n{:<16} {:>4} {:>10} {:>10} {:>10} {:>10} {:>6}",
            "policy", "job", "rows", "arrives", "deadline", "finish", "met"
        );
        for (p, o) in &runs {
            for (i, j) in o.jobs.iter().enumerate() {
                println!(
                    "{:<16} {:>4} {:>10.3e} {:>10} {:>10} {:>10} {:>6}",
                    policy_name(*p),
                    i + 1,
                    j.rows,
                    format!("{} s", j.arrival.as_secs()),
                    format!("{} s", j.deadline.as_secs()),
                    j.finish.map(|f| format!("{} s", f.as_secs())).unwrap_or_else(|| "never".into()),
                    if j.met_deadline() { "yes" } else { "NO" }
                );
            }
        }
    }
    Ok(())
}

fn policy_name(p: PolicyArg) -> &'static str {
    match p {
        PolicyArg::Deadline => "deadline",
        PolicyArg::QueueLength => "queue-length",
    }
}
