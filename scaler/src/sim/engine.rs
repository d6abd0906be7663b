//! The engine: one-second steps of queue, pods, nodes and the cluster
//! autoscaler, with the policy deciding every tick.

use super::{JobOutcome, Scenario};
use crate::policy::{Decision, History, PolicyConfig, Signals, decide};
use hourglass_core::rng::SplitMix64;
use std::collections::VecDeque;
use std::time::Duration;

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
    pub jobs: Vec<JobOutcome>,
}

impl Outcome {
    /// Every job done by its own deadline.
    pub fn met_deadline(&self) -> bool {
        self.jobs.iter().all(JobOutcome::met_deadline)
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
    let jobs = scn.job_list();
    // Every shard of every job: (job, rows).
    let mut shard_of: Vec<(usize, f64)> = Vec::new();
    for (j, job) in jobs.iter().enumerate() {
        let n = (job.rows / scn.shard_rows).ceil().max(1.0) as usize;
        for i in 0..n {
            shard_of.push((j, if i + 1 == n { job.rows - scn.shard_rows * (n - 1) as f64 } else { scn.shard_rows }));
        }
    }
    let shard_size = |i: usize| shard_of[i].1;
    // Shards waiting, with the second they become visible (their job's
    // arrival). An SQS standard queue hands out a visible message of any
    // job: the pick is random (its own generator, so the interruptions are
    // the same whatever the order).
    let mut queue: VecDeque<(usize, u64)> =
        (0..shard_of.len()).map(|i| (i, jobs[shard_of[i].0].arrival.as_secs())).collect();
    let mut pick = SplitMix64::new(scn.seed ^ 0x005e_ed0f_0deb);
    let mut job_done = vec![0.0f64; jobs.len()];
    let mut job_finish: Vec<Option<Duration>> = vec![None; jobs.len()];
    let total_rows: f64 = jobs.iter().map(|j| j.rows).sum();
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
                        let j = shard_of[shard].0;
                        job_done[j] += shard_size(shard);
                        if job_finish[j].is_none() && job_done[j] >= jobs[j].rows - 0.5 {
                            job_finish[j] = Some(Duration::from_secs(t));
                        }
                        p.state = PodState::Idle;
                    } else {
                        p.state = PodState::Busy { shard, left };
                    }
                }
                _ => {}
            }
            let visible = queue.iter().filter(|&&(_, at)| at <= t).count();
            if p.state == PodState::Idle && visible > 0 {
                let nth = if jobs.len() > 1 { (pick.uniform() * visible as f64) as usize % visible } else { 0 };
                let pos = queue
                    .iter()
                    .enumerate()
                    .filter(|(_, (_, at))| *at <= t)
                    .nth(nth)
                    .map(|(i, _)| i)
                    .expect("nth < visible");
                let (shard, _) = queue.remove(pos).expect("position is valid");
                p.state = PodState::Busy { shard, left: shard_size(shard) };
            }
        }
        if finish.is_none() && done_rows >= total_rows - 0.5 {
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
            // Shards of jobs not arrived yet are not on the queue yet;
            // those of a killed pod come back after the visibility timeout.
            let now = Duration::from_secs(t);
            let arrived = |i: usize| jobs[shard_of[i].0].arrival <= now;
            let returning = queue.iter().filter(|&&(i, at)| at > t && arrived(i)).count() as u64;
            let visible = queue.iter().filter(|&&(_, at)| at <= t).count() as u64;
            let ready_capacity = nodes.iter().filter(|n| n.alive).count() * ppn;
            // What the scaler's jobs index gives it: the arrived jobs' rows
            // left, and the earliest deadline among those with rows left.
            let (mut backlog, mut deadline) = (0.0, None::<Duration>);
            let seen = if scn.first_job_only { 1 } else { jobs.len() };
            for (j, job) in jobs.iter().enumerate().take(seen).filter(|(_, job)| job.arrival <= now) {
                let left = (job.rows - job_done[j]).max(0.0);
                backlog += left;
                if left > 0.5 {
                    deadline = Some(deadline.map_or(job.deadline, |d| d.min(job.deadline)));
                }
            }
            let signals = Signals {
                now,
                deadline: deadline.or(Some(scn.deadline)),
                backlog_rows: Some(backlog as u64),
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
                backlog_rows: (total_rows - done_rows).max(0.0),
                projected_finish_secs: desired.projected_finish.map(|d| d.as_secs_f64()),
            });
        }
        if finish.is_some() && pods.is_empty() && nodes.iter().all(|n| !n.alive) {
            break;
        }
    }
    let deadline = jobs.iter().map(|j| j.deadline).max().unwrap_or(scn.deadline);
    Outcome {
        finish,
        deadline,
        node_hours: node_secs as f64 / 3600.0,
        peak_nodes,
        shards_redone: redone,
        timeline,
        jobs: jobs
            .iter()
            .zip(job_finish)
            .map(|(j, finish)| JobOutcome { arrival: j.arrival, deadline: j.deadline, rows: j.rows, finish })
            .collect(),
    }
}
