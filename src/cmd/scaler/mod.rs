//! `hourglass scaler` (the live loop, `live`) and `hourglass scaler
//! simulate` (`simulate`): flags to configs, wiring only. The policy flags
//! both share are here.

use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use hourglass_core::units::parse_count as count;
use hourglass_scaler::policy::{PolicyConfig, PolicyKind};
use hourglass_scaler::sim::SimJob;

mod live;
mod simulate;

use live::RunArgs;
use simulate::SimulateArgs;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ScalerArgs {
    #[command(subcommand)]
    command: Option<ScalerCommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum ScalerCommand {
    /// Run the policy against a simulated cluster and print finish time,
    /// node-hours, peak nodes and shards redone.
    Simulate(SimulateArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
enum ModeArg {
    Patch,
    Advise,
}

#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
enum PolicyArg {
    /// Fewest replicas that finish before the deadline minus the margin.
    Deadline,
    /// KEDA's SQS rule: ceil((visible + in flight) / --target-messages-per-replica).
    QueueLength,
}

impl From<PolicyArg> for PolicyKind {
    fn from(p: PolicyArg) -> Self {
        match p {
            PolicyArg::Deadline => PolicyKind::Deadline,
            PolicyArg::QueueLength => PolicyKind::QueueLength,
        }
    }
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))
}

/// The policy's knobs, shared by the live loop and the simulator so the
/// simulation runs exactly the policy that would run live.
#[derive(Args, Clone)]
struct PolicyArgs {
    #[arg(long, value_enum, default_value = "deadline", env = "HOURGLASS_POLICY")]
    policy: PolicyArg,
    #[arg(long, default_value_t = 0, env = "HOURGLASS_MIN_REPLICAS")]
    min_replicas: u32,
    #[arg(long, default_value_t = 100, env = "HOURGLASS_MAX_REPLICAS")]
    max_replicas: u32,
    /// Most replicas added by one decision.
    #[arg(long, default_value_t = 100, env = "HOURGLASS_MAX_STEP_UP")]
    max_step_up: u32,
    /// Most replicas removed by one decision.
    #[arg(long, default_value_t = 10, env = "HOURGLASS_MAX_STEP_DOWN")]
    max_step_down: u32,
    /// Scale down only to the highest desire of this window (the HPA's 5 min).
    #[arg(long, default_value = "5m", value_parser = duration, env = "HOURGLASS_SCALE_DOWN_STABILIZATION")]
    scale_down_stabilization: Duration,
    /// Scale to zero after the queue has been empty this long.
    #[arg(long, default_value = "5m", value_parser = duration, env = "HOURGLASS_IDLE_COOLDOWN")]
    idle_cooldown: Duration,
    /// Aim to finish this long before the deadline, or --safety-margin-fraction
    /// of the time left, whichever is less.
    #[arg(long, default_value = "5m", value_parser = duration, env = "HOURGLASS_SAFETY_MARGIN")]
    safety_margin: Duration,
    #[arg(long, default_value_t = 0.1, value_parser = fraction, env = "HOURGLASS_SAFETY_MARGIN_FRACTION")]
    safety_margin_fraction: f64,
    /// Spot interruptions per node-hour the policy plans for (and, in
    /// `simulate`, the rate the simulated cluster has).
    #[arg(long, default_value_t = 0.05, value_parser = fraction_any, env = "HOURGLASS_SPOT_INTERRUPTIONS_PER_HOUR")]
    spot_interruptions_per_hour: f64,
    /// How long a worker pod takes from scheduled to taking work.
    #[arg(long, default_value = "30s", value_parser = duration, env = "HOURGLASS_POD_START")]
    pod_start: Duration,
    /// How long a new node takes to join (spot: 2-4 min).
    #[arg(long, default_value = "3m", value_parser = duration, env = "HOURGLASS_NODE_BOOT")]
    node_boot: Duration,
    #[arg(long, default_value_t = 4, env = "HOURGLASS_PODS_PER_NODE")]
    pods_per_node: u32,
    /// Rows/s of one worker pod before any shard has been measured: a
    /// number, or one per device class (`cpu=250000,cuda=2e6,tensorrt=3e6`,
    /// repeatable or comma-separated), of which --device-class picks one.
    #[arg(long = "pod-rows-per-sec", default_value = "250000", value_parser = parse_pod_rate, value_delimiter = ',', env = "HOURGLASS_POD_ROWS_PER_SEC")]
    pod_rows_per_sec: Vec<PodRate>,
    /// The device class the worker Deployment's pods score on (cpu, cuda,
    /// tensorrt): picks the --pod-rows-per-sec prior, and only done records
    /// scored on this class (or recording none) feed the measured rate, so
    /// a CPU fleet's shards on the same queue do not drag a GPU fleet's rate.
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda", "tensorrt"], env = "HOURGLASS_DEVICE_CLASS")]
    device_class: String,
    /// KEDA's `queueLength`: messages per replica for the queue-length rule
    /// (and for the deadline rule when the job has no deadline).
    #[arg(long, default_value_t = 5, env = "HOURGLASS_TARGET_MESSAGES_PER_REPLICA")]
    target_messages_per_replica: u64,
    /// Shards one worker pod takes at once (its --concurrency).
    #[arg(long, default_value_t = 1, env = "HOURGLASS_WORKER_CONCURRENCY")]
    worker_concurrency: u32,
    /// Node-hour prices (`spot=0.12,on-demand=0.38`, by instance type
    /// `m7i.2xlarge/spot=0.15`, `*` for the rest): the live loop exports
    /// hourglass_job_cost_dollars of the jobs it follows; `simulate`
    /// prices each policy's node-hours (its nodes are spot).
    #[arg(long, env = "HOURGLASS_NODE_PRICES", value_parser = hourglass_core::cost::Prices::parse)]
    node_prices: Option<hourglass_core::cost::Prices>,
}

/// One `--pod-rows-per-sec` entry: a rate for every class, or for one.
#[derive(Clone, Debug, PartialEq)]
struct PodRate {
    class: Option<String>,
    rows_per_sec: f64,
}

fn parse_sim_job(s: &str) -> Result<SimJob, String> {
    let (mut rows, mut at, mut deadline) = (None, Duration::ZERO, None);
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = part.split_once('=').ok_or_else(|| format!("{part:?}: expected key=value"))?;
        match key.trim() {
            "rows" => rows = Some(count(value.trim())?),
            "at" => at = duration(value.trim().trim_start_matches('+'))?,
            "deadline" => deadline = Some(duration(value.trim().trim_start_matches('+'))?),
            other => return Err(format!("{other:?}: a job is rows=N,at=DURATION,deadline=DURATION")),
        }
    }
    let rows = rows.filter(|r| *r > 0.0).ok_or_else(|| format!("{s:?}: needs rows=N (above 0)"))?;
    let deadline = deadline.ok_or_else(|| format!("{s:?}: needs deadline=DURATION (from --start)"))?;
    if deadline <= at {
        return Err(format!("{s:?}: the deadline is not after the arrival"));
    }
    Ok(SimJob { rows, arrival: at, deadline })
}

fn fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("{s:?}: expected a number from 0 to 1")),
    }
}

fn fraction_any(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f >= 0.0 && f.is_finite() => Ok(f),
        _ => Err(format!("{s:?}: expected a number, 0 or more")),
    }
}

fn parse_pod_rate(s: &str) -> Result<PodRate, String> {
    let (class, rate) = match s.split_once('=') {
        Some((c, r)) => {
            let c = c.trim().to_ascii_lowercase();
            if !["cpu", "cuda", "tensorrt"].contains(&c.as_str()) {
                return Err(format!("{s:?}: the device class is cpu, cuda or tensorrt"));
            }
            (Some(c), r)
        }
        None => (None, s),
    };
    let rows_per_sec = count(rate.trim())?;
    if rows_per_sec <= 0.0 {
        return Err(format!("{s:?}: the rate must be above 0"));
    }
    Ok(PodRate { class, rows_per_sec })
}

impl PolicyArgs {
    /// The prior rate for --device-class: its own entry, else the entry
    /// without a class, else the CPU default.
    fn pod_rate(&self) -> f64 {
        let of = |class: Option<&str>| {
            self.pod_rows_per_sec.iter().rev().find(|r| r.class.as_deref() == class).map(|r| r.rows_per_sec)
        };
        of(Some(&self.device_class)).or_else(|| of(None)).unwrap_or(250_000.0)
    }

    fn config(&self, rows_per_message: f64) -> PolicyConfig {
        PolicyConfig {
            kind: self.policy.into(),
            min_replicas: self.min_replicas,
            max_replicas: self.max_replicas,
            max_step_up: self.max_step_up,
            max_step_down: self.max_step_down,
            scale_down_stabilization: self.scale_down_stabilization,
            idle_cooldown: self.idle_cooldown,
            safety_margin: self.safety_margin,
            safety_margin_fraction: self.safety_margin_fraction,
            interruptions_per_node_hour: self.spot_interruptions_per_hour,
            pod_start: self.pod_start,
            node_boot: self.node_boot,
            pods_per_node: self.pods_per_node,
            prior_rows_per_sec: self.pod_rate(),
            prior_rows_per_message: rows_per_message,
            target_messages_per_replica: self.target_messages_per_replica,
            shards_per_replica: self.worker_concurrency,
        }
    }
}

pub async fn run(a: ScalerArgs) -> Result<()> {
    match a.command {
        Some(ScalerCommand::Simulate(s)) => simulate::simulate(s).await,
        None => live::live(a.run).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        policy: PolicyArgs,
    }

    fn rate(args: &[&str]) -> f64 {
        Cli::try_parse_from([&["x"], args].concat()).unwrap().policy.pod_rate()
    }

    #[test]
    fn the_prior_rate_is_chosen_by_device_class() {
        assert_eq!(rate(&[]), 250_000.0);
        assert_eq!(rate(&["--pod-rows-per-sec", "300000"]), 300_000.0);
        let mixed = ["--pod-rows-per-sec", "cpu=250000,cuda=2e6", "--pod-rows-per-sec", "1e5"];
        assert_eq!(rate(&[&mixed[..], &["--device-class", "cuda"]].concat()), 2e6);
        assert_eq!(rate(&[&mixed[..], &["--device-class", "cpu"]].concat()), 250_000.0);
        // No entry for the class: the one without a class.
        assert_eq!(rate(&[&mixed[..], &["--device-class", "tensorrt"]].concat()), 1e5);
        for bad in ["gpu=1e6", "cuda=0", "cuda=fast"] {
            assert!(Cli::try_parse_from(["x", "--pod-rows-per-sec", bad]).is_err(), "{bad}");
        }
    }
}
