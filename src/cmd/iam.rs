//! `hourglass iam policy`: least-privilege IAM policies per component.

use anyhow::Result;
use clap::{Args, Subcommand};
use hourglass_core::{BlobUrl, iam};

#[derive(Subcommand)]
pub enum IamCommand {
    /// Print a component's IAM policy (deploy/iam/ROLE.json) scoped to a
    /// job's prefixes and queues, ready for `aws iam put-role-policy`.
    Policy(IamPolicyArgs),
}

#[derive(Args)]
pub struct IamPolicyArgs {
    /// worker, submit, scaler, watcher, serve (the registry or model as --model)
    /// or trainer (the dataset as --input, the training job's output as --output,
    /// the registry root as --model).
    #[arg(long)]
    role: String,
    /// Input prefix (s3://bucket/prefix/), above any {date} part.
    #[arg(long)]
    input: Option<String>,
    /// Output prefix: outputs and the job ledger.
    #[arg(long)]
    output: Option<String>,
    /// Model object or prefix.
    #[arg(long)]
    model: Option<String>,
    /// The work queue's URL or ARN.
    #[arg(long)]
    queue: Option<String>,
    /// Its dead-letter queue (default: the queue's name + `-dlq`).
    #[arg(long)]
    dlq: Option<String>,
    /// The S3 event notification queue (watcher).
    #[arg(long)]
    events_queue: Option<String>,
    /// Region of queue URLs that do not name one.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    region: String,
}

pub fn run(c: IamCommand) -> Result<()> {
    let IamCommand::Policy(a) = c;
    let url = |u: Option<String>| u.as_deref().map(BlobUrl::parse).transpose();
    let targets = iam::Targets {
        input: url(a.input)?,
        output: url(a.output)?.map(|u| u.as_prefix()),
        model: url(a.model)?,
        queue: a.queue,
        dlq: a.dlq,
        events_queue: a.events_queue,
        region: a.region,
    };
    println!("{}", iam::render(iam::Role::parse(&a.role)?, &targets)?);
    Ok(())
}
