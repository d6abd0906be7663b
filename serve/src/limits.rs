//! What a request may cost the server, checked before the memory is
//! taken: the bytes of requests in flight (received, decoded, queued,
//! being scored) are drawn from one budget ([`InflightBytes`]); a request
//! that would go past it is refused (429 / `RESOURCE_EXHAUSTED`) instead
//! of growing the process into an OOM kill. No size a client declares
//! (a shape, a length header, `binary_data_size`) is trusted before it is
//! checked against the bytes really received.

use super::{Refusal, ServeError};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The default budget when `--max-inflight-bytes` is not given: a quarter
/// of the memory the process may use (the cgroup limit, else the
/// machine's memory), leaving the rest to ONNX Runtime's arenas, the
/// loaded models and the allocator's slack; never under two of the
/// largest requests.
pub fn default_inflight_bytes() -> usize {
    let floor = 2 * super::grpc::MAX_MESSAGE_BYTES;
    memory_limit_bytes().map(|m| (m / 4) as usize).unwrap_or(1 << 30).max(floor)
}

/// The cgroup v2 (or v1) memory limit, else MemTotal.
pub fn memory_limit_bytes() -> Option<u64> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let cgroup = read("/sys/fs/cgroup/memory.max")
        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
        .and_then(|s| s.trim().parse::<u64>().ok())
        // v1 reports "no limit" as a huge number.
        .filter(|n| *n < 1 << 60);
    let total = || {
        read("/proc/meminfo")?
            .lines()
            .find(|l| l.starts_with("MemTotal:"))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
            .map(|kib| kib * 1024)
    };
    match (cgroup, total()) {
        (Some(c), Some(t)) => Some(c.min(t)),
        (c, t) => c.or(t),
    }
}

/// The server-wide budget of bytes in flight.
#[derive(Clone)]
pub struct InflightBytes {
    permits: Arc<Semaphore>,
    limit: usize,
}

/// Bytes held by one request; given back when dropped.
#[derive(Debug, Default)]
pub struct Charge {
    held: Vec<OwnedSemaphorePermit>,
    bytes: usize,
}

impl Charge {
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn merge(&mut self, other: Charge) {
        self.bytes += other.bytes;
        self.held.extend(other.held);
    }
}

impl InflightBytes {
    pub fn new(limit: usize) -> Self {
        let limit = limit.clamp(1, Semaphore::MAX_PERMITS);
        InflightBytes { permits: Arc::new(Semaphore::new(limit)), limit }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes in flight now.
    pub fn used(&self) -> usize {
        self.limit - self.permits.available_permits()
    }

    /// Takes `bytes` from the budget at once, or refuses: `Busy` while
    /// other requests hold it, `TooLarge` when the request alone is over
    /// the whole budget (waiting will not help). `what` names the cost
    /// for the message.
    pub fn take(&self, bytes: usize, what: &str) -> Result<Charge, ServeError> {
        if bytes == 0 {
            return Ok(Charge::default());
        }
        if bytes > self.limit {
            return Err(ServeError::new(
                Refusal::TooLarge,
                format!("{what} needs {bytes} bytes, over the server's --max-inflight-bytes {}", self.limit),
            ));
        }
        let mut charge = Charge::default();
        let mut left = bytes;
        // A semaphore takes at most u32::MAX permits at once.
        while left > 0 {
            let n = left.min(u32::MAX as usize);
            match self.permits.clone().try_acquire_many_owned(n as u32) {
                Ok(p) => charge.held.push(p),
                Err(_) => {
                    return Err(ServeError::new(
                        Refusal::Busy,
                        format!(
                            "the server holds {} of its {} in-flight bytes; {what} needs {bytes}: retry later",
                            self.used(),
                            self.limit
                        ),
                    ));
                }
            }
            left -= n;
        }
        charge.bytes = bytes;
        Ok(charge)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_are_refused_past_the_budget_and_given_back_when_dropped() {
        let budget = InflightBytes::new(100);
        let a = budget.take(60, "a").unwrap();
        assert_eq!(budget.used(), 60);
        assert_eq!(budget.take(50, "b").unwrap_err().kind, Refusal::Busy);
        assert_eq!(budget.take(101, "c").unwrap_err().kind, Refusal::TooLarge);
        drop(a);
        assert_eq!(budget.used(), 0);
        let mut b = budget.take(50, "b").unwrap();
        b.merge(budget.take(50, "b2").unwrap());
        assert_eq!((b.bytes(), budget.used()), (100, 100));
        drop(b);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn the_default_is_at_least_two_of_the_largest_requests() {
        assert!(default_inflight_bytes() >= 2 * super::super::grpc::MAX_MESSAGE_BYTES);
    }
}
