//! `hourglass gen-data`: synthetic CTR feature files, deterministic by seed.

use super::FormatArg;
use anyhow::Result;
use clap::Args;
use hourglass_coordinator::synth;
use hourglass_core::BlobUrl;

#[derive(Args)]
pub struct GenDataArgs {
    /// Directory (or s3:// prefix) to write into.
    #[arg(long)]
    output: String,
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    #[arg(long, default_value_t = 4)]
    files: usize,
    #[arg(long, default_value = "csv")]
    format: FormatArg,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Add a 0/1 label column of this name that depends on the features
    /// (for training jobs: a model learns it, better than chance).
    #[arg(long)]
    label: Option<String>,
    /// Print what was written as JSON (the files' URLs and the row count).
    #[arg(long)]
    json: bool,
}

pub async fn run(a: GenDataArgs) -> Result<()> {
    let dir = BlobUrl::parse(&a.output)?.as_prefix();
    let store = hourglass_core::store::open(&dir)?;
    let spec = synth::SynthSpec { rows: a.rows, files: a.files, format: a.format.into(), seed: a.seed, label: a.label };
    let files = synth::generate(store.as_ref(), &dir, &spec).await?;
    if a.json {
        let files: Vec<String> = files.iter().map(ToString::to_string).collect();
        let out = serde_json::json!({ "output": dir.to_string(), "rows": a.rows, "files": files, "seed": a.seed });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("wrote {} rows in {} files under {dir}", a.rows, files.len());
    }
    Ok(())
}
