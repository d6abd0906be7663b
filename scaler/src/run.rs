//! The live loop: every tick, read the signals (queue depth, the job's
//! ledger, the Deployments' scale and pods), decide with the policy, and
//! write the replica counts. Level-triggered and idempotent: each tick
//! compares what is with what should be and patches only the difference, so
//! a restarted scaler, a missed tick or a failed call is repaired by the
//! next tick. A failed API call is logged and counted, never fatal.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hourglass_core::BlobUrl;
use hourglass_core::ledger::Ledger;
use hourglass_core::queue::Queue;
use hourglass_core::schedule;

use crate::kube::{DeploymentRef, EventType, Kube, KubeError};
use crate::metrics::{JobLabels, JobStateLabels, Metrics, StateLabels};
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

/// What a tick read.
struct Observation {
    depth: hourglass_core::queue::Depth,
    progress: Progress,
    worker: crate::kube::ScaleState,
    worker_pods: Vec<crate::kube::PodInfo>,
    /// Replicas that would be running or can start at once (scheduled
    /// workers, and running placeholders they would preempt).
    schedulable: u32,
    placeholders: Option<crate::kube::ScaleState>,
}

/// What a tick decided.
struct Plan {
    signals: Signals,
    decision: Decision,
    /// Placeholders the pre-warm window holds room with.
    prewarm: u32,
    /// Placeholders asked for (headroom or pre-warm).
    placeholders: u32,
}

/// What a tick wrote.
struct Actuated {
    changed_worker: bool,
    changed_placeholders: bool,
    conflict: Option<String>,
    errors: Vec<crate::Error>,
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

    /// One tick: observe → decide → actuate. An error reading a signal
    /// skips the writes (never act on half a picture); the next tick
    /// retries.
    pub async fn tick(&mut self, now: SystemTime) -> crate::Result<TickReport> {
        self.metrics.ticks.inc();
        let o = self.observe(now).await?;
        let plan = self.decide(now, &o);
        let done = self.actuate(&o, &plan).await;
        self.publish(&plan.signals, &plan.decision, plan.placeholders, &o.depth, o.worker.spec_replicas);
        Ok(TickReport {
            signals: plan.signals,
            progress: o.progress,
            decision: plan.decision,
            placeholders: plan.placeholders,
            changed_worker: done.changed_worker,
            changed_placeholders: done.changed_placeholders,
            conflict: done.conflict,
            errors: done.errors,
        })
    }

    /// Reads every signal: the queue, the followed ledgers, the worker
    /// Deployment and its pods, the placeholders. Nothing is written but
    /// the metrics of what was read.
    async fn observe(&mut self, now: SystemTime) -> crate::Result<Observation> {
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
        self.publish_jobs(&parts);
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
        Ok(Observation { depth, progress, worker, worker_pods, schedulable, placeholders: placeholder_scale })
    }

    /// The per-job series of the followed jobs; those of jobs no longer
    /// followed go.
    fn publish_jobs(&mut self, parts: &[Progress]) {
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
        for part in parts {
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
    }

    /// The decision on what was observed: the policy (a pure function of
    /// the signals and the history it keeps), the pre-warm window, and the
    /// advice `/keda` serves. Writes nothing outside the scaler.
    fn decide(&mut self, now: SystemTime, o: &Observation) -> Plan {
        let per_replica = f64::from(self.cfg.policy.shards_per_replica.max(1));
        let deadline = self.cfg.deadline.map(unix).or_else(|| o.progress.deadline_unix_ms.map(Duration::from_millis));
        let signals = Signals {
            now: unix(now),
            deadline,
            backlog_rows: o.progress.backlog_rows,
            visible: o.depth.visible + o.depth.delayed,
            in_flight: o.depth.in_flight,
            measured_rows_per_sec: o.progress.rows_per_sec.map(|r| r * per_replica),
            current_replicas: o.worker.spec_replicas,
            schedulable_replicas: o.schedulable,
        };
        let decision = decide(&self.cfg.policy, &signals, &mut self.history);

        // Pre-warm: hold room for the run's pods that do not exist yet.
        let prewarm = match &self.cfg.prewarm {
            Some(p) if p.active(now) => {
                p.replicas.saturating_sub(decision.desired_replicas.max(o.worker.spec_replicas))
            }
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
        Plan { signals, decision, prewarm, placeholders }
    }

    /// Writes the decision (unless dry-run or advise): busy pods marked,
    /// the worker Deployment's scale (refused while another autoscaler owns
    /// it), the placeholders' scale, and an event for each change. A failed
    /// write is reported and the rest go on.
    async fn actuate(&mut self, o: &Observation, plan: &Plan) -> Actuated {
        let mut errors = Vec::new();
        let writes = !self.cfg.dry_run && self.cfg.mode == Mode::Patch;
        // Busy pods are marked before any scale-down, so the ReplicaSet
        // and the node autoscalers pass them over (see `busy`).
        if writes && self.cfg.protect_busy_pods {
            errors.extend(self.mark_busy_pods(&o.worker_pods).await);
        }
        let changed_worker = o.worker.spec_replicas != plan.decision.desired_replicas;
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
                plan.decision.desired_replicas
            );
            if self.last_conflict.as_ref() != Some(found) {
                tracing::warn!(deployment = %self.cfg.worker, "{message}");
                if let Err(e) = self
                    .kube
                    .record_event(
                        &self.cfg.worker,
                        o.worker.uid.as_deref(),
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
            match self.kube.set_scale(&self.cfg.worker, plan.decision.desired_replicas).await {
                Ok(()) => {
                    self.metrics.scale_changes.inc();
                    let reason =
                        if plan.decision.desired_replicas > o.worker.spec_replicas { "ScaledUp" } else { "ScaledDown" };
                    let message = explain(&plan.signals, &plan.decision, o.worker.spec_replicas);
                    tracing::info!(deployment = %self.cfg.worker, from = o.worker.spec_replicas, to = plan.decision.desired_replicas, "{message}");
                    if let Err(e) = self
                        .kube
                        .record_event(&self.cfg.worker, o.worker.uid.as_deref(), EventType::Normal, reason, &message)
                        .await
                    {
                        errors.push(self.kube_error("create_event", e));
                    }
                }
                Err(e) => errors.push(self.kube_error("patch_scale", e)),
            }
        }
        if plan.decision.verdict == Verdict::AtRisk && self.last_verdict != Some(Verdict::AtRisk) && writes {
            let message =
                format!("deadline at risk: {}", explain(&plan.signals, &plan.decision, o.worker.spec_replicas));
            tracing::warn!(deployment = %self.cfg.worker, "{message}");
            if let Err(e) = self
                .kube
                .record_event(&self.cfg.worker, o.worker.uid.as_deref(), EventType::Warning, "DeadlineAtRisk", &message)
                .await
            {
                errors.push(self.kube_error("create_event", e));
            }
        }
        self.last_verdict = Some(plan.decision.verdict);

        let mut changed_placeholders = false;
        if let (Some(p), Some(scale)) = (&self.cfg.placeholders, &o.placeholders) {
            changed_placeholders = scale.spec_replicas != plan.placeholders;
            if changed_placeholders && writes {
                match self.kube.set_scale(p, plan.placeholders).await {
                    Ok(()) => {
                        self.metrics.scale_changes.inc();
                        let why = if plan.prewarm > 0 && plan.prewarm >= plan.decision.placeholder_replicas {
                            "pre-warming nodes for the scheduled run"
                        } else if plan.decision.placeholder_replicas > 0 {
                            "headroom while the deadline is at risk"
                        } else {
                            "no headroom needed"
                        };
                        let message =
                            format!("placeholder pods {} → {}: {why}", scale.spec_replicas, plan.placeholders);
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
        Actuated { changed_worker, changed_placeholders, conflict: conflict.map(|c| c.join(", ")), errors }
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
