//! `hourglass bench ledger`: what the ledger costs as jobs grow; the
//! measurement is `hourglass_bench::ledger`.

use anyhow::{Result, anyhow};
use clap::Args;
use hourglass_bench::ledger::{self, Spec};
use hourglass_core::BlobUrl;
use std::time::Duration;

#[derive(Args)]
pub struct BenchLedgerArgs {
    /// Job sizes in shards (comma-separated).
    #[arg(long, default_value = "1000,10000", value_delimiter = ',')]
    shards: Vec<usize>,
    /// Where the ledgers go: a directory or s3://bucket/prefix/ (one
    /// sub-prefix per size; a directory's are removed afterwards).
    #[arg(long, default_value = ".hourglass/bench-ledger")]
    store: String,
    /// Added before every store request.
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    latency: Duration,
    /// Shards recorded at once, as by that many workers.
    #[arg(long, default_value_t = 32)]
    workers: usize,
    #[arg(long)]
    json: bool,
}

pub async fn run(a: BenchLedgerArgs) -> Result<()> {
    let spec = Spec { shards: a.shards, store: BlobUrl::parse(&a.store)?, latency: a.latency, workers: a.workers };
    let report = ledger::measure(&spec).await.map_err(|e| anyhow!(e))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "hourglass bench ledger: {} (+{} ms per request), {} shards at once",
            report.store, report.latency_ms, report.workers
        );
        println!("{:>8} {:>14} {:>16} {:>16}", "shards", "requests/shard", "status half (s)", "status done (s)");
        for r in &report.runs {
            println!(
                "{:>8} {:>14.2} {:>16.2} {:>16.2}",
                r.shards, r.requests_per_shard, r.status_half_secs, r.status_done_secs
            );
        }
    }
    Ok(())
}
