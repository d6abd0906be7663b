//! The lease mechanics: receive tasks, keep their leases alive while a
//! handler works on them, record the result then ack, and on shutdown stop
//! receiving, let held tasks finish within the drain timeout and release
//! the rest. They are one loop for every task kind, generic over the
//! [`TaskHandler`] of each kind ([`Handlers`]); this module never names a
//! handler. `crate::kinds` puts the two together: `infer` (score a shard)
//! and `train` (run one trial). A handler does the work and writes what it
//! produces; everything else here is the same for both.
//!
//! Exactly-once in effect rests on these rules, enforced here:
//! - a task is checked before any work: its URLs lie under the worker's
//!   allowed prefixes, its output prefix holds a `job.json` of the task's
//!   job, and the task is exactly what that record plans for its shard;
//!   anything else is dead-lettered with the reason and writes nothing;
//! - the output is written (to a deterministic key, or a registry version
//!   found again by its lineage) before the done record, the done record
//!   before the ack, and a delivery whose done record exists is acked (and
//!   the job finalized) without work;
//! - a worker writes only while it holds the lease: a lease extension
//!   refused as stale, or a lease past its visibility timeout by the
//!   worker's own clock (a frozen process, a partition), cancels the shard
//!   at once; before writing, the worker checks that its lease has time
//!   left and that no other attempt recorded the shard, and the done record
//!   is created only if absent, so of two attempts exactly one is recorded.

use crate::{Error, Result, WorkerConfig};
use hourglass_core::ShardId;
use hourglass_core::ledger::{AnyJob, DoneRecord, FailedRecord, LEDGER_VERSION, Ledger, now_ms};
use hourglass_core::queue::{Message, Queue};
use hourglass_core::retry;
use hourglass_core::store;
use hourglass_core::task::{ShardTask, Task, TaskKind, TrainTask, UnitTask};
use hourglass_runtime::pool::CpuPool;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use crate::health::WorkerHealth;
use crate::metrics::WorkerMetrics;

/// One kind of work. The mechanics hand a handler a task they have
/// checked (allowed prefixes, the job's record, not done yet, attempts
/// left) and hold the lease while it runs; the handler produces the
/// result and its done record, writing only while `Lease::check_writable`
/// passes, and creating the done record with `Ledger::create_done`.
pub trait TaskHandler: Send + Sync {
    type Task: UnitTask + Send + Sync;

    /// Why the job the prefix holds does not plan this task (stale or
    /// forged), or `None` when it does.
    fn refuses(&self, record: &AnyJob, task: &Self::Task) -> Option<String>;

    /// Does the work and records it. `Ok(None)`: another attempt recorded
    /// the unit first and this one wrote nothing after noticing. An error
    /// is retried or recorded as failed by the mechanics.
    fn run(&self, work: Work<'_, Self::Task>) -> impl Future<Output = Result<Option<DoneRecord>>> + Send;

    /// Called after every settled unit: completes the job if it was the
    /// last one (`_SUCCESS`, and what else the kind does then). Returns
    /// whether this call completed it.
    fn finalize(&self, ledger: &Ledger, record: &AnyJob) -> impl Future<Output = Result<bool>> + Send;

    /// Work before the first receive (a model to preload); `Ok(true)` when
    /// something was prepared, so the worker reports itself loaded.
    fn start(&self) -> impl Future<Output = Result<bool>> + Send {
        async { Ok(false) }
    }

    /// The slots a task of this kind needs one of to be received
    /// (training slots), or `None` when it needs none.
    fn slots(&self) -> Option<Arc<Semaphore>> {
        None
    }
}

/// The handler of each task kind the queue carries. The mechanics route a
/// decoded [`Task`] by its kind; what each kind does is the handler's.
pub trait Handlers: Send + Sync + 'static {
    type Infer: TaskHandler<Task = ShardTask>;
    type Train: TaskHandler<Task = TrainTask>;
    fn infer(&self) -> &Self::Infer;
    fn train(&self) -> &Self::Train;
}

/// What a handler gets with a task.
pub struct Work<'a, T> {
    pub task: &'a T,
    pub ledger: &'a Ledger,
    pub record: &'a AnyJob,
    /// The delivery count, 1 for the first attempt.
    pub attempt: u32,
    pub lease: &'a Lease,
    /// The training slot the receive loop took for this task, if it did.
    pub train_slot: Option<TrainSlot>,
}

/// A permit of the worker's training slots (`--train-slots`).
pub type TrainSlot = tokio::sync::OwnedSemaphorePermit;

/// Logs the shard message for a shard task and the trial message for a
/// training trial, with the same fields: operators search logs for "shard
/// started" and "trial started", not for a kind field.
macro_rules! by_kind {
    ($level:ident, $kind:expr, $shard:literal, $trial:literal $(, $($field:tt)+)?) => {
        match $kind {
            TaskKind::Infer => tracing::$level!($($($field)+,)? $shard),
            TaskKind::Train => tracing::$level!($($($field)+,)? $trial),
        }
    };
}

/// What a worker did, for its exit log and tests. A unit is a shard or a
/// training trial, whichever the task was.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WorkerSummary {
    pub units_done: u64,
    pub units_failed: u64,
    pub units_released: u64,
    /// Rows scored (shards only).
    pub rows: u64,
}

#[derive(Default)]
struct Counters {
    done: AtomicU64,
    failed: AtomicU64,
    released: AtomicU64,
    rows: AtomicU64,
}

/// The shared state of one worker process.
pub struct Worker<K: Handlers> {
    queue: Arc<dyn Queue>,
    config: WorkerConfig,
    handlers: K,
    /// Job records by output prefix, with the `job.json` version read.
    jobs: Mutex<HashMap<String, (String, Arc<AnyJob>)>>,
    counters: Counters,
    metrics: Arc<WorkerMetrics>,
    health: Arc<WorkerHealth>,
}

impl<K: Handlers> Worker<K> {
    /// A worker whose handlers `handlers` makes, given the process's CPU
    /// pool and metrics (see `crate::kinds::worker`).
    pub fn new(
        queue: Arc<dyn Queue>,
        config: WorkerConfig,
        handlers: impl FnOnce(&CpuPool, &Arc<WorkerMetrics>) -> K,
    ) -> Self {
        let pool = CpuPool::new(config.concurrency);
        // A busy worker extends leases every third of the visibility
        // timeout and an idle one returns from a receive every poll: twice
        // the lease plus a poll without either is stuck; 5 minutes at least,
        // so a slow model load or store hiccup is not taken for it.
        let stall_after = (config.visibility_timeout * 2 + config.poll_wait).max(Duration::from_secs(300));
        let health = Arc::new(WorkerHealth::new(stall_after, config.preload_model.is_none()));
        let metrics = Arc::new(WorkerMetrics::default());
        Self {
            handlers: handlers(&pool, &metrics),
            queue,
            config,
            jobs: Default::default(),
            counters: Counters::default(),
            metrics,
            health,
        }
    }

    /// The worker's probes, to serve next to its metrics.
    pub fn health(&self) -> Arc<WorkerHealth> {
        self.health.clone()
    }

    /// The worker's metrics, to register with the process's registry.
    pub fn metrics(&self) -> Arc<WorkerMetrics> {
        self.metrics.clone()
    }

    /// The job record of a prefix, as it is now: one HEAD per task tells
    /// whether the cached record is still the prefix's (a prefix cleared
    /// and given to another job has a new `job.json`).
    async fn job_record(&self, ledger: &Ledger) -> Result<Option<Arc<AnyJob>>> {
        let root = ledger.root().to_string();
        let Some(version) = ledger.job_version().await? else {
            self.jobs.lock().unwrap_or_else(|p| p.into_inner()).remove(&root);
            return Ok(None);
        };
        if let Some((v, r)) = self.jobs.lock().unwrap_or_else(|p| p.into_inner()).get(&root)
            && *v == version
        {
            return Ok(Some(r.clone()));
        }
        let Some((record, version)) = ledger.read_job_versioned().await? else { return Ok(None) };
        let record = Arc::new(record);
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).insert(root, (version, record.clone()));
        Ok(Some(record))
    }

    /// Serves until `shutdown` is cancelled (or the queue stays idle, when
    /// configured), then drains.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> Result<WorkerSummary> {
        self.check_redrive().await?;
        let (infer, train) = (self.handlers.infer().start().await?, self.handlers.train().start().await?);
        if infer || train {
            self.health.model_loaded();
        }
        // Pool threads score `concurrency` shards; `prefetch_shards` more
        // wait in the pool's queue, leased, heartbeated and prefetching.
        let permits = Arc::new(Semaphore::new(self.config.concurrency + self.config.prefetch_shards));
        // Held shards; reaped as they finish so a panic in one propagates.
        let mut held: JoinSet<()> = JoinSet::new();
        // Cancelled when the drain timeout passes: held shards are released.
        let abandon = CancellationToken::new();
        let mut idle_since: Option<Instant> = None;
        info!(
            queue = self.queue.name(),
            concurrency = self.config.concurrency,
            threads = self.config.threads,
            "worker started"
        );
        let mut receive_failures = 0u32;
        while !shutdown.is_cancelled() {
            while let Some(done) = held.try_join_next() {
                propagate(done);
            }
            let first = tokio::select! {
                p = permits.clone().acquire_owned() => p.expect("semaphore never closes"),
                _ = shutdown.cancelled() => break,
            };
            // A worker that trains receives one message at a time, and only
            // with a training slot free: a trial is leased by a worker that
            // can start it now, never queued behind another trial while
            // other workers idle. The slot goes with a trial, and is given
            // back at once for a shard.
            let mut train_slot = match self.handlers.train().slots() {
                Some(slots) => Some(tokio::select! {
                    p = slots.acquire_owned() => p.expect("the training semaphore is never closed"),
                    _ = shutdown.cancelled() => break,
                }),
                None => None,
            };
            let want = if train_slot.is_some() { 1 } else { 1 + permits.available_permits() };
            // A receive cut off mid-way may have leased messages nobody
            // holds (they return after their lease), so only long polls are
            // raced against shutdown.
            let receive = self.queue.receive(want, self.config.poll_wait, self.config.visibility_timeout);
            let received = if self.config.interrupt_receive {
                tokio::select! {
                    r = receive => r,
                    _ = shutdown.cancelled() => break,
                }
            } else {
                receive.await
            };
            self.health.received(received.is_ok());
            let messages = match received {
                Ok(m) => {
                    receive_failures = 0;
                    m
                }
                Err(e) => {
                    receive_failures += 1;
                    self.metrics.receive_failures.inc();
                    warn!(error = %e, attempt = receive_failures, "receive failed; retrying");
                    drop(first);
                    tokio::select! {
                        _ = tokio::time::sleep(retry::delay(receive_failures)) => {},
                        _ = shutdown.cancelled() => break,
                    }
                    continue;
                }
            };
            if messages.is_empty() {
                drop(first);
                if let Some(idle) = self.config.exit_when_idle {
                    if held.is_empty() && self.queue_is_drained().await {
                        let since = *idle_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= idle {
                            info!("queue is empty; exiting");
                            break;
                        }
                    } else {
                        idle_since = None;
                    }
                }
                continue;
            }
            idle_since = None;
            let mut first = Some(first);
            for message in messages {
                let permit = match first.take() {
                    Some(p) => p,
                    None => permits.clone().try_acquire_owned().expect("received no more than the free permits"),
                };
                let this = self.clone();
                let abandon = abandon.clone();
                let health = self.health.clone();
                let train_slot = train_slot.take();
                held.spawn(async move {
                    this.handle(message, abandon, train_slot).await;
                    health.progressed();
                    drop(permit);
                });
            }
        }
        if !held.is_empty() {
            info!(held = held.len(), drain_timeout = ?self.config.drain_timeout, "stopping: finishing held shards");
            let drain = async {
                while let Some(done) = held.join_next().await {
                    propagate(done);
                }
            };
            if tokio::time::timeout(self.config.drain_timeout, drain).await.is_err() {
                warn!("drain timeout passed; releasing held shards");
                abandon.cancel();
                while let Some(done) = held.join_next().await {
                    propagate(done);
                }
            }
        }
        let c = &self.counters;
        let summary = WorkerSummary {
            units_done: c.done.load(Ordering::Relaxed),
            units_failed: c.failed.load(Ordering::Relaxed),
            units_released: c.released.load(Ordering::Relaxed),
            rows: c.rows.load(Ordering::Relaxed),
        };
        info!(?summary, "worker stopped");
        Ok(summary)
    }

    /// Refuses a queue that dead-letters a message by itself at or before
    /// this worker's last attempt: a shard whose workers keep dying would
    /// then leave the queue with no failed record, and its job would wait
    /// forever. The delivery after the last attempt must reach a worker,
    /// which records the shard as lost.
    async fn check_redrive(&self) -> Result<()> {
        match self.queue.max_receives().await {
            Ok(Some(n)) if n <= self.config.max_attempts => Err(Error::Core(hourglass_core::Error::invalid(
                format!("queue {}", self.queue.name()),
                format!(
                    "it dead-letters after {n} receives, but workers try {} times and must see one more delivery to record a lost shard; set its redrive above {} (`hourglass queue create --max-attempts {}` sets {}) or lower --max-attempts",
                    self.config.max_attempts,
                    self.config.max_attempts,
                    self.config.max_attempts,
                    self.config.max_attempts + 2
                ),
            ))),
            Ok(_) => Ok(()),
            Err(e) => {
                warn!(error = %e, "could not read the queue's redrive policy; not checking it against --max-attempts");
                Ok(())
            }
        }
    }

    async fn queue_is_drained(&self) -> bool {
        match self.queue.depth().await {
            Ok(d) => d.visible == 0 && d.in_flight == 0 && d.delayed == 0,
            Err(e) => {
                warn!(error = %e, "queue depth unreadable; not exiting while idle");
                false
            }
        }
    }

    /// One delivery, start to finish. Errors are handled here, never lost:
    /// every path ends in ack, release, or dead-letter.
    async fn handle(self: Arc<Self>, message: Message, abandon: CancellationToken, train_slot: Option<TrainSlot>) {
        self.metrics.in_flight.inc();
        let _settled = scopeguard(|| {
            self.metrics.in_flight.dec();
        });
        let task = match Task::decode(&message.body) {
            Ok(t) => t,
            Err(e) => {
                self.metrics.outcome("failed");
                self.metrics.error("poison");
                warn!(message = %message.id, error = %e, "poison message; dead-lettering");
                if let Err(e2) = self.queue.dead_letter(&message, &e.to_string()).await {
                    warn!(message = %message.id, error = %e2, "dead-letter failed; the queue's redrive will move it");
                }
                return;
            }
        };
        match task {
            Task::Infer(task) => {
                let span = info_span!("shard", job = %task.job, shard = %task.shard, attempt = message.receive_count);
                drop(train_slot);
                self.settle(self.handlers.infer(), message, task, abandon, None).instrument(span).await;
            }
            Task::Train(task) => {
                let span = info_span!("trial", job = %task.job, trial = %task.trial, attempt = message.receive_count);
                self.settle(self.handlers.train(), message, task, abandon, train_slot).instrument(span).await;
            }
        }
    }

    /// The mechanics of one checked delivery, for any handler.
    async fn settle<H: TaskHandler>(
        &self,
        handler: &H,
        message: Message,
        task: H::Task,
        abandon: CancellationToken,
        train_slot: Option<TrainSlot>,
    ) {
        // The lease's clock starts at receipt, before the checks' round trips.
        let lease = Lease::new(self.config.visibility_timeout, abandon.child_token());
        for (what, url) in task.urls() {
            if !self.config.allows(url) {
                let reason = format!("its {what} {url} is outside this worker's --allow-prefix");
                return self.refuse(&message, &reason).await;
            }
        }
        let ledger = match store::open(task.output()) {
            Ok(s) => Ledger::new(s, task.output()),
            Err(e) => return self.fail(&message, &task, None, &e.into()).await,
        };
        let record = match self.job_record(&ledger).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                let reason = format!(
                    "{} holds no job.json: the task is stale (its prefix was cleared) or forged",
                    ledger.root()
                );
                return self.refuse(&message, &reason).await;
            }
            Err(e) => return self.retry_later(&message, task.kind(), &e).await,
        };
        if let Some(reason) = handler.refuses(&record, &task) {
            return self.refuse(&message, &format!("stale or forged task: {reason}")).await;
        }
        // A first delivery of a batch shard is almost never of a shard
        // already done (only a message sent twice), and the write path
        // checks again before writing anything: the check here is skipped
        // then, one store request per shard saved. Redeliveries, and
        // training trials (minutes of work), check first.
        let check_first = message.receive_count > 1 || task.kind() != TaskKind::Infer;
        match if check_first { ledger.read_done(task.unit()).await } else { Ok(None) } {
            Ok(Some(_)) => {
                info!("already done; acking the redelivery");
                self.metrics.outcome("skipped");
                self.ack(&message).await;
                // The attempt that recorded it may have died before
                // finalizing: every completing path finalizes.
                return self.finalize(handler, &ledger, &record, task.unit()).await;
            }
            Ok(None) => {}
            Err(e) => return self.retry_later(&message, task.kind(), &e.into()).await,
        }
        if message.receive_count > self.config.max_attempts {
            // The last attempt recorded its cause but the message survived
            // (its dead-letter failed): keep that cause, never relabel it.
            if let Ok(Some(known)) = ledger.read_failed(task.unit()).await
                && known.job == *task.job()
            {
                info!(cause = %known.message, "already recorded failed; dead-lettering the redelivery");
                return self.dead_letter(&message, &known.message).await;
            }
            let err = Error::Lost { deliveries: message.receive_count, max_attempts: self.config.max_attempts };
            return self.fail(&message, &task, Some(&ledger), &err).await;
        }
        by_kind!(info, task.kind(), "shard started", "trial started");
        let heartbeat = self.heartbeat(&message, lease.clone());
        let work = Work {
            task: &task,
            ledger: &ledger,
            record: &record,
            attempt: message.receive_count,
            lease: &lease,
            train_slot,
        };
        let result = handler.run(work).await;
        // A lease lost while the handler was settling outranks its error.
        let result = match (result, lease.lost_error()) {
            (Err(_), Some(lost)) => Err(lost),
            (r, _) => r,
        };
        lease.stop.cancel();
        propagate(heartbeat.await);
        match result {
            Ok(Some(done)) => {
                self.ack(&message).await;
                self.counters.done.fetch_add(1, Ordering::Relaxed);
                self.counters.rows.fetch_add(done.rows, Ordering::Relaxed);
                self.metrics.job_rows(task.job().as_str(), done.rows, done.bad_rows);
                self.metrics.shard_seconds.observe(done.seconds);
                self.metrics.outcome("done");
                by_kind!(
                    info,
                    task.kind(),
                    "shard done",
                    "trial done",
                    rows = done.rows,
                    bad_rows = done.bad_rows,
                    seconds = done.seconds
                );
                self.finalize(handler, &ledger, &record, task.unit()).await;
            }
            Ok(None) => {
                // Another attempt recorded the unit first; this delivery's
                // receipt is most likely stale, and the ack only tidies up.
                by_kind!(
                    info,
                    task.kind(),
                    "another attempt recorded the shard first; nothing written",
                    "another attempt recorded the trial first; nothing written"
                );
                self.metrics.outcome("superseded");
                self.ack(&message).await;
                self.finalize(handler, &ledger, &record, task.unit()).await;
            }
            Err(Error::LeaseLost(why)) => {
                self.counters.released.fetch_add(1, Ordering::Relaxed);
                self.metrics.outcome("lease_lost");
                by_kind!(
                    warn,
                    task.kind(),
                    "lease lost; the shard was cancelled and nothing was written",
                    "lease lost; the trial was cancelled (its trainer killed) and nothing was written",
                    reason = %why
                );
            }
            Err(Error::Cancelled) => {
                self.counters.released.fetch_add(1, Ordering::Relaxed);
                self.metrics.outcome("released");
                match self.queue.release(&message.receipt).await {
                    Ok(()) => by_kind!(
                        info,
                        task.kind(),
                        "shard released for another worker",
                        "trial released for another worker"
                    ),
                    Err(e) => warn!(error = %e, "release failed; the lease will expire instead"),
                }
            }
            // Retryable or not, the last attempt records its own cause: a
            // retryable error that lasts (a throttled or failing store) must
            // not run into the delivery after the last, which knows no cause.
            Err(e) if message.receive_count < self.config.max_attempts => {
                self.retry_later(&message, task.kind(), &e).await;
            }
            Err(e) => self.fail(&message, &task, Some(&ledger), &e).await,
        }
    }

    /// Dead-letters a task that must not run here, with the reason; it
    /// writes nothing under the prefix it names (which may not be its own).
    async fn refuse(&self, message: &Message, reason: &str) {
        self.counters.failed.fetch_add(1, Ordering::Relaxed);
        self.metrics.outcome("refused");
        self.metrics.error("refused");
        warn!(message = %message.id, reason, "task refused; dead-lettering");
        if let Err(e) = self.queue.dead_letter(message, &format!("task refused: {reason}")).await {
            warn!(error = %e, "dead-letter failed; the queue's redrive will move it");
        }
    }

    /// Extends the lease every third of the visibility timeout until
    /// stopped. Extension is retried while the lease lasts; a refusal
    /// (stale receipt: another consumer has the message) or a lease run
    /// past its end by this process's clock (it was frozen or cut off)
    /// marks the lease lost and cancels the shard.
    fn heartbeat(&self, message: &Message, lease: Lease) -> tokio::task::JoinHandle<()> {
        let queue = self.queue.clone();
        let receipt = message.receipt.clone();
        let visibility = self.config.visibility_timeout;
        let every = visibility / 3;
        let health = self.health.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = lease.stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                if lease.expired() {
                    return lease.lose("the lease ran past its visibility timeout before it could be extended");
                }
                let mut attempt = 0;
                loop {
                    let sent_at = Instant::now();
                    match queue.extend(&receipt, visibility).await {
                        Ok(()) => {
                            lease.extended(sent_at + visibility);
                            health.progressed();
                            break;
                        }
                        Err(e) if e.is_retryable() && !lease.expired() => {
                            attempt += 1;
                            warn!(error = %e, attempt, "lease extension failed; retrying");
                            tokio::time::sleep(retry::delay(attempt)).await;
                        }
                        Err(e) => return lease.lose(&format!("lease extension refused: {e}")),
                    }
                }
            }
        })
    }

    async fn ack(&self, message: &Message) {
        // Not retried: a lost ack means a redelivery, which finds the done
        // record and acks again.
        match self.queue.ack_batch(std::slice::from_ref(&message.receipt)).await {
            Ok(o) if o.failed.is_empty() => {}
            Ok(o) => warn!(error = %o.failed[0].1, "ack failed; the redelivery will be acked"),
            Err(e) => warn!(error = %e, "ack failed; the redelivery will be acked"),
        }
    }

    /// Hides the message for a backoff, then another attempt follows.
    async fn retry_later(&self, message: &Message, kind: TaskKind, err: &Error) {
        by_kind!(
            warn,
            kind,
            "shard failed; it will be retried",
            "trial failed; it will be retried",
            error = %err,
            kind = err.kind()
        );
        self.metrics.outcome("retried");
        self.metrics.error(err.kind());
        // The retry policy's jittered schedule, from 1 s, at most one lease.
        let schedule = retry::Policy {
            attempts: self.config.max_attempts,
            base: Duration::from_secs(1),
            cap: self.config.visibility_timeout,
        };
        let delay = schedule.delay(message.receive_count);
        if let Err(e) = self.queue.extend(&message.receipt, delay).await {
            warn!(error = %e, cause = %err, "could not schedule the retry; the lease will expire instead");
        }
    }

    /// Gives up on a unit: failed record, then dead-letter.
    async fn fail(&self, message: &Message, task: &impl UnitTask, ledger: Option<&Ledger>, err: &Error) {
        // A unit another attempt has recorded done never gets a failed
        // record (a message sent twice, failing on an input since removed).
        if let Some(ledger) = ledger
            && let Ok(Some(_)) = ledger.read_done(task.unit()).await
        {
            info!(error = %err, "this attempt failed, but another recorded the unit done; acking");
            self.metrics.outcome("superseded");
            self.ack(message).await;
            return;
        }
        by_kind!(
            warn,
            task.kind(),
            "shard failed for good; dead-lettering",
            "trial failed for good; dead-lettering",
            error = %err,
            kind = err.kind()
        );
        self.counters.failed.fetch_add(1, Ordering::Relaxed);
        self.metrics.outcome("failed");
        self.metrics.error(err.kind());
        if let Some(ledger) = ledger {
            let record = FailedRecord {
                v: LEDGER_VERSION,
                job: task.job().clone(),
                shard: task.unit().clone(),
                error_kind: err.kind().to_string(),
                message: err.to_string(),
                attempts: message.receive_count,
                worker: self.config.worker_id.clone(),
                failed_at_ms: now_ms(),
                log_tail: err.log_tail().map(str::to_string),
            };
            if let Err(e) = ledger.write_failed(&record).await {
                // The store refuses the record too (full, read-only, denied):
                // another attempt would fail the same way, and the one after
                // the last would know no cause. Dead-letter now with the cause
                // in the reason (`status --queue` shows it), and keep writing
                // the record in the background until the store takes it.
                warn!(error = %e, cause = %err, "failed record not written; dead-lettering with the cause, writing the record once the store takes it");
                self.write_failed_later(ledger.clone(), record);
                // The record's error is most often the same refusal: its kind
                // is enough, and keeps the reason within the queue's limit.
                let reason = format!("{err} (its failed record was refused too: {})", e.kind().as_str());
                return self.dead_letter(message, &reason).await;
            }
        }
        self.dead_letter(message, &err.to_string()).await;
    }

    async fn dead_letter(&self, message: &Message, reason: &str) {
        if let Err(e) = self.queue.dead_letter(message, reason).await {
            warn!(error = %e, "dead-letter failed; the queue's redrive will move it");
        }
    }

    /// Writes a failed record the store refused, retrying with backoff
    /// (from 1 s, at most a minute apart) for as long as the process runs,
    /// unless another attempt records the unit first.
    fn write_failed_later(&self, ledger: Ledger, record: FailedRecord) {
        tokio::spawn(
            async move {
                for attempt in 1u32.. {
                    tokio::time::sleep(retry::delay(attempt).min(Duration::from_secs(60))).await;
                    if let Ok(Some(_)) = ledger.read_done(&record.shard).await {
                        return;
                    }
                    match ledger.write_failed(&record).await {
                        Ok(()) => return info!("the store took the failed record at last"),
                        Err(e) => tracing::debug!(error = %e, attempt, "failed record still not written"),
                    }
                }
            }
            .in_current_span(),
        );
    }

    /// Completes the job when `unit` was its last: the ledger's cheap check
    /// first (one LIST of the unit's bucket, most of the time), the
    /// handler's full one only when that says the job may be complete.
    async fn finalize<H: TaskHandler>(&self, handler: &H, ledger: &Ledger, record: &AnyJob, unit: &ShardId) {
        match ledger.may_complete(record, unit).await {
            Ok(true) => {}
            Ok(false) => return,
            // The full check still runs: a flaky LIST must not leave the
            // job unfinished.
            Err(e) => warn!(error = %e, "the completion check failed; checking every record"),
        }
        match handler.finalize(ledger, record).await {
            Ok(true) => by_kind!(
                info,
                record.kind(),
                "all shards done; wrote _SUCCESS",
                "all trials done; wrote _SUCCESS",
                output = %ledger.root()
            ),
            Ok(false) => {}
            Err(e) => warn!(error = %e, "finalize failed; `hourglass status` retries it"),
        }
    }
}

/// One held lease: when it ends by this process's clock, whether it was
/// lost, and the shard's cancellation (also cancelled on drain timeout).
#[derive(Clone)]
pub struct Lease {
    valid_until: Arc<Mutex<Instant>>,
    /// Cancels the shard's work: lease lost, or the drain timeout passed.
    cancel: CancellationToken,
    lost: Arc<Mutex<Option<String>>>,
    /// Stops the heartbeat once the shard is settled.
    stop: CancellationToken,
    /// Writes need this much lease left: a put must not outlive the lease.
    margin: Duration,
}

impl Lease {
    fn new(visibility: Duration, cancel: CancellationToken) -> Self {
        Self {
            // Counted from now, a little after the queue started it.
            valid_until: Arc::new(Mutex::new(Instant::now() + visibility)),
            cancel,
            lost: Default::default(),
            stop: CancellationToken::new(),
            margin: visibility / 6,
        }
    }

    fn expired(&self) -> bool {
        Instant::now() >= *self.valid_until.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn extended(&self, until: Instant) {
        *self.valid_until.lock().unwrap_or_else(|p| p.into_inner()) = until;
    }

    fn lose(&self, why: &str) {
        self.lost.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(|| why.to_string());
        self.cancel.cancel();
    }

    /// Cancelled when the lease is lost or the drain timeout passes.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Whether the lease was lost (not merely given up on drain).
    pub fn is_lost(&self) -> bool {
        self.lost.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    fn lost_error(&self) -> Option<Error> {
        self.lost.lock().unwrap_or_else(|p| p.into_inner()).clone().map(Error::LeaseLost)
    }

    /// A shard's result, unless the lease was lost meanwhile (then any
    /// error, cancellation included, is the lost lease).
    pub fn check<T>(&self, result: Result<T>) -> Result<T> {
        if let Some(lost) = self.lost_error() {
            return Err(lost);
        }
        if self.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        result
    }

    /// Whether the lease has time left for a write.
    pub fn check_writable(&self) -> Result<()> {
        let until = *self.valid_until.lock().unwrap_or_else(|p| p.into_inner());
        if Instant::now() + self.margin >= until {
            self.lose("too little of the lease is left to write the shard's output");
        }
        self.check(Ok(()))
    }
}

/// Re-raises a task's panic; our tasks are never aborted, so any other
/// join error cannot happen.
fn propagate(done: Result<(), JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// Runs `f` when dropped: a gauge decremented on every exit path.
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}
