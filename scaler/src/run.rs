//! The live loop: every tick, read the signals (queue depth, the job's
//! ledger, the Deployments' scale and pods), decide with the policy, and
//! write the replica counts. Level-triggered and idempotent: each tick
//! compares what is with what should be and patches only the difference, so
//! a restarted scaler, a missed tick or a failed call is repaired by the
//! next tick. A failed API call is logged and counted, never fatal.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hourglass_core::BlobUrl;
use hourglass_core::ledger::Ledger;
use hourglass_core::queue::Queue;
use hourglass_core::schedule;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::kube::{DeploymentRef, EventType, Kube, KubeError};
use crate::policy::{Decision, History, PolicyConfig, Signals, Verdict, decide};
use crate::signals::{LedgerWatch, Progress, combine};
use hourglass_core::jobs::JobsIndex;

/// Keep placeholder pods up daily from `at` (a wall-clock time in `tz`, so
/// a Berlin pre-warm stays at 01:30 Berlin across DST) for `hold`, sized to
/// `replicas` worker pods: nodes are booted and warm when the scheduled
/// run's work lands.
#[derive(Debug, Clone, PartialEq)]
pub struct Prewarm {
    pub at: jiff::civil::Time,
    pub tz: jiff::tz::TimeZone,
    pub hold: Duration,
    pub replicas: u32,
}

impl Prewarm {
    /// Whether `now` falls in today's (or yesterday's, past midnight) window.
    pub fn active(&self, now: SystemTime) -> bool {
        let Ok(now) = jiff::Timestamp::try_from(now) else { return false };
        let Some(start) = schedule::last_time_of_day(self.at, now, &self.tz) else { return false };
        now.duration_since(start).unsigned_abs() < self.hold
    }
}

#[derive(Debug, Clone)]
pub struct LoopConfig {
    pub policy: PolicyConfig,
    pub interval: Duration,
    pub worker: DeploymentRef,
    pub placeholders: Option<DeploymentRef>,
    /// Overrides the job's own deadline (or gives one when there is no ledger).
    pub deadline: Option<SystemTime>,
    pub prewarm: Option<Prewarm>,
    /// Decide and report, patch nothing.
    pub dry_run: bool,
    pub mode: Mode,
    /// Node-hour prices for the followed jobs' cost metric.
    pub prices: hourglass_core::cost::Prices,
    /// Annotate worker pods by whether they hold a shard (`busy`).
    pub protect_busy_pods: bool,
}

/// Who acts on the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// The scaler patches the Deployments' scale itself.
    #[default]
    Patch,
    /// The scaler only serves its decision (`/keda`, as KEDA's metrics-api
    /// scaler reads it) and patches nothing: KEDA's HPA does the scaling.
    Advise,
}

/// The latest decision, as served at `/keda` (KEDA's `metrics-api`
/// trigger reads `desiredReplicas` with `targetValue: "1"`, so the HPA it
/// makes asks for exactly that many replicas).
#[derive(Debug, Clone, PartialEq)]
pub struct Advice {
    pub desired_replicas: u32,
    pub placeholder_replicas: u32,
    pub verdict: Verdict,
    pub projected_finish: Option<Duration>,
    pub deadline: Option<Duration>,
    /// When the tick that decided it ran (Unix time).
    pub decided_at: Duration,
}

impl Advice {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "desiredReplicas": self.desired_replicas,
            "placeholderReplicas": self.placeholder_replicas,
            "verdict": self.verdict.as_str(),
            "projectedFinishUnixSeconds": self.projected_finish.map(|d| d.as_secs_f64()),
            "deadlineUnixSeconds": self.deadline.map(|d| d.as_secs_f64()),
            "decidedAtUnixSeconds": self.decided_at.as_secs_f64(),
        })
    }
}

/// Serves the latest `Advice` at `/keda` beside `/metrics`. A decision
/// older than `stale_after` (the ticks have been failing: the queue or the
/// ledger cannot be read) is a 503, so KEDA counts a failure and applies
/// its `fallback` instead of acting on an old number.
#[derive(Clone)]
pub struct AdviceEndpoint {
    latest: Arc<std::sync::RwLock<Option<(std::time::Instant, Advice)>>>,
    stale_after: Duration,
}

impl hourglass_core::metrics::Health for AdviceEndpoint {
    fn json(&self, path: &str) -> Option<Result<String, String>> {
        if path != "/keda" {
            return None;
        }
        let latest = self.latest.read().unwrap_or_else(|e| e.into_inner());
        Some(match &*latest {
            None => Err("no decision yet: the first tick has not completed".into()),
            Some((at, _)) if at.elapsed() > self.stale_after => Err(format!(
                "the last decision is {} s old: ticks are failing (see the scaler's log and hourglass_scaler_errors_total)",
                at.elapsed().as_secs()
            )),
            Some((_, advice)) => Ok(advice.to_json().to_string()),
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    op: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    hourglass_job: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobStateLabels {
    /// Not `job`: Prometheus' own target label would shadow it.
    hourglass_job: String,
    state: String,
}

/// The scaler's metrics; names are the contract the dashboards use.
#[derive(Default)]
pub struct Metrics {
    desired: Gauge,
    current: Gauge,
    scheduled: Gauge,
    pending: Gauge,
    placeholders: Gauge,
    job_shards: Family<JobStateLabels, Gauge>,
    job_shards_planned: Family<JobLabels, Gauge>,
    projected_finish: Gauge<f64, AtomicU64>,
    deadline: Gauge<f64, AtomicU64>,
    oldest_message_age: Gauge<f64, AtomicU64>,
    slack: Gauge<f64, AtomicU64>,
    backlog_rows: Gauge,
    rows_per_sec: Gauge<f64, AtomicU64>,
    at_risk: Gauge,
    queue: Family<StateLabels, Gauge>,
    ticks: Counter,
    scale_changes: Counter,
    errors: Family<ErrorLabels, Counter>,
    conflict: Gauge,
    job_node_seconds: Family<JobLabels, Gauge<f64, AtomicU64>>,
    busy_pods: Gauge,
    job_cost: Family<JobLabels, Gauge<f64, AtomicU64>>,
}

impl Metrics {
    pub fn register(&self, r: &mut Registry) {
        let p = "hourglass_scaler";
        r.register(format!("{p}_desired_replicas"), "Worker replicas the policy asks for", self.desired.clone());
        r.register(format!("{p}_current_replicas"), "Worker replicas the Deployment has (spec)", self.current.clone());
        r.register(
            format!("{p}_worker_pods_scheduled"),
            "Worker pods bound to a node (running or starting)",
            self.scheduled.clone(),
        );
        r.register(format!("{p}_worker_pods_pending"), "Worker pods waiting for a node", self.pending.clone());
        r.register(
            format!("{p}_job_shards"),
            "Shards of the watched job by state: done, pending (they add up to _planned)",
            self.job_shards.clone(),
        );
        r.register(
            format!("{p}_job_shards_planned"),
            "Shards the watched job was planned with",
            self.job_shards_planned.clone(),
        );
        r.register(format!("{p}_placeholder_replicas"), "Placeholder pods asked for", self.placeholders.clone());
        r.register(
            format!("{p}_projected_finish_timestamp_seconds"),
            "Projected finish of the backlog, Unix time (NaN when there is no deadline or no work)",
            self.projected_finish.clone(),
        );
        r.register(
            format!("{p}_deadline_timestamp_seconds"),
            "The deadline the policy works to, Unix time (NaN when there is none)",
            self.deadline.clone(),
        );
        r.register(
            format!("{p}_queue_oldest_message_age_seconds"),
            "Age of the oldest queued message: from the queue where it can tell, else since the watched job was submitted while it has shards left (NaN when unknown or empty)",
            self.oldest_message_age.clone(),
        );
        r.register(
            format!("{p}_deadline_slack_seconds"),
            "Deadline minus projected finish; negative means late (NaN when unknown)",
            self.slack.clone(),
        );
        r.register(
            format!("{p}_backlog_rows"),
            "Rows not yet done, from the ledger or estimated",
            self.backlog_rows.clone(),
        );
        r.register(
            format!("{p}_replica_rows_per_second"),
            "Measured (or prior) rows/s of one replica",
            self.rows_per_sec.clone(),
        );
        r.register(
            format!("{p}_deadline_at_risk"),
            "1 while the projected finish misses the deadline",
            self.at_risk.clone(),
        );
        r.register(format!("{p}_queue_messages"), "Queue depth by state, as the scaler saw it", self.queue.clone());
        r.register(format!("{p}_ticks"), "Decisions made", self.ticks.clone());
        r.register(format!("{p}_scale_changes"), "Replica changes written", self.scale_changes.clone());
        r.register(format!("{p}_errors"), "Failed reads and writes by operation and kind", self.errors.clone());
        r.register(
            format!("{p}_worker_pods_busy"),
            "Worker pods holding a shard at the last tick (annotated against scale-down and node consolidation)",
            self.busy_pods.clone(),
        );
        r.register(
            "hourglass_job_node_seconds",
            "Node-seconds a followed job's done units took (pod-seconds over --pods-per-node)",
            self.job_node_seconds.clone(),
        );
        r.register(
            "hourglass_job_cost_dollars",
            "A followed job's cost so far at --node-prices (absent without prices, or while some usage has no price)",
            self.job_cost.clone(),
        );
        r.register(
            format!("{p}_autoscaler_conflict"),
            "1 while another autoscaler (an HPA, or KEDA through one) targets the worker Deployment and the scaler refuses to patch it",
            self.conflict.clone(),
        );
    }

    fn error(&self, op: &str, kind: &str) {
        self.errors.get_or_create(&ErrorLabels { op: op.into(), kind: kind.into() }).inc();
    }
}

/// What one tick saw and did.
#[derive(Debug)]
pub struct TickReport {
    pub signals: Signals,
    pub progress: Progress,
    pub decision: Decision,
    pub placeholders: u32,
    /// Writes that were needed (patches, in dry-run too).
    pub changed_worker: bool,
    pub changed_placeholders: bool,
    /// Other autoscalers found on the worker Deployment: the patch was
    /// refused.
    pub conflict: Option<String>,
    /// Failed writes this tick (the tick went on without them).
    pub errors: Vec<crate::Error>,
}

pub struct Scaler {
    cfg: LoopConfig,
    queue: Arc<dyn Queue>,
    ledger: Option<LedgerWatch>,
    kube: Kube,
    metrics: Arc<Metrics>,
    history: History,
    last_verdict: Option<Verdict>,
    follow: Option<LedgerFor>,
    /// The worker pods' device class: whose done records measure the rate.
    device_class: Option<String>,
    advice: AdviceEndpoint,
    /// The other autoscalers last found on the worker Deployment.
    last_conflict: Option<Vec<String>>,
    index: Option<IndexFollow>,
    published_jobs: std::collections::HashSet<String>,
}

/// Every job the jobs index has registered on the scaler's queue lately.
struct IndexFollow {
    index: JobsIndex,
    days: u32,
    jobs: std::collections::BTreeMap<String, Followed>,
}

struct Followed {
    watch: LedgerWatch,
    last: Progress,
    submitted_at_ms: u64,
    /// Every row done: not read again.
    finished: bool,
}

/// Which ledger to follow at a time: a nightly run's output prefix holds its
/// date (`s3://preds/dt={date}/`), so the scaler moves to the next night's
/// job when the date turns. Errors (a bad template) are the CLI's to catch
/// before the loop starts.
pub type LedgerFor = Box<dyn Fn(SystemTime) -> Option<BlobUrl> + Send + Sync>;

fn unix(t: SystemTime) -> Duration {
    t.duration_since(UNIX_EPOCH).unwrap_or_default()
}

fn clock(d: Duration) -> String {
    let s = d.as_secs() % 86_400;
    format!("{:02}:{:02}:{:02} UTC", s / 3600, s / 60 % 60, s % 60)
}

impl Scaler {
    pub fn new(cfg: LoopConfig, queue: Arc<dyn Queue>, ledger: Option<LedgerWatch>, kube: Kube) -> Self {
        // Three missed ticks, and half a minute for a slow API server.
        let stale_after = cfg.interval * 3 + Duration::from_secs(30);
        Self {
            cfg,
            queue,
            ledger,
            kube,
            metrics: Arc::new(Metrics::default()),
            history: History::default(),
            last_verdict: None,
            advice: AdviceEndpoint { latest: Default::default(), stale_after },
            last_conflict: None,
            index: None,
            published_jobs: Default::default(),
            follow: None,
            device_class: None,
        }
    }

    /// Measures the rate on done records of this device class only (see
    /// `LedgerWatch::for_device_class`), also for ledgers followed later.
    pub fn for_device_class(mut self, class: &str) -> Self {
        self.device_class = Some(class.to_string());
        self.ledger = self.ledger.map(|w| w.for_device_class(class));
        self
    }

    /// Follows every job registered on this scaler's queue in `index` in
    /// the last `days` UTC days (besides any --ledger), sizing for all of
    /// them at once (`signals::combine`).
    pub fn follow_index(mut self, index: JobsIndex, days: u32) -> Self {
        self.index = Some(IndexFollow { index, days: days.max(1), jobs: Default::default() });
        self
    }

    /// Reads the jobs index and the ledgers of its unfinished jobs.
    async fn refresh_index(&mut self, now: SystemTime) -> hourglass_core::Result<()> {
        let queue = self.queue.name().to_string();
        let class = self.device_class.clone();
        let Some(f) = &mut self.index else { return Ok(()) };
        let now_ms = unix(now).as_millis() as u64;
        let known = |job: &str| f.jobs.contains_key(job);
        let fresh = f.index.recent(&queue, now_ms, f.days, &known).await?;
        for entry in fresh {
            let url = BlobUrl::parse(&entry.output)?.as_prefix();
            let watch = LedgerWatch::new(Ledger::new(hourglass_core::store::open(&url)?, &url));
            let watch = match &class {
                Some(c) => watch.for_device_class(c),
                None => watch,
            };
            tracing::info!(job = %entry.job, output = %url, "following a job from the jobs index");
            let followed =
                Followed { watch, last: Progress::default(), submitted_at_ms: entry.submitted_at_ms, finished: false };
            f.jobs.insert(entry.job.to_string(), followed);
        }
        // One job's unreadable ledger does not stop the scaling of all the
        // others: it counts with what was last read of it, and the error is
        // logged and counted each tick.
        for (job, followed) in f.jobs.iter_mut().filter(|(_, j)| !j.finished) {
            match followed.watch.refresh().await {
                Ok(progress) => {
                    followed.last = progress;
                    followed.finished = followed.last.job.is_some() && followed.last.backlog_rows == Some(0);
                }
                Err(e) => {
                    self.metrics.error("ledger", e.kind().as_str());
                    tracing::warn!(job = %job, ledger = %followed.watch.root(), error = %e, "cannot read a followed job's ledger; using its last reading");
                }
            }
        }
        // Finished and out of the listed days: forgotten (and not listed again).
        let horizon = now_ms.saturating_sub(u64::from(f.days) * 86_400_000);
        f.jobs.retain(|_, j| !(j.finished && j.submitted_at_ms < horizon));
        Ok(())
    }

    /// Follows the ledger `f` names at each tick instead of a fixed one.
    pub fn follow_ledger(mut self, f: LedgerFor) -> Self {
        self.follow = Some(f);
        self
    }

    fn switch_ledger(&mut self, now: SystemTime) {
        let Some(url) = self.follow.as_ref().and_then(|f| f(now)) else { return };
        if self.ledger.as_ref().is_some_and(|w| w.root() == &url) {
            return;
        }
        match hourglass_core::store::open(&url) {
            Ok(store) => {
                tracing::info!(ledger = %url, "following a new ledger");
                // The old job's series go with it: one job's at a time.
                self.metrics.job_shards.clear();
                self.metrics.job_shards_planned.clear();
                let watch = LedgerWatch::new(Ledger::new(store, &url));
                self.ledger = Some(match &self.device_class {
                    Some(class) => watch.for_device_class(class),
                    None => watch,
                });
            }
            Err(e) => tracing::warn!(ledger = %url, error = %e, "cannot open the ledger; keeping the last one"),
        }
    }

    /// Serves the latest decision at `/keda` (with `--mode advise`, the
    /// only thing the scaler does with it).
    pub fn advice(&self) -> AdviceEndpoint {
        self.advice.clone()
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Reads every signal, decides, writes. An error reading a signal skips
    /// the writes (never act on half a picture); the next tick retries.
    pub async fn tick(&mut self, now: SystemTime) -> crate::Result<TickReport> {
        self.metrics.ticks.inc();
        self.switch_ledger(now);
        let depth = self.queue.depth().await.map_err(|e| {
            self.metrics.error("queue_depth", e.kind().as_str());
            crate::Error::QueueDepth(e)
        })?;
        let mut parts = match &mut self.ledger {
            Some(watch) => vec![watch.refresh().await.map_err(|e| {
                self.metrics.error("ledger", e.kind().as_str());
                crate::Error::Ledger(e)
            })?],
            None => vec![],
        };
        if let Err(e) = self.refresh_index(now).await {
            self.metrics.error("jobs_index", e.kind().as_str());
            return Err(crate::Error::Ledger(e));
        }
        if let Some(f) = &self.index {
            let explicit = self.ledger.as_ref().map(|w| w.root().clone());
            parts.extend(f.jobs.values().filter(|j| explicit.as_ref() != Some(j.watch.root())).map(|j| j.last.clone()));
        }
        let mut progress = combine(&parts);
        // Messages beyond the followed jobs' open shards belong to jobs no
        // ledger here tells of (submitted without the index): they count at
        // --rows-per-message rather than not at all.
        let messages = depth.visible + depth.delayed + depth.in_flight;
        let open = progress.shards_total.saturating_sub(progress.shards_done);
        if let Some(backlog) = progress.backlog_rows.as_mut()
            && messages > open
        {
            *backlog += ((messages - open) as f64 * self.cfg.policy.prior_rows_per_message) as u64;
        }
        let worker = self.kube.get_scale(&self.cfg.worker).await.map_err(|e| self.kube_error("get_scale", e))?;
        let mut schedulable = 0;
        let mut worker_pods = Vec::new();
        if let Some(selector) = &worker.selector {
            worker_pods = self
                .kube
                .list_pods(&self.cfg.worker.namespace, selector)
                .await
                .map_err(|e| self.kube_error("list_pods", e))?;
            let pods = crate::kube::PodCounts::of(&worker_pods);
            schedulable += pods.scheduled;
            self.metrics.scheduled.set(i64::from(pods.scheduled));
            self.metrics.pending.set(i64::from(pods.pending));
        }
        // Series of jobs no longer followed go (one set per followed job).
        let followed: std::collections::HashSet<String> =
            parts.iter().filter_map(|p| p.job.as_ref().map(|j| j.to_string())).collect();
        for gone in self.published_jobs.difference(&followed) {
            for state in ["done", "pending"] {
                self.metrics.job_shards.remove(&JobStateLabels { hourglass_job: gone.clone(), state: state.into() });
            }
            self.metrics.job_shards_planned.remove(&JobLabels { hourglass_job: gone.clone() });
            self.metrics.job_node_seconds.remove(&JobLabels { hourglass_job: gone.clone() });
            self.metrics.job_cost.remove(&JobLabels { hourglass_job: gone.clone() });
        }
        self.published_jobs = followed;
        for part in &parts {
            let Some(job) = &part.job else { continue };
            let pending = part.shards_total.saturating_sub(part.shards_done);
            for (state, n) in [("done", part.shards_done), ("pending", pending)] {
                let labels = JobStateLabels { hourglass_job: job.to_string(), state: state.into() };
                self.metrics.job_shards.get_or_create(&labels).set(n.min(i64::MAX as u64) as i64);
            }
            let labels = JobLabels { hourglass_job: job.to_string() };
            self.metrics.job_shards_planned.get_or_create(&labels).set(part.shards_total.min(i64::MAX as u64) as i64);
            let cost = hourglass_core::cost::cost(&part.usage, self.cfg.policy.pods_per_node, &self.cfg.prices);
            self.metrics.job_node_seconds.get_or_create(&labels).set(cost.node_seconds);
            match cost.dollars {
                Some(d) => {
                    self.metrics.job_cost.get_or_create(&labels).set(d);
                }
                None => {
                    self.metrics.job_cost.remove(&labels);
                }
            }
        }
        let oldest = match (depth.oldest_age_ms, progress.submitted_at_ms) {
            (Some(ms), _) => ms as f64 / 1000.0,
            (None, Some(at)) if depth.visible + depth.in_flight + depth.delayed > 0 => {
                unix(now).as_secs_f64() - at as f64 / 1000.0
            }
            _ => f64::NAN,
        };
        self.metrics.oldest_message_age.set(oldest);
        let placeholder_scale = match &self.cfg.placeholders {
            Some(p) => {
                let scale = self.kube.get_scale(p).await.map_err(|e| self.kube_error("get_scale", e))?;
                if let Some(selector) = &scale.selector {
                    // A running placeholder is room a worker takes at once
                    // (it preempts the placeholder): count it as schedulable.
                    let pods = self
                        .kube
                        .count_pods(&p.namespace, selector)
                        .await
                        .map_err(|e| self.kube_error("list_pods", e))?;
                    schedulable += pods.scheduled;
                }
                Some(scale)
            }
            None => None,
        };

        let per_replica = f64::from(self.cfg.policy.shards_per_replica.max(1));
        let deadline = self.cfg.deadline.map(unix).or_else(|| progress.deadline_unix_ms.map(Duration::from_millis));
        let signals = Signals {
            now: unix(now),
            deadline,
            backlog_rows: progress.backlog_rows,
            visible: depth.visible + depth.delayed,
            in_flight: depth.in_flight,
            measured_rows_per_sec: progress.rows_per_sec.map(|r| r * per_replica),
            current_replicas: worker.spec_replicas,
            schedulable_replicas: schedulable,
        };
        let decision = decide(&self.cfg.policy, &signals, &mut self.history);

        // Pre-warm: hold room for the run's pods that do not exist yet.
        let prewarm = match &self.cfg.prewarm {
            Some(p) if p.active(now) => p.replicas.saturating_sub(decision.desired_replicas.max(worker.spec_replicas)),
            _ => 0,
        };
        let placeholders = decision.placeholder_replicas.max(prewarm);

        *self.advice.latest.write().unwrap_or_else(|e| e.into_inner()) = Some((
            std::time::Instant::now(),
            Advice {
                desired_replicas: decision.desired_replicas,
                placeholder_replicas: placeholders,
                verdict: decision.verdict,
                projected_finish: decision.projected_finish,
                deadline: signals.deadline,
                decided_at: signals.now,
            },
        ));

        let mut errors = Vec::new();
        let writes = !self.cfg.dry_run && self.cfg.mode == Mode::Patch;
        // Busy pods are marked before any scale-down, so the ReplicaSet
        // and the node autoscalers pass them over (see `busy`).
        if writes && self.cfg.protect_busy_pods {
            errors.extend(self.mark_busy_pods(&worker_pods).await);
        }
        let changed_worker = worker.spec_replicas != decision.desired_replicas;
        // Another autoscaler on the worker Deployment would undo every patch
        // and be undone by the next: look before writing, and refuse.
        let mut conflict = None;
        if changed_worker && writes {
            match self.kube.autoscalers_of(&self.cfg.worker).await {
                Ok(found) if !found.is_empty() => conflict = Some(found),
                Ok(_) => {}
                // Not knowing (an older Role without the list verb) is
                // reported, and does not stop the scaling it was set up for.
                Err(e) => errors.push(self.kube_error("list_autoscalers", e)),
            }
            self.metrics.conflict.set(i64::from(conflict.is_some()));
        }
        if let Some(found) = &conflict {
            let message = format!(
                "not scaling {}: HorizontalPodAutoscaler {} scales it too, and two autoscalers undo each other's replica \
                 counts (a KEDA ScaledObject works through an HPA named keda-hpa-<name>); delete it, or run the scaler \
                 with --mode advise and let KEDA act on its /keda decision (wanted {} replicas)",
                self.cfg.worker,
                found.join(", "),
                decision.desired_replicas
            );
            if self.last_conflict.as_ref() != Some(found) {
                tracing::warn!(deployment = %self.cfg.worker, "{message}");
                if let Err(e) = self
                    .kube
                    .record_event(
                        &self.cfg.worker,
                        worker.uid.as_deref(),
                        EventType::Warning,
                        "AutoscalerConflict",
                        &message,
                    )
                    .await
                {
                    errors.push(self.kube_error("create_event", e));
                }
            }
            self.last_conflict = Some(found.clone());
        } else if changed_worker && writes {
            self.last_conflict = None;
            match self.kube.set_scale(&self.cfg.worker, decision.desired_replicas).await {
                Ok(()) => {
                    self.metrics.scale_changes.inc();
                    let reason =
                        if decision.desired_replicas > worker.spec_replicas { "ScaledUp" } else { "ScaledDown" };
                    let message = explain(&signals, &decision, worker.spec_replicas);
                    tracing::info!(deployment = %self.cfg.worker, from = worker.spec_replicas, to = decision.desired_replicas, "{message}");
                    if let Err(e) = self
                        .kube
                        .record_event(&self.cfg.worker, worker.uid.as_deref(), EventType::Normal, reason, &message)
                        .await
                    {
                        errors.push(self.kube_error("create_event", e));
                    }
                }
                Err(e) => errors.push(self.kube_error("patch_scale", e)),
            }
        }
        if decision.verdict == Verdict::AtRisk && self.last_verdict != Some(Verdict::AtRisk) && writes {
            let message = format!("deadline at risk: {}", explain(&signals, &decision, worker.spec_replicas));
            tracing::warn!(deployment = %self.cfg.worker, "{message}");
            if let Err(e) = self
                .kube
                .record_event(&self.cfg.worker, worker.uid.as_deref(), EventType::Warning, "DeadlineAtRisk", &message)
                .await
            {
                errors.push(self.kube_error("create_event", e));
            }
        }
        self.last_verdict = Some(decision.verdict);

        let mut changed_placeholders = false;
        if let (Some(p), Some(scale)) = (&self.cfg.placeholders, &placeholder_scale) {
            changed_placeholders = scale.spec_replicas != placeholders;
            if changed_placeholders && writes {
                match self.kube.set_scale(p, placeholders).await {
                    Ok(()) => {
                        self.metrics.scale_changes.inc();
                        let why = if prewarm > 0 && prewarm >= decision.placeholder_replicas {
                            "pre-warming nodes for the scheduled run"
                        } else if decision.placeholder_replicas > 0 {
                            "headroom while the deadline is at risk"
                        } else {
                            "no headroom needed"
                        };
                        let message = format!("placeholder pods {} → {placeholders}: {why}", scale.spec_replicas);
                        tracing::info!(deployment = %p, "{message}");
                        if let Err(e) = self
                            .kube
                            .record_event(p, scale.uid.as_deref(), EventType::Normal, "Placeholders", &message)
                            .await
                        {
                            errors.push(self.kube_error("create_event", e));
                        }
                    }
                    Err(e) => errors.push(self.kube_error("patch_scale", e)),
                }
            }
        }

        self.publish(&signals, &decision, placeholders, &depth, worker.spec_replicas);
        Ok(TickReport {
            signals,
            progress,
            decision,
            placeholders,
            changed_worker,
            changed_placeholders,
            conflict: conflict.map(|c| c.join(", ")),
            errors,
        })
    }

    /// Reads each running worker's shards in flight and annotates the pods
    /// whose state changed; returns the failed patches.
    async fn mark_busy_pods(&self, pods: &[crate::kube::PodInfo]) -> Vec<crate::Error> {
        let reads = pods.iter().map(|p| async move {
            let n = match (&p.ip, p.metrics_port, p.running) {
                (Some(ip), Some(port), true) => crate::busy::shards_in_flight(ip, port, Duration::from_secs(2)).await,
                _ => None,
            };
            (p.clone(), n)
        });
        let states: Vec<_> = futures::future::join_all(reads).await;
        self.metrics.busy_pods.set(states.iter().filter(|(_, n)| n.is_some_and(|n| n > 0)).count() as i64);
        let mut errors = Vec::new();
        for (pod, change) in crate::busy::changes(&states) {
            match self.kube.annotate_pod(&pod, &change).await {
                Ok(()) => tracing::debug!(pod = %pod.name, ?change, "busy-pod annotations"),
                Err(e) => errors.push(self.kube_error("annotate_pod", e)),
            }
        }
        errors
    }

    fn kube_error(&self, op: &'static str, e: KubeError) -> crate::Error {
        self.metrics.error(op, e.kind());
        tracing::warn!(op, error = %e, "Kubernetes API call failed; retrying next tick");
        crate::Error::Kube { op, source: e }
    }

    fn publish(
        &self,
        s: &Signals,
        d: &Decision,
        placeholders: u32,
        depth: &hourglass_core::queue::Depth,
        current: u32,
    ) {
        let m = &self.metrics;
        m.desired.set(i64::from(d.desired_replicas));
        m.current.set(i64::from(current));
        m.placeholders.set(i64::from(placeholders));
        let finish = d.projected_finish.map(|f| f.as_secs_f64()).unwrap_or(f64::NAN);
        m.projected_finish.set(finish);
        m.deadline.set(s.deadline.map(|d| d.as_secs_f64()).unwrap_or(f64::NAN));
        let slack = match (s.deadline, d.projected_finish) {
            (Some(deadline), Some(f)) => deadline.as_secs_f64() - f.as_secs_f64(),
            _ => f64::NAN,
        };
        m.slack.set(slack);
        m.backlog_rows.set(
            s.backlog_rows
                .unwrap_or((s.visible + s.in_flight) * self.cfg.policy.prior_rows_per_message as u64)
                .min(i64::MAX as u64) as i64,
        );
        m.rows_per_sec.set(s.measured_rows_per_sec.unwrap_or(self.cfg.policy.prior_rows_per_sec));
        m.at_risk.set(i64::from(d.verdict == Verdict::AtRisk));
        for (state, n) in [("visible", depth.visible), ("in_flight", depth.in_flight), ("delayed", depth.delayed)] {
            m.queue.get_or_create(&StateLabels { state: state.into() }).set(n.min(i64::MAX as u64) as i64);
        }
        if let Some(dead) = depth.dead {
            m.queue.get_or_create(&StateLabels { state: "dead".into() }).set(dead.min(i64::MAX as u64) as i64);
        }
    }

    /// Ticks every `interval` until `stop` resolves.
    pub async fn run(&mut self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut ticker = tokio::time::interval(self.cfg.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = ticker.tick() => {}
            }
            match self.tick(SystemTime::now()).await {
                Ok(report) => tracing::debug!(
                    desired = report.decision.desired_replicas,
                    placeholders = report.placeholders,
                    verdict = ?report.decision.verdict,
                    "tick"
                ),
                Err(e) => {
                    tracing::warn!(error = %hourglass_core::error::chain(&e), "tick skipped; retrying next tick");
                }
            }
        }
    }
}

/// One line an operator reads in `kubectl describe deployment`.
pub fn explain(s: &Signals, d: &Decision, from: u32) -> String {
    let rate =
        s.measured_rows_per_sec.map(|r| format!("{r:.0} rows/s measured")).unwrap_or_else(|| "prior rate".into());
    let backlog = match s.backlog_rows {
        Some(rows) => format!("{rows} rows left"),
        None => format!("{} messages", s.visible + s.in_flight),
    };
    let mut out = format!("replicas {from} → {}: {backlog}, {rate}", d.desired_replicas);
    match (d.verdict, d.projected_finish, s.deadline) {
        (_, Some(finish), Some(deadline)) => {
            let slack = deadline.as_secs_f64() - finish.as_secs_f64();
            out.push_str(&format!(
                ", projected finish {} vs deadline {} (slack {:+.0} s)",
                clock(finish),
                clock(deadline),
                slack
            ));
        }
        (Verdict::Idle, ..) => out.push_str(", queue empty"),
        (Verdict::NoDeadline, ..) => out.push_str(", no deadline: queue-length rule"),
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prewarm_window_wraps_past_midnight() {
        let p = Prewarm {
            at: schedule::parse_time_of_day("--prewarm-at", "23:30").unwrap(),
            tz: jiff::tz::TimeZone::UTC,
            hold: Duration::from_secs(3600),
            replicas: 4,
        };
        let at = |h: u64, m: u64| UNIX_EPOCH + Duration::from_secs(20_000 * 86_400 + h * 3600 + m * 60);
        assert!(p.active(at(23, 30)));
        assert!(p.active(at(0, 15)));
        assert!(!p.active(at(0, 30)));
        assert!(!p.active(at(23, 29)));
    }

    #[test]
    fn prewarm_follows_the_wall_clock_across_dst() {
        let p = Prewarm {
            at: schedule::parse_time_of_day("--prewarm-at", "01:30").unwrap(),
            tz: schedule::time_zone("Europe/Berlin").unwrap(),
            hold: Duration::from_secs(1800),
            replicas: 4,
        };
        let at = |s: &str| SystemTime::from(s.parse::<jiff::Timestamp>().unwrap());
        // Winter: 01:30 Berlin = 00:30 UTC; summer: 23:30 UTC the day before.
        assert!(p.active(at("2026-11-22T00:40:00Z")));
        assert!(!p.active(at("2026-11-21T23:40:00Z")));
        assert!(p.active(at("2026-06-30T23:40:00Z")));
        assert!(!p.active(at("2026-07-01T00:40:00Z")));
    }
}
