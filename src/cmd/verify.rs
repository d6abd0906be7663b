//! `hourglass verify`: every input row has exactly one output row.

use super::exit_with;
use anyhow::Result;
use clap::Args;
use hourglass_coordinator::{status, verify};
use hourglass_core::BlobUrl;

#[derive(Args)]
pub struct VerifyArgs {
    /// The job's output prefix.
    output: String,
    #[arg(long)]
    json: bool,
}

pub async fn run(a: VerifyArgs) -> Result<()> {
    let report =
        verify::verify(&BlobUrl::parse(&a.output)?).await.map_err(|e| exit_with(status::EXIT_UNREADABLE, e))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "input rows {}, output rows {}, missing {}, duplicates {}, unexpected {}, skipped as bad {}, other jobs' records {}, altered outputs {}",
            report.input_rows,
            report.output_rows,
            report.missing,
            report.duplicates,
            report.unexpected,
            report.bad_rows,
            report.foreign_records,
            report.altered_outputs
        );
    }
    if !report.ok() {
        return Err(exit_with(status::EXIT_MISMATCH, "verification failed: outputs do not match inputs one to one"));
    }
    Ok(())
}
