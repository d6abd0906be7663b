//! The one retry policy: every store and queue call, every lease extension
//! and every receive loop backs off on this schedule.
//!
//! Exponential backoff with full jitter (AWS's "Exponential Backoff and
//! Jitter"): the wait before retry `n` is uniform in `[0, min(cap, base·2ⁿ⁻¹)]`,
//! so a fleet of workers throttled together does not retry together.
//!
//! Budget of one call under [`Policy::STANDARD`]: at most 8 attempts and at
//! most 6.35 s of waiting (50 + 100 + … + 3200 ms), about 3 s on average.
//! The AWS SDK's own retries are off (see `aws.rs`), so that budget is the
//! whole budget: attempts do not multiply across layers.
//!
//! Only errors whose kind is retryable (throttled, transient) are retried;
//! everything else returns at once.

use crate::Result;
use crate::rng::SplitMix64;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

/// A bounded retry schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Calls in all, the first included.
    pub attempts: u32,
    /// The cap of the first wait; each next cap doubles.
    pub base: Duration,
    /// No wait is longer than this.
    pub cap: Duration,
}

impl Policy {
    /// For store and queue calls. With a 20 % failure rate, 8 attempts fail
    /// together about 3 times in a million calls.
    pub const STANDARD: Policy = Policy { attempts: 8, base: Duration::from_millis(50), cap: Duration::from_secs(5) };

    /// The most a call can wait in all, retries exhausted.
    pub fn max_total_wait(&self) -> Duration {
        (1..self.attempts).map(|n| self.ceiling(n)).sum()
    }

    /// The cap of the wait before retry `n` (1-based).
    fn ceiling(&self, n: u32) -> Duration {
        self.base.saturating_mul(1u32 << (n - 1).min(20)).min(self.cap)
    }

    /// The wait before retry `n` (1-based), jittered. Also for loops that
    /// retry without end (a worker's receive loop): `n` past the budget
    /// keeps the cap.
    pub fn delay(&self, n: u32) -> Duration {
        self.ceiling(n.max(1)).mul_f64(jitter())
    }

    /// Runs `call` until it succeeds, fails with an error that is not
    /// retryable, or the attempts are spent.
    pub async fn run<T, Fut>(&self, what: &str, mut call: impl FnMut() -> Fut) -> Result<T>
    where
        Fut: Future<Output = Result<T>>,
    {
        let mut attempt = 1;
        loop {
            match call().await {
                Err(e) if e.is_retryable() && attempt < self.attempts => {
                    tracing::debug!(error = %e, attempt, what, "retrying");
                    tokio::time::sleep(self.delay(attempt)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

/// The wait before retry `n` under the standard policy.
pub fn delay(n: u32) -> Duration {
    Policy::STANDARD.delay(n)
}

/// Uniform in `[0, 1)`, from a process-wide generator seeded by the clock
/// and the process id, so two workers do not draw the same waits.
fn jitter() -> f64 {
    static RNG: Mutex<Option<SplitMix64>> = Mutex::new(None);
    let mut guard = RNG.lock().unwrap_or_else(|p| p.into_inner());
    guard
        .get_or_insert_with(|| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            SplitMix64::new(now.as_nanos() as u64 ^ (u64::from(std::process::id()) << 32))
        })
        .uniform()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Error, ErrorKind};
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn the_standard_budget_is_as_documented() {
        let p = Policy::STANDARD;
        assert_eq!(p.max_total_wait(), Duration::from_millis(6_350));
        for n in 1..20 {
            let d = p.delay(n);
            assert!(d <= p.cap && d <= p.base * (1 << (n - 1).min(10)), "retry {n}: {d:?}");
        }
    }

    #[test]
    fn waits_are_jittered() {
        let waits: std::collections::HashSet<_> = (0..20).map(|_| delay(6)).collect();
        assert!(waits.len() > 10, "{waits:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn retries_only_what_can_succeed_and_stops_at_the_budget() {
        let calls = AtomicU32::new(0);
        let out: Result<()> = Policy::STANDARD
            .run("test", || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(Error::store("get", "file:///x", ErrorKind::Transient, "reset")) }
            })
            .await;
        assert!(out.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 8);

        calls.store(0, Ordering::SeqCst);
        let out: Result<()> = Policy::STANDARD
            .run("test", || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(Error::store("get", "file:///x", ErrorKind::Permission, "denied")) }
            })
            .await;
        assert!(out.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        calls.store(0, Ordering::SeqCst);
        let out = Policy::STANDARD
            .run("test", || {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 3 { Err(Error::store("get", "file:///x", ErrorKind::Throttled, "slow down")) } else { Ok(n) }
                }
            })
            .await;
        assert_eq!(out.unwrap(), 3);
    }
}
