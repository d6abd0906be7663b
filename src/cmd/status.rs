//! `hourglass status`: a job's progress from its ledger, once or live.

use super::{ExitWith, exit_with, finished};
use anyhow::Result;
use clap::Args;
use hourglass_coordinator::status::{self, JobState};
use hourglass_core::cost::{self, Prices};
use hourglass_core::{BlobUrl, queue};
use std::time::Duration;

#[derive(Args)]
pub struct StatusArgs {
    /// The job's output prefix.
    output: String,
    /// The job's queue: shards whose messages are gone are reported as
    /// lost (the job as failed), and the dead-letter depth is shown.
    #[arg(long, env = "HOURGLASS_QUEUE")]
    queue: Option<String>,
    #[arg(long)]
    json: bool,
    /// Live view until the job succeeds or fails: progress, rows/s, ETA vs
    /// deadline, failures and a map of every shard, redrawn in place to fit
    /// the terminal (a progress line per refresh when stderr is not a
    /// terminal; a JSON line per refresh with --json).
    #[arg(long)]
    watch: bool,
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Worker pods per node: a pod-second is this share of a node-second.
    #[arg(long, default_value_t = 4, env = "HOURGLASS_PODS_PER_NODE")]
    pods_per_node: u32,
    /// Node-hour prices for the job's cost: `spot=0.12,on-demand=0.38`,
    /// also by instance type (`m7i.2xlarge=0.40`, `m7i.2xlarge/spot=0.15`)
    /// and `*` for the rest; the most specific wins.
    #[arg(long, env = "HOURGLASS_NODE_PRICES", value_parser = Prices::parse)]
    node_prices: Option<Prices>,
}

/// `cost     2.41 node-h (pod-h ÷ 4 pods per node), 83% spot, $0.38`.
fn cost_line(c: &cost::Cost, pods_per_node: u32) -> Option<String> {
    if c.pod_seconds <= 0.0 {
        return None;
    }
    let hours = |s: f64| if s >= 36.0 { format!("{:.2} h", s / 3600.0) } else { format!("{s:.1} s") };
    let mut line = format!(
        "cost     {} node ({} pod ÷ {pods_per_node} pods per node)",
        hours(c.node_seconds),
        hours(c.pod_seconds)
    );
    if let Some(spot) = c.spot_share {
        line.push_str(&format!(", {:.0}% spot", spot * 100.0));
    }
    match c.dollars {
        Some(d) => line.push_str(&format!(", ${d:.2}")),
        None if c.unpriced_node_seconds > 0.0 && c.unpriced_node_seconds < c.node_seconds => {
            line.push_str(&format!(", {} node without a --node-prices entry", hours(c.unpriced_node_seconds)));
        }
        None => {}
    }
    Some(line)
}

pub async fn run(a: StatusArgs) -> Result<()> {
    let unreadable = |e: hourglass_coordinator::Error| exit_with(status::EXIT_UNREADABLE, e);
    let output = BlobUrl::parse(&a.output)?;
    let queue = match a.queue.as_deref() {
        Some(q) => Some(queue::open(q).map_err(|e| exit_with(status::EXIT_UNREADABLE, e))?),
        None => None,
    };
    let queue = queue.as_deref();
    if !a.watch {
        let s = status::status(&output, queue).await.map_err(unreadable)?;
        let cost = cost::cost(&s.usage, a.pods_per_node, a.node_prices.as_ref().unwrap_or(&Prices::default()));
        if a.json {
            let mut v = serde_json::to_value(&s)?;
            v["cost"] = serde_json::to_value(&cost)?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            print!("{}", s.render());
            if let Some(line) = cost_line(&cost, a.pods_per_node) {
                println!("{line}");
            }
        }
        return match s.state {
            JobState::Running => Err(ExitWith { code: status::EXIT_RUNNING, message: None }.into()),
            state => finished(state),
        };
    }
    // On a terminal the whole view is redrawn in place; otherwise (logs, CI)
    // one progress line per refresh.
    let mut view = (!a.json && std::io::IsTerminal::is_terminal(&std::io::stderr())).then(status::LiveView::default);
    let mut last: Option<(std::time::Instant, u64)> = None;
    loop {
        let s = status::status(&output, queue).await.map_err(unreadable)?;
        let recent =
            last.map(|(at, rows)| s.rows_done.saturating_sub(rows) as f64 / at.elapsed().as_secs_f64().max(1e-3));
        last = Some((std::time::Instant::now(), s.rows_done));
        if a.json {
            println!("{}", serde_json::to_string(&s)?);
        } else if let Some(view) = view.as_mut() {
            let (columns, rows) = super::terminal_size();
            eprint!("{}", view.frame(&s.live_view_sized(recent, columns, rows), columns, rows));
        } else {
            eprintln!("{}", s.progress_line());
        }
        if s.state != JobState::Running {
            if !a.json && view.is_none() {
                print!("{}", s.render());
            }
            return finished(s.state);
        }
        tokio::select! {
            _ = tokio::time::sleep(a.interval) => {}
            _ = tokio::signal::ctrl_c() => { eprintln!(); return Ok(()) }
        }
    }
}
