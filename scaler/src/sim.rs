//! The simulator: a fixed-increment (1 s) discrete-event simulation of a
//! queue of shards, worker pods and spot nodes, driven by the same
//! `policy::decide` the live scaler uses.
//!
//! Modelled: pods start `pod_start` after they are placed; pods that do not
//! fit on ready nodes are pending, and pending pods make the cluster
//! autoscaler boot nodes (`node_boot`, `pods_per_node` each) and remove
//! nodes empty for `node_idle_removal`; placeholder pods hold node slots
//! until a worker pod preempts them; spot interruptions kill a node and its
//! pods, and their shards come back after the visibility timeout. The
//! scaler decides every `tick`; it never removes a busy pod.

use crate::policy::{Decision, History, PolicyConfig, Signals, decide};
use hourglass_core::rng::SplitMix64;
use std::collections::VecDeque;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Scenario {
    pub rows: f64,
    pub shard_rows: f64,
    /// From the start of the run.
    pub deadline: Duration,
    pub pod_rows_per_sec: f64,
    pub spot_interruptions_per_node_hour: f64,
    pub visibility_timeout: Duration,
    pub tick: Duration,
    /// The cluster autoscaler's scale-down-unneeded-time (default 10 min).
    pub node_idle_removal: Duration,
    /// Nodes up when the run starts (pre-warmed).
    pub initial_nodes: u32,
    pub seed: u64,
    /// Give up after this long.
    pub max_time: Duration,
}

impl Scenario {
    /// The reference: 1e9 rows, 1 h, 250 k rows/s per pod, 1 M-row shards.
    pub fn reference() -> Self {
        Self {
            rows: 1e9,
            shard_rows: 1e6,
            deadline: Duration::from_secs(3600),
            pod_rows_per_sec: 250_000.0,
            spot_interruptions_per_node_hour: 0.05,
            visibility_timeout: Duration::from_secs(60),
            tick: Duration::from_secs(15),
            node_idle_removal: Duration::from_secs(600),
            initial_nodes: 0,
            seed: 1,
            max_time: Duration::from_secs(24 * 3600),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub t_secs: u64,
    pub desired_replicas: u32,
    pub pods: u32,
    pub ready_pods: u32,
    pub placeholders: u32,
    pub nodes: u32,
    pub backlog_rows: f64,
    pub projected_finish_secs: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub finish: Option<Duration>,
    pub deadline: Duration,
    pub node_hours: f64,
    pub peak_nodes: u32,
    pub shards_redone: u64,
    pub timeline: Vec<Sample>,
}

impl Outcome {
    pub fn met_deadline(&self) -> bool {
        self.finish.is_some_and(|f| f <= self.deadline)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum PodState {
    Pending,
    Starting { ready_at: u64 },
    Idle,
    Busy { shard: usize, left: f64 },
}

#[derive(Debug, Clone)]
struct Pod {
    node: Option<usize>,
    state: PodState,
}

#[derive(Debug, Clone)]
struct Node {
    ready_at: u64,
    empty_since: Option<u64>,
    alive: bool,
}

pub fn simulate(scn: &Scenario, cfg: &PolicyConfig) -> Outcome {
    let ppn = cfg.pods_per_node.max(1) as usize;
    let shards = (scn.rows / scn.shard_rows).ceil() as usize;
    let shard_size =
        |i: usize| if i + 1 == shards { scn.rows - scn.shard_rows * (shards - 1) as f64 } else { scn.shard_rows };
    // Shards waiting, with the second they become visible.
    let mut queue: VecDeque<(usize, u64)> = (0..shards).map(|i| (i, 0)).collect();
    let mut done_rows = 0.0;
    let mut pods: Vec<Pod> = Vec::new();
    let mut nodes: Vec<Node> =
        (0..scn.initial_nodes).map(|_| Node { ready_at: 0, empty_since: Some(0), alive: true }).collect();
    let mut placeholders = 0usize;
    let mut history = History::default();
    let mut rng = SplitMix64::new(scn.seed);
    let (mut node_secs, mut peak_nodes, mut redone) = (0u64, 0u32, 0u64);
    let mut timeline = Vec::new();
    let mut finish = None;
    let (pod_start, node_boot) = (cfg.pod_start.as_secs(), cfg.node_boot.as_secs());
    let tick = scn.tick.as_secs().max(1);

    for t in 0..=scn.max_time.as_secs() {
        let alive: Vec<usize> = (0..nodes.len()).filter(|&n| nodes[n].alive).collect();
        node_secs += alive.len() as u64;
        peak_nodes = peak_nodes.max(alive.len() as u32);

        // Spot interruptions kill a node and its pods; shards come back later.
        let p_kill = scn.spot_interruptions_per_node_hour / 3600.0;
        for &n in &alive {
            if p_kill > 0.0 && rng.uniform() < p_kill {
                nodes[n].alive = false;
                for pod in pods.iter_mut().filter(|p| p.node == Some(n)) {
                    if let PodState::Busy { shard, .. } = pod.state {
                        queue.push_back((shard, t + scn.visibility_timeout.as_secs()));
                        redone += 1;
                    }
                    // The Deployment replaces the pod: pending again.
                    *pod = Pod { node: None, state: PodState::Pending };
                }
            }
        }

        // Place pending pods on free slots of ready nodes (worker pods
        // preempt placeholders), then start them.
        let ready_nodes: Vec<usize> = (0..nodes.len()).filter(|&n| nodes[n].alive && nodes[n].ready_at <= t).collect();
        let mut used = vec![0usize; nodes.len()];
        for p in &pods {
            if let Some(n) = p.node {
                used[n] += 1;
            }
        }
        for p in pods.iter_mut().filter(|p| p.state == PodState::Pending) {
            if let Some(&n) = ready_nodes.iter().find(|&&n| used[n] < ppn) {
                used[n] += 1;
                p.node = Some(n);
                p.state = PodState::Starting { ready_at: t + pod_start };
            }
        }
        let free_slots: usize = ready_nodes.iter().map(|&n| ppn - used[n]).sum();
        let placed_placeholders = placeholders.min(free_slots);

        // Pods work.
        for p in pods.iter_mut() {
            match p.state {
                PodState::Starting { ready_at } if ready_at <= t => p.state = PodState::Idle,
                PodState::Busy { shard, left } => {
                    let left = left - scn.pod_rows_per_sec;
                    if left <= 0.0 {
                        done_rows += shard_size(shard);
                        p.state = PodState::Idle;
                    } else {
                        p.state = PodState::Busy { shard, left };
                    }
                }
                _ => {}
            }
            if p.state == PodState::Idle
                && let Some(pos) = queue.iter().position(|&(_, at)| at <= t)
            {
                let (shard, _) = queue.remove(pos).expect("position is valid");
                p.state = PodState::Busy { shard, left: shard_size(shard) };
            }
        }
        if finish.is_none() && done_rows >= scn.rows - 0.5 {
            finish = Some(Duration::from_secs(t));
        }

        // The cluster autoscaler: boot nodes for unplaceable pods, remove
        // nodes empty for long enough.
        let pending =
            pods.iter().filter(|p| p.state == PodState::Pending).count() + (placeholders - placed_placeholders);
        let booting_slots = nodes.iter().filter(|n| n.alive && n.ready_at > t).count() * ppn;
        if pending > booting_slots {
            for _ in 0..(pending - booting_slots).div_ceil(ppn) {
                nodes.push(Node { ready_at: t + node_boot, empty_since: None, alive: true });
                used.push(0);
            }
        }
        let mut holders = placed_placeholders;
        for n in 0..nodes.len() {
            if !nodes[n].alive || nodes[n].ready_at > t {
                continue;
            }
            let mut occupied = used[n] > 0;
            if !occupied && holders > 0 {
                holders = holders.saturating_sub(ppn);
                occupied = true;
            }
            if occupied {
                nodes[n].empty_since = None;
            } else {
                let since = *nodes[n].empty_since.get_or_insert(t);
                if t - since >= scn.node_idle_removal.as_secs() {
                    nodes[n].alive = false;
                }
            }
        }

        // The scaler.
        if t % tick == 0 {
            let busy = pods.iter().filter(|p| matches!(p.state, PodState::Busy { .. })).count() as u64;
            let returning = queue.iter().filter(|&&(_, at)| at > t).count() as u64;
            let visible = queue.len() as u64 - returning;
            let ready_capacity = nodes.iter().filter(|n| n.alive).count() * ppn;
            let signals = Signals {
                now: Duration::from_secs(t),
                deadline: Some(scn.deadline),
                backlog_rows: Some((scn.rows - done_rows).max(0.0) as u64),
                visible,
                in_flight: busy + returning,
                measured_rows_per_sec: (done_rows > 0.0).then_some(scn.pod_rows_per_sec),
                current_replicas: pods.len() as u32,
                schedulable_replicas: ready_capacity as u32,
            };
            let desired: Decision = decide(cfg, &signals, &mut history);
            let want = desired.desired_replicas as usize;
            while pods.len() < want {
                pods.push(Pod { node: None, state: PodState::Pending });
            }
            // Remove pods that hold no shard: pending first, then starting, then idle.
            for rank in 0..3 {
                let mut i = pods.len();
                while pods.len() > want && i > 0 {
                    i -= 1;
                    let matches = match pods[i].state {
                        PodState::Pending => rank == 0,
                        PodState::Starting { .. } => rank == 1,
                        PodState::Idle => rank == 2,
                        PodState::Busy { .. } => false,
                    };
                    if matches {
                        pods.swap_remove(i);
                    }
                }
            }
            placeholders = desired.placeholder_replicas as usize;
            timeline.push(Sample {
                t_secs: t,
                desired_replicas: desired.desired_replicas,
                pods: pods.len() as u32,
                ready_pods: pods.iter().filter(|p| matches!(p.state, PodState::Idle | PodState::Busy { .. })).count()
                    as u32,
                placeholders: placeholders as u32,
                nodes: nodes.iter().filter(|n| n.alive).count() as u32,
                backlog_rows: (scn.rows - done_rows).max(0.0),
                projected_finish_secs: desired.projected_finish.map(|d| d.as_secs_f64()),
            });
        }
        if finish.is_some() && pods.is_empty() && nodes.iter().all(|n| !n.alive) {
            break;
        }
    }
    Outcome {
        finish,
        deadline: scn.deadline,
        node_hours: node_secs as f64 / 3600.0,
        peak_nodes,
        shards_redone: redone,
        timeline,
    }
}

/// The timeline as CSV.
pub fn timeline_csv(outcome: &Outcome) -> String {
    let mut out =
        String::from("t_secs,desired_replicas,pods,ready_pods,placeholders,nodes,backlog_rows,projected_finish_secs\n");
    for s in &outcome.timeline {
        out.push_str(&format!(
            "{},{},{},{},{},{},{:.0},{}\n",
            s.t_secs,
            s.desired_replicas,
            s.pods,
            s.ready_pods,
            s.placeholders,
            s.nodes,
            s.backlog_rows,
            s.projected_finish_secs.map(|f| format!("{f:.0}")).unwrap_or_default()
        ));
    }
    out
}

/// A plot of the run for an operator to look at: desired replicas, worker
/// pods, placeholders and nodes (left axis, counts), the backlog (share of
/// rows, on the same height) and the projected finish (right axis, seconds
/// from the start, against the dashed deadline).
pub fn timeline_svg(outcome: &Outcome, title: &str) -> String {
    let (w, h) = (960.0, 460.0);
    let (left, right, top, bottom) = (55.0, 70.0, 60.0, 45.0);
    let t_max = outcome.timeline.last().map(|s| s.t_secs).unwrap_or(1).max(outcome.deadline.as_secs()) as f64;
    let count_max = outcome
        .timeline
        .iter()
        .map(|s| s.pods.max(s.nodes).max(s.desired_replicas).max(s.placeholders))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let backlog_max = outcome.timeline.first().map(|s| s.backlog_rows).unwrap_or(1.0).max(1.0);
    let finish_max = outcome.timeline.iter().filter_map(|s| s.projected_finish_secs).fold(t_max, f64::max);
    let x = |t: f64| left + (w - left - right) * t / t_max;
    let y = |v: f64, max: f64| h - bottom - (h - top - bottom) * (v / max).clamp(0.0, 1.0);
    let polyline = |points: Vec<(f64, f64)>, color: &str, dash: &str| {
        let pts: Vec<String> = points.iter().map(|(px, py)| format!("{px:.1},{py:.1}")).collect();
        format!("<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"{dash} points=\"{}\"/>\n", pts.join(" "))
    };
    let series = |f: &dyn Fn(&Sample) -> f64, max: f64, color: &str, dash: &str| {
        polyline(outcome.timeline.iter().map(|s| (x(s.t_secs as f64), y(f(s), max))).collect(), color, dash)
    };
    let (x0, x1, y0, y1) = (left, w - right, top, h - bottom);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{left}\" y=\"22\" font-size=\"15\">{title}</text>\n\
         <line x1=\"{x0}\" y1=\"{y1}\" x2=\"{x1}\" y2=\"{y1}\" stroke=\"black\"/>\n\
         <line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x0}\" y2=\"{y1}\" stroke=\"black\"/>\n\
         <line x1=\"{x1}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y1}\" stroke=\"#9467bd\"/>\n"
    );
    // Axes: counts on the left, projected finish on the right, time below.
    svg.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">0</text>\n<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{count_max:.0}</text>\n\
         <text x=\"12\" y=\"{}\" transform=\"rotate(-90 12 {})\" text-anchor=\"middle\">pods, nodes</text>\n\
         <text x=\"{}\" y=\"{}\" fill=\"#9467bd\">0 s</text>\n<text x=\"{}\" y=\"{}\" fill=\"#9467bd\">{finish_max:.0} s</text>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">time since the run started (s), 0 to {t_max:.0}</text>\n",
        x0 - 6.0,
        y1 + 4.0,
        x0 - 6.0,
        y0 + 4.0,
        (y0 + y1) / 2.0,
        (y0 + y1) / 2.0,
        x1 + 6.0,
        y1 + 4.0,
        x1 + 6.0,
        y0 + 4.0,
        (x0 + x1) / 2.0,
        h - 12.0
    ));
    let dl = x(outcome.deadline.as_secs_f64());
    let dl_y = y(outcome.deadline.as_secs_f64(), finish_max);
    svg.push_str(&format!(
        "<line x1=\"{dl:.1}\" y1=\"{y0}\" x2=\"{dl:.1}\" y2=\"{y1}\" stroke=\"red\" stroke-dasharray=\"6 4\"/>\n\
         <line x1=\"{x0}\" y1=\"{dl_y:.1}\" x2=\"{x1}\" y2=\"{dl_y:.1}\" stroke=\"#9467bd\" stroke-opacity=\"0.4\" stroke-dasharray=\"2 4\"/>\n\
         <text x=\"{:.1}\" y=\"{:.1}\" fill=\"red\" text-anchor=\"end\">deadline</text>\n",
        dl - 4.0,
        y0 + 12.0
    ));
    if let Some(finish) = outcome.finish {
        let fx = x(finish.as_secs_f64());
        svg.push_str(&format!(
            "<line x1=\"{fx:.1}\" y1=\"{y0}\" x2=\"{fx:.1}\" y2=\"{y1}\" stroke=\"black\" stroke-opacity=\"0.5\" stroke-dasharray=\"2 3\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\">done {:.0} s</text>\n",
            fx + 4.0,
            y0 + 26.0,
            finish.as_secs_f64()
        ));
    }
    let lines: [(&str, &str, &str); 6] = [
        ("desired replicas", "#17becf", " stroke-dasharray=\"5 3\""),
        ("worker pods", "#1f77b4", ""),
        ("placeholder pods", "#8c564b", ""),
        ("nodes", "#2ca02c", ""),
        ("backlog (share of rows)", "#ff7f0e", ""),
        ("projected finish (right axis)", "#9467bd", ""),
    ];
    svg.push_str(&series(&|s| s.desired_replicas as f64, count_max, lines[0].1, lines[0].2));
    svg.push_str(&series(&|s| s.pods as f64, count_max, lines[1].1, lines[1].2));
    svg.push_str(&series(&|s| s.placeholders as f64, count_max, lines[2].1, lines[2].2));
    svg.push_str(&series(&|s| s.nodes as f64, count_max, lines[3].1, lines[3].2));
    svg.push_str(&series(&|s| s.backlog_rows, backlog_max, lines[4].1, lines[4].2));
    let finish_points: Vec<(f64, f64)> = outcome
        .timeline
        .iter()
        .filter_map(|s| s.projected_finish_secs.map(|f| (x(s.t_secs as f64), y(f, finish_max))))
        .collect();
    if !finish_points.is_empty() {
        svg.push_str(&polyline(finish_points, lines[5].1, ""));
    }
    // Legend in two rows under the title.
    for (i, (label, color, dash)) in lines.iter().enumerate() {
        let lx = left + 300.0 * (i % 3) as f64;
        let ly = 38.0 + 14.0 * (i / 3) as f64;
        svg.push_str(&format!(
            "<line x1=\"{lx}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{color}\" stroke-width=\"2\"{dash}/>\
             <text x=\"{}\" y=\"{}\">{label}</text>\n",
            lx + 20.0,
            lx + 26.0,
            ly + 4.0
        ));
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicyKind;

    fn cfg(kind: PolicyKind) -> PolicyConfig {
        PolicyConfig { kind, ..PolicyConfig::default() }
    }

    #[test]
    fn deadline_policy_finishes_the_reference_scenario_before_the_deadline() {
        let out = simulate(&Scenario::reference(), &cfg(PolicyKind::Deadline));
        assert!(out.met_deadline(), "finish {:?} vs deadline {:?}", out.finish, out.deadline);
        assert!(out.node_hours > 0.0 && out.peak_nodes > 0);
    }

    #[test]
    fn both_policies_are_compared_on_the_same_scenario() {
        let scn = Scenario::reference();
        let deadline = simulate(&scn, &cfg(PolicyKind::Deadline));
        let queue = simulate(&scn, &cfg(PolicyKind::QueueLength));
        // The comparison is computed; which wins depends on the scenario.
        assert!(deadline.finish.is_some() && queue.finish.is_some());
        assert!(deadline.node_hours > 0.0 && queue.node_hours > 0.0);
        assert!(!timeline_csv(&queue).is_empty() && timeline_svg(&queue, "q").contains("<polyline"));
    }

    #[test]
    fn interruptions_return_shards_and_the_job_still_finishes() {
        let scn = Scenario { spot_interruptions_per_node_hour: 10.0, seed: 3, ..Scenario::reference() };
        let out = simulate(&scn, &cfg(PolicyKind::Deadline));
        assert!(out.finish.is_some());
        assert!(out.shards_redone > 0, "interruptions at 10 per node-hour redo some shards");
    }
}
