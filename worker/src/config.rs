//! Worker settings, validated once before the lease loop starts.

use hourglass_core::BlobUrl;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Shards scored at once (CPU pool threads, ONNX Runtime sessions).
    pub concurrency: usize,
    /// Shards leased beyond `concurrency`, waiting for a CPU slot with their
    /// input already streaming in, so a pool thread that finishes a shard
    /// starts the next at once instead of idling through the output upload,
    /// the done record, the ack and the next receive.
    pub prefetch_shards: usize,
    /// ONNX Runtime intra-op threads per session.
    pub threads: usize,
    /// Rows per inference batch.
    pub batch_size: usize,
    /// Lease length; heartbeats extend it every third of it.
    pub visibility_timeout: Duration,
    /// Deliveries after which a failing shard gets a failed record and goes
    /// to the dead-letter queue.
    pub max_attempts: u32,
    /// After SIGTERM, how long held shards may run before being released.
    pub drain_timeout: Duration,
    /// Long-poll wait per receive. Short on the local queue so a stop
    /// request is noticed quickly.
    pub poll_wait: Duration,
    /// Whether a stop request may cut a receive short. Messages such a
    /// receive had taken come back after their lease; worth it for SQS's
    /// 20 s polls, not for the local queue's short ones.
    pub interrupt_receive: bool,
    /// Exit once the queue has been empty (nothing visible or in flight)
    /// for this long; `None` serves until stopped.
    pub exit_when_idle: Option<Duration>,
    /// Model to load before taking any message, so a bad model fails fast.
    pub preload_model: Option<BlobUrl>,
    /// This worker's name in done and failed records.
    pub worker_id: String,
    /// Fault injection for tests; zero in production.
    pub fault_batch_delay: Duration,
    /// Prefixes this worker may read or write at all (empty: any). A task
    /// whose input, model or output lies elsewhere is dead-lettered: a
    /// forged message cannot make the worker's role read or overwrite
    /// other data.
    pub allow_prefixes: Vec<BlobUrl>,
    /// Where models run: the device `hourglass_runtime::select` settled on at start.
    pub device: hourglass_runtime::device::DeviceOptions,
    /// The node's capacity and instance type, for done records' usage.
    pub node: crate::node::NodeInfo,
}

/// Rows per batch: large enough that ONNX Runtime's per-call overhead is
/// small against 100 trees × rows of work, small enough that a batch of 39
/// float features stays in cache-friendly megabytes (8,192 × 39 × 4 B ≈ 1.2 MiB).
pub const DEFAULT_BATCH_SIZE: usize = hourglass_runtime::device::DEFAULT_CPU_BATCH_SIZE;
/// One waiting shard is enough to keep the pool busy across a shard
/// boundary (`hourglass bench`: pool threads on-CPU 92%, see
/// docs/performance.md); more only holds leases other workers could take.
pub const DEFAULT_PREFETCH_SHARDS: usize = 1;
/// A lease of 60 s with heartbeats every 20 s rides out pauses of tens of
/// seconds; a dead worker's shard is back in the queue within a minute.
pub const DEFAULT_VISIBILITY_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Under the 2-minute spot interruption notice, with room to release.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(90);

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: 1,
            prefetch_shards: DEFAULT_PREFETCH_SHARDS,
            threads: 1,
            batch_size: DEFAULT_BATCH_SIZE,
            visibility_timeout: DEFAULT_VISIBILITY_TIMEOUT,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            poll_wait: Duration::from_secs(1),
            interrupt_receive: false,
            exit_when_idle: None,
            preload_model: None,
            node: crate::node::NodeInfo::default(),
            worker_id: default_worker_id(),
            fault_batch_delay: Duration::ZERO,
            allow_prefixes: Vec::new(),
            device: Default::default(),
        }
    }
}

impl WorkerConfig {
    /// Whether `url` lies under an allowed prefix (any, when none is set).
    /// A prefix given without a trailing `/` still matches whole path
    /// segments only: `s3://b/in` allows `s3://b/in/x`, not `s3://b/input`.
    pub fn allows(&self, url: &BlobUrl) -> bool {
        let url = url.to_string();
        self.allow_prefixes.is_empty()
            || self.allow_prefixes.iter().any(|p| {
                let p = p.to_string();
                url == p || url.starts_with(&p) && (p.ends_with('/') || url[p.len()..].starts_with('/'))
            })
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.concurrency == 0 || self.threads == 0 || self.batch_size == 0 {
            return Err("--concurrency, --threads and --batch-size must be at least 1".into());
        }
        if self.visibility_timeout < Duration::from_secs(1) {
            return Err("--visibility-timeout must be at least 1s".into());
        }
        if self.max_attempts == 0 {
            return Err("--max-attempts must be at least 1".into());
        }
        Ok(())
    }
}

/// `<host>-<pid>`: unique per process on a fleet (pod names are hosts).
pub fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}-{}", std::process::id())
}

/// The CPU budget as (shards at once, ORT threads per shard): what is not
/// given fills the cores, favouring one single-threaded shard per core
/// (ORT's tree ensembles scale better across sessions than within one).
pub fn split_cores(cores: usize, concurrency: Option<usize>, threads: Option<usize>) -> (usize, usize) {
    match (concurrency, threads) {
        (Some(c), Some(t)) => (c, t),
        (Some(c), None) => (c, (cores / c.max(1)).max(1)),
        (None, Some(t)) => ((cores / t.max(1)).max(1), t),
        (None, None) => (cores.max(1), 1),
    }
}
