//! `hourglass scaler`: the live loop's flags, and the loop started with them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use clap::Args;
use hourglass_core::ledger::Ledger;
use hourglass_core::units::parse_count as count;
use hourglass_core::{BlobUrl, queue, schedule, store};
use hourglass_scaler::kube::{DeploymentRef, Kube};
use hourglass_scaler::run::{LoopConfig, Mode, Prewarm, Scaler};
use hourglass_scaler::signals::{LedgerWatch, prewarm_from_last_run};

use super::{ModeArg, PolicyArgs, duration};

#[derive(Args)]
pub(super) struct RunArgs {
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

pub(super) async fn live(a: RunArgs) -> Result<()> {
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
    let _metrics = crate::cmd::serve_metrics(
        a.metrics_addr,
        |r| scaler.metrics().register(r),
        std::sync::Arc::new(scaler.advice()),
    )
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
    scaler.run(crate::cmd::stop_signal()).await;
    Ok(())
}
