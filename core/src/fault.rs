//! Fault injection plans: fail the first N calls of each operation, or a
//! fraction of calls at random, and add latency, so retry paths are tested
//! rather than hoped for. A process opts in with `install` (the CLI's
//! hidden `--inject-faults`, or `HOURGLASS_FAULTS`); `store::open` and
//! `queue::open` then wrap every backend they return in their
//! `Unreliable` wrappers (`store/unreliable.rs`, `queue/unreliable.rs`),
//! which ask an [`Injector`] before each call. This module depends on
//! neither seam.

use crate::rng::SplitMix64;
use crate::{Error, ErrorKind, Result};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// What to inject. Parsed from `first=N,fraction=F,latency=DUR,kind=K,seed=S`.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultPlan {
    /// Fail the first N calls of each operation.
    pub fail_first: u32,
    /// Then fail this fraction of calls at random.
    pub fail_fraction: f64,
    /// Added before every call.
    pub latency: Duration,
    /// The kind of the injected errors: transient (retryable) by default.
    pub kind: ErrorKind,
    pub seed: u64,
}

impl Default for FaultPlan {
    fn default() -> Self {
        Self { fail_first: 0, fail_fraction: 0.0, latency: Duration::ZERO, kind: ErrorKind::Transient, seed: 1 }
    }
}

impl std::str::FromStr for FaultPlan {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let mut plan = FaultPlan::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| format!("fault spec {part:?}: expected key=value"))?;
            let bad = |e: &dyn std::fmt::Display| format!("fault spec {part:?}: {e}");
            match k {
                "first" => plan.fail_first = v.parse().map_err(|e| bad(&e))?,
                "fraction" => plan.fail_fraction = v.parse().map_err(|e| bad(&e))?,
                "latency" => plan.latency = humantime::parse_duration(v).map_err(|e| bad(&e))?,
                "seed" => plan.seed = v.parse().map_err(|e| bad(&e))?,
                "kind" => {
                    plan.kind = match v {
                        "transient" => ErrorKind::Transient,
                        "throttled" => ErrorKind::Throttled,
                        "permanent" => ErrorKind::Permanent,
                        "permission" => ErrorKind::Permission,
                        other => return Err(bad(&format!("unknown kind {other:?}"))),
                    }
                }
                other => {
                    return Err(format!("fault spec: unknown key {other:?} (first, fraction, latency, kind, seed)"));
                }
            }
        }
        if !(0.0..=1.0).contains(&plan.fail_fraction) {
            return Err("fault spec: fraction must be within 0..=1".into());
        }
        Ok(plan)
    }
}

static INSTALLED: OnceLock<FaultPlan> = OnceLock::new();

/// Makes every backend opened from now on unreliable. Once per process.
pub fn install(plan: FaultPlan) {
    let _ = INSTALLED.set(plan);
}

pub fn installed() -> Option<&'static FaultPlan> {
    INSTALLED.get()
}

/// Decides, per call, whether to fail.
#[derive(Debug)]
pub(crate) struct Injector {
    plan: FaultPlan,
    calls: Mutex<(HashMap<&'static str, u32>, SplitMix64)>,
}

impl Injector {
    pub(crate) fn new(plan: FaultPlan) -> Self {
        let seed = plan.seed;
        Self { plan, calls: Mutex::new((HashMap::new(), SplitMix64::new(seed))) }
    }

    fn should_fail(&self, op: &'static str) -> bool {
        let mut g = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        let (counts, rng) = &mut *g;
        let n = counts.entry(op).or_default();
        *n += 1;
        if *n <= self.plan.fail_first {
            return true;
        }
        rng.uniform() < self.plan.fail_fraction
    }

    pub(crate) async fn check(&self, op: &'static str, make: impl FnOnce(ErrorKind, &str) -> Error) -> Result<()> {
        if !self.plan.latency.is_zero() {
            tokio::time::sleep(self.plan.latency).await;
        }
        if self.should_fail(op) { Err(make(self.plan.kind, "injected fault")) } else { Ok(()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plans() {
        let p: FaultPlan = "first=2,fraction=0.2,latency=5ms,kind=permanent,seed=9".parse().unwrap();
        assert_eq!(
            p,
            FaultPlan {
                fail_first: 2,
                fail_fraction: 0.2,
                latency: Duration::from_millis(5),
                kind: ErrorKind::Permanent,
                seed: 9
            }
        );
        assert!("fraction=2".parse::<FaultPlan>().is_err());
        assert!("nope=1".parse::<FaultPlan>().is_err());
    }

    #[test]
    fn fails_first_n_per_operation_then_a_fraction() {
        let inj = Injector::new(FaultPlan { fail_first: 2, fail_fraction: 0.2, ..FaultPlan::default() });
        assert!(inj.should_fail("get") && inj.should_fail("get"));
        assert!(inj.should_fail("put"), "counts are per operation");
        let failed = (0..10_000).filter(|_| inj.should_fail("get")).count();
        assert!((1_500..2_500).contains(&failed), "about 20 % fail: {failed}");
    }
}
