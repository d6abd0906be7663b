//! The scaling policy: a pure function from signals to a decision, with a
//! little history for scale-down stabilization and idle cooldown. No IO:
//! the actuators and the simulator call the same code.
//!
//! Two rules:
//! - **deadline**: reason in node-hours, the unit that is paid for. Find
//!   the fewest replicas whose projected finish lands before the deadline
//!   minus a safety margin, counting the time new capacity takes to arrive
//!   (pod start, plus node boot when the new pods do not fit on nodes
//!   already up) and the capacity spot interruptions take away; then round
//!   up to whole nodes and fill every node already paid for, up to the
//!   replicas the queue can keep busy. A node costs its boot, its share of
//!   the work and the autoscaler's scale-down delay whether its slots are
//!   used or not, so the fewest fully packed nodes that meet the deadline
//!   are the fewest node-hours. When the ledger says the job is done, the
//!   replicas go at once (the nodes still wait out the scale-down delay);
//!   the idle cooldown is for queues nobody has a ledger for;
//! - **queue-length**: KEDA's SQS rule, `ceil((visible + in flight) /
//!   target messages per replica)`; `target_messages_per_replica` is KEDA's
//!   `queueLength` (default 5), and counting in-flight messages is KEDA's
//!   default `scaleOnInFlight: true`. It is also what the deadline rule
//!   falls back to when a job has no deadline.
//!
//! Both then: never below the busy replicas (in-flight messages, one per
//! replica), at most `max_step_up`/`max_step_down` per decision, within
//! min/max (max is a hard cap, applied even past the step limit), scale-down
//! only to the highest desire of the stabilization window (as the HPA
//! does), and to zero only after an idle cooldown.

use std::collections::VecDeque;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    Deadline,
    QueueLength,
}

#[derive(Debug, Clone)]
pub struct PolicyConfig {
    pub kind: PolicyKind,
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub max_step_up: u32,
    pub max_step_down: u32,
    /// Scale down only to the highest desire seen this long (HPA: 5 min).
    pub scale_down_stabilization: Duration,
    /// Scale to zero after the queue has been empty this long (KEDA: 5 min).
    pub idle_cooldown: Duration,
    /// Aim to finish this long before the deadline, or `safety_margin_fraction`
    /// of the time left, whichever is less: a fixed 5 minutes would cost a
    /// 20-minute job a quarter of its window (and its node-hours).
    pub safety_margin: Duration,
    pub safety_margin_fraction: f64,
    /// Spot interruptions per node-hour: each takes a node's pods away for
    /// a node boot and a pod start, and their shards are redone.
    pub interruptions_per_node_hour: f64,
    pub pod_start: Duration,
    pub node_boot: Duration,
    pub pods_per_node: u32,
    /// Rows/s of one replica before any has been measured.
    pub prior_rows_per_sec: f64,
    /// Rows per message when the ledger cannot say (no job record yet).
    pub prior_rows_per_message: f64,
    /// KEDA's `queueLength`.
    pub target_messages_per_replica: u64,
    /// Shards one replica works on at once (the worker's `--concurrency`).
    pub shards_per_replica: u32,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            kind: PolicyKind::Deadline,
            min_replicas: 0,
            max_replicas: 100,
            max_step_up: 100,
            max_step_down: 10,
            scale_down_stabilization: Duration::from_secs(300),
            idle_cooldown: Duration::from_secs(300),
            safety_margin: Duration::from_secs(300),
            safety_margin_fraction: 0.1,
            interruptions_per_node_hour: 0.05,
            pod_start: Duration::from_secs(30),
            node_boot: Duration::from_secs(180),
            pods_per_node: 4,
            prior_rows_per_sec: 250_000.0,
            prior_rows_per_message: 1_000_000.0,
            target_messages_per_replica: 5,
            shards_per_replica: 1,
        }
    }
}

/// What the scaler sees at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Signals {
    /// Time since an arbitrary origin shared with `deadline`.
    pub now: Duration,
    pub deadline: Option<Duration>,
    /// Rows not yet done, from the job ledger, where known.
    pub backlog_rows: Option<u64>,
    pub visible: u64,
    pub in_flight: u64,
    /// Measured rows/s per replica (an EWMA of done records).
    pub measured_rows_per_sec: Option<f64>,
    pub current_replicas: u32,
    /// Replicas that fit on nodes already up; more need a node boot.
    pub schedulable_replicas: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Nothing to do.
    Idle,
    /// No deadline: the queue-length rule applies.
    NoDeadline,
    OnTrack,
    /// The projected finish is after the deadline minus the margin.
    AtRisk,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Idle => "idle",
            Verdict::NoDeadline => "no_deadline",
            Verdict::OnTrack => "on_track",
            Verdict::AtRisk => "at_risk",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub desired_replicas: u32,
    /// Pause pods that keep warm nodes ahead of need.
    pub placeholder_replicas: u32,
    /// When the backlog is projected to be done with `desired_replicas`.
    pub projected_finish: Option<Duration>,
    pub verdict: Verdict,
}

/// What the policy remembers between decisions.
#[derive(Debug, Clone, Default)]
pub struct History {
    recent: VecDeque<(Duration, u32)>,
    last_busy: Option<Duration>,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Time to finish `backlog` rows with `current` replicas now and `desired`
/// once added ones arrive after `latency`.
fn finish_secs(backlog: f64, rate: f64, current: u32, desired: u32, latency: f64) -> f64 {
    let (c, d) = (current as f64, desired as f64);
    if desired <= current {
        return if d > 0.0 { backlog / (d * rate) } else { f64::INFINITY };
    }
    let early = c * rate * latency;
    if early >= backlog { backlog / (c * rate) } else { latency + (backlog - early) / (d * rate) }
}

pub fn decide(cfg: &PolicyConfig, s: &Signals, h: &mut History) -> Decision {
    let messages = s.visible + s.in_flight;
    // Replicas holding a message are busy, `shards_per_replica` messages
    // each. (In-flight messages of dead pods count until their lease lapses;
    // capped by the replicas that exist.)
    let busy = s.in_flight.div_ceil(u64::from(cfg.shards_per_replica.max(1))).min(u64::from(s.current_replicas)) as u32;
    let rate = s.measured_rows_per_sec.filter(|r| *r > 0.0).unwrap_or(cfg.prior_rows_per_sec).max(1e-9);
    // What interruptions take away: per node-hour, each a node's pods for
    // a node boot and a pod start.
    let lost = (cfg.interruptions_per_node_hour.max(0.0) * secs(cfg.node_boot + cfg.pod_start) / 3600.0).min(0.5);
    let rate = rate * (1.0 - lost);
    let backlog = s.backlog_rows.map(|b| b as f64).unwrap_or(messages as f64 * cfg.prior_rows_per_message);
    if messages > 0 {
        h.last_busy = Some(s.now);
    }

    let (raw, verdict, finish) = if messages == 0 {
        // The ledger says every row is done: nothing comes back, so nothing
        // is worth keeping a node for.
        // (KEDA knows no ledger: the queue-length rule keeps its cooldown.)
        let job_done = cfg.kind == PolicyKind::Deadline && s.backlog_rows == Some(0) && s.deadline.is_some();
        let idle_long = job_done || h.last_busy.is_none_or(|t| s.now.saturating_sub(t) >= cfg.idle_cooldown);
        let keep = if idle_long { 0 } else { s.current_replicas };
        (keep, Verdict::Idle, None)
    } else {
        match (cfg.kind, s.deadline) {
            (PolicyKind::Deadline, Some(deadline)) => {
                let left = deadline.saturating_sub(s.now);
                let margin = cfg.safety_margin.min(left.mul_f64(cfg.safety_margin_fraction.clamp(0.0, 1.0)));
                let available = secs(left.saturating_sub(margin));
                let needed = whole_nodes(cfg, s, replicas_for_deadline(cfg, s, backlog, rate, available));
                let latency = latency_for(cfg, s, needed);
                let finish = finish_secs(backlog, rate, s.current_replicas, needed.max(busy).max(1), latency);
                let on_track = finish <= available;
                (needed, if on_track { Verdict::OnTrack } else { Verdict::AtRisk }, Some(finish))
            }
            _ => {
                let target = cfg.target_messages_per_replica.max(1);
                let n = messages.div_ceil(target).min(u64::from(u32::MAX)) as u32;
                (n, Verdict::NoDeadline, None)
            }
        }
    };

    // Limits: busy replicas first (never kill a pod mid-message), then
    // min/max and steps, then stabilization for scale-down.
    let mut desired = raw.max(busy).clamp(cfg.min_replicas, cfg.max_replicas.max(cfg.min_replicas));
    h.recent.push_back((s.now, desired));
    while h.recent.front().is_some_and(|(t, _)| s.now.saturating_sub(*t) > cfg.scale_down_stabilization) {
        h.recent.pop_front();
    }
    if desired < s.current_replicas && verdict != Verdict::Idle {
        let window_max = h.recent.iter().map(|(_, d)| *d).max().unwrap_or(desired);
        desired = window_max.min(s.current_replicas);
    }
    let lo = s.current_replicas.saturating_sub(cfg.max_step_down).max(busy);
    let hi = s.current_replicas.saturating_add(cfg.max_step_up.max(1));
    desired = desired.clamp(lo.min(hi), hi).clamp(cfg.min_replicas.min(hi), cfg.max_replicas.max(busy));

    let placeholder_replicas = if verdict == Verdict::AtRisk { cfg.pods_per_node } else { 0 };
    let projected_finish = match (finish, verdict) {
        (Some(_), _) => {
            let latency = latency_for(cfg, s, desired);
            Some(
                s.now
                    + Duration::from_secs_f64(
                        finish_secs(backlog, rate, s.current_replicas, desired, latency).min(1e9),
                    ),
            )
        }
        _ => None,
    };
    Decision { desired_replicas: desired, placeholder_replicas, projected_finish, verdict }
}

/// The node-hours step: `needed` replicas rounded up to whole nodes, and
/// at least every slot of the nodes already up, but no more replicas than
/// the queue can keep busy (one message each per `shards_per_replica`).
/// A node is paid for whole; an empty slot on it buys nothing, a filled one
/// finishes the work (and frees the node) sooner.
fn whole_nodes(cfg: &PolicyConfig, s: &Signals, needed: u32) -> u32 {
    let ppn = cfg.pods_per_node.max(1);
    let useful =
        (s.visible + s.in_flight).div_ceil(u64::from(cfg.shards_per_replica.max(1))).min(u64::from(u32::MAX)) as u32;
    let nodes = needed.div_ceil(ppn).saturating_mul(ppn);
    needed.max(nodes.max(s.schedulable_replicas).min(useful))
}

/// Pod start, plus a node boot when the replicas do not fit on nodes up.
fn latency_for(cfg: &PolicyConfig, s: &Signals, replicas: u32) -> f64 {
    let boot = if replicas > s.schedulable_replicas { secs(cfg.node_boot) } else { 0.0 };
    secs(cfg.pod_start) + boot
}

/// The fewest replicas that finish `backlog` within `available` seconds.
fn replicas_for_deadline(cfg: &PolicyConfig, s: &Signals, backlog: f64, rate: f64, available: f64) -> u32 {
    let max = cfg.max_replicas.max(1);
    let fits = |n: u32| finish_secs(backlog, rate, s.current_replicas, n, latency_for(cfg, s, n)) <= available;
    // The finish time falls as replicas grow, except that it jumps up where
    // new replicas stop fitting on the nodes already up (a node boot joins
    // the latency): search each side of that edge on its own.
    let edge = s.schedulable_replicas.clamp(0, max);
    let smallest = |lo: u32, hi: u32| -> Option<u32> {
        if lo > hi || !fits(hi) {
            return None;
        }
        let (mut lo, mut hi) = (lo, hi);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if fits(mid) { hi = mid } else { lo = mid + 1 }
        }
        Some(lo)
    };
    smallest(1, edge).or_else(|| smallest(edge.max(1), max)).unwrap_or(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIN: Duration = Duration::from_secs(60);

    fn signals(backlog_rows: u64, messages: u64, deadline_min: u64) -> Signals {
        Signals {
            now: Duration::ZERO,
            deadline: Some(MIN * deadline_min as u32),
            backlog_rows: Some(backlog_rows),
            visible: messages,
            in_flight: 0,
            measured_rows_per_sec: None,
            current_replicas: 0,
            schedulable_replicas: 0,
        }
    }

    fn fresh(cfg: &PolicyConfig, s: &Signals) -> Decision {
        decide(cfg, s, &mut History::default())
    }

    #[test]
    fn reference_job_gets_enough_replicas_to_beat_the_deadline() {
        // 1e9 rows, 1 h, 250 k rows/s per pod, 3 min node boot, 5 min margin.
        let cfg = PolicyConfig::default();
        let d = fresh(&cfg, &signals(1_000_000_000, 1000, 60));
        // 1e9 / 250e3 = 4000 pod-seconds over 55 min less 3.5 min of boot:
        // 2 pods would do, and the node they need holds 4.
        assert_eq!(d.desired_replicas, 4, "{d:?}");
        assert_eq!(d.verdict, Verdict::OnTrack);
        assert!(d.projected_finish.unwrap() <= MIN * 55);
    }

    #[test]
    fn impossible_deadline_is_at_risk_at_max_with_headroom() {
        let cfg = PolicyConfig { max_replicas: 3, ..PolicyConfig::default() };
        let d = fresh(&cfg, &signals(1_000_000_000_000, 10_000, 60));
        assert_eq!((d.desired_replicas, d.verdict), (3, Verdict::AtRisk));
        assert_eq!(d.placeholder_replicas, cfg.pods_per_node);
    }

    #[test]
    fn no_deadline_is_keda_queue_length() {
        let cfg = PolicyConfig::default();
        let mut s = signals(0, 23, 60);
        s.deadline = None;
        let d = fresh(&cfg, &s);
        assert_eq!((d.desired_replicas, d.verdict), (5, Verdict::NoDeadline));
    }

    #[test]
    fn busy_replicas_count_their_concurrency() {
        // 8 shards in flight on workers taking 4 at once: 2 replicas are
        // busy and stay, though a tiny backlog would need just 1.
        let cfg = PolicyConfig { shards_per_replica: 4, max_step_down: 10, ..PolicyConfig::default() };
        let mut s = signals(10, 0, 60);
        s.in_flight = 8;
        s.current_replicas = 5;
        assert_eq!(fresh(&cfg, &s).desired_replicas, 2);
        let one_each = PolicyConfig { shards_per_replica: 1, ..cfg };
        assert_eq!(fresh(&one_each, &s).desired_replicas, 5);
    }

    #[test]
    fn idle_scales_to_zero_only_after_the_cooldown() {
        let cfg = PolicyConfig::default();
        let mut h = History::default();
        let mut s = signals(1_000, 1, 60);
        s.current_replicas = 2;
        s.in_flight = 1;
        s.visible = 0;
        decide(&cfg, &s, &mut h);
        s.in_flight = 0;
        s.now = MIN;
        assert_eq!(decide(&cfg, &s, &mut h).desired_replicas, 2, "within the cooldown");
        s.now = MIN * 7;
        let d = decide(&cfg, &s, &mut h);
        assert_eq!((d.desired_replicas, d.verdict), (0, Verdict::Idle));
    }

    #[test]
    fn steady_queue_converges_without_flapping() {
        let cfg = PolicyConfig::default();
        let mut h = History::default();
        let mut s = signals(500_000_000, 500, 60);
        let mut seen = Vec::new();
        for i in 0..30 {
            s.now = Duration::from_secs(15 * i);
            s.deadline = Some(s.now + MIN * 30);
            let d = decide(&cfg, &s, &mut h);
            s.current_replicas = d.desired_replicas;
            s.schedulable_replicas = d.desired_replicas;
            seen.push(d.desired_replicas);
        }
        let tail = &seen[5..];
        assert!(tail.windows(2).all(|w| w[0] == w[1]), "flapping: {seen:?}");
    }

    proptest! {
        #[test]
        fn monotone_in_backlog_and_deadline_tightness(
            backlog in 1u64..5_000_000_000,
            extra in 0u64..5_000_000_000,
            deadline_min in 10u64..240,
            tighter in 0u64..9,
            current in 0u32..50,
        ) {
            let cfg = PolicyConfig::default();
            let mut s = signals(backlog, 100, deadline_min);
            s.current_replicas = current;
            s.schedulable_replicas = current;
            let base = fresh(&cfg, &s).desired_replicas;
            s.backlog_rows = Some(backlog + extra);
            prop_assert!(fresh(&cfg, &s).desired_replicas >= base);
            s.backlog_rows = Some(backlog);
            s.deadline = Some(MIN * (deadline_min - tighter) as u32);
            prop_assert!(fresh(&cfg, &s).desired_replicas >= base);
        }

        #[test]
        fn never_below_busy_and_within_limits(
            backlog in 0u64..5_000_000_000,
            visible in 0u64..1000,
            in_flight in 0u64..200,
            current in 0u32..200,
            min in 0u32..5,
            max in 5u32..150,
            step_up in 1u32..20,
            step_down in 1u32..20,
            deadline in proptest::option::of(10u64..240),
            queue_length in any::<bool>(),
        ) {
            let cfg = PolicyConfig {
                kind: if queue_length { PolicyKind::QueueLength } else { PolicyKind::Deadline },
                min_replicas: min, max_replicas: max, max_step_up: step_up, max_step_down: step_down,
                ..PolicyConfig::default()
            };
            let s = Signals {
                now: MIN * 10,
                deadline: deadline.map(|m| MIN * m as u32),
                backlog_rows: Some(backlog),
                visible, in_flight,
                measured_rows_per_sec: Some(200_000.0),
                current_replicas: current,
                schedulable_replicas: current,
            };
            let d = fresh(&cfg, &s);
            let busy = in_flight.min(u64::from(current)) as u32;
            prop_assert!(d.desired_replicas >= busy, "{d:?} busy {busy}");
            prop_assert!(d.desired_replicas <= current + step_up || d.desired_replicas <= busy);
            // Steps bound scale-down, except to honour max (a hard cap) or
            // to go idle.
            prop_assert!(d.desired_replicas + step_down >= current || d.verdict == Verdict::Idle || current > max);
            prop_assert!(d.desired_replicas <= max.max(busy));
            if visible + in_flight > 0 {
                prop_assert!(d.desired_replicas >= min.min(current + step_up));
            }
        }
    }
}
