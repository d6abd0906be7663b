//! `hourglass scaler` (the live loop) and `hourglass scaler simulate`:
//! flags to configs, wiring only.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use hourglass_core::ledger::Ledger;
use hourglass_core::units::parse_count as count;
use hourglass_core::{BlobUrl, queue, schedule, store};
use hourglass_scaler::kube::{DeploymentRef, Kube};
use hourglass_scaler::policy::{PolicyConfig, PolicyKind};
use hourglass_scaler::run::{LoopConfig, Mode, Prewarm, Scaler};
use hourglass_scaler::signals::{LedgerWatch, prewarm_from_last_run};
use hourglass_scaler::sim::{self, Scenario, SimJob};

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

#[derive(Args)]
struct RunArgs {
    /// The work queue (SQS URL, sqs://name or local://path).
    #[arg(long, env = "HOURGLASS_QUEUE", required = true)]
    queue: Option<String>,
    /// The worker Deployment, namespace/name.
    #[arg(long, required = true, env = "HOURGLASS_DEPLOYMENT")]
    deployment: Option<DeploymentRef>,
    /// The placeholder (pause pod) Deployment, namespace/name.
    #[arg(long, env = "HOURGLASS_PLACEHOLDERS")]
    placeholders: Option<DeploymentRef>,
    /// The current job's output prefix: rows left, deadline and measured
    /// throughput come from its ledger. `{date}` (today in --tz) follows a
    /// nightly run's job from night to night.
    #[arg(long, env = "HOURGLASS_LEDGER")]
    ledger: Option<String>,
    /// Follow every job registered on --queue in this jobs index (what
    /// `submit --jobs-index` and `watch --jobs-index` write), sizing for
    /// all of them together: their rows left, the earliest deadline.
    #[arg(long, env = "HOURGLASS_JOBS_INDEX")]
    jobs_index: Option<String>,
    /// With --jobs-index: the UTC days of registrations read (today and
    /// the days before it).
    #[arg(long, default_value_t = 2, env = "HOURGLASS_JOBS_DAYS")]
    jobs_days: u32,
    /// Time zone of `{date}` in --ledger, of --deadline and of --prewarm-at.
    #[arg(long, default_value = "UTC", env = "HOURGLASS_TZ")]
    tz: String,
    /// Deadline when the ledger has none, or to override it: the forms of
    /// `submit --deadline` (`+1h`, `06:00` in --tz, RFC 3339), read once
    /// when the scaler starts.
    #[arg(long, env = "HOURGLASS_DEADLINE")]
    deadline: Option<String>,
    /// Rows per message when the ledger cannot say.
    #[arg(long, default_value = "1000000", value_parser = count, env = "HOURGLASS_ROWS_PER_MESSAGE")]
    rows_per_message: f64,
    /// Pre-warm nodes daily at HH:MM in --tz (a wall-clock time: it stays
    /// at 01:30 Berlin across DST), before the scheduled run.
    #[arg(long, env = "HOURGLASS_PREWARM_AT")]
    prewarm_at: Option<String>,
    /// Worker pods to pre-warm room for: a number, or `auto` to size it from
    /// the last run's ledger (--prewarm-from).
    #[arg(long, requires = "prewarm_at", env = "HOURGLASS_PREWARM_REPLICAS")]
    prewarm_replicas: Option<String>,
    /// The last run's output prefix, for `--prewarm-replicas auto`.
    #[arg(long, env = "HOURGLASS_PREWARM_FROM")]
    prewarm_from: Option<String>,
    /// How long the pre-warm window lasts.
    #[arg(long, default_value = "1h", value_parser = duration, env = "HOURGLASS_PREWARM_FOR")]
    prewarm_for: Duration,
    #[arg(long, default_value = "15s", value_parser = duration, env = "HOURGLASS_INTERVAL")]
    interval: Duration,
    /// Kubeconfig file; default: in-cluster service account, else KUBECONFIG / ~/.kube/config.
    #[arg(long, env = "HOURGLASS_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Serve Prometheus metrics here (e.g. 0.0.0.0:9090).
    #[arg(long, env = "HOURGLASS_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// One tick, then exit (non-zero if it could not read its signals or a write failed).
    #[arg(long)]
    once: bool,
    /// With --once: print the tick (signals, decision, writes) as JSON.
    #[arg(long, requires = "once")]
    json: bool,
    /// Decide and log, write nothing.
    #[arg(long, env = "HOURGLASS_DRY_RUN")]
    dry_run: bool,
    /// `patch`: scale the Deployments through their scale subresource.
    /// `advise`: patch nothing and serve the decision at /keda on
    /// --metrics-addr for KEDA's metrics-api scaler (the chart's
    /// keda.enabled).
    #[arg(long, value_enum, default_value = "patch", env = "HOURGLASS_SCALER_MODE")]
    mode: ModeArg,
    /// Annotate worker pods by whether they hold a shard, so scale-down
    /// takes idle pods (pod-deletion-cost) and node autoscalers leave busy
    /// pods' nodes alone (safe-to-evict, do-not-disrupt). Reads each
    /// worker's metrics port; needs patch on pods.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, env = "HOURGLASS_PROTECT_BUSY_PODS")]
    protect_busy_pods: bool,
    #[command(flatten)]
    policy: PolicyArgs,
}

#[derive(Args)]
struct SimulateArgs {
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

pub async fn run(a: ScalerArgs) -> Result<()> {
    match a.command {
        Some(ScalerCommand::Simulate(s)) => simulate(s).await,
        None => live(a.run).await,
    }
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

async fn simulate(a: SimulateArgs) -> Result<()> {
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

async fn live(a: RunArgs) -> Result<()> {
    let (Some(queue_url), Some(worker)) = (a.queue, a.deployment) else {
        bail!("--queue and --deployment are required");
    };
    let policy = a.policy.config(a.rows_per_message);
    let queue = queue::open(&queue_url)?;
    let mut follow: Option<hourglass_scaler::run::LedgerFor> = None;
    let ledger = match &a.ledger {
        Some(template) if schedule::is_template(template) => {
            let tz = schedule::time_zone(&a.tz)?;
            let template = template.clone();
            let expand = move |now: SystemTime| -> Result<BlobUrl> {
                let date = schedule::run_date("today", jiff::Timestamp::try_from(now)?, &tz)?;
                Ok(BlobUrl::parse(&schedule::expand("--ledger", &template, date)?)?.as_prefix())
            };
            // A bad template fails here, not on every tick.
            expand(SystemTime::now())?;
            follow = Some(Box::new(move |now| {
                expand(now).map_err(|e| tracing::warn!(error = %e, "--ledger: cannot expand")).ok()
            }));
            None
        }
        Some(url) => {
            let url = BlobUrl::parse(url)?.as_prefix();
            Some(LedgerWatch::new(Ledger::new(store::open(&url)?, &url)).for_device_class(&a.policy.device_class))
        }
        None => None,
    };
    let tz = schedule::time_zone(&a.tz)?;
    let deadline = match &a.deadline {
        Some(s) => Some(SystemTime::from(schedule::parse_instant("--deadline", s, jiff::Timestamp::now(), &tz)?)),
        None => None,
    };
    let prewarm_at = a.prewarm_at.as_deref().map(|s| schedule::parse_time_of_day("--prewarm-at", s)).transpose()?;
    let prewarm = match (prewarm_at, a.prewarm_replicas.as_deref()) {
        (Some(at), Some("auto")) => {
            let Some(from) = &a.prewarm_from else {
                bail!("--prewarm-replicas auto needs --prewarm-from <last run's output>")
            };
            let url = BlobUrl::parse(from)?.as_prefix();
            let last = Ledger::new(store::open(&url)?, &url);
            let job = last.read_job().await?.with_context(|| format!("--prewarm-from {url}: no job record there"))?;
            let done = last.done_records().await?;
            let replicas = prewarm_from_last_run(&policy, &job, &done)
                .with_context(|| format!("--prewarm-from {url}: that run had no deadline to size from"))?;
            tracing::info!(replicas, from = %url, "pre-warm sized from the last run");
            Some(Prewarm { at, tz: tz.clone(), hold: a.prewarm_for, replicas })
        }
        (Some(at), Some(n)) => {
            let replicas = n.parse().with_context(|| format!("--prewarm-replicas {n:?}: a number or auto"))?;
            Some(Prewarm { at, tz: tz.clone(), hold: a.prewarm_for, replicas })
        }
        (Some(_), None) => bail!("--prewarm-at needs --prewarm-replicas N|auto"),
        (None, _) => None,
    };
    if prewarm.is_some() && a.placeholders.is_none() {
        bail!("pre-warming needs --placeholders <namespace/name> of the placeholder Deployment");
    }
    if a.mode == ModeArg::Advise && a.metrics_addr.is_none() && !a.once {
        bail!("--mode advise serves its decision at /keda on --metrics-addr: give one (e.g. 0.0.0.0:9090)");
    }
    let kube = match &a.kubeconfig {
        Some(path) => Kube::from_kubeconfig(path).await?,
        None => Kube::infer().await.context("connecting to Kubernetes (in-cluster or KUBECONFIG)")?,
    };
    let target = worker.to_string();
    let cfg = LoopConfig {
        prices: a.policy.node_prices.clone().unwrap_or_default(),
        protect_busy_pods: a.protect_busy_pods,
        policy,
        interval: a.interval,
        worker,
        placeholders: a.placeholders,
        deadline,
        prewarm,
        dry_run: a.dry_run,
        mode: match a.mode {
            ModeArg::Patch => Mode::Patch,
            ModeArg::Advise => Mode::Advise,
        },
    };
    let mut scaler = Scaler::new(cfg, queue, ledger, kube).for_device_class(&a.policy.device_class);
    if let Some(f) = follow {
        scaler = scaler.follow_ledger(f);
    }
    if let Some(index) = &a.jobs_index {
        let index = hourglass_core::jobs::JobsIndex::open(&BlobUrl::parse(index)?)?;
        scaler = scaler.follow_index(index, a.jobs_days);
    }
    let _metrics =
        super::serve_metrics(a.metrics_addr, |r| scaler.metrics().register(r), std::sync::Arc::new(scaler.advice()))
            .await?;
    if a.once {
        let report = scaler.tick(SystemTime::now()).await?;
        let errors: Vec<String> = report.errors.iter().map(|e| hourglass_core::error::chain(e)).collect();
        if a.json {
            let (s, d) = (&report.signals, &report.decision);
            let out = serde_json::json!({
                "signals": {
                    "now_unix_seconds": s.now.as_secs_f64(),
                    "deadline_unix_seconds": s.deadline.map(|t| t.as_secs_f64()),
                    "backlog_rows": s.backlog_rows,
                    "visible": s.visible,
                    "in_flight": s.in_flight,
                    "measured_rows_per_sec": s.measured_rows_per_sec,
                    "current_replicas": s.current_replicas,
                    "schedulable_replicas": s.schedulable_replicas,
                },
                "decision": {
                    "desired_replicas": d.desired_replicas,
                    "placeholder_replicas": d.placeholder_replicas,
                    "projected_finish_unix_seconds": d.projected_finish.map(|t| t.as_secs_f64()),
                    "verdict": format!("{:?}", d.verdict).to_lowercase(),
                },
                "explanation": hourglass_scaler::run::explain(&report.signals, &report.decision, report.signals.current_replicas),
                "placeholders": report.placeholders,
                "changed_worker": report.changed_worker,
                "changed_placeholders": report.changed_placeholders,
                "dry_run": a.dry_run,
                "mode": if a.mode == ModeArg::Advise { "advise" } else { "patch" },
                "conflict": report.conflict,
                "errors": errors,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        } else {
            println!(
                "{}",
                hourglass_scaler::run::explain(&report.signals, &report.decision, report.signals.current_replicas)
            );
            println!("placeholders {}", report.placeholders);
        }
        if !errors.is_empty() {
            bail!("{}", errors.join("; "));
        }
        if let Some(found) = &report.conflict {
            bail!(
                "refused to scale {target}: HorizontalPodAutoscaler {found} targets it (use --mode advise with KEDA)"
            );
        }
        return Ok(());
    }
    scaler.run(super::stop_signal()).await;
    Ok(())
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
