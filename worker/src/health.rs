//! The worker's probes. Ready: its model is loaded (when one is preloaded)
//! and its queue answers (the last receives did not all fail). Live: the
//! lease loop makes progress — a receive returned, a lease was extended or
//! a shard settled — within a bound; a worker that does none of these for
//! that long is stuck (a deadlock, a wedged runtime) and only a restart
//! helps, while a busy one extends its leases every third of the
//! visibility timeout.

use hourglass_core::metrics::Health;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Receives failing in a row before the worker says it is not ready: one
/// failure is a blip, retried with backoff.
pub const UNREADY_AFTER_FAILURES: u32 = 3;

pub struct WorkerHealth {
    started: Instant,
    /// Milliseconds from `started` to the last progress.
    last_progress_ms: AtomicU64,
    model_loaded: AtomicBool,
    receive_failures: AtomicU32,
    stall_after: Duration,
}

impl WorkerHealth {
    /// `stall_after`: how long without progress means stuck;
    /// `model_loaded`: false while a preload is pending.
    pub fn new(stall_after: Duration, model_loaded: bool) -> Self {
        Self {
            started: Instant::now(),
            last_progress_ms: AtomicU64::new(0),
            model_loaded: AtomicBool::new(model_loaded),
            receive_failures: AtomicU32::new(0),
            stall_after,
        }
    }

    pub fn progressed(&self) {
        self.last_progress_ms.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    pub fn model_loaded(&self) {
        self.model_loaded.store(true, Ordering::Relaxed);
    }

    /// A receive returned: `ok` or failed.
    pub fn received(&self, ok: bool) {
        if ok {
            self.receive_failures.store(0, Ordering::Relaxed);
            self.progressed();
        } else {
            self.receive_failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Liveness at `now` (time since start).
    fn live_at(&self, now: Duration) -> Result<(), String> {
        let idle = now.saturating_sub(Duration::from_millis(self.last_progress_ms.load(Ordering::Relaxed)));
        if idle > self.stall_after {
            return Err(format!(
                "the lease loop made no progress for {}s (bound {}s): no receive returned, no lease was extended, no shard settled",
                idle.as_secs(),
                self.stall_after.as_secs()
            ));
        }
        Ok(())
    }
}

impl Health for WorkerHealth {
    fn live(&self) -> Result<(), String> {
        self.live_at(self.started.elapsed())
    }

    fn ready(&self) -> Result<(), String> {
        if !self.model_loaded.load(Ordering::Relaxed) {
            return Err("the model is not loaded yet".into());
        }
        let failures = self.receive_failures.load(Ordering::Relaxed);
        if failures >= UNREADY_AFTER_FAILURES {
            return Err(format!("the queue is unreachable: the last {failures} receives failed"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_the_model_and_the_queue() {
        let h = WorkerHealth::new(Duration::from_secs(60), false);
        assert!(h.ready().unwrap_err().contains("model"));
        h.model_loaded();
        assert!(h.ready().is_ok());
        for _ in 0..UNREADY_AFTER_FAILURES {
            h.received(false);
        }
        assert!(h.ready().unwrap_err().contains("last 3 receives failed"));
        h.received(true);
        assert!(h.ready().is_ok());
    }

    #[test]
    fn live_until_no_progress_for_the_bound() {
        let h = WorkerHealth::new(Duration::from_secs(60), true);
        assert!(h.live().is_ok());
        assert!(h.live_at(Duration::from_secs(60)).is_ok());
        assert!(h.live_at(Duration::from_secs(61)).unwrap_err().contains("no progress for 61s (bound 60s)"));
    }
}
