//! `hourglass status`: a job's progress from its ledger, once or live.

use super::{ExitWith, exit_with, finished};
use anyhow::Result;
use clap::Args;
use hourglass_coordinator::status::{self, JobState};
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
        if a.json {
            println!("{}", serde_json::to_string_pretty(&s)?);
        } else {
            print!("{}", s.render());
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
