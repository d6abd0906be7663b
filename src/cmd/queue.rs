//! `hourglass queue create`: an SQS queue and its dead-letter queue.

use anyhow::Result;
use clap::{Args, Subcommand};
use hourglass_core::queue;
use hourglass_worker::config;
use std::time::Duration;

#[derive(Subcommand)]
pub enum QueueCommand {
    /// Create an SQS queue and its dead-letter queue `<name>-dlq`; prints the queue URL.
    ///
    /// Attributes: the visibility timeout is the workers' default lease
    /// (workers pass their own on every receive and extend it while they
    /// work); long polling of 20 s (the SQS maximum) is the default wait;
    /// messages and dead letters are kept 14 days (the SQS maximum), so a
    /// paused job survives a long weekend; after --max-attempts + 2
    /// receives a message moves to the dead-letter queue (a RedrivePolicy),
    /// a backstop for shards whose workers die every time: workers
    /// themselves give up at their own --max-attempts and record why.
    Create(QueueCreateArgs),
}

#[derive(Args)]
pub struct QueueCreateArgs {
    #[arg(long)]
    name: String,
    /// The workers' --max-attempts. SQS's redrive moves a message to the
    /// dead-letter queue after max-attempts + 2 receives: a worker must see
    /// the delivery past its last attempt to record the shard as failed
    /// (kind `lost`) before it goes, or the job would wait forever; the
    /// second spare covers a worker that dies while recording it.
    #[arg(long, default_value_t = config::DEFAULT_MAX_ATTEMPTS, env = "HOURGLASS_MAX_ATTEMPTS")]
    max_attempts: u32,
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration, env = "HOURGLASS_VISIBILITY_TIMEOUT")]
    visibility_timeout: Duration,
    /// Print the queue's settings as JSON (URL, dead-letter URL, redrive).
    #[arg(long)]
    json: bool,
}

pub async fn run(c: QueueCommand) -> Result<()> {
    match c {
        QueueCommand::Create(a) => {
            let options =
                queue::CreateOptions { visibility_timeout: a.visibility_timeout, max_receives: a.max_attempts + 2 };
            let created = queue::SqsQueue::create(&a.name, &options).await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&created)?);
            } else {
                println!("{}", created.url);
            }
        }
    }
    Ok(())
}
